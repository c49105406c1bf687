"""Real faults made on demand: dead and silent sockets, locked, read-only and broken files."""

from __future__ import annotations

import contextlib
import os
import selectors
import shutil
import socket
import stat
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from types import TracebackType

import pytest

LOOPBACK = "127.0.0.1"


def free_port() -> int:
    """A loopback TCP port nobody listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((LOOPBACK, 0))
        return int(sock.getsockname()[1])


class BlackHoleServer:
    """Accepts TCP connections on loopback, reads and discards requests, never answers.

    Tracks how many connections are open at once (``peak_open``), so a test can prove a
    client never holds more than its pool allows.
    """

    def __init__(self) -> None:
        self._listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._listener.bind((LOOPBACK, 0))
        self._listener.listen(128)
        self._listener.setblocking(False)
        self.port = int(self._listener.getsockname()[1])
        self.url = f"redis://{LOOPBACK}:{self.port}/0"
        self.accepted = 0
        self.peak_open = 0
        self._open: set[socket.socket] = set()
        self._selector = selectors.DefaultSelector()
        self._selector.register(self._listener, selectors.EVENT_READ)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, name="black-hole", daemon=True)

    @property
    def open_now(self) -> int:
        """Connections clients hold open right now."""
        return len(self._open)

    def _serve(self) -> None:
        while not self._stop.is_set():
            for ready, _ in self._selector.select(timeout=0.05):
                sock = ready.fileobj
                assert isinstance(sock, socket.socket)
                if sock is self._listener:
                    self._accept()
                    continue
                try:
                    data = sock.recv(65536)
                except OSError:
                    data = b""
                if not data:  # the client hung up
                    self._selector.unregister(sock)
                    self._open.discard(sock)
                    sock.close()

    def _accept(self) -> None:
        try:
            conn, _ = self._listener.accept()
        except OSError:
            return
        conn.setblocking(False)
        self._selector.register(conn, selectors.EVENT_READ)
        self._open.add(conn)
        self.accepted += 1
        self.peak_open = max(self.peak_open, len(self._open))

    def __enter__(self) -> BlackHoleServer:
        self._thread.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._stop.set()
        self._thread.join()
        self._selector.close()
        self._listener.close()
        for conn in self._open:
            conn.close()
        self._open.clear()


class RefusingPort:
    """A loopback port bound but not listening: connecting gets ECONNREFUSED, reliably."""

    def __init__(self) -> None:
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._sock.bind((LOOPBACK, 0))  # held so no one else can take the port meanwhile
        self.port = int(self._sock.getsockname()[1])
        self.url = f"redis://{LOOPBACK}:{self.port}/0"

    def __enter__(self) -> RefusingPort:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._sock.close()


# -- processes ----------------------------------------------------------------------------


def worktree_env() -> dict[str, str]:
    """Environment for a child Python that must import this checkout of ``toolkit``."""
    root = str(Path(__file__).resolve().parents[2])
    env = dict(os.environ)
    env["PYTHONPATH"] = root + os.pathsep + env.get("PYTHONPATH", "")
    return env


def stop_process(proc: subprocess.Popen[bytes] | subprocess.Popen[str]) -> None:
    """Kill ``proc`` if it still runs and reap it, closing its pipes."""
    if proc.poll() is None:
        proc.kill()
    proc.wait()
    for stream in (proc.stdin, proc.stdout, proc.stderr):
        if stream is not None:
            stream.close()


_LOCK_HOLDER = textwrap.dedent(
    """
    import sqlite3, sys, time
    conn = sqlite3.connect(sys.argv[1], timeout=30, isolation_level=None)
    conn.execute(sys.argv[3])
    print("locked", flush=True)
    time.sleep(float(sys.argv[2]))
    conn.execute("COMMIT")
    conn.close()
    """
)


@contextlib.contextmanager
def sqlite_lock_held(
    path: Path, seconds: float, statement: str = "BEGIN IMMEDIATE"
) -> Iterator[subprocess.Popen[str]]:
    """Another process holds a SQLite write lock (``BEGIN IMMEDIATE``) on ``path`` for a while."""
    proc = subprocess.Popen(
        [sys.executable, "-c", _LOCK_HOLDER, str(path), str(seconds), statement],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        if line.strip() != "locked":
            assert proc.stderr is not None
            raise RuntimeError(f"lock holder failed: {line!r} {proc.stderr.read()!r}")
        yield proc
    finally:
        stop_process(proc)


# -- files --------------------------------------------------------------------------------


@contextlib.contextmanager
def read_only(path: Path) -> Iterator[Path]:
    """Make ``path`` unwritable even for root (chmod, or the immutable flag as root)."""
    if os.geteuid() != 0:
        mode = path.stat().st_mode
        path.chmod(stat.S_IRUSR | stat.S_IRGRP | stat.S_IROTH)
        try:
            yield path
        finally:
            path.chmod(mode)
        return
    chattr = shutil.which("chattr")
    if chattr is None or subprocess.run([chattr, "+i", str(path)], capture_output=True).returncode:
        pytest.skip("running as root without a working chattr: cannot make a file read-only")
    try:
        yield path
    finally:
        subprocess.run([chattr, "-i", str(path)], check=True)


def truncate(path: Path, keep: int) -> None:
    """Cut ``path`` to its first ``keep`` bytes."""
    with path.open("r+b") as fh:
        fh.truncate(keep)


def scribble(path: Path, offset: int, length: int, byte: int = 0xA5) -> None:
    """Overwrite ``length`` bytes of ``path`` at ``offset`` with garbage."""
    with path.open("r+b") as fh:
        fh.seek(offset)
        fh.write(bytes([byte]) * length)


def wait_for(predicate: object, timeout: float, interval: float = 0.02) -> bool:
    """Poll ``predicate()`` until it is true or ``timeout`` seconds pass; its last value."""
    assert callable(predicate)
    deadline = time.monotonic() + timeout
    while True:
        if predicate():
            return True
        if time.monotonic() >= deadline:
            return bool(predicate())
        time.sleep(interval)


# -- a Redis server we may kill -----------------------------------------------------------


def redis_binary() -> str:
    """The ``redis-server`` binary, or skip (fail under ``TOOLKIT_REQUIRE_REDIS=1``)."""
    path = shutil.which("redis-server")
    if path is None:
        reason = "redis-server binary not found: cannot start a Redis to kill"
        if os.environ.get("TOOLKIT_REQUIRE_REDIS") == "1":
            pytest.fail(reason)
        pytest.skip(reason)
    return path


class RedisProcess:
    """A private ``redis-server`` on a fixed loopback port that a test may kill and restart."""

    def __init__(self, workdir: Path, *, persistent: bool = False) -> None:
        self.binary = redis_binary()
        self.workdir = workdir
        self.port = free_port()
        self.url = f"redis://{LOOPBACK}:{self.port}/0"
        self.persistent = persistent
        self.proc: subprocess.Popen[bytes] | None = None
        self.starts = 0

    def start(self) -> None:
        """Start the server (again) on the same port and wait until it answers PING."""
        args = [self.binary, "--port", str(self.port), "--bind", LOOPBACK, "--save", ""]
        args += ["--dir", str(self.workdir), "--protected-mode", "no"]
        if self.persistent:
            # Each write is on disk before it is acknowledged: a kill loses only unacked writes.
            args += ["--appendonly", "yes", "--appendfsync", "always"]
        else:
            args += ["--appendonly", "no"]
        self.starts += 1
        log = self.workdir / f"redis-{self.port}-{self.starts}.log"
        with log.open("wb") as out:
            self.proc = subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT)
        if not wait_for(self.answers, timeout=10):
            self.kill()
            raise RuntimeError(f"redis-server did not start: {log.read_text(errors='replace')}")

    def answers(self) -> bool:
        """Whether the server replies to PING right now."""
        try:
            with socket.create_connection((LOOPBACK, self.port), timeout=0.5) as sock:
                sock.sendall(b"PING\r\n")
                return sock.recv(16).startswith(b"+PONG")
        except OSError:
            return False

    def kill(self) -> None:
        """SIGKILL the server: no shutdown, no final save, connections cut mid-stream."""
        if self.proc is not None:
            stop_process(self.proc)
            self.proc = None

    def __enter__(self) -> RedisProcess:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.kill()
