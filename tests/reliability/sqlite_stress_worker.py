"""One process of the SQLite stress test: threads of random get/set/clear on a shared file.

Run as ``python -m tests.reliability.sqlite_stress_worker PATH PROCESS THREADS OPS``; prints
one JSON line of counts (operations, errors, wrong values, worst latency).
"""

from __future__ import annotations

import json
import random
import sys
import threading
from typing import Any

from tests.reliability.conftest import FAILED, Tally
from tests.reliability.stacks import carries_key, sqlite_cache, tagged
from toolkit import FullKey

NAMESPACES = [("stress", str(i)) for i in range(4)] + [("stress",), ("stress", "1", "")]
KEYS: list[FullKey] = [(ns, f"k{i}") for ns in NAMESPACES for i in range(40)]


def run_thread(cache: Any, writer: int, ops: int, row: Tally, lock: threading.Lock) -> None:
    """``ops`` random operations; values carry their key and writer, reads are checked."""
    rng = random.Random(writer)
    local = Tally(row.scenario)
    for seq in range(ops):
        roll = rng.random()
        if roll < 0.6:
            batch = rng.sample(KEYS, rng.randint(1, 8))
            got = local.call(cache.get, batch)
            if got is not FAILED:
                for full_key, value in got.items():
                    local.check(
                        carries_key(value, full_key) and 0 <= value[2] < 1000 and value[3] < ops
                    )
        elif roll < 0.98:
            batch = rng.sample(KEYS, rng.randint(1, 8))
            local.call(cache.set, {fk: (tagged(fk, writer, seq), None) for fk in batch})
        elif roll < 0.995:
            local.call(cache.clear, [rng.choice(NAMESPACES)])
        else:
            local.call(cache.clear)
    with lock:
        row.merge(local.counts())


def main(path: str, process: int, threads: int, ops: int) -> dict[str, Any]:
    """Run ``threads`` threads on one cache and return the merged counts."""
    cache = sqlite_cache(path)
    row = Tally("worker")
    lock = threading.Lock()
    workers = [
        threading.Thread(target=run_thread, args=(cache, process * threads + t, ops, row, lock))
        for t in range(threads)
    ]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    cache.close()
    return row.counts()


if __name__ == "__main__":
    path, process, threads, ops = sys.argv[1], *map(int, sys.argv[2:5])
    print(json.dumps(main(path, process, threads, ops)), flush=True)
