"""SQLite under 4 processes x 4 threads on one file, like diskcache's stress_test_core."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.reliability.conftest import Tally
from tests.reliability.faults import stop_process, worktree_env
from tests.reliability.sqlite_stress_worker import KEYS
from tests.reliability.stacks import carries_key, close, sqlite_cache

PROCESSES = 4
THREADS = 4
OPS = 500


@pytest.mark.slow
def test_processes_and_threads_share_one_file(tmp_path: Path, tally: Callable[..., Tally]) -> None:
    path = tmp_path / "stress.db"
    close(sqlite_cache(path))  # create the schema once, as an application would
    row = tally(
        f"sqlite: {PROCESSES} processes x {THREADS} threads get/set/clear, one file", layer="bare"
    )
    procs = [
        subprocess.Popen(
            [
                sys.executable,
                "-m",
                "tests.reliability.sqlite_stress_worker",
                str(path),
                str(p),
                str(THREADS),
                str(OPS),
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=worktree_env(),
            cwd=Path(__file__).resolve().parents[2],
        )
        for p in range(PROCESSES)
    ]
    try:
        for proc in procs:
            out, err = proc.communicate(timeout=240)
            assert proc.returncode == 0, err[-2000:]
            row.merge(json.loads(out.strip().splitlines()[-1]))
    finally:
        for proc in procs:
            stop_process(proc)

    assert row.operations == PROCESSES * THREADS * OPS
    assert row.errors == 0, f"errors reached callers: {row.error_types}"
    assert row.wrong == 0
    conn = sqlite3.connect(path)
    try:
        assert conn.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
    finally:
        conn.close()
    cache = sqlite_cache(path)
    try:
        survivors = cache.get(KEYS)
    finally:
        close(cache)
    assert all(carries_key(value, fk) for fk, value in survivors.items())
