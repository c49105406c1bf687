"""Find or start real Redis servers (DESIGN.md rules); shared by the tests and the benchmarks.

``REDIS_URL`` if set, else ``redis://127.0.0.1:6379/0`` if it answers, else a private
``redis-server`` on a free loopback port in a temporary directory, else ``RedisUnavailable``.
"""

from __future__ import annotations

import os
import random
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

import redis

__all__ = ["RedisUnavailable", "cluster_urls", "find_or_start_redis", "private_redis"]

DEFAULT_URL = "redis://127.0.0.1:6379/0"
_START_TIMEOUT = 10.0
_CLUSTER_NODE_ARGS = ("--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf")


class RedisUnavailable(Exception):
    """No Redis server could be found or started; the message says why."""


def _bindable(port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def free_port(*, cluster: bool = False) -> int:
    """A loopback TCP port nothing listens on (a cluster node also needs ``port + 10000``)."""
    if not cluster:
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port: int = sock.getsockname()[1]
            return port
    for _ in range(200):
        port = random.randint(20_000, 55_535)
        if _bindable(port) and _bindable(port + 10_000):
            return port
    raise RedisUnavailable("no free loopback port pair for a cluster node")


def answers(url: str) -> bool:
    """Whether a Redis server at ``url`` replies to PING within a short timeout."""
    client = redis.Redis.from_url(url, socket_timeout=0.5, socket_connect_timeout=0.5)
    try:
        return bool(client.ping())
    except (redis.RedisError, OSError):
        return False
    finally:
        client.close()


def _binary(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        raise RedisUnavailable(
            f"no REDIS_URL, nothing answers at {DEFAULT_URL}, and no {name} binary"
        )
    return path


@contextmanager
def _server(workdir: Path, *extra: str, cluster: bool = False) -> Iterator[int]:
    """Run one ``redis-server`` on a free loopback port until the context exits."""
    port = free_port(cluster=cluster)
    args = [_binary("redis-server"), "--port", str(port), "--bind", "127.0.0.1"]
    args += ["--save", "", "--appendonly", "no", "--dir", str(workdir), *extra]
    log = open(workdir / f"redis-{port}.log", "wb")  # noqa: SIM115 - closed below
    proc = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + _START_TIMEOUT
        while not answers(f"redis://127.0.0.1:{port}/0"):
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RedisUnavailable(
                    f"redis-server did not start on port {port}: "
                    f"{(workdir / f'redis-{port}.log').read_text(errors='replace')[-500:]}"
                )
            time.sleep(0.02)
        yield port
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()


@contextmanager
def private_redis(*extra: str) -> Iterator[str]:
    """A private ``redis-server`` (no persistence) while the context lasts; yields its URL."""
    with (
        tempfile.TemporaryDirectory(prefix="toolkit-redis-") as workdir,
        _server(Path(workdir), *extra) as port,
    ):
        yield f"redis://127.0.0.1:{port}/0"


@contextmanager
def find_or_start_redis() -> Iterator[str]:
    """Yield the URL of a Redis server by DESIGN.md's rules; raise ``RedisUnavailable`` if none."""
    url = os.environ.get("REDIS_URL")
    if url:
        if not answers(url):
            raise RedisUnavailable(f"REDIS_URL={url} does not answer PING")
        yield url
        return
    if answers(DEFAULT_URL):
        yield DEFAULT_URL
        return
    with private_redis() as started:
        yield started


@contextmanager
def cluster_urls(primaries: int = 3) -> Iterator[list[str]]:
    """Start ``primaries`` cluster-enabled servers, join them into one cluster, yield their URLs."""
    cli = _binary("redis-cli")
    with ExitStack() as stack:
        workdir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="toolkit-cluster-")))
        ports = []
        for index in range(primaries):
            node_dir = workdir / str(index)
            node_dir.mkdir()
            ports.append(stack.enter_context(_server(node_dir, *_CLUSTER_NODE_ARGS, cluster=True)))
        addresses = [f"127.0.0.1:{port}" for port in ports]
        created = subprocess.run(
            [cli, "--cluster", "create", *addresses, "--cluster-replicas", "0", "--cluster-yes"],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
        if created.returncode != 0:
            raise RedisUnavailable(
                f"redis-cli --cluster create failed: {created.stdout[-500:]}{created.stderr[-500:]}"
            )
        urls = [f"redis://{address}/0" for address in addresses]
        _wait_cluster_ok(urls)
        yield urls


def _wait_cluster_ok(urls: list[str]) -> None:
    deadline = time.monotonic() + _START_TIMEOUT
    for url in urls:
        client = redis.Redis.from_url(url, socket_timeout=1.0)
        try:
            while not _cluster_ok(client.execute_command("CLUSTER", "INFO")):  # type: ignore[no-untyped-call]
                if time.monotonic() > deadline:
                    raise RedisUnavailable(f"cluster at {url} never reached cluster_state:ok")
                time.sleep(0.05)
        finally:
            client.close()


def _cluster_ok(info: object) -> bool:
    if isinstance(info, dict):
        return info.get("cluster_state") in ("ok", b"ok")
    return isinstance(info, bytes) and b"cluster_state:ok" in info
