"""Redis shared by two worker processes, with their metrics merged (multiprocess mode).

    REDIS_URL=redis://127.0.0.1:6379/0 python examples/redis_workers.py

Worker A computes answers and stores them in Redis; worker B, another process, finds
them there. Both write metrics to ``PROMETHEUS_MULTIPROC_DIR``, and the parent reads the
sum over both, as ``/metrics`` would under gunicorn. Keys live under a private prefix,
deleted at the end.
"""

from __future__ import annotations

import multiprocessing
import os
import sys
import tempfile
import time
import uuid

QUESTIONS = ("what is redis?", "why cache?", "what is a ttl?")


def worker(url: str, prefix: str, questions: tuple[str, ...]) -> None:
    """Runs in its own process: asks ``questions`` through a cached function on Redis."""
    from toolkit import RedisCache, cached, observe

    backend = RedisCache.from_url(url, prefix=prefix)
    cache = observe(backend)

    @cached("answers", ttl=60, cache=cache)
    def answer(question: str) -> str:
        time.sleep(0.05)  # the slow part every other process is spared
        return f"{question} -> 42"

    for question in questions:
        answer(question)
    backend.close()


def main() -> int:
    url = os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0")
    prefix = f"toolkit-example-{uuid.uuid4().hex[:8]}:"
    with tempfile.TemporaryDirectory(prefix="toolkit-metrics-") as metrics_dir:
        # Set before any worker starts: each spawned process writes its samples here.
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = metrics_dir
        spawn = multiprocessing.get_context("spawn")
        for name, questions in (("A", QUESTIONS), ("B", (*QUESTIONS, "is this new?"))):
            process = spawn.Process(
                target=worker, args=(url, prefix, questions), name=f"worker-{name}"
            )
            process.start()
            process.join()
            if process.exitcode != 0:
                print(f"worker {name} failed (exit code {process.exitcode}); is Redis at {url}?")
                return 1
            print(f"worker {name} (pid {process.pid}) asked {len(questions)} questions")

        from toolkit.exposition import metrics_registry

        totals: dict[str, float] = {}
        for family in metrics_registry().collect():
            for sample in family.samples:
                if sample.name == "cache_gets_total":
                    result = sample.labels["result"]
                    totals[result] = totals.get(result, 0.0) + sample.value
        hits, misses = totals.get("hit", 0.0), totals.get("miss", 0.0)
        print(f"both workers together: hits={hits:.0f} misses={misses:.0f}")

    from toolkit import RedisCache

    cleanup = RedisCache.from_url(url, prefix=prefix)
    cleanup.clear()
    cleanup.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
