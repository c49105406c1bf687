"""The default stack fused into one layer: fail-open, metrics and traces in one frame per call."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from time import perf_counter
from typing import Any

from toolkit._types import FullKey, Namespace, ValueT
from toolkit.base import key_sequence
from toolkit.middleware.base import CacheMiddleware
from toolkit.middleware.failopen import FailOpen
from toolkit.middleware.metrics import Metrics, Recorder, current_exemplar
from toolkit.middleware.otel import global_tracing_live
from toolkit.middleware.tracing import Tracing

__all__ = ["ObservedCache"]


class _FastPath:
    """The state and recording of the fused path, in a plain object: a middleware's
    ``__getattr__`` makes every attribute read on it about three times slower."""

    __slots__ = (
        "adirect",
        "breaker",
        "cells",
        "direct",
        "failopen",
        "inner",
        "quick",
        "recorder",
        "stack",
        "tracing",
    )

    def __init__(self, cache: ObservedCache[Any]) -> None:
        self.inner = cache.inner
        self.stack = cache._stack
        self.failopen = cache.failopen
        self.breaker = cache.failopen.breaker
        self.tracing = cache.tracing
        self.recorder: Recorder = cache.metrics.recorder
        self.cells = self.recorder.durations
        # Without a deadline thread and with lock-free metrics, a call can skip the layers.
        direct = not self.failopen.uses_threads and not self.recorder.families.multiprocess
        self.direct = direct
        self.adirect = direct and self.failopen.async_deadline is None
        self.quick = direct and self.tracing.follows_global  # then "no SDK" is one cheap check

    def runs(self) -> bool:
        """Whether this path may run a call now (else the stack does): see ``ObservedCache``."""
        if self.quick and not global_tracing_live():
            return not self.breaker.state
        return self.direct and not self.breaker.state and self.tracing.idle()

    def aruns(self) -> bool:
        """``runs`` for async calls: only when no async deadline applies either."""
        return self.adirect and self.runs()

    def seen(self, operation: str, arg: Any, result: Any, elapsed: float) -> None:
        """A successful get's or set's record: its counts, its latency, the breaker's verdict.

        The same figures as the ``Metrics`` layer records; ``result`` is a get's result or
        ``None`` for a set.
        """
        recorder = self.recorder
        if len(arg) == 1:
            try:
                ns = next(iter(arg))[0]  # the one key of a key list or of a pairs mapping
                children = recorder.by_ns.get(ns) or recorder.children(ns)
                if result is None:
                    next(children.put_one)
                else:
                    next(children.hit_one if result else children.miss_one)
            except Exception as exc:  # malformed keys a foreign cache accepted: as the layers do
                if result is not None:
                    recorder.count_gets(arg, result)  # logs and skips them
                else:  # Metrics times the set, then raises on them; FailOpen judges that
                    recorder.time(operation, elapsed)
                    self.judge(operation, arg, exc)
                    return
        elif result is None:
            recorder.count_puts(arg)
        else:
            recorder.count_gets(arg, result)
        cell = self.cells[operation]
        setting = recorder.exemplars
        if setting or (setting is None and global_tracing_live()):
            cell.observe(elapsed, current_exemplar())
        elif elapsed <= cell.first:  # HistogramCell.observe inlined for the common bucket
            next(cell.first_bucket)
            cell.sum += elapsed
        else:
            cell.observe(elapsed)
        if result is None and recorder.refresh_entries is not None:
            recorder.refresh_entries()
        breaker = self.breaker
        if breaker.failures or breaker.state:
            breaker.succeeded()

    def failed(self, operation: str, arg: Any, start: float, exc: BaseException) -> None:
        """What the stack does with a failure: ``Metrics`` counts it, ``FailOpen`` judges it."""
        self.recorder.ended(operation, arg, perf_counter() - start, exc)
        self.judge(operation, arg, exc)

    def judge(self, operation: str, arg: Any, exc: BaseException) -> None:
        """``FailOpen``'s verdict: the failure is swallowed (a miss, a dropped write) or raised."""
        if not self.failopen.verdict(operation, arg, exc):
            raise exc


class ObservedCache(CacheMiddleware[ValueT]):
    """``FailOpen`` → ``Metrics`` → ``Tracing`` around a cache, at the cost of one layer.

    It binds the three given layers into the usual stack and sends every call there, except
    the common case, which it runs itself with the same effect: an in-process backend (no
    deadline thread), a closed circuit and no span able to record (no SDK, a no-op
    provider). Then a get or set is timed, counted and judged by one object; a failure goes
    to the layers' own handlers. ``clear`` and the ``record_*`` hooks always take the stack.
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
        self._fast = _FastPath(self)

    def __getattr__(self, name: str) -> Any:
        """Anything else public (``circuit_state``, ``close``...) is the stack's."""
        if name.startswith("_"):
            raise AttributeError(name)
        return getattr(self._stack, name)

    # Each method tests the common case inline first (in-process, no SDK, closed circuit):
    # every frame and attribute read here is on the path of every cache hit.

    def get(self, keys: Sequence[FullKey]) -> dict[FullKey, ValueT]:
        """Get the cached values for the given keys; a failure is a miss."""
        if type(keys) is not list:
            keys = key_sequence(keys)
        fast = self._fast
        if not (
            (fast.quick and not global_tracing_live() and not fast.breaker.state) or fast.runs()
        ):
            return self._stack.get(keys)
        start = perf_counter()
        try:
            result: dict[FullKey, ValueT] = fast.inner.get(keys)
        except BaseException as exc:
            fast.failed("get", keys, start, exc)
            return {}
        fast.seen("get", keys, result, perf_counter() - start)
        return result

    async def aget(self, keys: Sequence[FullKey]) -> dict[FullKey, ValueT]:
        """Asynchronously get the cached values for the given keys; a failure is a miss."""
        keys = key_sequence(keys)
        fast = self._fast
        if not fast.aruns():
            return await self._stack.aget(keys)
        start = perf_counter()
        try:
            result: dict[FullKey, ValueT] = await fast.inner.aget(keys)
        except BaseException as exc:
            fast.failed("get", keys, start, exc)
            return {}
        fast.seen("get", keys, result, perf_counter() - start)
        return result

    def set(self, pairs: Mapping[FullKey, tuple[ValueT, int | None]]) -> None:
        """Set the cached values for the given keys and TTLs; a failure drops the write."""
        fast = self._fast
        if not (
            (fast.quick and not global_tracing_live() and not fast.breaker.state) or fast.runs()
        ):
            self._stack.set(pairs)
            return
        start = perf_counter()
        try:
            fast.inner.set(pairs)
        except BaseException as exc:
            fast.failed("set", pairs, start, exc)
            return
        fast.seen("set", pairs, None, perf_counter() - start)

    async def aset(self, pairs: Mapping[FullKey, tuple[ValueT, int | None]]) -> None:
        """Asynchronously set the values for the given keys and TTLs; a failure drops the write."""
        fast = self._fast
        if not fast.aruns():
            await self._stack.aset(pairs)
            return
        start = perf_counter()
        try:
            await fast.inner.aset(pairs)
        except BaseException as exc:
            fast.failed("set", pairs, start, exc)
            return
        fast.seen("set", pairs, None, perf_counter() - start)

    def clear(self, namespaces: Sequence[Namespace] | None = None) -> None:
        """Delete the values of the given namespaces (all when ``None``); a failure is dropped."""
        self._stack.clear(namespaces)

    async def aclear(self, namespaces: Sequence[Namespace] | None = None) -> None:
        """Asynchronously delete the values of the given namespaces; a failure is dropped."""
        await self._stack.aclear(namespaces)

    def delete(self, keys: Sequence[FullKey]) -> None:
        """Delete exactly these keys; a failure is dropped."""
        self._stack.delete(keys)

    async def adelete(self, keys: Sequence[FullKey]) -> None:
        """Asynchronously delete exactly these keys; a failure is dropped."""
        await self._stack.adelete(keys)

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
