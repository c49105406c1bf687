"""Prometheus metrics for any cache: gets per key, puts, evictions, errors, latency, loads, size."""

from __future__ import annotations

import collections
import os
import weakref
from collections.abc import Awaitable, Callable, Iterable, Iterator, Mapping, Sequence
from time import monotonic, perf_counter
from typing import Any

from opentelemetry.trace import get_current_span
from prometheus_client import REGISTRY, CollectorRegistry, Gauge
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from toolkit._fork import ForkSafeLock
from toolkit._types import (
    EvictionCause,
    EvictionListener,
    FullKey,
    Namespace,
    SupportsEntryCount,
    SupportsEvictionListeners,
    ValueT,
)
from toolkit.base import check_key, check_namespace, is_refusal, key_sequence
from toolkit.middleware.base import (
    OPERATIONS,
    READ_ONCE,
    CacheMiddleware,
    backend_name,
    innermost,
    logger,
    read_once,
)
from toolkit.middleware.labels import ALL_CACHES, INVALID, CacheLabeler, default_cache_label
from toolkit.middleware.otel import ALWAYS, NEVER, TracingSwitch, global_tracing
from toolkit.middleware.recorders import (
    CounterFamily,
    HistogramCell,
    HistogramFamily,
    LockFreeCollector,
    prometheus_counter,
    prometheus_histogram,
)

__all__ = ["DURATION_BUCKETS", "LOAD_BUCKETS", "Metrics", "Recorder"]


DURATION_BUCKETS = (
    0.00001, 0.000025, 0.00005, 0.0001, 0.00025, 0.0005,
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
)  # fmt: skip
"""Operation latency: an in-process hit takes microseconds, a network round trip ~1 ms."""

LOAD_BUCKETS = (
    0.001,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
    30.0,
    60.0,
    120.0,
)
"""Load (compute) time of a decorated function on a miss: milliseconds to minutes (LLM calls)."""

_Exemplar = dict[str, str]
_INF = float("inf")
_NO: Iterator[Any] = iter(())  # no counter yet: Recorder.last before its first get


def current_exemplar() -> _Exemplar | None:
    """The current trace as exemplar labels, when a span is recording."""
    span = get_current_span()
    if not span.is_recording():
        return None
    ctx = span.get_span_context()
    return {"trace_id": format(ctx.trace_id, "032x"), "span_id": format(ctx.span_id, "016x")}


ENTRIES_REFRESH_SECONDS = 1.0
"""Multiprocess mode: how often a write refreshes ``cache_entries`` at most."""


class _EntryCounts(Collector):
    """``cache_entries``, read from every tracked backend at scrape time."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.sources: dict[str, weakref.WeakSet[Any]] = {}

    def track(self, backend: str, cache: SupportsEntryCount) -> None:
        self.sources.setdefault(backend, weakref.WeakSet()).add(cache)

    def _family(self) -> GaugeMetricFamily:
        return GaugeMetricFamily(
            self.name, "Entries stored in the cache backend.", labels=["cache", "backend"]
        )

    def describe(self) -> Iterable[GaugeMetricFamily]:
        return [self._family()]

    def collect(self) -> Iterable[GaugeMetricFamily]:
        family = self._family()
        for backend, caches in list(self.sources.items()):
            live = list(caches)
            if not live:  # every cache of this backend was garbage-collected
                continue
            total = 0
            for cache in live:
                try:
                    total += cache.entry_count()
                except Exception:  # a scrape must not fail because one cache did
                    continue
            family.add_metric([ALL_CACHES, backend], total)
        yield family


class _Families:
    """The metric families of one (registry, prefix), shared by its ``Metrics`` layers.

    Counters and histograms are lock-free (``toolkit.middleware.recorders``), except in
    multiprocess mode, where prometheus-client's classes write the shared mmap files.
    """

    def __init__(self, registry: CollectorRegistry, prefix: str) -> None:
        # Each worker's in-process cache is its own; multiprocess mode sums the live ones.
        self.multiprocess = "PROMETHEUS_MULTIPROC_DIR" in os.environ
        full = (lambda name: f"{prefix}_{name}") if prefix else (lambda name: name)
        lock_free: list[Any] = []

        def counter(name: str, documentation: str, labelnames: list[str]) -> Any:
            if self.multiprocess:
                return prometheus_counter(
                    name=name,
                    documentation=documentation,
                    labelnames=labelnames,
                    namespace=prefix,
                    registry=registry,
                )
            lock_free.append(CounterFamily(full(name), documentation, labelnames))
            return lock_free[-1]

        def histogram(
            name: str, documentation: str, labelnames: list[str], buckets: tuple[float, ...]
        ) -> Any:
            if self.multiprocess:
                return prometheus_histogram(
                    name=name,
                    documentation=documentation,
                    labelnames=labelnames,
                    namespace=prefix,
                    registry=registry,
                    buckets=buckets,
                )
            lock_free.append(HistogramFamily(full(name), documentation, labelnames, buckets))
            return lock_free[-1]

        cache_backend = ["cache", "backend"]
        self.gets = counter("cache_gets", "Cache lookups, one per key.", [*cache_backend, "result"])
        self.puts = counter("cache_puts", "Entries written to the cache.", cache_backend)
        self.evictions = counter(
            "cache_evictions", "Entries the backend dropped on its own.", [*cache_backend, "cause"]
        )
        self.errors = counter(
            "cache_errors",
            "Failed cache operations.",
            [*cache_backend, "operation", "error_type"],
        )
        self.duration = histogram(
            "cache_operation_duration_seconds",
            "Latency of cache operations.",
            ["backend", "operation"],
            DURATION_BUCKETS,
        )
        self.load = histogram(
            "cache_load_duration_seconds",
            "Time to compute a missing value.",
            ["cache", "result"],
            LOAD_BUCKETS,
        )
        self.coalesced = counter(
            "cache_coalesced",
            "Callers that waited for another caller's load of the same key.",
            ["cache"],
        )
        self.leases = counter(
            "cache_leases",
            "How @cached(lock=True) callers got a missing value: acquired the lease and "
            "computed, waited for the holder, timed out, took over, or went without one "
            "(unavailable, unsupported).",
            ["cache", "outcome"],
        )
        self.lease_wait = histogram(
            "cache_lease_wait_seconds",
            "Time a caller waited for another lease holder's computation.",
            ["cache"],
            LOAD_BUCKETS,
        )
        self.stale = counter(
            "cache_stale_served",
            "Stale results served while a background refresh runs (stale_ttl).",
            ["cache"],
        )
        self.refreshes = counter(
            "cache_refreshes",
            "Background refreshes by trigger (stale, early) and result (success, error, "
            "skipped: done elsewhere).",
            ["cache", "trigger", "result"],
        )
        self.tag_invalidations = counter(
            "cache_tag_invalidations",
            "Tags invalidated (toolkit.invalidate_tags): each drops every entry stored with it.",
            ["backend"],
        )
        self.transitions = counter(
            "cache_circuit_breaker_transitions",
            "Circuit breaker state changes, by the state entered (open counts openings).",
            ["backend", "state"],
        )
        if lock_free:
            registry.register(LockFreeCollector(lock_free))
        self.circuit = Gauge(
            "cache_circuit_breaker_state",
            "Circuit breaker state: 0 closed, 1 half-open, 2 open.",
            ["backend"],
            multiprocess_mode="livemax",
            registry=registry,
            namespace=prefix,
        )
        self._evicting: weakref.WeakSet[Any] = weakref.WeakSet()
        self._evicting_lock = ForkSafeLock()
        self._breakers: dict[str, weakref.WeakKeyDictionary[Any, int]] = {}
        self._breakers_lock = ForkSafeLock()
        self.entry_gauge: Gauge | None = None
        self.entry_counts: _EntryCounts | None = None
        if self.multiprocess:
            self.entry_gauge = Gauge(
                "cache_entries",
                "Entries stored in the cache backend.",
                cache_backend,
                multiprocess_mode="livesum",
                registry=registry,
                namespace=prefix,
            )
        else:
            self.entry_counts = _EntryCounts(full("cache_entries"))
            registry.register(self.entry_counts)

    def worst_circuit(self, backend: str, layer: Any, state: int) -> int:
        """Note ``layer``'s breaker ``state``; return the worst state of the live breakers
        reporting under ``backend``: two stacks on one kind of backend share the gauge's
        series, and the last one to report must not hide another's open circuit."""
        with self._breakers_lock:
            states = self._breakers.setdefault(backend, weakref.WeakKeyDictionary())
            states[layer] = state
            return max(states.values())

    def listen_for_evictions(
        self, backend: SupportsEvictionListeners, listener: EvictionListener
    ) -> None:
        """Subscribe ``listener`` to ``backend``'s evictions, unless a layer recording into
        these families already did: an eviction happens once, however many stacks wrap the
        backend (as ``cache_entries`` counts each backend once)."""
        try:
            with self._evicting_lock:
                if backend in self._evicting:
                    return
                self._evicting.add(backend)
        except TypeError:  # a backend that cannot be held weakly or hashed: subscribe each time
            pass
        backend.add_eviction_listener(listener)


_FAMILIES: weakref.WeakKeyDictionary[CollectorRegistry, dict[str, _Families]] = (
    weakref.WeakKeyDictionary()
)
_FAMILIES_LOCK = ForkSafeLock()


def _families(registry: CollectorRegistry, prefix: str) -> _Families:
    with _FAMILIES_LOCK:
        by_prefix = _FAMILIES.setdefault(registry, {})
        if prefix not in by_prefix:
            by_prefix[prefix] = _Families(registry, prefix)
        return by_prefix[prefix]


class _Children:
    """The label children of one namespace, bound once."""

    __slots__ = ("hit", "hit_one", "miss", "miss_one", "put", "put_one")

    def __init__(self, families: _Families, cache: str, backend: str) -> None:
        self.hit = families.gets.labels(cache, backend, "hit")
        self.miss = families.gets.labels(cache, backend, "miss")
        self.put = families.puts.labels(cache, backend)
        # ``next(children.hit_one)``: the lock-free +1 of the one-key hot path.
        self.hit_one = self.hit.one
        self.miss_one = self.miss.one
        self.put_one = self.put.one


def _tally(keys: Iterable[FullKey], result: Mapping[FullKey, Any]) -> dict[Namespace, list[int]]:
    counts: dict[Namespace, list[int]] = {}
    for full_key in keys:
        row = counts.get(full_key[0])
        if row is None:
            row = counts[full_key[0]] = [0, 0]
        row[full_key not in result] += 1
    return counts


def _namespaces(operation: str, arg: Any) -> Iterable[Namespace] | None:
    if operation == "lease":
        return [check_key(arg.key)[0]]
    if operation == "clear":
        return None if arg is None else [check_namespace(ns) for ns in arg]
    return [check_key(full_key)[0] for full_key in arg]


class Recorder:
    """What one bound ``Metrics`` layer records, and how, in a plain object.

    Kept apart from the layer because a middleware's ``__getattr__`` (the forwarding of
    unknown attributes) makes every attribute read on it about three times slower, and the
    hot path reads a dozen.
    """

    __slots__ = (
        "backend",
        "by_label",
        "by_ns",
        "durations",
        "exemplars",
        "families",
        "get_duration",
        "labeler",
        "last",
        "loads",
        "refresh_entries",
    )

    def __init__(
        self, families: _Families, labeler: CacheLabeler, backend: str, exemplars: bool | None
    ) -> None:
        self.families = families
        self.labeler = labeler
        self.backend = backend
        self.by_ns: dict[Namespace, _Children] = {}
        self.by_label: dict[str, _Children] = {}
        # The namespace seen last and its hit and miss counters: a caller (``@cached``)
        # passes the same tuple every call, and an identity test costs less than hashing it.
        self.last: tuple[Namespace | None, Iterator[Any], Iterator[Any]] = (None, _NO, _NO)
        # Whether latencies carry the current trace: as configured, or while a global SDK is.
        self.exemplars = global_tracing() if exemplars is None else (ALWAYS if exemplars else NEVER)
        self.loads: dict[tuple[str, bool], Any] = {}
        self.durations = {op: families.duration.labels(backend, op) for op in OPERATIONS}
        self.get_duration = self.durations["get"]
        self.refresh_entries: Callable[[], None] | None = None

    def exemplar(self) -> _Exemplar | None:
        """The exemplar of an observation now, if exemplars are wanted and a span records."""
        return current_exemplar() if self.exemplars.live else None

    def children(self, ns: Namespace) -> _Children:
        """The counters of ``ns``'s label, bound once."""
        children = self.by_ns.get(ns)
        if children is None:
            label = self.labeler(ns)
            children = self.by_label.get(label)
            if children is None:
                children = self.by_label[label] = _Children(self.families, label, self.backend)
            if len(self.by_ns) < 10_000:
                self.by_ns[ns] = children
        self.last = (ns, children.hit_one, children.miss_one)
        return children

    def got(
        self, keys: Sequence[FullKey], result: Mapping[FullKey, Any], start: float, end: float
    ) -> None:
        """Record a get that answered between ``start`` and ``end`` (``perf_counter``): each
        requested key as a hit or a miss, and its latency.

        One method for the whole record, not one per metric: this runs on every cache hit.
        """
        try:
            if len(keys) == 1:
                ns_seen, hit, miss = self.last
                if ns_seen is not keys[0][0]:
                    children = self.children(keys[0][0])
                    hit, miss = children.hit_one, children.miss_one
                next(hit if result else miss)
            elif keys:
                for ns, (hits, misses) in _tally(keys, result).items():
                    children = self.children(ns)
                    if hits:
                        children.hit.inc(hits)
                    if misses:
                        children.miss.inc(misses)
        except Exception:  # malformed keys a foreign cache accepted: instrumentation never raises
            logger.debug("cache metrics skipped malformed keys", exc_info=True)
        if self.exemplars.live:
            self.get_duration.observe(end - start, current_exemplar())
        else:
            self.get_duration.observe(end - start)

    def count_puts(self, pairs: Mapping[FullKey, Any]) -> None:
        """Count each written entry."""
        if len(pairs) == 1:
            ns = next(iter(pairs))[0]
            next((self.by_ns.get(ns) or self.children(ns)).put_one)
            return
        for ns, count in collections.Counter(full_key[0] for full_key in pairs).items():
            self.children(ns).put.inc(count)

    def time(self, operation: str, elapsed: float) -> None:
        """Observe a call's latency (with the current trace as exemplar, when wanted)."""
        cell = self.durations[operation]
        if self.exemplars.live:
            cell.observe(elapsed, current_exemplar())
        else:
            cell.observe(elapsed)

    def ended(
        self, operation: str, arg: Any, elapsed: float, exc: BaseException | None = None
    ) -> None:
        """Record a finished call: its latency, then its puts or its error."""
        self.time(operation, elapsed)
        if exc is None:
            if operation == "get" or operation == "lease":
                return
            if operation == "set":
                self.count_puts(arg)
            if self.refresh_entries is not None:
                self.refresh_entries()
        elif is_refusal(operation, exc, arg):  # a value left out, not a failure
            for ns in dict.fromkeys(full_key[0] for full_key in arg):
                self.count_eviction(ns, "uncacheable", 1)
        elif isinstance(exc, Exception):  # not cancellation: an outer deadline reports that itself
            try:
                namespaces = list(_namespaces(operation, arg) or ()) or None
            except Exception:  # the error is the caller's malformed input
                namespaces = [(INVALID,)]
            self.count_error(operation, namespaces, type(exc).__name__)

    def count_error(
        self, operation: str, namespaces: Iterable[Namespace] | None, error_type: str
    ) -> None:
        """Count one failed call under each distinct label of its namespaces."""
        errors = self.families.errors
        for label in self.labeler.labels_of(namespaces):
            errors.labels(label, self.backend, operation, error_type).inc()

    def count_eviction(self, ns: Namespace, cause: EvictionCause, count: int) -> None:
        """Count entries the backend dropped on its own."""
        self.families.evictions.labels(self.labeler(ns), self.backend, cause).inc(count)

    def load(self, namespace: Namespace, seconds: float, ok: bool) -> None:
        """Observe a load's duration."""
        label = self.labeler(namespace)
        child = self.loads.get((label, ok))
        if child is None:
            child = self.loads[(label, ok)] = self.families.load.labels(
                label, "success" if ok else "error"
            )
        child.observe(seconds, self.exemplar())


_CIRCUIT_STATES = ("closed", "half_open", "open")


class Metrics(CacheMiddleware[ValueT]):
    """Records the cache metric set (see DESIGN.md "Metrics") into a Prometheus registry.

    ``cache_label`` turns a namespace into the ``cache`` label (default: LangGraph node
    namespaces become the node name); at most ``max_cache_labels`` distinct values are used,
    then ``__overflow__``. Errors are counted as they pass through, so put this layer inside
    ``FailOpen``. Several layers may share one registry: they share its metric families.
    """

    recorder: Recorder
    """What this layer records (set when bound)."""

    adds_read_failures = False  # instrumentation never raises into the caller
    adds_io = False

    _circuit: int | None = None  # the breaker state last reported

    def __init__(
        self,
        inner: Any = None,
        *,
        registry: CollectorRegistry | None = REGISTRY,
        prefix: str = "",
        cache_label: Callable[[Namespace], str] = default_cache_label,
        max_cache_labels: int = 100,
        exemplars: bool | None = None,
    ) -> None:
        """Record into ``registry`` (``None``: the global one, as with ``observe``), metric
        names prefixed with ``prefix_`` when given.

        ``exemplars``: attach the recording span's trace id to latency observations; ``None``
        (default) does so only while a global OpenTelemetry SDK provider is installed.
        """
        if registry is None:
            registry = REGISTRY
        elif not isinstance(registry, CollectorRegistry):
            raise TypeError(
                "registry must be a prometheus_client CollectorRegistry (None: the global "
                f"one), got {type(registry).__name__}"
            )
        if not isinstance(prefix, str):
            raise TypeError(f"prefix must be a str ('' for none), got {type(prefix).__name__}")
        self._exemplars = exemplars
        self._families = _families(registry, prefix)
        self._labeler = CacheLabeler(cache_label, max_cache_labels)
        super().__init__(inner)

    def _on_bind(self) -> None:
        families = self._families
        self.backend = backend = backend_name(self.inner)
        self.recorder = recorder = Recorder(families, self._labeler, backend, self._exemplars)
        bottom = innermost(self.inner)
        if isinstance(bottom, SupportsEvictionListeners):
            families.listen_for_evictions(bottom, recorder.count_eviction)
        if isinstance(bottom, SupportsEntryCount):
            if families.entry_counts is not None:
                families.entry_counts.track(backend, bottom)
            elif families.entry_gauge is not None:
                recorder.refresh_entries = self._entry_refresher(
                    families.entry_gauge.labels(ALL_CACHES, backend), bottom
                )

    @staticmethod
    def _entry_refresher(child: Any, bottom: SupportsEntryCount) -> Callable[[], None]:
        """The multiprocess ``cache_entries`` refresh run after a write: at most once per
        ``ENTRIES_REFRESH_SECONDS``, as a count is a scan (SQLite, PostgreSQL ``count(*)``)
        that must not ride on every write, nor on every async one's event loop."""
        due = 0.0

        def refresh() -> None:
            nonlocal due
            now = monotonic()
            if now < due:
                return
            due = now + ENTRIES_REFRESH_SECONDS  # racing writers: at worst two counts
            try:
                child.set(bottom.entry_count())
            except Exception:  # a count that fails must not fail the write it follows
                logger.debug("cache_entries not refreshed: counting failed", exc_info=True)

        return refresh

    def _recomposers(self) -> tuple[TracingSwitch, ...]:
        # Exemplars off now: the sync get records a quick hit without asking for a span
        # until a tracing SDK turns them on.
        switch = self.recorder.exemplars
        return () if switch.live or switch is NEVER else (switch,)

    def wrap_sync(self, operation: str, call: Callable[..., Any]) -> Callable[..., Any]:
        """Time one sync operation; count a get's hits and misses, a set's puts, an error."""
        recorder, clock = self.recorder, perf_counter
        ended, got = recorder.ended, recorder.got
        if operation == "get":
            duration = recorder.get_duration
            # The common get of an in-process cache (one key, of the namespace seen last,
            # answered within the first latency bucket) is recorded in this frame, as
            # ``got`` and ``HistogramCell.observe`` record it: their two calls cost ~100 ns,
            # a tenth of such a get. Anything else, exemplars included, goes through ``got``.
            quick = isinstance(duration, HistogramCell) and not recorder.exemplars.live
            first = duration.first if quick else -_INF
            first_bucket: Iterator[Any] = duration.first_bucket if quick else _NO

            def measured_get(keys: Any) -> Any:
                start = clock()
                try:
                    if type(keys) is not list:  # read a one-shot iterable once, to count it
                        keys = key_sequence(keys)
                    result = call(keys)
                except BaseException as exc:
                    ended("get", keys, clock() - start, exc)
                    raise
                elapsed = clock() - start
                if elapsed <= first and len(keys) == 1:
                    try:
                        ns_seen, hit, miss = recorder.last
                        quick_hit = ns_seen is keys[0][0]
                    except Exception:  # a malformed key a foreign cache accepted: see got()
                        quick_hit = False
                    if quick_hit:
                        next(hit if result else miss)
                        next(first_bucket)
                        duration.sum += elapsed  # HistogramCell's documented race
                        return result
                got(keys, result, start, start + elapsed)
                return result

            return measured_get

        reads = operation in READ_ONCE  # a failure's namespaces are read after the call

        def measured(arg: Any = None) -> Any:
            start = clock()
            try:
                if reads and type(arg) is not list:
                    arg = read_once(arg)
                result = call(arg)
            except BaseException as exc:
                ended(operation, arg, clock() - start, exc)
                raise
            ended(operation, arg, clock() - start)
            return result

        return measured

    def wrap_async(
        self, operation: str, call: Callable[..., Awaitable[Any]]
    ) -> Callable[..., Awaitable[Any]]:
        """The async twin of :meth:`wrap_sync`."""
        recorder, clock = self.recorder, perf_counter
        ended, got = recorder.ended, recorder.got
        if operation == "get":

            async def measured_get(keys: Any) -> Any:
                start = clock()
                try:
                    if type(keys) is not list:
                        keys = key_sequence(keys)
                    result = await call(keys)
                except BaseException as exc:
                    ended("get", keys, clock() - start, exc)
                    raise
                got(keys, result, start, clock())
                return result

            return measured_get

        reads = operation in READ_ONCE  # a failure's namespaces are read after the call

        async def measured(arg: Any = None) -> Any:
            start = clock()
            try:
                if reads and type(arg) is not list:
                    arg = read_once(arg)
                result = await call(arg)
            except BaseException as exc:
                ended(operation, arg, clock() - start, exc)
                raise
            ended(operation, arg, clock() - start)
            return result

        return measured

    def record_load(self, namespace: Namespace, seconds: float, *, ok: bool) -> None:
        """Observe a load into ``cache_load_duration_seconds``, then forward."""
        self.recorder.load(namespace, seconds, ok)
        super().record_load(namespace, seconds, ok=ok)

    def record_coalesced(self, namespace: Namespace) -> None:
        """Count a coalesced wait into ``cache_coalesced_total``, then forward."""
        self._families.coalesced.labels(self._labeler(namespace)).inc()
        super().record_coalesced(namespace)

    def record_lease(self, namespace: Namespace, outcome: str, waited: float | None) -> None:
        """Count a lease outcome into ``cache_leases_total`` (and the wait), then forward."""
        label = self._labeler(namespace)
        self._families.leases.labels(label, outcome).inc()
        if waited is not None:
            self._families.lease_wait.labels(label).observe(waited, self.recorder.exemplar())
        super().record_lease(namespace, outcome, waited)

    def record_stale(self, namespace: Namespace) -> None:
        """Count a stale result served into ``cache_stale_served_total``, then forward."""
        self._families.stale.labels(self._labeler(namespace)).inc()
        super().record_stale(namespace)

    def record_refresh(self, namespace: Namespace, trigger: str, result: str) -> None:
        """Count a background refresh into ``cache_refreshes_total``, then forward."""
        self._families.refreshes.labels(self._labeler(namespace), trigger, result).inc()
        super().record_refresh(namespace, trigger, result)

    def record_tag_invalidations(self, count: int) -> None:
        """Count invalidated tags into ``cache_tag_invalidations_total``, then forward."""
        self._families.tag_invalidations.labels(self.backend).inc(count)
        super().record_tag_invalidations(count)

    def record_error(
        self, operation: str, namespaces: Sequence[Namespace] | None, error_type: str
    ) -> None:
        """Count an error an outer layer raised (a deadline, an open circuit), then forward."""
        self.recorder.count_error(operation, namespaces, error_type)
        super().record_error(operation, namespaces, error_type)

    def record_circuit_state(self, state: int) -> None:
        """Export the circuit breaker state as ``cache_circuit_breaker_state``, then forward."""
        families = self._families
        families.circuit.labels(self.backend).set(families.worst_circuit(self.backend, self, state))
        previous, self._circuit = self._circuit, state
        if previous is None:  # every series exists from the start, so increase() sees the first
            for name in _CIRCUIT_STATES:
                families.transitions.labels(self.backend, name)
        elif previous != state:
            families.transitions.labels(self.backend, _CIRCUIT_STATES[state]).inc()
        super().record_circuit_state(state)
