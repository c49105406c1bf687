"""``@cached`` single-flight under threads and coroutines, and when the leader is cancelled."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from tests.metric_catalog import metric_total
from tests.reliability.conftest import FAILED, Tally
from tests.reliability.faults import wait_for
from tests.reliability.stacks import aclose, observed, sqlite_cache
from toolkit import InMemoryCache

WAIT = 30.0
"""Upper bound for anything that should happen at once; reaching it means a hang."""


def _cached() -> Callable[..., Callable[[Callable[..., Any]], Any]]:
    module = pytest.importorskip("toolkit.decorators", reason="@cached not merged yet")
    decorator: Callable[..., Callable[[Callable[..., Any]], Any]] = module.cached
    return decorator


def _coalesced(registry: CollectorRegistry) -> float:
    return metric_total(registry, "cache_coalesced_total")


def _backend(kind: str, tmp_path: Path) -> Any:
    return InMemoryCache() if kind == "memory" else sqlite_cache(tmp_path / "flight.db")


@pytest.mark.parametrize("kind", ["memory", "sqlite"])
async def test_threads_and_coroutines_share_one_computation(
    kind: str, tmp_path: Path, tally: Callable[..., Tally]
) -> None:
    """8 threads and 8 coroutines (through an executor) ask for one key: one computation."""
    backend = _backend(kind, tmp_path)
    stack, registry = observed(backend)
    row = tally(f"{kind}: @cached, 8 threads + 8 coroutines on one missing key")
    release = threading.Event()
    runs: list[int] = []

    def slow(x: int) -> list[int]:
        runs.append(x)
        release.wait(WAIT)
        return [x, x * 2]

    lookup: Any = _cached()(("reliability", "flight", kind), cache=stack, key_id="slow")(slow)
    results: list[Any] = []
    lock = threading.Lock()

    def caller() -> None:
        value = row.call(lookup, 21)
        with lock:
            results.append(value)

    threads = [threading.Thread(target=caller) for _ in range(8)]
    loop = asyncio.get_running_loop()
    # As LangGraph runs sync nodes under an async graph: coroutines hand them to a pool.
    pool = ThreadPoolExecutor(max_workers=8)
    try:
        for thread in threads:
            thread.start()
        coroutines = asyncio.gather(*(loop.run_in_executor(pool, caller) for _ in range(8)))
        # Release the leader only once all 15 others are waiting on its flight.
        arrived = await asyncio.to_thread(wait_for, lambda: _coalesced(registry) >= 15, WAIT)
        release.set()
        await asyncio.wait_for(coroutines, WAIT)
        for thread in threads:
            thread.join(WAIT)
        # Later callers are plain hits.
        for value in [row.call(lookup, 21) for _ in range(3)]:
            results.append(value)
    finally:
        release.set()
        pool.shutdown(wait=True)
        await aclose(backend)
    assert arrived, f"only {_coalesced(registry)} callers coalesced"
    for value in results:
        row.check(value == [21, 42])
    assert len(results) == 19
    assert runs == [21], f"computed {len(runs)} times"
    assert row.errors == 0 and row.wrong == 0


async def test_coroutines_on_many_loops(tally: Callable[..., Tally]) -> None:
    """4 threads, each its own event loop with 10 coroutines on one key: one computation
    per loop at most (single-flight is per loop by design), every result right."""
    stack, registry = observed(InMemoryCache())
    row = tally("memory: @cached async, 4 loops x 10 coroutines on one key")
    runs: list[int] = []
    entered = threading.Barrier(4, timeout=WAIT)

    async def slow(x: int) -> list[int]:
        runs.append(x)
        await asyncio.sleep(0.05)
        return [x, x * 2]

    lookup: Any = _cached()(("reliability", "loops"), cache=stack)(slow)
    lock = threading.Lock()

    async def one_loop() -> None:
        tasks = [lookup(7) for _ in range(10)]
        values = await asyncio.gather(*tasks, return_exceptions=True)
        with lock:
            for value in values:
                row.operations += 1
                if isinstance(value, BaseException):
                    row.error(value)
                else:
                    row.check(value == [7, 14])

    def run_loop() -> None:
        entered.wait()
        asyncio.run(one_loop())

    threads = [threading.Thread(target=run_loop) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        await asyncio.to_thread(thread.join, WAIT)
    assert not any(thread.is_alive() for thread in threads), "a loop hung"
    assert row.operations == 40
    assert row.errors == 0 and row.wrong == 0
    assert 1 <= len(runs) <= 4, f"computed {len(runs)} times for 4 loops"
    assert _coalesced(registry) >= 40 - 4


async def test_cancelled_leader_hands_over(tally: Callable[..., Tally]) -> None:
    """The coroutine computing a value is cancelled while 5 others wait: one of them
    computes instead, all five get the value, nothing hangs."""
    stack, registry = observed(InMemoryCache())
    row = tally("memory: @cached leader cancelled while 5 coroutines wait")
    runs: list[int] = []
    forever = asyncio.Event()

    async def compute(x: int) -> list[int]:
        runs.append(x)
        if len(runs) == 1:
            await forever.wait()  # the first computation never finishes on its own
        return [x, x * 3]

    lookup: Any = _cached()(("reliability", "cancel"), cache=stack, key_id="compute")(compute)
    leader = asyncio.create_task(lookup(5))
    while not runs:
        await asyncio.sleep(0)
    waiters = [asyncio.create_task(row.acall(lookup, 5)) for _ in range(5)]
    while _coalesced(registry) < 5:
        await asyncio.sleep(0.001)
    leader.cancel()
    values = await asyncio.wait_for(asyncio.gather(*waiters), WAIT)
    with pytest.raises(asyncio.CancelledError):
        await leader
    for value in values:
        row.check(value == [5, 15])
    assert row.errors == 0 and row.wrong == 0
    assert runs == [5, 5], f"expected the cancelled run and one takeover, got {len(runs)} runs"
    assert await row.acall(lookup, 5) == [5, 15]
    assert len(runs) == 2, "the takeover's value was not cached"


async def test_sync_leader_failure_reaches_waiters_and_is_not_cached(
    tally: Callable[..., Tally],
) -> None:
    """A leader that raises: waiters see the error (never a wrong value), the next call
    computes afresh."""
    stack, registry = observed(InMemoryCache())
    row = tally("memory: @cached leader raises while 5 threads wait", "bare")
    release = threading.Event()
    runs: list[int] = []

    def flaky(x: int) -> int:
        runs.append(x)
        if len(runs) == 1:
            release.wait(WAIT)
            raise RuntimeError("first computation fails")
        return x + 1

    lookup: Any = _cached()(("reliability", "flaky"), cache=stack, key_id="flaky")(flaky)
    outcomes: list[Any] = []

    def caller() -> None:
        outcomes.append(row.call(lookup, 1))

    threads = [threading.Thread(target=caller) for _ in range(6)]
    for thread in threads:
        thread.start()
    arrived = await asyncio.to_thread(wait_for, lambda: _coalesced(registry) >= 5, WAIT)
    release.set()
    for thread in threads:
        await asyncio.to_thread(thread.join, WAIT)
    assert arrived
    assert not any(thread.is_alive() for thread in threads)
    # Every caller saw the leader's error or a correct value; nothing else, no wrong value.
    for value in outcomes:
        row.check(value is FAILED or value == 2)
    assert set(row.error_types) == {"RuntimeError"}
    assert row.call(lookup, 1) == 2
    assert row.wrong == 0
