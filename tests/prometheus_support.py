"""A real Prometheus for tests: found on PATH, started on a free loopback port, always stopped.

DESIGN.md's rule: the ``prometheus`` binary (Debian package ``prometheus``) is started by the
test with a temporary config and data dir; without it the test skips with the reason, unless
``TOOLKIT_REQUIRE_PROMETHEUS=1`` (CI), which turns the skip into a failure.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

__all__ = [
    "PrometheusServer",
    "QueryError",
    "free_port",
    "http_get",
    "require_binary",
    "running_prometheus",
    "stop_process",
]

JOB = "toolkit-test"
_READY_TIMEOUT = 30.0


class QueryError(Exception):
    """Prometheus refused a query (bad PromQL) or answered with an error."""


def free_port() -> int:
    """Return a TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def require_binary(name: str) -> str:
    """Return the path of ``name`` on PATH, else skip (fail under TOOLKIT_REQUIRE_PROMETHEUS=1)."""
    path = shutil.which(name)
    if path is None:
        reason = f"`{name}` is not installed (Debian package `prometheus`)"
        if os.environ.get("TOOLKIT_REQUIRE_PROMETHEUS") == "1":
            pytest.fail(f"{reason}, and TOOLKIT_REQUIRE_PROMETHEUS=1 requires it")
        pytest.skip(reason)
    return path


def http_get(url: str, timeout: float = 5.0) -> tuple[int, str]:
    """GET ``url`` and return ``(status, body)``, HTTP errors included."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return int(response.status), response.read().decode()
    except urllib.error.HTTPError as exc:
        with exc:
            return int(exc.code), exc.read().decode()


@dataclass
class PrometheusServer:
    """A running Prometheus and the HTTP API calls tests need."""

    url: str
    job: str
    process: subprocess.Popen[bytes]
    log: Path

    def query(self, expr: str) -> list[dict[str, Any]]:
        """Evaluate ``expr`` as an instant query; raise ``QueryError`` if Prometheus refuses it."""
        status, body = http_get(
            f"{self.url}/api/v1/query?{urllib.parse.urlencode({'query': expr})}"
        )
        answer = json.loads(body)
        if status != 200 or answer.get("status") != "success":
            raise QueryError(f"{answer.get('errorType')}: {answer.get('error')} in {expr!r}")
        data = answer["data"]
        if data["resultType"] in ("scalar", "string"):
            return [{"metric": {}, "value": data["result"]}]
        result: list[dict[str, Any]] = data["result"]
        return result

    def wait_for(self, expr: str, *, timeout: float = 30.0) -> list[dict[str, Any]]:
        """Poll ``expr`` until it returns at least one series; fail with the log tail otherwise."""
        deadline = time.monotonic() + timeout
        while True:
            result = self.query(expr)
            if result:
                return result
            if self.process.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"Prometheus never answered {expr!r} with data\n{self.log_tail()}")
            time.sleep(0.25)

    def log_tail(self, lines: int = 30) -> str:
        """The last lines Prometheus logged, for failure messages."""
        text = self.log.read_text(errors="replace") if self.log.exists() else ""
        return "\n".join(text.splitlines()[-lines:])


def _write_config(directory: Path, targets: Sequence[str], rule_files: Sequence[Path]) -> Path:
    # JSON is valid YAML, and needs no YAML library.
    config = {
        "global": {"scrape_interval": "1s", "scrape_timeout": "1s", "evaluation_interval": "1s"},
        "rule_files": [str(path.resolve()) for path in rule_files],
        "scrape_configs": [{"job_name": JOB, "static_configs": [{"targets": list(targets)}]}],
    }
    path = directory / "prometheus.yml"
    path.write_text(json.dumps(config, indent=2))
    return path


@contextmanager
def running_prometheus(
    tmp_path: Path, targets: Sequence[str], rule_files: Sequence[Path] = ()
) -> Iterator[PrometheusServer]:
    """Start Prometheus scraping ``targets`` every second; stop it on exit, whatever happens."""
    binary = require_binary("prometheus")
    home = tmp_path / "prometheus"
    home.mkdir()
    config = _write_config(home, targets, rule_files)
    port = free_port()
    log = home / "prometheus.log"
    with log.open("wb") as log_file:
        process = subprocess.Popen(
            [
                binary,
                f"--config.file={config}",
                f"--storage.tsdb.path={home / 'data'}",
                f"--web.listen-address=127.0.0.1:{port}",
                "--enable-feature=exemplar-storage",
                "--log.level=warn",
            ],
            stdout=log_file,
            stderr=subprocess.STDOUT,
        )
    server = PrometheusServer(f"http://127.0.0.1:{port}", JOB, process, log)
    try:
        _wait_ready(server)
        yield server
    finally:
        stop_process(process)


def stop_process(process: subprocess.Popen[bytes]) -> None:
    """Terminate ``process`` if it still runs, kill it after 10 s, and reap it."""
    if process.poll() is not None:
        return
    process.terminate()
    try:
        process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def _wait_ready(server: PrometheusServer) -> None:
    deadline = time.monotonic() + _READY_TIMEOUT
    while time.monotonic() < deadline:
        if server.process.poll() is not None:
            pytest.fail(f"Prometheus exited with {server.process.returncode}\n{server.log_tail()}")
        try:
            status, _ = http_get(f"{server.url}/-/ready", timeout=1.0)
        except OSError:
            status = 0
        if status == 200:
            return
        time.sleep(0.1)
    pytest.fail(f"Prometheus was not ready after {_READY_TIMEOUT:.0f}s\n{server.log_tail()}")
