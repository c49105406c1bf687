"""The demo's terminal view: status lines, a per-cache table and the summary, in plain ANSI.

Every line fits 80 columns. Counts come from the demo's metrics registry; latencies from
the callers' own clock (``CallStats``).
"""

from __future__ import annotations

import textwrap
from collections import defaultdict
from dataclasses import dataclass, field

from prometheus_client import CollectorRegistry

from toolkit.demo.faults import FlakyCache
from toolkit.demo.workload import CallStats
from toolkit.middleware.base import CIRCUIT_OPEN

__all__ = [
    "DELIBERATE_BACKENDS",
    "LATENCY_NOTE",
    "WIDTH",
    "BreakerWatch",
    "CacheRow",
    "Totals",
    "error_lines",
    "progress_bar",
    "read_rows",
    "redraw",
    "render_table",
    "status_lines",
]

WIDTH = 80
DELIBERATE_BACKENDS = frozenset({FlakyCache.backend_name})
"""Backends whose errors the demo causes on purpose."""
LATENCY_NOTE = "p50/p95: time per call as the caller sees it, hits and misses alike"
OPENINGS_METRIC = "cache_circuit_breaker_transitions_total"
"""Breaker transitions by target ``state``, where the metrics layer counts them."""

_UP_AND_CLEAR = "\x1b[{lines}F\x1b[J"
_STATE_NAMES = {0: "closed", 1: "half-open", 2: "OPEN"}
_CACHE_COLUMN = 18


@dataclass
class CacheRow:
    """One cache's figures: counts from the metrics registry, latency from the caller's clock."""

    cache: str
    hits: float = 0.0
    misses: float = 0.0
    load_seconds: float = 0.0
    loads: float = 0.0
    p50: float | None = None
    p95: float | None = None

    @property
    def hit_ratio(self) -> float | None:
        """Hits over gets, ``None`` before the first get."""
        gets = self.hits + self.misses
        return self.hits / gets if gets else None

    @property
    def saved_seconds(self) -> float | None:
        """Hits times the mean compute time of a successful miss, when any miss was timed."""
        return self.hits * self.load_seconds / self.loads if self.loads else None


@dataclass
class Totals:
    """Figures over every cache, for the status lines and the summary."""

    deliberate: dict[str, float]
    """``cache_errors_total`` of the deliberately failing backends, by "backend op type"."""
    unexpected: dict[str, float]
    """``cache_errors_total`` of every other backend: zero on a healthy one."""
    evictions: dict[str, float]
    coalesced: float
    puts: float
    breakers: dict[str, int] = field(default_factory=dict)
    """Circuit-breaker state per backend (0 closed, 1 half-open, 2 open)."""
    openings: dict[str, float] = field(default_factory=dict)
    """Breaker openings per backend."""
    openings_exact: bool = False
    """Whether the metrics counted every opening (else: openings seen between samples)."""
    leases: dict[str, float] = field(default_factory=dict)
    """``cache_leases_total`` by outcome (acquired, waited, taken_over...)."""
    stale: float = 0.0
    """Stale results served while a background refresh ran."""
    refreshes: dict[str, float] = field(default_factory=dict)
    """Background refreshes by "trigger result" (stale success, early error...)."""


class BreakerWatch:
    """Counts the breaker openings seen between samples, for registries that do not count them."""

    def __init__(self) -> None:
        self._last: dict[str, int] = {}
        self._seen: dict[str, float] = {}

    def update(self, states: dict[str, int]) -> dict[str, float]:
        """Take one sample of the states; returns the openings seen so far per backend."""
        for backend, state in states.items():
            self._seen.setdefault(backend, 0.0)
            if state == CIRCUIT_OPEN and self._last.get(backend) != CIRCUIT_OPEN:
                self._seen[backend] += 1
            self._last[backend] = state
        return dict(self._seen)


def read_rows(
    registry: CollectorRegistry,
    stats: CallStats,
    *,
    watch: BreakerWatch | None = None,
    deliberate: frozenset[str] = DELIBERATE_BACKENDS,
) -> tuple[list[CacheRow], Totals]:
    """Collect the registry once and join it with the caller-side latencies."""
    rows: dict[str, CacheRow] = {}
    errors: dict[bool, dict[str, float]] = {True: defaultdict(float), False: defaultdict(float)}
    evictions: dict[str, float] = defaultdict(float)
    breakers: dict[str, int] = {}
    openings: dict[str, float] | None = None
    coalesced = puts = stale = 0.0
    leases: dict[str, float] = defaultdict(float)
    refreshes: dict[str, float] = defaultdict(float)

    def row(cache: str) -> CacheRow:
        return rows.setdefault(cache, CacheRow(cache))

    for family in registry.collect():
        for sample in family.samples:
            labels, value, name = sample.labels, sample.value, sample.name
            if name == "cache_gets_total":
                if labels["result"] == "hit":
                    row(labels["cache"]).hits += value
                else:
                    row(labels["cache"]).misses += value
            elif name == "cache_load_duration_seconds_sum" and labels["result"] == "success":
                row(labels["cache"]).load_seconds += value
            elif name == "cache_load_duration_seconds_count" and labels["result"] == "success":
                row(labels["cache"]).loads += value
            elif name == "cache_errors_total":
                kind = f"{labels['backend']} {labels['operation']} {labels['error_type']}"
                errors[labels["backend"] in deliberate][kind] += value
            elif name == "cache_evictions_total":
                evictions[f"{labels['cache']} {labels['cause']}"] += value
            elif name == "cache_coalesced_total":
                coalesced += value
            elif name == "cache_puts_total":
                puts += value
            elif name == "cache_leases_total":
                leases[labels["outcome"]] += value
            elif name == "cache_stale_served_total":
                stale += value
            elif name == "cache_refreshes_total":
                refreshes[f"{labels['trigger']} {labels['result']}"] += value
            elif name == "cache_circuit_breaker_state":
                breakers[labels["backend"]] = int(value)
            elif name == OPENINGS_METRIC:
                openings = openings if openings is not None else {}
                if labels.get("state") == "open":
                    backend = labels.get("backend", "?")
                    openings[backend] = openings.get(backend, 0.0) + value
    for label in stats.labels():
        found = stats.percentiles(label)
        if found is not None:
            row(label).p50, row(label).p95 = found
    seen = (watch or BreakerWatch()).update(breakers)
    totals = Totals(
        deliberate=dict(errors[True]),
        unexpected=dict(errors[False]),
        evictions=dict(evictions),
        coalesced=coalesced,
        puts=puts,
        breakers=breakers,
        openings=seen if openings is None else openings,
        openings_exact=openings is not None,
        leases=dict(leases),
        stale=stale,
        refreshes=dict(refreshes),
    )
    ordered = sorted(rows.values(), key=lambda r: r.cache)  # a stable order for the live view
    return ordered, totals


def _ms(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    return f"{seconds * 1000:.1f}ms" if seconds < 1 else f"{seconds:.2f}s"


def _ratio(value: float | None) -> str:
    return "-" if value is None else f"{value:.0%}"


def _saved(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    return f"{seconds:.1f}s" if seconds < 3600 else f"{seconds / 3600:.1f}h"


def _short(name: str, width: int) -> str:
    return name if len(name) <= width else name[: width - 1] + "~"


def render_table(rows: list[CacheRow]) -> list[str]:
    """The per-cache table as lines of text (cache names cut to fit 80 columns)."""
    header = ("cache", "hits", "misses", "hit ratio", "p50", "p95", "time saved")
    body = [
        (
            _short(row.cache, _CACHE_COLUMN),
            *((f"{row.hits:.0f}", f"{row.misses:.0f}") if row.hits + row.misses else ("-", "-")),
            _ratio(row.hit_ratio),
            _ms(row.p50),
            _ms(row.p95),
            _saved(row.saved_seconds),
        )
        for row in rows
    ]
    widths = [max(len(line[i]) for line in (header, *body)) for i in range(len(header))]

    def fmt(cells: tuple[str, ...]) -> str:
        first = cells[0].ljust(widths[0])
        return "  ".join(
            [first, *(cell.rjust(width) for cell, width in zip(cells[1:], widths[1:], strict=True))]
        )

    return [
        fmt(header),
        "  ".join("-" * width for width in widths),
        *(fmt(cells) for cells in body),
    ]


def _count(value: float) -> str:
    return f"{value:,.0f}"


def status_lines(rows: list[CacheRow], totals: Totals, stats: CallStats) -> list[str]:
    """Overall hit ratio, errors (deliberate vs unexpected) and breaker states: three lines."""
    hits = sum(row.hits for row in rows)
    gets = hits + sum(row.misses for row in rows)
    saved = sum(row.saved_seconds or 0.0 for row in rows)
    ratio = f"{hits / gets:.1%}" if gets else "-"
    deliberate = sum(totals.deliberate.values()) + stats.deliberate_failures
    unexpected = sum(totals.unexpected.values()) + stats.unexpected_calls
    breakers = "  ".join(
        f"{backend} {_STATE_NAMES.get(state, str(state))}"
        + (f" (opened {_count(n)}x)" if (n := totals.openings.get(backend, 0)) else "")
        for backend, state in sorted(totals.breakers.items())
    )
    lines = [
        f"calls {_count(stats.calls)}  cache gets {_count(gets)}  hit ratio {ratio}  "
        f"time saved {saved:,.1f}s",
        f"errors  deliberate {_count(deliberate)}  unexpected {_count(unexpected)}",
        f"breaker {breakers or '-'}",
    ]
    return [_short(line, WIDTH) for line in lines]


def error_lines(totals: Totals, stats: CallStats) -> list[str]:
    """The summary's account of errors: the deliberate faults, then the unexpected ones."""
    flaky = sum(totals.deliberate.values())
    lines = ["deliberate faults (injected by the demo; fail-open turns them into misses):"]
    lines += _wrapped(
        f"flaky cache: {_count(flaky)} errors"
        + (": " + _kinds(totals.deliberate, backend=False) if totals.deliberate else "")
    )
    opened = {b: n for b, n in totals.openings.items() if n}
    how = "" if totals.openings_exact else " (at least: sampled every 0.5 s)"
    lines += _wrapped(
        "circuit breaker openings: "
        + (", ".join(f"{b} {_count(n)}" for b, n in sorted(opened.items())) or "none")
        + (how if opened else "")
    )
    lines.append(f"  model calls that failed on purpose: {_count(stats.deliberate_failures)}")
    unexpected = sum(totals.unexpected.values()) + stats.unexpected_calls
    lines.append(f"unexpected errors: {_count(unexpected)}")
    if totals.unexpected:
        lines += _wrapped("cache errors: " + _kinds(totals.unexpected))
    for kind, message in sorted(stats.surprises.items()):
        lines += _wrapped(f"raised to a caller: {kind}: {message}")
    return lines


def _kinds(errors: dict[str, float], *, backend: bool = True) -> str:
    """``"sqlite get DeadlineExceededError 2, ..."``; without the backend name if asked."""
    merged: dict[str, float] = defaultdict(float)
    for kind, value in errors.items():
        merged[kind if backend else kind.split(" ", 1)[1]] += value
    return ", ".join(f"{kind} {_count(value)}" for kind, value in sorted(merged.items()))


def _wrapped(text: str) -> list[str]:
    return textwrap.wrap(text, WIDTH, initial_indent="  ", subsequent_indent="    ")


def progress_bar(elapsed: float, duration: float | None, width: int = 30) -> str:
    """``[#####.....]  12.0s / 30s``; a moving marker when the demo runs until stopped."""
    if duration is None:
        position = int(elapsed * 4) % width
        bar = "." * position + "#" + "." * (width - position - 1)
        return f"[{bar}]  {elapsed:6.1f}s (until Ctrl-C)"
    done = min(width, int(width * elapsed / duration)) if duration > 0 else width
    return f"[{'#' * done}{'.' * (width - done)}]  {min(elapsed, duration):5.1f}s / {duration:g}s"


def redraw(previous_lines: int, lines: list[str]) -> str:
    """ANSI text that replaces the last ``previous_lines`` lines with ``lines``."""
    prefix = _UP_AND_CLEAR.format(lines=previous_lines) if previous_lines else ""
    return prefix + "\n".join(lines) + "\n"
