"""The decorator's instrumentation: the ``cache.call`` span and the cache's record hooks.

Nothing here raises into the caller: a failing tracer or hook is logged at debug level.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from opentelemetry import context as otel_context
from opentelemetry import trace

from toolkit._types import Namespace
from toolkit.decorators.stats import CallStats
from toolkit.middleware.otel import instrumentation_suppressed, tracing_switch

SPAN_NAME = "cache.call"
_log = logging.getLogger("toolkit.decorators")


class Telemetry:
    """Spans and cache hooks for one decorated function."""

    __slots__ = ("func_name", "ns", "ns_label", "stats", "tracer", "tracing")

    def __init__(
        self, ns: Namespace, func_name: str, tracer_provider: trace.TracerProvider | None
    ) -> None:
        from toolkit import __version__

        self.ns = ns
        self.stats = CallStats()
        self.ns_label = ".".join(ns)  # the middleware's short form for plain namespaces
        self.func_name = func_name
        self.tracing = tracing_switch(tracer_provider)  # read on every call; checks it first
        self.tracer = trace.get_tracer(__name__, __version__, tracer_provider=tracer_provider)

    def span(self) -> trace.Span | None:
        """A recording ``cache.call`` span, or ``None`` when nothing would record it."""
        # With no SDK provider a span could only be a non-recording no-op: skip even the
        # ProxyTracer round trip.
        if not self.tracing.live:
            return None
        if instrumentation_suppressed():
            return None
        return self._start(SPAN_NAME)

    def _start(self, name: str, **options: Any) -> trace.Span | None:
        """Start a span ``name`` describing this function, or ``None`` if it cannot record."""
        try:
            span = self.tracer.start_span(name, **options)
            if not span.is_recording():
                return None
            span.set_attribute("cache.namespace", self.ns_label)
            span.set_attribute("code.function.name", self.func_name)
            return span
        except Exception:
            _log.debug("starting the %s span failed", name, exc_info=True)
            return None

    def hook(self, cache: Any, name: str, *args: Any, **kwargs: Any) -> None:
        """Call ``cache.<name>(ns, *args, **kwargs)`` if the cache has it (observe's recorders)."""
        fn = getattr(cache, name, None)
        if fn is None:
            return
        try:
            fn(self.ns, *args, **kwargs)
        except Exception:
            _log.debug("cache hook %s failed", name, exc_info=True)

    def coalesced(self, cache: Any, span: trace.Span | None) -> None:
        """Report a caller that waits on another caller's computation."""
        self.stats.coalesced()
        self.hook(cache, "record_coalesced")
        if span is not None:
            span.set_attribute("cache.coalesced", True)

    def lease(
        self, cache: Any, outcome: str, waited: float | None, span: trace.Span | None
    ) -> None:
        """Report how a caller that needed a value got it under ``lock=True``; ``waited``:
        seconds it waited for another holder (``None`` if it did not wait)."""
        self.hook(cache, "record_lease", outcome, waited)
        if span is not None:
            span.set_attribute("cache.lease.outcome", outcome)
            if waited is not None:
                span.set_attribute("cache.lease.wait_seconds", waited)

    def served_stale(self, cache: Any, span: trace.Span | None) -> None:
        """Report a stale result served while a background refresh runs."""
        self.hook(cache, "record_stale")
        if span is not None:
            span.set_attribute("cache.stale", True)

    def refreshed(self, cache: Any, trigger: str, result: str) -> None:
        """Report a background refresh (``trigger`` stale or early) and how it ended."""
        self.hook(cache, "record_refresh", trigger, result)

    def child_span(
        self, name: str, parent: trace.Span | None, *, link: bool = False
    ) -> trace.Span | None:
        """A recording span ``name`` under ``parent`` (or linked to it, for work that outlives
        the parent's call), or ``None`` when ``parent`` is ``None`` or nothing records."""
        if parent is None:
            return None
        if link:
            links = [trace.Link(parent.get_span_context())]
            return self._start(name, context=otel_context.Context(), links=links)
        return self._start(name, context=trace.set_span_in_context(parent))

    def load_timer(self, cache: Any) -> LoadTimer:
        """A context manager timing one computation for ``cache.record_load``."""
        return LoadTimer(self, cache)


class LoadTimer:
    """Times one computation of a miss and reports it through the cache's ``record_load``."""

    __slots__ = ("cache", "start", "telemetry")

    def __init__(self, telemetry: Telemetry, cache: Any) -> None:
        self.telemetry = telemetry
        self.cache = cache
        self.start = 0.0

    def __enter__(self) -> None:
        self.start = time.perf_counter()

    def __exit__(self, exc_type: type[BaseException] | None, *_: object) -> None:
        seconds = time.perf_counter() - self.start
        self.telemetry.stats.loaded(seconds, ok=exc_type is None)
        self.telemetry.hook(self.cache, "record_load", seconds, ok=exc_type is None)
