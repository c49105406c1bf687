"""Find or start a real PostgreSQL (DESIGN.md rules); shared by the tests and the benchmarks.

``POSTGRES_URL`` if set, else ``postgresql://postgres@127.0.0.1:5432/test`` if it answers,
else a private server from Debian's ``postgresql`` binaries (``initdb`` + ``pg_ctl``) on a
free loopback port in a temporary directory, else ``PostgresUnavailable``.
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path

import psycopg

__all__ = ["DEFAULT_URL", "PostgresServer", "PostgresUnavailable", "answers", "find_or_start"]

DEFAULT_URL = "postgresql://postgres@127.0.0.1:5432/test"
_START_TIMEOUT = 30


class PostgresUnavailable(Exception):
    """No PostgreSQL server could be found or started; the message says why."""


def answers(url: str) -> bool:
    """Whether a server at ``url`` accepts a connection and a query."""
    try:
        with psycopg.connect(url, connect_timeout=2) as conn:
            conn.execute("SELECT 1")
    except psycopg.Error:
        return False
    return True


def _binary(name: str) -> str:
    found = shutil.which(name) or next(
        iter(sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"), reverse=True)), None
    )
    if found is None:
        raise PostgresUnavailable(
            f"no POSTGRES_URL, nothing answers at {DEFAULT_URL}, and no {name} binary "
            "(Debian package postgresql)"
        )
    return found


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class PostgresServer:
    """A private server in a temporary directory: started, stopped, restarted by its owner."""

    def __init__(self) -> None:
        """Initialize a data directory (as the ``postgres`` user when run as root)."""
        self._initdb = _binary("initdb")
        self._pg_ctl = _binary("pg_ctl")
        self.port = _free_port()
        self._tmp = tempfile.mkdtemp(prefix="toolkit-pg-")
        self.datadir = str(Path(self._tmp) / "data")
        self._user: str | None = None
        if os.geteuid() == 0:  # initdb refuses to run as root
            try:
                entry = pwd.getpwnam("postgres")
            except KeyError:
                raise PostgresUnavailable("running as root and no postgres user") from None
            self._user = "postgres"
            os.chown(self._tmp, entry.pw_uid, entry.pw_gid)
        self._run(
            self._initdb, "-D", self.datadir, "-A", "trust", "-U", "postgres", "--no-sync", "-E",
            "UTF8",
        )  # fmt: skip
        self.url = f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def _run(self, *args: str) -> None:
        command = list(args) if self._user is None else ["runuser", "-u", self._user, "--", *args]
        done = subprocess.run(
            command, capture_output=True, text=True, timeout=_START_TIMEOUT * 2, check=False
        )
        if done.returncode != 0:
            raise PostgresUnavailable(f"{args[0]} failed: {done.stderr.strip()[-500:]}")

    def start(self) -> None:
        """Start the server and wait until it accepts connections."""
        options = (
            f"-p {self.port} -k {self._tmp} -c listen_addresses=127.0.0.1 -c fsync=off "
            "-c synchronous_commit=off -c full_page_writes=off -c max_connections=200"
        )
        self._run(
            self._pg_ctl, "-D", self.datadir, "-l", str(Path(self._tmp) / "log"), "-w", "-t",
            str(_START_TIMEOUT), "-o", options, "start",
        )  # fmt: skip

    def stop(self, mode: str = "fast") -> None:
        """Stop the server (``immediate`` is a crash: no shutdown checkpoint)."""
        self._run(self._pg_ctl, "-D", self.datadir, "-m", mode, "-w", "stop")

    def remove(self) -> None:
        """Stop the server if it runs and delete its directory."""
        with suppress(PostgresUnavailable):
            self.stop("immediate")
        shutil.rmtree(self._tmp, ignore_errors=True)


@contextmanager
def private_postgres() -> Iterator[PostgresServer]:
    """A started private server, removed afterwards."""
    server = PostgresServer()
    try:
        server.start()
        yield server
    finally:
        server.remove()


@contextmanager
def find_or_start() -> Iterator[str]:
    """The URL of a server to use, starting a private one only if none is around."""
    url = os.environ.get("POSTGRES_URL")
    if url:
        if not answers(url):
            raise PostgresUnavailable(f"POSTGRES_URL={url} does not answer")
        yield url
        return
    if answers(DEFAULT_URL):
        yield DEFAULT_URL
        return
    with private_postgres() as server:
        yield server.url
