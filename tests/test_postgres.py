"""PostgresCache beyond the conformance suite: construction, pools, loops, schema, failures."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import json
import socket
import subprocess
import sys
import threading
import time
import weakref
from collections.abc import Awaitable, Callable, Iterator, Sequence
from typing import Any

import psycopg
import psycopg_pool
import pytest
from prometheus_client import CollectorRegistry
from psycopg.rows import dict_row

from tests.postgres_support import drop_table, lock_waiters, make_pg_cache, unique_table
from toolkit import FailOpen, FullKey, cache_from_url, observe
from toolkit.backends._coalesce import ReadCoalescer, WriteCoalescer
from toolkit.backends._postgres_sql import INT8, Statement
from toolkit.backends.postgres import PostgresCache
from toolkit.errors import BackendError, CacheClosedError, CacheTimeoutError
from toolkit.lease import LeaseRequest

pytestmark = pytest.mark.postgres

Closer = list[tuple[str, PostgresCache[Any]]]
K: FullKey = (("pg", "test"), "k")


def test_cache_from_url_builds_a_postgres_cache(pg_url: str) -> None:
    cache = cache_from_url(pg_url)
    try:
        assert isinstance(cache, PostgresCache)
        assert cache.max_call_seconds == cache.connect_timeout + cache.timeout
        assert cache.endpoint.startswith("127.0.0.1:")
    finally:
        cache.close()  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    ("options", "error"),
    [
        ({}, TypeError),
        ({"url": 5}, TypeError),
        ({"url": "postgresql://x", "table": "bad name"}, ValueError),
        # the lease table and the index of the cache on "toolkit_cache"
        ({"url": "postgresql://x", "table": "toolkit_cache_lease"}, ValueError),
        ({"url": "postgresql://x", "table": "toolkit_cache_expires_at"}, ValueError),
        ({"url": "postgresql://x", "schema": 'x"; drop'}, ValueError),
        ({"url": "postgresql://x", "timeout": 0}, ValueError),
        ({"url": "postgresql://x", "timeout": "1"}, TypeError),
        ({"url": "postgresql://x", "pool_size": 0}, ValueError),
        ({"pool": object()}, TypeError),
    ],
)
def test_bad_options_are_refused_clearly(options: dict[str, Any], error: type[Exception]) -> None:
    with pytest.raises(error):
        PostgresCache(**options)


async def test_the_users_pools_serve_with_their_own_row_factory(pg_url: str) -> None:
    """The LangGraph checkpointer's pools: dict_row, prepare_threshold=0, autocommit."""
    table = unique_table()
    kwargs = {"autocommit": True, "prepare_threshold": 0, "row_factory": dict_row}
    with psycopg_pool.ConnectionPool(pg_url, kwargs=kwargs, min_size=1, max_size=2) as pool:
        apool: Any = psycopg_pool.AsyncConnectionPool(
            pg_url, kwargs=kwargs, min_size=1, max_size=2, open=False
        )
        await apool.open()
        try:
            cache: PostgresCache[Any] = PostgresCache(pool=pool, apool=apool, table=table)
            cache.set({K: ("sync", None)})
            assert await cache.aget([K]) == {K: "sync"}
            await cache.aset({K: ("async", 60)})
            assert cache.get([K]) == {K: "async"}
            cache.close()
            assert not pool.closed  # a pool passed in stays open
        finally:
            await apool.close()
            drop_table(pg_url, "public", table)


def test_an_async_pool_alone_serves_async_calls_only(pg_url: str) -> None:
    async def main() -> None:
        apool: Any = psycopg_pool.AsyncConnectionPool(pg_url, min_size=1, open=False)
        await apool.open()
        try:
            cache: PostgresCache[Any] = PostgresCache(pool=apool, table=table)
            assert cache.apool is apool
            await cache.aset({K: (1, None)})
            assert await cache.aget([K]) == {K: 1}
            with pytest.raises(TypeError, match="only an async pool"):
                cache.get([K])
        finally:
            await apool.close()

    table = unique_table()
    try:
        asyncio.run(main())
    finally:
        drop_table(pg_url, "public", table)


def test_one_cache_serves_several_event_loops(pg_url: str, pg_closer: Closer) -> None:
    cache = make_pg_cache(pg_closer, pg_url)

    async def round_trip(value: int) -> Any:
        await cache.aset({K: (value, None)})
        return (await cache.aget([K]))[K]

    assert [asyncio.run(round_trip(n)) for n in range(3)] == [0, 1, 2]
    results: list[Any] = []
    thread = threading.Thread(target=lambda: results.append(asyncio.run(round_trip(7))))
    thread.start()
    thread.join()
    assert results == [7]


_NONE = object()


async def _coalesced(
    coalescer: ReadCoalescer[Any] | WriteCoalescer, io: Callable[[list[Any]], Awaitable[Any]]
) -> object:
    if isinstance(coalescer, ReadCoalescer):
        return await coalescer.get([K], io)
    await coalescer.write(["statement"], io)
    return None


@pytest.mark.parametrize("kind", ["read", "write"])
def test_a_coalescer_keeps_nothing_of_a_loop_closed_mid_batch(kind: str) -> None:
    """A loop closed by hand with a batch queued, or with its drain waiting on the backend,
    was kept for the coalescer's life with its batch and drain task (and what they hold: a
    pooled connection); the drain, closed when collected, failed the dead loop's futures
    ("Event loop is closed", reported as unraisable)."""
    coalescer: ReadCoalescer[Any] | WriteCoalescer = (
        ReadCoalescer(_NONE) if kind == "read" else WriteCoalescer()
    )
    entered: list[bool] = []

    async def hang(items: list[Any]) -> Sequence[Any]:
        entered.append(True)
        await asyncio.Event().wait()
        raise AssertionError("unreachable")

    async def answer(items: list[Any]) -> Sequence[Any]:
        return [_NONE] * len(items)

    closed: list[weakref.ref[asyncio.AbstractEventLoop]] = []
    for moment in ("queued", "draining"):
        loop = asyncio.new_event_loop()
        caller = loop.create_task(_coalesced(coalescer, hang))
        if moment == "queued":  # one turn: the caller joined a batch, its drain did not run
            loop.call_soon(loop.stop)
            loop.run_forever()
        else:
            for _ in range(1_000):
                if entered:
                    break
                loop.run_until_complete(asyncio.sleep(0))
            assert entered
        assert not caller.done()
        loop.close()
        closed.append(weakref.ref(loop))
        del loop, caller
    assert asyncio.run(_coalesced(coalescer, answer)) in ({}, None)  # another loop batches
    gc.collect()
    assert [ref() for ref in closed] == [None, None]


def _sessions_of(admin: psycopg.Connection[Any], cache: PostgresCache[Any]) -> int:
    """Server sessions whose last statement named the cache's table (ours, since unique)."""
    row = admin.execute(
        "SELECT count(*) FROM pg_stat_activity WHERE pid <> pg_backend_pid() "
        "AND application_name = 'toolkit-cache' AND query LIKE %s",
        (f"%{cache.table}%",),
    ).fetchone()
    return int(row[0]) if row else 0


def _lock_waiting(admin: psycopg.Connection[Any], cache: PostgresCache[Any]) -> set[int]:
    """The sessions waiting for a lock on the cache's table."""
    rows = admin.execute(
        "SELECT pid FROM pg_locks WHERE NOT granted AND relation = %s::regclass",
        (f'"{cache.schema}"."{cache.table}"',),
    ).fetchall()
    return {int(pid) for (pid,) in rows}


@pytest.mark.parametrize("operation", ["aget", "aset"])
def test_postgres_loops_closed_mid_call_leave_no_connection_behind(
    pg_url: str, pg_closer: Closer, operation: str
) -> None:
    """Loops closed by hand while a call waited on the server (a lock held elsewhere): the
    call never resumes to give its connection back, so each such loop kept one open for as
    long as its task lived (an ``aget``'s for ever: the read coalescer kept its drain task),
    and closing the cache closed only idle ones. The pool of a closed loop now closes the
    connections it lent, whether or not the caller still holds its task."""
    cache = make_pg_cache(pg_closer, pg_url, timeout=120)  # no statement ends on its own
    asyncio.run(cache.aset({K: (0, None)}))  # the table exists: calls wait on its lock

    async def call() -> object:
        if operation == "aget":
            return await cache.aget([K])
        await cache.aset({K: (1, None)})
        return None

    held: list[asyncio.Task[object]] = []  # as a caller may keep them: no collection helps
    with (
        psycopg.connect(pg_url) as locker,
        psycopg.connect(pg_url, autocommit=True) as admin,
    ):
        locker.execute(f'LOCK TABLE "{cache.schema}"."{cache.table}" IN ACCESS EXCLUSIVE MODE')
        seen: set[int] = set()
        for _ in range(3):
            loop = asyncio.new_event_loop()
            held.append(loop.create_task(call()))
            deadline = time.monotonic() + 60  # a hang guard only
            while not _lock_waiting(admin, cache) - seen and time.monotonic() < deadline:
                loop.run_until_complete(asyncio.sleep(0.01))
            waiting = _lock_waiting(admin, cache) - seen
            assert waiting, "the call never reached the server"
            seen |= waiting
            loop.close()
        locker.rollback()
        assert asyncio.run(cache.aget([K])) == {K: 0}  # another loop: its pool is made
        cache.close()
        deadline = time.monotonic() + 60  # sessions end as the server sees their sockets close
        while _sessions_of(admin, cache) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert _sessions_of(admin, cache) == 0
    assert not any(task.done() for task in held)


def test_long_table_names_never_share_a_lease_table_or_an_index(
    pg_url: str, pg_closer: Closer
) -> None:
    """Two 63-character table names that differ only in their last character: the server
    truncates identifiers to 63 bytes, so ``<table>_lease`` and ``<table>_expires_at`` cut
    at the limit were one lease table for both caches (a lease on a key in one cache held
    off the same key in the other) and one index name (the second table got none)."""
    stem = unique_table()
    first = make_pg_cache(pg_closer, pg_url, table=stem + "x" * (62 - len(stem)) + "a")
    second = make_pg_cache(pg_closer, pg_url, table=stem + "x" * (62 - len(stem)) + "b")
    assert len(first.table) == len(second.table) == 63
    first.set({K: (1, 60)})
    second.set({K: (2, 60)})
    held = LeaseRequest("acquire", K, "token-1", 30.0)
    assert first.lease(held)
    assert second.lease(LeaseRequest("acquire", K, "token-2", 30.0))  # its own lease table
    with psycopg.connect(pg_url) as conn:
        for cache in (first, second):
            indexed = conn.execute(
                "SELECT count(*) FROM pg_indexes WHERE schemaname = %s AND tablename = %s "
                "AND indexdef LIKE %s",
                (cache.schema, cache.table, "%(expires_at)%"),
            ).fetchone()
            assert indexed == (1,), cache.table
    assert first.get([K]) == {K: 1}
    assert second.get([K]) == {K: 2}


def test_a_table_named_like_another_caches_helper_is_refused(
    pg_url: str, pg_closer: Closer
) -> None:
    """The cache on "t" keeps its leases in "t_lease" and its expiry index is "t_expires_at":
    a cache on one of those names found the relation made and failed on every call
    ('"t_expires_at" is an index', 'column "tag" does not exist')."""
    cache = make_pg_cache(pg_closer, pg_url)
    cache.set({K: (1, 60)})
    for helper in (cache._sql.lease_table, cache._sql.expiry_index):
        with pytest.raises(ValueError, match="kept for the lease table and index"):
            PostgresCache.from_url(pg_url, table=helper)
    assert cache.lease(LeaseRequest("acquire", K, "token", 5.0))
    assert cache.get([K]) == {K: 1}


async def test_a_purge_that_fails_does_not_fail_the_write_before_it(
    pg_url: str, pg_closer: Closer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A write's purge of expired rows ran as the last statement of the set's call: when
    it failed (here a statement that divides by zero; in life a statement timeout on a
    loaded server), set()/aset() raised although the upsert before it had committed, so the
    caller took stored values for lost. The purge now runs after the write, on its own."""
    cache = make_pg_cache(pg_closer, pg_url)
    failing = Statement.of("SELECT 1 / ($1::int8 - $1::int8)", INT8)
    monkeypatch.setattr(cache._sql, "purge", failing)
    cache.set({K: (1, None)})  # the first write of a cache is due a purge
    assert cache.get([K]) == {K: 1}
    await cache.aset({K: (2, None)})  # the failed purge is retried by the next write
    assert await cache.aget([K]) == {K: 2}


async def test_schema_and_unlogged_table_are_made_on_first_use(
    pg_url: str, pg_closer: Closer
) -> None:
    schema = f"toolkit_s_{unique_table()[-8:]}"
    cache = make_pg_cache(pg_closer, pg_url, schema=schema, unlogged=True)
    caches = [
        PostgresCache.from_url(pg_url, schema=schema, table=cache.table, unlogged=True)
        for _ in range(4)
    ]
    try:
        # Many first uses at once: the advisory lock lets exactly one create the table.
        await asyncio.gather(*(c.aset({K: (n, None)}) for n, c in enumerate(caches)))
    finally:
        for other in caches:
            other.close()
    with psycopg.connect(pg_url) as conn:
        row = conn.execute(
            "SELECT relpersistence FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
            "WHERE nspname = %s AND relname = %s",
            (schema, cache.table),
        ).fetchone()
    assert row == ("u",)
    assert cache.get([K])[K] in range(4)


async def test_gathered_agets_share_one_select(pg_url: str, pg_closer: Closer) -> None:
    cache = make_pg_cache(pg_closer, pg_url)
    keys = [(("pg",), str(n)) for n in range(20)]
    await cache.aset({k: (k[1], None) for k in keys})
    calls: list[int] = []
    original = cache._arun

    async def counting(calls_: Any, operation: str) -> Any:
        calls.append(1)
        return await original(calls_, operation)

    cache._arun = counting  # type: ignore[method-assign, assignment]
    found = await asyncio.gather(*(cache.aget([k]) for k in keys))
    assert found == [{k: k[1]} for k in keys]
    assert len(calls) == 1


def test_expired_rows_are_never_returned_and_purged(pg_url: str, pg_closer: Closer) -> None:
    cache = make_pg_cache(pg_closer, pg_url)
    evicted: list[tuple[Any, str, int]] = []
    cache.add_eviction_listener(lambda ns, cause, n: evicted.append((ns, cause, n)))
    with psycopg.connect(pg_url, autocommit=True) as conn:
        cache.set({K: ("v", 60)})
        conn.execute(
            f'UPDATE "{cache.schema}"."{cache.table}" SET expires_at = now() - interval \'1 s\''
        )
    assert cache.get([K]) == {}
    assert cache.stats().expired == 1
    assert list(cache.iter_keys(K[0])) == []
    assert cache.purge_expired() == 1
    assert evicted == [(K[0], "expired", 1)]
    assert cache.entry_count() == 0


def test_a_statement_past_its_timeout_is_a_cache_timeout(pg_url: str, pg_closer: Closer) -> None:
    cache = make_pg_cache(pg_closer, pg_url, timeout=0.2)
    cache.set({K: (1, None)})
    with psycopg.connect(pg_url) as locker:
        locker.execute(f'LOCK TABLE "{cache.schema}"."{cache.table}" IN ACCESS EXCLUSIVE MODE')
        with pytest.raises(CacheTimeoutError) as caught:
            cache.get([K])
        assert isinstance(caught.value.__cause__, psycopg.errors.QueryCanceled)
    assert cache.get([K]) == {K: 1}  # the connection survived the cancel


def test_a_server_that_is_not_there_is_a_backend_error() -> None:
    cache: PostgresCache[Any] = PostgresCache.from_url("postgresql://postgres@127.0.0.1:1/x")
    with pytest.raises(BackendError) as caught:
        cache.get([K])
    assert isinstance(caught.value.__cause__, psycopg.OperationalError)
    cache.close()
    with pytest.raises(CacheClosedError):
        cache.get([K])


def test_the_toolkit_command_inspects_a_postgres_cache(
    pg_url: str, pg_closer: Closer, capsys: pytest.CaptureFixture[str]
) -> None:
    from toolkit.cli import main

    cache = make_pg_cache(pg_closer, pg_url)
    cache.set({K: (1, None), (("pg", "test"), "other"): (2, 60), (("b",), "x"): (3, None)})
    assert main(["stats", pg_url, "--table", cache.table, "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert (data["entries"], data["expired"]) == (3, 0)
    assert main(["ls", pg_url, "--table", cache.table, "--ns", "pg/test"]) == 0
    listed = capsys.readouterr().out
    assert "k" in listed and "other" in listed
    assert main(["clear", pg_url, "--table", cache.table, "--yes"]) == 0
    assert cache.entry_count() == 0


def test_the_default_bound_fits_observe_so_no_deadline_thread_is_needed(pg_url: str) -> None:
    cache: PostgresCache[Any] = PostgresCache.from_url(pg_url)
    try:
        assert cache.max_call_seconds == 0.5
        stack = observe(cache, registry=CollectorRegistry())
        assert isinstance(stack, FailOpen)
        assert not stack.uses_threads
        assert stack.async_deadline is None
    finally:
        cache.close()


@pytest.fixture
def silent_server() -> Iterator[str]:
    """A URL whose server accepts connections and never answers."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(16)
        yield f"postgresql://postgres@127.0.0.1:{listener.getsockname()[1]}/x"


def test_a_connect_that_hangs_is_a_timeout_within_the_calls_bound(silent_server: str) -> None:
    """psycopg waits at least 2 s to connect; the call gives up at its own deadline."""
    cache: PostgresCache[Any] = PostgresCache.from_url(
        silent_server, connect_timeout=0.2, timeout=0.2
    )
    try:
        for _ in range(2):
            began = time.monotonic()
            with pytest.raises(CacheTimeoutError):
                cache.get([K])
            assert time.monotonic() - began < 0.4 + 0.5
    finally:
        cache.close()


async def test_an_async_connect_that_hangs_is_a_timeout_within_the_bound(
    silent_server: str,
) -> None:
    cache: PostgresCache[Any] = PostgresCache.from_url(
        silent_server, connect_timeout=0.2, timeout=0.2
    )
    try:
        began = time.monotonic()
        with pytest.raises(CacheTimeoutError):
            await cache.aget([K])
        assert time.monotonic() - began < 0.4 + 0.5
    finally:
        await cache.aclose()


def test_a_connection_made_after_its_caller_gave_up_serves_the_next_call(
    pg_url: str, pg_closer: Closer
) -> None:
    """A first call on a slow machine may time out while connecting; nothing is wasted."""
    cache = make_pg_cache(pg_closer, pg_url, connect_timeout=0.001, timeout=5.0)
    with contextlib.suppress(CacheTimeoutError):
        cache.get([K])  # the connection arrives after the call gave up
    deadline = time.monotonic() + 10
    while True:
        try:
            assert cache.get([K]) == {}  # an idle connection now: no connect on the way
            break
        except CacheTimeoutError:
            assert time.monotonic() < deadline
            time.sleep(0.05)


def test_introspection_may_run_past_the_hot_paths_statement_timeout(
    pg_url: str, pg_closer: Closer
) -> None:
    """stats, ls, purge and counts scan the table: they are not held to a get's 0.2 s."""
    cache = make_pg_cache(pg_closer, pg_url, timeout=0.2)
    cache.set({K: (1, None)})
    with psycopg.connect(pg_url) as locker:
        locker.execute(f'LOCK TABLE "{cache.schema}"."{cache.table}" IN ACCESS EXCLUSIVE MODE')
        with pytest.raises(CacheTimeoutError):
            cache.get([K])
        threading.Timer(0.6, locker.rollback).start()
        began = time.monotonic()
        assert cache.entry_count() == 1
        assert time.monotonic() - began > 0.4
    assert cache.stats().entries == 1
    assert [info.key for info in cache.iter_keys(K[0])] == ["k"]
    assert cache.purge_expired() == 0
    assert cache.get([K]) == {K: 1}  # the connection is back to its own statement_timeout
    with psycopg.connect(pg_url) as locker:
        locker.execute(f'LOCK TABLE "{cache.schema}"."{cache.table}" IN ACCESS EXCLUSIVE MODE')
        with pytest.raises(CacheTimeoutError):
            cache.get([K])


@pytest.mark.parametrize("api", ["sync", "async"])
async def test_a_statement_given_up_on_is_cancelled_on_the_server(pg_url: str, api: str) -> None:
    """A user's pool has no statement_timeout of ours: a call that gives up at its deadline
    has the server cancel its statement, so no server process stays stuck per timed-out call
    (they would pile up while a lock is held, up to the server's max_connections)."""
    table = unique_table()
    pool = psycopg_pool.ConnectionPool(pg_url, min_size=1, max_size=2, open=False)
    apool: Any = psycopg_pool.AsyncConnectionPool(pg_url, min_size=1, max_size=2, open=False)
    pool.open()
    await apool.open()
    cache: PostgresCache[Any] = PostgresCache(pool=pool, apool=apool, table=table, timeout=0.2)
    try:
        cache.set({K: (1, None)})
        with psycopg.connect(pg_url) as locker:
            locker.execute(f'LOCK TABLE "public"."{table}" IN ACCESS EXCLUSIVE MODE')
            for _ in range(3):
                with pytest.raises(CacheTimeoutError):
                    if api == "sync":
                        cache.get([K])
                    else:
                        await cache.aget([K])
            left = lock_waiters(locker, cache)
            for _ in range(200):  # the cancel requests are sent off the caller's path
                if left == 0:
                    break
                await asyncio.sleep(0.05)
                left = lock_waiters(locker, cache)
            assert left == 0, f"{left} statements still wait on the server"
        assert cache.get([K]) == {K: 1}
    finally:
        cache.close()
        pool.close()
        await apool.close()
        drop_table(pg_url, "public", table)


_SILENT_CANCEL_PROXY = r"""
import socket, sys, threading
target = (sys.argv[1], int(sys.argv[2]))
listener = socket.socket()
listener.bind(("127.0.0.1", 0))
listener.listen(4)
print(listener.getsockname()[1], flush=True)

def pump(src, dst):
    try:
        while data := src.recv(65536):
            dst.sendall(data)
    except OSError:
        pass

client, _ = listener.accept()  # the session: forwarded both ways
server = socket.create_connection(target)
threading.Thread(target=pump, args=(client, server), daemon=True).start()
threading.Thread(target=pump, args=(server, client), daemon=True).start()
cancel, _ = listener.accept()  # the cancel request: taken, never answered
print("cancel", flush=True)
sys.stdin.read()
"""

_CANCEL_CHILD = r"""
import subprocess, sys, threading
import psycopg
from toolkit.backends._postgres_conn import broken
proxy = subprocess.Popen(
    [sys.executable, "-c", sys.argv[1], sys.argv[2], sys.argv[3]],
    stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
)
port = proxy.stdout.readline().strip()
conn = psycopg.connect(f"postgresql://{sys.argv[4]}@127.0.0.1:{port}/{sys.argv[5]}")
conn.pgconn.send_query(b"SELECT pg_sleep(3)")
broken(conn)  # the statement is running: a cancel request goes to the canceller thread
assert proxy.stdout.readline().strip() == "cancel"
ran = threading.Event()
threading.Thread(target=ran.set).start()
print("alive" if ran.wait(30) else "frozen", flush=True)
proxy.kill()
"""


def test_a_cancel_the_server_never_answers_leaves_the_process_running(pg_url: str) -> None:
    """The cancel request sent for a call given up on waits without holding the GIL: a
    server that takes it and never answers must not freeze every thread of the process."""

    info = psycopg.conninfo.conninfo_to_dict(pg_url)
    args = [str(info.get("host", "127.0.0.1")), str(info.get("port", 5432))]
    args += [str(info.get("user", "postgres")), str(info.get("dbname", "postgres"))]
    child = subprocess.Popen(
        [sys.executable, "-c", _CANCEL_CHILD, _SILENT_CANCEL_PROXY, *args],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        out, _ = child.communicate(timeout=60)
    except subprocess.TimeoutExpired:
        child.kill()
        out, _ = child.communicate()
    assert "alive" in out
