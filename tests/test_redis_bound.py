"""``RedisCache.from_url`` keeps its declared ``max_call_seconds`` for a whole call.

Behind a proxy delaying each reply, a call of several round trips (a connect, script chunks,
SCAN/UNLINK loops) either finishes or stops with ``CacheTimeoutError`` within the bound. The
slack on the bound is generous (a busy machine), far below the overruns seen without it.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest

from tests.redis_support import unique_prefix
from toolkit import CacheTimeoutError, FullKey
from toolkit.backends.redis import RedisCache

pytestmark = pytest.mark.redis

DELAY = 0.3
"""Seconds the proxy holds each chunk of a reply: slow, but within the socket timeout."""
SOCKET_TIMEOUT = 0.4
CONNECT_TIMEOUT = 0.1
BOUND = 1.0
SLACK = 0.3
ENTRIES = 3_000


class DelayingProxy:
    """A TCP proxy to Redis that forwards requests at once and delays every reply chunk."""

    def __init__(self, upstream: tuple[str, int], delay: float) -> None:
        self.upstream = upstream
        self.delay = delay
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port: int = self.listener.getsockname()[1]
        self.closed = threading.Event()
        self.sockets: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while not self.closed.is_set():
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            server = socket.create_connection(self.upstream)
            self.sockets += [client, server]
            threading.Thread(target=self._pump, args=(client, server, 0.0), daemon=True).start()
            threading.Thread(
                target=self._pump, args=(server, client, self.delay), daemon=True
            ).start()

    def _pump(self, source: socket.socket, sink: socket.socket, delay: float) -> None:
        try:
            while chunk := source.recv(65536):
                if delay:
                    time.sleep(delay)
                sink.sendall(chunk)
        except OSError:
            pass
        finally:
            for sock in (source, sink):
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)

    def close(self) -> None:
        self.closed.set()
        self.listener.close()
        for sock in self.sockets:
            sock.close()


@pytest.fixture
def slow_cache(redis_url: str) -> Iterator[tuple[RedisCache[Any], RedisCache[Any]]]:
    """``(cache behind the delaying proxy, cache straight to Redis)`` on one prefix."""
    host, port = redis_url.split("//")[1].split("/")[0].split(":")
    proxy = DelayingProxy((host, int(port)), DELAY)
    prefix = unique_prefix()
    slow: RedisCache[Any] = RedisCache.from_url(
        f"redis://127.0.0.1:{proxy.port}/0",
        prefix=prefix,
        socket_timeout=SOCKET_TIMEOUT,
        socket_connect_timeout=CONNECT_TIMEOUT,
        max_call_seconds=BOUND,
    )
    direct: RedisCache[Any] = RedisCache.from_url(redis_url, prefix=prefix)
    try:
        yield slow, direct
    finally:
        direct.clear()
        slow.close()
        direct.close()
        proxy.close()


def _entries() -> dict[FullKey, tuple[Any, None]]:
    return {(("bound",), f"k{i}"): (i, None) for i in range(ENTRIES)}


def _timed(call: Any) -> float:
    started = time.monotonic()
    with contextlib.suppress(CacheTimeoutError):  # stopping in time is keeping the bound
        call()
    return time.monotonic() - started


def test_declared_bound_holds_for_sync_calls(
    slow_cache: tuple[RedisCache[Any], RedisCache[Any]],
) -> None:
    slow, direct = slow_cache
    assert slow.max_call_seconds == BOUND
    direct.set(_entries())
    keys = list(_entries())
    assert _timed(lambda: slow.get(keys[:1])) <= BOUND + SLACK  # includes the connect
    assert _timed(lambda: slow.get(keys)) <= BOUND + SLACK
    assert _timed(lambda: slow.set(_entries())) <= BOUND + SLACK
    assert _timed(lambda: slow.clear([("bound",)])) <= BOUND + SLACK
    assert _timed(lambda: slow.clear()) <= BOUND + SLACK


def test_declared_bound_holds_for_async_calls(
    slow_cache: tuple[RedisCache[Any], RedisCache[Any]],
) -> None:
    slow, direct = slow_cache
    direct.set(_entries())
    keys = list(_entries())

    async def timed(call: Any) -> float:
        started = time.monotonic()
        with contextlib.suppress(CacheTimeoutError):
            await call
        return time.monotonic() - started

    async def run() -> list[float]:
        try:
            return [
                await timed(slow.aget(keys[:1])),
                await timed(slow.aget(keys)),
                await timed(slow.aset(_entries())),
                await timed(slow.aclear([("bound",)])),
            ]
        finally:
            await slow.aclose()

    assert max(asyncio.run(run())) <= BOUND + SLACK


def test_healthy_calls_of_many_round_trips_still_finish(
    slow_cache: tuple[RedisCache[Any], RedisCache[Any]],
) -> None:
    _, direct = slow_cache
    direct.set(_entries())
    assert direct.get(list(_entries())) == {key: value for key, (value, _) in _entries().items()}
    direct.clear([("bound",)])
    assert direct.get(list(_entries())) == {}
