"""The metric names the code exports, as Prometheus sees them (``_total`` on counters)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ExportedMetrics:
    """Exposed metric names, and which of them are histograms (``_bucket``/``_sum``/``_count``)."""

    names: frozenset[str]
    histograms: frozenset[str]


def code_metrics() -> ExportedMetrics:
    """DESIGN.md's metric list plus the two agreed additions (until the middleware lands)."""
    histograms = frozenset({"cache_operation_duration_seconds", "cache_load_duration_seconds"})
    others = {
        "cache_gets_total",
        "cache_puts_total",
        "cache_evictions_total",
        "cache_errors_total",
        "cache_entries",
        "cache_circuit_breaker_state",
        "cache_coalesced_total",
    }
    return ExportedMetrics(frozenset(others | histograms), histograms)
