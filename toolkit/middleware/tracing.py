"""OpenTelemetry spans around cache operations (API only; the SDK is the application's choice)."""

from __future__ import annotations

import hashlib
from collections.abc import Awaitable, Callable, Sequence
from types import TracebackType
from typing import Any

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.trace import (
    Span,
    SpanKind,
    Status,
    StatusCode,
    TracerProvider,
)

from toolkit._types import FullKey, Namespace, ValueT
from toolkit.middleware.base import (
    OPERATIONS,
    READ_ONCE,
    CacheMiddleware,
    backend_name,
    logger,
    read_once,
)
from toolkit.middleware.labels import ALL_CACHES, default_cache_label
from toolkit.middleware.otel import (
    NEVER,
    TracingSwitch,
    instrumentation_suppressed,
    tracing_switch,
)

__all__ = ["MAX_HASHED_KEYS", "RequestHook", "ResponseHook", "Tracing"]


RequestHook = Callable[[Span, str, Any], None]
"""``hook(span, operation, argument)`` before a recorded call (keys, pairs or namespaces)."""
ResponseHook = Callable[[Span, str, Any], None]
"""``hook(span, operation, result)``: called after a recorded operation succeeded."""

MAX_HASHED_KEYS = 16
_SCOPE = "toolkit.middleware"
_MULTIPLE = "(multiple)"


def hash_key(full_key: FullKey) -> str:
    """A short, stable digest of a key, for correlating spans without revealing the key."""
    ns, key = full_key
    material = "\x1f".join((*ns, "\x1e", key)).encode("utf-8")
    return hashlib.blake2b(material, digest_size=8).hexdigest()


def _guarded(
    hook: Callable[[Span, str, Any], None] | None, span: Span, operation: str, arg: Any
) -> None:
    if hook is None:
        return
    try:
        hook(span, operation, arg)
    except Exception:
        logger.warning("cache tracing hook %r failed; ignored", hook, exc_info=True)


class _Span:
    """One traced operation: a span that is made current and filled only when it records."""

    __slots__ = ("arg", "operation", "span", "token", "tracing")

    def __init__(
        self, tracing: Tracing[Any] | None, operation: str, arg: Any, span: Span | None
    ) -> None:
        self.tracing = tracing
        self.operation = operation
        self.arg = arg
        self.span = span

    def __enter__(self) -> _Span:
        span, tracing = self.span, self.tracing
        if span is not None and tracing is not None:
            self.token = otel_context.attach(trace.set_span_in_context(span))
            try:
                tracing.describe(span, self.operation, self.arg)
            except Exception:
                # Malformed keys (a caller bug that validation reports to them) land here.
                logger.debug("cache span attributes failed; ignored", exc_info=True)
            _guarded(tracing.request_hook, span, self.operation, self.arg)
        return self

    def hits(self, result: dict[FullKey, ValueT]) -> dict[FullKey, ValueT]:
        """Record how many requested keys were found; returns ``result``."""
        span, tracing = self.span, self.tracing
        if span is not None and tracing is not None:
            span.set_attribute("cache.hits", len(result))
            if len(self.arg) == 1:
                span.set_attribute("cache.hit", bool(result))
            _guarded(tracing.response_hook, span, self.operation, result)
        return result

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        span, tracing = self.span, self.tracing
        if span is None or tracing is None:
            return
        try:
            if exc is not None:
                error_type = type(exc).__name__
                span.set_attribute("error.type", error_type)
                # The type, not the message: messages can quote keys or values.
                span.set_status(Status(StatusCode.ERROR, error_type))
            elif self.operation != "get":
                _guarded(tracing.response_hook, span, self.operation, None)
        finally:
            try:
                span.end()
            except Exception:
                logger.debug("ending a cache span failed; ignored", exc_info=True)
            otel_context.detach(self.token)


_NOT_RECORDING = _Span(None, "", None, None)
_SPAN_NAMES = {op: f"cache.{op}" for op in OPERATIONS}


class Tracing(CacheMiddleware[ValueT]):
    """Wraps each call in a ``cache.get``/``cache.set``/``cache.clear`` span (DESIGN.md "Traces").

    Attributes: ``cache.namespace`` (short form), ``cache.backend``, ``cache.batch_size``,
    ``cache.hits`` and, for one key, ``cache.hit``; on failure ``error.type`` and an error
    status. Keys appear only hashed and only with ``record_keys=True``; values never do.
    Nothing is computed when the span does not record or instrumentation is suppressed.
    """

    adds_read_failures = False  # a failing SDK or hook is logged, never raised
    adds_io = False

    def __init__(
        self,
        inner: Any = None,
        *,
        tracer_provider: TracerProvider | None = None,
        record_keys: bool = False,
        namespace_label: Callable[[Namespace], str] = default_cache_label,
        request_hook: RequestHook | None = None,
        response_hook: ResponseHook | None = None,
    ) -> None:
        """Trace with ``tracer_provider`` (default: the global one)."""
        from toolkit import __version__

        self._switch = tracing_switch(tracer_provider)  # first: it refuses a wrong provider
        self._tracer = trace.get_tracer(_SCOPE, __version__, tracer_provider=tracer_provider)
        self._record_keys = record_keys
        self._namespace_label = namespace_label
        self.request_hook = request_hook
        self.response_hook = response_hook
        super().__init__(inner)

    def _on_bind(self) -> None:
        self.backend = backend_name(self.inner)

    def _recomposers(self) -> tuple[TracingSwitch, ...]:
        # Off now (no SDK yet): the calls below are handed out untouched until it turns on.
        return () if self._switch.live or self._switch is NEVER else (self._switch,)

    def _observe(self, operation: str, arg: Any) -> _Span:
        if instrumentation_suppressed():
            return _NOT_RECORDING
        try:
            span = self._tracer.start_span(_SPAN_NAMES[operation], kind=SpanKind.CLIENT)
        except Exception:  # a broken SDK must not fail the call it would have traced
            logger.debug("starting a cache span failed; ignored", exc_info=True)
            return _NOT_RECORDING
        if not span.is_recording():
            span.end()
            return _NOT_RECORDING  # the common no-SDK path: nothing allocated, nothing attached
        return _Span(self, operation, arg, span)

    def wrap_sync(self, operation: str, call: Callable[..., Any]) -> Callable[..., Any]:
        """A span around one sync operation, started only when it can record."""
        if not self._switch.live:
            return call  # nothing can record (no SDK yet, or a no-op provider): no frame at all
        observe, is_get = self._observe, operation == "get"
        reads = operation in READ_ONCE

        def traced(arg: Any = None) -> Any:
            if reads and type(arg) is not list and type(arg) is not tuple:  # the span reads it too
                arg = read_once(arg)
            with observe(operation, arg) as span:
                result = call(arg)
                return span.hits(result) if is_get else result

        return traced

    def wrap_async(
        self, operation: str, call: Callable[..., Awaitable[Any]]
    ) -> Callable[..., Awaitable[Any]]:
        """The async twin of :meth:`wrap_sync`."""
        if not self._switch.live:
            return call
        observe, is_get = self._observe, operation == "get"
        reads = operation in READ_ONCE

        async def traced(arg: Any = None) -> Any:
            if reads and type(arg) is not list and type(arg) is not tuple:  # the span reads it too
                arg = read_once(arg)
            with observe(operation, arg) as span:
                result = await call(arg)
                return span.hits(result) if is_get else result

        return traced

    def describe(self, span: Span, operation: str, arg: Any) -> None:
        """Set the attributes of one call's recording span (never a key unhashed, nor a value)."""
        span.set_attribute("cache.backend", self.backend)
        if operation == "lease":
            span.set_attribute("cache.lease.action", arg.action)
            namespaces: list[str] | set[str] = [self._namespace_label(arg.key[0])]
        elif operation == "clear":
            namespaces = [ALL_CACHES] if arg is None else {self._namespace_label(ns) for ns in arg}
        else:
            span.set_attribute("cache.batch_size", len(arg))
            namespaces = {self._namespace_label(ns) for ns in {full_key[0] for full_key in arg}}
            if self._record_keys:
                hashed = [
                    hash_key(full_key)
                    for _, full_key in zip(range(MAX_HASHED_KEYS), arg, strict=False)
                ]
                span.set_attribute("cache.keys_hashed", hashed)
        if len(namespaces) == 1:
            span.set_attribute("cache.namespace", next(iter(namespaces)))
        elif namespaces:
            span.set_attribute("cache.namespace", _MULTIPLE)

    def record_error(
        self, operation: str, namespaces: Sequence[Namespace] | None, error_type: str
    ) -> None:
        """Mark an outer layer's failure (deadline, open circuit) on the caller's span; forward."""
        span = trace.get_current_span()
        if span.is_recording():
            span.add_event("cache.error", {"cache.operation": operation, "error.type": error_type})
        super().record_error(operation, namespaces, error_type)
