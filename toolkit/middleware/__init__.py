"""Middleware: caches that wrap any cache to add one job each (fail-open, metrics, traces)."""

from toolkit.middleware.base import CacheMiddleware, backend_name, innermost
from toolkit.middleware.failopen import (
    CircuitBreaker,
    CircuitOpenError,
    DeadlineExceededError,
    FailOpen,
)
from toolkit.middleware.labels import default_cache_label
from toolkit.middleware.metrics import Metrics
from toolkit.middleware.stack import observe, wrap
from toolkit.middleware.tracing import Tracing
from toolkit.middleware.validate import Validate

__all__ = [
    "CacheMiddleware",
    "CircuitBreaker",
    "CircuitOpenError",
    "DeadlineExceededError",
    "FailOpen",
    "Metrics",
    "Tracing",
    "Validate",
    "backend_name",
    "default_cache_label",
    "innermost",
    "observe",
    "wrap",
]
