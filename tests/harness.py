"""The conformance harness: every backend and middleware stack the suite runs against.

Later backends join by adding a factory to ``BACKENDS``; middleware stacks by adding a
wrapper to ``STACKS``. Each case in ``test_conformance.py`` then runs against every pair.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import sqlite3
import time
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import pytest

from toolkit import BaseCache, FullKey, InMemoryCache, Namespace, SqliteCache
from toolkit.backends._integrity import seal
from toolkit.backends._sqlite_sql import encode_namespace


class FakeClock:
    """A monotonic clock that moves only when told to."""

    def __init__(self, start: float = 1_000.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


Injector = Callable[[FullKey, str, bytes], None]


def flip_byte(blob: bytes, where: str | int = "middle") -> bytes:
    """``blob`` with one bit of its first, middle, last (or ``where``-th) byte inverted."""
    if isinstance(where, int):
        at = where
    else:
        at = {"first": 0, "middle": len(blob) // 2, "last": len(blob) - 1}[where]
    return blob[:at] + bytes((blob[at] ^ 0x01,)) + blob[at + 1 :]


@dataclass
class Subject:
    """One cache under test plus what the suite needs to drive it."""

    name: str
    cache: BaseCache[Any]
    advance: Callable[[float], None]
    inject: Injector | None = None
    """Write raw ``(tag, payload)`` bytes under a key, bypassing the serializer."""
    corrupt: Callable[[FullKey, str | int], None] | None = None
    """Flip one byte of a stored entry in place, as a disk or a bad write would."""
    exact_namespaces: bool = True
    """False for foreign caches known to join namespace parts (LangGraph's SqliteCache)."""
    validates_input: bool = True
    atomic_batches: bool = True
    """False for foreign caches that write a batch key by key (earlier keys stay on failure)."""
    max_batch: int | None = None
    """The largest batch a foreign cache takes (LangGraph's SqliteCache: a variable per key)."""
    lossy: Callable[[Any], bool] | None = None
    """For a foreign cache's own serializer: the values it is known not to round-trip."""
    raw: Any = None
    extras: dict[str, Any] = field(default_factory=dict)


BACKENDS: dict[str, Callable[[pytest.FixtureRequest, Path], Any]] = {}
STACKS: dict[str, Callable[[Subject], Subject]] = {}


def backend(name: str) -> Callable[[Callable[..., Iterator[Subject]]], Callable[..., Any]]:
    """Register a context-manager factory of subjects under ``name``."""

    def register(fn: Callable[..., Iterator[Subject]]) -> Callable[..., Any]:
        factory = contextmanager(fn)
        BACKENDS[name] = factory
        return factory

    return register


def real_sleep(seconds: float) -> None:
    time.sleep(seconds)


@backend("memory")
def _memory(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Subject]:
    clock = FakeClock()
    cache: InMemoryCache[Any] = InMemoryCache(timer=clock, max_entries=None)

    def inject(full_key: FullKey, tag: str, payload: bytes) -> None:
        cache.set({full_key: (0, None)})
        cache._data[full_key] = (tag, payload)

    yield Subject("memory", cache, clock.advance, inject=inject, raw=cache)


@backend("redis")
def _redis(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Subject]:
    from tests.redis_support import redis_subject

    yield redis_subject(request, cluster=False)


@backend("redis-cluster")
def _redis_cluster(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Subject]:
    from tests.redis_support import redis_subject

    yield redis_subject(request, cluster=True)


@backend("postgres")
def _postgres(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Subject]:
    from tests.postgres_support import pg_subject

    yield pg_subject(request)


def _sqlite(name: str, path: str) -> Iterator[Subject]:
    cache: SqliteCache[Any] = SqliteCache(path=path)

    def inject(full_key: FullKey, tag: str, payload: bytes) -> None:
        # A separate raw connection, as another process or a tamperer would write.
        raw = sqlite3.connect(cache._conns.database, uri=cache._conns.uri)
        try:
            with raw:
                raw.execute(
                    f'INSERT OR REPLACE INTO "{cache._sql.table}" (ns, key, expiry, tag, val) '
                    "VALUES (?, ?, NULL, ?, ?)",
                    (encode_namespace(full_key[0]), full_key[1], tag, seal(payload)),
                )
        finally:
            raw.close()

    def corrupt(full_key: FullKey, where: str | int) -> None:
        raw = sqlite3.connect(cache._conns.database, uri=cache._conns.uri)
        match = "WHERE ns = ? AND key = ?"
        args = (encode_namespace(full_key[0]), full_key[1])
        try:
            with raw:
                table = f'"{cache._sql.table}"'
                (blob,) = raw.execute(f"SELECT val FROM {table} {match}", args).fetchone()
                flipped = flip_byte(blob, where)
                raw.execute(f"UPDATE {table} SET val = ? {match}", (flipped, *args))
        finally:
            raw.close()

    try:
        yield Subject(name, cache, real_sleep, inject=inject, corrupt=corrupt, raw=cache)
    finally:
        cache.close()


@backend("sqlite-file")
def _sqlite_file(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Subject]:
    yield from _sqlite("sqlite-file", str(tmp_path / "cache.db"))


@backend("sqlite-memory")
def _sqlite_memory(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Subject]:
    yield from _sqlite("sqlite-memory", ":memory:")


STACKS["bare"] = lambda subject: subject


def langgraph_serde_loses(value: Any) -> bool:
    """LangGraph's JsonPlusSerializer returns tuples as lists and refuses ints beyond 64 bits."""
    if isinstance(value, tuple):
        return True
    if isinstance(value, int) and not isinstance(value, bool):
        return not -(2**63) <= value < 2**64
    if isinstance(value, dict):
        return any(langgraph_serde_loses(k) or langgraph_serde_loses(v) for k, v in value.items())
    if isinstance(value, list):
        return any(langgraph_serde_loses(v) for v in value)
    return False


@backend("langgraph-memory")
def _langgraph_memory(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Subject]:
    from langgraph.cache.memory import InMemoryCache as LangGraphMemory

    # LangGraph's caches read the wall clock: ttl cases really wait. They write a batch key by key.
    cache: Any = LangGraphMemory()
    yield Subject(
        "langgraph-memory",
        cache,
        real_sleep,
        validates_input=False,
        atomic_batches=False,
        lossy=langgraph_serde_loses,
        raw=cache,
    )


@backend("langgraph-sqlite")
def _langgraph_sqlite(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Subject]:
    from langgraph.cache.sqlite import SqliteCache as LangGraphSqlite

    cache: Any = LangGraphSqlite(path=str(tmp_path / "langgraph-cache.sqlite"))
    try:
        yield Subject(
            "langgraph-sqlite",
            cache,
            real_sleep,
            exact_namespaces=False,
            validates_input=False,
            atomic_batches=False,
            max_batch=10_000,
            lossy=langgraph_serde_loses,
            raw=cache,
        )
    finally:
        cache._conn.close()


def _observed(subject: Subject) -> Subject:
    from prometheus_client import CollectorRegistry

    from toolkit import observe

    registry = CollectorRegistry()
    # A generous deadline: conformance checks behaviour; deadlines have their own tests.
    cache = observe(subject.cache, registry=registry, deadline=30.0)
    extras = {**subject.extras, "registry": registry}
    return replace(
        subject, name=f"{subject.name}-observed", cache=cache, validates_input=True, extras=extras
    )


STACKS["observed"] = _observed


def _stacked(subject: Subject) -> Subject:
    from prometheus_client import CollectorRegistry

    from toolkit import CacheMiddleware, FailOpen, Metrics, Tracing, Validate, wrap
    from toolkit.middleware.validate import needs_validation

    registry = CollectorRegistry()
    front: list[CacheMiddleware[Any]] = [Validate()] if needs_validation(subject.cache) else []
    cache = wrap(
        subject.cache, *front, FailOpen(deadline=30.0), Metrics(registry=registry), Tracing()
    )
    extras = {**subject.extras, "registry": registry}
    return replace(
        subject, name=f"{subject.name}-stacked", cache=cache, validates_input=True, extras=extras
    )


# The same three layers as observe() builds fused, composed by hand: both must equal bare.
STACKS["stacked"] = _stacked

# Pairs that a stack cannot run (e.g. a foreign cache that only makes sense wrapped).
EXCLUDED: set[tuple[str, str]] = {("langgraph-memory", "bare"), ("langgraph-sqlite", "bare")}


def subject_params() -> list[Any]:
    """All (backend, stack) pairs as pytest params with readable ids and marks."""
    params = []
    for backend_name in BACKENDS:
        for stack_name in STACKS:
            if (backend_name, stack_name) in EXCLUDED:
                continue
            marks = [pytest.mark.redis] if backend_name.startswith("redis") else []
            if backend_name == "postgres":
                marks = [pytest.mark.postgres]
            params.append(
                pytest.param(
                    (backend_name, stack_name), id=f"{backend_name}-{stack_name}", marks=marks
                )
            )
    return params


class Ops:
    """Drives a cache through its sync or its async methods with one async interface."""

    def __init__(self, cache: BaseCache[Any], mode: str) -> None:
        self.cache = cache
        self.mode = mode

    async def get(self, keys: Sequence[FullKey]) -> dict[FullKey, Any]:
        if self.mode == "sync":
            return self.cache.get(keys)
        return await self.cache.aget(keys)

    async def set(self, pairs: Mapping[FullKey, tuple[Any, float | None]]) -> None:
        if self.mode == "sync":
            self.cache.set(pairs)  # type: ignore[arg-type]
        else:
            await self.cache.aset(pairs)  # type: ignore[arg-type]

    async def clear(self, namespaces: Sequence[Namespace] | None = None) -> None:
        if self.mode == "sync":
            self.cache.clear(namespaces)
        else:
            await self.cache.aclear(namespaces)

    async def get_one(self, full_key: FullKey) -> Any:
        return (await self.get([full_key])).get(full_key, MISSING)


MISSING: Any = type("Missing", (), {"__repr__": lambda self: "<MISSING>"})()


def run(coro: Any) -> Any:
    return asyncio.run(coro)


def in_forked_child(work: Callable[[], object]) -> object:
    """What ``work()`` returns in a forked child (a hang fails after a generous bound)."""
    context = multiprocessing.get_context("fork")
    results = context.Queue()
    child = context.Process(target=lambda: results.put(work()))
    with warnings.catch_warnings():  # Python >= 3.12 warns about forking with threads
        warnings.simplefilter("ignore", DeprecationWarning)
        child.start()
    try:
        return results.get(timeout=60)
    finally:
        child.kill()
        child.join(timeout=60)
