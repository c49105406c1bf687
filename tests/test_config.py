"""The default cache of ``@cached``: ``configure``, cache URLs and ``TOOLKIT_CACHE_URL``."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from toolkit import InMemoryCache, cache_from_url, cached, configure
from toolkit.config import ENV_VAR, default_cache

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True)
def fresh_default() -> Iterator[None]:
    configure(cache=None)
    yield
    configure(cache=None)


def test_memory_urls() -> None:
    assert isinstance(cache_from_url("memory://"), InMemoryCache)
    bounded = cache_from_url("memory://?max_entries=5")
    assert isinstance(bounded, InMemoryCache) and bounded.max_entries == 5


@pytest.mark.parametrize(
    "url",
    [
        "memcached://localhost",
        "memory://host",
        "memory://?max_entries=0",
        "memory://?max_entries=ten",
        "memory://?size=1",
        "memory://?max_entries=",  # an unset shell variable: was the default bound
        "memory://?size",
        "memory://?max_entries=5#x",
        "sqlite://host/file.db",
        "sqlite://",
        "",
    ],
)
def test_bad_urls_are_rejected(url: str) -> None:
    with pytest.raises(ValueError):
        cache_from_url(url)


@pytest.mark.parametrize("name", ["run#3.db", "what?.db", "cache.db?table=other", "cache.db?"])
def test_sqlite_urls_with_a_query_or_fragment_are_refused(name: str, tmp_path: Path) -> None:
    # urlsplit would end the path at ? or #: another file, or the default table, silently.
    pytest.importorskip("toolkit.backends.sqlite")
    with pytest.raises(ValueError, match="%23"):
        _close(cache_from_url(f"sqlite:///{tmp_path}/{name}"))
    assert list(tmp_path.iterdir()) == []  # no file was made under the cut-short name
    with pytest.raises(ValueError, match="%23"):
        _close(cache_from_url("sqlite://:memory:?mode=ro"))


def test_a_sqlite_file_name_with_escaped_question_mark_and_hash(tmp_path: Path) -> None:
    pytest.importorskip("toolkit.backends.sqlite")
    cache = cache_from_url(f"sqlite:///{tmp_path}/run%233%3F.db")
    cache.set({(("n",), "k"): (1, None)})
    _close(cache)
    assert [p.name for p in tmp_path.iterdir() if p.suffix == ".db"] == ["run#3?.db"]


def test_url_must_be_text() -> None:
    with pytest.raises(TypeError):
        cache_from_url(b"memory://")  # type: ignore[arg-type]


def test_sqlite_urls(tmp_path: Path) -> None:
    sqlite = pytest.importorskip("toolkit.backends.sqlite")
    absolute = tmp_path / "abs.db"
    cache = cache_from_url(f"sqlite:///{absolute}")  # four slashes: an absolute path
    assert isinstance(cache, sqlite.SqliteCache)
    cache.set({(("n",), "k"): (1, None)})
    assert cache.get([(("n",), "k")]) == {(("n",), "k"): 1}
    assert absolute.exists()
    _close(cache)
    memory = cache_from_url("sqlite://:memory:")
    assert isinstance(memory, sqlite.SqliteCache)
    _close(memory)


@pytest.mark.redis
async def test_redis_url_builds_a_working_redis_cache(redis_url: str) -> None:
    redis_backend = pytest.importorskip("toolkit.backends.redis")
    cache = cache_from_url(redis_url)
    assert isinstance(cache, redis_backend.RedisCache)
    full_key = (("toolkit-config-test", uuid.uuid4().hex), "k")
    try:
        cache.set({full_key: ("v", 60)})
        assert await cache.aget([full_key]) == {full_key: "v"}
        cache.clear([full_key[0]])
    finally:
        await cache.aclose()


@pytest.mark.parametrize(
    "url", ["redis://127.0.0.1:6379/0?prefix=other:", "unix:///tmp/redis.sock?db=1&table=x"]
)
def test_a_redis_url_option_redis_py_does_not_take_is_refused(url: str) -> None:
    """Accepted, it made every call (and every @cached call behind observe) raise a
    TypeError from inside redis-py: the option is refused where the cache is built."""
    pytest.importorskip("toolkit.backends.redis")
    with pytest.raises(ValueError, match="not an option of a Redis URL"):
        cache_from_url(url)


def _close(cache: Any) -> None:
    close = getattr(cache, "close", None)
    if close is not None:
        close()


def test_configure_sets_the_default_for_existing_functions() -> None:
    calls: list[int] = []

    @cached("configured")
    def f(x: int) -> int:
        calls.append(x)
        return x

    first: InMemoryCache[Any] = InMemoryCache()
    configure(cache=first)
    assert default_cache() is first
    f(1), f(1)
    assert calls == [1]
    assert first.get([f.cache_key(1)]) == {f.cache_key(1): 1}

    configure(cache=InMemoryCache())  # decorated functions follow the new default
    f(1)
    assert calls == [1, 1]


def test_configure_rejects_non_caches() -> None:
    with pytest.raises(TypeError, match="cache"):
        configure(cache=42)  # type: ignore[arg-type]


def test_a_cache_class_is_refused_where_it_is_given() -> None:
    """A class has the six methods too (unbound): configure(cache=InMemoryCache) and
    @cached(cache=InMemoryCache) were accepted, then every call raised "get() missing 1
    required positional argument"."""
    with pytest.raises(
        TypeError, match=r"InMemoryCache is a class, not a cache.*InMemoryCache\(\.\.\.\)"
    ):
        configure(cache=InMemoryCache)  # type: ignore[arg-type]
    slip: Any = InMemoryCache
    with pytest.raises(TypeError, match="InMemoryCache is a class, not a cache"):
        cached("class-slip", cache=slip)


def test_default_is_observed_memory() -> None:
    middleware = pytest.importorskip("toolkit.middleware")
    assert hasattr(middleware, "observe")
    cache = default_cache()
    assert cache is default_cache()
    assert not isinstance(cache, InMemoryCache)  # wrapped in the default stack
    full_key = (("default",), "k")
    cache.set({full_key: ("v", None)})
    assert cache.get([full_key]) == {full_key: "v"}


PROBE = """
from toolkit.config import default_cache
cache = default_cache()
inner = cache
while hasattr(inner, "inner"):
    inner = inner.inner
print(type(inner).__name__, getattr(inner, "max_entries", None))
"""


def test_environment_variable_chooses_the_default() -> None:
    pytest.importorskip("toolkit.middleware")
    env = {**os.environ, ENV_VAR: "memory://?max_entries=7", "PYTHONPATH": str(ROOT)}
    done = subprocess.run(
        [sys.executable, "-c", PROBE], env=env, capture_output=True, text=True, check=True
    )
    assert done.stdout.split() == ["InMemoryCache", "7"]


def test_configure_with_a_url_wraps_the_backend_in_observe(tmp_path: Path) -> None:
    from toolkit.backends.sqlite import SqliteCache

    cache = configure(cache=f"sqlite:///{tmp_path / 'configured.db'}")
    assert cache is default_cache()
    assert not isinstance(cache, SqliteCache)
    inner = cache
    while hasattr(inner, "inner"):
        inner = inner.inner
    assert isinstance(inner, SqliteCache)

    @cached("via-url")
    def f(x: int) -> int:
        return x * 3

    assert f(2) == f(2) == 6
    assert inner.get([f.cache_key(2)]) == {f.cache_key(2): 6}
    inner.close()
