"""Bursts of concurrent coroutines on a healthy Redis: no call fails, the breaker stays shut.

``from_url``'s defaults decide this (pool class and size, the wait for a connection, the
call bound): every coroutine queues for one of the loop's pooled connections within the
bound instead of opening a connection each (and racing its connect timeout) or failing
with ``MaxConnectionsError``. Counts errors only, never time.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from tests.metric_catalog import metric_total
from tests.redis_support import unique_prefix
from toolkit import FullKey, observe
from toolkit.backends.redis import RedisCache

pytestmark = pytest.mark.redis


@pytest.mark.parametrize("coroutines", [100, 1_000])
def test_a_burst_of_coroutines_makes_no_errors(redis_url: str, coroutines: int) -> None:
    backend: RedisCache[Any] = RedisCache.from_url(redis_url, prefix=unique_prefix())
    registry = CollectorRegistry()
    cache = observe(backend, registry=registry)

    async def one(index: int) -> Any:
        key: FullKey = (("burst", str(index % 7)), f"k{index}")
        await cache.aset({key: ({"i": index}, 60)})
        found = await cache.aget([key])
        await cache.adelete([key])
        return found.get(key)

    async def burst() -> list[Any]:
        try:
            return await asyncio.gather(*(one(i) for i in range(coroutines)))
        finally:
            await backend.aclear()
            await backend.aclose()

    found = asyncio.run(burst())
    assert metric_total(registry, "cache_errors_total") == 0
    assert metric_total(registry, "cache_circuit_breaker_transitions_total", state="open") == 0
    assert found == [{"i": i} for i in range(coroutines)]


@pytest.mark.parametrize("cluster", [False, True], ids=["standalone", "cluster"])
def test_gathered_writes_and_deletes_keep_their_order(
    request: pytest.FixtureRequest, cluster: bool
) -> None:
    url = request.getfixturevalue("redis_cluster_url" if cluster else "redis_url")
    cache: RedisCache[Any] = RedisCache.from_url(url, cluster=cluster, prefix=unique_prefix())
    a: FullKey = (("order",), "a")
    b: FullKey = (("order", "b"), "b")

    async def run() -> tuple[Any, Any]:
        try:
            await asyncio.gather(
                cache.aset({a: (1, None), b: (1, None)}),
                cache.adelete([a]),
                cache.aset({a: (2, None)}),
                cache.adelete([b]),
                cache.aset({b: (3, 0)}),  # expires at once: deletes
            )
            first = await cache.aget([a, b])
            await asyncio.gather(cache.aset({b: (4, None)}), cache.adelete([b]))
            return first, await cache.aget([a, b])
        finally:
            await cache.aclear()
            await cache.aclose()

    assert asyncio.run(run()) == ({a: 2}, {a: 2})
