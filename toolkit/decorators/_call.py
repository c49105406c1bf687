"""The entry points of a decorated function's calls: read, judge the hit, serve it.

``call`` and ``acall`` serve a fresh hit inline (read, judge, return): the hot path, kept
out of the steps' machinery. Anything else (a miss, a stale or early hit, a forced
refresh) runs the steps of ``_steps``, decided once, with a runner of ``_run`` doing
their I/O with blocking calls or by awaiting. Also drawn on: ``_plan`` (keys), ``tags``
(the keys of a call's tags) and ``_telemetry`` (the call's span).
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable, Iterable
from typing import Any

from opentelemetry import trace

from toolkit import switches
from toolkit._types import FullKey, Namespace
from toolkit.base import BaseCache
from toolkit.config import default_cache
from toolkit.decorators._entry import MISSING, StorePolicy
from toolkit.decorators._plan import CallKeys
from toolkit.decorators._refresh import Refresher
from toolkit.decorators._run import Awaiting, Blocking
from toolkit.decorators._steps import Call, Steps, Target
from toolkit.decorators._telemetry import Telemetry
from toolkit.decorators.fleet import LeasePolicy
from toolkit.decorators.flight import Flights
from toolkit.decorators.freshness import ENVELOPE_KEY_SUFFIX, FRESH, Freshness
from toolkit.decorators.stats import CacheParameters
from toolkit.decorators.tags import TAGGED_KEY_SUFFIX, Tagging, TagsOption, watch

Args = tuple[Any, ...]
Kwargs = dict[str, Any]


def is_coroutine_function(func: Any) -> bool:
    """Whether calling ``func`` makes a coroutine: an ``async def`` (bound, or in a partial),
    or an object whose ``__call__`` is one, which ``inspect.iscoroutinefunction`` misses."""
    if inspect.iscoroutinefunction(func):
        return True
    while isinstance(func, functools.partial):
        func = func.func
    if isinstance(func, type) or inspect.isroutine(func):
        return False
    call = type(func).__call__ if callable(func) else None
    return inspect.iscoroutinefunction(call)


class Cached(Steps):
    """Everything one decorated function needs per call: the entry points, which serve a
    fresh hit inline, and the steps past it (``Steps``), run by ``Blocking`` or ``Awaiting``."""

    def __init__(
        self,
        func: Callable[..., Any],
        *,
        ns: Namespace,
        ttl: float | None,
        cache: BaseCache[Any] | None,
        key: Callable[..., Any] | None,
        ignore: Iterable[str],
        cache_none: bool,
        condition: Callable[[Any], bool] | None,
        strict_containers: bool,
        tracer_provider: trace.TracerProvider | None,
        key_id: str | None = None,
        fresh: Freshness | None = None,
        leases: LeasePolicy | None = None,
        tags: TagsOption | None = None,
    ) -> None:
        self.ns = ns
        self.cache = cache
        self.is_async = is_coroutine_function(func)
        self.keys = CallKeys(
            func,
            ns,
            key=key,
            ignore=ignore,
            strict_containers=strict_containers,
            key_id=key_id,
            suffix=("" if tags is None else TAGGED_KEY_SUFFIX)
            + ("" if fresh is None else ENVELOPE_KEY_SUFFIX),
        )
        self.full_key = self.keys.full_key
        self.func_name = self.keys.func_name
        self.store = StorePolicy(ttl, cache_none, condition, fresh)
        self.tagging = None if tags is None else Tagging(tags, self.func_name)
        self.telemetry = Telemetry(ns, self.func_name, tracer_provider)
        self.parameters = CacheParameters(
            ns,
            ttl,
            cache_none,
            strict_containers,
            key_id,
            lock=leases is not None,
            lock_timeout=None if leases is None else leases.lock_timeout,
            lease_ttl=None if leases is None else leases.lease_ttl,
            stale_ttl=None if fresh is None or not fresh.stale_ttl else fresh.stale_ttl,
            beta=None if fresh is None or not fresh.early else fresh.beta,
        )
        refresher = Refresher()
        if fresh is not None and not self.is_async:
            refresher.warm()
        super().__init__(
            func_name=self.func_name,
            store=self.store,
            telemetry=self.telemetry,
            flights=Flights(),
            refresher=refresher,
            fresh=fresh,
            leases=leases,
        )
        self.blocking = Blocking(self.flights, refresher)
        if self.tagging is not None:
            watch(self.flights, self.cache)
        self.awaiting = Awaiting(self.blocking, self.is_async)

    def backend(self) -> BaseCache[Any]:
        """The cache this function reads and writes (the configured default if none given)."""
        return self.cache if self.cache is not None else default_cache()

    def begin(
        self, instance: Any, args: Args, kwargs: Kwargs
    ) -> tuple[BaseCache[Any], FullKey, trace.Span | None]:
        """What every call needs before its first I/O: the cache, the key and maybe a span."""
        cache = self.cache
        if cache is None:
            cache = default_cache()
        return cache, self.full_key(instance, args, kwargs), self.telemetry.span()

    def target(self, full_key: FullKey, instance: Any, args: Args, kwargs: Kwargs) -> Target:
        """The keys a call reads: its entry's and, with ``tags``, its tags' versions."""
        if self.tagging is None:
            return Target(full_key)
        if instance is None:
            instance = self.keys.plan.receiver  # cached(obj.method): its controls pass none
        tag_args = args if instance is None else (instance, *args)
        return Target(full_key, self.tagging.keys(tag_args, kwargs))

    # -- the switches: caching off, or a forced refresh (see toolkit.switches) --

    def _switched(
        self, wrapped: Callable[..., Any], instance: Any, args: Args, kwargs: Kwargs
    ) -> Any:
        if switches.mode() == switches.OFF:
            return wrapped(*args, **kwargs)
        return self.refresh(wrapped, instance, args, kwargs)

    async def _aswitched(
        self, wrapped: Callable[..., Any], instance: Any, args: Args, kwargs: Kwargs
    ) -> Any:
        if switches.mode() == switches.OFF:
            result = wrapped(*args, **kwargs)
            return await result if inspect.isawaitable(result) else result
        return await self.arefresh(wrapped, instance, args, kwargs)

    # -- the sync path --

    def call(self, wrapped: Callable[..., Any], instance: Any, args: Args, kwargs: Kwargs) -> Any:
        """One call of the decorated sync function."""
        if switches.mode() is not None:
            return self._switched(wrapped, instance, args, kwargs)
        cache, full_key, span = self.begin(instance, args, kwargs)
        if span is None and self.tagging is None:  # the hot path, kept short
            stored = cache.get([full_key]).get(full_key, MISSING)
            verdict = self.served(stored)  # XFetch draws here, once per hit
            if verdict[0] is FRESH:
                next(self.stats.hits)
                return verdict[1]
            call = Call(cache, wrapped, args, kwargs, Target(full_key))
            return self._answer(call, stored, None, verdict)
        call = Call(cache, wrapped, args, kwargs, self.target(full_key, instance, args, kwargs))
        if span is None:
            return self._answer(call, self._get(call), None)
        with trace.use_span(span, end_on_exit=True):
            return self._answer(call, self._get(call), span)

    def _get(self, call: Call) -> Any:
        """The stored content of the call's entry (``MISSING`` if absent or invalidated)."""
        return self.found(call.cache.get(call.target.keys()), call.target)

    def _answer(
        self,
        call: Call,
        stored: Any,
        span: trace.Span | None,
        verdict_given: tuple[str, Any] | None = None,
    ) -> Any:
        """Serve a fresh hit; run the steps for a miss, or a stale or early hit."""
        verdict, value = self.judged(call.cache, stored, span, verdict_given)
        if verdict == FRESH:
            return value
        return self.blocking.run(call.cache, self.answer(call, stored, verdict, value, span))

    def refresh(
        self, wrapped: Callable[..., Any], instance: Any, args: Args, kwargs: Kwargs
    ) -> Any:
        """Recompute a call, store the result and return it."""
        target = self.target(self.full_key(instance, args, kwargs), instance, args, kwargs)
        cache = self.backend()
        return self.blocking.run(cache, self.reload(Call(cache, wrapped, args, kwargs, target)))

    # -- the async path: the same, awaiting the I/O --

    async def acall(
        self, wrapped: Callable[..., Any], instance: Any, args: Args, kwargs: Kwargs
    ) -> Any:
        """One call of the decorated coroutine function (or of a sync one from async code)."""
        if switches.mode() is not None:
            return await self._aswitched(wrapped, instance, args, kwargs)
        cache, full_key, span = self.begin(instance, args, kwargs)
        if span is None and self.tagging is None:  # the hot path, kept short
            stored = (await cache.aget([full_key])).get(full_key, MISSING)
            verdict = self.served(stored)  # XFetch draws here, once per hit
            if verdict[0] is FRESH:
                next(self.stats.hits)
                return verdict[1]
            call = Call(cache, wrapped, args, kwargs, Target(full_key))
            return await self._aanswer(call, stored, None, verdict)
        call = Call(cache, wrapped, args, kwargs, self.target(full_key, instance, args, kwargs))
        if span is None:
            return await self._aanswer(call, await self._aget(call), None)
        with trace.use_span(span, end_on_exit=True):
            return await self._aanswer(call, await self._aget(call), span)

    async def _aget(self, call: Call) -> Any:
        """Async twin of :meth:`_get`."""
        return self.found(await call.cache.aget(call.target.keys()), call.target)

    async def _aanswer(
        self,
        call: Call,
        stored: Any,
        span: trace.Span | None,
        verdict_given: tuple[str, Any] | None = None,
    ) -> Any:
        """Async twin of :meth:`_answer`."""
        verdict, value = self.judged(call.cache, stored, span, verdict_given)
        if verdict == FRESH:
            return value
        steps = self.answer(call, stored, verdict, value, span)
        return await self.awaiting.run(call.cache, steps)

    async def arefresh(
        self, wrapped: Callable[..., Any], instance: Any, args: Args, kwargs: Kwargs
    ) -> Any:
        """Recompute a call, store the result (async I/O) and return it."""
        target = self.target(self.full_key(instance, args, kwargs), instance, args, kwargs)
        cache = self.backend()
        steps = self.reload(Call(cache, wrapped, args, kwargs, target))
        return await self.awaiting.run(cache, steps)
