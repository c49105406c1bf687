"""Lock-free counters and histograms, exposed as the metric families prometheus-client would.

prometheus-client takes a lock per increment and scans histogram buckets linearly: about
0.6 µs per cache hit, as much as the hit itself. Here a ``+1`` is ``next()`` on an
``itertools.count`` (one C call, atomic under the GIL), a histogram observation is a
``bisect`` plus a ``next()`` on that bucket's count, and a collector registered on the
registry yields the same families (names, types, labels, ``_bucket``/``_count``/``_sum``/
``_created`` samples, exemplars) at scrape time.

Exact under threads: every count and bucket. Not guarded: a histogram's ``_sum`` is one
``+=`` on a float, so two threads adding at the same instant can lose one duration from the
sum (never a count). In ``PROMETHEUS_MULTIPROC_DIR`` mode, where values must land in the
mmap files, the families are prometheus-client's own classes behind the same interface.
"""

from __future__ import annotations

import itertools
import time
from bisect import bisect_left
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any

from prometheus_client import Counter, Histogram
from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector
from prometheus_client.samples import Exemplar
from prometheus_client.utils import floatToGoString

from toolkit._fork import ForkSafeLock

__all__ = [
    "CounterCell",
    "CounterFamily",
    "HistogramCell",
    "HistogramFamily",
    "LockFreeCollector",
    "count_of",
    "created_series_enabled",
    "prometheus_counter",
    "prometheus_histogram",
]

_INF = float("inf")


_go_float: Callable[[float], str] = floatToGoString  # untyped upstream


def count_of(counter: Iterator[Any]) -> int:
    """How many times ``next`` was called on ``counter``, an ``itertools.count()`` (read
    without advancing it)."""
    return int(repr(counter)[6:-1])  # "count(42)": the only read-only view that lasts


def created_series_enabled() -> bool:
    """Whether prometheus-client exposes ``_created`` samples now (its
    ``disable_created_metrics()`` turns them off): asked of a throwaway counter through its
    public ``collect()``, as prometheus-client keeps the switch to itself."""
    probe = Counter("toolkit_created_probe", "Probe.", registry=None)
    (family,) = probe.collect()
    return any(sample.name.endswith("_created") for sample in family.samples)


class CounterCell:
    """One label set of a counter: ``next(cell.one)`` adds 1 without a lock; ``inc(n)`` adds n."""

    __slots__ = ("_lock", "_more", "created", "one")

    def __init__(self) -> None:
        self.one: Iterator[Any] = itertools.count()
        self._more = 0.0
        self._lock = ForkSafeLock()
        self.created = time.time()

    def inc(self, amount: float = 1) -> None:
        """Add ``amount`` (>= 0)."""
        if amount == 1:
            next(self.one)
        elif amount < 0:
            raise ValueError("Counters can only be incremented by non-negative amounts.")
        else:
            with self._lock:  # batch steps are rare: one per namespace of a batch
                self._more += amount

    def value(self) -> float:
        """The current total."""
        return count_of(self.one) + self._more

    def samples(
        self, created: bool = True
    ) -> Iterator[tuple[str, dict[str, str], float, Exemplar | None]]:
        """The ``_total`` sample, and ``_created`` when ``created``."""
        yield "_total", {}, float(self.value()), None
        if created:
            yield "_created", {}, self.created, None


class HistogramCell:
    """One label set of a histogram: per-bucket counts (not cumulative), a sum, exemplars."""

    __slots__ = ("bounds", "buckets", "created", "exemplars", "first", "first_bucket", "sum")

    def __init__(self, bounds: Sequence[float]) -> None:
        self.bounds = tuple(bounds)  # finite upper bounds; the last bucket is +Inf
        self.first = self.bounds[0]
        self.buckets: list[Iterator[Any]] = [itertools.count() for _ in range(len(bounds) + 1)]
        self.first_bucket = self.buckets[0]
        self.exemplars: list[Exemplar | None] = [None] * (len(bounds) + 1)
        self.sum = 0.0
        self.created = time.time()

    def observe(self, amount: float, exemplar: dict[str, str] | None = None) -> None:
        """Record one observation (``exemplar``: trace labels for its bucket)."""
        if amount <= self.first:  # the common case of an in-process hit: bucket 0
            next(self.first_bucket)
            self.sum += amount
            if exemplar:
                self.exemplars[0] = Exemplar(exemplar, amount, time.time())
            return
        if amount == amount:
            index = bisect_left(self.bounds, amount)
        else:  # NaN falls in no bucket, as with prometheus-client; it still poisons the sum
            self.sum += amount
            return
        next(self.buckets[index])
        self.sum += amount  # the documented race: see the module docstring
        if exemplar:
            self.exemplars[index] = Exemplar(exemplar, amount, time.time())

    def samples(
        self, created: bool = True
    ) -> Iterator[tuple[str, dict[str, str], float, Exemplar | None]]:
        """The ``_bucket``, ``_count`` and ``_sum`` samples, and ``_created`` when ``created``."""
        # Read the sum first: an observation racing the scrape then shows in the counts
        # at worst, so the sum never runs ahead of the counts.
        total_sum = self.sum
        acc = 0.0
        for index, bucket in enumerate(self.buckets):
            acc += count_of(bucket)
            bound = self.bounds[index] if index < len(self.bounds) else _INF
            yield "_bucket", {"le": _go_float(bound)}, acc, self.exemplars[index]
        yield "_count", {}, acc, None
        if self.first >= 0:
            yield "_sum", {}, total_sum, None
        if created:
            yield "_created", {}, self.created, None


class _Family:
    """A metric family: its label sets, each bound once to a cell."""

    kind = ""

    def __init__(self, name: str, documentation: str, labelnames: Sequence[str]) -> None:
        self.name = name
        self.documentation = documentation
        self.labelnames = tuple(labelnames)
        self._cells: dict[tuple[str, ...], Any] = {}
        self._lock = ForkSafeLock()

    def _new_cell(self) -> Any:
        raise NotImplementedError

    def labels(self, *values: str) -> Any:
        """The cell of one label set, created on first use."""
        cell = self._cells.get(values)
        if cell is None:
            if len(values) != len(self.labelnames):
                raise ValueError(f"{self.name} takes labels {self.labelnames}, got {values!r}")
            with self._lock:
                cell = self._cells.get(values)
                if cell is None:
                    cell = self._cells[values] = self._new_cell()
        return cell

    def metric(self) -> Metric:
        """The family with no samples (what ``describe`` reports)."""
        return Metric(self.name, self.documentation, self.kind)

    def collect(self, created: bool | None = None) -> Metric:
        """The family with every label set's samples (``_created`` ones as prometheus-client
        shows them now, unless ``created`` says)."""
        if created is None:
            created = created_series_enabled()
        metric = self.metric()
        base = metric.name
        for values, cell in list(self._cells.items()):
            labels = dict(zip(self.labelnames, values, strict=True))
            for suffix, extra, value, exemplar in cell.samples(created):
                metric.add_sample(base + suffix, {**labels, **extra}, value, None, exemplar)
        return metric


class CounterFamily(_Family):
    """A counter family of :class:`CounterCell` (``name_total``, ``name_created``)."""

    kind = "counter"

    def _new_cell(self) -> CounterCell:
        return CounterCell()


class HistogramFamily(_Family):
    """A histogram family of :class:`HistogramCell` sharing one set of bucket bounds."""

    kind = "histogram"

    def __init__(
        self, name: str, documentation: str, labelnames: Sequence[str], buckets: Sequence[float]
    ) -> None:
        super().__init__(name, documentation, labelnames)
        bounds = [float(b) for b in buckets if float(b) != _INF]
        if bounds != sorted(bounds) or not bounds:
            raise ValueError(f"buckets must be sorted and finite, got {buckets!r}")
        self.bounds = tuple(bounds)

    def _new_cell(self) -> HistogramCell:
        return HistogramCell(self.bounds)


class LockFreeCollector(Collector):
    """Exposes a set of lock-free families through a registry."""

    def __init__(self, families: Iterable[_Family]) -> None:
        self.families = list(families)

    def describe(self) -> Iterable[Metric]:
        return [family.metric() for family in self.families]

    def collect(self) -> Iterable[Metric]:
        created = created_series_enabled()
        return [family.collect(created) for family in self.families]


# -- multiprocess mode: prometheus-client's classes (they write the mmap files) behind the
# -- same interface (``labels(...)`` returns a cell with ``one``, ``inc`` and ``observe``).


class _Tick:
    """``next(tick)`` increments a prometheus-client counter child by one."""

    __slots__ = ("_inc",)

    def __init__(self, inc: Callable[[], None]) -> None:
        self._inc = inc

    def __iter__(self) -> _Tick:
        return self

    def __next__(self) -> None:
        self._inc()


class _PrometheusCounterCell:
    __slots__ = ("inc", "one")

    def __init__(self, child: Any) -> None:
        self.inc = child.inc
        self.one = _Tick(child.inc)


class _PrometheusFamily:
    def __init__(self, metric: Any, wrap: Callable[[Any], Any]) -> None:
        self._metric = metric
        self._wrap = wrap
        self._cells: dict[tuple[str, ...], Any] = {}
        self._lock = ForkSafeLock()

    def labels(self, *values: str) -> Any:
        cell = self._cells.get(values)
        if cell is None:
            with self._lock:
                cell = self._cells.get(values)
                if cell is None:
                    cell = self._cells[values] = self._wrap(self._metric.labels(*values))
        return cell


def prometheus_counter(**kwargs: Any) -> Any:
    """A prometheus-client ``Counter`` whose cells look like :class:`CounterCell`."""
    return _PrometheusFamily(Counter(**kwargs), _PrometheusCounterCell)


def prometheus_histogram(**kwargs: Any) -> Any:
    """A prometheus-client ``Histogram`` (its children already have ``observe``)."""
    return _PrometheusFamily(Histogram(**kwargs), lambda child: child)
