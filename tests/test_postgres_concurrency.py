"""PostgresCache under threads, processes, coroutines and fork: no error, no wrong value."""

from __future__ import annotations

import asyncio
import multiprocessing
import random
import threading
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from tests.metric_catalog import metric_total
from tests.postgres_support import drop_table, make_pg_cache, unique_table
from toolkit import FullKey, cached, observe
from toolkit.backends.postgres import PostgresCache

pytestmark = pytest.mark.postgres

Closer = list[tuple[str, PostgresCache[Any]]]
PROCESSES = 4
THREADS = 4
COROUTINES = 100


def _expected(key: str) -> str:
    return f"value of {key}"


def _mixed(cache: PostgresCache[Any], seed: int, calls: int) -> list[str]:
    """get/set/clear of shared keys; returns what went wrong (errors, wrong values)."""
    rng = random.Random(seed)
    wrong: list[str] = []
    namespaces = [("pg", "mixed", str(n)) for n in range(3)]
    for _ in range(calls):
        ns = rng.choice(namespaces)
        keys: list[FullKey] = [(ns, f"k{rng.randrange(50)}") for _ in range(rng.randrange(1, 6))]
        roll = rng.random()
        try:
            if roll < 0.6:
                for (_, key), value in cache.get(keys).items():
                    if value != _expected(key):
                        wrong.append(f"{key}: {value!r}")
            elif roll < 0.95:
                cache.set({k: (_expected(k[1]), rng.choice([None, 1, 60])) for k in keys})
            else:
                cache.clear([ns])
        except Exception as exc:
            wrong.append(repr(exc))
    return wrong


def _threads_of_mixed(cache: PostgresCache[Any], seed: int, calls: int) -> list[str]:
    found: list[list[str]] = [[] for _ in range(THREADS)]

    def work(index: int) -> None:
        found[index] = _mixed(cache, seed * THREADS + index, calls)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(THREADS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return [problem for problems in found for problem in problems]


def _process_worker(url: str, table: str, seed: int, results: Any) -> None:
    try:
        # Correctness under contention, not latency: a generous bound, so a starved machine
        # (CI beside other jobs) cannot turn a slow statement into a reported error.
        cache: PostgresCache[Any] = PostgresCache.from_url(url, table=table, timeout=30.0)
        try:
            results.put(_threads_of_mixed(cache, seed, calls=60))
        finally:
            cache.close()
    except BaseException as exc:
        results.put([repr(exc)])


def test_processes_of_threads_on_one_table_get_no_error_and_no_wrong_value(pg_url: str) -> None:
    table = unique_table()
    PostgresCache.from_url(pg_url, table=table).close()
    context = multiprocessing.get_context("spawn")
    results = context.Queue()
    workers = [
        context.Process(target=_process_worker, args=(pg_url, table, i, results))
        for i in range(PROCESSES)
    ]
    try:
        for worker in workers:
            worker.start()
        outcomes = [results.get(timeout=120) for _ in workers]
        for worker in workers:
            worker.join(timeout=30)
    finally:
        drop_table(pg_url, "public", table)
    assert outcomes == [[]] * PROCESSES


def test_forked_children_never_share_their_parents_connections(
    pg_url: str, pg_closer: Closer
) -> None:
    """Each child makes its own connections while the parent keeps using its own."""
    cache = make_pg_cache(pg_closer, pg_url)
    parent_key: FullKey = (("pg", "fork"), "parent")
    cache.set({parent_key: ("parent", None)})
    assert cache.get([parent_key]) == {parent_key: "parent"}  # the parent holds an idle one
    context = multiprocessing.get_context("fork")
    results = context.Queue()

    def child(index: int) -> None:
        try:
            problems = _mixed(cache, index, calls=100)
            cache.close()  # closes only what the child made
            results.put(problems)
        except BaseException as exc:
            results.put([repr(exc)])

    children = [context.Process(target=child, args=(i,)) for i in range(3)]
    for process in children:
        process.start()
    parent_reads = [cache.get([parent_key]) for _ in range(100)]
    outcomes = [results.get(timeout=60) for _ in children]
    for process in children:
        process.join(timeout=30)
    assert outcomes == [[]] * 3
    assert parent_reads == [{parent_key: "parent"}] * 100
    assert cache.get([parent_key]) == {parent_key: "parent"}


def test_threads_of_one_process_get_no_error_and_no_wrong_value(
    pg_url: str, pg_closer: Closer
) -> None:
    cache = make_pg_cache(pg_closer, pg_url, pool_size=2)  # threads wait their turn
    assert _threads_of_mixed(cache, 0, calls=100) == []


@pytest.mark.parametrize("stack", ["bare", "observe"])
def test_cached_under_threads_and_coroutines_counts_no_error(
    pg_url: str, pg_closer: Closer, stack: str
) -> None:
    registry = CollectorRegistry()
    backend = make_pg_cache(pg_closer, pg_url)
    cache: Any = observe(backend, registry=registry) if stack == "observe" else backend
    failures: list[str] = []

    @cached("pg.load", cache=cache, ttl=1)
    def value(n: int) -> str:
        return _expected(str(n))

    @cached("pg.load", cache=cache, ttl=1)
    async def avalue(n: int) -> str:
        return _expected(str(n))

    def threaded(seed: int) -> None:
        rng = random.Random(seed)
        for _ in range(100):
            n = rng.randrange(200)
            if value(n) != _expected(str(n)):
                failures.append(f"thread {n}")

    async def coroutine(seed: int) -> None:
        rng = random.Random(seed)
        for _ in range(10):
            n = rng.randrange(200)
            if await avalue(n) != _expected(str(n)):
                failures.append(f"coroutine {n}")

    threads = [threading.Thread(target=threaded, args=(i,)) for i in range(THREADS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    async def main() -> None:
        await asyncio.gather(*(coroutine(i) for i in range(COROUTINES)))

    asyncio.run(main())
    assert failures == []
    assert metric_total(registry, "cache_errors_total") == 0
    assert metric_total(registry, "cache_circuit_breaker_transitions_total", state="open") == 0
