"""Driving a case: threads, processes or coroutines calling the cached function for a while."""

from __future__ import annotations

import asyncio
import contextlib
import multiprocessing
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from prometheus_client import CollectorRegistry

from benchmarks.load._cases import Spec, Workload

_STARTUP_SECONDS = 60.0
"""How long spawned processes may take to import and connect before a case gives up."""

SAMPLE = 20_000
"""Latencies kept per worker process: enough for a p99, small enough to send back."""


@dataclass
class Outcome:
    """What one run of one case produced."""

    calls: int = 0
    seconds: float = 0.0
    latencies: list[float] = field(default_factory=list)
    failures: int = 0  # exceptions that reached the caller
    errors: float = 0.0  # cache_errors_total
    openings: float = 0.0  # breaker openings

    def add(self, other: Outcome) -> None:
        self.calls += other.calls
        self.latencies += other.latencies
        self.failures += other.failures
        self.errors += other.errors
        self.openings += other.openings


def counted(registry: CollectorRegistry) -> tuple[float, float]:
    """``cache_errors_total`` and breaker openings recorded in ``registry``."""
    errors = openings = 0.0
    for family in registry.collect():
        for sample in family.samples:
            if sample.name == "cache_errors_total":
                errors += sample.value
            elif (
                sample.name == "cache_circuit_breaker_transitions_total"
                and sample.labels.get("state") == "open"
            ):
                openings += sample.value
    return errors, openings


class _Discard(list[float]):
    """A latency sink that keeps nothing: a soak measures the cache's memory, not ours."""

    def append(self, _: float) -> None:
        return None


def _call_loop(work: Workload, until: float, out: Outcome, keep: bool = True) -> None:
    value, pick, clock = work.value, work.pick, time.perf_counter
    latencies = out.latencies if keep else _Discard()
    while True:
        start = clock()
        if start >= until:
            return
        n = pick()
        try:
            got = value(n)
        except Exception:
            out.failures += 1
        else:
            if got[:1] != bytes([n % 256]):
                raise AssertionError(f"wrong value for {n}")
        latencies.append(clock() - start)
        out.calls += 1


def run_threads(spec: Spec, count: int, seconds: float, *, keep: bool = True) -> Outcome:
    """``count`` threads of one process share one cache (``keep``: record latencies)."""
    registry = CollectorRegistry()
    cache = spec.build(registry)
    outs = [Outcome() for _ in range(count)]
    works = [Workload(cache, i) for i in range(count)]  # decorating is not the load
    start = time.perf_counter()
    until = start + seconds
    threads = [
        threading.Thread(target=_call_loop, args=(works[i], until, outs[i], keep))
        for i in range(count)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    total = Outcome(seconds=time.perf_counter() - start)
    for out in outs:
        total.add(out)
    total.errors, total.openings = counted(registry)
    _close(cache)
    return total


async def _acall_loop(work: Workload, until: float, out: Outcome) -> None:
    avalue, pick, clock = work.avalue, work.pick, time.perf_counter
    while True:
        start = clock()
        if start >= until:
            return
        n = pick()
        try:
            got = await avalue(n)
        except Exception:
            out.failures += 1
        else:
            if got[:1] != bytes([n % 256]):
                raise AssertionError(f"wrong value for {n}")
        out.latencies.append(clock() - start)
        out.calls += 1


def run_coroutines(spec: Spec, count: int, seconds: float) -> Outcome:
    """``count`` coroutines on one event loop share one cache."""
    registry = CollectorRegistry()

    async def main() -> Outcome:
        cache = spec.build(registry)
        outs = [Outcome() for _ in range(count)]
        works = [Workload(cache, i) for i in range(count)]  # decorating is not the load
        start = time.perf_counter()
        until = start + seconds
        await asyncio.gather(*(_acall_loop(works[i], until, outs[i]) for i in range(count)))
        total = Outcome(seconds=time.perf_counter() - start)
        for out in outs:
            total.add(out)
        aclose = getattr(cache, "aclose", None)
        if aclose is not None:
            await aclose()
        return total

    total = asyncio.run(main())
    total.errors, total.openings = counted(registry)
    return total


def _process(spec: Spec, seed: int, ready: Any, seconds: float, results: Any) -> None:
    registry = CollectorRegistry()
    cache = spec.build(registry)
    work = Workload(cache, seed)
    out = Outcome()
    ready.wait(timeout=_STARTUP_SECONDS)  # every process starts calling together
    until = time.perf_counter() + seconds
    _call_loop(work, until, out)
    out.errors, out.openings = counted(registry)
    step = max(1, len(out.latencies) // SAMPLE)
    out.latencies = out.latencies[::step]
    out.seconds = seconds
    _close(cache)
    results.put(out)


def run_processes(spec: Spec, count: int, seconds: float) -> Outcome:
    """``count`` processes, each with its own cache object on one shared store."""
    # The store is made once here, as a deployed app's first worker would: four processes
    # creating one SQLite file at once is a start-up race (LangGraph's SqliteCache switching
    # it to WAL meets "database is locked" and fails its constructor), not the load measured.
    _close(spec.build(CollectorRegistry()))
    context = multiprocessing.get_context("spawn")
    results = context.Queue()
    # Met once every child has imported, connected and decorated: none of that is the load.
    ready = context.Barrier(count + 1)
    workers = [
        context.Process(target=_process, args=(spec, i, ready, seconds, results))
        for i in range(count)
    ]
    for worker in workers:
        worker.start()
    ready.wait(timeout=_STARTUP_SECONDS)
    outs = [results.get(timeout=120) for _ in workers]
    for worker in workers:
        worker.join(timeout=30)
    total = Outcome(seconds=seconds)
    for out in outs:
        total.add(out)  # latencies are evenly spaced samples: percentiles stay representative
    return total


def _close(cache: Any) -> None:
    close = getattr(cache, "close", None)
    if callable(close):
        with contextlib.suppress(Exception):  # a benchmark's teardown never hides its figures
            close()


def drive(spec: Spec, mode: str, seconds: float) -> Outcome:
    """Run ``spec`` in ``mode`` (``threads4``, ``processes4``, ``coroutines100``...)."""
    kind = mode.rstrip("0123456789")
    count = int(mode[len(kind) :])
    if kind == "threads":
        return run_threads(spec, count, seconds)
    if kind == "processes":
        return run_processes(spec, count, seconds)
    if kind == "coroutines":
        return run_coroutines(spec, count, seconds)
    raise ValueError(f"unknown mode {mode!r}")
