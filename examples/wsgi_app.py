"""A WSGI app that serves ``/metrics`` beside its own routes, on the standard library's wsgiref.

    python examples/wsgi_app.py            # serves, makes a few requests, prints, exits
    python examples/wsgi_app.py --serve    # keeps serving on 127.0.0.1:8000 until Ctrl-C

Any WSGI server (gunicorn, uWSGI) runs ``app`` the same way; for forked workers set
``PROMETHEUS_MULTIPROC_DIR`` and call ``make_wsgi_app()`` without a registry.
"""

from __future__ import annotations

import sys
import threading
import time
import urllib.request
from collections.abc import Callable, Iterable
from typing import Any
from urllib.parse import parse_qs
from wsgiref.simple_server import WSGIRequestHandler, make_server

from prometheus_client import CollectorRegistry

from toolkit import InMemoryCache, cached, observe
from toolkit.exposition import make_wsgi_app

registry = CollectorRegistry()
cache = observe(InMemoryCache(), registry=registry)
metrics_app = make_wsgi_app(registry)

StartResponse = Callable[..., Any]


@cached("greetings", ttl=60, cache=cache)
def greeting(name: str) -> str:
    """Pretend this is expensive."""
    time.sleep(0.02)
    return f"Hello, {name}!"


def app(environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
    """``/hello?name=...`` answers from the cache; ``/metrics`` is for Prometheus."""
    path = environ.get("PATH_INFO", "/")
    if path == "/metrics":
        return metrics_app(environ, start_response)  # type: ignore[no-any-return]
    if path == "/hello":
        name = parse_qs(environ.get("QUERY_STRING", "")).get("name", ["world"])[0]
        start_response("200 OK", [("Content-Type", "text/plain; charset=utf-8")])
        return [greeting(name).encode()]
    start_response("404 Not Found", [("Content-Type", "text/plain")])
    return [b"not found\n"]


class QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        """Keep request logs out of the example's output."""


def fetch(url: str) -> str:
    with urllib.request.urlopen(url, timeout=5) as response:
        return str(response.read().decode())


def main() -> None:
    serve = "--serve" in sys.argv
    with make_server("127.0.0.1", 8000 if serve else 0, app, handler_class=QuietHandler) as server:
        base = f"http://127.0.0.1:{server.server_port}"
        if serve:
            print(f"serving {base}/hello?name=Ada and {base}/metrics; Ctrl-C stops")
            server.serve_forever()
            return
        thread = threading.Thread(target=server.serve_forever, daemon=True)
        thread.start()
        try:
            for name in ("Ada", "Ada", "Grace"):
                print(fetch(f"{base}/hello?name={name}"))
            for line in fetch(f"{base}/metrics").splitlines():
                if line.startswith("cache_gets_total"):
                    print(line)
        finally:
            server.shutdown()
            thread.join()


if __name__ == "__main__":
    main()
