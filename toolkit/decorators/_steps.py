"""The decisions of a call past a fresh hit, written once for the sync and the async path.

Each step is a generator that yields the I/O it needs (``_requests``) and is driven by one
of the runners of ``_run``. The rooms it draws on: ``_entry`` (the stored form),
``freshness`` (stale and early verdicts), ``flight`` (one computation per key in this
process), ``fleet`` (one per key in the fleet, ``lock=True``), ``_refresh`` (background
refreshes), ``tags`` (versions) and ``_telemetry`` (spans and counters).
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import Any, NamedTuple

from opentelemetry import trace

from toolkit._types import FullKey
from toolkit.base import BaseCache
from toolkit.decorators._entry import (
    MISSING,
    Shared,
    StorePolicy,
    check_reusable,
    is_hit,
    tombstone,
)
from toolkit.decorators._refresh import Refresher
from toolkit.decorators._requests import (
    Ask,
    Await,
    Background,
    Compute,
    Join,
    Read,
    Release,
    Renew,
    Settle,
    Sleep,
    Step,
    T,
    Write,
)
from toolkit.decorators._telemetry import Telemetry
from toolkit.decorators.fleet import (
    DEFAULT_LEASE_TTL,
    DEFAULT_LOCK_TIMEOUT,
    LEAD,
    WAIT,
    Contention,
    LeasePolicy,
)
from toolkit.decorators.flight import Flight, Flights
from toolkit.decorators.freshness import FRESH, MISS, STALE, Freshness
from toolkit.decorators.tags import Tagging
from toolkit.lease import LeaseRequest
from toolkit.middleware.base import supports_lease

_log = logging.getLogger("toolkit.decorators")
_REFRESH_LOG_INTERVAL = 10.0
_NO_SPAN = contextlib.nullcontext()


class Target(NamedTuple):
    """The keys one call reads: its entry, and its tags' versions (none without tags)."""

    key: FullKey
    tags: tuple[FullKey, ...] = ()

    def keys(self) -> list[FullKey]:
        """The entry's key and its tags' keys, read in one batch."""
        return [self.key, *self.tags]


@dataclass(slots=True)
class Call:
    """One call on its way to a value: the cache, the function, its arguments and keys."""

    cache: BaseCache[Any]
    wrapped: Callable[..., Any]
    args: tuple[Any, ...]
    kwargs: dict[str, Any]
    target: Target
    versions: list[Any] | None = None
    """The tag versions its computation ran under, once it computed."""


class Steps:
    """The decisions of one decorated function's calls past a fresh hit, as steps (``Cached``,
    a subclass, adds the entry points that serve the hit and run the steps)."""

    def __init__(
        self,
        *,
        func_name: str,
        store: StorePolicy,
        telemetry: Telemetry,
        flights: Flights,
        refresher: Refresher,
        fresh: Freshness | None,
        leases: LeasePolicy | None,
    ) -> None:
        self.func_name = func_name
        self.store = store
        self.telemetry = telemetry
        self.stats = telemetry.stats
        self.flights = flights
        self.refresher = refresher
        self.fresh = fresh
        self.leases = leases
        # Background refreshes take a lease where the cache has them, lock=True or not.
        self.refresh_leases = leases or LeasePolicy(DEFAULT_LEASE_TTL, DEFAULT_LOCK_TIMEOUT)
        self._next_refresh_log = 0.0
        self._refresh_logs_skipped = 0

    # -- judging a read (no I/O) --

    @staticmethod
    def found(read: dict[FullKey, Any], target: Target) -> Any:
        """The stored content of ``target`` in a batch read: ``MISSING`` if absent, or if a
        tag was invalidated since it was stored."""
        stored = read.get(target.key, MISSING)
        if not target.tags:
            return stored
        fresh, content = Tagging.check(stored, Tagging.versions(read, target.tags))
        return content if fresh else MISSING

    def served(self, stored: Any) -> tuple[str, Any]:
        """The verdict on a value read back (fresh, early, stale, miss) and what to serve."""
        fresh = self.fresh
        if fresh is None:
            return (FRESH, stored) if is_hit(stored) else (MISS, MISSING)
        judged = fresh.judge(stored)  # absent or a tombstone: no envelope, a miss
        return judged if judged[0] is not MISS else (MISS, MISSING)

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

    # -- the steps --

    def answer(
        self, call: Call, seen: Any, verdict: str, value: Any, span: trace.Span | None
    ) -> Step[Any]:
        """The steps past a read that was no fresh hit: compute a miss once, or serve a stale
        or early value."""
        if verdict == MISS:
            return self.single_flight(call, span)
        return self.serve(call, seen, verdict, value, span)

    def serve(
        self, call: Call, seen: Any, trigger: str, value: Any, span: trace.Span | None
    ) -> Step[Any]:
        """Serve a stale or early value, starting one background refresh of it (unless one
        runs here already)."""
        key = call.target.key
        if self.refresher.claim(key):
            yield Background(key, self.refresh_now(call, seen, trigger, span))
        return value

    def get(self, call: Call) -> Step[Any]:
        """The stored content of the call's entry (``MISSING`` if absent or invalidated)."""
        return self.found((yield Read(call.target.keys())), call.target)

    def read(self, call: Call) -> Step[Any]:
        """The servable value of the call's entry now (stale included), or ``MISSING``."""
        return self.served((yield from self.get(call)))[1]

    def single_flight(self, call: Call, span: trace.Span | None) -> Step[Any]:
        """The value of a missing key, computed by one caller of this thread or loop."""
        while True:
            flight, leader = yield Join(call.target.key, call.target.tags)
            if leader:
                return (yield from self.lead(call, flight, span))
            self.telemetry.coalesced(call.cache, span)
            yield Await(flight)
            if not flight.abandoned:
                if flight.versions is not None and flight.error is None:
                    # Another process's invalidation of a tag does not detach this flight:
                    # its result is handed over only if its tags' versions still hold.
                    read = yield Read(list(call.target.tags))
                    if Tagging.versions(read, call.target.tags) != flight.versions:
                        continue
                outcome = flight.outcome()
                return outcome.copy() if type(outcome) is Shared else outcome
            # The leader was interrupted or cancelled: another waiter may have taken over.
            value = yield from self.read(call)
            if value is not MISSING:
                return value

    def lead(self, call: Call, flight: Flight, span: trace.Span | None) -> Step[Any]:
        """Obtain the value for the flight's waiters, and hand it (or the error) to them."""
        value: Any = MISSING
        error: BaseException | None = None
        try:
            if flight.nested:  # inside its own key's computation, which holds any lease
                value = yield from self.load(call)
            else:
                value = yield from self.obtain(call, span)
            return value
        except BaseException as exc:
            error = exc
            raise
        finally:
            flight.versions = call.versions
            self.flights.land(flight, value, error, partial(Shared, call.cache))

    def obtain(self, call: Call, span: trace.Span | None) -> Step[Any]:
        """The value of a missing key: computed here, or, under ``lock=True``, by whichever
        caller in the fleet holds the lease (see ``fleet``)."""
        if self.leases is None:
            return self.load(call)
        return self.contend(call, self.leases, span)

    def contend(self, call: Call, policy: LeasePolicy, span: trace.Span | None) -> Step[Any]:
        """The value of a missing key under ``lock=True``: computed by the lease holder."""
        cache = call.cache
        if not supports_lease(cache):
            self.telemetry.lease(cache, "unsupported", None, span)
            return (yield from self.load(call))
        contention = Contention(policy, call.target.key)
        wait_span: trace.Span | None = None
        try:
            while True:
                step = contention.answered((yield from self.acquire(contention.request, policy)))
                if step == LEAD:
                    break
                if step == WAIT:
                    if wait_span is None:
                        wait_span = self.telemetry.child_span("cache.lease.wait", span)
                    pause = contention.pause()
                    if pause is not None:
                        yield Sleep(pause)
                        value = yield from self.read(call)
                        if value is MISSING:
                            continue
                        contention.found()
                        self.telemetry.lease(cache, "waited", contention.waited(), span)
                        return value
                # alone: no answer from the cache, or waited past lock_timeout
                self.telemetry.lease(cache, contention.outcome, contention.waited(), span)
                return (yield from self.load(call))
        finally:
            if wait_span is not None:
                wait_span.end()
        return (yield from self.load_holding(call, contention, span))

    @staticmethod
    def acquire(request: LeaseRequest, policy: LeasePolicy) -> Step[bool | None]:
        """Ask for the lease of ``request``: held, refused, or ``None`` (no answer). A caller
        interrupted (cancelled) while the request is on its way may have been granted it, its
        answer lost: it gives the lease back on the way out (by its token, a no-op if not
        granted) instead of leaving it held for ``lease_ttl`` while the rest of the fleet waits
        for, or skips, a computation nobody runs."""
        try:
            held: bool | None = yield Ask(request)
        except GeneratorExit:  # closed, never to run again: no more I/O
            raise
        except BaseException:
            yield Release(policy.release(request))
            raise
        return held

    def load_holding(
        self, call: Call, contention: Contention, span: trace.Span | None
    ) -> Step[Any]:
        """Compute while holding the lease (renewed meanwhile), then give it back."""
        held = self._load_held(call, contention, span)
        return (yield from self.holding(contention.request, contention.policy, held))

    def _load_held(self, call: Call, contention: Contention, span: trace.Span | None) -> Step[Any]:
        # The holder before us may have stored the value just before releasing.
        value = yield from self.read(call)
        if value is not MISSING:
            contention.found()
            self.telemetry.lease(call.cache, "waited", contention.waited(), span)
            return value
        self.telemetry.lease(call.cache, contention.outcome, contention.waited(), span)
        return (yield from self.load_renewing(call, contention.request, contention.policy))

    @staticmethod
    def holding(request: LeaseRequest, policy: LeasePolicy, steps: Step[T]) -> Step[T]:
        """Run ``steps`` holding the lease of ``request``, then give it back, whatever they
        raise (a cancelled caller too). Not when closed unfinished (a coroutine collected
        after its loop was closed): no I/O can run then, and the lease lapses by itself."""
        try:
            result = yield from steps
        except GeneratorExit:
            raise
        except BaseException:
            yield Release(policy.release(request))
            raise
        yield Release(policy.release(request))
        return result

    def load_renewing(self, call: Call, request: LeaseRequest, policy: LeasePolicy) -> Step[Any]:
        """Compute and store the result while the lease of ``request`` is renewed."""
        stop = yield Renew(policy.renew(request), policy.renew_every)
        try:
            return (yield from self.load(call))
        finally:
            stop()

    def tag_versions(self, call: Call) -> Step[list[Any]]:
        """The versions of a call's tags before it computes (created where none exist yet)."""
        tags = call.target.tags
        versions, created = Tagging.completed((yield Read(list(tags))), tags)
        if created:
            yield Write(created)
        return versions

    def load(self, call: Call, *, supersede: bool = False) -> Step[Any]:
        """Compute the result and store it if the policy says so, and unless the key was
        invalidated in this process meanwhile (the result may predate what it forgot), or
        force-refreshed by a computation that began later. ``supersede`` (a forced refresh):
        once computed, void the computations of the key that began before this one."""
        key = call.target.key
        load = self.flights.begin_load(key)
        try:
            versions = (yield from self.tag_versions(call)) if call.target.tags else None
            call.versions = versions
            start = time.perf_counter()
            with self.telemetry.load_timer(call.cache):
                value = yield Compute(call.wrapped, call.args, call.kwargs)
            check_reusable(self.func_name, value)
            if supersede:
                overtaken = self.flights.supersede(load)
                if overtaken:  # their writes must land (and be forgotten) before ours
                    yield Settle(overtaken)
            if not self.store.should_store(value):
                if supersede and load.superseded_by is None:
                    # A forced refresh whose value is not stored still replaces the entry:
                    # the older value must not be served after it, as if never refreshed.
                    yield Write(tombstone(key))
            elif self.flights.start_store(load):
                delta = time.perf_counter() - start
                yield Write(self.store.pairs(key, value, delta, versions), load)
                # The invalidation's delete (or the forced refresh's write) may have landed
                # before this write.
                if load.voided():
                    yield Write(tombstone(key))
            elif supersede:
                later = load.superseded_by
                if later is None:
                    # Voided by an invalidation still under way: the entry from before it
                    # must not be served once it returns, as if never refreshed.
                    yield Write(tombstone(key))
                else:
                    # Voided by a later forced refresh: return once that one stored its
                    # value, as until then the entry from before both is what callers get.
                    yield Settle([later])
            return value
        finally:
            self.flights.end_load(load)

    def reload(self, call: Call) -> Step[Any]:
        """A forced refresh (``f.refresh``): compute and store the result, superseding the
        computations of the key that began before it in this process (``Flights.supersede``):
        a background refresh or a miss landing after it would otherwise overwrite its newer
        value with an older one."""
        return (yield from self.load(call, supersede=True))

    def refresh_now(
        self, call: Call, seen: Any, trigger: str, parent: trace.Span | None
    ) -> Step[None]:
        """One background refresh: taken by one process of the fleet (the lease holder)."""
        span = self.telemetry.child_span("cache.refresh", parent, link=True)
        try:
            with trace.use_span(span, end_on_exit=True) if span is not None else _NO_SPAN:
                result = yield from self.refresh_holding(call, seen)
            self.telemetry.refreshed(call.cache, trigger, result)
        except Exception:
            self._refresh_failed(call.cache, trigger)

    def refresh_holding(self, call: Call, seen: Any) -> Step[str]:
        """Recompute ``seen``'s entry unless another holder refreshes it: how it ended."""
        policy = self.refresh_leases
        request = policy.acquire(call.target.key)
        held = (yield from self.acquire(request, policy)) if supports_lease(call.cache) else None
        if held is False:
            return "skipped"  # another process of the fleet refreshes it
        if held:
            refreshing = self._refresh_held(call, seen, request)
            return (yield from self.holding(request, policy, refreshing))
        yield from self.load_renewing(call, request, policy)
        return "success"

    def _refresh_held(self, call: Call, seen: Any, request: LeaseRequest) -> Step[str]:
        if self._replaced((yield from self.get(call)), seen):
            return "skipped"  # refreshed by the holder before us
        yield from self.load_renewing(call, request, self.refresh_leases)
        return "success"

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
