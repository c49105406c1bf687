"""Timing and reporting shared by every benchmark module.

A benchmark module ``benchmarks/bench_<area>.py`` exposes ``suite() -> Iterator[Comparison]``
(a generator may set up and tear down real servers around its yields). Each ``Comparison``
times ``ours`` and ``theirs`` interleaved in the same process and reports medians and the
ratio ours/theirs against the target the issue sets.
"""

from __future__ import annotations

import asyncio
import gc
import statistics
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

Op = Callable[[], object]
AsyncOp = Callable[[], Awaitable[object]]


@dataclass
class Comparison:
    """One line of the report: our operation against a baseline doing the same work."""

    name: str
    ours: Op
    theirs: Op
    baseline: str
    target: float | None = None
    """The ratio ours/theirs must not exceed; ``None`` reports only."""
    inner_loops: int = 100
    rounds: int = 31
    results: dict[str, float] = field(default_factory=dict)
    measure: Callable[[], float] | None = None
    """Set for a size, not a time: ``ours``/``theirs`` build the subject, ``measure`` reads
    its size (e.g. bytes per entry); the median of ``rounds`` builds is reported."""
    unit: str = "B"
    """What ``measure`` returns: ``"B"`` (bytes), ``"calls"``, or ``"s"`` (shown as a time)."""


def sync_of(op: AsyncOp, loop: asyncio.AbstractEventLoop) -> Op:
    """Make an async operation timeable by the sync harness on a fixed loop."""
    return lambda: loop.run_until_complete(op())


def _time_once(op: Op, loops: int) -> float:
    start = time.perf_counter()
    for _ in range(loops):
        op()
    return (time.perf_counter() - start) / loops


def run(comparison: Comparison) -> Comparison:
    """Time both sides, interleaved round by round so machine noise hits both alike."""
    if comparison.measure is not None:
        return _measure(comparison, comparison.measure)
    ours: list[float] = []
    theirs: list[float] = []
    comparison.ours()
    comparison.theirs()
    gc_was_enabled = gc.isenabled()
    gc.disable()
    try:
        for _ in range(comparison.rounds):
            ours.append(_time_once(comparison.ours, comparison.inner_loops))
            theirs.append(_time_once(comparison.theirs, comparison.inner_loops))
    finally:
        if gc_was_enabled:
            gc.enable()
    comparison.results = {"ours": statistics.median(ours), "theirs": statistics.median(theirs)}
    return comparison


def _measure(comparison: Comparison, measure: Callable[[], float]) -> Comparison:
    sizes: dict[str, list[float]] = {"ours": [], "theirs": []}
    for _ in range(comparison.rounds):
        for side, build in (("ours", comparison.ours), ("theirs", comparison.theirs)):
            build()
            sizes[side].append(measure())
    comparison.results = {side: statistics.median(found) for side, found in sizes.items()}
    return comparison


def ratio(comparison: Comparison) -> float:
    return comparison.results["ours"] / comparison.results["theirs"]


def _fmt(seconds: float, unit: str = "s") -> str:
    if unit != "s":
        return f"{seconds:9.0f} {unit:<2}"
    if seconds < 1e-3:
        return f"{seconds * 1e6:9.2f} µs"
    return f"{seconds * 1e3:9.2f} ms"


def report(comparisons: list[Comparison]) -> str:
    """A table: name, our median, the baseline's median, the ratio and its target."""
    lines = [
        f"{'benchmark':<58} {'ours':>12} {'baseline':>12}  {'ratio':>6}  target  baseline",
        "-" * 120,
    ]
    for c in comparisons:
        r = ratio(c)
        unit = c.unit if c.measure is not None else "s"
        target = "" if c.target is None else f"≤{c.target:<4g}"
        verdict = "" if c.target is None else ("ok" if r <= c.target else "MISS")
        lines.append(
            f"{c.name:<58} {_fmt(c.results['ours'], unit)} {_fmt(c.results['theirs'], unit)}  "
            f"{r:6.3f}  "
            f"{target:<6} {verdict:<4} {c.baseline}"
        )
    return "\n".join(lines)
