"""Pytest fixtures for real Redis: a session server, a session cluster, per-test caches.

Skips with the reason when no Redis can be found or started; ``TOOLKIT_REQUIRE_REDIS=1``
turns the skip into a failure (CI sets it).
"""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import AbstractContextManager
from typing import Any

import pytest

from tests.harness import Subject, flip_byte, real_sleep
from tests.redis_servers import RedisUnavailable, cluster_urls, find_or_start_redis, private_redis
from toolkit import FullKey
from toolkit.backends.redis import RedisCache, entry_bytes

__all__ = [
    "make_cache",
    "private_redis_url",
    "redis_closer",
    "redis_cluster_url",
    "redis_subject",
    "redis_url",
    "unique_prefix",
]

TEST_TIMEOUT = 2.0
"""Socket timeout of test caches: generous, since the test machine is shared and busy."""


def _unavailable(reason: str) -> None:
    if os.environ.get("TOOLKIT_REQUIRE_REDIS") == "1":
        pytest.fail(f"TOOLKIT_REQUIRE_REDIS=1 but {reason}")
    pytest.skip(reason)


def _serve(starter: AbstractContextManager[Any]) -> Iterator[Any]:
    try:
        value = starter.__enter__()
    except RedisUnavailable as exc:
        _unavailable(str(exc))
        return
    try:
        yield value
    finally:
        starter.__exit__(None, None, None)


@pytest.fixture(scope="session")
def redis_url() -> Iterator[str]:
    """URL of a standalone Redis: REDIS_URL, the local default, or a private server."""
    yield from _serve(find_or_start_redis())


@pytest.fixture(scope="session")
def redis_cluster_url() -> Iterator[str]:
    """URL of one node of a private three-primary Redis Cluster."""
    for urls in _serve(cluster_urls(3)):
        yield urls[0]


@pytest.fixture
def private_redis_url() -> Iterator[str]:
    """A private server for tests that change server settings (slowlog)."""
    yield from _serve(private_redis())


def unique_prefix() -> str:
    """A key prefix no other test (or test run) uses."""
    return f"toolkit:test:{uuid.uuid4().hex}:"


@pytest.fixture
async def redis_closer() -> AsyncIterator[list[RedisCache[Any]]]:
    """Caches registered here are cleared and closed in the test's own event loop."""
    caches: list[RedisCache[Any]] = []
    yield caches
    for cache in caches:
        try:
            cache.clear()
        finally:
            await cache.aclose()


def make_cache(
    closer: list[RedisCache[Any]], url: str, *, cluster: bool = False, **options: Any
) -> RedisCache[Any]:
    """A ``from_url`` cache with a unique prefix, cleared and closed by ``redis_closer``."""
    options.setdefault("socket_timeout", TEST_TIMEOUT)
    options.setdefault("socket_connect_timeout", TEST_TIMEOUT)
    options.setdefault("prefix", unique_prefix())
    cache: RedisCache[Any] = RedisCache.from_url(url, cluster=cluster, **options)
    closer.append(cache)
    return cache


def redis_subject(request: pytest.FixtureRequest, *, cluster: bool) -> Subject:
    """A conformance subject over a fresh-prefixed cache on the session server or cluster."""
    url = request.getfixturevalue("redis_cluster_url" if cluster else "redis_url")
    cache = make_cache(request.getfixturevalue("redis_closer"), url, cluster=cluster)

    def inject(full_key: FullKey, tag: str, payload: bytes) -> None:
        cache.client.set(cache.redis_key(full_key), entry_bytes(tag, payload))

    def corrupt(full_key: FullKey, where: str | int) -> None:
        rkey = cache.redis_key(full_key)
        blob = cache.client.get(rkey)
        assert blob is not None, "nothing stored to corrupt"
        cache.client.set(rkey, flip_byte(blob, where), keepttl=True)

    name = "redis-cluster" if cluster else "redis"
    return Subject(name, cache, real_sleep, inject=inject, corrupt=corrupt, raw=cache)
