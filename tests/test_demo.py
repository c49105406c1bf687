"""The demo command: options, its summary, the flaky cache it uses, and its terminal view."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from tests.harness import FakeClock
from tests.prometheus_support import free_port
from toolkit import InMemoryCache, SqliteCache, observe
from toolkit.demo import summary
from toolkit.demo.faults import FlakyCache
from toolkit.demo.view import (
    LATENCY_NOTE,
    WIDTH,
    BreakerWatch,
    CacheRow,
    Totals,
    error_lines,
    progress_bar,
    read_rows,
    redraw,
    render_table,
    status_lines,
)
from toolkit.demo.workload import CallStats, UpstreamError
from toolkit.errors import BackendError

ROOT = Path(__file__).resolve().parent.parent


def demo(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "toolkit", "demo", *args],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_demo_on_memory_runs_and_summarises() -> None:
    port = free_port()
    result = demo("--backend", "memory", "--duration", "2", "--port", str(port), "--plain")
    assert result.returncode == 0, result.stdout + result.stderr
    out = result.stdout
    assert "FAILS ON PURPOSE" in out
    assert "Summary after" in out
    for cache in ("llm", "embeddings", "render", "recommendations"):
        assert f"\n{cache} " in out, cache
    assert f"http://127.0.0.1:{port}/metrics" in out
    assert "examples/monitoring/prometheus.yml" in out
    assert "Traceback" not in result.stderr
    assert out.startswith("toolkit demo: starting")
    assert "p50/p95: time per call" in out
    assert "make demo ARGS=--forever" in out  # a timed run suggests running longer
    assert "unexpected errors: 0" in out
    assert [line for line in out.splitlines() if len(line) > WIDTH] == []


def test_a_healthy_sqlite_run_reports_zero_unexpected_errors(tmp_path: Path) -> None:
    # Deliberate faults (the flaky cache, failing model calls) are reported apart; a healthy
    # SQLite backend under the demo's load must add none of its own (issue 11).
    result = demo(
        *("--duration", "4", "--port", str(free_port()), "--plain"),
        *("--sqlite-path", str(tmp_path / "demo.sqlite")),
    )
    assert result.returncode == 0, result.stderr
    assert "errors  deliberate" in result.stdout  # the live status splits them too
    summary_errors = result.stdout.split("deliberate faults", 1)[1].split("Next:", 1)[0]
    assert "unexpected errors: 0\n" in summary_errors, summary_errors


def test_the_first_line_comes_before_the_slow_imports() -> None:
    # The demo says it is starting before opening backends and importing LangGraph.
    probe = """
import sys
from toolkit.cli import main

class First:
    seen = None
    def write(self, text):
        if First.seen is None and text.strip():
            First.seen = (text.strip(), "langgraph" in sys.modules)
            raise SystemExit(0)
        return len(text)
    def flush(self): pass
    def isatty(self): return False

sys.stdout = First()
try:
    main(["demo", "--backend", "memory", "--duration", "1", "--port", "0"])
finally:
    sys.stderr.write(repr(First.seen))
"""
    done = subprocess.run(
        [sys.executable, "-c", probe],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.stderr.endswith("('toolkit demo: starting (memory backend)...', False)"), (
        done.stderr
    )


def test_demo_refuses_a_busy_port() -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        result = demo("--backend", "memory", "--duration", "1", "--port", str(port))
    assert result.returncode == 2
    assert f"cannot serve /metrics on 127.0.0.1:{port}" in result.stderr


@pytest.mark.parametrize(
    "bad",
    [
        ["--duration", "0"],
        ["--duration", "-1"],
        ["--backend", "disk"],
        # These ran anyway: a traceback for the port, no workers or peers for a negative count.
        ["--port", "70000"],
        ["--port", "-1"],
        ["--workers", "-1"],
        ["--peers", "-1"],
    ],
)
def test_demo_rejects_bad_options(bad: list[str]) -> None:
    result = demo("--backend", "memory", "--duration", "1", "--port", "0", *bad)
    assert result.returncode == 2
    assert "usage:" in result.stderr and "Traceback" not in result.stderr


@pytest.mark.parametrize("url", ["redis://127.0.0.1:6379/x", "redis://127.0.0.1:6379/0?prefix=a:"])
def test_a_bad_redis_url_is_one_line_of_bad_input(url: str) -> None:
    """It was a ValueError traceback (exit 1), as if the cache had failed."""
    result = demo("--backend", "redis", "--redis-url", url, "--duration", "1", "--port", "0")
    assert result.returncode == 2
    assert "bad Redis URL" in result.stderr and "Traceback" not in result.stderr


@pytest.mark.redis
def test_the_demo_deletes_its_redis_keys_even_when_that_takes_long(
    private_redis_url: str,
) -> None:
    """The demo cleared its prefix with the hot path's 0.5 s bound: a SCAN of a big (or
    busy) database outlasted it, so the demo ended "the cache failed" with its keys left."""
    import redis

    from toolkit import RedisCache
    from toolkit.demo import REDIS_PREFIX

    seeded = RedisCache.from_url(private_redis_url, prefix=REDIS_PREFIX)
    seeded.set({(("left", "over"), "k"): (1, None)})
    seeded.close()
    process = subprocess.Popen(
        [sys.executable, "-m", "toolkit", "demo", "--backend", "redis", "--plain",
         "--redis-url", private_redis_url, "--duration", "1", "--port", "0", "--peers", "0"],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )  # fmt: skip
    try:
        assert process.stdout is not None
        for line in process.stdout:
            if "metrics:" in line:  # the banner's last line: the run starts now
                break
        # Redis answers nothing for a while (less than one admin round trip's 5 s): the run
        # and the final clear wait it out, as a SCAN of a big database would take as long.
        with redis.Redis.from_url(private_redis_url) as admin:
            admin.execute_command("CLIENT", "PAUSE", 4000, "ALL")
        _, err = process.communicate(timeout=120)
    finally:
        process.kill()
    assert process.returncode == 0, err
    with redis.Redis.from_url(private_redis_url) as admin:
        assert list(admin.scan_iter(match=f"{REDIS_PREFIX}*")) == []


def test_the_redis_password_is_never_printed() -> None:
    """The banner printed --redis-url (or $REDIS_URL) as given, password and all."""
    result = demo(
        "--backend", "redis", "--redis-url", "redis://:hunter2@127.0.0.1:1/0?password=hunter2",
        "--duration", "1", "--port", "0", "--peers", "0", "--plain",
    )  # fmt: skip
    assert "hunter2" not in result.stdout + result.stderr
    assert "redis://:***@127.0.0.1:1/0?password=***" in result.stdout


def test_flaky_cache_fails_throughout_each_outage_only() -> None:
    clock = FakeClock(0.0)
    cache = FlakyCache(
        error_rate=0.0, first_outage=2.0, outage_every=10.0, outage_for=3.0, clock=clock
    )
    key = (("ns",), "k")
    cache.set({key: (1, None)})
    for now, failing in (
        (1.9, False),
        (2.0, True),
        (4.9, True),
        (5.0, False),
        (12.5, True),
        (15.5, False),
    ):
        clock.now = now
        assert cache.in_outage() is failing, now
        if failing:
            with pytest.raises(BackendError, match="deliberately flaky"):
                cache.get([key])
        else:
            assert cache.get([key]) == {key: 1}
    cache.clear()  # clearing never fails, even during an outage
    clock.now = 2.5
    cache.clear()


def test_flaky_cache_rejects_impossible_schedules() -> None:
    with pytest.raises(ValueError, match="error_rate"):
        FlakyCache(error_rate=1.5)
    with pytest.raises(ValueError, match="outage_for"):
        FlakyCache(outage_every=3.0, outage_for=3.0)


def test_rows_join_registry_counts_with_caller_latency() -> None:
    registry = CollectorRegistry()
    cache = observe(InMemoryCache(), registry=registry)
    key = (("pricing",), "k")
    cache.get([key])
    cache.set({key: ("v", None)})
    cache.get([key])
    cache.get([key])
    cache.record_load(("pricing",), 0.5, ok=True)
    stats = CallStats()
    for seconds in (0.001, 0.002, 0.5):
        stats.record("pricing", seconds)
    rows, totals = read_rows(registry, stats)
    [row] = rows
    assert (row.cache, row.hits, row.misses) == ("pricing", 2, 1)
    assert row.hit_ratio == pytest.approx(2 / 3)
    assert row.saved_seconds == pytest.approx(1.0)  # two hits x 0.5 s per load
    assert (row.p50, row.p95) == (0.002, 0.5)
    assert totals.puts == 1
    lines = render_table(rows)
    assert lines[0].split() == [
        "cache",
        "hits",
        "misses",
        "hit",
        "ratio",
        "p50",
        "p95",
        "time",
        "saved",
    ]
    assert lines[2].split() == ["pricing", "2", "1", "67%", "2.0ms", "500.0ms", "1.0s"]


def test_progress_bar_and_redraw() -> None:
    assert progress_bar(15, 30, width=10) == "[#####.....]   15.0s / 30s"
    assert progress_bar(45, 30, width=10).startswith("[##########]   30.0s")
    assert "until Ctrl-C" in progress_bar(3, None)
    assert redraw(0, ["a", "b"]) == "a\nb\n"
    assert redraw(2, ["c"]) == "\x1b[2F\x1b[Jc\n"


def _big_totals() -> Totals:
    return Totals(
        deliberate={"flaky-memory get BackendError": 123_456_789.0},
        unexpected={"sqlite get DeadlineExceededError": 2.0},
        evictions={},
        coalesced=0.0,
        puts=0.0,
        breakers={"flaky-memory": 2, "memory": 0, "sqlite": 1},
        openings={"flaky-memory": 1234.0},
    )


def test_every_line_of_the_view_fits_80_columns() -> None:
    rows = [
        CacheRow(
            "a-very-long-langgraph-node-name-that-goes-on",
            hits=99_999_999,
            misses=99_999_999,
            load_seconds=10.0,
            loads=1,
            p50=12.345,
            p95=99.999,
        )
    ]
    stats = CallStats()
    stats.calls = 123_456_789
    stats.unexpected("llm", RuntimeError("x" * 300))
    lines = [
        progress_bar(1e6, None),
        *status_lines(rows, _big_totals(), stats),
        *render_table(rows),
        LATENCY_NOTE,
        *error_lines(_big_totals(), stats),
    ]
    too_wide = [line for line in lines if len(line) > WIDTH]
    assert too_wide == []


def test_errors_split_deliberate_from_unexpected_and_breakers_show() -> None:
    registry = CollectorRegistry()
    flaky = observe(
        FlakyCache(error_rate=1.0), registry=registry, failure_threshold=3, reset_timeout=60
    )
    broken: SqliteCache[object] = SqliteCache(path=":memory:")
    broken.close()  # a real fault: every call now raises CacheClosedError
    sqlite = observe(broken, registry=registry)
    key = (("ns",), "k")
    for _ in range(3):
        flaky.get([key])
    sqlite.get([key])
    stats = CallStats()
    stats.record("llm", 0.1, failed=True, deliberate=True)
    stats.record("llm", 0.1, failed=True)
    stats.unexpected("llm", UpstreamError("unlikely"))
    watch = BreakerWatch()
    rows, totals = read_rows(registry, stats, watch=watch)
    assert sum(totals.deliberate.values()) == 3
    assert set(totals.unexpected) == {"sqlite get CacheClosedError"}
    assert totals.breakers["flaky-memory"] == 2  # open
    _, errors, breakers = status_lines(rows, totals, stats)
    assert errors == "errors  deliberate 4  unexpected 2"
    assert "flaky-memory OPEN (opened 1x)" in breakers and "sqlite closed" in breakers
    text = "\n".join(error_lines(totals, stats))
    assert "flaky cache: 3 errors: get BackendError" in text or "get CacheTimeoutError" in text
    assert "model calls that failed on purpose: 1" in text
    assert "unexpected errors: 2" in text
    assert "sqlite get CacheClosedError 1" in text
    assert "raised to a caller: llm: UpstreamError: unlikely" in text
    # The same opening, sampled again, is not counted twice.
    assert read_rows(registry, stats, watch=watch)[1].openings == {
        "flaky-memory": 1,
        "sqlite": 0,
    }


def test_breaker_openings_come_from_a_transition_counter_when_exported() -> None:
    from prometheus_client import Counter

    registry = CollectorRegistry()
    transitions = Counter(
        "cache_circuit_breaker_transitions",
        "Breaker transitions.",
        ["backend", "state"],
        registry=registry,
    )
    transitions.labels("flaky-memory", "open").inc(7)
    transitions.labels("flaky-memory", "closed").inc(6)
    _, totals = read_rows(registry, CallStats())
    assert (totals.openings, totals.openings_exact) == ({"flaky-memory": 7}, True)


def test_forever_runs_do_not_suggest_forever() -> None:
    registry = CollectorRegistry()
    args = (registry, CallStats(), BreakerWatch(), 1.0, "http://127.0.0.1:1/metrics")
    assert "ARGS=--forever" in summary(*args, forever=False)
    assert "--forever" not in summary(*args, forever=True)


def test_the_monitoring_advice_names_the_port_prometheus_yml_does_not_scrape() -> None:
    """After --port 9465 (what the demo suggests when 9464 is taken) the summary said the
    shipped prometheus.yml scrapes the demo: it scrapes 127.0.0.1:9464, so Prometheus and
    Grafana would show nothing."""
    registry = CollectorRegistry()
    args = (registry, CallStats(), BreakerWatch(), 1.0)
    default = summary(*args, "http://127.0.0.1:9464/metrics", forever=False)
    assert "examples/monitoring/prometheus.yml does" in default
    moved = summary(*args, "http://127.0.0.1:9465/metrics", forever=False)
    assert "prometheus.yml does" not in moved
    assert "127.0.0.1:9465" in moved.split("Prometheus:", 1)[1].split("Grafana:")[0].replace(
        "scrape http://127.0.0.1:9465/metrics", ""
    )
    assert all(len(line) <= WIDTH for line in moved.splitlines())


# -- stopping: no peer process outlives the demo ------------------------------------


def _children(pid: int) -> set[int]:
    """The live processes whose parent is ``pid`` (Linux /proc)."""
    found = set()
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:  # it exited meanwhile
            continue
        if int(fields[1]) == pid and fields[0] != "Z":
            found.add(int(stat.parent.name))
    return found


def _alive(pids: set[int]) -> set[int]:
    alive = set()
    for pid in pids:
        try:
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if state != "Z":
            alive.add(pid)
    return alive


def _wait(condition: Any, what: str, timeout: float = 60.0) -> None:
    give_up = time.monotonic() + timeout  # generous: only a broken demo takes this long
    while not condition():
        if time.monotonic() > give_up:
            pytest.fail(f"still waiting after {timeout:.0f} s for {what}")
        time.sleep(0.1)


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="reads /proc")
@pytest.mark.parametrize("how", ["terminate", "kill"])
def test_no_peer_process_outlives_the_demo(tmp_path: Path, how: str) -> None:
    where = ["--port", str(free_port()), "--sqlite-path", str(tmp_path / "demo.sqlite")]
    demo_run = subprocess.Popen(
        [sys.executable, "-m", "toolkit", "demo", "--forever", "--plain", *where],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        peers: set[int] = set()

        def two_peers_started() -> bool:
            peers.update(_children(demo_run.pid))
            return len(peers) >= 3 or demo_run.poll() is not None  # two peers, their tracker

        _wait(two_peers_started, "the demo's peer processes")
        assert demo_run.poll() is None, demo_run.communicate()[0]
        if how == "terminate":  # SIGTERM: a clean stop, with the summary
            demo_run.terminate()
            out = demo_run.communicate(timeout=60)[0]
            assert demo_run.returncode == 0, out
            assert "Summary after" in out
        else:  # SIGKILL: nothing runs in the demo, the peers notice on their own
            demo_run.kill()
            demo_run.communicate(timeout=60)
        _wait(lambda: not _alive(peers), f"peers {sorted(_alive(peers))} to exit")
    finally:
        if demo_run.poll() is None:
            demo_run.kill()
            demo_run.communicate()
