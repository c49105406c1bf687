"""The call path of a decorated function: read, judge the hit, and on a miss compute once.

``call`` and ``acall`` are the same steps; only the I/O (``get``/``set``, leases, waiting,
awaiting the function) is written twice. The rooms it draws on: ``_entry`` (the stored
form), ``freshness`` (stale and early verdicts), ``flight`` (one computation per key in
this process), ``fleet`` (one per key in the fleet, ``lock=True``), ``_refresh``
(background refreshes) and ``_telemetry`` (spans and counters).
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
import time
from collections.abc import Callable, Iterable
from functools import partial
from typing import Any, NamedTuple

from opentelemetry import trace

from toolkit import switches
from toolkit._types import FullKey, Namespace
from toolkit.base import BaseCache
from toolkit.config import default_cache
from toolkit.decorators._entry import MISSING, StorePolicy, is_hit
from toolkit.decorators._plan import CallKeys
from toolkit.decorators._refresh import Refresher
from toolkit.decorators._telemetry import Telemetry
from toolkit.decorators.fleet import (
    DEFAULT_LEASE_TTL,
    DEFAULT_LOCK_TIMEOUT,
    LEAD,
    RENEWER,
    WAIT,
    Contention,
    LeasePolicy,
    renew_until_cancelled,
)
from toolkit.decorators.flight import Flight, Flights
from toolkit.decorators.freshness import ENVELOPE_KEY_SUFFIX, FRESH, MISS, STALE, Freshness
from toolkit.decorators.stats import CacheParameters
from toolkit.decorators.tags import Tagging, TagsOption
from toolkit.lease import LeaseRequest
from toolkit.middleware.base import supports_lease

Args = tuple[Any, ...]
Kwargs = dict[str, Any]

_log = logging.getLogger("toolkit.decorators")
_REFRESH_LOG_INTERVAL = 10.0


class Target(NamedTuple):
    """The keys one call reads: its entry, and its tags' versions (none without tags)."""

    key: FullKey
    tags: tuple[FullKey, ...] = ()


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
        fresh: Freshness | None = None,
        leases: LeasePolicy | None = None,
        tags: TagsOption | None = None,
    ) -> None:
        self.ns = ns
        self.cache = cache
        self.is_async = inspect.iscoroutinefunction(func)
        self.keys = CallKeys(
            func,
            ns,
            key=key,
            ignore=ignore,
            strict_containers=strict_containers,
            key_id=key_id,
            suffix="" if fresh is None else ENVELOPE_KEY_SUFFIX,
        )
        self.full_key = self.keys.full_key
        self.func_name = self.keys.func_name
        self.store = StorePolicy(ttl, cache_none, condition, fresh)
        self.tagging = None if tags is None else Tagging(tags, self.func_name)
        self.fresh = fresh
        self.leases = leases
        # Background refreshes take a lease where the cache has them, lock=True or not.
        self.refresh_leases = leases or LeasePolicy(DEFAULT_LEASE_TTL, DEFAULT_LOCK_TIMEOUT)
        self.telemetry = Telemetry(ns, self.func_name, tracer_provider)
        self.stats = self.telemetry.stats
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
        self.flights = Flights()
        self.refresher = Refresher()
        if fresh is not None and not self.is_async:
            self.refresher.warm()
        self._next_refresh_log = 0.0
        self._refresh_logs_skipped = 0

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
        tag_args = args if instance is None else (instance, *args)
        return Target(full_key, self.tagging.keys(tag_args, kwargs))

    def found(self, read: dict[FullKey, Any], target: Target) -> Any:
        """The stored content of ``target`` in a batch read: ``MISSING`` if absent, or if a
        tag was invalidated since it was stored."""
        stored = read.get(target.key, MISSING)
        if not target.tags:
            return stored
        fresh, content = Tagging.check(stored, Tagging.versions(read, target.tags))
        return content if fresh else MISSING

    def served(self, stored: Any) -> tuple[str, Any]:
        """The verdict on a value read back (fresh, early, stale, miss) and what to serve."""
        if not is_hit(stored):
            return MISS, MISSING
        if self.fresh is None:
            return FRESH, stored
        verdict, value = self.fresh.judge(stored)
        return verdict, (MISSING if verdict == MISS else value)

    def judged(
        self,
        cache: BaseCache[Any],
        stored: Any,
        span: trace.Span | None,
        verdict_given: tuple[str, Any] | None = None,
    ) -> tuple[str, Any]:
        """Judge a read (unless the caller already did: XFetch draws once per hit); count a
        served one as a hit and a miss as a miss."""
        fresh = self.fresh
        if verdict_given is not None:
            verdict, value = verdict_given
        elif fresh is None:
            verdict, value = self.served(stored)
        else:
            verdict, value = fresh.judge(stored)  # a tombstone or absent value is a miss too
        if span is not None:
            span.set_attribute("cache.hit", verdict != MISS)
        if verdict == MISS:
            self.stats.miss()
        else:
            self.stats.hit()
            if verdict == STALE:
                self.telemetry.served_stale(cache, span)
        return verdict, value

    @staticmethod
    def _ask(cache: Any, request: LeaseRequest) -> bool | None:
        """The cache's answer to a lease request; ``None`` when it could not answer."""
        try:
            held = cache.lease(request)
        except Exception:
            _log.debug("lease %s failed", request.action, exc_info=True)
            return None
        return None if held is None else bool(held)

    @staticmethod
    async def _aask(cache: Any, request: LeaseRequest) -> bool | None:
        """Async twin of :meth:`_ask`."""
        try:
            held = await cache.alease(request)
        except Exception:
            _log.debug("lease %s failed", request.action, exc_info=True)
            return None
        return None if held is None else bool(held)

    def _replaced(self, stored: Any, seen: Any) -> bool:
        """Whether ``stored`` is newer than ``seen``, the entry a refresh was started for:
        another holder refreshed it already. (Not whether it is fresh: an early refresh is
        started for a fresh entry, and XFetch draws once, on the hit.)"""
        return self.fresh is not None and self.fresh.newer(stored, seen)

    def _refresh_failed(self, cache: Any, trigger: str) -> None:
        # Logged before it is counted: whoever sees the count can find the log line.
        now = time.monotonic()
        if now < self._next_refresh_log:  # counted below; logged at most every 10 s
            self._refresh_logs_skipped += 1
        else:
            self._next_refresh_log = now + _REFRESH_LOG_INTERVAL
            skipped, self._refresh_logs_skipped = self._refresh_logs_skipped, 0
            _log.warning(
                "background %s refresh of %s failed; the served value stays until it expires "
                "(%d similar failures not logged)",
                trigger,
                self.func_name,
                skipped,
                exc_info=True,
            )
        self.telemetry.refreshed(cache, trigger, "error")

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
            return self._answer(
                cache, wrapped, args, kwargs, Target(full_key), stored, None, verdict
            )
        target = self.target(full_key, instance, args, kwargs)
        if span is None:
            return self._answer(
                cache, wrapped, args, kwargs, target, self._get(cache, target), None
            )
        with trace.use_span(span, end_on_exit=True):
            return self._answer(
                cache, wrapped, args, kwargs, target, self._get(cache, target), span
            )

    def _get(self, cache: BaseCache[Any], target: Target) -> Any:
        """The stored content of ``target`` (``MISSING`` if absent or invalidated)."""
        return self.found(cache.get([target.key, *target.tags]), target)

    def _read(self, cache: BaseCache[Any], target: Target) -> Any:
        """The servable value of ``target`` now (stale included), or ``MISSING``."""
        return self.served(self._get(cache, target))[1]

    def _answer(
        self,
        cache: BaseCache[Any],
        wrapped: Callable[..., Any],
        args: Args,
        kwargs: Kwargs,
        target: Target,
        stored: Any,
        span: trace.Span | None,
        verdict_given: tuple[str, Any] | None = None,
    ) -> Any:
        """Serve what was read (refreshing it in the background if due), or compute it."""
        verdict, value = self.judged(cache, stored, span, verdict_given)
        if verdict == MISS:
            return self._single_flight(cache, wrapped, args, kwargs, target, span)
        if verdict != FRESH:
            self._refresh_later(cache, wrapped, args, kwargs, target, stored, verdict, span)
        return value

    def _single_flight(
        self,
        cache: BaseCache[Any],
        wrapped: Callable[..., Any],
        args: Args,
        kwargs: Kwargs,
        target: Target,
        span: trace.Span | None,
    ) -> Any:
        while True:
            flight, leader = self.flights.join(target.key)
            if leader:
                return self._lead(cache, wrapped, args, kwargs, target, flight, span)
            self.telemetry.coalesced(cache, span)
            flight.done.wait()
            if not flight.abandoned:
                return flight.outcome()
            # The leader was interrupted: another waiter may have taken over and finished.
            value = self._read(cache, target)
            if value is not MISSING:
                return value

    def _lead(
        self,
        cache: BaseCache[Any],
        wrapped: Callable[..., Any],
        args: Args,
        kwargs: Kwargs,
        target: Target,
        flight: Flight,
        span: trace.Span | None,
    ) -> Any:
        value: Any = MISSING
        error: BaseException | None = None
        try:
            value = self._obtain(cache, wrapped, args, kwargs, target, span)
            return value
        except BaseException as exc:
            error = exc
            raise
        finally:
            self.flights.land(target.key, flight, value, error)

    def _obtain(
        self,
        cache: BaseCache[Any],
        wrapped: Callable[..., Any],
        args: Args,
        kwargs: Kwargs,
        target: Target,
        span: trace.Span | None,
    ) -> Any:
        """The value of a missing key: computed here, or, under ``lock=True``, by whichever
        caller in the fleet holds the lease (see ``fleet``)."""
        policy = self.leases
        if policy is None:
            return self._load(cache, wrapped, args, kwargs, target)
        if not supports_lease(cache):
            self.telemetry.lease(cache, "unsupported", None, span)
            return self._load(cache, wrapped, args, kwargs, target)
        contention = Contention(policy, target.key)
        wait_span: trace.Span | None = None
        try:
            while True:
                step = contention.answered(self._ask(cache, contention.request))
                if step == LEAD:
                    break
                if step == WAIT:
                    if wait_span is None:
                        wait_span = self.telemetry.child_span("cache.lease.wait", span)
                    pause = contention.pause()
                    if pause is not None:
                        time.sleep(pause)
                        value = self._read(cache, target)
                        if value is MISSING:
                            continue
                        contention.found()
                        self.telemetry.lease(cache, "waited", contention.waited(), span)
                        return value
                # alone: no answer from the cache, or waited past lock_timeout
                self.telemetry.lease(cache, contention.outcome, contention.waited(), span)
                return self._load(cache, wrapped, args, kwargs, target)
        finally:
            if wait_span is not None:
                wait_span.end()
        return self._load_holding(cache, wrapped, args, kwargs, target, contention, span)

    def _load_holding(
        self,
        cache: BaseCache[Any],
        wrapped: Callable[..., Any],
        args: Args,
        kwargs: Kwargs,
        target: Target,
        contention: Contention,
        span: trace.Span | None,
    ) -> Any:
        """Compute while holding the lease (renewed meanwhile), then give it back."""
        request, policy = contention.request, contention.policy
        try:
            # The holder before us may have stored the value just before releasing.
            value = self._read(cache, target)
            if value is not MISSING:
                contention.found()
                self.telemetry.lease(cache, "waited", contention.waited(), span)
                return value
            self.telemetry.lease(cache, contention.outcome, contention.waited(), span)
            renew = partial(self._ask, cache, policy.renew(request))
            stop = RENEWER.hold(renew, policy.renew_every)
            try:
                return self._load(cache, wrapped, args, kwargs, target)
            finally:
                stop()
        finally:
            self._ask(cache, policy.release(request))

    def _tag_versions(self, cache: BaseCache[Any], target: Target) -> list[Any] | None:
        """The versions of a call's tags before it computes (created where none exist yet)."""
        if not target.tags:
            return None
        versions, created = Tagging.completed(cache.get(list(target.tags)), target.tags)
        if created:
            cache.set(created)
        return versions

    def _load(
        self,
        cache: BaseCache[Any],
        wrapped: Callable[..., Any],
        args: Args,
        kwargs: Kwargs,
        target: Target,
    ) -> Any:
        """Compute the result and store it if the policy says so."""
        versions = self._tag_versions(cache, target)
        start = time.perf_counter()
        with self.telemetry.load_timer(cache):
            value = wrapped(*args, **kwargs)
        if self.store.should_store(value):
            delta = time.perf_counter() - start
            cache.set(self.store.pairs(target.key, value, delta, versions))
        return value

    def _refresh_later(
        self,
        cache: BaseCache[Any],
        wrapped: Callable[..., Any],
        args: Args,
        kwargs: Kwargs,
        target: Target,
        seen: Any,
        trigger: str,
        span: trace.Span | None,
    ) -> None:
        """Start one background refresh of ``target`` (unless one runs here already)."""
        if self.refresher.claim(target.key):
            job = partial(
                self._refresh_now, cache, wrapped, args, kwargs, target, seen, trigger, span
            )
            self.refresher.run_in_thread(target.key, job)

    def _refresh_now(
        self,
        cache: BaseCache[Any],
        wrapped: Callable[..., Any],
        args: Args,
        kwargs: Kwargs,
        target: Target,
        seen: Any,
        trigger: str,
        parent: trace.Span | None,
    ) -> None:
        """One background refresh: taken by one process of the fleet (the lease holder)."""
        span = self.telemetry.child_span("cache.refresh", parent, link=True)
        try:
            with trace.use_span(span, end_on_exit=True) if span is not None else _NO_SPAN:
                result = self._refresh_holding(cache, wrapped, args, kwargs, target, seen)
            self.telemetry.refreshed(cache, trigger, result)
        except Exception:
            self._refresh_failed(cache, trigger)

    def _refresh_holding(
        self,
        cache: BaseCache[Any],
        wrapped: Callable[..., Any],
        args: Args,
        kwargs: Kwargs,
        target: Target,
        seen: Any,
    ) -> str:
        policy = self.refresh_leases
        request = policy.acquire(target.key)
        held = self._ask(cache, request) if supports_lease(cache) else None
        if held is False:
            return "skipped"  # another process of the fleet refreshes it
        try:
            if held and self._replaced(self._get(cache, target), seen):
                return "skipped"  # refreshed by the holder before us
            renew = partial(self._ask, cache, policy.renew(request))
            stop = RENEWER.hold(renew, policy.renew_every)
            try:
                self._load(cache, wrapped, args, kwargs, target)
            finally:
                stop()
        finally:
            if held:
                self._ask(cache, policy.release(request))
        return "success"

    def refresh(
        self, wrapped: Callable[..., Any], instance: Any, args: Args, kwargs: Kwargs
    ) -> Any:
        """Recompute a call, store the result and return it."""
        target = self.target(self.full_key(instance, args, kwargs), instance, args, kwargs)
        return self._load(self.backend(), wrapped, args, kwargs, target)

    # -- the async path: the same steps, awaiting the I/O --

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
            return await self._aanswer(
                cache, wrapped, args, kwargs, Target(full_key), stored, None, verdict
            )
        target = self.target(full_key, instance, args, kwargs)
        if span is None:
            stored = await self._aget(cache, target)
            return await self._aanswer(cache, wrapped, args, kwargs, target, stored, None)
        with trace.use_span(span, end_on_exit=True):
            stored = await self._aget(cache, target)
            return await self._aanswer(cache, wrapped, args, kwargs, target, stored, span)

    async def _aget(self, cache: BaseCache[Any], target: Target) -> Any:
        """Async twin of :meth:`_get`."""
        return self.found(await cache.aget([target.key, *target.tags]), target)

    async def _aread(self, cache: BaseCache[Any], target: Target) -> Any:
        """Async twin of :meth:`_read`."""
        return self.served(await self._aget(cache, target))[1]

    async def _aanswer(
        self,
        cache: BaseCache[Any],
        wrapped: Callable[..., Any],
        args: Args,
        kwargs: Kwargs,
        target: Target,
        stored: Any,
        span: trace.Span | None,
        verdict_given: tuple[str, Any] | None = None,
    ) -> Any:
        """Async twin of :meth:`_answer`."""
        verdict, value = self.judged(cache, stored, span, verdict_given)
        if verdict == MISS:
            return await self._asingle_flight(cache, wrapped, args, kwargs, target, span)
        if verdict != FRESH:
            self._arefresh_later(cache, wrapped, args, kwargs, target, stored, verdict, span)
        return value

    async def _asingle_flight(
        self,
        cache: BaseCache[Any],
        wrapped: Callable[..., Any],
        args: Args,
        kwargs: Kwargs,
        target: Target,
        span: trace.Span | None,
    ) -> Any:
        while True:
            flight, leader = self.flights.ajoin(target.key)
            if leader:
                return await self._alead(cache, wrapped, args, kwargs, target, flight, span)
            self.telemetry.coalesced(cache, span)
            await flight.done.wait()  # type: ignore[misc]
            if not flight.abandoned:
                return flight.outcome()
            # The leader was cancelled: another waiter may have taken over and finished.
            value = await self._aread(cache, target)
            if value is not MISSING:
                return value

    async def _alead(
        self,
        cache: BaseCache[Any],
        wrapped: Callable[..., Any],
        args: Args,
        kwargs: Kwargs,
        target: Target,
        flight: Flight,
        span: trace.Span | None,
    ) -> Any:
        value: Any = MISSING
        error: BaseException | None = None
        try:
            value = await self._aobtain(cache, wrapped, args, kwargs, target, span)
            return value
        except BaseException as exc:
            error = exc
            raise
        finally:
            self.flights.aland(target.key, flight, value, error)

    async def _aobtain(
        self,
        cache: BaseCache[Any],
        wrapped: Callable[..., Any],
        args: Args,
        kwargs: Kwargs,
        target: Target,
        span: trace.Span | None,
    ) -> Any:
        """Async twin of :meth:`_obtain`."""
        policy = self.leases
        if policy is None:
            return await self._aload(cache, wrapped, args, kwargs, target)
        if not supports_lease(cache):
            self.telemetry.lease(cache, "unsupported", None, span)
            return await self._aload(cache, wrapped, args, kwargs, target)
        contention = Contention(policy, target.key)
        wait_span: trace.Span | None = None
        try:
            while True:
                step = contention.answered(await self._aask(cache, contention.request))
                if step == LEAD:
                    break
                if step == WAIT:
                    if wait_span is None:
                        wait_span = self.telemetry.child_span("cache.lease.wait", span)
                    pause = contention.pause()
                    if pause is not None:
                        await asyncio.sleep(pause)
                        value = await self._aread(cache, target)
                        if value is MISSING:
                            continue
                        contention.found()
                        self.telemetry.lease(cache, "waited", contention.waited(), span)
                        return value
                self.telemetry.lease(cache, contention.outcome, contention.waited(), span)
                return await self._aload(cache, wrapped, args, kwargs, target)
        finally:
            if wait_span is not None:
                wait_span.end()
        return await self._aload_holding(cache, wrapped, args, kwargs, target, contention, span)

    async def _aload_holding(
        self,
        cache: BaseCache[Any],
        wrapped: Callable[..., Any],
        args: Args,
        kwargs: Kwargs,
        target: Target,
        contention: Contention,
        span: trace.Span | None,
    ) -> Any:
        """Async twin of :meth:`_load_holding`; a task renews the lease meanwhile."""
        request, policy = contention.request, contention.policy
        try:
            value = await self._aread(cache, target)
            if value is not MISSING:
                contention.found()
                self.telemetry.lease(cache, "waited", contention.waited(), span)
                return value
            self.telemetry.lease(cache, contention.outcome, contention.waited(), span)
            return await self._aload_renewing(cache, wrapped, args, kwargs, target, request, policy)
        finally:
            await asyncio.shield(self._aask(cache, policy.release(request)))

    async def _aload_renewing(
        self,
        cache: BaseCache[Any],
        wrapped: Callable[..., Any],
        args: Args,
        kwargs: Kwargs,
        target: Target,
        request: LeaseRequest,
        policy: LeasePolicy,
    ) -> Any:
        renew = partial(self._aask, cache, policy.renew(request))
        renewer = asyncio.get_running_loop().create_task(
            renew_until_cancelled(renew, policy.renew_every)
        )
        try:
            return await self._aload(cache, wrapped, args, kwargs, target)
        finally:
            renewer.cancel()

    async def _atag_versions(self, cache: BaseCache[Any], target: Target) -> list[Any] | None:
        """Async twin of :meth:`_tag_versions`."""
        if not target.tags:
            return None
        versions, created = Tagging.completed(await cache.aget(list(target.tags)), target.tags)
        if created:
            await cache.aset(created)
        return versions

    async def _aload(
        self,
        cache: BaseCache[Any],
        wrapped: Callable[..., Any],
        args: Args,
        kwargs: Kwargs,
        target: Target,
    ) -> Any:
        """Compute the result (awaiting it if a coroutine) and store it if the policy says so."""
        versions = await self._atag_versions(cache, target)
        start = time.perf_counter()
        with self.telemetry.load_timer(cache):
            value = wrapped(*args, **kwargs)
            if self.is_async:
                value = await value
        if self.store.should_store(value):
            delta = time.perf_counter() - start
            await cache.aset(self.store.pairs(target.key, value, delta, versions))
        return value

    def _arefresh_later(
        self,
        cache: BaseCache[Any],
        wrapped: Callable[..., Any],
        args: Args,
        kwargs: Kwargs,
        target: Target,
        seen: Any,
        trigger: str,
        span: trace.Span | None,
    ) -> None:
        """Start one background refresh as a task of this loop (a sync function's runs on
        the refresh threads, where it cannot block the loop)."""
        if not self.is_async:
            self._refresh_later(cache, wrapped, args, kwargs, target, seen, trigger, span)
        elif self.refresher.claim(target.key):
            job = self._arefresh_now(cache, wrapped, args, kwargs, target, seen, trigger, span)
            self.refresher.run_as_task(target.key, job)

    async def _arefresh_now(
        self,
        cache: BaseCache[Any],
        wrapped: Callable[..., Any],
        args: Args,
        kwargs: Kwargs,
        target: Target,
        seen: Any,
        trigger: str,
        parent: trace.Span | None,
    ) -> None:
        """Async twin of :meth:`_refresh_now`."""
        span = self.telemetry.child_span("cache.refresh", parent, link=True)
        try:
            with trace.use_span(span, end_on_exit=True) if span is not None else _NO_SPAN:
                result = await self._arefresh_holding(cache, wrapped, args, kwargs, target, seen)
            self.telemetry.refreshed(cache, trigger, result)
        except Exception:
            self._refresh_failed(cache, trigger)

    async def _arefresh_holding(
        self,
        cache: BaseCache[Any],
        wrapped: Callable[..., Any],
        args: Args,
        kwargs: Kwargs,
        target: Target,
        seen: Any,
    ) -> str:
        policy = self.refresh_leases
        request = policy.acquire(target.key)
        held = await self._aask(cache, request) if supports_lease(cache) else None
        if held is False:
            return "skipped"
        try:
            if held and self._replaced(await self._aget(cache, target), seen):
                return "skipped"  # refreshed by the holder before us
            await self._aload_renewing(cache, wrapped, args, kwargs, target, request, policy)
        finally:
            if held:
                await asyncio.shield(self._aask(cache, policy.release(request)))
        return "success"

    async def arefresh(
        self, wrapped: Callable[..., Any], instance: Any, args: Args, kwargs: Kwargs
    ) -> Any:
        """Recompute a call, store the result (async I/O) and return it."""
        target = self.target(self.full_key(instance, args, kwargs), instance, args, kwargs)
        return await self._aload(self.backend(), wrapped, args, kwargs, target)


_NO_SPAN = contextlib.nullcontext()
