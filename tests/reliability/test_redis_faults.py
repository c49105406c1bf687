"""Redis faults made for real: a server killed and restarted, a server that never answers,
and a server killed in the middle of a batch write."""

from __future__ import annotations

import asyncio
import random
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.reliability.conftest import FAILED, Tally
from tests.reliability.faults import BlackHoleServer, RedisProcess, wait_for
from tests.reliability.stacks import (
    aclose,
    carries_key,
    errors_counted,
    observed,
    redis_module,
    tagged,
)
from toolkit import FullKey

pytestmark = pytest.mark.redis

DEADLINE = 0.3
GRACE = 1.5
"""Scheduling slack on a loaded 2-core machine: a hang is many times longer."""


def circuit_state(stack: Any) -> int:
    """The fail-open layer's breaker state in a stack: 0 closed, 1 half-open, 2 open."""
    layer = stack
    while not hasattr(layer, "circuit_state"):
        layer = layer.inner
    return int(layer.circuit_state)


def _cached() -> Callable[..., Callable[[Callable[..., Any]], Any]]:
    module = pytest.importorskip("toolkit.decorators", reason="@cached not merged yet")
    decorator: Callable[..., Callable[[Callable[..., Any]], Any]] = module.cached
    return decorator


@pytest.mark.slow
async def test_refuses_connections_then_comes_back(
    tmp_path: Path, tally: Callable[..., Tally]
) -> None:
    redis_mod = redis_module()
    cached = _cached()
    row = tally("redis: killed (refuses connections), then restarted on its port")
    computed = {"n": 0}

    with RedisProcess(tmp_path) as server:
        cache = redis_mod.RedisCache.from_url(server.url, prefix=f"rel-{random.random()}:")
        stack, registry = observed(cache, deadline=DEADLINE, failure_threshold=3, reset_timeout=0.5)

        @cached(("reliability", "square"), cache=stack)
        def square(x: int) -> list[int]:
            computed["n"] += 1
            return [x, x * x]

        @cached(("reliability", "asquare"), cache=stack)
        async def asquare(x: int) -> list[int]:
            computed["n"] += 1
            return [x, x * x]

        async def both(x: int) -> None:
            row.check(row.call(square, x) == [x, x * x])
            row.check(await row.acall(asquare, x) == [x, x * x])

        try:
            for x in range(10):
                await both(x)
            before = computed["n"]
            for x in range(10):
                await both(x)
            assert computed["n"] == before, "the cache was not serving hits while Redis was up"

            server.kill()
            states = set()
            for x in range(100, 130):
                await both(x)
                states.add(circuit_state(stack))
            assert 2 in states, "the circuit never opened while Redis was down"
            assert errors_counted(registry) > 0, "failures were not counted"

            server.start()
            closed = False
            for x in range(200, 400):
                await both(x)
                if circuit_state(stack) == 0:
                    closed = True
                    break
                await asyncio.sleep(0.05)
            assert closed, "the circuit did not close once Redis was back"
            before = computed["n"]
            await both(1000)
            await both(1000)
            assert computed["n"] == before + 2, "the cache did not serve hits after recovery"
        finally:
            await aclose(cache)

    assert row.errors == 0, row.error_types
    assert row.wrong == 0


def _redis_clients(url_host: str, port: int, pool_size: int, timeout: float) -> tuple[Any, Any]:
    """Sync and async clients with bounded pools, long socket timeouts and no retries."""
    import redis
    import redis.asyncio as aredis
    from redis.asyncio.retry import Retry as AsyncRetry
    from redis.backoff import NoBackoff
    from redis.retry import Retry

    options: dict[str, Any] = {"host": url_host, "port": port, "socket_timeout": timeout}
    options["socket_connect_timeout"] = timeout
    client = redis.Redis(
        connection_pool=redis.ConnectionPool(max_connections=pool_size, **options),
        retry=Retry(NoBackoff(), 0),
    )
    aclient = aredis.Redis(
        connection_pool=aredis.ConnectionPool(max_connections=pool_size, **options),
        retry=AsyncRetry(NoBackoff(), 0),
    )
    return client, aclient


async def _tick_gaps(stop: asyncio.Event, gaps: list[float]) -> None:
    loop = asyncio.get_running_loop()
    last = loop.time()
    while not stop.is_set():
        await asyncio.sleep(0.005)
        now = loop.time()
        gaps.append(now - last)
        last = now


@pytest.mark.slow
async def test_black_hole_server(black_hole: BlackHoleServer, tally: Callable[..., Tally]) -> None:
    redis_mod = redis_module()
    pool = 2
    client, aclient = _redis_clients("127.0.0.1", black_hole.port, pool, timeout=30.0)
    cache = redis_mod.RedisCache(client, aclient=aclient, prefix="blackhole:")
    stack, registry = observed(cache, deadline=DEADLINE, failure_threshold=10_000)
    sync_row = tally(f"redis: server accepts, never answers (sync, deadline {DEADLINE}s)")
    async_row = tally(f"redis: server accepts, never answers (async, deadline {DEADLINE}s)")
    keys: list[FullKey] = [(("reliability", "hole"), f"k{i}") for i in range(5)]
    pairs = {fk: (tagged(fk, 0, 0), None) for fk in keys}
    gaps: list[float] = []
    try:
        for _ in range(4):
            sync_row.check(sync_row.call(stack.get, keys) == {})
            sync_row.call(stack.set, pairs)
            sync_row.call(stack.clear, [("reliability", "hole")])

        stop = asyncio.Event()
        ticker = asyncio.create_task(_tick_gaps(stop, gaps))
        for _ in range(4):
            async_row.check(await async_row.acall(stack.aget, keys) == {})
            await async_row.acall(stack.aset, pairs)
            await async_row.acall(stack.aclear, [("reliability", "hole")])
        start = time.perf_counter()
        results = await asyncio.gather(
            *(stack.aget(keys) for _ in range(20)), return_exceptions=True
        )
        async_row.timed(time.perf_counter() - start, count=len(results))
        for result in results:
            if isinstance(result, BaseException):
                async_row.error(result)
            else:
                async_row.check(result == {})
        stop.set()
        await ticker
        peak = black_hole.peak_open
    finally:
        client.close()
        await aclient.aclose()

    for row in (sync_row, async_row):
        assert row.errors == 0, row.error_types
        assert row.wrong == 0
        assert row.worst < DEADLINE + GRACE
    assert max(gaps) < DEADLINE + GRACE, f"the event loop stalled for {max(gaps):.2f}s"
    assert 0 < peak <= 2 * pool, f"{peak} connections open at once, pools allow {2 * pool}"
    assert errors_counted(registry) > 0


@pytest.mark.slow
async def test_black_hole_with_from_url_defaults(
    black_hole: BlackHoleServer, tally: Callable[..., Tally]
) -> None:
    redis_mod = redis_module()
    cache = redis_mod.RedisCache.from_url(black_hole.url)
    stack, _ = observed(cache)  # the default deadline and breaker
    row = tally("redis: server never answers (from_url defaults, default observe)")
    keys: list[FullKey] = [(("reliability", "hole"), "k")]
    try:
        for _ in range(8):
            row.check(row.call(stack.get, keys) == {})
            row.check(await row.acall(stack.aget, keys) == {})
            row.call(stack.set, {keys[0]: ("v", None)})
            await row.acall(stack.aset, {keys[0]: ("v", None)})
    finally:
        await aclose(cache)
    assert row.errors == 0, row.error_types
    assert row.wrong == 0
    assert row.worst < 0.5 + GRACE


BATCH = 1_000
VALUE_PAD = "x" * 512


def _batch(version: int) -> dict[FullKey, tuple[Any, None]]:
    return {
        (("reliability", "batch"), f"k{i}"): (
            [*tagged((("reliability", "batch"), f"k{i}"), version, i), VALUE_PAD],
            None,
        )
        for i in range(BATCH)
    }


def _intact(value: Any, full_key: FullKey, newest: int) -> bool:
    return (
        isinstance(value, list)
        and len(value) == 5
        and carries_key(value[:4], full_key)
        and 1 <= value[2] <= newest
        and value[4] == VALUE_PAD
    )


@pytest.mark.slow
@pytest.mark.parametrize("api", ["sync", "async"])
async def test_killed_during_batch_write(
    tmp_path: Path, tally: Callable[..., Tally], api: str
) -> None:
    redis_mod = redis_module()
    row = tally(f"redis: SIGKILL during {BATCH}-key batch writes ({api}), AOF restart")
    keys = list(_batch(0))
    with RedisProcess(tmp_path, persistent=True) as server:
        cache = redis_mod.RedisCache.from_url(server.url, prefix="batch:")
        stack, registry = observed(cache, deadline=5.0, failure_threshold=10_000)
        started = {"version": 0}
        stop = threading.Event()
        try:
            if api == "sync":

                def writer() -> None:
                    while not stop.is_set():
                        started["version"] += 1
                        row.call(stack.set, _batch(started["version"]))

                thread = threading.Thread(target=writer)
                thread.start()
                assert wait_for(lambda: started["version"] >= 2, timeout=30)
                time.sleep(random.uniform(0.0, 0.05))
                server.kill()
                # Two writes begun after the kill: at least one met the dead server.
                killed_at = started["version"]
                assert wait_for(lambda: started["version"] >= killed_at + 2, timeout=60)
                stop.set()
                thread.join()
            else:

                async def awriter() -> None:
                    while not stop.is_set():
                        started["version"] += 1
                        await row.acall(stack.aset, _batch(started["version"]))

                task = asyncio.create_task(awriter())
                while started["version"] < 2:
                    await asyncio.sleep(0.005)
                await asyncio.sleep(random.uniform(0.0, 0.05))
                server.kill()
                killed_at = started["version"]
                while started["version"] < killed_at + 2:
                    await asyncio.sleep(0.01)
                stop.set()
                await task

            server.start()
            newest = started["version"]
            for attempt in range(2):  # the first read after a restart may meet dead connections
                got = (
                    row.call(stack.get, keys)
                    if api == "sync"
                    else await row.acall(stack.aget, keys)
                )
                if got is not FAILED and got:
                    break
                await asyncio.sleep(0.2 * (attempt + 1))
            assert got is not FAILED and got, "nothing was readable after the restart"
            for full_key, value in got.items():
                row.check(_intact(value, full_key, newest))
            # Writes work again, and every key then reads exactly what was written last.
            final = _batch(newest + 1)
            if api == "sync":
                row.call(stack.set, final)
                again = row.call(stack.get, keys)
            else:
                await row.acall(stack.aset, final)
                again = await row.acall(stack.aget, keys)
            row.check(again == {fk: value for fk, (value, _) in final.items()})
            dropped = errors_counted(registry, operation="set")
        finally:
            await aclose(cache)

    assert row.errors == 0, row.error_types
    assert row.wrong == 0
    assert dropped > 0, "the writes that met the dead server were not counted"
