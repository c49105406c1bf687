"""Fleet-wide freshness for ``@cached`` (issue 13): leases, stale-while-revalidate, XFetch.

Real parts only: spawned processes sharing a SQLite file or a Redis prefix, a private
``redis-server`` for the fault test, LangGraph's own cache for the fallback. Computations
are counted outside the callers (an append-only file); waits are on events, each bounded
only against a hang, and assertions are on counts and outcomes, never on durations.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import multiprocessing
import os
import random
import signal
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import timedelta
from pathlib import Path
from typing import Any, cast

import pytest
import redis
from prometheus_client import CollectorRegistry

from tests.fleet_workers import (
    HANG,
    STALE_TTL,
    Crowd,
    LeaseSpy,
    Report,
    call_all,
    crowd_worker,
    killed_leader_worker,
    lines,
    make_stale,
    open_store,
    samples,
    stale_worker,
    wait_for,
)
from tests.postgres_support import drop_table, unique_table
from tests.redis_support import unique_prefix
from toolkit import InMemoryCache, SqliteCache, cached, observe
from toolkit.backends.postgres import PostgresCache
from toolkit.backends.redis import RedisCache
from toolkit.decorators import _refresh, freshness
from toolkit.lease import MAX_LEASE_SECONDS, LeaseRequest, new_token
from toolkit.middleware.base import CacheMiddleware, supports_lease

SPAWN = multiprocessing.get_context("spawn")


def leases(registry: CollectorRegistry) -> dict[str, float]:
    """``cache_leases_total`` by outcome, zero outcomes left out."""
    return {k: v for k, v in samples(registry, "cache_leases_total", "outcome").items() if v}


def total(registry: CollectorRegistry, name: str, label: str, value: str) -> float:
    """The sum of ``name``'s samples whose ``label`` is ``value``."""
    return samples(registry, name, label).get(value, 0.0)


def lease_calls(registry: CollectorRegistry) -> float:
    """Lease operations that reached the backend, counted by ``observe``'s latency histogram."""
    return total(registry, "cache_operation_duration_seconds_count", "operation", "lease")


async def settle(predicate: Callable[[], bool]) -> None:
    """Wait (off the loop, so this loop's refresh tasks run) until ``predicate`` holds."""
    assert await asyncio.to_thread(wait_for, predicate), "hang: the expected state never came"


@pytest.fixture(
    params=["memory", "sqlite", pytest.param("redis", marks=pytest.mark.redis)],
)
async def backend(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Any]:
    """A bare backend that stores leases: in-process, a SQLite file, or Redis."""
    if request.param == "memory":
        yield InMemoryCache()
    elif request.param == "sqlite":
        sqlite: SqliteCache[Any] = SqliteCache(path=str(tmp_path / "fleet.db"))
        yield sqlite
        await sqlite.aclose()
    else:
        async with redis_store(request.getfixturevalue("redis_url")) as store:
            yield store


@contextlib.asynccontextmanager
async def redis_store(url: str, *, cluster: bool = False) -> AsyncIterator[RedisCache[Any]]:
    """A Redis cache under a fresh prefix, emptied and closed (in this loop) afterwards."""
    store = RedisCache.from_url(
        url, cluster=cluster, prefix=unique_prefix(), socket_timeout=2.0, socket_connect_timeout=2.0
    )
    try:
        yield store
    finally:
        try:
            store.clear()
        finally:
            await store.aclose()


def shared_store(kind: str, request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """Where spawned workers meet: ``sqlite:<file>`` (created here), ``redis:<url>|<prefix>``
    or ``redis-cluster:<url>|<prefix>``."""
    if kind == "sqlite":
        path = tmp_path / "fleet.db"
        SqliteCache(path=str(path)).close()  # the schema exists before the workers race to it
        return f"sqlite:{path}"
    url = request.getfixturevalue("redis_cluster_url" if kind == "redis-cluster" else "redis_url")
    return f"{kind}:{url}|{unique_prefix()}"


def forget(where: str) -> None:
    """Delete the entries the workers left in a shared Redis (their leases lapse by
    themselves; a SQLite file goes with tmp_path)."""
    if where.startswith("redis"):
        store = open_store(where)
        try:
            store.clear()
        finally:
            store.close()


def finish(procs: list[Any]) -> list[int | None]:
    """Join the workers (killing any that hang) and return their exit codes."""
    for proc in procs:
        proc.join(HANG)
        if proc.is_alive():
            proc.kill()
            proc.join()
    return [proc.exitcode for proc in procs]


# -- 1. lock=True: one computation per cold key in the whole fleet ---------------------------


def run_crowd(crowd: Crowd) -> list[Report]:
    """Start the crowd's processes, release them together, and collect their reports."""
    ready, out, go = SPAWN.Queue(), SPAWN.Queue(), SPAWN.Event()
    denied = SPAWN.Array("b", crowd.processes)
    procs = [
        SPAWN.Process(target=crowd_worker, args=(crowd, i, denied, ready, go, out))
        for i in range(crowd.processes)
    ]
    for proc in procs:
        proc.start()
    try:
        for _ in procs:
            ready.get(timeout=HANG)
        go.set()
        reports: list[Report] = [out.get(timeout=HANG) for _ in procs]
    finally:
        codes = finish(procs)
    assert codes == [0] * crowd.processes
    return reports


@pytest.mark.parametrize(
    ("kind", "calling", "processes", "callers"),
    [
        ("sqlite", "async", 8, 25),
        ("sqlite", "threads", 4, 10),
        pytest.param("redis", "async", 8, 25, marks=pytest.mark.redis),
        pytest.param("redis", "threads", 4, 10, marks=pytest.mark.redis),
    ],
)
def test_a_cold_key_is_computed_once_by_the_whole_fleet(
    kind: str,
    calling: str,
    processes: int,
    callers: int,
    request: pytest.FixtureRequest,
    tmp_path: Path,
) -> None:
    """Every process asks for one cold key at once; the computation waits until every other
    process has been refused the lease, so all of them provably wait on it; it runs once."""
    where = shared_store(kind, request, tmp_path)
    counter = str(tmp_path / "computed")
    try:
        reports = run_crowd(Crowd(where, counter, True, calling, processes, callers))
    finally:
        forget(where)
    assert lines(counter) == 1
    for report in reports:
        assert report.errors == []
        assert report.values == [{"answer": 42}] * callers
        assert report.extra["errors"] == 0
    fleet: dict[str, float] = {}
    for report in reports:
        for outcome, count in report.leases.items():
            fleet[outcome] = fleet.get(outcome, 0) + count
    # One caller in the fleet took the lease; every other process waited on it (a caller
    # whose read missed just before the value landed may wait once more: never computes).
    assert {k for k, v in fleet.items() if v} == {"acquired", "waited"}
    assert fleet["acquired"] == 1
    assert processes - 1 <= fleet["waited"] <= processes * callers - 1
    assert all(leases_of(report) for report in reports)


def test_without_lock_every_process_computes(
    request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    """The control: the same crowd with ``lock=False`` computes more than once (the test above
    can fail), and no lease is asked for."""
    where = shared_store("sqlite", request, tmp_path)
    counter = str(tmp_path / "computed")
    try:
        reports = run_crowd(Crowd(where, counter, False, "async", 4, 5))
    finally:
        forget(where)
    assert lines(counter) >= 2
    for report in reports:
        assert report.errors == []
        assert report.values == [{"answer": 42}] * 5
        assert not any(report.leases.values())


# -- 2. a leader killed mid-computation is replaced when its lease lapses -----------------


@pytest.mark.parametrize(
    ("kind", "calling"),
    [("sqlite", "async"), pytest.param("redis", "threads", marks=pytest.mark.redis)],
)
def test_a_killed_leader_is_taken_over_when_its_lease_lapses(
    kind: str, calling: str, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    """The leader (lease_ttl=1 s, renewed while it computes) is SIGKILLed while a waiter
    waits on its lease; the waiter takes the lease over, well before its lock_timeout
    (60 s), computes, and every one of its callers gets the value."""
    where = shared_store(kind, request, tmp_path)
    counter = str(tmp_path / "computed")
    started, denied, go, out = SPAWN.Event(), SPAWN.Event(), SPAWN.Event(), SPAWN.Queue()
    procs = [
        SPAWN.Process(
            target=killed_leader_worker,
            args=(where, counter, role, calling, started, denied, go, out),
        )
        for role in ("leader", "waiter")
    ]
    leader, _ = procs
    for proc in procs:
        proc.start()
    try:
        assert started.wait(HANG), "the leader never began computing"
        go.set()
        assert denied.wait(HANG), "the waiter never found the lease held"
        os.kill(leader.pid or 0, signal.SIGKILL)
        report: Report = out.get(timeout=HANG)
    finally:
        codes = finish(procs)
        forget(where)
    assert codes == [-signal.SIGKILL, 0]
    assert report.errors == []
    assert report.values == [{"answer": 42}] * 5
    assert leases_of(report) == {"taken_over": 1}
    assert report.extra["seconds"] < HANG  # the lease lapsed; lock_timeout never came
    assert lines(counter) == 2  # the killed leader's attempt, and the waiter's


def leases_of(report: Report) -> dict[str, float]:
    """A report's lease outcomes, zero outcomes left out."""
    return {k: v for k, v in report.leases.items() if v}


# -- 3. a waiter past lock_timeout computes itself ----------------------------------------


async def test_a_waiter_past_lock_timeout_computes_itself(backend: Any, mode: str) -> None:
    """Two functions share one key (as two processes would); while the first computes,
    holding a live lease, the second waits 0.2 s, then computes itself: ``timeout``."""
    registry = CollectorRegistry()
    cache = observe(backend, registry=registry)
    started, release = threading.Event(), threading.Event()
    computed: list[str] = []

    @cached("fleet.timeout", cache=cache, ttl=300, key_id="timeout", lock=True)
    def holder() -> str:
        computed.append("holder")
        started.set()
        release.wait(HANG)
        return "value"

    @cached("fleet.timeout", cache=cache, ttl=300, key_id="timeout", lock=True, lock_timeout=0.2)
    def waiter() -> str:
        computed.append("waiter")
        return "value"

    @cached("fleet.timeout", cache=cache, ttl=300, key_id="timeout", lock=True, lock_timeout=0.2)
    async def awaiter() -> str:
        computed.append("waiter")
        return "value"

    held: list[str] = []
    thread = threading.Thread(target=lambda: held.append(holder()))
    thread.start()
    try:
        assert started.wait(HANG)
        assert (waiter() if mode == "sync" else await awaiter()) == "value"
        assert thread.is_alive()  # the holder still computes...
        probe = LeaseRequest("acquire", holder.cache_key(), new_token(), 5.0)
        assert backend.lease(probe) is False  # ...and still holds its lease
    finally:
        release.set()
        thread.join(HANG)
    assert held == ["value"]
    assert computed == ["holder", "waiter"]
    assert leases(registry) == {"acquired": 1, "timeout": 1}


async def test_a_holder_cancelled_mid_computation_gives_its_lease_back(backend: Any) -> None:
    """A coroutine computing under its lease is cancelled: the lease is released on the way
    out (not left to lapse after its 60 s), so the next caller can take it at once."""
    started = asyncio.Event()

    @cached("fleet.cancel", cache=backend, ttl=300, key_id="cancel", lock=True, lease_ttl=60)
    async def slow() -> str:
        started.set()
        await asyncio.sleep(HANG)
        return "value"

    task = asyncio.create_task(slow())
    await asyncio.wait_for(started.wait(), HANG)
    probe = LeaseRequest("acquire", slow.cache_key(), new_token(), 5.0)
    assert backend.lease(probe) is False  # held while it computes
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert backend.lease(probe) is True
    backend.lease(LeaseRequest("release", probe.key, probe.token))


class ReplyLost(CacheMiddleware[Any]):
    """A lease acquire reaches the backend (which grants it), but its answer never comes
    back, as when the caller is cancelled while the reply is on its way: the caller waits
    until it is cancelled."""

    def __init__(self, inner: Any) -> None:
        self.asked = threading.Event()
        super().__init__(inner)

    def wrap_async(
        self, operation: str, call: Callable[..., Awaitable[Any]]
    ) -> Callable[..., Awaitable[Any]]:
        if operation != "lease":
            return call

        async def alease(request: LeaseRequest) -> Any:
            held = await call(request)
            if request.action == "acquire":
                self.asked.set()
                await asyncio.Event().wait()  # no answer, until cancelled
            return held

        return alease

    def wrap_sync(self, operation: str, call: Callable[..., Any]) -> Callable[..., Any]:
        if operation != "lease":
            return call

        def lease(request: LeaseRequest) -> Any:
            held = call(request)
            if request.action == "acquire":
                self.asked.set()
                raise KeyboardInterrupt  # the sync twin of a cancellation
            return held

        return lease


def test_a_caller_interrupted_while_asking_for_a_lease_gives_it_back(backend: Any) -> None:
    """The sync twin: a ``lock=True`` miss interrupted while its granted acquire's answer is
    on its way releases the lease on the way out."""
    cache = ReplyLost(backend)

    @cached("fleet.asking", cache=cache, ttl=60, lock=True, lease_ttl=60)
    def value() -> str:
        return "value"

    with pytest.raises(KeyboardInterrupt):
        value()
    assert cache.asked.is_set()
    probe = LeaseRequest("acquire", value.cache_key(), new_token(), 5.0)
    assert backend.lease(probe) is True  # given back on the way out
    backend.lease(LeaseRequest("release", probe.key, probe.token))


@pytest.mark.parametrize("path", ["miss", "refresh"])
async def test_a_caller_cancelled_while_asking_for_a_lease_gives_it_back(
    backend: Any, path: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A coroutine is cancelled while its lease acquire is on its way (a ``lock=True`` miss,
    or a background refresh of a stale hit): the backend may have granted it, so it is
    released on the way out, not left held for its 10-60 s while every other process of the
    fleet waits for (or skips) a computation nobody runs."""
    clock = StoppedClock()
    monkeypatch.setattr(freshness, "_now", clock)
    cache = ReplyLost(backend)
    # A refresh's lease lives 10 s (lease_ttl is for lock=True, which a miss would lease).
    options: dict[str, Any] = {"lock": True, "lease_ttl": 60} if path == "miss" else {}

    @cached("fleet.asking", cache=cache, ttl=60, stale_ttl=600, **options)
    async def value() -> str:
        return "value"

    if path == "miss":
        task = asyncio.create_task(value())
    else:
        cache.asked.set()  # no lease on a miss without lock=True: the entry is stored
        assert await value() == "value"
        cache.asked.clear()
        clock.now += 61  # stale: the next hit starts a background refresh, which asks
        assert await value() == "value"
        (task,) = cast(Any, value)._self_state.refresher._tasks
    await settle(cache.asked.is_set)
    probe = LeaseRequest("acquire", value.cache_key(), new_token(), 5.0)
    assert backend.lease(probe) is False  # granted, though the answer is still on its way
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await asyncio.wait_for(task, HANG)
    assert backend.lease(probe) is True  # given back on the way out
    backend.lease(LeaseRequest("release", probe.key, probe.token))
    assert not cast(Any, value)._self_state.refresher._running


# -- 4. a backend that fails behind observe degrades to computing without a lease -----------


@pytest.mark.redis
async def test_redis_stopped_mid_flight_every_caller_still_gets_its_value(
    private_redis_url: str,
) -> None:
    """A private Redis is shut down while a holder computes and a waiter waits on its lease:
    the waiter, and every later caller (threads and coroutines), computes without a lease
    (``unavailable``) and gets its value; the holder finishes too; nobody raises."""
    registry = CollectorRegistry()
    denied = threading.Event()

    def on_lease(request: LeaseRequest, held: object) -> None:
        if request.action == "acquire" and held is False:
            denied.set()

    store = RedisCache.from_url(
        private_redis_url, prefix=unique_prefix(), socket_timeout=1.0, socket_connect_timeout=1.0
    )
    cache = observe(LeaseSpy(on_lease, store), registry=registry)
    started, release = threading.Event(), threading.Event()
    computed: list[str] = []
    options: dict[str, Any] = {"cache": cache, "ttl": 300, "key_id": "stopped", "lock": True}

    @cached("fleet.stopped", **options)
    def holder(n: int) -> int:
        computed.append("holder")
        started.set()
        release.wait(HANG)
        return n * 6

    @cached("fleet.stopped", **options)
    def waiter(n: int) -> int:
        computed.append("waiter")
        return n * 6

    @cached("fleet.stopped", **options)
    def later(n: int) -> int:
        computed.append("later")
        return n * 6

    @cached("fleet.stopped", **options)
    async def alater(n: int) -> int:
        computed.append("alater")
        return n * 6

    got: list[int] = []
    errors: list[BaseException] = []

    def run(func: Callable[[int], int]) -> None:
        try:
            got.append(func(7))
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(holder,))]
    threads[0].start()
    try:
        assert started.wait(HANG)
        threads.append(threading.Thread(target=run, args=(waiter,)))
        threads[1].start()
        assert denied.wait(HANG), "the waiter never found the lease held"
        admin = redis.Redis.from_url(private_redis_url)
        admin.shutdown(nosave=True)  # the server is gone: every call now fails
        admin.close()
        values, failures = call_all("threads", 5, lambda: later(7), lambda: alater(7))
        values += await asyncio.gather(*(alater(7) for _ in range(5)))
        assert failures == []
        assert values == [42] * 10
        threads[1].join(HANG)
    finally:
        release.set()
        for thread in threads:
            thread.join(HANG)
        await store.aclose()
    assert errors == []
    assert got == [42, 42]
    assert sorted(set(computed)) == ["alater", "holder", "later", "waiter"]
    outcomes = leases(registry)
    assert outcomes.get("acquired") == 1
    assert outcomes.get("unavailable", 0) >= 3  # the waiter, and each later function's leader
    assert set(outcomes) <= {"acquired", "unavailable"}
    assert total(registry, "cache_errors_total", "operation", "lease") >= 1


# -- 5. caches without leases fall back to in-process single-flight ------------------------


async def test_a_cache_without_leases_falls_back_to_in_process_single_flight(mode: str) -> None:
    """LangGraph's own cache behind observe: no lease, one computation per process (counted
    ``unsupported``), every caller the value."""
    from langgraph.cache.memory import InMemoryCache as LangGraphMemory

    registry = CollectorRegistry()
    cache = observe(LangGraphMemory(), registry=registry)
    assert not supports_lease(cache)
    callers = 16
    computed: list[int] = []

    def everyone_waits() -> bool:
        return square.cache_info().coalesced + asquare.cache_info().coalesced >= callers - 1

    @cached("fleet.foreign", cache=cache, ttl=300, lock=True, key_id="square")
    def square(n: int) -> int:
        computed.append(n)
        assert wait_for(everyone_waits)
        return n * n

    @cached("fleet.foreign", cache=cache, ttl=300, lock=True, key_id="square")
    async def asquare(n: int) -> int:
        computed.append(n)
        assert await asyncio.to_thread(wait_for, everyone_waits)
        return n * n

    if mode == "sync":
        values, errors = call_all("threads", callers, lambda: square(9), lambda: asquare(9))
    else:
        values = list(await asyncio.gather(*(asquare(9) for _ in range(callers))))
        errors = []
    assert errors == []
    assert values == [81] * callers
    assert computed == [9]
    assert leases(registry) == {"unsupported": 1}


# -- 6. stale-while-revalidate -------------------------------------------------------------


async def test_stale_is_served_at_once_while_one_refresh_runs(
    backend: Any, mode: str, tmp_path: Path
) -> None:
    """After ``ttl``, concurrent callers get the stale value at once (the refresh holds on
    until they all returned), one refresh runs, and the next call reads its value."""
    registry = CollectorRegistry()
    cache = observe(backend, registry=registry)
    counter = str(tmp_path / "computed")
    release, ran = threading.Event(), threading.Event()
    func = make_stale(cache, counter, release, ran, is_async=mode == "async")
    callers = 16
    try:
        assert (func() if mode == "sync" else await func()) == 1
        await asyncio.sleep(STALE_TTL + 0.1)  # past the logical expiry, inside the stale window
        if mode == "sync":
            values, errors = call_all("threads", callers, func, func)
        else:
            values = list(await asyncio.gather(*(func() for _ in range(callers))))
            errors = []
        assert errors == []
        assert values == [1] * callers  # none waited: the refresh has not finished
        assert lines(counter) <= 2
    finally:
        release.set()
    await settle(lambda: total(registry, "cache_refreshes_total", "result", "success") == 1)
    assert lines(counter) == 2
    assert ran.is_set()
    assert sum(samples(registry, "cache_stale_served_total", "cache").values()) == callers
    refreshes = samples(registry, "cache_refreshes_total", "trigger")
    assert {k: v for k, v in refreshes.items() if v} == {"stale": 1}
    # Last (its ttl is short: on a slow machine this read may be stale again, and refresh).
    assert (func() if mode == "sync" else await func()) == 2


@pytest.mark.parametrize(
    ("kind", "calling"),
    [("sqlite", "threads"), pytest.param("redis", "async", marks=pytest.mark.redis)],
)
def test_one_refresh_runs_in_the_whole_fleet(
    kind: str, calling: str, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    """Three processes x eight callers read an expired key at once: every caller gets the
    stale value while the one refresh of the fleet holds on (until all of them returned);
    it runs in exactly one process, and the others skip theirs."""
    where = shared_store(kind, request, tmp_path)
    counter = str(tmp_path / "computed")
    processes, callers = 3, 8
    ready, out, go, release = SPAWN.Queue(), SPAWN.Queue(), SPAWN.Event(), SPAWN.Event()
    procs = [
        SPAWN.Process(
            target=stale_worker,
            args=(where, counter, calling, callers, i, ready, go, release, out),
        )
        for i in range(processes)
    ]
    for proc in procs:
        proc.start()
    store = open_store(where)
    try:
        for _ in procs:
            ready.get(timeout=HANG)
        first = make_stale(
            observe(store, registry=CollectorRegistry()),
            counter,
            release,
            threading.Event(),
            is_async=False,
        )
        assert first() == 1
        time.sleep(STALE_TTL + 0.1)  # past the logical expiry, inside the stale window
        go.set()
        served = [out.get(timeout=HANG) for _ in procs]
        assert lines(counter) <= 2  # the refresh holds on: no caller can have waited for it
        assert wait_for(lambda: lines(counter) == 2), "no refresh began"
        release.set()  # only now: each worker then knows whether the refresh runs in it
        reports: list[Report] = [out.get(timeout=HANG) for _ in procs]
        computed = lines(counter)
        assert [report.extra["errors"] for report in reports] == [0] * processes
        # Its ttl is short: on a slow machine this read may be stale again, and refresh.
        assert first() == 2  # the refresh stored its value
    finally:
        release.set()
        codes = finish(procs)
        store.close()
        forget(where)
    assert codes == [0] * processes
    for _, values, errors in served:
        assert errors == []
        assert values == [1] * callers
    assert computed == 2
    assert sum(bool(report.extra["ran_here"]) for report in reports) == 1
    assert sum(report.extra["stale"] for report in reports) == processes * callers
    assert sum(report.leases.get("success", 0) for report in reports) == 1
    assert sum(report.leases.get("error", 0) for report in reports) == 0


async def test_a_failing_refresh_is_counted_and_logged_never_raised(
    mode: str, caplog: pytest.LogCaptureFixture
) -> None:
    """The refresh raises: the caller still got the stale value, the error is counted in
    ``cache_refreshes_total{result="error"}`` and logged, and the stale value stays."""
    registry = CollectorRegistry()
    cache = observe(InMemoryCache(), registry=registry)
    computed: list[int] = []

    def work() -> int:
        computed.append(1)
        if len(computed) > 1:
            raise RuntimeError("the model is down")
        return 1

    @cached("fleet.failing", cache=cache, ttl=0.2, stale_ttl=300)
    def func() -> int:
        return work()

    @cached("fleet.failing", cache=cache, ttl=0.2, stale_ttl=300)
    async def afunc() -> int:
        return work()

    def errors() -> float:
        return total(registry, "cache_refreshes_total", "result", "error")

    with caplog.at_level(logging.WARNING, logger="toolkit.decorators"):
        assert (func() if mode == "sync" else await afunc()) == 1
        await asyncio.sleep(0.3)
        assert (func() if mode == "sync" else await afunc()) == 1  # stale, not an error
        await settle(lambda: errors() == 1)
        assert (func() if mode == "sync" else await afunc()) == 1  # still stale
    assert len(computed) >= 2
    failed = [r for r in caplog.records if "refresh" in r.getMessage() and r.exc_info]
    assert failed, caplog.text
    exc_info = failed[0].exc_info
    assert exc_info is not None and isinstance(exc_info[1], RuntimeError)
    assert total(registry, "cache_refreshes_total", "result", "success") == 0


class RefreshRace:
    """A function on a SQLite file and a stopped clock, called sync or async, whose
    computation of "v2" (a background refresh) waits for ``release``: a race made on demand."""

    def __init__(
        self, mode: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, name: str, **options: Any
    ) -> None:
        self.clock = StoppedClock()
        monkeypatch.setattr(freshness, "_now", self.clock)
        self.store: SqliteCache[Any] = SqliteCache(
            path=str(tmp_path / f"{name}.db"), timer=self.clock
        )
        self.value = "v1"
        self.started, self.release = threading.Event(), threading.Event()

        @cached(f"fleet.{name}", cache=self.store, ttl=60, key_id=name, **options)
        def func() -> str:
            return self.work()

        @cached(f"fleet.{name}", cache=self.store, ttl=60, key_id=name, **options)
        async def afunc() -> str:
            return await asyncio.to_thread(self.work)

        self.sync = mode == "sync"
        self.func, self.afunc = func, afunc

    def work(self) -> str:
        value = self.value
        if value == "v1":
            time.sleep(0.001)  # delta >= 1 ms: what XFetch scales the early window with
        if value == "v2":
            self.started.set()
            assert self.release.wait(HANG)
        if value == "down":
            raise RuntimeError("the model is down")
        return value

    async def call(self) -> str:
        return self.func() if self.sync else await self.afunc()

    async def refresh(self) -> str:
        return self.func.refresh() if self.sync else await self.afunc.arefresh()

    async def invalidate(self) -> None:
        if self.sync:
            self.func.invalidate()
        else:
            await self.afunc.ainvalidate()

    async def start_refresh(self) -> None:
        """A hit now starts a background refresh computing "v2", which waits."""
        self.value = "v2"
        assert await self.call() == "v1"
        await settle(self.started.is_set)

    async def finish_refresh(self) -> None:
        """Let the background refresh end, and wait until it has."""
        self.release.set()
        called = self.func if self.sync else self.afunc
        refreshing = cast(Any, called)._self_state.refresher._running
        await settle(lambda: not refreshing)

    async def close(self) -> None:
        self.release.set()
        await self.store.aclose()


async def test_an_invalidation_during_a_background_refresh_is_not_undone(
    mode: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A stale hit starts a refresh; the key is invalidated while the refresh computes: the
    refresh stores nothing, and the next call computes after the invalidation."""
    race = RefreshRace(mode, tmp_path, monkeypatch, "race", stale_ttl=600)
    try:
        assert await race.call() == "v1"
        race.clock.now += 61  # past the logical expiry, inside the stale window
        await race.start_refresh()
        race.value = "v3"
        await race.invalidate()
        await race.finish_refresh()
        assert await race.call() == "v3"
    finally:
        await race.close()


@pytest.mark.parametrize("trigger", ["stale", "early"])
async def test_a_background_refresh_never_overwrites_a_later_forced_refresh(
    mode: str, trigger: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A stale or early hit starts a background refresh; while it computes, the caller
    forces a refresh (``f.refresh``), which stores a newer value: the background refresh,
    landing after it, stores nothing, and the next call serves the forced refresh's value."""
    options = {"beta": 1_000.0} if trigger == "early" else {"stale_ttl": 600}
    race = RefreshRace(mode, tmp_path, monkeypatch, "forced", **options)
    try:
        assert await race.call() == "v1"
        if trigger == "stale":
            race.clock.now += 61  # past the logical expiry, inside the stale window
        else:  # 1 s before the expiry, the first draw chooses an early refresh, none after
            race.clock.now += 59  # (delta * beta * -ln(1e-9) >= 1 ms * 1000 * 20.7 s > 1 s)
            monkeypatch.setattr(freshness, "_random", Draws(1.0 - 1e-9, 0.0).random)
        await race.start_refresh()
        race.value = "v3"
        assert await race.refresh() == "v3"
        await race.finish_refresh()
        assert await race.call() == "v3"
    finally:
        await race.close()


async def test_a_forced_refresh_that_raises_leaves_a_background_refresh_to_store(
    mode: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A stale hit starts a background refresh; while it computes, a forced refresh raises:
    it supersedes nothing (it has no value), so the background refresh still stores its
    newer value, and the next call serves it instead of the stale one."""
    race = RefreshRace(mode, tmp_path, monkeypatch, "failed", stale_ttl=600)
    try:
        assert await race.call() == "v1"
        race.clock.now += 61  # past the logical expiry, inside the stale window
        await race.start_refresh()
        race.value = "down"
        with pytest.raises(RuntimeError, match="down"):
            await race.refresh()
        await race.finish_refresh()
        assert await race.call() == "v2"
    finally:
        await race.close()


def test_refreshes_that_raise_a_base_exception_never_stop_the_later_ones(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Background refreshes of a sync function raise a ``BaseException`` (a ``SystemExit``
    in the function, say), more of them than the pool has threads: each is logged, and a
    later stale hit is still refreshed. Each used to end its pool thread, which was never
    replaced: once all had ended, queued refreshes never ran and their keys stayed claimed
    (served stale for their whole stale window, cycle after cycle)."""
    monkeypatch.setattr(_refresh, "_POOL", _refresh._DaemonPool(_refresh._POOL_WORKERS))
    clock = StoppedClock()
    monkeypatch.setattr(freshness, "_now", clock)
    failing = _refresh._POOL_WORKERS + 1
    computed: dict[int, int] = {}
    lock = threading.Lock()

    @cached("fleet.exit", cache=InMemoryCache(), ttl=60, stale_ttl=600, key_id="fleet.exit")
    def value(n: int) -> int:
        with lock:
            computed[n] = computed.get(n, 0) + 1
            count = computed[n]
        if count > 1 and n < failing:
            raise SystemExit(1)
        return count

    for n in range(failing + 1):
        assert value(n) == 1
    clock.now += 61  # stale
    for n in range(failing):
        assert value(n) == 1  # each starts a refresh, which raises
    assert wait_for(lambda: all(computed[n] == 2 for n in range(failing)))
    refreshing = cast(Any, value)._self_state.refresher._running
    assert wait_for(lambda: not refreshing)
    assert value(failing) == 1  # stale: a refresh starts, and still runs
    assert wait_for(lambda: computed[failing] == 2 and not refreshing), "never refreshed"
    assert value(failing) == 2


def test_a_refresh_left_in_a_closed_loop_does_not_stop_the_keys_refreshes(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A stale hit in a loop that is closed while its background refresh still runs (a sync
    server running each request in a loop of its own): that refresh never ends, yet the next
    stale hit, in another loop, refreshes the key. It used to find the key still claimed by
    the dead refresh, so the key was never refreshed again in the process: served stale for
    its whole stale window, every time."""
    from langgraph.cache.memory import InMemoryCache as LangGraphMemory

    clock = StoppedClock()
    monkeypatch.setattr(freshness, "_now", clock)
    # No leases: the dead refresh's lease would hold off the next refresh for its 10 s (a
    # dead holder's lease lapses by design); only this process's claim is tested here.
    store: Any = LangGraphMemory()
    computed: list[int] = []
    parked = threading.Event()

    @cached("fleet.closed", cache=store, ttl=60, stale_ttl=600, key_id="fleet.closed")
    async def value() -> int:
        computed.append(1)
        if len(computed) == 2:  # the refresh in the loop about to be closed: never ends
            parked.set()
            await asyncio.Event().wait()
        return len(computed)

    async def until(predicate: Callable[[], bool]) -> None:
        while not predicate():
            await asyncio.sleep(0)

    async def stale_hit_in_a_request() -> int:
        served = await value()
        await asyncio.wait_for(until(parked.is_set), HANG)  # the refresh computes...
        return served

    assert asyncio.run(value()) == 1
    clock.now += 61  # stale
    loop = asyncio.new_event_loop()
    try:
        assert loop.run_until_complete(stale_hit_in_a_request()) == 1
    finally:
        loop.close()  # ...and is left behind, unfinished

    async def stale_hit_and_its_refresh() -> int:
        assert await value() == 1  # still stale: a refresh starts in this loop
        tasks = cast(Any, value)._self_state.refresher._tasks
        ours = [task for task in tasks if task.get_loop() is asyncio.get_running_loop()]
        assert ours, "no refresh started: the key is still claimed by the dead one"
        await asyncio.wait_for(asyncio.gather(*ours), HANG)
        return await value()

    assert asyncio.run(stale_hit_and_its_refresh()) == 3


def test_a_forked_child_refreshes_a_key_its_parent_was_refreshing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The parent forks while its background refresh of a stale key runs: that refresh does
    not exist in the child, which still refreshes the key itself on its next stale hit.
    (LangGraph's cache: no lease, so only the claims of this process's refreshes count.)"""
    from langgraph.cache.memory import InMemoryCache as LangGraphMemory

    clock = StoppedClock()
    monkeypatch.setattr(freshness, "_now", clock)  # the store keeps entries 660 s, real time
    store: Any = LangGraphMemory()
    started, release = threading.Event(), threading.Event()
    parent = os.getpid()

    @cached("fleet.fork", cache=store, ttl=60, stale_ttl=600, key_id="fleet.fork")
    def whose() -> int:
        if os.getpid() == parent and clock.now > 1_700_000_000:
            started.set()
            assert release.wait(2 * HANG)
        return os.getpid()

    assert whose() == parent
    clock.now += 61  # stale: the next hit starts a refresh, which holds on in the parent
    assert whose() == parent
    try:
        assert started.wait(HANG)
        context = multiprocessing.get_context("fork")
        results = context.Queue()

        def child() -> None:
            refreshed = wait_for(lambda: whose() == os.getpid())  # stale hits until refreshed
            results.put(refreshed)

        process = context.Process(target=child)
        process.start()
        try:
            assert results.get(timeout=2 * HANG) is True
        finally:
            process.join(HANG)
            if process.is_alive():
                process.kill()
                process.join()
    finally:
        release.set()


# -- 7. early refresh (XFetch) -------------------------------------------------------------


class Draws:
    """A stand-in for ``random.random`` that returns the given values in turn (the last for
    ever)."""

    def __init__(self, *values: float) -> None:
        self.values = list(values)

    def random(self) -> float:
        return self.values.pop(0) if len(self.values) > 1 else self.values[0]


async def test_an_early_refresh_chosen_by_a_hit_is_carried_out(
    backend: Any, mode: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """XFetch decides once, on the hit: the refresh it starts recomputes, whatever a later
    draw would say (the refresh skips only when someone else already refreshed)."""
    registry = CollectorRegistry()
    cache = observe(backend, registry=registry)
    computed: list[int] = []

    def work() -> int:
        time.sleep(0.01)  # delta: the compute time XFetch scales with
        computed.append(1)
        return len(computed)

    @cached("fleet.early", cache=cache, ttl=60, beta=1_000.0)
    def func() -> int:
        return work()

    @cached("fleet.early", cache=cache, ttl=60, beta=1_000.0)
    async def afunc() -> int:
        return work()

    assert (func() if mode == "sync" else await afunc()) == 1
    # The hit's draw chooses an early refresh (delta * beta * -ln(1e-9) >= 10 ms * 1000 *
    # 20.7 = 207 s, past the 60 s expiry); every later draw would not (-ln(1) = 0).
    monkeypatch.setattr(freshness, "_random", Draws(1.0 - 1e-9, 0.0).random)
    assert (func() if mode == "sync" else await afunc()) == 1
    await settle(lambda: sum(samples(registry, "cache_refreshes_total", "result").values()) >= 1)
    refreshes = {k: v for k, v in samples(registry, "cache_refreshes_total", "result").items() if v}
    assert refreshes == {"success": 1}
    assert (func() if mode == "sync" else await afunc()) == 2


def misses(registry: CollectorRegistry) -> float:
    """Misses the backend answered (``cache_gets_total{result="miss"}``)."""
    return total(registry, "cache_gets_total", "result", "miss")


class StoppedClock:
    """A wall clock that moves only when told to (the cache's and freshness's clock)."""

    def __init__(self) -> None:
        self.now = 1_700_000_000.0

    def __call__(self) -> float:
        return self.now


class InlinePool:
    """Runs a background refresh at once, in the caller's thread: the stopped clock cannot
    move on before the refresh a hit started has landed."""

    def submit(self, job: Callable[[], None]) -> None:
        job()

    def warm(self) -> None:
        """Nothing to start: jobs run in the caller's thread."""


def test_early_refresh_keeps_a_hot_key_from_ever_missing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A hot key (ttl 1 s on a stopped clock, beta 100) on a SQLite file, read every 50 ms of
    clock time through 20 ttl periods: after the first miss, not one miss at any expiry
    boundary, because each early refresh landed before the entry expired. Without ``early``
    the same reads miss once per period. The clock stands still while a refresh runs, so a
    busy machine cannot turn a late refresh into a miss: only the XFetch rule decides."""
    ttl, cycles, step = 1.0, 20, 0.05
    monkeypatch.setattr(freshness, "_random", random.Random(7).random)
    monkeypatch.setattr(_refresh, "_POOL", InlinePool())

    def run(early: bool) -> tuple[float, dict[str, float]]:
        clock = StoppedClock()
        monkeypatch.setattr(freshness, "_now", clock)
        store: SqliteCache[Any] = SqliteCache(path=str(tmp_path / f"hot-{early}.db"), timer=clock)
        registry = CollectorRegistry()
        cache = observe(store, registry=registry)

        @cached("fleet.hot", cache=cache, ttl=ttl, beta=100.0 if early else None)
        def hot() -> int:
            time.sleep(0.01)  # its compute time (delta) is real: 10 ms
            return 1

        for _ in range(round(cycles * ttl / step)):
            hot()
            clock.now += step
        store.close()
        return misses(registry), samples(registry, "cache_refreshes_total", "result")

    found, refreshes = run(True)
    assert found == 1  # the cold start only
    assert refreshes.get("success", 0) >= cycles - 1  # no miss means a refresh each period
    assert refreshes.get("error", 0) == 0
    control, _ = run(False)
    assert control >= cycles  # one miss per period without early refresh


# -- 8. hits never touch a lease -----------------------------------------------------------


async def test_hits_never_touch_a_lease(backend: Any, mode: str) -> None:
    """With ``lock=True`` (and a stale window), a miss leases; a hit performs no lease
    operation at all, counted both by observe and by a spy under it."""
    registry = CollectorRegistry()
    spied: list[str] = []
    cache = observe(
        LeaseSpy(lambda request, _: spied.append(request.action), backend), registry=registry
    )

    @cached("fleet.hits", cache=cache, ttl=300, lock=True)
    def plain(n: int) -> int:
        return n

    @cached("fleet.hits", cache=cache, ttl=300, lock=True)
    async def aplain(n: int) -> int:
        return n

    @cached("fleet.hits.stale", cache=cache, ttl=300, stale_ttl=300, lock=True)
    def stale(n: int) -> int:
        return n

    @cached("fleet.hits.stale", cache=cache, ttl=300, stale_ttl=300, lock=True)
    async def astale(n: int) -> int:
        return n

    for n in (1, 2):
        assert (plain(n) if mode == "sync" else await aplain(n)) == n
        assert (stale(n) if mode == "sync" else await astale(n)) == n
    assert "acquire" in spied and "release" in spied
    before, spied_before = lease_calls(registry), len(spied)
    assert before >= 8  # an acquire and a release for each of the four misses
    for _ in range(25):
        for n in (1, 2):
            assert (plain(n) if mode == "sync" else await aplain(n)) == n
            assert (stale(n) if mode == "sync" else await astale(n)) == n
    assert lease_calls(registry) == before
    assert len(spied) == spied_before


# -- 9. option validation ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("options", "error", "match"),
    [
        ({"lock_timeout": 5}, ValueError, "lock=True"),
        ({"lease_ttl": 5}, ValueError, "lock=True"),
        ({"lock": False, "lease_ttl": "5s"}, ValueError, "lock=True"),
        ({"stale_ttl": 60, "ttl": None}, ValueError, "need a ttl"),
        ({"early": True, "ttl": None}, ValueError, "need a ttl"),
        ({"beta": 2.0, "ttl": None}, ValueError, "need a ttl"),
        ({"lock": 1}, TypeError, "lock must be"),
        ({"lock": "yes"}, TypeError, "lock must be"),
        ({"early": 1}, TypeError, "early must be"),
        ({"beta": "2"}, TypeError, "beta must be"),
        ({"beta": True}, TypeError, "beta must be"),
        ({"beta": 0}, ValueError, "beta must be"),
        ({"beta": -1.0}, ValueError, "beta must be"),
        ({"beta": math.inf}, ValueError, "beta must be"),
        ({"beta": math.nan}, ValueError, "beta must be"),
        ({"lock": True, "lock_timeout": 0}, ValueError, "lock_timeout"),
        ({"lock": True, "lock_timeout": -1}, ValueError, "lock_timeout"),
        ({"lock": True, "lock_timeout": [1]}, TypeError, "lock_timeout"),
        ({"lock": True, "lease_ttl": True}, TypeError, "lease_ttl"),
        ({"lock": True, "lease_ttl": "soon"}, ValueError, "lease_ttl"),
        ({"lock": True, "lease_ttl": MAX_LEASE_SECONDS * 2}, ValueError, "lease_ttl"),
        ({"stale_ttl": 0}, ValueError, "stale_ttl"),
        ({"stale_ttl": object()}, TypeError, "stale_ttl"),
    ],
)
def test_bad_options_are_refused_when_decorating(
    options: dict[str, Any], error: type[Exception], match: str
) -> None:
    options = {"ttl": 60, **options}
    with pytest.raises(error, match=match):
        cached("fleet.options", cache=InMemoryCache(), **options)


def test_option_forms_are_accepted_and_reported() -> None:
    @cached(
        "fleet.options",
        cache=InMemoryCache(),
        ttl="90s",
        lock=True,
        lock_timeout=timedelta(seconds=30),
        lease_ttl="5s",
        stale_ttl=timedelta(minutes=10),
        early=True,
    )
    def func() -> int:
        return 1

    params = func.cache_parameters()
    assert (params.ttl, params.lock, params.lock_timeout, params.lease_ttl) == (90, True, 30, 5)
    assert (params.stale_ttl, params.beta) == (600, 1.0)

    @cached("fleet.options", cache=InMemoryCache(), ttl=60, beta=3)
    def tuned() -> int:
        return 1

    @cached("fleet.options", cache=InMemoryCache(), ttl=60)
    def plain() -> int:
        return 1

    assert tuned.cache_parameters().beta == 3
    default = plain.cache_parameters()
    assert (default.lock, default.lock_timeout, default.lease_ttl) == (False, None, None)
    assert (default.stale_ttl, default.beta) == (None, None)
    assert tuned() == plain() == func() == 1


# -- 10. the lease protocol, on every backend that stores leases ----------------------------


@pytest.fixture(
    params=[
        "memory",
        "sqlite-file",
        "sqlite-memory",
        pytest.param("redis", marks=pytest.mark.redis),
        pytest.param("redis-cluster", marks=pytest.mark.redis),
        pytest.param("postgres", marks=pytest.mark.postgres),
    ]
)
async def lease_store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Any]:
    """A bare backend that stores leases, of each kind."""
    name = request.param
    if name == "postgres":
        url = request.getfixturevalue("pg_url")
        postgres = PostgresCache.from_url(url, table=unique_table(), timeout=2.0)
        try:
            yield postgres
        finally:
            await postgres.aclose()
            drop_table(url, postgres.schema, postgres.table)
    elif name == "memory":
        yield InMemoryCache()
    elif name.startswith("sqlite"):
        path = str(tmp_path / "lease.db") if name == "sqlite-file" else ":memory:"
        sqlite: SqliteCache[Any] = SqliteCache(path=path)
        yield sqlite
        await sqlite.aclose()
    else:
        cluster = name == "redis-cluster"
        url = request.getfixturevalue("redis_cluster_url" if cluster else "redis_url")
        async with redis_store(url, cluster=cluster) as store:
            yield store


@pytest.fixture(params=["bare", "observed"])
def leasing(request: pytest.FixtureRequest, lease_store: Any) -> Any:
    """The backend itself, or behind ``observe``."""
    if request.param == "bare":
        return lease_store
    return observe(lease_store, registry=CollectorRegistry())


class Leases:
    """One cache's lease operations, sync or async."""

    def __init__(self, cache: Any, mode: str) -> None:
        self.cache, self.mode = cache, mode

    async def __call__(self, action: str, token: str, ttl: float = 5.0) -> bool:
        request = LeaseRequest(action, (("fleet", "leases"), "k"), token, ttl)  # type: ignore[arg-type]
        if self.mode == "sync":
            held: bool = self.cache.lease(request)
        else:
            held = await self.cache.alease(request)
        return held


async def test_lease_protocol(leasing: Any, mode: str) -> None:
    """Acquire, renew and release, each answered for the token that holds the lease only."""
    assert supports_lease(leasing)
    lease = Leases(leasing, mode)
    a, b = new_token(), new_token()
    assert await lease("acquire", a) is True
    assert await lease("acquire", b) is False  # held
    assert await lease("acquire", a) is False  # held, even by the same token: no re-entry
    assert await lease("renew", b) is False  # not the holder
    assert await lease("release", b) is False
    assert await lease("renew", a) is True
    assert await lease("release", a) is True
    assert await lease("release", a) is False  # already given back
    assert await lease("renew", a) is False
    assert await lease("acquire", b) is True  # free again
    assert await lease("release", b) is True


async def test_a_lapsed_lease_is_taken_over(leasing: Any, mode: str) -> None:
    """A lease not renewed lapses: another token takes it, and the old holder can neither
    renew nor release its successor's."""
    lease = Leases(leasing, mode)
    old, new = new_token(), new_token()
    assert await lease("acquire", old, 0.05) is True
    deadline = time.monotonic() + HANG
    while not await lease("acquire", new):
        assert time.monotonic() < deadline, "the lease never lapsed"
        await asyncio.sleep(0.01)
    assert await lease("renew", old) is False
    assert await lease("release", old) is False
    assert await lease("acquire", old) is False  # the successor still holds it
    assert await lease("release", new) is True


async def test_a_renewed_lease_outlives_its_first_ttl(leasing: Any, mode: str) -> None:
    lease = Leases(leasing, mode)
    # A short first ttl keeps the test quick; on a busy machine the renewal may come after
    # it (refused, rightly), so a longer one is tried: only a granted renewal is judged.
    for first_ttl in (0.05, 0.25, 1.0, 5.0):
        holder = new_token()
        assert await lease("acquire", holder, first_ttl) is True
        if await lease("renew", holder, 60.0):
            break
    else:
        pytest.fail("no renewal came within a first ttl of 5 s")
    await asyncio.sleep(2 * first_ttl)  # the first ttl is over; the renewal is not
    assert await lease("acquire", new_token()) is False
    assert await lease("release", holder) is True


BAD_REQUESTS: list[tuple[Any, type[Exception]]] = [
    ("acquire", TypeError),
    (LeaseRequest("steal", (("ns",), "k"), "t", 1.0), ValueError),  # type: ignore[arg-type]
    (LeaseRequest("acquire", ("ns", "k"), "t", 1.0), TypeError),  # type: ignore[arg-type]
    (LeaseRequest("acquire", (("ns",), 3), "t", 1.0), TypeError),  # type: ignore[arg-type]
    (LeaseRequest("acquire", (("ns",), "k"), "", 1.0), ValueError),
    (LeaseRequest("acquire", (("ns",), "k"), "x" * 129, 1.0), ValueError),
    (LeaseRequest("acquire", (("ns",), "k"), "a\nb", 1.0), ValueError),
    (LeaseRequest("acquire", (("ns",), "k"), 7, 1.0), ValueError),  # type: ignore[arg-type]
    (LeaseRequest("acquire", (("ns",), "k"), "t", 0.0), ValueError),
    (LeaseRequest("renew", (("ns",), "k"), "t", -1.0), ValueError),
    (LeaseRequest("acquire", (("ns",), "k"), "t", math.nan), ValueError),
    (LeaseRequest("acquire", (("ns",), "k"), "t", MAX_LEASE_SECONDS + 1), ValueError),
    (LeaseRequest("acquire", (("ns",), "k"), "t", True), TypeError),
    (LeaseRequest("acquire", (("ns",), "k"), "t", "1"), TypeError),  # type: ignore[arg-type]
]


async def test_bad_lease_requests_raise(leasing: Any, mode: str) -> None:
    """A malformed request is a caller bug: it raises, bare or behind observe (fail-open
    serves backend failures, never bad input), and takes no lease."""
    for bad, error in BAD_REQUESTS:
        with pytest.raises(error):
            if mode == "sync":
                leasing.lease(bad)
            else:
                await leasing.alease(bad)
    lease = Leases(leasing, mode)
    assert await lease("acquire", "t") is True  # nothing was taken by the bad ones
    assert await lease("release", "t") is True


def test_a_release_needs_no_ttl() -> None:
    cache = InMemoryCache[Any]()
    token = new_token()
    assert cache.lease(LeaseRequest("acquire", (("ns",), "k"), token, 1.0))
    assert cache.lease(LeaseRequest("release", (("ns",), "k"), token))


def test_an_envelope_read_back_as_a_list_is_still_judged() -> None:
    """A serializer that turns tuples into lists (JSON-like) still serves envelopes."""
    from toolkit.decorators.freshness import FRESH, MISS, STALE, Freshness

    fresh = Freshness(ttl=10, stale_ttl=60, beta=None)
    envelope = fresh.wrap("value", delta=0.1, now=1_000.0)
    assert isinstance(envelope, tuple)
    for stored in (envelope, list(envelope)):
        assert fresh.judge(stored, now=1_005.0) == (FRESH, "value")
        assert fresh.judge(stored, now=1_020.0) == (STALE, "value")
    assert fresh.judge(["value", 1_010.0], now=1_005.0)[0] == MISS
