"""What one load case runs: a backend, bare or observed, behind a ``@cached`` function."""

from __future__ import annotations

import random
import uuid
from dataclasses import dataclass
from typing import Any

from prometheus_client import CollectorRegistry

from toolkit import InMemoryCache, SqliteCache, cached, observe
from toolkit.backends.redis import RedisCache

BACKENDS = ("memory", "sqlite", "redis", "postgres", "langgraph-memory", "langgraph-sqlite")
STACKS = ("bare", "observe")
MODES = ("threads4", "threads16", "processes4", "coroutines100", "coroutines1000")

KEYS = 2_000
HOT = 400  # 80 % of calls go to these keys, as real traffic is skewed
TTL = 2  # entries expire during a case: the mix has hits, misses, writes and expiries
SIZES = ((100, 50), (2_000, 30), (16_000, 15), (64_000, 5))  # bytes, weight in percent


@dataclass(frozen=True)
class Spec:
    """A case's cache, described so a spawned process can build it too."""

    backend: str
    stack: str
    where: str  # a SQLite file, a Redis URL and prefix, a PostgreSQL URL and table

    def build(self, registry: CollectorRegistry) -> Any:
        """The cache the case's function uses."""
        cache = _backend(self.backend, self.where)
        if self.stack == "observe":
            return observe(cache, registry=registry)
        return cache


def _backend(name: str, where: str) -> Any:
    if name == "memory":
        return InMemoryCache()
    if name == "sqlite":
        return SqliteCache(path=where)
    if name == "redis":
        url, prefix = where.split("|", 1)
        return RedisCache.from_url(url, prefix=prefix)
    if name == "postgres":
        from toolkit.backends.postgres import PostgresCache

        url, table = where.split("|", 1)
        return PostgresCache.from_url(url, table=table)
    if name == "langgraph-memory":
        from langgraph.cache.memory import InMemoryCache as LangGraphMemory

        return LangGraphMemory()
    if name == "langgraph-sqlite":
        from langgraph.cache.sqlite import SqliteCache as LangGraphSqlite

        return LangGraphSqlite(path=where)
    raise ValueError(f"unknown backend {name!r}")


def redis_where(url: str) -> str:
    """A Redis location with a prefix of its own, so cases never share entries."""
    return f"{url}|toolkit:load:{uuid.uuid4().hex}:"


def postgres_where(url: str) -> str:
    """A PostgreSQL location with a table of its own, so cases never share entries."""
    return f"{url}|toolkit_load_{uuid.uuid4().hex[:16]}"


def drop_postgres(where: str) -> None:
    """Drop a case's table and its lease table."""
    import psycopg

    url, table = where.split("|", 1)
    with psycopg.connect(url, autocommit=True, connect_timeout=5) as conn:
        conn.execute(f'DROP TABLE IF EXISTS "{table}", "{table[:57]}_lease"')


class Workload:
    """The ``@cached`` functions a worker calls, and how it picks arguments."""

    def __init__(self, cache: Any, seed: int) -> None:
        self.rng = random.Random(seed)
        sizes = [size for size, weight in SIZES for _ in range(weight)]

        @cached("load.values", cache=cache, ttl=TTL, key_id="load.values")
        def value(n: int) -> bytes:
            return bytes([n % 256]) * sizes[n % len(sizes)]

        @cached("load.values", cache=cache, ttl=TTL, key_id="load.values")
        async def avalue(n: int) -> bytes:
            return bytes([n % 256]) * sizes[n % len(sizes)]

        self.value = value
        self.avalue = avalue

    def pick(self) -> int:
        """A key: mostly from the hot set."""
        rng = self.rng
        return rng.randrange(HOT) if rng.random() < 0.8 else rng.randrange(KEYS)
