"""Tag invalidation: ``@cached(tags=...)`` and ``invalidate_tags`` on every backend."""

from __future__ import annotations

import asyncio
import gc
import threading
import uuid
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import pytest
from langgraph.cache.memory import InMemoryCache as LangGraphMemory
from prometheus_client import CollectorRegistry

import toolkit
from tests.fleet_workers import wait_for
from toolkit import (
    BackendError,
    FullKey,
    InMemoryCache,
    Namespace,
    SqliteCache,
    ainvalidate_tags,
    cached,
    invalidate_tags,
    observe,
)
from toolkit.backends.redis import RedisCache
from toolkit.base import BaseCache
from toolkit.decorators.tags import TAG_NAMESPACE, tag_key

BACKENDS = ["memory", "sqlite", "redis", "langgraph-memory"]


@pytest.fixture(params=BACKENDS)
def cache(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Any]:
    """An observed cache of each kind (LangGraph's own has no delete and no leases)."""
    name = request.param
    if name == "memory":
        yield observe(InMemoryCache(), registry=CollectorRegistry())
    elif name == "sqlite":
        backend: Any = SqliteCache(path=str(tmp_path / "tags.db"))
        yield observe(backend, registry=CollectorRegistry())
        backend.close()
    elif name == "redis":
        url = request.getfixturevalue("redis_url")
        backend = RedisCache.from_url(url, prefix=f"toolkit:test:{uuid.uuid4().hex}:")
        yield observe(backend, registry=CollectorRegistry())
        backend.clear()
        backend.close()
    else:
        yield observe(LangGraphMemory(), registry=CollectorRegistry())


def test_invalidating_a_tag_forgets_its_entries_only(cache: Any) -> None:
    calls: list[int] = []

    @cached("tags.basic", cache=cache, tags=lambda uid, page: f"user:{uid}")
    def page(uid: int, page: int) -> str:
        calls.append(uid)
        return f"{uid}/{page}/{len(calls)}"

    first = [page(1, 1), page(1, 2), page(2, 1)]
    assert [page(1, 1), page(1, 2), page(2, 1)] == first
    assert len(calls) == 3
    invalidate_tags("user:1", cache=cache)
    again = [page(1, 1), page(1, 2), page(2, 1)]
    assert again[2] == first[2]  # user 2 untouched
    assert again[0] != first[0] and again[1] != first[1]
    assert len(calls) == 5
    assert [page(1, 1), page(1, 2)] == again[:2]  # stored again, served again


def test_static_tags_span_functions(cache: Any) -> None:
    counts = {"a": 0, "b": 0}

    @cached("tags.a", cache=cache, tags="catalog")
    def a() -> int:
        counts["a"] += 1
        return counts["a"]

    @cached("tags.b", cache=cache, tags=("catalog", "other"))
    def b() -> int:
        counts["b"] += 1
        return counts["b"]

    assert (a(), b(), a(), b()) == (1, 1, 1, 1)
    invalidate_tags("catalog", cache=cache)
    assert (a(), b()) == (2, 2)
    invalidate_tags("unrelated", cache=cache)
    assert (a(), b()) == (2, 2)


def test_method_tags_receive_self_first(cache: Any) -> None:
    class Profiles:
        def __init__(self) -> None:
            self.calls = 0
            self.tenant = "acme"

        def __cache_key__(self) -> str:
            return self.tenant

        @cached(
            "profiles", cache=cache, tags=lambda me, uid: [f"user:{uid}", f"tenant:{me.tenant}"]
        )
        def load(self, uid: int) -> str:
            self.calls += 1
            return f"profile {uid} #{self.calls}"

    profiles = Profiles()
    one = profiles.load(7)
    assert profiles.load(7) == one
    invalidate_tags("tenant:acme", cache=cache)
    assert profiles.load(7) != one


def test_a_bound_methods_tags_receive_its_instance_in_refresh_too(cache: Any) -> None:
    """``cached(obj.method, tags=...)``: ``refresh`` gives the tags function the instance
    first, as calls do, so the refreshed entry is the one calls read, under their tags."""

    class Profiles:
        def __init__(self) -> None:
            self.calls = 0

        def __cache_key__(self) -> str:
            return "acme"

        def load(self, uid: int) -> str:
            self.calls += 1
            return f"profile {uid} #{self.calls}"

    profiles = Profiles()
    load = cached("profiles.bound", cache=cache, tags=lambda me, uid: f"user:{uid}")(profiles.load)
    assert load(7) == load(7) == "profile 7 #1"
    assert load.refresh(7) == "profile 7 #2"
    assert load(7) == "profile 7 #2"
    invalidate_tags("user:7", cache=cache)
    assert load(7) == "profile 7 #3"


async def test_async_functions_and_async_invalidation(cache: Any) -> None:
    calls = 0

    @cached("tags.async", cache=cache, tags=lambda key: [f"doc:{key}"], ttl=60)
    async def fetch(key: str) -> str:
        nonlocal calls
        calls += 1
        await asyncio.sleep(0)
        return f"{key}#{calls}"

    first = await fetch("x")
    assert await fetch("x") == first
    await ainvalidate_tags("doc:x", cache=cache)
    assert await fetch("x") != first
    assert calls == 2


def test_an_invalidation_during_a_computation_is_not_lost(cache: Any) -> None:
    """The entry stored by a computation that overlapped an invalidation is not served."""
    started, release = threading.Event(), threading.Event()
    calls = 0

    @cached("tags.race", cache=cache, tags="inventory", key_id="tags.race")
    def stock() -> int:
        nonlocal calls
        calls += 1
        if calls == 1:
            started.set()
            assert release.wait(10)
        return calls

    result: list[int] = []
    worker = threading.Thread(target=lambda: result.append(stock()))
    worker.start()
    assert started.wait(10)
    invalidate_tags("inventory", cache=cache)  # while the first computation runs
    release.set()
    worker.join(10)
    assert result == [1]
    assert stock() == 2  # the overlapping result was stored under the old version
    assert stock() == 2


class HeldStock:
    """A function tagged "inventory" whose computation of stock 1 waits for ``release``, and
    a leader and a follower thread that call it (noting what they got)."""

    def __init__(self, cache: Any, name: str) -> None:
        self.started, self.release = threading.Event(), threading.Event()
        self.source = {"stock": 1}
        self.before: list[int] = []
        self.after: list[int] = []

        @cached(name, cache=cache, tags="inventory", key_id=name)
        def stock() -> int:
            value = self.source["stock"]
            if value == 1:
                self.started.set()
                assert self.release.wait(10)
            return value

        self.stock = stock
        self.leader = threading.Thread(target=lambda: self.before.append(stock()))
        self.follower = threading.Thread(target=lambda: self.after.append(stock()))

    def joined_or_done(self) -> bool:
        """Whether the follower returned, or waits for the leader's computation."""
        return bool(self.after) or self.stock.cache_info().coalesced > 0


def test_a_caller_after_an_invalidation_never_joins_a_computation_from_before(
    cache: Any,
) -> None:
    """A computation began before ``invalidate_tags``; a caller that arrives after it does
    not wait for that computation's (invalidated) result: it computes afresh."""
    held = HeldStock(cache, "tags.flight")
    held.leader.start()
    try:
        assert held.started.wait(10)
        held.source["stock"] = 2
        invalidate_tags("inventory", cache=cache)  # while the first computation runs
        held.follower.start()
        # It either returns or waits for the old computation (bounded only against a hang).
        assert wait_for(held.joined_or_done)
        assert held.stock.cache_info().coalesced == 0
    finally:
        held.release.set()
        held.leader.join(10)
        if held.follower.is_alive():
            held.follower.join(10)
    assert held.after == [2]
    assert held.before == [1]
    assert held.stock() == 2


def test_a_waiter_is_not_handed_a_result_from_before_another_process_invalidated(
    cache: Any,
) -> None:
    """Another process's ``invalidate_tags`` cannot detach this process's flights: a caller
    that joined a computation from before it (it arrived after that invalidation) must not
    be handed its result, as the entry it stored is not served either: it computes afresh."""
    held = HeldStock(cache, "tags.remote")
    held.leader.start()
    try:
        assert held.started.wait(10)
        held.source["stock"] = 2
        # What invalidate_tags("inventory") in another process does to the shared cache.
        cache.set({tag_key("inventory"): (uuid.uuid4().hex, None)})
        held.follower.start()
        assert wait_for(held.joined_or_done)
    finally:
        held.release.set()
        held.leader.join(10)
        held.follower.join(10)
    assert held.before == [1]
    assert held.after == [2]
    assert held.stock() == 2


def test_a_lost_tag_version_is_a_miss_never_a_stale_hit(tmp_path: Path) -> None:
    backend: InMemoryCache[Any] = InMemoryCache()
    calls = 0

    @cached("tags.lost", cache=backend, tags="t")
    def f() -> int:
        nonlocal calls
        calls += 1
        return calls

    assert f() == 1 and f() == 1
    backend.delete([tag_key("t")])  # evicted, expired or cleared: the version is gone
    assert f() == 2


@pytest.mark.parametrize("stale_ttl", [None, 60])
def test_dropping_tags_never_serves_a_tagged_entry(tmp_path: Path, stale_ttl: int | None) -> None:
    """A function redeployed without ``tags=`` (same namespace and arguments) never takes
    a tagged entry for its result, nor fails on one: the two stored forms have keys of
    their own, as freshness envelopes do. And back: tags added again recompute."""
    store: SqliteCache[Any] = SqliteCache(path=str(tmp_path / "forms.db"))
    calls: list[bool] = []

    def deploy(tagged: bool) -> Any:
        @cached(
            "tags.forms",
            cache=store,
            key_id="tags.forms",
            tags="user:1" if tagged else None,
            ttl=60,
            stale_ttl=stale_ttl,
        )
        def profile(user: int) -> dict[str, str]:
            calls.append(tagged)
            return {"name": "ada"}

        return profile

    try:
        assert deploy(True)(1) == {"name": "ada"}
        assert deploy(False)(1) == {"name": "ada"}
        assert deploy(True)(1) == {"name": "ada"}
        assert deploy(False)(1) == {"name": "ada"}
        assert calls == [True, False]
    finally:
        store.close()


def test_tags_and_freshness_and_lock_compose(cache: Any) -> None:
    calls = 0

    @cached("tags.fresh", cache=cache, tags="t", ttl=60, stale_ttl=60, lock=True)
    def f() -> int:
        nonlocal calls
        calls += 1
        return calls

    assert f() == 1 and f() == 1
    invalidate_tags("t", cache=cache)
    assert f() == 2 and f() == 2


class CountingCache(BaseCache[Any]):
    """Counts the keys each call touches on an in-memory cache (to show O(1) invalidation)."""

    def __init__(self) -> None:
        super().__init__()
        self.inner: InMemoryCache[Any] = InMemoryCache()
        self.touched: list[tuple[str, int]] = []

    def get(self, keys: Sequence[FullKey]) -> dict[FullKey, Any]:
        self.touched.append(("get", len(keys)))
        return self.inner.get(keys)

    async def aget(self, keys: Sequence[FullKey]) -> dict[FullKey, Any]:
        return self.get(keys)

    def set(self, pairs: Mapping[FullKey, tuple[Any, int | None]]) -> None:
        self.touched.append(("set", len(pairs)))
        self.inner.set(pairs)

    async def aset(self, pairs: Mapping[FullKey, tuple[Any, int | None]]) -> None:
        self.set(pairs)

    def clear(self, namespaces: Sequence[Namespace] | None = None) -> None:
        self.touched.append(("clear", 0))
        self.inner.clear(namespaces)

    async def aclear(self, namespaces: Sequence[Namespace] | None = None) -> None:
        self.clear(namespaces)


def test_invalidation_is_one_write_and_a_hit_one_read_whatever_the_entries() -> None:
    counting = CountingCache()

    @cached("tags.cost", cache=counting, tags=lambda i: ["shared", f"item:{i}"])
    def item(i: int) -> int:
        return i

    for i in range(200):
        item(i)
    counting.touched.clear()
    item(5)
    assert counting.touched == [("get", 3)]  # the entry and its two tags' versions, one batch
    counting.touched.clear()
    invalidate_tags("shared", cache=counting)
    assert counting.touched == [("set", 1), ("get", 1)]  # the new version, then its read-back


class DroppingCache(CountingCache):
    """A cache that loses writes silently, as a fail-open stack does when its backend fails."""

    def set(self, pairs: Mapping[FullKey, tuple[Any, int | None]]) -> None:
        return None


def test_an_invalidation_the_cache_did_not_take_raises() -> None:
    with pytest.raises(BackendError, match="not confirmed"):
        invalidate_tags("user:1", cache=DroppingCache())

    async def in_a_loop() -> None:
        await ainvalidate_tags("user:1", cache=DroppingCache())

    with pytest.raises(BackendError, match="not confirmed"):
        asyncio.run(in_a_loop())


class OvertakenCache(CountingCache):
    """A cache where another process's invalidation of the same tags lands right after each
    write of this one, before its read-back."""

    def set(self, pairs: Mapping[FullKey, tuple[Any, int | None]]) -> None:
        super().set(pairs)
        self.inner.set({key: (uuid.uuid4().hex, None) for key in pairs})


def test_an_invalidation_overtaken_by_another_of_the_same_tag_is_confirmed() -> None:
    """Two workers invalidating one tag at once: the version read back is the other's, not
    this one's; the tag was invalidated all the same, so neither raises."""
    invalidate_tags("feeds", cache=OvertakenCache())

    async def in_a_loop() -> None:
        await ainvalidate_tags("feeds", cache=OvertakenCache())

    asyncio.run(in_a_loop())


def test_invalidations_are_counted() -> None:
    registry = CollectorRegistry()
    cache = observe(InMemoryCache(), registry=registry)
    invalidate_tags("a", "b", "a", cache=cache)
    value = registry.get_sample_value("cache_tag_invalidations_total", {"backend": "memory"})
    assert value == 2


def test_the_default_cache_is_used_without_cache() -> None:
    backend: InMemoryCache[Any] = InMemoryCache()
    toolkit.configure(cache=backend)
    try:
        calls = 0

        @cached("tags.default", tags="d")
        def f() -> int:
            nonlocal calls
            calls += 1
            return calls

        assert f() == 1 and f() == 1
        invalidate_tags("d")
        assert f() == 2
        assert backend.get([tag_key("d")])  # the version lives beside the entries
        assert tag_key("d")[0] == TAG_NAMESPACE
    finally:
        toolkit.configure(cache=None)


def test_without_cache_every_tagged_functions_own_cache_is_reached(tmp_path: Path) -> None:
    """A function with a cache of its own keeps its entries there: ``invalidate_tags`` with
    no ``cache=`` must forget them too, not only the configured cache's."""
    own = observe(SqliteCache(path=str(tmp_path / "own.db")), registry=CollectorRegistry())
    toolkit.configure(cache=InMemoryCache())
    try:
        calls = {"own": 0, "default": 0}

        @cached("tags.own", cache=own, tags="reach")
        def in_own() -> int:
            calls["own"] += 1
            return calls["own"]

        @cached("tags.default2", tags="reach")
        def in_default() -> int:
            calls["default"] += 1
            return calls["default"]

        assert (in_own(), in_own(), in_default(), in_default()) == (1, 1, 1, 1)
        invalidate_tags("reach")
        assert (in_own(), in_default()) == (2, 2)

        async def in_a_loop() -> None:
            await ainvalidate_tags("reach")

        asyncio.run(in_a_loop())
        assert (in_own(), in_default()) == (3, 3)
    finally:
        toolkit.configure(cache=None)


def test_a_cache_that_loses_the_invalidation_raises_after_the_others_took_it() -> None:
    toolkit.configure(cache=InMemoryCache())
    try:
        calls = 0

        @cached("tags.lossy", cache=DroppingCache(), tags="lossy")
        def in_lossy() -> int:
            return 0

        @cached("tags.kept", tags="lossy")
        def in_default() -> int:
            nonlocal calls
            calls += 1
            return calls

        assert in_default() == 1 and in_lossy() == 0
        with pytest.raises(BackendError, match=r"failed in 1 of [0-9]+ caches"):
            invalidate_tags("lossy")
        assert in_default() == 2  # the configured cache forgot its entry all the same
        del in_lossy  # its cache must not fail the invalidations of later tests
        gc.collect()
    finally:
        toolkit.configure(cache=None)


def test_a_url_is_refused_as_the_cache_to_invalidate_in() -> None:
    with pytest.raises(TypeError, match="a URL would open another one"):
        invalidate_tags("t", cache="sqlite:///tags.db")  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("tags", "error"),
    [
        (42, TypeError),
        ([1], TypeError),
        ("", ValueError),
        ("x" * 300, ValueError),
        (b"t", TypeError),
    ],
)
def test_bad_static_tags_are_refused_at_decoration(tags: Any, error: type[Exception]) -> None:
    with pytest.raises(error, match="tag"):
        cached("tags.bad", cache=InMemoryCache(), tags=tags)


def test_a_tags_function_returning_bad_tags_raises_with_context() -> None:
    @cached("tags.badfn", cache=InMemoryCache(), tags=lambda x: x)
    def f(x: Any) -> int:
        return 1

    with pytest.raises(TypeError, match="tags= function of"):
        f(3)
    with pytest.raises(TypeError, match="a tag must be a str"):
        invalidate_tags(3, cache=InMemoryCache())  # type: ignore[arg-type]
