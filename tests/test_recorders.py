"""The lock-free recorders expose exactly what prometheus-client's own classes would."""

from __future__ import annotations

import re
import sys
import threading
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from prometheus_client import (
    CollectorRegistry,
    Counter,
    Histogram,
    disable_created_metrics,
    enable_created_metrics,
    generate_latest,
)
from prometheus_client.openmetrics.exposition import generate_latest as generate_openmetrics

from toolkit import InMemoryCache, observe
from toolkit.middleware.metrics import DURATION_BUCKETS
from toolkit.middleware.recorders import CounterFamily, HistogramFamily, LockFreeCollector

BUCKETS = (0.001, 0.01, 0.1, 1.0)
EXEMPLAR = {"trace_id": "0" * 31 + "1", "span_id": "0" * 15 + "2"}
# Bucket bounds themselves (le is inclusive), both sides of each, beyond the last, zero.
AMOUNTS = [0.0, 0.0005, 0.001, 0.0011, 0.01, 0.05, 0.1, 1.0, 1.5, 250.0, -1.0]


def play(counter: Any, histogram: Any) -> None:
    """One sequence of increments and observations, written against either implementation."""
    counter.labels("users", "memory", "hit").inc()
    counter.labels("users", "memory", "hit").inc(3)
    counter.labels("users", "memory", "miss").inc()
    counter.labels("orders", "redis", "hit").inc(2.5)
    counter.labels("empty", "memory", "hit")  # a label set that never counts still shows
    for index, amount in enumerate(AMOUNTS):
        histogram.labels("memory", "get").observe(amount, EXEMPLAR if index % 3 == 0 else None)
    histogram.labels("redis", "set").observe(0.02)
    histogram.labels("redis", "clear")


def ours(registry: CollectorRegistry) -> tuple[Any, Any]:
    counter = CounterFamily("app_cache_gets", "Cache lookups.", ["cache", "backend", "result"])
    histogram = HistogramFamily("app_latency_seconds", "Latency.", ["backend", "op"], BUCKETS)
    registry.register(LockFreeCollector([counter, histogram]))
    return counter, histogram


def theirs(registry: CollectorRegistry) -> tuple[Any, Any]:
    counter = Counter(
        "cache_gets",
        "Cache lookups.",
        ["cache", "backend", "result"],
        namespace="app",
        registry=registry,
    )
    histogram = Histogram(
        "app_latency_seconds", "Latency.", ["backend", "op"], buckets=BUCKETS, registry=registry
    )
    return counter, histogram


def exposed(build: Callable[[CollectorRegistry], tuple[Any, Any]]) -> CollectorRegistry:
    registry = CollectorRegistry()
    play(*build(registry))
    return registry


def without_times(text: str) -> str:
    """Exposition text with the ``_created`` values and exemplar timestamps blanked."""
    text = re.sub(r"(_created\{[^}]*\}) \S+", r"\1 T", text)
    return re.sub(r"(# \{[^}]*\} \S+) \S+", r"\1 T", text)


def structure(registry: CollectorRegistry) -> list[Any]:
    return [
        (
            family.name,
            family.type,
            family.documentation,
            [
                (
                    s.name,
                    s.labels,
                    None if s.name.endswith("_created") else s.value,
                    s.exemplar and (s.exemplar.labels, s.exemplar.value),
                )
                for s in family.samples
            ],
        )
        for family in registry.collect()
    ]


def test_families_and_samples_equal_prometheus_clients() -> None:
    assert structure(exposed(ours)) == structure(exposed(theirs))


@pytest.mark.parametrize("generate", [generate_latest, generate_openmetrics])
def test_exposition_text_equals_prometheus_clients(generate: Callable[[Any], bytes]) -> None:
    ours_text = without_times(generate(exposed(ours)).decode())
    assert ours_text == without_times(generate(exposed(theirs)).decode())
    assert "# {" in ours_text or generate is generate_latest  # exemplars reached OpenMetrics


@pytest.fixture
def created_off() -> Iterator[None]:
    """prometheus-client's public switch for ``_created`` series, turned off for one test."""
    disable_created_metrics()  # type: ignore[no-untyped-call]
    try:
        yield
    finally:
        enable_created_metrics()  # type: ignore[no-untyped-call]


@pytest.mark.usefixtures("created_off")
@pytest.mark.parametrize("generate", [generate_latest, generate_openmetrics])
def test_created_series_follow_prometheus_clients_switch(generate: Callable[[Any], bytes]) -> None:
    ours_text = generate(exposed(ours)).decode()
    assert "_created" not in ours_text
    assert without_times(ours_text) == without_times(generate(exposed(theirs)).decode())


def test_names_collide_like_prometheus_clients() -> None:
    registry = CollectorRegistry()
    ours(registry)
    with pytest.raises(ValueError, match="Duplicated timeseries"):
        Counter("app_cache_gets", "again", registry=registry)


def test_counter_rejects_negative_and_wrong_labels() -> None:
    counter = CounterFamily("c", "doc", ["a"])
    with pytest.raises(ValueError, match="non-negative"):
        counter.labels("x").inc(-1)
    with pytest.raises(ValueError, match="takes labels"):
        counter.labels("x", "y")


@pytest.fixture
def busy_switching() -> Iterator[None]:
    """Switch threads as often as the interpreter allows, to provoke lost updates."""
    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    yield
    sys.setswitchinterval(interval)


def in_threads(work: Callable[[], None], threads: int = 8) -> None:
    start = threading.Barrier(threads)

    def run() -> None:
        start.wait()
        work()

    workers = [threading.Thread(target=run) for _ in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()


@pytest.mark.usefixtures("busy_switching")
def test_concurrent_increments_lose_no_counts() -> None:
    counter = CounterFamily("c", "doc", ["a"])
    histogram = HistogramFamily("h", "doc", ["a"], DURATION_BUCKETS)
    rounds = 5_000

    def work() -> None:
        cell, timings = counter.labels("x"), histogram.labels("x")
        for _ in range(rounds):
            next(cell.one)
            cell.inc(2)
            timings.observe(0.000001)
            timings.observe(0.003)

    in_threads(work)
    assert counter.labels("x").value() == 8 * rounds * 3
    samples = {(s.name, s.labels.get("le")): s.value for s in histogram.collect().samples}
    assert samples[("h_count", None)] == 8 * rounds * 2
    assert samples[("h_bucket", "1e-05")] == 8 * rounds
    assert samples[("h_bucket", "+Inf")] == 8 * rounds * 2


@pytest.mark.usefixtures("busy_switching")
def test_concurrent_observed_hits_lose_no_counts() -> None:
    registry = CollectorRegistry()
    cache = observe(InMemoryCache(), registry=registry)
    key = (("app", "users"), "k")
    cache.set({key: ("v", None)})
    rounds = 2_000

    def work() -> None:
        for _ in range(rounds):
            cache.get([key])

    in_threads(work)
    hits = {"cache": "app.users", "backend": "memory", "result": "hit"}
    assert registry.get_sample_value("cache_gets_total", hits) == 8 * rounds
    latency = {"backend": "memory", "operation": "get"}
    assert registry.get_sample_value("cache_operation_duration_seconds_count", latency) == (
        8 * rounds
    )


def test_nan_falls_in_no_bucket_like_prometheus_clients() -> None:
    def counts(build: Callable[[CollectorRegistry], tuple[Any, Any]]) -> list[Any]:
        registry = CollectorRegistry()
        _, histogram = build(registry)
        histogram.labels("memory", "get").observe(float("nan"))
        histogram.labels("memory", "get").observe(0.5)
        return [s for s in structure(registry)[-1][3] if not s[0].endswith("_sum")]

    assert counts(ours) == counts(theirs)
