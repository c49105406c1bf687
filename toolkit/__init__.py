"""LangGraph-compatible caches you can see: backends, ``@cached``, metrics and traces."""

import typing

from toolkit._types import FullKey, Namespace, SerializerProtocol
from toolkit.backends.memory import InMemoryCache
from toolkit.backends.sqlite import SqliteCache
from toolkit.base import BaseCache
from toolkit.config import cache_from_url, configure
from toolkit.decorators import AsyncCachedFunction, CachedFunction, cached
from toolkit.decorators.tags import ainvalidate_tags, invalidate_tags
from toolkit.errors import (
    BackendError,
    CacheClosedError,
    CacheError,
    CacheTimeoutError,
    EventLoopMismatchError,
    NotCacheableError,
    SerializationError,
)
from toolkit.exposition import start_metrics_server
from toolkit.keys import derive_key
from toolkit.middleware import (
    CacheMiddleware,
    CircuitOpenError,
    DeadlineExceededError,
    DefaultTtl,
    FailOpen,
    Metrics,
    Tracing,
    Validate,
    observe,
    wrap,
)
from toolkit.serde import PickleSerializer, SafeSerializer
from toolkit.switches import disabled, refreshing
from toolkit.ttl import parse_ttl

if typing.TYPE_CHECKING:
    from toolkit.backends.redis import RedisCache as RedisCache

__version__ = "0.1.0"


# Public names that need an optional extra; kept out of ``__all__`` so ``import *`` never fails.
OPTIONAL_EXPORTS = ("RedisCache",)


def __getattr__(name: str) -> object:
    # RedisCache lives in the optional ``redis`` extra: import it only when asked for.
    if name == "RedisCache":
        from toolkit.backends.redis import RedisCache

        return RedisCache
    raise AttributeError(f"module 'toolkit' has no attribute {name!r}")


__all__ = [
    "OPTIONAL_EXPORTS",
    "AsyncCachedFunction",
    "BackendError",
    "BaseCache",
    "CacheClosedError",
    "CacheError",
    "CacheMiddleware",
    "CacheTimeoutError",
    "CachedFunction",
    "CircuitOpenError",
    "DeadlineExceededError",
    "DefaultTtl",
    "EventLoopMismatchError",
    "FailOpen",
    "FullKey",
    "InMemoryCache",
    "Metrics",
    "Namespace",
    "NotCacheableError",
    "PickleSerializer",
    "SafeSerializer",
    "SerializationError",
    "SerializerProtocol",
    "SqliteCache",
    "Tracing",
    "Validate",
    "__version__",
    "ainvalidate_tags",
    "cache_from_url",
    "cached",
    "configure",
    "derive_key",
    "disabled",
    "invalidate_tags",
    "observe",
    "parse_ttl",
    "refreshing",
    "start_metrics_server",
    "wrap",
]
