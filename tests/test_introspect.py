"""stats(), namespaces() and iter_keys() on every backend: counts, bytes, expiry, never values."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.harness import FakeClock
from tests.redis_support import make_cache
from toolkit import InMemoryCache, SqliteCache
from toolkit.backends.redis import RedisCache
from toolkit.introspect import CacheStats, KeyInfo, SupportsIntrospection

ODD = ("a/b", "c%}d")  # parts with the characters each store escapes


@pytest.fixture(params=["memory", "sqlite", "redis"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[Any, FakeClock | None]]:
    """A bare backend and the clock it reads (``None``: Redis keeps real time)."""
    clock = FakeClock()
    if request.param == "memory":
        yield InMemoryCache(timer=clock), clock
    elif request.param == "sqlite":
        sqlite: SqliteCache[Any] = SqliteCache(path=str(tmp_path / "c.db"), timer=clock)
        with sqlite:
            yield sqlite, clock
    else:
        closer = request.getfixturevalue("redis_closer")
        yield make_cache(closer, request.getfixturevalue("redis_url")), None


def test_every_backend_supports_introspection(store: tuple[Any, FakeClock | None]) -> None:
    assert isinstance(store[0], SupportsIntrospection)


def test_stats_count_entries_bytes_and_namespaces(store: tuple[Any, FakeClock | None]) -> None:
    cache, _ = store
    assert cache.stats() == CacheStats(0, 0, None if cache.backend_name == "redis" else 0)
    cache.set({(("llm",), f"k{i}"): ("x" * 100, None) for i in range(3)})
    cache.set({(ODD, "k"): (1, 60), ((), "root"): (None, None), (("",), ""): (2, None)})
    stats = cache.stats()
    assert stats.entries == 6
    assert stats.namespaces == {("llm",): 3, ODD: 1, (): 1, ("",): 1}
    assert stats.bytes > 300  # the three 100-character values, as stored
    assert stats.unnamed == 0
    assert cache.namespaces() == stats.namespaces


def test_expired_entries_are_counted_then_purged(store: tuple[Any, FakeClock | None]) -> None:
    cache, clock = store
    if clock is None:
        assert cache.purge_expired() == 0  # Redis deletes expired keys itself
        assert cache.stats().expired is None
        return
    cache.set({(("a",), "short"): (1, 5), (("a",), "long"): (2, 500)})
    clock.advance(10)
    assert (cache.stats().entries, cache.stats().expired) == (2, 1)
    assert [info.key for info in cache.iter_keys(("a",))] == ["long"]  # live keys only
    assert cache.purge_expired() == 1
    assert (cache.stats().entries, cache.stats().expired) == (1, 0)


def test_iter_keys_lists_exactly_one_namespace(store: tuple[Any, FakeClock | None]) -> None:
    cache, _ = store
    cache.set({(ODD, "a"): (1, None), (ODD, "b"): (2, 100), ((*ODD, "child"), "c"): (3, None)})
    cache.set({((ODD[0],), "parent"): (4, None)})
    infos = sorted(cache.iter_keys(ODD))
    assert [info.key for info in infos] == ["a", "b"]
    assert infos[0].expires_in is None
    assert infos[1].expires_in is not None and 0 < infos[1].expires_in <= 100
    assert list(cache.iter_keys(("nothing",))) == []
    with pytest.raises(TypeError, match="namespace"):
        list(cache.iter_keys("llm"))


def test_sqlite_lists_a_big_namespace_in_pages(tmp_path: Path) -> None:
    cache: SqliteCache[Any] = SqliteCache(path=str(tmp_path / "c.db"))
    with cache:
        cache.set({(("big",), f"{i:05}"): (i, None) for i in range(2_500)})
        keys = [info.key for info in cache.iter_keys(("big",))]
    assert keys == [f"{i:05}" for i in range(2_500)]


def test_redis_reads_back_long_names_as_far_as_it_can(
    redis_closer: list[RedisCache[Any]], redis_url: str
) -> None:
    cache = make_cache(redis_closer, redis_url)
    long_ns = ("n" * 200,)
    cache.set({(long_ns, "k"): (1, None), (("short",), "k" * 200): (2, None)})
    # A foreign key under the prefix is not ours: neither counted nor listed.
    cache.client.set(cache.redis_key((("short",), "x")).replace(b":x", b"?x"), b"foreign")
    stats = cache.stats()
    assert (stats.entries, stats.unnamed, stats.namespaces) == (2, 1, {("short",): 1})
    [info] = cache.iter_keys(("short",))
    assert info.expires_in is None
    assert info.key.startswith("#")  # stored hashed: listed by its digest
    assert list(cache.iter_keys(long_ns)) == [KeyInfo("k", None)]
    cache.client.delete(cache.redis_key((("short",), "x")).replace(b":x", b"?x"))


def test_redis_cluster_is_scanned_on_every_primary(
    redis_closer: list[RedisCache[Any]], redis_cluster_url: str
) -> None:
    cache = make_cache(redis_closer, redis_cluster_url, cluster=True)
    namespaces = {(f"ns{i}",): i + 1 for i in range(8)}  # eight slots, spread over the nodes
    for ns, count in namespaces.items():
        cache.set({(ns, f"k{j}"): (j, 60) for j in range(count)})
    assert cache.namespaces() == namespaces
    assert cache.stats().entries == sum(namespaces.values())
    assert sorted(info.key for info in cache.iter_keys(("ns7",))) == [f"k{j}" for j in range(8)]
