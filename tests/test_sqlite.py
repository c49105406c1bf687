"""SqliteCache beyond the conformance suite: plans, purging, processes, fork, faults, lifecycle."""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import multiprocessing
import os
import sqlite3
import subprocess
import sys
import textwrap
import threading
import time
import traceback
import warnings
from collections.abc import Callable, Coroutine, Iterator
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from tests.fleet_workers import wait_for
from tests.harness import in_forked_child
from toolkit import (
    BackendError,
    CacheClosedError,
    CacheError,
    CacheTimeoutError,
    FullKey,
    Namespace,
    SqliteCache,
    observe,
)
from toolkit._types import EvictionCause
from toolkit.backends._sqlite_sql import decode_namespace, encode_namespace
from toolkit.lease import LeaseRequest

NS = ("sqlite", "tests")
ROOT = Path(__file__).resolve().parents[1]


def k(name: str, ns: Namespace = NS) -> FullKey:
    return (ns, name)


class WallClock:
    """A wall clock that moves only when told to."""

    def __init__(self) -> None:
        self.now = 1_700_000_000.0

    def __call__(self) -> float:
        return self.now


def open_cache(path: str, **options: Any) -> SqliteCache[Any]:
    return SqliteCache(path=path, **options)


@pytest.fixture
def db(tmp_path: Path) -> str:
    return str(tmp_path / "cache.db")


@pytest.fixture
def cache(db: str) -> Iterator[SqliteCache[Any]]:
    with open_cache(db) as made:
        yield made


def plan_details(db: str, sql: str, params: Any) -> list[str]:
    raw = sqlite3.connect(db)
    try:
        return [row[3] for row in raw.execute(f"EXPLAIN QUERY PLAN {sql}", params)]
    finally:
        raw.close()


def test_batch_get_and_clear_search_the_primary_key(cache: SqliteCache[Any], db: str) -> None:
    cache.set({k(f"k{i}", ("ns", str(i % 7))): (i, None) for i in range(2_000)})
    keys = [k(f"k{i}", ("ns", str(i % 7))) for i in range(0, 2_000, 13)]
    plan = cache._sql.select(keys, 0.0)
    table = cache._sql.table
    for sql, params in plan.statements:
        details = plan_details(db, sql, params)
        assert any("USING INDEX" in d and "(ns=? AND key=?)" in d for d in details), details
        assert not any(d.startswith("SCAN c") or d == f"SCAN {table}" for d in details), details
    for sql, params in cache._sql.clear([("ns", "1"), ("ns", "2")]):
        details = plan_details(db, sql, params)
        assert any("USING" in d and "INDEX" in d and "(ns=?)" in d for d in details), details
    for sql, params in cache._sql.purge(0.0, 10):
        assert any("_expiry" in d for d in plan_details(db, sql, params))


def test_expired_rows_are_purged_on_read_and_on_writes(db: str) -> None:
    clock = WallClock()
    evicted: list[tuple[Namespace, EvictionCause, int]] = []
    with open_cache(db, timer=clock) as cache:
        cache.add_eviction_listener(lambda ns, cause, n: evicted.append((ns, cause, n)))
        cache.set({k(f"old{i}"): (i, 10) for i in range(600)})
        cache.set({k("keep"): ("kept", None), k("read-me"): ("x", 10)})
        clock.now += 11
        assert cache.get([k("read-me"), k("keep")]) == {k("keep"): "kept"}
        assert evicted == [(NS, "expired", 1)]
        assert cache.entry_count() == 601

        cache.set({k("trigger"): (1, None)})  # the periodic purge runs, bounded per call
        assert 601 - 256 + 1 <= cache.entry_count() < 601 + 1
        assert cache.purge_expired() > 0
        assert cache.entry_count() == 2
        assert sum(n for _, cause, n in evicted if cause == "expired") == 601


@pytest.mark.parametrize("io", ["sync", "async"])
def test_a_purge_that_fails_does_not_fail_the_write_before_it(
    db: str, io: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A write's purge of expired rows is a second transaction, after the write committed:
    when another connection took the lock in between, the purge waited busy_timeout and
    its error was raised by set()/aset(), so the caller took values that were stored for
    lost (and observe() counted a failed set). The purge now waits for a later write."""
    clock = WallClock()
    cache = open_cache(db, busy_timeout=0.05, timer=clock)
    cache.set({k("old"): (1, 10)})  # the first write purges; the next purge is due in 1 s
    clock.now += 20  # "old" has expired: the next write's purge has a row to delete
    blocker = sqlite3.connect(db, isolation_level=None)
    due = cache._due_purge

    def due_while_another_writes(now: float) -> Any:
        purge = due(now)
        if purge is not None:
            blocker.execute("BEGIN IMMEDIATE")  # another process's write, between the two
        return purge

    monkeypatch.setattr(cache, "_due_purge", due_while_another_writes)
    try:
        if io == "sync":
            cache.set({k("new"): (2, None)})
        else:
            asyncio.run(cache.aset({k("new"): (2, None)}))
    finally:
        blocker.execute("ROLLBACK")
        blocker.close()
    monkeypatch.undo()
    assert cache.get([k("new")]) == {k("new"): 2}
    cache.set({k("later"): (3, None)})  # the purge was left to the next write: it ran
    assert cache.entry_count() == 2
    cache.close()


def test_undecodable_entry_is_deleted_and_reported(cache: SqliteCache[Any], db: str) -> None:
    evicted: list[tuple[Namespace, EvictionCause, int]] = []
    cache.add_eviction_listener(lambda ns, cause, n: evicted.append((ns, cause, n)))
    cache.set({k("good"): (1, None)})
    raw = sqlite3.connect(db)
    with raw:
        raw.execute(
            "INSERT INTO toolkit_cache (ns, key, expiry, tag, val) VALUES (?, ?, NULL, ?, ?)",
            (encode_namespace(NS), "bad", "msgpack", b"\xc1"),
        )
    raw.close()
    assert cache.get([k("bad"), k("good")]) == {k("good"): 1}
    assert evicted == [(NS, "invalid", 1)]
    assert cache.entry_count() == 1


def test_namespaces_are_stored_injectively() -> None:
    namespaces: list[Namespace] = [(), ("",), ("", ""), ("a,b",), ("a", "b"), ('"',), ("\x00",)]
    stored = [encode_namespace(ns) for ns in namespaces]
    assert len(set(stored)) == len(namespaces)
    assert [decode_namespace(text) for text in stored] == namespaces
    assert decode_namespace("not json") is None


def test_sync_and_async_share_one_memory_database() -> None:
    async def scenario(cache: SqliteCache[Any]) -> None:
        cache.set({k("from-sync"): (1, None)})
        assert await cache.aget([k("from-sync")]) == {k("from-sync"): 1}
        await cache.aset({k("from-async"): (2, None)})
        assert cache.get([k("from-async")]) == {k("from-async"): 2}
        await cache.aclose()

    first: SqliteCache[Any] = SqliteCache(path=":memory:")
    second: SqliteCache[Any] = SqliteCache(path=":memory:")
    try:
        asyncio.run(scenario(first))
        assert second.get([k("from-sync")]) == {}  # each ":memory:" cache is its own database
    finally:
        second.close()


def test_concurrent_agets_get_their_own_objects(cache: SqliteCache[Any]) -> None:
    cache.set({k("shared"): ({"list": [1]}, None), k("other"): (2, None)})

    async def scenario() -> tuple[dict[FullKey, Any], ...]:
        return await asyncio.gather(
            cache.aget([k("shared")]),
            cache.aget([k("shared"), k("other"), k("missing")]),
            cache.aget([]),
        )

    one, two, empty = asyncio.run(scenario())
    assert one == {k("shared"): {"list": [1]}}
    assert two == {k("shared"): {"list": [1]}, k("other"): 2}
    assert empty == {}
    assert one[k("shared")] is not two[k("shared")]


def test_async_calls_work_across_event_loops(cache: SqliteCache[Any]) -> None:
    asyncio.run(cache.aset({k("a"): (1, None)}))
    assert asyncio.run(cache.aget([k("a")])) == {k("a"): 1}
    asyncio.run(cache.aclear([NS]))
    assert cache.get([k("a")]) == {}


def test_threads_share_a_cache(cache: SqliteCache[Any]) -> None:
    errors: list[BaseException] = []

    def worker(t: int) -> None:
        try:
            for i in range(50):
                cache.set({k(f"t{t}-{i}"): (i, None)})
                assert cache.get([k(f"t{t}-{i}")]) == {k(f"t{t}-{i}"): i}
        except BaseException as exc:  # surfaced in the main thread below
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(t,)) for t in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert cache.entry_count() == 200


def _write_from_process(path: str, worker: int, count: int) -> None:
    with open_cache(path) as cache:
        for start in range(0, count, 10):
            cache.set({k(f"w{worker}-{i}"): (i, None) for i in range(start, start + 10)})
        asyncio.run(cache.aset({k(f"w{worker}-async"): (worker, None)}))
        assert len(cache.get([k(f"w{worker}-{i}") for i in range(count)])) == count


def test_two_processes_write_one_file(db: str) -> None:
    SqliteCache(path=db).close()  # create the file and its schema first
    ctx = multiprocessing.get_context("spawn")
    procs = [ctx.Process(target=_write_from_process, args=(db, w, 100)) for w in range(2)]
    for proc in procs:
        proc.start()
    for proc in procs:
        proc.join(timeout=120)
    assert [proc.exitcode for proc in procs] == [0, 0]
    with open_cache(db) as cache:
        assert cache.entry_count() == 202
        assert cache.get([k("w0-async"), k("w1-99")]) == {k("w0-async"): 0, k("w1-99"): 99}


def _fork() -> int:
    with warnings.catch_warnings():  # Python >= 3.12 warns about forking with threads
        warnings.simplefilter("ignore", DeprecationWarning)
        return os.fork()


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork()")
def test_reopens_after_fork(cache: SqliteCache[Any]) -> None:
    cache.set({k("parent"): (1, None)})
    assert asyncio.run(cache.aget([k("parent")])) == {k("parent"): 1}
    parent_sync = cache._conns._writer.sync
    pid = _fork()
    if pid == 0:  # child: must not use (or close) the parent's connections
        code = 1
        try:
            assert cache.get([k("parent")]) == {k("parent"): 1}
            assert cache._conns._writer.sync is not parent_sync
            cache.set({k("child"): (2, None)})
            assert asyncio.run(cache.aget([k("child")])) == {k("child"): 2}
            cache.close()
            code = 0
        except BaseException:
            traceback.print_exc()
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert cache.get([k("child"), k("parent")]) == {k("child"): 2, k("parent"): 1}
    assert cache._conns._writer.sync is parent_sync


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork()")
def test_a_fork_while_another_thread_holds_the_bookkeeping_lock(cache: SqliteCache[Any]) -> None:
    # The forking thread's copy of that lock stays held for ever in the child, which took it
    # on its first call to start afresh.
    cache.set({k("parent"): (1, None)})
    held, done = threading.Event(), threading.Event()

    def hold() -> None:
        with cache._conns._guard:
            held.set()
            done.wait()

    holder = threading.Thread(target=hold)
    holder.start()
    held.wait()
    try:
        assert in_forked_child(lambda: cache.get([k("parent")])) == {k("parent"): 1}
    finally:
        done.set()
        holder.join()


def test_locked_database_raises_backend_error(db: str) -> None:
    with open_cache(db, busy_timeout=0.05) as cache:
        cache.set({k("a"): (1, None)})
        holder = sqlite3.connect(db, isolation_level=None)
        holder.execute("BEGIN EXCLUSIVE")
        try:
            with pytest.raises(BackendError, match="locked") as caught:
                cache.set({k("b"): (2, None)})
            assert isinstance(caught.value.__cause__, sqlite3.OperationalError)
            with pytest.raises(BackendError, match="locked"):
                asyncio.run(cache.aset({k("b"): (2, None)}))
            with pytest.raises(BackendError):
                cache.clear()
        finally:
            holder.execute("ROLLBACK")
            holder.close()
        cache.set({k("b"): (2, None)})  # usable again once the lock is gone
        assert cache.get([k("a"), k("b")]) == {k("a"): 1, k("b"): 2}


@contextlib.contextmanager
def write_lock_held(db: str) -> Iterator[None]:
    """Another connection (as good as another process) holds the database's write lock."""
    holder = sqlite3.connect(db, isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")
    try:
        yield
    finally:
        holder.execute("ROLLBACK")
        holder.close()


def wait_until(condition: Callable[[], bool]) -> None:
    while not condition():
        threading.Event().wait(0.005)


def test_reads_are_served_while_a_write_waits_for_the_lock(db: str) -> None:
    with open_cache(db, busy_timeout=60) as cache:
        cache.set({k("a"): (1, None)})
        with write_lock_held(db):
            writer = threading.Thread(target=cache.set, args=({k("b"): (2, None)},))
            writer.start()
            wait_until(cache._conns._writer.lock.locked)  # the write waits on the other lock
            assert cache.get([k("a"), k("b")]) == {k("a"): 1}

            async def read() -> dict[FullKey, Any]:
                return await cache.aget([k("a")])

            assert asyncio.run(read()) == {k("a"): 1}
        writer.join()
        assert cache.get([k("b")]) == {k("b"): 2}


async def test_an_abandoned_async_write_still_lands_and_never_holds_up_reads(db: str) -> None:
    async with open_cache(db, busy_timeout=60) as cache:
        await cache.aset({k("a"): (1, None)})
        with write_lock_held(db):
            writing = asyncio.create_task(cache.aset({k("b"): (2, None)}))
            # Its thread holds the write connection, waiting for the other lock.
            await asyncio.to_thread(wait_until, cache._conns._writer.lock.locked)
            writing.cancel()
            with pytest.raises(asyncio.CancelledError):
                await writing
            assert await cache.aget([k("a"), k("b")]) == {k("a"): 1}
        # The thread runs the write to its end: nothing is left half done.
        await asyncio.to_thread(wait_until, lambda: cache.get([k("b")]) == {k("b"): 2})
        await cache.aset({k("c"): (3, None)})
        assert await cache.aget([k("a"), k("b"), k("c")]) == {k("a"): 1, k("b"): 2, k("c"): 3}


@contextlib.contextmanager
def blocking_connections(
    monkeypatch: pytest.MonkeyPatch, prefixes: tuple[str, ...]
) -> Iterator[tuple[threading.Event, threading.Event, threading.Event]]:
    """Connections opened meanwhile stop at the first statement starting with ``prefixes``
    once armed: yields ``(armed, entered, release)``."""
    armed, entered, release = threading.Event(), threading.Event(), threading.Event()
    connect = sqlite3.connect

    def trace(sql: str) -> None:
        if armed.is_set() and sql.startswith(prefixes):
            armed.clear()
            entered.set()
            release.wait()

    def traced_connect(*args: Any, **kwargs: Any) -> sqlite3.Connection:
        conn: sqlite3.Connection = connect(*args, **kwargs)
        conn.set_trace_callback(trace)
        return conn

    with monkeypatch.context() as patch:
        patch.setattr(sqlite3, "connect", traced_connect)
        try:
            yield armed, entered, release
        finally:
            release.set()


def in_daemon_thread(call: Callable[[], Any]) -> Any:
    """``call()``, or a test failure instead of a hang if it never returns."""
    done: concurrent.futures.Future[Any] = concurrent.futures.Future()

    def run() -> None:
        try:
            done.set_result(call())
        except BaseException as exc:
            done.set_exception(exc)

    threading.Thread(target=run, daemon=True).start()
    try:
        return done.result(timeout=30)  # a hang guard only: the call takes milliseconds
    except concurrent.futures.TimeoutError:
        pytest.fail("the call never returned")


@pytest.mark.parametrize("ending", ["loop.close()", "asyncio.run"])
@pytest.mark.parametrize("call", ["aget", "aset"])
def test_a_loop_ended_with_a_call_in_flight_leaves_the_cache_working(
    db: str, monkeypatch: pytest.MonkeyPatch, call: str, ending: str
) -> None:
    # aiosqlite answered on the caller's loop: its thread died once that loop had closed,
    # every later call on the connection waited forever, and a write left its transaction
    # open, locking every other writer of the file out.
    with blocking_connections(monkeypatch, ("WITH", "INSERT")) as (armed, entered, release):
        cache = open_cache(db, busy_timeout=0.2)
        cache.set({k("a"): (1, None)})
        asyncio.run(cache.aget([k("a")]))  # opens the connections, with the trace set
        armed.set()

        def start() -> Coroutine[Any, Any, object]:
            return cache.aget([k("a")]) if call == "aget" else cache.aset({k("b"): (2, None)})

        if ending == "loop.close()":
            loop = asyncio.new_event_loop()
            task = loop.create_task(start())
            loop.run_until_complete(asyncio.to_thread(entered.wait))
            loop.close()  # by hand, the call still in flight
            assert not task.done()
        else:

            async def leave_it_running() -> None:
                task = asyncio.ensure_future(start())
                await asyncio.to_thread(entered.wait)
                assert not task.done()

            # The statement ends a little later, whether or not asyncio.run waits for it.
            threading.Timer(0.2, release.set).start()
            asyncio.run(leave_it_running())  # cancels the call on its way out
        release.set()

    assert in_daemon_thread(lambda: asyncio.run(cache.aget([k("a")]))) == {k("a"): 1}
    other = sqlite3.connect(db, timeout=5, isolation_level=None)
    other.execute("BEGIN IMMEDIATE")  # no transaction was left open
    other.execute("ROLLBACK")
    other.close()
    in_daemon_thread(lambda: asyncio.run(cache.aset({k("c"): (3, None)})))
    assert cache.get([k("a"), k("c")]) == {k("a"): 1, k("c"): 3}
    in_daemon_thread(cache.close)


@pytest.mark.parametrize("io", ["sync", "async"])
def test_deletions_found_by_a_read_never_wait_for_the_write_lock(db: str, io: str) -> None:
    clock = WallClock()
    evicted: list[tuple[Namespace, EvictionCause, int]] = []
    with open_cache(db, timer=clock, busy_timeout=0.2) as cache:
        cache.add_eviction_listener(lambda ns, cause, n: evicted.append((ns, cause, n)))
        cache.set({k("old"): (1, 10), k("live"): (2, None)})
        clock.now += 11

        def get(keys: list[FullKey]) -> dict[FullKey, Any]:
            return cache.get(keys) if io == "sync" else asyncio.run(cache.aget(keys))

        with write_lock_held(db):
            # A plain write fails after busy_timeout here; the read's deletion is skipped.
            assert get([k("old"), k("live")]) == {k("live"): 2}
            assert evicted == []
            assert cache.entry_count() == 2
        assert get([k("old"), k("live")]) == {k("live"): 2}
        assert evicted == [(NS, "expired", 1)]
        assert cache.entry_count() == 1


async def test_concurrent_asets_share_one_insert(db: str) -> None:
    async with open_cache(db) as cache:
        await cache.aset({k("warm"): (0, None)})  # opens the write connection, runs the purge
        statements: list[str] = []
        cache._conns.open_sync().set_trace_callback(statements.append)
        # Fifty asets issued together are one transaction and one INSERT, not fifty.
        await asyncio.gather(*(cache.aset({k(f"k{i}"): (i, 60)}) for i in range(50)))
        await asyncio.gather(
            cache.aset({k("twice"): (1, None)}), cache.aset({k("twice"): (2, None)})
        )
        assert [s.split()[0] for s in statements if not s.startswith("SELECT")] == ["INSERT"] * 2
        assert await cache.aget([k(f"k{i}") for i in range(50)]) == {
            k(f"k{i}"): i for i in range(50)
        }
        assert await cache.aget([k("twice")]) == {k("twice"): 2}  # the later aset wins


@pytest.mark.parametrize("io", ["sync", "async"])
def test_expired_rows_found_by_a_read_go_in_one_delete(db: str, io: str) -> None:
    clock = WallClock()
    evicted: list[tuple[Namespace, EvictionCause, int]] = []
    with open_cache(db, timer=clock) as cache:
        cache.add_eviction_listener(lambda ns, cause, n: evicted.append((ns, cause, n)))
        cache.set({k(f"old{i}"): (i, 10) for i in range(20)})
        cache.set({k("live"): ("x", None)})
        clock.now += 11
        keys = [k("live"), *[k(f"old{i}") for i in range(20)], k("old3")]
        statements: list[str] = []

        writer = cache._conns.open_sync()
        writer.set_trace_callback(statements.append)
        got = cache.get(keys) if io == "sync" else asyncio.run(cache.aget(keys))
        writer.set_trace_callback(None)
        assert got == {k("live"): "x"}
        # Deleting is a write the read makes while it holds the write lock: keep it short.
        assert [s.split()[0] for s in statements if s.startswith("DELETE")] == ["DELETE"]
        assert evicted == [(NS, "expired", 20)]
        assert cache.entry_count() == 1


@pytest.mark.skipif(os.name != "posix" or os.geteuid() == 0, reason="root ignores file modes")
def test_read_only_file_raises_backend_error(db: str, tmp_path: Path) -> None:
    SqliteCache(path=db).close()
    os.chmod(db, 0o444)
    os.chmod(tmp_path, 0o555)
    try:
        with pytest.raises(BackendError):
            open_cache(db).set({k("a"): (1, None)})
    finally:
        os.chmod(tmp_path, 0o755)
        os.chmod(db, 0o644)


def test_unusable_paths_raise_backend_error(tmp_path: Path) -> None:
    with pytest.raises(BackendError, match="cannot open") as caught:
        SqliteCache(path=str(tmp_path))  # a directory
    assert isinstance(caught.value.__cause__, sqlite3.Error)
    garbage = tmp_path / "garbage.db"
    garbage.write_bytes(b"definitely not a database" * 100)
    with pytest.raises(BackendError):
        SqliteCache(path=str(garbage))


@pytest.mark.parametrize(
    "kwargs, error",
    [
        ({"path": ""}, ValueError),
        ({"path": 3}, TypeError),
        ({"path": ":memory:", "table": "bad name"}, ValueError),
        ({"path": ":memory:", "table": "sqlite_master"}, ValueError),
        ({"path": ":memory:", "busy_timeout": -1}, ValueError),
    ],
)
def test_bad_arguments_rejected(kwargs: dict[str, Any], error: type[Exception]) -> None:
    with pytest.raises(error):
        SqliteCache(**kwargs)


def test_tables_in_one_file_are_separate_caches(db: str) -> None:
    with open_cache(db, table="one") as one, open_cache(db, table="two") as two:
        one.set({k("a"): (1, None)})
        two.set({k("a"): (2, None)})
        one.clear()
        assert one.get([k("a")]) == {}
        assert two.get([k("a")]) == {k("a"): 2}


def test_table_names_differing_only_in_case_are_refused(db: str) -> None:
    """SQLite ignores case in table names: table="Cache" opened the table "cache" of another
    cache, which then read the other's entries and cleared them with its own."""
    first: SqliteCache[Any] = SqliteCache(path=db, table="cache")
    first.set({(("n",), "k"): ("mine", None)})
    with pytest.raises(ValueError, match="ignore case"):
        SqliteCache(path=db, table="Cache")
    assert first.get([(("n",), "k")]) == {(("n",), "k"): "mine"}
    again: SqliteCache[Any] = SqliteCache(path=db, table="cache")  # the same name reopens
    assert again.get([(("n",), "k")]) == {(("n",), "k"): "mine"}
    again.close()
    first.close()


@pytest.mark.parametrize("helper", ["one_lease", "one_expiry", "ONE_LEASE"])
def test_a_table_named_like_another_caches_helper_is_refused(db: str, helper: str) -> None:
    """The cache on "one" keeps its leases in "one_lease" and its expiry index in
    "one_expiry": a cache on one of those names found it made and failed on first use
    ("no column named tag", "already an index"), or broke the leases of the cache on "one"."""
    with pytest.raises(ValueError, match="kept for the lease table and index"):
        open_cache(db, table=helper)
    with open_cache(db, table="one") as one:
        one.set({k("a"): (1, None)})
        assert one.lease(LeaseRequest("acquire", k("a"), "token", 5.0))
        assert one.get([k("a")]) == {k("a"): 1}


def test_use_after_close_raises(db: str) -> None:
    cache: SqliteCache[Any] = SqliteCache(path=db)
    asyncio.run(cache.aset({k("a"): (1, None)}))
    cache.close()
    cache.close()  # idempotent
    with pytest.raises(CacheClosedError):
        cache.get([k("a")])
    with pytest.raises(CacheClosedError):
        cache.set({k("a"): (1, None)})
    with pytest.raises(CacheClosedError):
        cache.clear()
    with pytest.raises(CacheClosedError):
        asyncio.run(cache.aget([k("a")]))
    with pytest.raises(CacheClosedError):
        asyncio.run(cache.aclear())
    asyncio.run(cache.aclose())  # still idempotent
    assert "closed" in repr(cache)


def worker_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith("toolkit-sqlite-")]


def all_end(threads: list[threading.Thread]) -> bool:
    for thread in threads:
        thread.join(timeout=10)  # told to stop by close(); it must actually end
    return not any(thread.is_alive() for thread in threads)


async def test_async_context_manager_and_close_inside_a_loop(db: str) -> None:
    async with open_cache(db) as cache:
        await cache.aset({k("a"): (1, None)})
        assert await cache.aget([k("a")]) == {k("a"): 1}
    with pytest.raises(CacheClosedError):
        await cache.aget([k("a")])
    before = set(worker_threads())
    other: SqliteCache[Any] = SqliteCache(path=db)
    assert await other.aget([k("a")]) == {k("a"): 1}
    await other.aset({k("b"): (2, None)})
    started = [t for t in worker_threads() if t not in before]
    assert started
    other.close()  # sync close from inside a running loop, its threads running
    assert all_end(started)


def test_batch_statements_respect_the_variable_limit(cache: SqliteCache[Any]) -> None:
    # Lower SQLite's own limit: a statement over it would fail outright.
    cache.get([k("open-the-read-connection")])
    conns = [cache._conns._writer.sync, *cache._conns._reads.idle()]
    if not hasattr(sqlite3.Connection, "setlimit"):
        pytest.skip("Connection.setlimit needs Python >= 3.11")
    for conn in conns:
        assert conn is not None
        conn.setlimit(sqlite3.SQLITE_LIMIT_VARIABLE_NUMBER, 99)
    cache._sql.set_variable_limit(99)
    pairs: dict[FullKey, tuple[Any, int | None]] = {k(f"k{i}"): (i, None) for i in range(100_000)}
    cache.set(pairs)
    got = cache.get(list(pairs))
    assert len(got) == 100_000
    assert all(len(params) <= 99 for _, params in cache._sql.select(list(pairs), 0.0).statements)
    cache.clear([NS, *[("other", str(i)) for i in range(500)]])
    assert cache.entry_count() == 0


EXIT_WITHOUT_CLOSE = """
import asyncio, logging, sys, time
from toolkit import SqliteCache

# -X dev logs every event-loop step slower than 0.1 s: on a busy machine that is noise, not
# a fault of the code under test. Every other warning, error and traceback still shows.
logging.getLogger("asyncio").addFilter(lambda record: "took %.3f seconds" not in record.msg)

cache = SqliteCache(path=sys.argv[1])
key = (("exit",), "k")
asyncio.run(cache.aset({key: (1, None)}))
assert asyncio.run(cache.aget([key])) == {key: 1}
print("done")
"""

SLOW_STEP = """
async def slow_step() -> None:
    time.sleep(0.15)  # a loaded machine: one step of the loop past asyncio's 0.1 s threshold

asyncio.run(slow_step())
"""


def exit_without_close(path: str, extra: str = "") -> subprocess.CompletedProcess[str]:
    """Run the exit script in ``python -X dev -W error``; ``extra`` runs before it opens."""
    script = textwrap.dedent(EXIT_WITHOUT_CLOSE).replace("\ncache =", extra + "\ncache =", 1)
    return subprocess.run(
        [sys.executable, "-X", "dev", "-W", "error", "-c", script, path],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )


@pytest.mark.parametrize("where", ["file", "memory"])
def test_process_exits_without_close(tmp_path: Path, where: str) -> None:
    path = str(tmp_path / "exit.db") if where == "file" else ":memory:"
    done = exit_without_close(path)
    assert (done.returncode, done.stdout, done.stderr) == (0, "done\n", "")


def test_exit_check_ignores_a_slow_loop_step_only(tmp_path: Path) -> None:
    # The flake: under load, -X dev reported a slow event-loop step on stderr.
    done = exit_without_close(str(tmp_path / "exit.db"), SLOW_STEP)
    assert (done.returncode, done.stdout, done.stderr) == (0, "done\n", "")
    # ... while a real problem still shows: an unclosed file is a ResourceWarning under -X dev.
    leak = exit_without_close(str(tmp_path / "leak.db"), "\nopen(sys.argv[1] + '.txt', 'w')")
    assert "ResourceWarning" in leak.stderr


def test_dropped_cache_closes_its_connections(db: str) -> None:
    before = set(worker_threads())
    cache = open_cache(db)
    asyncio.run(cache.aset({k("a"): (1, None)}))
    started = [t for t in worker_threads() if t not in before]
    assert started
    del cache  # no reference cycle: collected here, and its finalizer closes it all
    assert all_end(started)
    with open_cache(db) as again:
        assert again.get([k("a")]) == {k("a"): 1}


def test_one_shot_iterables_are_read_once(cache: SqliteCache[Any]) -> None:
    cache.set({k("a"): (1, None)})
    assert cache.get(iter([k("a")])) == {k("a"): 1}  # type: ignore[arg-type]
    assert asyncio.run(cache.aget(iter([k("a")]))) == {k("a"): 1}  # type: ignore[arg-type]


def test_memory_database_takes_sync_and_async_writers_at_once() -> None:
    # Shared-cache table locks (SQLITE_LOCKED) are retried until busy_timeout, not raised.
    cache = open_cache(":memory:")
    errors: list[BaseException] = []

    def sync_writer() -> None:
        try:
            for i in range(20):
                cache.set({k(f"s{i}-{j}", ("sync",)): (j, None) for j in range(450)})
        except BaseException as exc:  # surfaced below
            errors.append(exc)

    async def scenario() -> None:
        thread = threading.Thread(target=sync_writer)
        thread.start()
        for i in range(20):
            await cache.aset({k(f"a{i}-{j}", ("async",)): (j, None) for j in range(450)})
        await asyncio.to_thread(thread.join)

    try:
        asyncio.run(scenario())
        assert errors == []
        assert cache.entry_count() == 2 * 20 * 450
    finally:
        cache.close()


@pytest.mark.parametrize(
    "change", ["DELETE FROM toolkit_cache", "UPDATE toolkit_cache SET tag = 'x'"]
)
def test_memory_database_reads_never_see_an_uncommitted_write(change: str) -> None:
    """A ":memory:" cache is a shared-cache database, whose readers ran with read_uncommitted:
    they saw the rows of a write transaction still open (a batch of several INSERTs half
    done, or one that then failed and rolled back, so a get returned what no set stored).
    The write connection is held mid-transaction here, as a batch of several statements
    holds it between two of them: a read waits for the commit (and gives up, a miss behind
    observe(), past busy_timeout), but never returns the uncommitted state."""
    cache = open_cache(":memory:", busy_timeout=0.05)
    cache.set({k("a"): ("committed", None)})
    writer = cache._conns.open_sync()
    writer.execute("BEGIN IMMEDIATE")
    writer.execute(change)
    try:
        with contextlib.suppress(CacheError):
            assert cache.get([k("a")]) == {k("a"): "committed"}
        with contextlib.suppress(CacheError):
            assert asyncio.run(cache.aget([k("a")])) == {k("a"): "committed"}
    finally:
        writer.execute("ROLLBACK")
    assert cache.get([k("a")]) == {k("a"): "committed"}
    cache.close()


def _stress(path: str, seed: int) -> None:
    import random

    rng = random.Random(seed)
    namespaces: list[Namespace] = [("stress",), ("stress", "a"), ("stress", "b,c")]
    with open_cache(path) as cache:

        def worker(offset: int) -> None:
            for _ in range(150):
                ns = rng.choice(namespaces)
                op = rng.random()
                if op < 0.5:
                    cache.set({(ns, f"k{rng.randrange(50)}"): (offset, rng.choice([None, 60]))})
                elif op < 0.95:
                    for (got_ns, _), value in cache.get([(ns, f"k{i}") for i in range(50)]).items():
                        assert got_ns == ns and isinstance(value, int)
                else:
                    cache.clear([ns])

        async def async_worker() -> None:
            for i in range(100):
                ns = rng.choice(namespaces)
                await cache.aset({(ns, f"k{i % 50}"): (-1, None)})
                await cache.aget([(ns, f"k{j}") for j in range(50)])

        threads = [threading.Thread(target=worker, args=(t,)) for t in range(2)]
        for thread in threads:
            thread.start()
        asyncio.run(async_worker())
        for thread in threads:
            thread.join()


@pytest.mark.slow
def test_stress_processes_threads_and_async_then_integrity(db: str) -> None:
    # diskcache-style: random operations from several processes and threads, then check.
    SqliteCache(path=db).close()
    ctx = multiprocessing.get_context("spawn")
    procs = [ctx.Process(target=_stress, args=(db, seed)) for seed in range(2)]
    for proc in procs:
        proc.start()
    _stress(db, 99)
    for proc in procs:
        proc.join(timeout=300)
    assert [proc.exitcode for proc in procs] == [0, 0]
    raw = sqlite3.connect(db)
    try:
        assert raw.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
        stored = raw.execute("SELECT ns FROM toolkit_cache").fetchall()
    finally:
        raw.close()
    assert {decode_namespace(ns) for (ns,) in stored} <= {
        ("stress",),
        ("stress", "a"),
        ("stress", "b,c"),
    }


def test_a_slow_first_open_is_not_a_timeout(db: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """On a loaded machine opening can outlast busy_timeout; only waiting is bounded by it."""
    from toolkit.backends import _sqlite_conn

    slow = 3 * 0.05
    open_sync = _sqlite_conn.Connections._open_sync

    def slow_open_sync(self: Any, path: Any, setup: Any) -> sqlite3.Connection:
        time.sleep(slow)
        return open_sync(self, path, setup)

    monkeypatch.setattr(_sqlite_conn.Connections, "_open_sync", slow_open_sync)
    with open_cache(db, busy_timeout=0.05) as cache:
        assert cache.get([k("a")]) == {}
        cache.set({k("a"): (1, None)})
        assert cache.get([k("a")]) == {k("a"): 1}

        async def both() -> None:
            assert await cache.aget([k("a")]) == {k("a"): 1}
            await cache.aset({k("b"): (2, None)})
            assert await cache.aget([k("b")]) == {k("b"): 2}

        asyncio.run(both())


@pytest.mark.parametrize("via", ["sync", "async"])
def test_the_write_ahead_log_is_copied_back_in_small_steps(tmp_path: Path, via: str) -> None:
    # Each automatic checkpoint runs inside a writer's commit, stalling the writers queued
    # behind it for as long as it takes: the log must not grow to SQLite's default 4 MB.
    db = str(tmp_path / f"{via}.db")
    value = os.urandom(16_000)  # incompressible: four pages a write

    async def awrite_all(cache: SqliteCache[Any]) -> int:
        for i in range(400):  # 6.4 MB through the log, one commit each
            await cache.aset({k(f"k{i}"): (value, None)})
        try:
            return Path(f"{db}-wal").stat().st_size
        finally:
            await cache.aclose()

    with open_cache(db) as cache:
        if via == "sync":
            for i in range(400):
                cache.set({k(f"k{i}"): (value, None)})
            wal = Path(f"{db}-wal").stat().st_size
        else:
            wal = asyncio.run(awrite_all(cache))
    assert wal < 1_500_000, f"the log reached {wal} bytes"


# A write's turn on the connection and SQLite's own busy wait share one budget (twice
# busy_timeout): a writer queued behind a slow commit waits past busy_timeout, never past
# the budget. The commit is stood in for by holding the write connection's turn.
BUDGET_TIMEOUT = 2.0  # long, so that a busy machine's scheduling cannot tip the outcome


def test_a_write_queued_past_busy_timeout_still_lands(db: str) -> None:
    with open_cache(db, busy_timeout=BUDGET_TIMEOUT) as cache:
        turn = cache._conns._writer.lock
        started = threading.Event()

        def slow_commit() -> None:
            with turn:
                started.set()
                time.sleep(BUDGET_TIMEOUT + 0.25)  # past busy_timeout, well within twice it

        holder = threading.Thread(target=slow_commit)
        holder.start()
        started.wait()
        cache.set({k("queued"): (1, None)})
        holder.join()
        assert cache.get([k("queued")]) == {k("queued"): 1}


def test_a_write_queued_past_the_whole_budget_times_out(db: str) -> None:
    with open_cache(db, busy_timeout=0.2) as cache:
        turn = cache._conns._writer.lock
        turn.acquire()
        try:  # released only after the write gave up: its bound, not the holder, ended it
            with pytest.raises(CacheTimeoutError, match=r"waited 0\.4s \(twice busy_timeout\)"):
                cache.set({k("queued"): (1, None)})
        finally:
            turn.release()


def test_an_async_write_queued_past_busy_timeout_still_lands(db: str) -> None:
    async def main() -> None:
        with open_cache(db, busy_timeout=BUDGET_TIMEOUT) as cache:
            await cache.aset({k("first"): (0, None)})  # opens the write connection
            turn = cache._conns._writer.lock
            turn.acquire()
            threading.Timer(BUDGET_TIMEOUT + 0.25, turn.release).start()
            await cache.aset({k("queued"): (1, None)})
            assert await cache.aget([k("queued")]) == {k("queued"): 1}
            await cache.aclose()

    asyncio.run(main())


def test_an_async_write_queued_past_the_whole_budget_times_out(db: str) -> None:
    async def main() -> None:
        with open_cache(db, busy_timeout=0.2) as cache:
            await cache.aset({k("first"): (0, None)})
            turn = cache._conns._writer.lock
            turn.acquire()
            try:
                with pytest.raises(CacheTimeoutError, match=r"twice busy_timeout"):
                    await cache.aset({k("queued"): (1, None)})
            finally:
                turn.release()
            await cache.aclose()

    asyncio.run(main())


# -- the database file deleted or replaced, a table dropped: other processes' view --


def _remove_database(db: str) -> None:
    for suffix in ("", "-wal", "-shm"):
        with contextlib.suppress(FileNotFoundError):
            os.remove(db + suffix)


def _errors_counted(registry: CollectorRegistry) -> float:
    return sum(
        sample.value
        for family in registry.collect()
        for sample in family.samples
        if sample.name == "cache_errors_total"
    )


@pytest.mark.parametrize("how", ["deleted", "replaced"])
def test_a_deleted_or_replaced_file_is_the_one_every_process_uses_again(db: str, how: str) -> None:
    # Another process would keep its connections to the old file: it would serve its own
    # entries forever, and never see the new file's writes or clears.
    registry = CollectorRegistry()
    with open_cache(db) as old:
        stack = observe(old, registry=registry)
        stack.set({k("a"): ("before", None)})
        assert stack.get([k("a")]) == {k("a"): "before"}
        if how == "deleted":
            _remove_database(db)
        else:  # a copy restored over it, as from a backup
            with open_cache(db + ".restored") as restored:
                restored.set({k("a"): ("restored", None)})
            _remove_database(db)
            os.replace(db + ".restored", db)
        with open_cache(db) as new:
            new.set({k("a"): ("after", None)})
            assert wait_for(lambda: stack.get([k("a")]) == {k("a"): "after"}, timeout=30)
            new.clear()
            assert stack.get([k("a")]) == {}
            stack.set({k("b"): ("from the old object", None)})
            assert new.get([k("b")]) == {k("b"): "from the old object"}
    assert _errors_counted(registry) == 0


def test_async_calls_move_to_a_replaced_file_too(db: str) -> None:
    async def main() -> None:
        with open_cache(db) as old:
            await old.aset({k("a"): ("before", None)})
            assert await old.aget([k("a")]) == {k("a"): "before"}
            _remove_database(db)
            with open_cache(db) as new:
                await new.aset({k("a"): ("after", None)})
                deadline = time.monotonic() + 30
                while await old.aget([k("a")]) != {k("a"): "after"}:
                    assert time.monotonic() < deadline, "never moved to the new file"
                    await asyncio.sleep(0.05)
                await new.aclear()
                assert await old.aget([k("a")]) == {}
                await old.aset({k("b"): ("from the old object", None)})
                assert await new.aget([k("b")]) == {k("b"): "from the old object"}

    asyncio.run(main())


@pytest.mark.parametrize("calls", ["sync", "async"])
def test_a_dropped_table_is_created_again(db: str, calls: str) -> None:
    with open_cache(db) as cache:
        cache.set({k("a"): ("before", None)})
        with contextlib.closing(sqlite3.connect(db)) as other:
            other.execute("DROP TABLE toolkit_cache")
            other.execute("DROP TABLE toolkit_cache_lease")
            other.commit()

        async def calls_after_the_drop() -> None:
            assert await cache.aget([k("a")]) == {}
            await cache.aset({k("a"): ("again", None)})
            assert await cache.aget([k("a")]) == {k("a"): "again"}
            assert await cache.alease(LeaseRequest("acquire", k("a"), "token", 5.0))

        if calls == "async":
            asyncio.run(calls_after_the_drop())
        else:
            assert cache.get([k("a")]) == {}
            cache.set({k("a"): ("again", None)})
            assert cache.get([k("a")]) == {k("a"): "again"}
            assert cache.lease(LeaseRequest("acquire", k("a"), "token", 5.0))
