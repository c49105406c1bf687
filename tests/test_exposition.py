"""Serving /metrics: a real HTTP scrape, the ASGI and WSGI apps, and multiprocess mode."""

from __future__ import annotations

import errno
import inspect
import os
import socket
import subprocess
import sys
import textwrap
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from wsgiref.util import setup_testing_defaults

import pytest
from prometheus_client import CollectorRegistry
from prometheus_client.parser import text_string_to_metric_families

from toolkit import InMemoryCache, observe, start_metrics_server
from toolkit.exposition import (
    PortInUseError,
    make_asgi_app,
    make_wsgi_app,
    mark_process_dead,
    metrics_registry,
)

NS = ("app", "users")
ROOT = Path(__file__).resolve().parent.parent
HIT = {"cache": "app.users", "backend": "memory", "result": "hit"}


def samples(text: str, name: str) -> dict[tuple[tuple[str, str], ...], float]:
    return {
        tuple(sorted(s.labels.items())): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
        if s.name == name
    }


def hit_count(text: str) -> float:
    return samples(text, "cache_gets_total")[tuple(sorted(HIT.items()))]


def scrape(url: str, accept: str | None = None) -> str:
    request = urllib.request.Request(url, headers={"Accept": accept} if accept else {})
    with urllib.request.urlopen(request, timeout=10) as response:
        body: bytes = response.read()
    return body.decode()


@pytest.fixture
def registry() -> Iterator[CollectorRegistry]:
    registry = CollectorRegistry()
    cache = observe(InMemoryCache(), registry=registry)
    cache.set({(NS, "a"): (1, None), (NS, "b"): (2, None)})
    cache.get([(NS, "a"), (NS, "b"), (NS, "c")])
    yield registry  # the generator's frame keeps the cache alive: entries count live caches only


def test_busy_port_says_so_and_what_to_do(registry: CollectorRegistry) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        with pytest.raises(PortInUseError) as caught:
            start_metrics_server(port=port, registry=registry)
    message = str(caught.value)
    assert f"127.0.0.1:{port}" in message
    assert "already in use" in message
    assert "port=0" in message  # what to do
    assert caught.value.errno == errno.EADDRINUSE
    assert isinstance(caught.value, OSError)  # callers catching OSError keep working


def test_busy_ipv6_port_names_the_address_unambiguously(registry: CollectorRegistry) -> None:
    try:
        busy = socket.socket(socket.AF_INET6)
        busy.bind(("::1", 0))
    except OSError as exc:
        pytest.skip(f"no IPv6 loopback here: {exc}")
    with busy:
        busy.listen()
        port = busy.getsockname()[1]
        with pytest.raises(PortInUseError, match=rf"on \[::1\]:{port}: the port is already in use"):
            start_metrics_server(port=port, addr="::1", registry=registry)


def test_http_scrape_is_parsed(registry: CollectorRegistry) -> None:
    with start_metrics_server(port=0, registry=registry) as server:
        assert server.host == "127.0.0.1"
        text = scrape(server.url)
    assert hit_count(text) == 2
    assert samples(text, "cache_entries") == {(("backend", "memory"), ("cache", "__all__")): 2}


def test_binds_loopback_by_default() -> None:
    assert inspect.signature(start_metrics_server).parameters["addr"].default == "127.0.0.1"
    assert inspect.signature(start_metrics_server).parameters["port"].default == 9464


def test_openmetrics_negotiated_over_http(registry: CollectorRegistry) -> None:
    with start_metrics_server(port=0, registry=registry) as server:
        text = scrape(server.url, accept="application/openmetrics-text; version=1.0.0")
    assert text.rstrip().endswith("# EOF")


def test_wsgi_app(registry: CollectorRegistry) -> None:
    environ: dict[str, Any] = {"PATH_INFO": "/metrics"}
    setup_testing_defaults(environ)
    statuses: list[str] = []
    body = b"".join(
        make_wsgi_app(registry)(environ, lambda status, headers: statuses.append(status))
    )
    assert statuses == ["200 OK"]
    assert hit_count(body.decode()) == 2


async def test_asgi_app(registry: CollectorRegistry) -> None:
    scope = {
        "type": "http",
        "method": "GET",
        "path": "/metrics",
        "query_string": b"",
        "headers": [],
    }
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    await make_asgi_app(registry)(scope, receive, send)
    assert sent[0]["status"] == 200
    assert hit_count(b"".join(m.get("body", b"") for m in sent[1:]).decode()) == 2


WORKER = textwrap.dedent(
    """
    import sys
    from toolkit import InMemoryCache, observe
    n = int(sys.argv[1])
    cache = observe(InMemoryCache())
    ns = ("app", "users")
    cache.set({(ns, str(i)): (i, None) for i in range(n)})
    cache.get([(ns, str(i)) for i in range(n + 1)])
    """
)


@pytest.mark.slow
def test_multiprocess_mode_sums_workers(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(tmp_path), "PYTHONPATH": str(ROOT)}
    workers = [subprocess.Popen([sys.executable, "-c", WORKER, str(n)], env=env) for n in (3, 5)]
    assert [w.wait(timeout=120) for w in workers] == [0, 0]
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(tmp_path))
    with start_metrics_server(port=0) as server:
        text = scrape(server.url)
    assert hit_count(text) == 8
    assert samples(text, "cache_gets_total")[tuple(sorted({**HIT, "result": "miss"}.items()))] == 2
    assert sum(samples(text, "cache_entries").values()) == 8

    mark_process_dead(workers[0].pid)
    registry: Any = metrics_registry()
    assert (
        registry.get_sample_value("cache_entries", {"cache": "__all__", "backend": "memory"}) == 5
    )
    assert registry.get_sample_value("cache_gets_total", HIT) == 8  # counters outlive their workers


def test_multiprocess_dir_must_exist(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(tmp_path / "missing"))
    with pytest.raises(ValueError, match="not a directory"):
        metrics_registry()


def test_head_is_answered_like_get_without_a_body(registry: CollectorRegistry) -> None:
    """HEAD /metrics (load balancers' and uptime checks' probe; HTTP servers must support it)
    was answered 405 Method Not Allowed, so the endpoint looked broken to them."""
    with start_metrics_server(port=0, registry=registry) as server:
        request = urllib.request.Request(server.url, method="HEAD")
        with urllib.request.urlopen(request, timeout=10) as response:
            status, headers, body = response.status, response.headers, response.read()
        get_length = len(scrape(server.url).encode())
    assert (status, body) == (200, b"")
    assert headers["Content-Type"].startswith("text/plain")
    assert int(headers["Content-Length"]) == get_length


def test_head_through_the_wsgi_app(registry: CollectorRegistry) -> None:
    environ: dict[str, Any] = {"PATH_INFO": "/metrics", "REQUEST_METHOD": "HEAD"}
    setup_testing_defaults(environ)
    statuses: list[str] = []
    body = b"".join(
        make_wsgi_app(registry)(environ, lambda status, headers: statuses.append(status))
    )
    assert (statuses, body) == (["200 OK"], b"")


async def test_head_through_the_asgi_app(registry: CollectorRegistry) -> None:
    scope = {"type": "http", "method": "HEAD", "path": "/metrics", "query_string": b""}
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    await make_asgi_app(registry)(scope | {"headers": []}, receive, send)
    assert sent[0]["status"] == 200
    assert b"".join(m.get("body", b"") for m in sent[1:]) == b""
    length = dict(sent[0]["headers"])[b"Content-Length"]
    assert int(length) > 0


def test_an_idle_connection_does_not_hold_a_thread_for_ever(registry: CollectorRegistry) -> None:
    """A client that connected and sent nothing kept its server thread for ever (no socket
    timeout): enough of them and the process ran out of threads."""
    with start_metrics_server(port=0, registry=registry, idle_timeout=0.2) as server:
        with socket.create_connection((server.host, server.port), timeout=60) as idle:
            assert idle.recv(1) == b""  # the server hung up on it
        assert hit_count(scrape(server.url)) == 2
