"""Every script in ``examples/`` runs as a user would run it, and prints what it promises."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples"


def run_example(name: str, **env: str) -> str:
    """Run ``examples/<name>`` in a fresh interpreter; return its output; fail on a bad exit."""
    result = subprocess.run(
        [sys.executable, str(EXAMPLES / name)],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT), **env},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


def test_every_example_has_a_test() -> None:
    tested = {
        "cached_functions.py",
        "langgraph_nodes.py",
        "observe_langgraph_cache.py",
        "redis_graph.py",
        "redis_workers.py",
        "wsgi_app.py",
    }
    scripts = {path.name for path in EXAMPLES.glob("*.py") if path.name != "__init__.py"}
    assert scripts == tested


def test_cached_functions() -> None:
    out = run_example("cached_functions.py")
    assert "function bodies ran for: ['A-1', 'A-1', 'user 7']" in out
    assert 'cache_gets_total{backend="memory",cache="pricing",result="hit"} 2.0' in out
    assert 'cache_gets_total{backend="memory",cache="profiles",result="hit"} 1.0' in out
    assert 'cache_load_duration_seconds_count{cache="pricing",result="success"} 2.0' in out


def test_langgraph_nodes() -> None:
    out = run_example("langgraph_nodes.py")
    assert "node bodies ran: ['retrieve', 'generate', 'retrieve', 'generate']" in out
    assert 'cache="retrieve",result="hit"} 1.0' in out
    assert 'cache="generate",result="hit"} 1.0' in out


def test_observe_langgraph_cache() -> None:
    out = run_example("observe_langgraph_cache.py")
    assert "square ran for: [3, 4]" in out
    assert 'cache="square",result="hit"} 2.0' in out
    assert 'cache="square",result="miss"} 2.0' in out


def test_wsgi_app() -> None:
    out = run_example("wsgi_app.py")
    assert out.count("Hello, Ada!") == 2
    assert 'cache_gets_total{backend="memory",cache="greetings",result="hit"} 1.0' in out
    assert 'cache_gets_total{backend="memory",cache="greetings",result="miss"} 2.0' in out


@pytest.mark.redis
def test_redis_workers(redis_url: str) -> None:
    out = run_example("redis_workers.py", REDIS_URL=redis_url)
    # Worker B, another process, found worker A's three answers in Redis.
    assert "both workers together: hits=3 misses=4" in out


@pytest.mark.redis
def test_redis_graph(redis_url: str) -> None:
    out = run_example("redis_graph.py", REDIS_URL=redis_url)
    assert "first: 'WHAT IS CACHED?'" in out
    assert "second: 'WHAT IS CACHED?'" in out
