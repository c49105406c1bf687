"""Serving ``/metrics``: an HTTP server, ASGI and WSGI apps, and multiprocess mode.

Single process: expose the registry the ``Metrics`` layers record into (default
``prometheus_client.REGISTRY``)::

    server = start_metrics_server()        # http://127.0.0.1:9464/metrics
    ...
    server.close()

Multiprocess (gunicorn, uvicorn workers, ``multiprocessing``): set
``PROMETHEUS_MULTIPROC_DIR`` to an empty directory *before* any process imports
``prometheus_client``; every worker then writes its samples to files there, and
:func:`metrics_registry` (used by default here) reads them all. Counters and
histograms are summed over every process that ever ran. The two gauges use these
modes: ``cache_entries`` is ``livesum`` (each worker's in-process cache counts, summed
over live workers) and ``cache_circuit_breaker_state`` is ``livemax`` (the worst state
among live workers). When a worker exits, call :func:`mark_process_dead` with its pid
(gunicorn: in the ``child_exit`` server hook) so its live gauges disappear. Exemplars
are not available in multiprocess mode (a prometheus-client limitation).
"""

from __future__ import annotations

import errno
import os
import socket
import threading
from collections.abc import Callable, Iterable
from socketserver import ThreadingMixIn
from types import TracebackType
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from prometheus_client import REGISTRY, CollectorRegistry, multiprocess
from prometheus_client import make_asgi_app as _make_asgi_app
from prometheus_client import make_wsgi_app as _make_wsgi_app
from prometheus_client.registry import Collector

__all__ = [
    "DEFAULT_PORT",
    "MetricsServer",
    "PortInUseError",
    "make_asgi_app",
    "make_wsgi_app",
    "mark_process_dead",
    "metrics_registry",
    "multiprocess_dir",
    "start_metrics_server",
]

DEFAULT_PORT = 9464
"""The port OpenTelemetry's Prometheus exporter uses by convention."""


def multiprocess_dir() -> str | None:
    """The multiprocess directory from ``PROMETHEUS_MULTIPROC_DIR``, or ``None`` when unset."""
    return os.environ.get("PROMETHEUS_MULTIPROC_DIR") or None


def metrics_registry() -> Collector:
    """What to expose: multiprocess mode reads every worker's files; otherwise REGISTRY."""
    path = multiprocess_dir()
    if path is None:
        return REGISTRY
    if not os.path.isdir(path):
        raise ValueError(f"PROMETHEUS_MULTIPROC_DIR={path!r} is not a directory")
    registry = CollectorRegistry()
    multiprocess.MultiProcessCollector(registry, path=path)  # type: ignore[no-untyped-call]
    return registry


def mark_process_dead(pid: int, path: str | None = None) -> None:
    """Drop the live gauges of a worker that exited (multiprocess mode)."""
    path = path or multiprocess_dir()
    if path is None:
        raise ValueError("mark_process_dead needs PROMETHEUS_MULTIPROC_DIR or an explicit path")
    multiprocess.mark_process_dead(pid, path)  # type: ignore[no-untyped-call]


def make_asgi_app(registry: Collector | None = None) -> Callable[..., Any]:
    """An ASGI app serving the metrics of ``registry`` (default :func:`metrics_registry`)."""
    app = _make_asgi_app(registry if registry is not None else metrics_registry())

    # prometheus-client answers HEAD with 405: answer it as GET, without the body.
    async def metrics_app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope.get("type") != "http" or scope.get("method") != "HEAD":
            await app(scope, receive, send)
            return

        started: list[dict[str, Any]] = []

        async def headers_only(message: dict[str, Any]) -> None:
            if message.get("type") == "http.response.start":
                started.append(message)  # sent with the length of the body it announces
                return
            if message.get("type") == "http.response.body" and started:
                start = started.pop()
                length = (b"Content-Length", str(len(message.get("body", b""))).encode())
                await send({**start, "headers": [*start.get("headers", []), length]})
                message = {**message, "body": b""}
            await send(message)

        await app({**scope, "method": "GET"}, receive, headers_only)

    return metrics_app


def make_wsgi_app(registry: Collector | None = None) -> Callable[..., Any]:
    """A WSGI app serving the metrics of ``registry`` (default :func:`metrics_registry`)."""
    app = _make_wsgi_app(registry if registry is not None else metrics_registry())

    # prometheus-client answers HEAD with 405: answer it as GET, without the body.
    def metrics_app(environ: dict[str, Any], start_response: Any) -> Iterable[bytes]:
        if environ.get("REQUEST_METHOD") != "HEAD":
            body: Iterable[bytes] = app(environ, start_response)
            return body
        answer: list[Any] = []
        length = sum(
            len(block)
            for block in app({**environ, "REQUEST_METHOD": "GET"}, lambda *a: answer.extend(a))
        )
        status, headers = answer[0], answer[1]
        start_response(status, [*headers, ("Content-Length", str(length))])
        return []

    return metrics_app


IDLE_TIMEOUT = 30.0
"""Seconds a ``/metrics`` connection may stay silent before the server hangs up on it."""


class _Server(ThreadingMixIn, WSGIServer):
    """One daemon thread per request, as prometheus-client's server."""

    daemon_threads = True


def _server_for(addr: str, port: int, app: Callable[..., Any], idle_timeout: float) -> Any:
    """A WSGI server on ``addr:port`` (IPv4 or IPv6, as ``addr`` says), quiet and bounded."""
    family, _, _, _, sockaddr = socket.getaddrinfo(
        addr, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
    )[0]

    class Server(_Server):
        address_family = family

    class Handler(WSGIRequestHandler):
        timeout = idle_timeout  # a silent or vanished client must not keep its thread

        def handle(self) -> None:
            """Serve one request; a client that timed out or hung up is just let go."""
            try:
                super().handle()
            except (TimeoutError, ConnectionError):
                self.close_connection = True

        def log_message(self, format: str, *args: Any) -> None:
            """Log nothing (a scrape every few seconds)."""

    return make_server(str(sockaddr[0]), port, app, Server, handler_class=Handler)


class MetricsServer:
    """A running ``/metrics`` HTTP server on a daemon thread; ``close()`` stops it."""

    def __init__(self, httpd: Any, thread: threading.Thread) -> None:
        """Take over a started server and its thread."""
        self._httpd = httpd
        self._thread = thread
        self.host: str = httpd.server_address[0]
        self.port: int = httpd.server_address[1]

    @property
    def url(self) -> str:
        """The address to scrape."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}/metrics"

    def close(self) -> None:
        """Stop serving and release the port."""
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join()

    def __enter__(self) -> MetricsServer:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


class PortInUseError(OSError):
    """``start_metrics_server`` found its port taken by another process or server."""


def start_metrics_server(
    port: int = DEFAULT_PORT,
    addr: str = "127.0.0.1",
    registry: Collector | None = None,
    *,
    idle_timeout: float = IDLE_TIMEOUT,
) -> MetricsServer:
    """Serve ``/metrics`` on ``addr:port`` (loopback unless told otherwise; ``port=0``: any).

    GET and HEAD; a connection silent for ``idle_timeout`` seconds is closed. Raises
    ``PortInUseError`` (an ``OSError``) when the port is taken.
    """
    if isinstance(idle_timeout, bool) or not isinstance(idle_timeout, (int, float)):
        raise TypeError(f"idle_timeout must be seconds (an int or float), got {idle_timeout!r}")
    if not idle_timeout > 0:
        raise ValueError(f"idle_timeout must be > 0 seconds, got {idle_timeout!r}")
    app = make_wsgi_app(registry)
    try:
        httpd = _server_for(addr, port, app, idle_timeout)
    except OSError as exc:
        if exc.errno != errno.EADDRINUSE:
            raise
        where = f"[{addr}]:{port}" if ":" in addr else f"{addr}:{port}"
        raise PortInUseError(
            errno.EADDRINUSE,
            f"cannot serve /metrics on {where}: the port is already in use (another "
            "/metrics server in this process, another process, or an earlier run still "
            "exiting); pass another port=, port=0 for any free port, or stop the other server",
        ) from exc
    thread = threading.Thread(target=httpd.serve_forever, name="toolkit-metrics", daemon=True)
    thread.start()
    return MetricsServer(httpd, thread)
