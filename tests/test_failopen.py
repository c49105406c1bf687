"""Fault injection for FailOpen: raising, hanging (sync and async) and dead backends."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from tests.faults import FlakyCache, HangingCache
from tests.harness import FakeClock, in_forked_child
from tests.metric_catalog import metric_total
from toolkit import (
    BackendError,
    CacheClosedError,
    CircuitOpenError,
    DeadlineExceededError,
    FailOpen,
    InMemoryCache,
    Metrics,
    NotCacheableError,
    SqliteCache,
    cached,
    observe,
    wrap,
)
from toolkit.middleware import CircuitBreaker
from toolkit.middleware.base import (
    CIRCUIT_CLOSED,
    CIRCUIT_HALF_OPEN,
    CIRCUIT_OPEN,
    CacheMiddleware,
    reads_never_fail,
    runs_in_process,
)

# Each test runs against observe()'s fused layer and against the plain stack.
pytestmark = pytest.mark.usefixtures("observe_form")

NS = ("app", "users")
KEY = (NS, "a")


def errors(registry: CollectorRegistry, backend: str, operation: str, error_type: str) -> float:
    labels = {
        "cache": "app.users",
        "backend": backend,
        "operation": operation,
        "error_type": error_type,
    }
    return registry.get_sample_value("cache_errors_total", labels) or 0.0


def circuit(registry: CollectorRegistry, backend: str = "flaky") -> float | None:
    return registry.get_sample_value("cache_circuit_breaker_state", {"backend": backend})


async def test_failures_become_misses_and_dropped_writes(mode: str) -> None:
    registry = CollectorRegistry()
    cache = observe(FlakyCache(), registry=registry, failure_threshold=100)
    if mode == "sync":
        assert cache.get([KEY]) == {}
        cache.set({KEY: (1, None)})
        cache.clear([NS])
    else:
        assert await cache.aget([KEY]) == {}
        await cache.aset({KEY: (1, None)})
        await cache.aclear([NS])
    assert errors(registry, "flaky", "get", "BackendError") == 1
    assert errors(registry, "flaky", "set", "BackendError") == 1


async def test_strict_reraises(mode: str) -> None:
    cache = observe(FlakyCache(), registry=CollectorRegistry(), strict=True)
    with pytest.raises(BackendError):
        if mode == "sync":
            cache.get([KEY])
        else:
            await cache.aget([KEY])


@pytest.mark.parametrize("inner", [InMemoryCache, FlakyCache], ids=["ours", "foreign"])
def test_caller_bugs_propagate_even_fail_open(inner: Any) -> None:
    backend = inner()
    if isinstance(backend, FlakyCache):
        backend.failing = False
    cache = observe(backend, registry=CollectorRegistry())
    with pytest.raises(TypeError):
        cache.get([("not-a-tuple", "k")])  # type: ignore[list-item]
    with pytest.raises(ValueError, match="ttl"):
        cache.set({KEY: (1, -5)})


def test_a_serializer_refusal_is_dropped_and_never_trips_the_breaker() -> None:
    """A foreign cache's serializer raising TypeError on a value is no backend failure."""
    registry = CollectorRegistry()
    flaky = FlakyCache(TypeError("cannot encode Opaque"))
    cache = observe(flaky, registry=registry, failure_threshold=1)
    for _ in range(3):
        cache.set({KEY: (object(), None)})  # dropped, like any value that cannot be stored
    assert flaky.calls == 3  # the circuit stayed closed: every write reached the backend
    assert errors(registry, "flaky", "set", "TypeError") == 0
    evicted = registry.get_sample_value(
        "cache_evictions_total", {"cache": "app.users", "backend": "flaky", "cause": "uncacheable"}
    )
    assert evicted == 3
    strict = observe(FlakyCache(TypeError("cannot encode Opaque")), strict=True)
    with pytest.raises(TypeError, match="Opaque"):
        strict.set({KEY: (object(), None)})


def test_sync_hang_is_cut_at_the_deadline() -> None:
    registry = CollectorRegistry()
    hanging = HangingCache()
    cache = observe(hanging, registry=registry, deadline=0.05)
    try:
        assert cache.get([KEY]) == {}
        cache.set({KEY: (1, None)})
    finally:
        hanging.release()
    assert errors(registry, "hanging", "get", "DeadlineExceededError") == 1
    assert errors(registry, "hanging", "set", "DeadlineExceededError") == 1


def test_busy_workers_fail_fast_instead_of_queueing() -> None:
    hanging = HangingCache()
    cache = wrap(hanging, FailOpen(deadline=0.05, max_workers=1, failure_threshold=100))
    try:
        assert cache.get([KEY]) == {}
        assert cache.get([KEY]) == {}
    finally:
        hanging.release()
    assert hanging.calls == 1


async def test_async_hang_is_cut_at_the_deadline() -> None:
    registry = CollectorRegistry()
    hanging = HangingCache()
    cache = observe(hanging, registry=registry, deadline=0.05)
    assert await cache.aget([KEY]) == {}
    await cache.aclear([NS])
    assert errors(registry, "hanging", "get", "DeadlineExceededError") == 1


async def test_strict_deadline_raises(mode: str) -> None:
    hanging = HangingCache()
    cache = wrap(hanging, FailOpen(deadline=0.05, strict=True))
    try:
        with pytest.raises(DeadlineExceededError):
            if mode == "sync":
                cache.get([KEY])
            else:
                await cache.aget([KEY])
    finally:
        hanging.release()


async def test_circuit_opens_and_recovers(mode: str) -> None:
    registry = CollectorRegistry()
    clock = FakeClock()
    flaky = FlakyCache()
    cache = observe(
        flaky, registry=registry, failure_threshold=3, reset_timeout=30, clock=clock, deadline=None
    )

    async def get() -> dict[Any, Any]:
        got: dict[Any, Any] = cache.get([KEY]) if mode == "sync" else await cache.aget([KEY])
        return got

    for _ in range(3):
        assert await get() == {}
    assert (flaky.calls, circuit(registry)) == (3, CIRCUIT_OPEN)
    assert await get() == {}
    assert flaky.calls == 3  # an open circuit does not call the backend
    assert errors(registry, "flaky", "get", "CircuitOpenError") == 1

    clock.advance(30)
    assert await get() == {}  # the half-open probe fails: open again
    assert (flaky.calls, circuit(registry)) == (4, CIRCUIT_OPEN)

    flaky.failing = False
    flaky.store.set({KEY: ("back", None)})
    clock.advance(30)
    assert await get() == {KEY: "back"}
    assert (flaky.calls, circuit(registry)) == (5, CIRCUIT_CLOSED)


def test_half_open_admits_a_single_probe() -> None:
    clock = FakeClock()
    changes: list[int] = []
    breaker = CircuitBreaker(
        failure_threshold=1, reset_timeout=5, clock=clock, on_change=changes.append
    )
    breaker.failed()
    clock.advance(5)
    assert breaker.allow() is True
    assert breaker.state == CIRCUIT_HALF_OPEN
    assert breaker.allow() is False
    breaker.succeeded()
    assert changes == [CIRCUIT_OPEN, CIRCUIT_HALF_OPEN, CIRCUIT_CLOSED]


@pytest.mark.parametrize("ending", ["refused", "caller bug"])
@pytest.mark.parametrize("strict", [False, True])
async def test_a_probe_that_ends_without_a_verdict_frees_the_probe(
    ending: str, strict: bool
) -> None:
    """A half-open probe refused by the serializer, or failing on a caller bug, says nothing
    about the backend: the next call probes again and closes the circuit. It used to keep the
    probe slot for ever, so no call reached the healthy backend again."""
    clock = FakeClock()
    flaky = FlakyCache()
    cache = wrap(
        flaky,
        FailOpen(failure_threshold=1, reset_timeout=5, clock=clock, deadline=None, strict=strict),
    )
    with contextlib.suppress(BackendError):
        cache.get([KEY])
    assert cache.circuit_state == CIRCUIT_OPEN
    clock.advance(10)
    flaky.error = NotCacheableError("refused") if ending == "refused" else ValueError("bad input")
    if strict or ending == "caller bug":
        with pytest.raises((NotCacheableError, ValueError)):
            cache.set({KEY: ("value", None)})
    else:
        cache.set({KEY: ("value", None)})  # dropped like any unstorable write
    assert cache.circuit_state == CIRCUIT_HALF_OPEN  # no verdict: neither closed nor reopened
    flaky.failing = False
    calls = flaky.calls
    cache.set({KEY: ("value", None)})
    assert await cache.aget([KEY]) == {KEY: "value"}
    assert (flaky.calls - calls, cache.circuit_state) == (2, CIRCUIT_CLOSED)


async def test_a_backends_own_timeout_is_not_reported_as_our_deadline() -> None:
    """A backend that raises TimeoutError at once did not make anyone wait the deadline: it
    is counted once, as TimeoutError, never relabelled DeadlineExceededError (which is one
    class with the thread pool's and asyncio's timeouts) and counted again."""
    registry = CollectorRegistry()
    cache = observe(FlakyCache(TimeoutError("the driver's own timeout")), registry=registry)
    assert cache.get([KEY]) == {}
    assert await cache.aget([KEY]) == {}
    errors = {
        sample.labels["error_type"]: sample.value
        for family in registry.collect()
        for sample in family.samples
        if sample.name == "cache_errors_total"
    }
    assert errors == {"TimeoutError": 2}


def test_open_circuit_still_rejects_caller_bugs() -> None:
    clock = FakeClock()
    cache = observe(FlakyCache(), registry=CollectorRegistry(), failure_threshold=1, clock=clock)
    cache.get([KEY])
    with pytest.raises(TypeError):
        cache.get([("bad", "key")])  # type: ignore[list-item]


def test_strict_open_circuit_raises() -> None:
    cache = wrap(FlakyCache(), FailOpen(failure_threshold=1, strict=True, deadline=None))
    with pytest.raises(BackendError):
        cache.get([KEY])
    with pytest.raises(CircuitOpenError):
        cache.get([KEY])


def test_logs_are_rate_limited_and_free_of_data(caplog: pytest.LogCaptureFixture) -> None:
    clock = FakeClock()
    cache = wrap(
        FlakyCache(BackendError("value secret-value for key secret-key")),
        FailOpen(clock=clock, failure_threshold=1000, log_interval=60),
        Metrics(registry=CollectorRegistry()),
    )
    with caplog.at_level(logging.WARNING, logger="toolkit.middleware"):
        for _ in range(10):
            cache.get([(NS, "secret-key")])
        clock.advance(61)
        cache.get([(NS, "secret-key")])
    messages = [r.getMessage() for r in caplog.records]
    assert len(messages) == 2
    assert "9 similar" in messages[1]
    assert all("secret" not in m for m in messages)
    assert all(r.exc_info is None for r in caplog.records)


def test_bad_options_are_rejected() -> None:
    with pytest.raises(ValueError, match="deadline"):
        FailOpen(deadline=0)
    with pytest.raises(ValueError, match="failure_threshold"):
        FailOpen(failure_threshold=0)
    with pytest.raises(ValueError, match="reset_timeout"):
        FailOpen(reset_timeout=-1)
    # A duration read from the environment is a str: named, not a failed comparison inside
    # ('>' not supported between instances of 'str' and 'int'); a bool is no duration.
    with pytest.raises(TypeError, match=r"deadline must be seconds \(an int or float\)"):
        observe(InMemoryCache(), registry=CollectorRegistry(), deadline="0.5")  # type: ignore[call-overload]
    with pytest.raises(TypeError, match="deadline must be seconds"):
        FailOpen(deadline=True)
    with pytest.raises(TypeError, match="reset_timeout must be seconds"):
        FailOpen(reset_timeout="10")  # type: ignore[arg-type]


def test_a_middleware_wraps_one_cache() -> None:
    layer: FailOpen[Any] = FailOpen()
    wrap(InMemoryCache(), layer)
    with pytest.raises(ValueError, match="already wraps"):
        wrap(InMemoryCache(), layer)
    with pytest.raises(TypeError, match="wraps no cache"):
        FailOpen().get([KEY])
    with pytest.raises(TypeError, match="not a cache"):
        wrap(object(), FailOpen())


@pytest.mark.parametrize("cls", [InMemoryCache, SqliteCache])
def test_a_cache_class_passed_for_a_cache_is_named(cls: type) -> None:
    """observe(SqliteCache) (the class, a common slip) failed deep in binding with
    'add_eviction_listener() missing 1 required positional argument'."""
    with pytest.raises(TypeError, match=rf"{cls.__name__} is a class, not a cache: pass an "):
        observe(cls, registry=CollectorRegistry())


async def test_a_stack_is_a_context_manager_when_its_cache_is(tmp_path: Path, mode: str) -> None:
    """``with observe(SqliteCache(...)) as cache`` enters and closes the backend (a stack
    raised TypeError: 'FailOpen' object does not support the context manager protocol)."""
    backend: SqliteCache[Any] = SqliteCache(path=str(tmp_path / "c.db"))
    stack = observe(backend, registry=CollectorRegistry())
    if mode == "sync":
        with stack as cache:
            cache.set({KEY: (1, None)})
            assert cache.get([KEY]) == {KEY: 1}
    else:
        async with stack as cache:
            await cache.aset({KEY: (1, None)})
            assert await cache.aget([KEY]) == {KEY: 1}
    assert cache is stack
    with pytest.raises(CacheClosedError):
        backend.get([KEY])
    in_memory = observe(InMemoryCache(), registry=CollectorRegistry())
    with pytest.raises(TypeError, match="InMemoryCache does not support the context manager"):
        in_memory.__enter__()  # as with does: InMemoryCache itself is no context manager


def test_sync_deadline_runs_off_thread_and_reuses_one_worker() -> None:
    flaky = FlakyCache()
    flaky.failing = False
    cache = wrap(flaky, FailOpen(deadline=5.0))
    for i in range(5):
        cache.set({KEY: (i, None)})
        assert cache.get([KEY]) == {KEY: i}
    assert len(flaky.threads) == 1
    assert threading.get_ident() not in flaky.threads


def test_in_process_backends_skip_the_thread_hop() -> None:
    flaky = FlakyCache()
    flaky.failing = False
    flaky.in_process = True
    wrap(flaky, FailOpen(deadline=5.0)).get([KEY])
    assert flaky.threads == {threading.get_ident()}


@pytest.mark.parametrize(("bound", "hops"), [(0.1, False), (5.0, False), (10.0, True)])
def test_self_bounded_backends_skip_the_thread_hop(bound: float, hops: bool) -> None:
    flaky = FlakyCache()
    flaky.failing = False
    flaky.max_call_seconds = bound  # type: ignore[attr-defined]
    wrap(flaky, FailOpen(deadline=5.0)).get([KEY])
    observe(flaky, registry=CollectorRegistry(), deadline=5.0).get([KEY])
    assert (threading.get_ident() not in flaky.threads) is hops


async def test_a_plain_delete_fails_open_like_every_operation() -> None:
    registry = CollectorRegistry()
    flaky = FlakyCache()
    cache = observe(flaky, registry=registry)
    cache.delete([KEY])  # dropped, counted: never a BackendError into the caller
    await cache.adelete([KEY])
    assert errors(registry, "flaky", "delete", "BackendError") == 2


@pytest.mark.parametrize("how", ["invalidate", "ainvalidate", "cache_clear", "acache_clear"])
async def test_a_lost_invalidation_is_never_silent(how: str) -> None:
    """Through a fail-open stack, a failed delete would be dropped, and the result the
    caller asked to forget served again once the backend answers: it raises instead."""
    registry = CollectorRegistry()
    flaky = FlakyCache()
    flaky.failing = False
    cache = observe(flaky, registry=registry)
    computed: list[int] = []

    @cached("app.users", cache=cache)
    def load(user: int) -> int:
        computed.append(user)
        return len(computed)

    assert load(1) == 1
    flaky.failing = True

    async def forget() -> None:
        if how == "invalidate":
            load.invalidate(1)
        elif how == "ainvalidate":
            await load.ainvalidate(1)
        elif how == "cache_clear":
            load.cache_clear()
        else:
            await load.acache_clear()

    with pytest.raises(BackendError, match="backend down"):
        await forget()
    assert errors(registry, "flaky", "delete" if "invalidate" in how else "clear", "BackendError")
    flaky.failing = False
    await forget()  # and once the backend answers, it forgets
    assert load(1) == 2
    flaky.failing = True
    cache.get([KEY])  # everything else still fails open
    load(3)


def test_fail_open_warnings_name_error_message_and_endpoint_never_keys(
    tmp_path: Any, caplog: pytest.LogCaptureFixture
) -> None:
    from toolkit import SqliteCache

    path = str(tmp_path / "closed.db")
    sqlite = SqliteCache(path=path)
    cache = observe(sqlite, registry=CollectorRegistry())
    sqlite.close()
    with caplog.at_level(logging.WARNING, logger="toolkit.middleware"):
        assert cache.get([(("app",), "secret-key-123")]) == {}
    text = caplog.text
    assert "CacheClosedError" in text and "closed" in text.split("CacheClosedError", 1)[1]
    assert path in text
    assert "secret-key-123" not in text


def test_a_foreign_errors_message_is_left_out(caplog: pytest.LogCaptureFixture) -> None:
    flaky = FlakyCache(RuntimeError("value was s3cr3t"))
    cache = observe(flaky, registry=CollectorRegistry())
    with caplog.at_level(logging.WARNING, logger="toolkit.middleware"):
        cache.get([KEY])
    assert "RuntimeError" in caplog.text and "s3cr3t" not in caplog.text


class _Passing(CacheMiddleware[Any]):
    """A user's layer: it declares nothing, so it may fail reads of its own."""


async def test_reads_that_cannot_fail_are_served_even_with_the_circuit_open(mode: str) -> None:
    memory: InMemoryCache[Any] = InMemoryCache()
    memory.set({KEY: (1, None)})
    cache = observe(memory, registry=CollectorRegistry(), failure_threshold=1)
    failopen = cache
    assert isinstance(failopen, FailOpen) and cache.reads_never_fail is False
    assert failopen.inner.reads_never_fail is True  # Metrics -> Tracing -> InMemoryCache
    failopen.breaker.failed()  # as a failing write would
    assert failopen.circuit_state == CIRCUIT_OPEN
    got = cache.get([KEY]) if mode == "sync" else await cache.aget([KEY])
    assert got == {KEY: 1}
    with pytest.raises(TypeError):  # caller bugs still raise
        cache.get("not keys")  # type: ignore[arg-type]


async def test_reads_that_can_fail_stay_behind_the_breaker(mode: str) -> None:
    lg_memory = pytest.importorskip("langgraph.cache.memory").InMemoryCache()
    ours: InMemoryCache[Any] = InMemoryCache()
    for backend in (lg_memory, wrap(ours, _Passing())):
        backend.set({KEY: (1, None)})
        failopen: Any = wrap(backend, FailOpen(failure_threshold=1))
        assert reads_never_fail(failopen.inner) is False
        failopen.breaker.failed()
        got = failopen.get([KEY]) if mode == "sync" else await failopen.aget([KEY])
        assert got == {}  # served as a miss: the circuit is open


def test_a_declared_claim_must_be_exactly_true() -> None:
    flaky = FlakyCache()
    flaky.reads_never_fail = "yes"  # type: ignore[attr-defined]
    assert reads_never_fail(flaky) is False
    flaky.reads_never_fail = True  # type: ignore[attr-defined]
    assert reads_never_fail(flaky) is True
    assert reads_never_fail(wrap(flaky, Metrics(registry=CollectorRegistry()))) is True
    assert reads_never_fail(wrap(flaky, FailOpen())) is False  # strict may re-raise


class _SyncOnly(InMemoryCache[Any]):
    """An in-process cache whose async twins must never be reached through a stack."""

    async def aget(self, keys: Any) -> Any:
        raise AssertionError("an in-process stack awaits no layer beneath it")

    async def aset(self, pairs: Any) -> None:
        raise AssertionError("an in-process stack awaits no layer beneath it")

    async def aclear(self, namespaces: Any = None) -> None:
        raise AssertionError("an in-process stack awaits no layer beneath it")


async def test_an_in_process_stack_runs_its_async_calls_as_its_sync_ones() -> None:
    registry = CollectorRegistry()
    cache = observe(_SyncOnly(), registry=registry)
    assert cache.in_process is True and runs_in_process(cache)
    await cache.aset({KEY: (1, None)})
    assert await cache.aget([KEY, (NS, "b")]) == {KEY: 1}
    await cache.aclear([NS])
    assert await cache.aget([KEY]) == {}
    # Recorded exactly as the layers' own async calls record them.
    assert metric_total(registry, "cache_gets_total", result="hit") == 1
    assert metric_total(registry, "cache_gets_total", result="miss") == 2
    assert metric_total(registry, "cache_puts_total") == 1


class _AsyncAware(CacheMiddleware[Any]):
    """A user's layer that does something of its own in async calls; it declares nothing."""

    def __init__(self) -> None:
        self.awaited = 0
        super().__init__()

    def wrap_async(self, operation: str, call: Any) -> Any:
        async def counted(arg: Any = None) -> Any:
            self.awaited += 1
            return await call(arg)

        return counted


async def test_a_layer_that_declares_nothing_keeps_its_async_calls(tmp_path: Any) -> None:
    from toolkit import SqliteCache

    layer = _AsyncAware()
    cache: Any = wrap(InMemoryCache(), Metrics(registry=CollectorRegistry()), layer)
    assert layer.in_process is False and cache.in_process is False  # Metrics -> layer -> memory
    await cache.aget([KEY])
    assert layer.awaited == 1
    sqlite = SqliteCache(path=str(tmp_path / "io.db"))
    try:
        assert observe(sqlite, registry=CollectorRegistry()).in_process is False
    finally:
        sqlite.close()
    lg_memory = pytest.importorskip("langgraph.cache.memory").InMemoryCache()
    assert runs_in_process(lg_memory) and runs_in_process(InMemoryCache())
    flaky = FlakyCache()
    flaky.in_process = "yes"  # type: ignore[assignment]
    assert runs_in_process(flaky) is False


def test_a_forked_child_is_not_stuck_behind_its_parents_probe() -> None:
    """A half-open probe another thread has in flight at fork never ends in the child: the
    child's breaker let no call through again, so its cache stayed switched off for good."""
    clock = FakeClock()
    breaker = CircuitBreaker(failure_threshold=1, reset_timeout=1, clock=clock)
    breaker.failed()
    clock.advance(2)
    probing, answered = threading.Event(), threading.Event()

    def probe() -> None:
        assert breaker.allow()  # the probe: its backend call is in flight during the fork
        probing.set()
        answered.wait(timeout=60)
        breaker.succeeded()

    thread = threading.Thread(target=probe)
    thread.start()
    try:
        assert probing.wait(timeout=60)
        assert breaker.allow() is False  # here, the probe holds the slot
        assert in_forked_child(breaker.allow) is True  # there, no probe exists
    finally:
        answered.set()
        thread.join(timeout=60)
    assert breaker.state == CIRCUIT_CLOSED


def test_a_forked_child_can_use_a_breaker_locked_during_the_fork() -> None:
    """A fork while another thread holds the breaker's lock (it runs the clock and the
    state-change callbacks under it) left the lock held in the child: its next failure hung."""
    seen: list[object] = []

    class ForkingClock(FakeClock):
        fork = False

        def __call__(self) -> float:
            if self.fork:  # called with the breaker's lock held
                self.fork = False
                seen.append(in_forked_child(fail_once))
            return self.now

    def fail_once() -> int:
        breaker.failed()
        return breaker.state

    clock = ForkingClock()
    breaker = CircuitBreaker(failure_threshold=1, reset_timeout=1, clock=clock)
    breaker.failed()
    clock.advance(2)
    clock.fork = True
    assert breaker.allow()
    assert seen == [CIRCUIT_OPEN]


class _StuckWrites(InMemoryCache[Any]):
    """An out-of-process cache whose first set waits until ``gate`` opens: a write stuck on
    the wire that still lands later (no real backend stalls one call on demand)."""

    in_process = False

    def __init__(self) -> None:
        super().__init__()
        self.gate = threading.Event()
        self.landed = threading.Event()
        self.stuck = True

    def set(self, pairs: Any) -> None:
        if self.stuck:
            self.stuck = False
            self.gate.wait(timeout=60)
            super().set(pairs)
            self.landed.set()
        else:
            super().set(pairs)


def _until_done(call: Callable[[], object]) -> None:
    """Call until it no longer raises a deadline (a late write may still be finishing)."""
    for _ in range(600):
        try:
            call()
            return
        except DeadlineExceededError:
            continue
    raise AssertionError("every call hit the deadline: the late write never finished")


@pytest.mark.parametrize("later", ["set", "delete", "clear"])
def test_a_write_cut_at_the_deadline_never_lands_after_a_later_write(later: str) -> None:
    """A set cut at the deadline goes on in its worker thread and lands when the backend
    answers. A later write or invalidation reported done went to the backend first, so the
    earlier value landed over it: a stale value, an invalidation undone. A later write now
    waits for the late one (within its own deadline) and fails if it is still running."""
    backend = _StuckWrites()
    cache = wrap(backend, FailOpen(deadline=0.1, strict=True, failure_threshold=1000))
    with pytest.raises(DeadlineExceededError):
        cache.set({KEY: ("old", None)})  # cut; its worker still waits on the backend
    writes: dict[str, Callable[[], object]] = {
        "set": lambda: cache.set({KEY: ("new", None)}),
        "delete": lambda: cache.delete([KEY]),
        "clear": lambda: cache.clear([NS]),
    }
    try:
        writes[later]()
        reported_done = True
    except DeadlineExceededError:
        reported_done = False
    backend.gate.set()
    assert backend.landed.wait(timeout=60)
    expected = {KEY: "new"} if later == "set" else {}
    if reported_done:
        assert cache.get([KEY]) == expected  # the older value did not land over it
    _until_done(writes[later])  # once the late write landed, writes go through again
    assert cache.get([KEY]) == expected


@pytest.mark.parametrize("deadline", [float("inf"), 1e12])
def test_a_deadline_too_long_to_wait_is_refused_when_built(deadline: float) -> None:
    """A deadline of inf (or past what a thread can wait, threading.TIMEOUT_MAX) was taken,
    then every sync call failed with OverflowError, counted as a backend failure: the
    circuit opened on a healthy backend and the cache switched itself off."""
    with pytest.raises(ValueError, match=r"deadline must be at most .*\(None for no deadline\)"):
        FailOpen(deadline=deadline)
    flaky = FlakyCache()
    flaky.failing = False
    cache = wrap(flaky, FailOpen(deadline=threading.TIMEOUT_MAX, strict=True))
    cache.set({KEY: (1, None)})
    assert cache.get([KEY]) == {KEY: 1}


def test_a_circuit_that_could_never_close_again_is_refused() -> None:
    """reset_timeout=inf opened the circuit for good at the first failures."""
    with pytest.raises(ValueError, match="reset_timeout must be finite"):
        FailOpen(reset_timeout=float("inf"))


@pytest.mark.parametrize(("value", "error"), [("60", TypeError), (-1, ValueError)])
def test_a_bad_log_interval_is_refused_when_built(value: Any, error: type[Exception]) -> None:
    """log_interval="60" (from a config file) was taken, then the first failure raised
    TypeError from the logging step into the caller instead of serving a miss."""
    with pytest.raises(error, match="log_interval"):
        FailOpen(log_interval=value)


def test_a_clock_stepping_back_neither_keeps_the_circuit_open_nor_silences_the_log(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """With a clock that stepped back (an injected wall clock set back an hour), the open
    circuit waited for the clock to come back past its opening plus reset_timeout, and
    the failure log stayed silent as long: an hour without a probe or a warning."""
    clock = FakeClock()
    flaky = FlakyCache()
    cache = wrap(
        flaky,
        FailOpen(deadline=None, failure_threshold=1, reset_timeout=5, log_interval=60, clock=clock),
    )
    with caplog.at_level(logging.WARNING, logger="toolkit.middleware"):
        assert cache.get([KEY]) == {}
        assert cache.circuit_state == CIRCUIT_OPEN
        clock.advance(-3600)
        flaky.failing = False
        flaky.store.set({KEY: ("back", None)})
        assert cache.get([KEY]) == {KEY: "back"}  # the probe went through
        assert cache.circuit_state == CIRCUIT_CLOSED
        flaky.failing = True
        cache.get([KEY])
    logged = [record.getMessage().split(" failed with ")[1][:12] for record in caplog.records]
    assert logged == ["BackendError", "BackendError"]  # the one after the step back too


def test_a_worker_thread_that_cannot_start_gives_its_slot_back(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A worker thread failing to start (the process at its thread limit) kept the slot the
    caller took: after max_workers such failures every call waited out its deadline, the
    circuit opened, and even its probes found no slot: the cache was off for good."""
    flaky = FlakyCache()
    flaky.failing = False
    cache = wrap(flaky, FailOpen(deadline=10.0, max_workers=1, strict=True))

    def cannot_start(thread: threading.Thread) -> None:
        raise RuntimeError("can't start new thread")

    with monkeypatch.context() as patch:  # no real process reaches its thread limit on demand
        patch.setattr(threading.Thread, "start", cannot_start)
        with pytest.raises(RuntimeError, match="can't start new thread"):
            cache.set({KEY: (1, None)})
    cache.set({KEY: (2, None)})  # waited its whole deadline for the lost slot, then failed
    assert cache.get([KEY]) == {KEY: 2}


class _Scripted(InMemoryCache[Any]):
    """An out-of-process cache whose calls follow a script, one step per call: say it was
    entered, wait until released, then raise or answer (no real backend holds one call
    while failing another on demand)."""

    in_process = False
    reads_never_fail = False

    def __init__(self, *errors: Exception | None) -> None:
        super().__init__()
        self.steps = [(threading.Event(), threading.Event(), error) for error in errors]
        self.calls = 0

    def step(self, index: int) -> tuple[threading.Event, threading.Event]:
        entered, release, _ = self.steps[index]
        return entered, release

    def _run(self) -> None:
        entered, release, error = self.steps[min(self.calls, len(self.steps) - 1)]
        self.calls += 1
        entered.set()
        release.wait(timeout=60)
        if error is not None:
            raise error

    def get(self, keys: Any) -> Any:
        self._run()
        return super().get(keys)

    def set(self, pairs: Any) -> None:
        self._run()
        super().set(pairs)


def test_a_call_from_before_the_circuit_opened_does_not_free_the_probe() -> None:
    """A call admitted while the circuit was closed that ended without a verdict (a caller
    bug, a refused value, a cancellation) after the circuit had opened and gone half-open
    freed the probe's slot: a second probe reached the failing backend beside the first."""
    clock = FakeClock()
    backend = _Scripted(ValueError("bad input"), BackendError("down"), None, None)
    for _, release, _error in backend.steps[1:]:
        release.set()
    cache = wrap(
        backend, FailOpen(deadline=None, failure_threshold=1, reset_timeout=5, clock=clock)
    )
    caught: list[BaseException] = []

    def straggle() -> None:
        try:
            cache.set({KEY: ("value", None)})
        except ValueError as exc:
            caught.append(exc)

    straggler = threading.Thread(target=straggle)
    straggler.start()
    entered, release = backend.step(0)
    assert entered.wait(timeout=60)  # admitted while closed, still in the backend
    assert cache.get([KEY]) == {}  # fails: the circuit opens
    clock.advance(5)
    backend.steps[2][1].clear()  # the probe stays in the backend until released
    probe = threading.Thread(target=cache.get, args=([KEY],))
    probe.start()
    assert backend.step(2)[0].wait(timeout=60)
    assert cache.circuit_state == CIRCUIT_HALF_OPEN
    release.set()
    straggler.join(timeout=60)
    assert len(caught) == 1
    calls = backend.calls
    assert cache.get([KEY]) == {}  # the probe is still out: served as a miss
    assert backend.calls == calls
    backend.steps[2][1].set()
    probe.join(timeout=60)
    assert cache.circuit_state == CIRCUIT_CLOSED


def test_the_count_of_failures_not_logged_is_exact_under_threads(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The rate-limited log's "N similar failures not logged" was a read-then-write on a
    dict shared by every thread: failures racing each other were lost from N."""
    clock = FakeClock()
    cache = wrap(FlakyCache(), FailOpen(deadline=None, failure_threshold=10**9, clock=clock))
    threads, calls = 8, 3000
    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)  # switch threads as often as possible, to provoke lost updates
    try:
        start = threading.Barrier(threads)

        def fail_many() -> None:
            start.wait()
            for _ in range(calls):
                cache.get([KEY])

        workers = [threading.Thread(target=fail_many) for _ in range(threads)]
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join(timeout=600)
    finally:
        sys.setswitchinterval(interval)
    clock.advance(61)
    with caplog.at_level(logging.WARNING, logger="toolkit.middleware"):
        cache.get([KEY])
    assert f"({threads * calls - 1} similar failures not logged)" in caplog.text


class _AnswersInTheLoop(InMemoryCache[Any]):
    """An out-of-process cache whose async reads fail while ``failing``, and never answer
    while ``holding`` until ``answer()``: it keeps their futures, as a backend keeps its
    calls', so a call left in a loop closed by hand stays reachable."""

    in_process = False
    reads_never_fail = False

    def __init__(self) -> None:
        super().__init__()
        self.failing = True
        self.holding = False
        self.calls = 0
        self.held: list[asyncio.Event] = []

    async def aget(self, keys: Any) -> Any:
        self.calls += 1
        if self.failing:
            raise BackendError("down")
        if self.holding:
            answer = asyncio.Event()
            self.held.append(answer)
            await answer.wait()
        return await super().aget(keys)


def _run_until(loop: asyncio.AbstractEventLoop, condition: Callable[[], bool]) -> None:
    for _ in range(10_000):
        if condition():
            return
        loop.run_until_complete(asyncio.sleep(0))
    raise AssertionError("never happened")


def test_a_probe_left_in_a_closed_loop_does_not_keep_the_circuit_half_open() -> None:
    """The half-open probe's loop was closed by hand before the backend answered: the probe
    never ended, its slot was never freed, and the circuit stayed half-open for good (every
    call a miss that never reached the recovered backend). The next call now probes in its
    place; and the old probe, collected later, does not free its successor's slot."""
    clock = FakeClock()
    backend = _AnswersInTheLoop()
    cache = wrap(
        backend, FailOpen(deadline=None, failure_threshold=1, reset_timeout=5, clock=clock)
    )
    assert asyncio.run(cache.aget([KEY])) == {}
    assert cache.circuit_state == CIRCUIT_OPEN
    clock.advance(5)
    backend.failing = False
    backend.holding = True
    closed = asyncio.new_event_loop()
    left = closed.create_task(cache.aget([KEY]))
    _run_until(closed, lambda: len(backend.held) == 1)
    assert cache.circuit_state == CIRCUIT_HALF_OPEN
    closed.close()

    loop = asyncio.new_event_loop()
    try:
        successor = loop.create_task(cache.aget([KEY]))
        _run_until(loop, lambda: len(backend.held) == 2)  # the backend is reached again
        del left
        backend.held.pop(0)
        gc.collect()  # the old probe ends, closed unfinished
        calls = backend.calls
        one_probe = asyncio.wait_for(cache.aget([KEY]), 30)  # a second probe would hang
        assert loop.run_until_complete(one_probe) == {}  # still one probe at a time
        assert backend.calls == calls
        backend.held[0].set()
        assert loop.run_until_complete(successor) == {}
        assert cache.circuit_state == CIRCUIT_CLOSED
    finally:
        loop.close()
