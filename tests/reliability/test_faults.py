"""The fault makers themselves: each fault is real before any cache is tested against it."""

from __future__ import annotations

import socket
import sqlite3
from pathlib import Path

import pytest

from tests.reliability.faults import (
    BlackHoleServer,
    RefusingPort,
    read_only,
    scribble,
    sqlite_lock_held,
    truncate,
    wait_for,
)


def _make_db(path: Path, rows: int = 200) -> None:
    with sqlite3.connect(path) as conn:
        conn.execute("CREATE TABLE t (k TEXT PRIMARY KEY, v BLOB)")
        conn.executemany("INSERT INTO t VALUES (?, ?)", [(str(i), b"x" * 500) for i in range(rows)])
    conn.close()


def test_black_hole_accepts_and_never_answers(black_hole: BlackHoleServer) -> None:
    with socket.create_connection(("127.0.0.1", black_hole.port), timeout=2) as sock:
        sock.sendall(b"*1\r\n$4\r\nPING\r\n")
        sock.settimeout(0.2)
        with pytest.raises(TimeoutError):
            sock.recv(1)
    assert wait_for(lambda: black_hole.accepted == 1, timeout=5)


def test_black_hole_counts_connections_open_at_once(black_hole: BlackHoleServer) -> None:
    socks = [socket.create_connection(("127.0.0.1", black_hole.port), timeout=2) for _ in range(3)]
    assert wait_for(lambda: black_hole.open_now == 3, timeout=5)
    for sock in socks:
        sock.close()
    assert wait_for(lambda: black_hole.open_now == 0, timeout=5)
    fresh = socket.create_connection(("127.0.0.1", black_hole.port), timeout=2)
    fresh.close()
    assert wait_for(lambda: black_hole.accepted == 4, timeout=5)
    assert black_hole.peak_open == 3


def test_refusing_port_refuses(refusing_port: RefusingPort) -> None:
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", refusing_port.port), timeout=2).close()


def test_lock_holder_blocks_writers_not_readers(tmp_path: Path) -> None:
    path = tmp_path / "locked.db"
    _make_db(path)
    with sqlite_lock_held(path, seconds=5):
        conn = sqlite3.connect(path, timeout=0.05)
        try:
            assert conn.execute("SELECT count(*) FROM t").fetchone() == (200,)
            with pytest.raises(sqlite3.OperationalError, match="locked"):
                conn.execute("INSERT INTO t VALUES ('new', x'00')")
        finally:
            conn.close()


def test_read_only_file_refuses_writes(tmp_path: Path) -> None:
    path = tmp_path / "ro.db"
    _make_db(path)
    with read_only(path):
        conn = sqlite3.connect(path)
        try:
            assert conn.execute("SELECT count(*) FROM t").fetchone() == (200,)
            with pytest.raises(sqlite3.OperationalError, match="readonly"):
                conn.execute("INSERT INTO t VALUES ('new', x'00')")
        finally:
            conn.close()
    path.write_bytes(b"")  # writable again once the fault is lifted


@pytest.mark.parametrize("damage", ["truncated", "scribbled-header", "scribbled-pages"])
def test_damaged_files_are_damaged(tmp_path: Path, damage: str) -> None:
    path = tmp_path / "bad.db"
    _make_db(path)
    if damage == "truncated":
        truncate(path, 5000)
    elif damage == "scribbled-header":
        scribble(path, 0, 100)
    else:
        scribble(path, 4096, 8192)
    conn = sqlite3.connect(path)
    try:
        rows = conn.execute("SELECT count(*) FROM t").fetchone()
        check = conn.execute("PRAGMA integrity_check").fetchall()
    except sqlite3.DatabaseError:
        return  # refused outright: damaged
    finally:
        conn.close()
    assert (rows, check) != ((200,), [("ok",)])
