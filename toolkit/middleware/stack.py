"""Building middleware stacks: ``wrap`` for any order, ``observe`` for the production default."""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import timedelta
from typing import Any, TypeVar, overload

from opentelemetry.trace import TracerProvider
from prometheus_client import REGISTRY, CollectorRegistry

from toolkit._types import Namespace
from toolkit.base import BaseCache
from toolkit.middleware.base import CacheMiddleware
from toolkit.middleware.default_ttl import DefaultTtl
from toolkit.middleware.failopen import FailOpen
from toolkit.middleware.labels import default_cache_label
from toolkit.middleware.metrics import Metrics
from toolkit.middleware.tracing import RequestHook, ResponseHook, Tracing
from toolkit.middleware.validate import Validate, needs_validation

__all__ = ["observe", "wrap"]


V = TypeVar("V")


@overload
def wrap(cache: BaseCache[V], *middlewares: CacheMiddleware[Any]) -> CacheMiddleware[V]: ...
@overload
def wrap(cache: Any, *middlewares: CacheMiddleware[Any]) -> CacheMiddleware[Any]: ...
def wrap(cache: Any, *middlewares: CacheMiddleware[Any]) -> CacheMiddleware[Any]:
    """Stack ``middlewares`` around ``cache``, the first one outermost; returns the outermost layer.

    ``wrap(backend, FailOpen(), Metrics(registry=r), Tracing())`` calls ``FailOpen`` first and
    the backend last. Each middleware instance is a spec of its options and wraps one cache.
    The result keeps the cache's value type for type checkers.
    """
    if not middlewares:
        raise TypeError("wrap() needs at least one middleware: wrap(cache, FailOpen(), ...)")
    for middleware in reversed(middlewares):
        if not isinstance(middleware, CacheMiddleware):
            raise TypeError(
                f"wrap() takes CacheMiddleware instances, got {type(middleware).__name__}"
            )
        cache = middleware.bind(cache)
    outermost: CacheMiddleware[Any] = cache
    return outermost


@overload
def observe(
    cache: BaseCache[V],
    *,
    registry: CollectorRegistry | None = None,
    tracer_provider: TracerProvider | None = None,
    prefix: str = "",
    strict: bool = False,
    deadline: float | None = 0.5,
    failure_threshold: int = 5,
    reset_timeout: float = 10.0,
    cache_label: Callable[[Namespace], str] | None = None,
    max_cache_labels: int = 100,
    record_keys: bool = False,
    request_hook: RequestHook | None = None,
    response_hook: ResponseHook | None = None,
    clock: Callable[[], float] | None = None,
    default_ttl: float | timedelta | str | None = None,
) -> CacheMiddleware[V]: ...
@overload
def observe(
    cache: Any,
    *,
    registry: CollectorRegistry | None = None,
    tracer_provider: TracerProvider | None = None,
    prefix: str = "",
    strict: bool = False,
    deadline: float | None = 0.5,
    failure_threshold: int = 5,
    reset_timeout: float = 10.0,
    cache_label: Callable[[Namespace], str] | None = None,
    max_cache_labels: int = 100,
    record_keys: bool = False,
    request_hook: RequestHook | None = None,
    response_hook: ResponseHook | None = None,
    clock: Callable[[], float] | None = None,
    default_ttl: float | timedelta | str | None = None,
) -> CacheMiddleware[Any]: ...
def observe(
    cache: Any,
    *,
    registry: CollectorRegistry | None = None,
    tracer_provider: TracerProvider | None = None,
    prefix: str = "",
    strict: bool = False,
    deadline: float | None = 0.5,
    failure_threshold: int = 5,
    reset_timeout: float = 10.0,
    cache_label: Callable[[Namespace], str] | None = None,
    max_cache_labels: int = 100,
    record_keys: bool = False,
    request_hook: RequestHook | None = None,
    response_hook: ResponseHook | None = None,
    clock: Callable[[], float] | None = None,
    default_ttl: float | timedelta | str | None = None,
) -> CacheMiddleware[Any]:
    """The production stack in one call: FailOpen → Metrics → Tracing → ``cache``.

    Exactly ``wrap(cache, FailOpen(...), Metrics(...), Tracing(...))``: each layer's calls
    are composed once, when bound, so a call through the stack is one closure per layer.
    A cache that does not validate its own input (LangGraph's, a user's) also gets
    ``Validate`` in front, so bad input raises the same errors as with our backends::

        cache = observe(SqliteCache(path="cache.db"), deadline=0.25)
        graph = builder.compile(cache=cache)

    - ``registry``: the Prometheus registry to record into (default: the global one);
      ``prefix`` prepends ``prefix_`` to every metric name.
    - ``tracer_provider``: OpenTelemetry provider (default: the global one).
    - ``strict``: re-raise backend failures instead of serving misses and dropping writes.
    - ``deadline``: seconds a call may take (``None``: no deadline); ``failure_threshold``
      consecutive failures open the circuit for ``reset_timeout`` seconds.
    - ``cache_label(namespace) -> str``: the ``cache`` label (default: the namespace, or a
      LangGraph node's name), at most ``max_cache_labels`` distinct values.
    - ``record_keys``: put hashed keys on spans; ``request_hook``/``response_hook``: called
      with each span, operation and argument/result (their errors are logged, never raised).
    - ``clock``: the monotonic clock of the breaker (default ``time.monotonic``; for tests).
    - ``default_ttl``: the ttl of writes that carry none (``ttl=None``, which otherwise
      never expires): seconds, a ``timedelta`` or ``"90s"``/``"15m"``/``"1h"``/``"1d"``;
      explicit ttls are kept. With it, nothing written through this stack lives forever.
    """
    registry = REGISTRY if registry is None else registry
    cache_label = default_cache_label if cache_label is None else cache_label
    clock = time.monotonic if clock is None else clock
    layers: list[CacheMiddleware[Any]] = [Validate()] if needs_validation(cache) else []
    layers += [
        FailOpen(
            deadline=deadline,
            strict=strict,
            failure_threshold=failure_threshold,
            reset_timeout=reset_timeout,
            clock=clock,
        ),
        Metrics(
            registry=registry,
            prefix=prefix,
            cache_label=cache_label,
            max_cache_labels=max_cache_labels,
            # A provider handed in explicitly may not be global: look for its spans on every call.
            exemplars=True if tracer_provider is not None else None,
        ),
        Tracing(
            tracer_provider=tracer_provider,
            record_keys=record_keys,
            namespace_label=cache_label,
            request_hook=request_hook,
            response_hook=response_hook,
        ),
    ]
    if default_ttl is not None:
        layers.append(DefaultTtl(default_ttl))
    return wrap(cache, *layers)
