"""The call path of a decorated function: read, judge the hit, and on a miss compute once.

``call`` and ``acall`` are the same steps; only the I/O (``get``/``set``, waiting on a
flight, awaiting the function) is written twice. Seams for what plugs in later:
``_entry`` (the stored form: freshness envelope, tombstones), ``flight`` (who computes a
miss: a fleet lease would wrap ``Flights.join``), ``_telemetry`` (spans and counters).
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterable
from typing import Any

from opentelemetry import trace

from toolkit import switches
from toolkit._types import FullKey, Namespace
from toolkit.base import BaseCache
from toolkit.config import default_cache
from toolkit.decorators._entry import MISSING, StorePolicy, is_hit
from toolkit.decorators._plan import CallKeys
from toolkit.decorators._telemetry import Telemetry
from toolkit.decorators.flight import Flight, Flights
from toolkit.decorators.stats import CacheParameters

Args = tuple[Any, ...]
Kwargs = dict[str, Any]


class Cached:
    """Everything one decorated function needs per call; the sync and async paths share it."""

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
    ) -> None:
        self.ns = ns
        self.cache = cache
        self.is_async = inspect.iscoroutinefunction(func)
        self.keys = CallKeys(
            func, ns, key=key, ignore=ignore, strict_containers=strict_containers, key_id=key_id
        )
        self.full_key = self.keys.full_key
        self.func_name = self.keys.func_name
        self.store = StorePolicy(ttl, cache_none, condition)
        self.telemetry = Telemetry(ns, self.func_name, tracer_provider)
        self.stats = self.telemetry.stats
        self.parameters = CacheParameters(ns, ttl, cache_none, strict_containers, key_id)
        self.flights = Flights()

    def backend(self) -> BaseCache[Any]:
        """The cache this function reads and writes (the configured default if none given)."""
        return self.cache if self.cache is not None else default_cache()

    def begin(
        self, instance: Any, args: Args, kwargs: Kwargs
    ) -> tuple[FullKey, BaseCache[Any], trace.Span | None]:
        """What every call needs before its first I/O: the key, the cache and maybe a span."""
        cache = self.cache
        if cache is None:
            cache = default_cache()
        return self.full_key(instance, args, kwargs), cache, self.telemetry.span()

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
        full_key, cache, span = self.begin(instance, args, kwargs)
        stats = self.stats
        if span is None:
            value = cache.get([full_key]).get(full_key, MISSING)
            if is_hit(value):
                stats.hit()
                return value
            stats.miss()
            return self._single_flight(cache, wrapped, args, kwargs, full_key, None)
        with trace.use_span(span, end_on_exit=True):
            value = cache.get([full_key]).get(full_key, MISSING)
            hit = is_hit(value)
            span.set_attribute("cache.hit", hit)
            if hit:
                stats.hit()
                return value
            stats.miss()
            return self._single_flight(cache, wrapped, args, kwargs, full_key, span)

    def _single_flight(
        self,
        cache: BaseCache[Any],
        wrapped: Callable[..., Any],
        args: Args,
        kwargs: Kwargs,
        full_key: FullKey,
        span: trace.Span | None,
    ) -> Any:
        while True:
            flight, leader = self.flights.join(full_key)
            if leader:
                return self._lead(cache, wrapped, args, kwargs, full_key, flight)
            self.telemetry.coalesced(cache, span)
            flight.done.wait()
            if not flight.abandoned:
                return flight.outcome()
            # The leader was interrupted: another waiter may have taken over and finished.
            value = cache.get([full_key]).get(full_key, MISSING)
            if is_hit(value):
                return value

    def _lead(
        self,
        cache: BaseCache[Any],
        wrapped: Callable[..., Any],
        args: Args,
        kwargs: Kwargs,
        full_key: FullKey,
        flight: Flight,
    ) -> Any:
        value: Any = MISSING
        error: BaseException | None = None
        try:
            value = self._load(cache, wrapped, args, kwargs, full_key)
            return value
        except BaseException as exc:
            error = exc
            raise
        finally:
            self.flights.land(full_key, flight, value, error)

    def _load(
        self,
        cache: BaseCache[Any],
        wrapped: Callable[..., Any],
        args: Args,
        kwargs: Kwargs,
        full_key: FullKey,
    ) -> Any:
        """Compute the result and store it if the policy says so."""
        with self.telemetry.load_timer(cache):
            value = wrapped(*args, **kwargs)
        if self.store.should_store(value):
            cache.set(self.store.pairs(full_key, value))
        return value

    def refresh(
        self, wrapped: Callable[..., Any], instance: Any, args: Args, kwargs: Kwargs
    ) -> Any:
        """Recompute a call, store the result and return it."""
        full_key = self.full_key(instance, args, kwargs)
        return self._load(self.backend(), wrapped, args, kwargs, full_key)

    # -- the async path: the same steps, awaiting the I/O --

    async def acall(
        self, wrapped: Callable[..., Any], instance: Any, args: Args, kwargs: Kwargs
    ) -> Any:
        """One call of the decorated coroutine function (or of a sync one from async code)."""
        if switches.mode() is not None:
            return await self._aswitched(wrapped, instance, args, kwargs)
        full_key, cache, span = self.begin(instance, args, kwargs)
        stats = self.stats
        if span is None:
            value = (await cache.aget([full_key])).get(full_key, MISSING)
            if is_hit(value):
                stats.hit()
                return value
            stats.miss()
            return await self._asingle_flight(cache, wrapped, args, kwargs, full_key, None)
        with trace.use_span(span, end_on_exit=True):
            value = (await cache.aget([full_key])).get(full_key, MISSING)
            hit = is_hit(value)
            span.set_attribute("cache.hit", hit)
            if hit:
                stats.hit()
                return value
            stats.miss()
            return await self._asingle_flight(cache, wrapped, args, kwargs, full_key, span)

    async def _asingle_flight(
        self,
        cache: BaseCache[Any],
        wrapped: Callable[..., Any],
        args: Args,
        kwargs: Kwargs,
        full_key: FullKey,
        span: trace.Span | None,
    ) -> Any:
        while True:
            flight, leader = self.flights.ajoin(full_key)
            if leader:
                return await self._alead(cache, wrapped, args, kwargs, full_key, flight)
            self.telemetry.coalesced(cache, span)
            await flight.done.wait()  # type: ignore[misc]
            if not flight.abandoned:
                return flight.outcome()
            # The leader was cancelled: another waiter may have taken over and finished.
            value = (await cache.aget([full_key])).get(full_key, MISSING)
            if is_hit(value):
                return value

    async def _alead(
        self,
        cache: BaseCache[Any],
        wrapped: Callable[..., Any],
        args: Args,
        kwargs: Kwargs,
        full_key: FullKey,
        flight: Flight,
    ) -> Any:
        value: Any = MISSING
        error: BaseException | None = None
        try:
            value = await self._aload(cache, wrapped, args, kwargs, full_key)
            return value
        except BaseException as exc:
            error = exc
            raise
        finally:
            self.flights.aland(full_key, flight, value, error)

    async def _aload(
        self,
        cache: BaseCache[Any],
        wrapped: Callable[..., Any],
        args: Args,
        kwargs: Kwargs,
        full_key: FullKey,
    ) -> Any:
        """Compute the result (awaiting it if a coroutine) and store it if the policy says so."""
        with self.telemetry.load_timer(cache):
            value = wrapped(*args, **kwargs)
            if self.is_async:
                value = await value
        if self.store.should_store(value):
            await cache.aset(self.store.pairs(full_key, value))
        return value

    async def arefresh(
        self, wrapped: Callable[..., Any], instance: Any, args: Args, kwargs: Kwargs
    ) -> Any:
        """Recompute a call, store the result (async I/O) and return it."""
        full_key = self.full_key(instance, args, kwargs)
        return await self._aload(self.backend(), wrapped, args, kwargs, full_key)
