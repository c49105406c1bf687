"""Spawned workers for ``tests/test_fleet.py``: processes of one fleet sharing one key.

Each worker opens its own cache on the shared store (a SQLite file, or a Redis prefix),
waits for the start signal, calls a ``@cached`` function with its threads or coroutines,
and reports what its callers got and what its own metrics counted. Computations are
counted outside every worker, as lines of an append-only file.
"""

from __future__ import annotations

import asyncio
import os
import threading
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

from prometheus_client import CollectorRegistry

from toolkit import SqliteCache, cached, observe
from toolkit.backends.redis import RedisCache
from toolkit.lease import LeaseRequest
from toolkit.middleware.base import CacheMiddleware

__all__ = [
    "HANG",
    "Crowd",
    "LeaseSpy",
    "Report",
    "call_all",
    "crowd_worker",
    "killed_leader_worker",
    "lines",
    "make_stale",
    "open_store",
    "samples",
    "stale_worker",
    "tally",
    "wait_for",
]

HANG = 60.0
"""Seconds after which a wait that should end at once is a hang: a bound, never a pace."""

STALE_TTL = 0.5
"""The ``ttl`` of the stale-while-revalidate function: short, so the test outlives it."""

LeaseCallback = Callable[[LeaseRequest, object], None]


def tally(path: str) -> int:
    """Append one line to ``path`` (``O_APPEND``, atomic across processes); the count so far."""
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, f"{os.getpid()}\n".encode())
    finally:
        os.close(fd)
    return lines(path)


def lines(path: str) -> int:
    """How many lines ``path`` holds (0 if it does not exist)."""
    try:
        with open(path, "rb") as file:
            return file.read().count(b"\n")
    except FileNotFoundError:
        return 0


def wait_for(predicate: Callable[[], bool], timeout: float = HANG) -> bool:
    """Poll ``predicate`` until it holds; ``False`` if it still does not after ``timeout``."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.005)
    return True


def samples(registry: CollectorRegistry, name: str, label: str) -> dict[str, float]:
    """The values of ``name``'s samples, by the value of their label ``label``."""
    found: dict[str, float] = {}
    for family in registry.collect():
        for sample in family.samples:
            if sample.name == name:
                key = sample.labels.get(label, "")
                found[key] = found.get(key, 0.0) + sample.value
    return found


class LeaseSpy(CacheMiddleware[Any]):
    """Passes every lease answer of the wrapped cache to ``on_lease(request, held)``."""

    def __init__(self, on_lease: LeaseCallback, inner: Any = None) -> None:
        self.on_lease = on_lease
        super().__init__(inner)

    def wrap_sync(self, operation: str, call: Callable[..., Any]) -> Callable[..., Any]:
        if operation != "lease":
            return call

        def lease(request: LeaseRequest) -> Any:
            held = call(request)
            self.on_lease(request, held)
            return held

        return lease

    def wrap_async(
        self, operation: str, call: Callable[..., Awaitable[Any]]
    ) -> Callable[..., Awaitable[Any]]:
        if operation != "lease":
            return call

        async def alease(request: LeaseRequest) -> Any:
            held = await call(request)
            self.on_lease(request, held)
            return held

        return alease


def open_store(where: str) -> Any:
    """A fresh cache on the shared store ``sqlite:<path>``, ``redis:<url>|<prefix>`` or
    ``redis-cluster:<url>|<prefix>``."""
    kind, _, rest = where.partition(":")
    if kind == "sqlite":
        return SqliteCache(path=rest)
    url, _, prefix = rest.partition("|")
    return RedisCache.from_url(
        url,
        cluster=kind == "redis-cluster",
        prefix=prefix,
        socket_timeout=2.0,
        socket_connect_timeout=2.0,
    )


def _denied(on_denied: Callable[[], None]) -> LeaseCallback:
    def on_lease(request: LeaseRequest, held: object) -> None:
        if request.action == "acquire" and held is False:
            on_denied()

    return on_lease


def call_all(
    mode: str, callers: int, sync_call: Callable[[], Any], async_call: Callable[[], Awaitable[Any]]
) -> tuple[list[Any], list[str]]:
    """Run ``callers`` threads (``mode="threads"``) or coroutines at once; values and errors."""
    values: list[Any] = []
    errors: list[str] = []
    if mode == "async":

        async def main() -> None:
            got = await asyncio.gather(
                *(async_call() for _ in range(callers)), return_exceptions=True
            )
            values.extend(item for item in got if not isinstance(item, BaseException))
            errors.extend(repr(item) for item in got if isinstance(item, BaseException))

        asyncio.run(main())
        return values, errors
    barrier = threading.Barrier(callers)
    lock = threading.Lock()

    def one() -> None:
        try:
            barrier.wait(HANG)
            value = sync_call()
        except BaseException as exc:
            with lock:
                errors.append(repr(exc))
        else:
            with lock:
                values.append(value)

    threads = [threading.Thread(target=one) for _ in range(callers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(HANG)
    return values, errors


@dataclass(frozen=True)
class Crowd:
    """Processes x callers on one cold key: where the store is, and how they call."""

    where: str
    counter: str
    lock: bool
    mode: str  # "async": coroutines; "threads": threads calling a sync function
    processes: int
    callers: int


@dataclass(frozen=True)
class Report:
    """What one worker's callers got, and what its metrics counted."""

    index: int
    values: list[Any]
    errors: list[str]
    leases: dict[str, float]
    extra: dict[str, float]


def crowd_worker(
    crowd: Crowd, index: int, denied: Sequence[int], ready: Any, go: Any, out: Any
) -> None:
    """Call the cold key with every caller once ``go`` is set; report what they got.

    The computation holds on until the fleet is provably concurrent: under ``lock=True``
    until every other worker has been refused the lease (so each of them waits on it),
    without it until a second worker computes too (so nothing is stored before then).
    """
    registry = CollectorRegistry()
    shared: Any = denied

    def mark() -> None:
        shared[index] = 1

    cache = observe(LeaseSpy(_denied(mark), open_store(crowd.where)), registry=registry)

    def gate() -> None:
        if crowd.lock:
            wait_for(lambda: sum(shared) >= crowd.processes - 1)
        else:
            wait_for(lambda: lines(crowd.counter) >= 2)

    options: dict[str, Any] = {"lock": crowd.lock, "lock_timeout": HANG if crowd.lock else None}

    @cached("fleet.crowd", cache=cache, ttl=300, key_id="crowd", **options)
    def answer(n: int) -> dict[str, int]:
        tally(crowd.counter)
        gate()
        return {"answer": n * 6}

    @cached("fleet.crowd", cache=cache, ttl=300, key_id="crowd", **options)
    async def aanswer(n: int) -> dict[str, int]:
        tally(crowd.counter)
        await asyncio.to_thread(gate)
        return {"answer": n * 6}

    ready.put(index)
    go.wait(HANG)
    values, errors = call_all(crowd.mode, crowd.callers, lambda: answer(7), lambda: aanswer(7))
    cache.close()
    out.put(
        Report(
            index,
            values,
            errors,
            samples(registry, "cache_leases_total", "outcome"),
            {"errors": sum(samples(registry, "cache_errors_total", "operation").values())},
        )
    )


def killed_leader_worker(
    where: str, counter: str, role: str, mode: str, started: Any, denied: Any, go: Any, out: Any
) -> None:
    """``leader``: take the lease and compute forever (until SIGKILLed). ``waiter``: once
    ``go`` is set, call with five callers (signalling ``denied`` when refused the lease),
    and report what they got."""
    registry = CollectorRegistry()
    on_lease = _denied(denied.set if role == "waiter" else lambda: None)
    cache = observe(LeaseSpy(on_lease, open_store(where)), registry=registry)
    options: dict[str, Any] = {"lock": True, "lease_ttl": 1.0, "lock_timeout": HANG}

    def work() -> dict[str, int]:
        tally(counter)
        if role == "leader":
            started.set()
            time.sleep(HANG * 5)  # killed long before
        return {"answer": 42}

    @cached("fleet.killed", cache=cache, ttl=300, key_id="killed", **options)
    def answer() -> dict[str, int]:
        return work()

    @cached("fleet.killed", cache=cache, ttl=300, key_id="killed", **options)
    async def aanswer() -> dict[str, int]:
        return await asyncio.to_thread(work)

    if role == "leader":
        answer()
        return
    go.wait(HANG)
    began = time.monotonic()
    values, errors = call_all(mode, 5, answer, aanswer)
    out.put(
        Report(
            0,
            values,
            errors,
            samples(registry, "cache_leases_total", "outcome"),
            {"seconds": time.monotonic() - began},
        )
    )


def make_stale(
    cache: Any, counter: str, release: Any, ran_here: threading.Event, *, is_async: bool
) -> Any:
    """The stale-while-revalidate function of the fleet: its value is the ordinal of the
    computation; every computation after the first holds on until ``release`` is set."""

    def work() -> int:
        ran_here.set()  # before the line: whoever sees the line knows where it ran
        n = tally(counter)
        if n > 1:
            release.wait(HANG)
        return n

    if is_async:

        @cached("fleet.stale", cache=cache, ttl=STALE_TTL, stale_ttl=300, key_id="stale")
        async def astale() -> int:
            return await asyncio.to_thread(work)

        return astale

    @cached("fleet.stale", cache=cache, ttl=STALE_TTL, stale_ttl=300, key_id="stale")
    def stale() -> int:
        return work()

    return stale


def stale_worker(
    where: str,
    counter: str,
    mode: str,
    callers: int,
    index: int,
    ready: Any,
    go: Any,
    release: Any,
    out: Any,
) -> None:
    """Call the expired key with every caller once ``go`` is set; report the values at once,
    then (after ``release``) whether the one refresh ran here and what was counted."""
    registry = CollectorRegistry()
    cache = observe(open_store(where), registry=registry)
    ran_here = threading.Event()
    func = make_stale(cache, counter, release, ran_here, is_async=mode == "async")

    def refreshes() -> dict[str, float]:
        return samples(registry, "cache_refreshes_total", "result")

    def settled() -> bool:
        done = refreshes()
        return done.get("success", 0) + done.get("error", 0) >= 1 if ran_here.is_set() else True

    def report(values: list[Any], errors: list[str]) -> Report:
        stale = sum(samples(registry, "cache_stale_served_total", "cache").values())
        failed = sum(samples(registry, "cache_errors_total", "operation").values())
        extra = {"stale": stale, "ran_here": ran_here.is_set(), "errors": failed}
        return Report(index, values, errors, refreshes(), extra)

    ready.put(index)
    go.wait(HANG)
    if mode == "async":

        async def main() -> None:
            got = await asyncio.gather(*(func() for _ in range(callers)), return_exceptions=True)
            values = [v for v in got if not isinstance(v, BaseException)]
            errors = [repr(v) for v in got if isinstance(v, BaseException)]
            out.put(("served", values, errors))
            await asyncio.to_thread(release.wait, HANG)
            await asyncio.to_thread(wait_for, settled)  # the refresh tasks run on this loop
            out.put(report(values, errors))

        asyncio.run(main())
    else:
        values, errors = call_all("threads", callers, func, func)
        out.put(("served", values, errors))
        release.wait(HANG)
        wait_for(settled)
        out.put(report(values, errors))
    # The cache stays open: a refresh this process queued behind its callers may still run
    # (and, finding the entry refreshed, skip) until the process exits.
