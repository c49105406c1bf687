"""The cost of observability: ``observe(...)`` against the bare caches it wraps (issue 4)."""

from __future__ import annotations

import os
import socket
import sys
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlparse

from langgraph.cache.memory import InMemoryCache as LangGraphInMemoryCache
from prometheus_client import CollectorRegistry

import toolkit
from benchmarks._harness import Comparison
from benchmarks.workload import PRELOAD, keys, pairs
from toolkit import InMemoryCache, Tracing, observe, wrap

REDIS_URL = os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0")


def suite() -> Iterator[Comparison]:
    """``observe`` over memory (and over Redis when it is available) on 10k preloaded keys."""
    bare: InMemoryCache[Any] = InMemoryCache(max_entries=PRELOAD * 4)
    langgraph: LangGraphInMemoryCache[Any] = LangGraphInMemoryCache()
    for cache in (bare, langgraph):
        cache.set(pairs(PRELOAD))
    # No SDK configured: the global tracer provider is the API's no-op proxy.
    observed = observe(bare, registry=CollectorRegistry())
    one = keys(1, 5_000)

    yield Comparison(
        "observe(memory) get 1 hit vs bare memory",
        lambda: observed.get(one),
        lambda: bare.get(one),
        "toolkit InMemoryCache (bare)",
        target=1.5,
        inner_loops=2_000,
    )
    yield Comparison(
        "observe(memory) get 1 hit vs langgraph memory",
        lambda: observed.get(one),
        lambda: langgraph.get(one),
        "langgraph InMemoryCache (unobserved)",
        target=1.0,
        inner_loops=2_000,
    )
    traced_only = wrap(InMemoryCache(max_entries=PRELOAD * 4), Tracing())
    traced_only.set(pairs(1, 5_000))
    yield Comparison(
        "Tracing(no SDK) memory get 1 hit vs bare memory",
        lambda: traced_only.get(one),
        lambda: bare.get(one),
        "toolkit InMemoryCache (bare)",
        inner_loops=2_000,
    )
    yield from _redis()


def _redis_answers(url: str) -> bool:
    parsed = urlparse(url)
    try:
        with socket.create_connection(
            (parsed.hostname or "127.0.0.1", parsed.port or 6379), timeout=0.5
        ):
            return True
    except OSError:
        return False


def _redis() -> Iterator[Comparison]:
    redis_cache = getattr(toolkit, "RedisCache", None)
    if redis_cache is None:
        print("  skip redis: toolkit.RedisCache is not available yet", file=sys.stderr)
        return
    if not _redis_answers(REDIS_URL):
        print(f"  skip redis: no server answers at {REDIS_URL}", file=sys.stderr)
        return
    bare = (
        redis_cache.from_url(REDIS_URL)
        if hasattr(redis_cache, "from_url")
        else redis_cache(url=REDIS_URL)
    )
    try:
        bare.set(pairs(1, 5_000))
        observed = observe(bare, registry=CollectorRegistry())
        one = keys(1, 5_000)
        yield Comparison(
            "observe(redis) get 1 hit vs bare redis",
            lambda: observed.get(one),
            lambda: bare.get(one),
            "toolkit RedisCache (bare)",
            target=1.1,
            inner_loops=200,
        )
    finally:
        bare.clear()
        close = getattr(bare, "close", None)
        if close is not None:
            close()
