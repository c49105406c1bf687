"""Sustained concurrency with no fault: no error is counted and no breaker opens.

These tests check properties that do not depend on the machine's speed; throughput and
tails are measured by ``make load`` (benchmarks/load), never asserted here.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import random
import threading
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from tests.faults import FlakyCache, HangingCache
from tests.metric_catalog import metric_total
from toolkit import (
    FailOpen,
    FullKey,
    Metrics,
    Namespace,
    SqliteCache,
    cached,
    observe,
    wrap,
)
from toolkit.backends.redis import RedisCache

# A busy test machine can stall a thread that holds SQLite's connection for longer than the
# default busy_timeout (0.2 s). These tests prove our machinery adds no error of its own, so
# they give SQLite a bound a stalled machine keeps, still within observe's deadline (no
# deadline thread: max_call_seconds 2.05 <= 2.5).
SQLITE_BUSY_TIMEOUT = 1.0
SQLITE_DEADLINE = 2.5


def loaded_sqlite(path: str, registry: CollectorRegistry) -> Any:
    """``observe(SqliteCache)`` with bounds that hold on a busy machine."""
    backend = SqliteCache(path=path, busy_timeout=SQLITE_BUSY_TIMEOUT)
    return observe(backend, registry=registry, deadline=SQLITE_DEADLINE)


THREADS = 4
CALLS = 150
COROUTINES = 100


def assert_healthy(registry: CollectorRegistry) -> None:
    assert metric_total(registry, "cache_errors_total") == 0
    assert metric_total(registry, "cache_circuit_breaker_transitions_total", state="open") == 0


class SlowCache:
    """A real in-memory store whose calls take a few milliseconds, like a busy network hop."""

    backend_name = "slow"
    in_process = False

    def __init__(self, delay: float = 0.005) -> None:
        self.store = FlakyCache()
        self.store.failing = False
        self.delay = delay

    def get(self, keys: Sequence[FullKey]) -> dict[FullKey, Any]:
        time.sleep(self.delay)
        return self.store.get(keys)

    async def aget(self, keys: Sequence[FullKey]) -> dict[FullKey, Any]:
        await asyncio.sleep(self.delay)
        return self.store.get(keys)

    def set(self, pairs: Mapping[FullKey, tuple[Any, int | None]]) -> None:
        time.sleep(self.delay)
        self.store.set(pairs)

    async def aset(self, pairs: Mapping[FullKey, tuple[Any, int | None]]) -> None:
        await asyncio.sleep(self.delay)
        self.store.set(pairs)

    def clear(self, namespaces: Sequence[Namespace] | None = None) -> None:
        self.store.clear(namespaces)

    async def aclear(self, namespaces: Sequence[Namespace] | None = None) -> None:
        self.store.clear(namespaces)


def run_threads(count: int, work: Callable[[int], None]) -> None:
    errors: list[BaseException] = []

    def guarded(index: int) -> None:
        try:
            work(index)
        except BaseException as exc:  # surfaced below
            errors.append(exc)

    threads = [threading.Thread(target=guarded, args=(i,)) for i in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors, errors


def mixed_calls(cache: Any, seed: int, calls: int = CALLS) -> None:
    """Hits, misses, writes and expiries over a few hundred keys, values of 100 B to 16 KB."""
    rng = random.Random(seed)

    @cached("load.mixed", cache=cache, ttl=0.2, key_id="mixed")
    def compute(n: int) -> bytes:
        return bytes([n % 256]) * rng.choice((100, 2_000, 16_000))

    for _ in range(calls):
        n = rng.randrange(300)
        assert compute(n)[:1] == bytes([n % 256])


async def amixed_calls(cache: Any, seed: int, calls: int) -> None:
    rng = random.Random(seed)

    @cached("load.amixed", cache=cache, ttl=0.2, key_id="amixed")
    async def compute(n: int) -> bytes:
        return bytes([n % 256]) * rng.choice((100, 2_000, 16_000))

    for _ in range(calls):
        n = rng.randrange(300)
        assert (await compute(n))[:1] == bytes([n % 256])


def test_more_callers_than_deadline_workers_all_get_answers() -> None:
    """Callers beyond the worker count wait their turn; none fails at once as a deadline."""
    registry = CollectorRegistry()
    slow = SlowCache()
    cache = wrap(slow, FailOpen(deadline=30, max_workers=2), Metrics(registry=registry))
    cache.set({(("load",), "k"): ("v", None)})

    def work(_: int) -> None:
        for _ in range(10):
            assert cache.get([(("load",), "k")]) == {(("load",), "k"): "v"}

    run_threads(16, work)
    assert_healthy(registry)


def test_a_deadline_fires_only_after_the_caller_really_waited() -> None:
    registry = CollectorRegistry()
    hanging = HangingCache()
    cache = wrap(hanging, FailOpen(deadline=0.05, max_workers=1), Metrics(registry=registry))
    waited: list[float] = []

    def work(_: int) -> None:
        start = time.monotonic()
        assert cache.get([(("load",), "k")]) == {}
        waited.append(time.monotonic() - start)

    try:
        run_threads(4, work)
    finally:
        hanging.release()
    assert min(waited) >= 0.05
    assert metric_total(registry, "cache_errors_total", error_type="DeadlineExceededError") == 4


def test_threads_on_observed_sqlite_count_no_error(tmp_path: Path) -> None:
    registry = CollectorRegistry()
    cache = loaded_sqlite(str(tmp_path / "load.db"), registry)
    try:
        run_threads(THREADS, lambda i: mixed_calls(cache, i))
    finally:
        cache.close()
    assert_healthy(registry)


def test_coroutines_on_observed_sqlite_count_no_error(tmp_path: Path) -> None:
    registry = CollectorRegistry()
    cache = loaded_sqlite(str(tmp_path / "load.db"), registry)

    async def main() -> None:
        try:
            await asyncio.gather(*(amixed_calls(cache, i, 10) for i in range(COROUTINES)))
        finally:
            await cache.aclose()

    asyncio.run(main())
    assert_healthy(registry)


def test_sqlite_bounds_itself_so_observe_needs_no_deadline_thread(tmp_path: Path) -> None:
    sqlite: SqliteCache[Any] = SqliteCache(path=str(tmp_path / "bound.db"))
    assert 0 < sqlite.max_call_seconds <= 0.5  # within observe's default deadline
    cache = observe(sqlite, registry=CollectorRegistry())
    before = {t.name for t in threading.enumerate()}
    cache.set({(("load",), "k"): (1, None)})
    assert cache.get([(("load",), "k")]) == {(("load",), "k"): 1}
    started = {t.name for t in threading.enumerate()} - before
    cache.close()
    assert "toolkit-failopen" not in started


def _process_worker(kind: str, where: str, seed: int, results: Any) -> None:
    registry = CollectorRegistry()
    if kind == "sqlite":
        cache = loaded_sqlite(where, registry)
    else:
        backend = RedisCache.from_url(where.split("|")[0], prefix=where.split("|")[1])
        cache = observe(backend, registry=registry)
    try:
        mixed_calls(cache, seed, calls=100)
        cache.close()
        results.put(
            (
                metric_total(registry, "cache_errors_total"),
                metric_total(registry, "cache_circuit_breaker_transitions_total", state="open"),
            )
        )
    except BaseException as exc:
        results.put((repr(exc), 0))


def run_processes(kind: str, where: str) -> None:
    context = multiprocessing.get_context("spawn")
    results = context.Queue()
    workers = [
        context.Process(target=_process_worker, args=(kind, where, i, results)) for i in range(4)
    ]
    for worker in workers:
        worker.start()
    outcomes = [results.get(timeout=120) for _ in workers]
    for worker in workers:
        worker.join(timeout=30)
    assert outcomes == [(0.0, 0.0)] * 4


def test_processes_sharing_one_sqlite_file_count_no_error(tmp_path: Path) -> None:
    run_processes("sqlite", str(tmp_path / "shared.db"))


@pytest.mark.redis
def test_processes_sharing_one_redis_count_no_error(redis_url: str) -> None:
    run_processes("redis", f"{redis_url}|toolkit:load:{uuid.uuid4().hex}:")


@pytest.mark.redis
def test_coroutines_on_observed_redis_count_no_error(redis_url: str) -> None:
    registry = CollectorRegistry()
    cache = observe(
        RedisCache.from_url(redis_url, prefix=f"toolkit:load:{uuid.uuid4().hex}:"),
        registry=registry,
    )

    async def main() -> None:
        await asyncio.gather(*(amixed_calls(cache, i, 10) for i in range(COROUTINES)))
        await cache.aclear()

    asyncio.run(main())
    assert_healthy(registry)


def test_a_forked_child_has_working_deadline_threads() -> None:
    """The parent's worker threads do not exist after fork; the child starts its own."""
    slow = SlowCache(delay=0)
    cache = observe(slow, registry=CollectorRegistry(), deadline=30)
    cache.set({(("load",), "k"): ("v", None)})
    assert cache.get([(("load",), "k")]) == {(("load",), "k"): "v"}  # parent's threads exist
    context = multiprocessing.get_context("fork")
    results = context.Queue()

    def child() -> None:
        results.put(cache.get([(("load",), "k")]))

    process = context.Process(target=child)
    process.start()
    assert results.get(timeout=60) == {(("load",), "k"): "v"}
    process.join(timeout=30)


def test_breaker_openings_are_counted_only_on_real_failures() -> None:
    registry = CollectorRegistry()
    flaky = FlakyCache()
    cache = observe(flaky, registry=registry, failure_threshold=2)
    for _ in range(3):
        cache.get([(("load",), "k")])
    assert metric_total(registry, "cache_circuit_breaker_transitions_total", state="open") == 1
