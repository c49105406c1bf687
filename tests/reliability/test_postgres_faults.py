"""PostgreSQL faults made for real: a private server stopped, the same server restarted in the
middle of a load, and a connection pool with every connection busy. (A statement that hangs
and a connect that hangs are in tests/test_postgres.py.)

Every scenario runs bare (only ``BackendError``/``CacheTimeoutError`` may reach the caller)
and through ``observe`` (nothing reaches the caller; each failure is counted), and every call
returns within the cache's declared bound plus scheduling slack.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Sequence
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass, field
from typing import Any

import psycopg
import psycopg_pool
import pytest

from tests.postgres_servers import PostgresServer
from tests.postgres_support import drop_table, lock_waiters, make_pg_cache, unique_table
from tests.reliability.conftest import FAILED, Tally
from tests.reliability.faults import wait_for
from tests.reliability.stacks import carries_key, errors_counted, observed, tagged
from toolkit import FullKey
from toolkit.backends.postgres import PostgresCache

pytestmark = pytest.mark.postgres

Closer = list[tuple[str, PostgresCache[Any]]]
_Starved = tuple[
    str, Callable[[Any], Any], Callable[[Any], Awaitable[Any]], Any, Callable[[Any], bool]
]
"""A call that cannot get a connection: layer, sync and async method, argument, expected."""
NS = ("reliability", "postgres")
GRACE = 1.5
"""Scheduling slack on a loaded 2-core machine: a hang is many times longer."""
ALLOWED = {"BackendError", "CacheTimeoutError"}
"""What a bare PostgresCache may raise when its server fails."""
WORKERS = 4
CROWD = 8
SETTLE = 20.0
"""Hang protection for waits on progress (a healthy run needs a small fraction of it)."""


def _bound(cache: PostgresCache[Any]) -> float:
    """The longest a call may take: the cache's declared bound plus scheduling slack."""
    assert cache.max_call_seconds is not None
    return cache.max_call_seconds + GRACE


def _keys(owner: int | str, count: int = 3) -> list[FullKey]:
    """Keys of one writer (no other writer touches them)."""
    return [(NS, f"{owner}-k{i}") for i in range(count)]


def _pairs(keys: Sequence[FullKey], writer: int, seq: int) -> dict[FullKey, tuple[Any, None]]:
    """A batch whose values name their key, their writer and its sequence number."""
    return {fk: (tagged(fk, writer, seq), None) for fk in keys}


def _values(pairs: dict[FullKey, tuple[Any, None]]) -> dict[FullKey, Any]:
    """What a get of the keys of ``pairs`` returns once they are stored."""
    return {fk: value for fk, (value, _) in pairs.items()}


def _read_ok(got: Any, keys: Sequence[FullKey], writer: int, newest: int) -> bool:
    """Whether a get returned only keys it asked for, each with a value ``writer`` wrote for
    that key no later than its ``newest`` write (a failed call returns nothing wrong)."""
    if got is FAILED:
        return True
    return set(got) <= set(keys) and all(
        carries_key(value, fk) and value[2] == writer and 0 < value[3] <= newest
        for fk, value in got.items()
    )


def _assert_row(row: Tally, bound: float) -> None:
    """Nothing wrong, every call within ``bound``; through observe, nothing raised."""
    assert row.wrong == 0, f"{row.scenario} ({row.layer}): {row.wrong} wrong values"
    assert row.worst < bound, f"{row.scenario} ({row.layer}): a call took {row.worst:.2f}s"
    if row.layer == "observe":
        assert row.errors == 0, row.error_types
    else:
        assert set(row.error_types) <= ALLOWED, row.error_types


def _server_cache(server: PostgresServer) -> PostgresCache[Any]:
    """A cache with the default timeouts (its bound fits observe's deadline: no thread)."""
    return PostgresCache.from_url(server.url, table=unique_table())


# -- a stopped server ---------------------------------------------------------------------


@pytest.mark.slow
async def test_a_stopped_server(private_pg: PostgresServer, tally: Callable[..., Tally]) -> None:
    """Every call fails fast: bare it raises a CacheError, through observe a get is a miss and
    a write is dropped, each counted; once the server is back the same cache serves again."""
    cache = _server_cache(private_pg)
    stack, registry = observed(cache, failure_threshold=10_000)
    rows = {
        (api, layer): tally(f"postgres: server stopped ({api})", layer)
        for api in ("sync", "async")
        for layer in ("observe", "bare")
    }
    keys = _keys("stopped")
    pairs = _pairs(keys, 0, 1)
    try:
        # Both pools now hold a connection the stop will break.
        assert wait_for(lambda: _round_trip(cache, pairs), SETTLE)
        assert await _around_trip(cache, pairs, SETTLE)
        private_pg.stop()
        for _ in range(5):
            row = rows["sync", "observe"]
            row.check(row.call(stack.get, keys) == {})
            row.check(row.call(stack.set, pairs) is None)
            row.check(row.call(stack.clear, [NS]) is None)
            row = rows["async", "observe"]
            row.check(await row.acall(stack.aget, keys) == {})
            row.check(await row.acall(stack.aset, pairs) is None)
            row.check(await row.acall(stack.aclear, [NS]) is None)
            row = rows["sync", "bare"]  # each of these must raise: checked below
            row.call(cache.get, keys)
            row.call(cache.set, pairs)
            row.call(cache.clear, [NS])
            row = rows["async", "bare"]
            await row.acall(cache.aget, keys)
            await row.acall(cache.aset, pairs)
            await row.acall(cache.aclear, [NS])
        observed_calls = rows["sync", "observe"].operations + rows["async", "observe"].operations
        assert errors_counted(registry) == observed_calls, "not every failure was counted"

        private_pg.start()
        again = _pairs(keys, 0, 2)
        assert wait_for(lambda: _round_trip(cache, again), SETTLE), "no recovery (sync)"
        assert await _around_trip(cache, _pairs(keys, 0, 3), SETTLE), "no recovery (async)"
        assert wait_for(lambda: _read(stack, keys) == _values(_pairs(keys, 0, 3)), SETTLE)
    finally:
        await cache.aclose()

    for row in rows.values():
        _assert_row(row, _bound(cache))
        if row.layer == "bare":
            assert row.errors == row.operations, "a call to a stopped server succeeded"


def _read(cache: Any, keys: list[FullKey]) -> Any:
    """What a get returns, or ``FAILED`` (a busy machine may make one call time out)."""
    try:
        return cache.get(keys)
    except Exception:
        return FAILED


def _round_trip(cache: Any, pairs: dict[FullKey, tuple[Any, None]]) -> bool:
    """Whether a set and then a get of ``pairs`` both worked and read back what was set."""
    try:
        cache.set(pairs)
        return bool(cache.get(list(pairs)) == _values(pairs))
    except Exception:
        return False


async def _around_trip(cache: Any, pairs: dict[FullKey, tuple[Any, None]], within: float) -> bool:
    """The async twin of ``_round_trip``, retried for ``within`` seconds."""
    loop = asyncio.get_running_loop()
    give_up = loop.time() + within
    while True:
        try:
            await cache.aset(pairs)
            if await cache.aget(list(pairs)) == _values(pairs):
                return True
        except Exception:
            pass
        if loop.time() >= give_up:
            return False
        await asyncio.sleep(0.05)


# -- a server restarted in the middle of a load -------------------------------------------


@dataclass
class _Worker:
    """One load worker: its own tallies (merged at the end), keys and progress."""

    index: int
    observe: Tally = field(default_factory=lambda: Tally("worker", "observe"))
    bare: Tally = field(default_factory=lambda: Tally("worker", "bare"))
    seq: int = 0
    recovered: set[str] = field(default_factory=set)
    """The layers through which a set then a get worked after the restart."""

    @property
    def keys(self) -> list[FullKey]:
        """The keys only this worker writes."""
        return _keys(self.index)

    def next_pairs(self) -> dict[FullKey, tuple[Any, None]]:
        """This worker's next batch (a higher sequence number than any before)."""
        self.seq += 1
        return _pairs(self.keys, self.index, self.seq)

    def judge(self, layer: str, row: Tally, pairs: Any, wrote: Any, got: Any, after: bool) -> None:
        """Check one set-then-get round; note a full round trip made after the restart."""
        row.check(_read_ok(got, self.keys, self.index, self.seq))
        if after and wrote is not FAILED and got == _values(pairs):
            self.recovered.add(layer)


class _Load:
    """Shared state of a load run: when to stop, and whether the server was restarted."""

    def __init__(self, stack: Any, cache: PostgresCache[Any]) -> None:
        """Workers drive ``stack`` (observe) and ``cache`` (bare) in turn."""
        self.layers = (("observe", stack), ("bare", cache))
        self.workers = [_Worker(i) for i in range(WORKERS)]
        self.stop = threading.Event()
        self.restarted = threading.Event()

    def progressed(self, least: int) -> bool:
        """Whether every worker made at least ``least`` bare calls."""
        return all(w.bare.operations >= least for w in self.workers)

    def all_failed_once(self) -> bool:
        """Whether every worker's bare calls have met the stopped server."""
        return all(w.bare.errors > 0 for w in self.workers)

    def all_recovered(self) -> bool:
        """Whether every worker completed a round trip through both layers after the restart."""
        return all(w.recovered == {"observe", "bare"} for w in self.workers)

    def report(self, rows: dict[str, Tally]) -> None:
        """Merge the workers' tallies into the report rows."""
        for worker in self.workers:
            rows["observe"].merge(worker.observe.counts())
            rows["bare"].merge(worker.bare.counts())


def _work(load: _Load, worker: _Worker) -> None:
    """Set then get this worker's keys through each layer until told to stop."""
    while not load.stop.is_set():
        for layer, target in load.layers:
            after = load.restarted.is_set()
            row = worker.observe if layer == "observe" else worker.bare
            pairs = worker.next_pairs()
            wrote = row.call(target.set, pairs)
            got = row.call(target.get, worker.keys)
            worker.judge(layer, row, pairs, wrote, got, after)


async def _awork(load: _Load, worker: _Worker) -> None:
    """The async twin of ``_work``."""
    while not load.stop.is_set():
        for layer, target in load.layers:
            after = load.restarted.is_set()
            row = worker.observe if layer == "observe" else worker.bare
            pairs = worker.next_pairs()
            wrote = await row.acall(target.aset, pairs)
            got = await row.acall(target.aget, worker.keys)
            worker.judge(layer, row, pairs, wrote, got, after)


def _restart(server: PostgresServer, load: _Load, how: str) -> None:
    """Stop the server once the load runs, keep it down until every worker has met it, start
    it again, and wait until every worker has written and read back through both layers."""
    assert wait_for(lambda: load.progressed(10), SETTLE), "the load did not get going"
    server.stop(how)
    assert wait_for(load.all_failed_once, SETTLE), "some worker never met the stopped server"
    server.start()
    load.restarted.set()
    assert wait_for(load.all_recovered, SETTLE), "the cache did not serve again after restart"


@pytest.mark.slow
@pytest.mark.parametrize("how", ["fast", "immediate"])
@pytest.mark.parametrize("api", ["sync", "async"])
async def test_restarted_mid_load(
    private_pg: PostgresServer, tally: Callable[..., Tally], api: str, how: str
) -> None:
    """4 workers set and get their own keys, bare and through observe, while the server is
    stopped (``fast``: sessions terminated; ``immediate``: a crash) and started again."""
    workers = "threads" if api == "sync" else "coroutines"
    scenario = f"postgres: restarted mid-load ({WORKERS} {workers}, {how} stop)"
    rows = {layer: tally(scenario, layer) for layer in ("observe", "bare")}
    cache = _server_cache(private_pg)
    stack, registry = observed(cache, failure_threshold=10_000)
    load = _Load(stack, cache)
    try:
        if api == "sync":
            threads = [threading.Thread(target=_work, args=(load, w)) for w in load.workers]
            for thread in threads:
                thread.start()
            try:
                _restart(private_pg, load, how)
            finally:
                load.stop.set()
                for thread in threads:
                    thread.join()
        else:
            tasks = [asyncio.create_task(_awork(load, w)) for w in load.workers]
            try:
                await asyncio.to_thread(_restart, private_pg, load, how)
            finally:
                load.stop.set()
                await asyncio.gather(*tasks)
    finally:
        load.report(rows)
        await cache.aclose()

    for row in rows.values():
        _assert_row(row, _bound(cache))
    assert errors_counted(registry) > 0, "the failures through observe were not counted"


# -- a pool with every connection busy ----------------------------------------------------


@contextmanager
def _table_locked(url: str, cache: PostgresCache[Any]) -> Iterator[psycopg.Connection[Any]]:
    """Another session holds an exclusive lock on the cache's table until the block ends."""
    with psycopg.connect(url, connect_timeout=5) as locker:
        locker.execute(f'LOCK TABLE "{cache.schema}"."{cache.table}" IN ACCESS EXCLUSIVE MODE')
        yield locker


@contextmanager
def _own_pool_busy(url: str, cache: PostgresCache[Any]) -> Iterator[None]:
    """The only connection of the cache's own pool (``pool_size=1``) stays busy: a ``stats``
    count (admin timeout: a minute) waits behind another session's lock until the block ends."""
    counted: list[int] = []
    holder = threading.Thread(target=lambda: counted.append(cache.entry_count()))
    with _table_locked(url, cache) as locker:
        holder.start()
        try:
            assert wait_for(lambda: lock_waiters(locker, cache) > 0, SETTLE)
            yield
        finally:
            locker.rollback()
            holder.join()
    assert len(counted) == 1, "the held call did not finish once freed"


@contextmanager
def _sync_pool(url: str, closer: Closer, kind: str) -> Iterator[tuple[PostgresCache[Any], Any]]:
    """A cache whose pool has one connection, and how to keep that connection busy."""
    if kind == "own":
        cache = make_pg_cache(closer, url, pool_size=1, timeout=0.25)
        yield cache, lambda: _own_pool_busy(url, cache)
        return
    table = unique_table()
    with psycopg_pool.ConnectionPool(url, min_size=1, max_size=1) as pool:
        user: PostgresCache[Any] = PostgresCache(pool=pool, table=table)
        try:
            yield user, pool.connection
        finally:
            user.close()
            drop_table(url, "public", table)


def _starved(stack: Any, cache: Any, keys: list[FullKey], pairs: Any) -> list[_Starved]:
    """A get and a set through each layer, with what each must return while no connection is
    to be had: through observe a miss and a dropped write, bare a failure."""
    return [
        ("observe", stack.get, stack.aget, keys, lambda got: got == {}),
        ("observe", stack.set, stack.aset, pairs, lambda got: got is None),
        ("bare", cache.get, cache.aget, keys, lambda got: got is FAILED),
        ("bare", cache.set, cache.aset, pairs, lambda got: got is FAILED),
    ]


def _crowd(rows: dict[str, Tally], calls: Sequence[_Starved]) -> None:
    """Run every call on its own thread, all released at once, each on its own tally."""
    barrier = threading.Barrier(len(calls))
    tallies = [Tally("caller", layer) for layer, *_ in calls]

    def run(row: Tally, call: _Starved) -> None:
        _, method, _amethod, arg, ok = call
        barrier.wait()
        row.check(ok(row.call(method, arg)))

    threads = [threading.Thread(target=run, args=pair) for pair in zip(tallies, calls, strict=True)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for row in tallies:
        rows[row.layer].merge(row.counts())


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["own", "user"])
def test_pool_exhausted(
    pg_url: str, pg_closer: Closer, tally: Callable[..., Tally], kind: str
) -> None:
    """A pool of one connection held busy, and CROWD callers of each of get and set, bare and
    through observe, at once: each times out within the bound (bare ``CacheTimeoutError``,
    observed a miss or a dropped write, counted); once the connection is free all is well."""
    scenario = f"postgres: pool of 1 held busy, {CROWD * 4} threads ({kind} pool, sync)"
    with _sync_pool(pg_url, pg_closer, kind) as (cache, busy):
        stack, registry = observed(cache, failure_threshold=10_000)
        keys = _keys("pool")
        # The table exists, the pool's connection is made.
        assert wait_for(lambda: _round_trip(cache, _pairs(keys, 0, 1)), SETTLE)
        rows = {layer: tally(scenario, layer) for layer in ("observe", "bare")}
        with busy():
            _crowd(rows, _starved(stack, cache, keys, _pairs(keys, 0, 2)) * CROWD)
        _assert_starved(rows, registry)
        assert wait_for(lambda: _round_trip(stack, _pairs(keys, 0, 3)), SETTLE)
        assert wait_for(lambda: _read(cache, keys) == _values(_pairs(keys, 0, 3)), SETTLE)
    for row in rows.values():
        _assert_row(row, _bound(cache))


def _assert_starved(rows: dict[str, Tally], registry: Any) -> None:
    """Every bare call timed out, and every observed one was counted as a failure."""
    bare = rows["bare"]
    assert bare.operations == 2 * CROWD
    assert bare.error_types == {"CacheTimeoutError": bare.operations}
    assert rows["observe"].operations == 2 * CROWD
    assert errors_counted(registry) == rows["observe"].operations


@asynccontextmanager
async def _async_pool(
    url: str, closer: Closer, kind: str
) -> AsyncIterator[tuple[PostgresCache[Any], Callable[[], Any]]]:
    """A cache whose async pool has one connection, and how to keep every call waiting.

    The user's pool: its one connection checked out. The cache's own pool: another session
    locks the table, so the first call holds the connection and waits, and the rest wait for
    it."""
    if kind == "own":
        cache = make_pg_cache(closer, url, pool_size=1, timeout=0.25)
        yield cache, lambda: _async_locked(url, cache)
        return
    table = unique_table()
    apool: Any = psycopg_pool.AsyncConnectionPool(url, min_size=1, max_size=1, open=False)
    await apool.open()
    try:
        user: PostgresCache[Any] = PostgresCache(apool=apool, table=table)
        yield user, apool.connection
    finally:
        await apool.close()
        drop_table(url, "public", table)


@asynccontextmanager
async def _async_locked(url: str, cache: PostgresCache[Any]) -> AsyncIterator[None]:
    """The cache's table locked by another session (connected off the event loop)."""
    manager = _table_locked(url, cache)
    await asyncio.to_thread(manager.__enter__)
    try:
        yield
    finally:
        await asyncio.to_thread(manager.__exit__, None, None, None)


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["own", "user"])
async def test_async_pool_exhausted(
    pg_url: str, pg_closer: Closer, tally: Callable[..., Tally], kind: str
) -> None:
    """The async twin of ``test_pool_exhausted``: the callers are gathered coroutines."""
    scenario = f"postgres: pool of 1 held busy, {CROWD * 4} coroutines ({kind} pool, async)"
    async with _async_pool(pg_url, pg_closer, kind) as (cache, busy):
        stack, registry = observed(cache, failure_threshold=10_000)
        keys = _keys("pool")
        assert await _around_trip(cache, _pairs(keys, 0, 1), SETTLE)
        rows = {layer: tally(scenario, layer) for layer in ("observe", "bare")}
        async with busy():
            calls = _starved(stack, cache, keys, _pairs(keys, 0, 2)) * CROWD
            await asyncio.gather(*(_astarve(rows, call) for call in calls))
        _assert_starved(rows, registry)
        assert await _around_trip(stack, _pairs(keys, 0, 3), SETTLE)
        assert await _around_trip(cache, _pairs(keys, 0, 4), SETTLE)
    for row in rows.values():
        _assert_row(row, _bound(cache))


async def _astarve(rows: dict[str, Tally], call: _Starved) -> None:
    """One starved call, async (one event loop: the rows need no merging)."""
    layer, _method, amethod, arg, ok = call
    row = rows[layer]
    row.check(ok(await row.acall(amethod, arg)))
