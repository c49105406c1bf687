"""SQLite faults made for real: a lock held by another process, a read-only file, a damaged
file, and a cache carried across ``fork()``."""

from __future__ import annotations

import asyncio
import json
import os
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.reliability.conftest import FAILED, Tally
from tests.reliability.faults import read_only, scribble, sqlite_lock_held, truncate
from tests.reliability.stacks import (
    aclose,
    carries_key,
    close,
    errors_counted,
    observed,
    sqlite_cache,
    tagged,
)
from toolkit import CacheError, FullKey

NS = ("reliability", "sqlite")
KEYS: list[FullKey] = [(NS, f"k{i}") for i in range(20)]
DEADLINE = 0.5
GRACE = 1.5
"""Scheduling slack on a loaded 2-core machine: a hang is many times longer."""
LOCK_SECONDS = 10.0
"""Longer than three rounds of operations can take (<= 2 s each); the holder is killed after."""


def _populate(path: Path) -> None:
    cache = sqlite_cache(path)
    try:
        cache.set({fk: (tagged(fk, 0, 0), None) for fk in KEYS})
    finally:
        close(cache)


def _check_reads(row: Tally, got: Any, asked: Sequence[FullKey], *, all_present: bool) -> None:
    if got is FAILED:
        return
    row.check(set(got) <= set(asked))
    row.check(all(carries_key(v, fk) for fk, v in got.items()))
    if all_present:
        row.check(set(got) == set(asked))


@dataclass
class _LockRun:
    reads: Tally
    writes: Tally
    served: int
    asked: int
    still_locked: bool
    recovered: bool
    landed: Any
    landed_asked: list[FullKey]
    set_errors: float


async def _under_write_lock(path: Path, reads: Tally, writes: Tally) -> _LockRun:
    """Reads and writes through ``observe`` while another process holds the write lock."""
    _populate(path)
    cache = sqlite_cache(path)
    stack, registry = observed(cache, deadline=DEADLINE, failure_threshold=1000)
    served = asked = 0
    news: list[FullKey] = []
    try:
        with sqlite_lock_held(path, seconds=LOCK_SECONDS) as holder:
            for i in range(3):
                batch = KEYS[i * 5 : i * 5 + 5]
                for got in (reads.call(stack.get, batch), await reads.acall(stack.aget, batch)):
                    _check_reads(reads, got, batch, all_present=False)
                    served += 0 if got is FAILED else len(got)
                    asked += len(batch)
                news.append((NS, f"new{i}"))
                new = {news[i]: (tagged(news[i], 1, i), None)}
                writes.call(stack.set, new)
                await writes.acall(stack.aset, new)
            still_locked = holder.poll() is None
        # Once the lock is gone (and the writes queued behind it drain), writes land again.
        after = (NS, "after")
        recovered = False
        for _ in range(50):
            writes.call(stack.set, {after: (tagged(after, 2, 0), None)})
            got = reads.call(stack.get, [after])
            _check_reads(reads, got, [after], all_present=False)
            if got is not FAILED and after in got:
                recovered = True
                break
            await asyncio.sleep(0.1)
        landed = reads.call(stack.get, news)
        _check_reads(writes, landed, news, all_present=False)
        set_errors = errors_counted(registry, operation="set")
    finally:
        await aclose(cache)
    return _LockRun(reads, writes, served, asked, still_locked, recovered, landed, news, set_errors)


@pytest.mark.slow
async def test_write_lock_held_by_another_process(
    tmp_path: Path, tally: Callable[..., Tally]
) -> None:
    run = await _under_write_lock(
        tmp_path / "locked.db",
        tally("sqlite: write lock held by another process (reads)"),
        tally("sqlite: write lock held by another process (writes)"),
    )
    assert run.still_locked, "the lock holder exited early: the fault was not in place throughout"
    assert run.recovered, "writes did not land again once the lock was released"
    assert run.reads.errors == 0 and run.writes.errors == 0
    assert run.reads.wrong == 0 and run.writes.wrong == 0
    assert run.reads.worst < DEADLINE + GRACE
    assert run.writes.worst < DEADLINE + GRACE
    # A write that could not land in time was dropped and counted, not silently lost.
    assert run.landed is not FAILED
    assert len(run.landed) == len(run.landed_asked) or run.set_errors > 0


@pytest.mark.slow
async def test_reads_served_while_another_process_holds_the_write_lock(
    tmp_path: Path, tally: Callable[..., Tally]
) -> None:
    run = await _under_write_lock(
        tmp_path / "locked.db",
        tally("sqlite: reads served during another process's write lock"),
        Tally("writes (not reported)"),
    )
    assert run.still_locked
    assert run.served == run.asked, f"{run.asked - run.served} of {run.asked} reads not served"


def _open_or_refuse(path: Path, row: Tally) -> Any:
    """Open a cache on a faulty file: it works or refuses with a clear ``CacheError``."""
    start = time.perf_counter()
    try:
        return sqlite_cache(path)
    except CacheError as exc:
        row.timed(time.perf_counter() - start)
        row.error(exc)
        row.note = "refused at open"
        assert str(path) in str(exc) or path.name in str(exc), f"unclear refusal: {exc!r}"
        return None


async def _drive(stack: Any, row: Tally, *, expect_values: bool) -> None:
    """Every operation, sync and async, through a stack; reads checked against ``KEYS``."""
    for i in range(3):
        batch = KEYS[i * 5 : i * 5 + 5]
        _check_reads(row, row.call(stack.get, batch), batch, all_present=expect_values)
        _check_reads(row, await row.acall(stack.aget, batch), batch, all_present=expect_values)
        new = {(NS, f"w{i}"): (tagged((NS, f"w{i}"), 3, i), None)}
        row.call(stack.set, new)
        await row.acall(stack.aset, new)
    row.call(stack.clear, [("elsewhere",)])
    await row.acall(stack.aclear, [("elsewhere",)])


def _bare_errors_are_cache_errors(row: Tally) -> None:
    unexpected = {name for name in row.error_types if not _is_cache_error_name(name)}
    assert not unexpected, f"the bare cache raised non-CacheError exceptions: {unexpected}"


def _is_cache_error_name(name: str) -> bool:
    import toolkit.errors

    cls = getattr(toolkit.errors, name, None)
    if cls is None:
        middleware = pytest.importorskip("toolkit.middleware")
        cls = getattr(middleware, name, None)
    return isinstance(cls, type) and issubclass(cls, CacheError)


async def _faulty_file(path: Path, what: str, tally: Callable[..., Tally]) -> None:
    """A cache on a faulty file, bare then inside ``observe``: the bare cache works or raises
    only ``CacheError`` (or refuses to open, clearly); through ``observe`` nothing is raised.
    No read is ever wrong."""
    bare_row = tally(f"sqlite: {what}", layer="bare")
    bare = _open_or_refuse(path, bare_row)
    if bare is None:
        return
    try:
        await _drive(bare, bare_row, expect_values=False)
    finally:
        await aclose(bare)
    _bare_errors_are_cache_errors(bare_row)
    assert bare_row.wrong == 0

    row = tally(f"sqlite: {what}")
    cache = _open_or_refuse(path, row)
    if cache is None:
        return
    stack, _ = observed(cache, deadline=DEADLINE)
    try:
        await _drive(stack, row, expect_values=False)
    finally:
        await aclose(cache)
    assert row.errors == 0 and row.wrong == 0


def _closed_database(path: Path) -> None:
    _populate(path)
    for leftover in path.parent.glob(f"{path.name}-*"):
        leftover.unlink()  # a cleanly closed WAL database needs no -wal/-shm files


async def test_read_only_file(tmp_path: Path, tally: Callable[..., Tally]) -> None:
    path = tmp_path / "ro.db"
    _closed_database(path)
    with read_only(path):
        await _faulty_file(path, "read-only file", tally)


DAMAGE: dict[str, Callable[[Path], object]] = {
    "truncated to 3000 bytes": lambda p: truncate(p, 3000),
    "header overwritten": lambda p: scribble(p, 0, 100),
    "pages overwritten": lambda p: scribble(p, 4096, 4096 * 3),
    "not a database": lambda p: p.write_bytes(b"just some text, not SQLite\n" * 200),
    "empty file": lambda p: p.write_bytes(b""),
}


@pytest.mark.parametrize("damage", list(DAMAGE))
async def test_damaged_file(tmp_path: Path, tally: Callable[..., Tally], damage: str) -> None:
    path = tmp_path / "damaged.db"
    _closed_database(path)
    DAMAGE[damage](path)
    await _faulty_file(path, damage, tally)


def _child(cache: Any) -> dict[str, Any]:
    """What the forked child does with the parent's cache; returns what it saw."""
    row = Tally("child")
    got = row.call(cache.get, KEYS)
    seen_all = got is not FAILED and set(got) == set(KEYS)
    if got is not FAILED:
        row.check(all(carries_key(v, fk) for fk, v in got.items()))
    child_key = (NS, "from-child")
    row.call(cache.set, {child_key: (tagged(child_key, 9, 0), None)})
    mine = row.call(cache.get, [child_key])
    row.check(mine is not FAILED and carries_key(mine.get(child_key), child_key))

    async def async_part() -> Any:
        return await cache.aget(KEYS[:3])

    agot = row.call(asyncio.run, async_part())
    row.check(agot is FAILED or set(agot) == set(KEYS[:3]))
    return {**row.counts(), "seen_all": seen_all}


def test_used_after_fork(tmp_path: Path, tally: Callable[..., Tally]) -> None:
    if not hasattr(os, "fork"):
        pytest.skip("no fork() on this platform")
    path = tmp_path / "forked.db"
    cache = sqlite_cache(path)
    row = tally("sqlite: cache used after fork()", layer="bare")
    try:
        row.call(cache.set, {fk: (tagged(fk, 0, 0), None) for fk in KEYS})
        _check_reads(row, row.call(cache.get, KEYS), KEYS, all_present=True)

        async def warm_async() -> Any:
            return await cache.aget(KEYS[:3])  # the parent's aiosqlite thread exists at fork

        _check_reads(row, row.call(asyncio.run, warm_async()), KEYS[:3], all_present=True)
        read_end, write_end = os.pipe()
        with warnings.catch_warnings():
            # Python 3.12+ warns about fork() with threads alive (the test runner's own).
            warnings.simplefilter("ignore", DeprecationWarning)
            pid = os.fork()
        if pid == 0:  # pragma: no cover - the child reports through the pipe
            code = 1
            try:
                os.close(read_end)
                report = _child(cache)
                os.write(write_end, json.dumps(report).encode())
                code = 0
            finally:
                os._exit(code)
        os.close(write_end)
        with os.fdopen(read_end, "rb") as pipe:
            raw = pipe.read()
        _, status = os.waitpid(pid, 0)
        assert os.waitstatus_to_exitcode(status) == 0, "the child crashed"
        report = json.loads(raw)
        row.merge(report)
        # The parent goes on using its cache and sees the child's write.
        child_key = (NS, "from-child")
        got = row.call(cache.get, [*KEYS, child_key])
        _check_reads(row, got, [*KEYS, child_key], all_present=True)
        _check_reads(row, row.call(asyncio.run, warm_async()), KEYS[:3], all_present=True)
    finally:
        close(cache)
    assert report["seen_all"], "the child did not see the parent's entries"
    assert row.errors == 0, row.error_types
    assert row.wrong == 0
