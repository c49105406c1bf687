"""LangGraph-compatible caches you can see: backends, ``@cached``, metrics and traces."""

from toolkit._types import FullKey, Namespace, SerializerProtocol
from toolkit.backends.memory import InMemoryCache
from toolkit.base import BaseCache
from toolkit.errors import (
    BackendError,
    CacheClosedError,
    CacheError,
    CacheTimeoutError,
    SerializationError,
)
from toolkit.serde import PickleSerializer, SafeSerializer

__version__ = "0.1.0"

__all__ = [
    "BackendError",
    "BaseCache",
    "CacheClosedError",
    "CacheError",
    "CacheTimeoutError",
    "FullKey",
    "InMemoryCache",
    "Namespace",
    "PickleSerializer",
    "SafeSerializer",
    "SerializationError",
    "SerializerProtocol",
    "__version__",
]
