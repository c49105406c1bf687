"""``make load``: throughput and tails of @cached over every backend, bare and observed.

Threads (4, 16), processes (4 on one SQLite file / Redis / Postgres table), coroutines (100, 1,000)
call a ``@cached`` function with a realistic mix (80 % of calls on 20 % of 2,000 keys,
ttl 2 s, values of 100 B to 64 KB). Each case runs ``--rounds`` times; the table shows
medians, the JSON file every round. Within a mode the cases take turns in each round, so
every ratio compares the same stretch of time.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from benchmarks.load._cases import (
    BACKENDS,
    MODES,
    STACKS,
    Spec,
    drop_postgres,
    postgres_where,
    redis_where,
)
from benchmarks.load._drive import Outcome, drive, run_threads


@dataclass
class Row:
    """One case's medians over its rounds."""

    backend: str
    stack: str
    mode: str
    calls_per_s: float
    p50_ms: float
    p99_ms: float
    worst_ms: float
    errors: float
    openings: float
    failures: int


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def summarize(backend: str, stack: str, mode: str, rounds: list[Outcome]) -> Row:
    return Row(
        backend=backend,
        stack=stack,
        mode=mode,
        calls_per_s=statistics.median(r.calls / r.seconds for r in rounds),
        p50_ms=statistics.median(percentile(r.latencies, 0.5) for r in rounds) * 1e3,
        p99_ms=statistics.median(percentile(r.latencies, 0.99) for r in rounds) * 1e3,
        worst_ms=max(max(r.latencies, default=0.0) for r in rounds) * 1e3,
        errors=sum(r.errors for r in rounds),
        openings=sum(r.openings for r in rounds),
        failures=sum(r.failures for r in rounds),
    )


def redis_url() -> str | None:
    """The Redis the tests would use, if one answers (never started for a benchmark)."""
    import redis

    url = os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0")
    try:
        redis.Redis.from_url(url, socket_connect_timeout=0.5).ping()
    except redis.RedisError:
        return None
    return url


def ratios(rows: list[Row]) -> list[tuple[str, float, str]]:
    """The issue's ratios: observe/bare per backend and mode, ours against LangGraph's."""
    speed = {(r.backend, r.stack, r.mode): r.calls_per_s for r in rows}
    found: list[tuple[str, float, str]] = []
    for (backend, stack, mode), value in sorted(speed.items()):
        bare = speed.get((backend, "bare", mode))
        if stack == "observe" and bare and not backend.startswith("langgraph"):
            found.append((f"observe({backend}) / bare {backend}, {mode}", value / bare, ">= 0.85"))
    for mode in MODES:
        lg = speed.get(("langgraph-sqlite", "bare", mode))
        if not lg:
            continue
        for stack, target in (("bare", ">= 1.5"), ("observe", ">= 1.3")):
            ours = speed.get(("sqlite", stack, mode))
            if ours:
                found.append((f"{stack} sqlite / LangGraph SqliteCache, {mode}", ours / lg, target))
    return found


def table(rows: list[Row]) -> str:
    head = (
        f"{'case':<40} {'calls/s':>9} {'p50 ms':>7} {'p99 ms':>7} {'worst':>7} "
        f"{'err':>5} {'open':>4}"
    )
    lines = [head, "-" * len(head)]
    for r in rows:
        name = f"{r.stack}({r.backend}) {r.mode}"
        lines.append(
            f"{name:<40} {r.calls_per_s:>9.0f} {r.p50_ms:>7.2f} {r.p99_ms:>7.2f} "
            f"{r.worst_ms:>7.1f} {r.errors + r.failures:>5.0f} {r.openings:>4.0f}"
        )
    return "\n".join(lines)


SOAK_WARM_SECONDS = 150.0


def soak(seconds: float, where: str) -> dict[str, Any]:
    """Observed SQLite under 4 threads for ``seconds``: resident memory at start and end, and
    the calls, ``cache_errors_total`` and breaker openings of the measured stretch."""
    spec = Spec("sqlite", "observe", where)
    # Warm until resident memory settles: SQLite's page caches and the allocator's per-thread
    # arenas fill over about 100 s of this load (sampled every 25 s: +33 %, then flat).
    # Latencies are not kept: a list of every call's latency would be the growth measured.
    run_threads(spec, 4, SOAK_WARM_SECONDS, keep=False)
    before = _rss()
    measured = run_threads(spec, 4, seconds, keep=False)
    after = _rss()
    return {
        "seconds": seconds,
        "rss_before": before,
        "rss_after": after,
        "growth": after / before - 1,
        "calls": measured.calls,
        "errors": measured.errors + measured.failures,
        "openings": measured.openings,
    }


def _rss() -> int:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="make load", description=__doc__)
    parser.add_argument("--backends", nargs="*", default=list(BACKENDS), choices=BACKENDS)
    parser.add_argument("--modes", nargs="*", default=list(MODES), choices=MODES)
    parser.add_argument("--seconds", type=float, default=1.0, help="per run (default 1)")
    parser.add_argument("--rounds", type=int, default=3, help="runs per case (default 3)")
    parser.add_argument("--quick", action="store_true", help="one short round per case")
    parser.add_argument("--soak", type=float, metavar="SECONDS", help="only the memory soak")
    parser.add_argument("--json", type=Path, default=Path("load-results.json"))
    args = parser.parse_args(argv)
    if args.quick:
        args.seconds, args.rounds = 0.3, 1
    workdir = Path(tempfile.mkdtemp(prefix="toolkit-load-"))
    if args.soak:
        result = soak(args.soak, str(workdir / "soak.db"))
        print(json.dumps(result, indent=2))
        args.json.write_text(json.dumps({"soak": result}, indent=2))
        return 0
    with contextlib.ExitStack() as servers:
        pg_url = _postgres(servers) if "postgres" in args.backends else None
        return _run_cases(args, workdir, pg_url)


def _postgres(servers: contextlib.ExitStack) -> str | None:
    """The PostgreSQL the tests would use (found, or a private one started for the run)."""
    from tests.postgres_servers import PostgresUnavailable, find_or_start

    try:
        return servers.enter_context(find_or_start())
    except PostgresUnavailable as exc:
        print(f"load: no PostgreSQL ({exc}); skipping it", file=sys.stderr)
        return None


def _where(backend: str, name: str, redis: str | None, postgres: str | None) -> str:
    if backend == "redis" and redis:
        return redis_where(redis)
    if backend == "postgres" and postgres:
        return postgres_where(postgres)
    return name


def _run_cases(args: argparse.Namespace, workdir: Path, pg_url: str | None) -> int:
    url = redis_url()
    backends = [b for b in args.backends if (b != "redis" or url) and (b != "postgres" or pg_url)]
    if "redis" in args.backends and not url:
        print("load: no Redis answers at REDIS_URL / 127.0.0.1:6379; skipping it", file=sys.stderr)
    rows: list[Row] = []
    raw: list[dict[str, Any]] = []
    began, done, total = time.perf_counter(), 0, len(backends) * len(STACKS) * len(args.modes)
    for mode in args.modes:
        # Within a mode, every backend and stack takes its turn in each round (the stacks'
        # order flipping each round), so every ratio compares the same stretch of a noisy
        # machine rather than two different minutes.
        outcomes: dict[tuple[str, str], list[Outcome]] = {}
        for round_ in range(args.rounds):
            for backend in backends:
                for stack in STACKS if round_ % 2 == 0 else STACKS[::-1]:
                    file = str(workdir / f"{backend}-{stack}-{mode}-{round_}.db")
                    where = _where(backend, file, url, pg_url)
                    try:
                        outcome = drive(Spec(backend, stack, where), mode, args.seconds)
                    finally:
                        if backend == "postgres":
                            drop_postgres(where)
                    outcomes.setdefault((backend, stack), []).append(outcome)
            print(
                f"[{time.perf_counter() - began:5.0f}s] {mode}: round {round_ + 1} of "
                f"{args.rounds} done",
                file=sys.stderr,
                flush=True,
            )
        for (backend, stack), found in outcomes.items():
            row = summarize(backend, stack, mode, found)
            rows.append(row)
            raw.append({**asdict(row), "rounds": [o.calls / o.seconds for o in found]})
            done += 1
            print(
                f"[{done}/{total} {time.perf_counter() - began:5.0f}s] {stack}({backend}) "
                f"{mode}: {row.calls_per_s:.0f} calls/s, p99 {row.p99_ms:.2f} ms",
                file=sys.stderr,
                flush=True,
            )
    rows.sort(
        key=lambda row: (
            backends.index(row.backend),
            STACKS.index(row.stack),
            args.modes.index(row.mode),
        )
    )
    print(table(rows))
    print()
    for name, value, target in ratios(rows):
        print(f"{name:<60} {value:6.2f}  (goal {target})")
    args.json.write_text(json.dumps({"rows": raw, "ratios": ratios(rows)}, indent=2))
    print(f"\nwrote {args.json}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
