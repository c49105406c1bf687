"""The demo's terminal view: a progress bar and a per-cache table, in plain ANSI."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass

from prometheus_client import CollectorRegistry

from toolkit.demo.workload import CallStats

__all__ = ["CacheRow", "Totals", "progress_bar", "read_rows", "render_table"]

_UP_AND_CLEAR = "\x1b[{lines}F\x1b[J"


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
    """Figures over every cache, for the summary."""

    errors: dict[str, float]
    evictions: dict[str, float]
    coalesced: float
    puts: float


def read_rows(registry: CollectorRegistry, stats: CallStats) -> tuple[list[CacheRow], Totals]:
    """Collect the registry once and join it with the caller-side latencies."""
    rows: dict[str, CacheRow] = {}
    errors: dict[str, float] = defaultdict(float)
    evictions: dict[str, float] = defaultdict(float)
    coalesced = puts = 0.0

    def row(cache: str) -> CacheRow:
        return rows.setdefault(cache, CacheRow(cache))

    for family in registry.collect():
        for sample in family.samples:
            labels, value = sample.labels, sample.value
            if sample.name == "cache_gets_total":
                if labels["result"] == "hit":
                    row(labels["cache"]).hits += value
                else:
                    row(labels["cache"]).misses += value
            elif sample.name == "cache_load_duration_seconds_sum" and labels["result"] == "success":
                row(labels["cache"]).load_seconds += value
            elif (
                sample.name == "cache_load_duration_seconds_count" and labels["result"] == "success"
            ):
                row(labels["cache"]).loads += value
            elif sample.name == "cache_errors_total":
                errors[f"{labels['backend']} {labels['operation']} {labels['error_type']}"] += value
            elif sample.name == "cache_evictions_total":
                evictions[f"{labels['cache']} {labels['cause']}"] += value
            elif sample.name == "cache_coalesced_total":
                coalesced += value
            elif sample.name == "cache_puts_total":
                puts += value
    for label in stats.labels():
        found = stats.percentiles(label)
        if found is not None:
            row(label).p50, row(label).p95 = found
    ordered = sorted(rows.values(), key=lambda r: r.cache)  # a stable order for the live view
    return ordered, Totals(dict(errors), dict(evictions), coalesced, puts)


def _ms(seconds: float | None) -> str:
    return "-" if seconds is None else f"{seconds * 1000:.1f}ms"


def _ratio(value: float | None) -> str:
    return "-" if value is None else f"{value:.0%}"


def _saved(seconds: float | None) -> str:
    return "-" if seconds is None else f"{seconds:.1f}s"


def render_table(rows: list[CacheRow]) -> list[str]:
    """The per-cache table as lines of text."""
    header = ("cache", "hits", "misses", "hit ratio", "p50", "p95", "time saved")
    body = [
        (
            row.cache,
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
