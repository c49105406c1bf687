"""The metric names the code exports, read from a registry the metrics layer registered into."""

from __future__ import annotations

from dataclasses import dataclass

from prometheus_client import CollectorRegistry

from toolkit import InMemoryCache, observe


@dataclass(frozen=True)
class ExportedMetrics:
    """Exposed metric names (``_total`` on counters), and which are histograms."""

    names: frozenset[str]
    histograms: frozenset[str]


def code_metrics() -> ExportedMetrics:
    """Every family ``observe`` registers, as Prometheus names its series."""
    registry = CollectorRegistry()
    observe(InMemoryCache(), registry=registry)
    names: set[str] = set()
    histograms: set[str] = set()
    for family in registry.collect():
        if family.type == "counter":
            names.add(f"{family.name}_total")
        else:
            names.add(family.name)
        if family.type == "histogram":
            histograms.add(family.name)
    return ExportedMetrics(frozenset(names), frozenset(histograms))


def metric_total(registry: CollectorRegistry, name: str, **labels: str) -> float:
    """The sum of every sample of ``name`` (a full sample name) whose labels include ``labels``."""
    found = 0.0
    for family in registry.collect():
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                found += sample.value
    return found
