"""The demo command: options, its summary, the flaky cache it uses, and its terminal view."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry

from tests.harness import FakeClock
from tests.prometheus_support import free_port
from toolkit import InMemoryCache, observe
from toolkit.demo.faults import FlakyCache
from toolkit.demo.view import progress_bar, read_rows, redraw, render_table
from toolkit.demo.workload import CallStats
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


def test_demo_refuses_a_busy_port() -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        result = demo("--backend", "memory", "--duration", "1", "--port", str(port))
    assert result.returncode == 2
    assert f"cannot serve /metrics on 127.0.0.1:{port}" in result.stderr


@pytest.mark.parametrize("bad", [["--duration", "0"], ["--duration", "-1"], ["--backend", "disk"]])
def test_demo_rejects_bad_options(bad: list[str]) -> None:
    result = demo(*bad)
    assert result.returncode == 2
    assert "usage:" in result.stderr


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
