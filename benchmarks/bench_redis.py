"""RedisCache against a raw redis-py GET and LangGraph's ``RedisCache`` on the same server.

Both caches get the same serializer, so the ratios measure the cache machinery and the
Redis traffic it generates, not the encoding. The server is found or started by the
tests' rules (``tests/redis_servers.py``).
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import redis
from langgraph.cache.redis import RedisCache as LangGraphRedisCache

from benchmarks._harness import Comparison, sync_of
from tests.redis_servers import find_or_start_redis
from toolkit import FullKey, SafeSerializer
from toolkit.backends.redis import RedisCache

NS = ("bench", "node")
VALUE = {"messages": [["ai", "hello world " * 4]] * 3, "step": 7}
BATCH = 100


def suite() -> Iterator[Comparison]:
    """get of 1 hit, set of 100, and 100 concurrent agets."""
    with find_or_start_redis() as url:
        loop = asyncio.new_event_loop()
        serde = SafeSerializer()
        ours: RedisCache[Any] = RedisCache.from_url(url, prefix="toolkit:bench:", serde=serde)
        raw = redis.Redis.from_url(url)
        theirs: LangGraphRedisCache[Any] = LangGraphRedisCache(
            raw, prefix="langgraph:bench:", serde=serde
        )
        try:
            yield from _comparisons(ours, theirs, loop)
        finally:
            ours.clear()
            theirs.clear()
            loop.run_until_complete(ours.aclose())
            loop.close()
            raw.close()


def _comparisons(
    ours: RedisCache[Any], theirs: LangGraphRedisCache[Any], loop: asyncio.AbstractEventLoop
) -> Iterator[Comparison]:
    hit: FullKey = (NS, "hit")
    ours.set({hit: (VALUE, None)})
    theirs.set({hit: (VALUE, None)})
    floor_client = ours.client
    floor_key = ours.redis_key(hit)
    yield Comparison(
        "redis get 1 hit vs raw redis-py GET of the same bytes",
        lambda: ours.get([hit]),
        lambda: floor_client.get(floor_key),
        baseline="redis-py GET (floor)",
        target=1.08,
        inner_loops=200,
    )
    yield Comparison(
        "redis get 1 hit (LangGraph's) vs raw redis-py GET",
        lambda: theirs.get([hit]),
        lambda: floor_client.get(floor_key),
        baseline="redis-py GET (floor)",
        inner_loops=200,
    )

    pairs: dict[FullKey, tuple[Any, int | None]] = {
        (NS, f"k{i}"): (VALUE, 60) for i in range(BATCH)
    }
    yield Comparison(
        f"redis set {BATCH} (ttl 60 s)",
        lambda: ours.set(pairs),
        lambda: theirs.set(pairs),
        baseline="langgraph RedisCache",
        target=0.85,
        inner_loops=20,
    )

    keys = list(pairs)
    ours.set(pairs)
    theirs.set(pairs)

    async def ours_gather() -> object:
        return await asyncio.gather(*(ours.aget([key]) for key in keys))

    async def theirs_gather() -> object:
        return await asyncio.gather(*(theirs.aget([key]) for key in keys))

    yield Comparison(
        f"redis {BATCH} concurrent aget via asyncio.gather",
        sync_of(ours_gather, loop),
        sync_of(theirs_gather, loop),
        baseline="langgraph RedisCache",
        target=0.35,
        inner_loops=10,
    )
