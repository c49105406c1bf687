"""InMemoryCache under 8 threads: the size bound holds and no key ever reads another's value."""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable
from typing import Any

import pytest

from tests.reliability.conftest import FAILED, Tally
from tests.reliability.stacks import observed
from toolkit import FullKey, InMemoryCache

THREADS = 8
OPS_PER_THREAD = 4_000
BOUND = 64
NAMESPACES = [("stress", str(i)) for i in range(4)] + [("stress",), ("stress", "0", "")]
KEYS: list[FullKey] = [(ns, f"k{i}") for ns in NAMESPACES for i in range(60)]


def carries(value: Any, full_key: FullKey, written: list[int]) -> bool:
    """A value names the key it was written for, its writer and a seq that writer issued."""
    return (
        isinstance(value, list)
        and (tuple(value[0]), value[1]) == full_key
        and 0 <= value[2] < THREADS
        and value[3] < written[value[2]]
    )


def _worker(
    cache: Any,
    writer: int,
    row: Tally,
    written: list[int],
    lock: threading.Lock,
    start: threading.Barrier,
) -> None:
    rng = random.Random(writer)
    seq = 0
    local = Tally(row.scenario)
    start.wait()
    for _ in range(OPS_PER_THREAD):
        roll = rng.random()
        if roll < 0.55:
            batch = rng.sample(KEYS, rng.randint(1, 4))
            got = local.call(cache.get, batch)
            if got is FAILED:
                continue
            for full_key, value in got.items():
                local.check(carries(value, full_key, written))
        elif roll < 0.97:
            batch = rng.sample(KEYS, rng.randint(1, 3))
            pairs = {fk: ([list(fk[0]), fk[1], writer, seq], None) for fk in batch}
            written[writer] = seq + 1  # publish before the write so readers may see it
            seq += 1
            local.call(cache.set, pairs)
        else:
            local.call(cache.clear, [rng.choice(NAMESPACES)])
    with lock:
        row.merge(local.counts())


@pytest.mark.parametrize("layer", ["bare", "observe"])
def test_eight_threads_keep_bound_and_keys_apart(tally: Callable[..., Tally], layer: str) -> None:
    row = tally(f"memory: {THREADS} threads get/set/clear, bound {BOUND}", layer=layer)
    cache: InMemoryCache[Any] = InMemoryCache(max_entries=BOUND)
    stack = cache if layer == "bare" else observed(cache)[0]
    written = [0] * THREADS
    lock = threading.Lock()
    start = threading.Barrier(THREADS + 1)
    stop = threading.Event()
    sizes: list[int] = []

    def watch() -> None:
        # Sampled under the cache's own lock: between two writes the bound must hold exactly.
        while not stop.is_set():
            with cache._lock:
                sizes.append(len(cache._data))
            time.sleep(0)

    threads = [
        threading.Thread(target=_worker, args=(stack, w, row, written, lock, start))
        for w in range(THREADS)
    ]
    watcher = threading.Thread(target=watch)
    for thread in threads:
        thread.start()
    watcher.start()
    start.wait()
    for thread in threads:
        thread.join()
    stop.set()
    watcher.join()

    assert row.operations == THREADS * OPS_PER_THREAD
    assert row.errors == 0, row.error_types
    assert row.wrong == 0
    assert sizes, "the watcher never sampled"
    assert max(sizes) <= BOUND
    assert cache.entry_count() <= BOUND
    survivors = stack.get(KEYS)
    assert all((tuple(v[0]), v[1]) == fk for fk, v in survivors.items())


class _Clock:
    """A shared monotonic clock that the worker threads move forward as they go."""

    def __init__(self) -> None:
        self.now = 1_000.0
        self._lock = threading.Lock()

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        with self._lock:  # no two threads' steps may interleave into a step backwards
            self.now += seconds


def test_expired_entries_never_returned_under_threads(tally: Callable[..., Tally]) -> None:
    """Readers race writers and a moving clock: no read returns an entry whose ttl ran out
    before the read began."""
    ttl = 0.05
    row = tally(f"memory: {THREADS} threads, ttl {ttl} s on a clock moving under them", "bare")
    clock = _Clock()
    cache: InMemoryCache[Any] = InMemoryCache(max_entries=None, timer=clock)
    keys = KEYS[:24]
    latest_expiry: dict[tuple[FullKey, int, int], float] = {}
    start = threading.Barrier(THREADS)
    lock = threading.Lock()
    misses = [0]

    def work(writer: int) -> None:
        rng = random.Random(writer)
        local = Tally(row.scenario)
        start.wait()
        for seq in range(1_500):
            clock.advance(0.002)
            full_key = rng.choice(keys)
            if rng.random() < 0.3:
                value = [list(full_key[0]), full_key[1], writer, seq]
                local.call(cache.set, {full_key: (value, ttl)})
                # The entry expires no later than the clock after the write plus its ttl.
                latest_expiry[(full_key, writer, seq)] = clock() + ttl
                continue
            began = clock()
            got = local.call(cache.get, [full_key])
            if got is FAILED or full_key not in got:
                misses[0] += 1
                continue
            value = got[full_key]
            local.check((tuple(value[0]), value[1]) == full_key)
            bound = latest_expiry.get((full_key, value[2], value[3]))
            local.check(bound is None or bound > began)
        with lock:
            row.merge(local.counts())

    workers = [threading.Thread(target=work, args=(w,)) for w in range(THREADS)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    assert row.operations == THREADS * 1_500
    assert row.errors == 0, row.error_types
    assert row.wrong == 0
    assert misses[0] > 0, (
        "no read ever missed: entries never expired, the clock did not move enough"
    )
