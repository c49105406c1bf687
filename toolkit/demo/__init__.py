"""``python -m toolkit demo``: a cached workload with live metrics, on a real backend.

Runs decorated functions (and, when LangGraph is installed, a graph with cached nodes) on
the embedded SQLite backend by default, serves ``/metrics`` on 127.0.0.1:9464, shows a live
table per cache and ends with a summary and where to point Prometheus and Grafana.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import tempfile
import textwrap
import threading
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any, TextIO
from urllib.parse import urlsplit

from opentelemetry.trace import TracerProvider
from prometheus_client import CollectorRegistry

from toolkit.config import redacted_url
from toolkit.demo.fleet import PERIOD, Fleet, PeerSpec
from toolkit.demo.view import (
    LATENCY_NOTE,
    WIDTH,
    BreakerWatch,
    error_lines,
    progress_bar,
    read_rows,
    redraw,
    render_table,
    status_lines,
)
from toolkit.demo.workload import CallStats, DemoCaches, Workload, build_caches
from toolkit.ttl import parse_ttl

__all__ = ["add_arguments", "run", "summary"]

DEFAULT_DURATION = 30.0
BACKENDS = ("sqlite", "memory", "redis")
REDIS_PREFIX = "toolkit-demo:"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the demo's options to ``parser``."""
    parser.add_argument(
        "--duration",
        type=_duration,
        default=DEFAULT_DURATION,
        help="how long to run: seconds or a duration like 90s, 5m (default 30)",
    )
    parser.add_argument("--forever", action="store_true", help="run until Ctrl-C")
    parser.add_argument(
        "--backend", choices=BACKENDS, default="sqlite", help="main cache backend (default sqlite)"
    )
    parser.add_argument(
        "--port", type=_port, default=9464, help="port of /metrics (default 9464; 0: any free)"
    )
    parser.add_argument(
        "--addr", default="127.0.0.1", help="address /metrics binds (default 127.0.0.1)"
    )
    parser.add_argument(
        "--sqlite-path", type=Path, help="SQLite file (default: a new temporary directory)"
    )
    parser.add_argument(
        "--redis-url", help="Redis URL for --backend redis (default $REDIS_URL or local)"
    )
    parser.add_argument("--workers", type=_count, default=3, help="worker threads (default 3)")
    parser.add_argument(
        "--peers",
        type=_count,
        default=2,
        help="peer processes sharing the main cache (default 2; none on --backend memory)",
    )
    parser.add_argument("--seed", type=int, help="random seed, for a repeatable workload")
    parser.add_argument(
        "--plain", action="store_true", help="no live redraw: a status line every 5 s"
    )


def _port(text: str) -> int:
    port = int(text)
    if not 0 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"a port is 0 to 65535, got {text}")
    return port


def _count(text: str) -> int:
    count = int(text)
    if count < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {text}")
    return count


def _duration(text: str) -> float:
    try:
        seconds = parse_ttl(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    assert seconds is not None  # parse_ttl returns None only for None
    return seconds


def _tracer_provider() -> TracerProvider | None:
    """The OpenTelemetry SDK's provider if installed: spans record, exemplars carry trace ids."""
    try:
        from opentelemetry.sdk.trace import TracerProvider as SdkTracerProvider
    except ImportError:
        return None
    return SdkTracerProvider()


def _main_backend(
    options: argparse.Namespace, scratch: ExitStack
) -> tuple[Any, str, PeerSpec | None]:
    """The main backend, a human description of where it stores data, and how peer
    processes open it (``None`` for an in-process backend, which they cannot share)."""
    if options.backend == "memory":
        from toolkit.backends.memory import InMemoryCache

        return InMemoryCache(), "in-process memory", None
    if options.backend == "redis":
        from toolkit.backends.redis import RedisCache

        url = options.redis_url or os.environ.get("REDIS_URL") or "redis://127.0.0.1:6379/0"
        try:
            backend = RedisCache.from_url(url, prefix=REDIS_PREFIX)
        except (TypeError, ValueError) as exc:
            from toolkit.cli._target import CliError

            raise CliError(f"bad Redis URL {redacted_url(url)!r}: {exc}") from exc
        # A prefix of its own, cleared at the end (after the caches close, as the stack
        # unwinds): the demo leaves a shared Redis as it found it.
        scratch.callback(_clear_redis_keys, url)
        return (
            backend,
            f"{redacted_url(url)}, keys under {REDIS_PREFIX}*",
            PeerSpec(redis_url=url, redis_prefix=REDIS_PREFIX),
        )
    from toolkit.backends.sqlite import SqliteCache

    path = options.sqlite_path
    if path is None:
        path = (
            Path(scratch.enter_context(tempfile.TemporaryDirectory(prefix="toolkit-demo-")))
            / "demo.sqlite"
        )
    return SqliteCache(path=str(path)), f"SQLite file {path}", PeerSpec(sqlite_path=str(path))


def _clear_redis_keys(url: str) -> None:
    """Delete the demo's keys with the command line's bounds, not the hot path's 0.5 s: the
    SCAN walks the whole database, which on a big or busy one takes longer."""
    from toolkit.backends.redis import RedisCache
    from toolkit.cli._target import ADMIN_CALL_SECONDS, ADMIN_ROUND_TRIP_SECONDS

    cache = RedisCache.from_url(
        url,
        prefix=REDIS_PREFIX,
        socket_timeout=ADMIN_ROUND_TRIP_SECONDS,
        max_call_seconds=ADMIN_CALL_SECONDS,
    )
    try:
        cache.clear()
    finally:
        cache.close()


def run(options: argparse.Namespace, out: TextIO = sys.stdout) -> int:
    """Run the demo; returns the process exit code."""
    from toolkit.exposition import PortInUseError, start_metrics_server

    duration = None if options.forever else float(options.duration)
    # Opening the backend and importing LangGraph take a moment: say so at once.
    print(f"toolkit demo: starting ({options.backend} backend)...", file=out, flush=True)
    registry = CollectorRegistry()
    tracer_provider = _tracer_provider()
    stats = CallStats()
    watch = BreakerWatch()
    logs = _LogCounter()
    with ExitStack() as scratch:
        scratch.enter_context(logs.capture(logging.getLogger("toolkit")))
        backend, where, peer_spec = _main_backend(options, scratch)
        caches = build_caches(
            backend,
            registry=registry,
            tracer_provider=tracer_provider,
        )
        scratch.callback(caches.close)
        try:
            server = start_metrics_server(port=options.port, addr=options.addr, registry=registry)
        except OSError as exc:
            if isinstance(exc, PortInUseError):
                print(exc.strerror, file=sys.stderr)
            else:
                print(
                    f"cannot serve /metrics on {options.addr}:{options.port}: {exc}",
                    file=sys.stderr,
                )
            print("for the demo: make demo ARGS='--port 9465'", file=sys.stderr)
            return 2
        scratch.callback(server.close)
        url = server.url
        workload = Workload(
            caches,
            stats,
            workers=options.workers,
            seed=options.seed,
            tracer_provider=tracer_provider,
        )
        fleet = Fleet(peer_spec, options.peers)
        print(
            _banner(caches, where, url, workload.graph is not None, len(fleet)),
            file=out,
            flush=True,
        )
        scratch.enter_context(_terminate_as_interrupt())
        scratch.callback(fleet.stop)  # first: it stops whatever part of the fleet started
        started = time.monotonic()
        try:
            # Inside the try: a stop that lands while peers and workers start is clean too.
            fleet.start()
            workload.start()
            started = time.monotonic()
            _watch(
                registry,
                stats,
                watch,
                started,
                duration,
                out,
                live=out.isatty() and not options.plain,
            )
        except KeyboardInterrupt:
            print("\nstopping...", file=out, flush=True)
        finally:
            stuck = workload.join()
        if stuck:
            print(f"warning: {', '.join(stuck)} did not stop within 10 s (left behind)", file=out)
        elapsed = time.monotonic() - started
        summary_text = summary(registry, stats, watch, elapsed, url, forever=duration is None)
        print(summary_text, file=out, flush=True)
        if logs.count:
            print(
                textwrap.fill(
                    f"toolkit logged {logs.count} warnings meanwhile; the last: {logs.last}",
                    WIDTH,
                    subsequent_indent="  ",
                ),
                file=out,
                flush=True,
            )
    return 0


@contextmanager
def _terminate_as_interrupt() -> Iterator[None]:
    """Within this block, SIGTERM (``kill``, a service manager) stops the demo as Ctrl-C
    does: peers stopped, caches closed, summary printed, instead of dying on the spot."""
    if threading.current_thread() is not threading.main_thread():
        yield  # only the main thread may set signal handlers
        return

    def interrupt(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


class _LogCounter(logging.Handler):
    """Keeps the toolkit's warnings (fail-open reports) from tearing the live view; counts them."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.count = 0
        self.last = ""

    def emit(self, record: logging.LogRecord) -> None:
        self.count += 1
        self.last = record.getMessage()

    @contextmanager
    def capture(self, logger: logging.Logger) -> Iterator[None]:
        """Route ``logger``'s records here instead of the terminal while the block runs."""
        propagate = logger.propagate
        logger.addHandler(self)
        logger.propagate = False
        try:
            yield
        finally:
            logger.removeHandler(self)
            logger.propagate = propagate


def _watch(
    registry: CollectorRegistry,
    stats: CallStats,
    watch: BreakerWatch,
    started: float,
    duration: float | None,
    out: TextIO,
    *,
    live: bool,
) -> None:
    drawn = 0
    next_plain = 0.0
    while True:
        elapsed = time.monotonic() - started
        finished = duration is not None and elapsed >= duration
        rows, totals = read_rows(registry, stats, watch=watch)
        status = [progress_bar(elapsed, duration), *status_lines(rows, totals, stats)]
        if live:
            lines = [*status, "", *render_table(rows), LATENCY_NOTE]
            out.write(redraw(drawn, lines))
            out.flush()
            drawn = len(lines)
        elif elapsed >= next_plain or finished:
            print("\n".join(status), file=out, flush=True)
            next_plain = elapsed + 5.0
        if finished:
            return
        time.sleep(0.5 if duration is None else min(0.5, max(0.0, duration - elapsed)))


def _banner(caches: DemoCaches, where: str, url: str, with_graph: bool, peers: int = 0) -> str:
    graph = (
        "and a LangGraph graph with cached nodes (model, polish)"
        if with_graph
        else "(no graph: LangGraph is not installed)"
    )
    lines = [
        "toolkit demo: cached functions under load, with metrics.",
        f"  main cache:  {caches.main_label} ({where})",
        *textwrap.wrap(
            f"llm, embeddings, weather, profiles (async), {graph}",
            WIDTH,
            initial_indent=" " * 15,
            subsequent_indent=" " * 15,
        ),
        "  small cache: memory, 24 entries: render, sessions (evicts by size, 1 s ttl)",
        "  flaky cache: flaky-memory FAILS ON PURPOSE (5% of calls; 3 s outages every",
        "               15 s), behind fail-open: its errors and breaker are deliberate",
        "  model calls: fail 2% of the time on purpose (load errors, never cached)",
        *textwrap.wrap(
            f"{peers} peer processes share the main cache; each breaking-news question (every "
            f"{PERIOD:g} s) is computed once in the fleet (llm: lock=True); weather is "
            "refreshed early or served stale (stale_ttl)"
            if peers
            else "llm takes a lease (lock=True); weather is refreshed early or served stale "
            "(stale_ttl); no peer processes on an in-process backend",
            WIDTH,
            initial_indent="  fleet:       ",
            subsequent_indent=" " * 15,
        ),
        f"  metrics:     {url}",
        "",
    ]
    return "\n".join(lines)


SCRAPED_BY_EXAMPLE = "127.0.0.1:9464"
"""The target of examples/monitoring/prometheus.yml (and so of its compose file)."""


def _scrape_config_advice(url: str) -> list[str]:
    """Whether the shipped prometheus.yml reaches the demo at ``url``, or what to change."""
    parts = urlsplit(url)
    if parts.port == 9464 and parts.hostname in ("127.0.0.1", "0.0.0.0"):
        return ["              examples/monitoring/prometheus.yml does, and loads the rules:"]
    return textwrap.wrap(
        f"examples/monitoring/prometheus.yml scrapes {SCRAPED_BY_EXAMPLE}: set its target "
        f"to {parts.netloc} first; it loads the rules:",
        WIDTH,
        initial_indent=" " * 14,
        subsequent_indent=" " * 14,
    )


def summary(
    registry: CollectorRegistry,
    stats: CallStats,
    watch: BreakerWatch,
    elapsed: float,
    url: str,
    *,
    forever: bool,
) -> str:
    """The closing report: per-cache table, totals, deliberate vs unexpected errors, next steps."""
    rows, totals = read_rows(registry, stats, watch=watch)
    hits = sum(row.hits for row in rows)
    gets = hits + sum(row.misses for row in rows)
    saved = sum(row.saved_seconds or 0.0 for row in rows)
    lines = [
        "",
        f"Summary after {elapsed:.1f}s: {stats.calls:,} calls, {gets:,.0f} cache gets",
        "",
        *render_table(rows),
        LATENCY_NOTE,
        "",
        f"overall hit ratio: {hits / gets:.1%}" if gets else "overall hit ratio: -",
        f"compute time saved: {saved:,.1f}s",
        f"writes: {totals.puts:,.0f}, coalesced waits (single-flight): {totals.coalesced:,.0f}",
        *textwrap.wrap(
            "fleet: leases "
            + (", ".join(f"{k} {v:.0f}" for k, v in sorted(totals.leases.items())) or "none")
            + f"; stale served {totals.stale:.0f}; background refreshes "
            + (", ".join(f"{k} {v:.0f}" for k, v in sorted(totals.refreshes.items())) or "none"),
            WIDTH,
            subsequent_indent="  ",
        ),
        *textwrap.wrap(
            "evictions: "
            + (", ".join(f"{k}={v:.0f}" for k, v in sorted(totals.evictions.items())) or "none"),
            WIDTH,
            subsequent_indent="  ",
        ),
        "",
        *error_lines(totals, stats),
        "",
        "Next:",
        f"  Prometheus: scrape {url}",
        *_scrape_config_advice(url),
        "              prometheus --config.file=examples/monitoring/prometheus.yml",
        "  Grafana:    toolkit dashboards --out DIR writes cache.json to import; or",
        "              docker compose -f examples/monitoring/compose.yaml up",
        "              and open http://127.0.0.1:3000 (dashboard: Toolkit caches)",
    ]
    if not forever:
        lines.append("  Keep metrics flowing meanwhile:  make demo ARGS=--forever")
    return "\n".join(lines)
