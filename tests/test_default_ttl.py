"""``observe(cache, default_ttl=...)``: writes without a ttl get the default, explicit ones stay."""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from toolkit import DefaultTtl, InMemoryCache, SqliteCache, cached, observe, wrap
from toolkit._types import FullKey, Namespace
from toolkit.middleware.base import CacheMiddleware

NS: Namespace = ("ttl",)


class Clock:
    """A wall clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture(params=["memory", "sqlite"])
def backend(request: pytest.FixtureRequest, clock: Clock, tmp_path: Path) -> Iterator[Any]:
    if request.param == "memory":
        yield InMemoryCache(timer=clock)
        return
    cache: SqliteCache[Any] = SqliteCache(path=str(tmp_path / "ttl.db"), timer=clock)
    try:
        yield cache
    finally:
        cache.close()


def observed(backend: Any, default_ttl: Any) -> CacheMiddleware[Any]:
    return observe(backend, registry=CollectorRegistry(), default_ttl=default_ttl)


def time_left(cache: Any) -> dict[str, float | None]:
    return {info.key: info.expires_in for info in cache.iter_keys(NS)}


@pytest.mark.parametrize("default", [900, 900.0, timedelta(minutes=15), "15m", "900s", "0.25h"])
def test_a_write_without_ttl_gets_the_default(backend: Any, clock: Clock, default: Any) -> None:
    cache = observed(backend, default)
    cache.set({(NS, "none"): ("a", None), (NS, "explicit"): ("b", 60)})
    left = time_left(cache)
    assert left["none"] == pytest.approx(900, abs=1)
    assert left["explicit"] == pytest.approx(60, abs=1)  # an explicit ttl is kept
    clock.now += 61
    assert cache.get([(NS, "none"), (NS, "explicit")]) == {(NS, "none"): "a"}
    clock.now += 900
    assert cache.get([(NS, "none")]) == {}


async def test_async_writes_get_the_default_too(backend: Any, clock: Clock) -> None:
    cache = observed(backend, "1h")
    await cache.aset({(NS, "none"): ("a", None), (NS, "zero"): ("z", 0)})
    assert time_left(cache) == {"none": pytest.approx(3600, abs=1)}  # ttl 0 kept: gone at once
    clock.now += 3601
    assert await cache.aget([(NS, "none")]) == {}


def test_without_a_default_none_still_never_expires(backend: Any, clock: Clock) -> None:
    cache = observe(backend, registry=CollectorRegistry())
    cache.set({(NS, "none"): ("a", None)})
    clock.now += 10 * 365 * 86_400
    assert cache.get([(NS, "none")]) == {(NS, "none"): "a"}
    assert time_left(cache) == {"none": None}


def test_cached_functions_without_ttl_get_the_stacks_default(backend: Any, clock: Clock) -> None:
    cache = observed(backend, "1d")
    calls: list[int] = []

    @cached("ttl.f", cache=cache)
    def f(x: int) -> int:
        calls.append(x)
        return x

    assert f(1) == f(1) == 1
    clock.now += 86_401
    assert f(1) == 1
    assert calls == [1, 1]


class Recording:
    """A foreign cache (no validation of its own) that records the pairs it is given."""

    def __init__(self) -> None:
        self.written: list[dict[FullKey, tuple[Any, int | None]]] = []

    def get(self, keys: Sequence[FullKey]) -> dict[FullKey, Any]:
        return {}

    async def aget(self, keys: Sequence[FullKey]) -> dict[FullKey, Any]:
        return {}

    def set(self, pairs: Mapping[FullKey, tuple[Any, int | None]]) -> None:
        self.written.append(dict(pairs))

    async def aset(self, pairs: Mapping[FullKey, tuple[Any, int | None]]) -> None:
        self.written.append(dict(pairs))

    def clear(self, namespaces: Sequence[Namespace] | None = None) -> None: ...

    async def aclear(self, namespaces: Sequence[Namespace] | None = None) -> None: ...


def test_a_foreign_cache_gets_whole_seconds_as_an_int() -> None:
    foreign = Recording()
    observed(foreign, timedelta(minutes=2)).set({(NS, "k"): (1, None)})
    (pairs,) = foreign.written
    ttl = pairs[(NS, "k")][1]
    assert ttl == 120 and type(ttl) is int  # the seed API types ttls as int seconds


def test_pairs_with_ttls_pass_through_untouched() -> None:
    foreign = Recording()
    cache = wrap(foreign, DefaultTtl(30))
    pairs = {(NS, "k"): (1, 5)}
    cache.set(pairs)
    assert foreign.written == [pairs]


def test_malformed_input_is_still_refused_by_validation() -> None:
    cache = observe(Recording(), registry=CollectorRegistry(), strict=True, default_ttl=30)
    with pytest.raises(TypeError):
        cache.set({(NS, "k"): "not a pair"})  # type: ignore[dict-item]


@pytest.mark.parametrize("bad", ["15 minutes", "1w", "", "m15"])
def test_unreadable_strings_say_what_is_accepted(bad: str) -> None:
    with pytest.raises(ValueError, match=r"unreadable ttl .*90s"):
        observe(InMemoryCache(), registry=CollectorRegistry(), default_ttl=bad)


@pytest.mark.parametrize("bad", [0, -5, "0s", timedelta(0), float("nan"), 10**12])
def test_a_default_must_be_a_positive_duration(bad: Any) -> None:
    with pytest.raises(ValueError, match="ttl"):
        observe(InMemoryCache(), registry=CollectorRegistry(), default_ttl=bad)


@pytest.mark.parametrize("bad", [True, [60], b"60s"])
def test_a_default_of_another_type_is_a_type_error(bad: Any) -> None:
    with pytest.raises(TypeError, match="ttl must be"):
        observe(InMemoryCache(), registry=CollectorRegistry(), default_ttl=bad)
