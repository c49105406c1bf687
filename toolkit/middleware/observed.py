"""The default stack fused into one layer: fail-open, metrics and traces in one frame per call."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from time import perf_counter
from typing import Any

from opentelemetry import trace

from toolkit._types import FullKey, Namespace, ValueT
from toolkit.middleware.base import CacheMiddleware
from toolkit.middleware.failopen import FailOpen
from toolkit.middleware.metrics import Metrics
from toolkit.middleware.tracing import Tracing

__all__ = ["ObservedCache"]


class ObservedCache(CacheMiddleware[ValueT]):
    """``FailOpen`` → ``Metrics`` → ``Tracing`` around a cache, at the cost of one layer.

    It binds the three given layers into the usual stack and sends every call there, except
    the common case, which it runs itself with the same effect: an in-process backend (no
    deadline thread), a closed circuit and no span able to record (no SDK, a no-op
    provider). Then a call is timed, counted and classified in this one frame, through the
    layers' own recording methods; a failure is handed to those layers' own handlers.
    """

    def __init__(
        self,
        inner: Any = None,
        *,
        failopen: FailOpen[Any],
        metrics: Metrics[Any],
        tracing: Tracing[Any],
    ) -> None:
        """Observe ``inner`` with the three (unbound) layers, outermost first."""
        self.failopen = failopen
        self.metrics = metrics
        self.tracing = tracing
        super().__init__(inner)

    def _on_bind(self) -> None:
        self._stack = self.failopen.bind(self.metrics.bind(self.tracing.bind(self.inner)))
        self._breaker = self.failopen._breaker
        # Without a deadline thread and with lock-free metrics, a call can skip the layers.
        self._direct = self.failopen._workers is None and not self.metrics._families.multiprocess
        self._global_tracing = self.tracing._global

    def __getattr__(self, name: str) -> Any:
        """Anything else public (``circuit_state``, ``close``...) is the stack's."""
        if name.startswith("_"):
            raise AttributeError(name)
        return getattr(self._stack, name)

    def _start(self) -> float | None:
        """The start time of a call this layer runs itself; ``None``: the stack runs it."""
        if (
            self._direct
            and not self._breaker.state
            and ((self._global_tracing and trace._TRACER_PROVIDER is None) or self.tracing.idle())
        ):
            return perf_counter()
        return None

    def _done(self, operation: str, arg: Any, start: float) -> None:
        """Record a call the backend answered."""
        self.metrics._ended(operation, arg, perf_counter() - start)
        breaker = self._breaker
        if breaker.failures or breaker.state:
            breaker.succeeded()

    def _failed(self, operation: str, arg: Any, start: float, exc: BaseException) -> None:
        """What the stack does with a failure: ``Metrics`` counts it, ``FailOpen`` judges it."""
        self.metrics._ended(operation, arg, perf_counter() - start, exc)
        guard = self.failopen._guard(operation, arg)
        guard.admitted = True
        if not guard.__exit__(type(exc), exc, exc.__traceback__):
            raise exc

    def get(self, keys: Sequence[FullKey]) -> dict[FullKey, ValueT]:
        """Get the cached values for the given keys; a failure is a miss."""
        start = self._start()
        if start is None:
            return self._stack.get(keys)  # type: ignore[no-any-return]
        try:
            result: dict[FullKey, ValueT] = self.inner.get(keys)
        except BaseException as exc:
            self._failed("get", keys, start, exc)
            return {}
        self.metrics._count_gets(keys, result)
        self._done("get", keys, start)
        return result

    async def aget(self, keys: Sequence[FullKey]) -> dict[FullKey, ValueT]:
        """Asynchronously get the cached values for the given keys; a failure is a miss."""
        start = self._start()
        if start is None:
            return await self._stack.aget(keys)  # type: ignore[no-any-return]
        try:
            result: dict[FullKey, ValueT] = await self.inner.aget(keys)
        except BaseException as exc:
            self._failed("get", keys, start, exc)
            return {}
        self.metrics._count_gets(keys, result)
        self._done("get", keys, start)
        return result

    def set(self, pairs: Mapping[FullKey, tuple[ValueT, int | None]]) -> None:
        """Set the cached values for the given keys and TTLs; a failure drops the write."""
        start = self._start()
        if start is None:
            self._stack.set(pairs)
            return
        try:
            self.inner.set(pairs)
        except BaseException as exc:
            self._failed("set", pairs, start, exc)
            return
        self._done("set", pairs, start)

    async def aset(self, pairs: Mapping[FullKey, tuple[ValueT, int | None]]) -> None:
        """Asynchronously set the values for the given keys and TTLs; a failure drops the write."""
        start = self._start()
        if start is None:
            await self._stack.aset(pairs)
            return
        try:
            await self.inner.aset(pairs)
        except BaseException as exc:
            self._failed("set", pairs, start, exc)
            return
        self._done("set", pairs, start)

    def clear(self, namespaces: Sequence[Namespace] | None = None) -> None:
        """Delete the values of the given namespaces (all when ``None``); a failure is dropped."""
        self._stack.clear(namespaces)

    async def aclear(self, namespaces: Sequence[Namespace] | None = None) -> None:
        """Asynchronously delete the values of the given namespaces; a failure is dropped."""
        await self._stack.aclear(namespaces)

    # -- hooks: the stack's layers record them --

    def record_load(self, namespace: Namespace, seconds: float, *, ok: bool) -> None:
        """Report ``@cached`` computed a missing value in ``seconds`` (``ok=False``: it raised)."""
        self._stack.record_load(namespace, seconds, ok=ok)

    def record_coalesced(self, namespace: Namespace) -> None:
        """Report that a caller waited for another caller's load instead of computing."""
        self._stack.record_coalesced(namespace)

    def record_error(
        self, operation: str, namespaces: Sequence[Namespace] | None, error_type: str
    ) -> None:
        """Report a failure an outer layer raised itself (a deadline, an open circuit)."""
        self._stack.record_error(operation, namespaces, error_type)

    def record_circuit_state(self, state: int) -> None:
        """Report the circuit breaker's state: 0 closed, 1 half-open, 2 open."""
        self._stack.record_circuit_state(state)
