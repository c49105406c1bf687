"""LangGraph-compatible caches you can see: backends, ``@cached``, metrics and traces."""

from toolkit._types import FullKey, Namespace, SerializerProtocol
from toolkit.backends.memory import InMemoryCache
from toolkit.backends.sqlite import SqliteCache
from toolkit.base import BaseCache
from toolkit.errors import (
    BackendError,
    CacheClosedError,
    CacheError,
    CacheTimeoutError,
    SerializationError,
)
from toolkit.exposition import start_metrics_server
from toolkit.middleware import (
    CacheMiddleware,
    CircuitOpenError,
    DeadlineExceededError,
    FailOpen,
    Metrics,
    Tracing,
    Validate,
    observe,
    wrap,
)
from toolkit.serde import PickleSerializer, SafeSerializer

__version__ = "0.1.0"

__all__ = [
    "BackendError",
    "BaseCache",
    "CacheClosedError",
    "CacheError",
    "CacheMiddleware",
    "CacheTimeoutError",
    "CircuitOpenError",
    "DeadlineExceededError",
    "FailOpen",
    "FullKey",
    "InMemoryCache",
    "Metrics",
    "Namespace",
    "PickleSerializer",
    "SafeSerializer",
    "SerializationError",
    "SerializerProtocol",
    "SqliteCache",
    "Tracing",
    "Validate",
    "__version__",
    "observe",
    "start_metrics_server",
    "wrap",
]
