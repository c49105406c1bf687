"""Middleware: caches that wrap any cache to add one job each (fail-open, metrics, traces).

A middleware instance is a spec of its options; ``wrap`` binds the specs to a cache, the
first one outermost (starlette's ``reversed()`` build)::

    from prometheus_client import CollectorRegistry
    from toolkit import FailOpen, InMemoryCache, Metrics, Tracing, observe, wrap

    registry = CollectorRegistry()
    cache = wrap(InMemoryCache(), FailOpen(deadline=0.5), Metrics(registry=registry), Tracing())
    cache = observe(InMemoryCache(), registry=registry)   # the same stack in one call
    graph = builder.compile(cache=cache)                  # a stack is a BaseCache

``observe`` builds FailOpen → Metrics → Tracing → cache, with ``Validate`` in front of a
cache that does not validate its own input (LangGraph's, a user's). Each layer contributes
``wrap_sync``/``wrap_async`` closures, composed once when bound, so a call through the
stack is one closure per layer and no second copy of any layer exists; metrics are
recorded lock-free (``toolkit.middleware.recorders``). Order matters:
``Metrics`` counts the errors that pass through it, so ``FailOpen`` belongs outside it;
``FailOpen`` reports what only it sees (deadlines, the open circuit) down the stack through
the ``record_*`` hooks, as ``@cached`` reports loads and coalesced waits.
"""

from toolkit.middleware.base import CacheMiddleware, backend_name, innermost
from toolkit.middleware.default_ttl import DefaultTtl
from toolkit.middleware.failopen import (
    CircuitBreaker,
    CircuitOpenError,
    DeadlineExceededError,
    FailOpen,
    failures_raise,
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
    "DefaultTtl",
    "FailOpen",
    "Metrics",
    "Tracing",
    "Validate",
    "backend_name",
    "default_cache_label",
    "failures_raise",
    "innermost",
    "observe",
    "wrap",
]
