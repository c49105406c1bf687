"""``@cached``: binding kinds, both forms, single-flight, storage rules, controls, spans."""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import gc
import inspect
import threading
import uuid
import warnings
import weakref
from collections.abc import Callable, Iterator
from datetime import timedelta
from typing import Any, cast

import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from prometheus_client import CollectorRegistry

from tests.harness import Subject
from tests.test_keys import Cat, Dog, Owner  # module-level models: local ones are refused
from toolkit import InMemoryCache, observe
from toolkit.decorators import RedefinitionWarning, cached
from toolkit.decorators import flight as flight_module
from toolkit.decorators._entry import TOMBSTONE
from toolkit.keys import derive_key

WAIT = 30.0  # generous bound so a broken single-flight fails instead of hanging


class HookedCache(InMemoryCache[Any]):
    """An in-memory cache that also implements the middleware hook contract."""

    def __init__(self) -> None:
        super().__init__()
        self.loads: list[tuple[tuple[str, ...], bool]] = []
        self.coalesced = 0
        self._hook_lock = threading.Lock()
        self.waiters_arrived = threading.Condition(self._hook_lock)

    def record_load(self, namespace: tuple[str, ...], seconds: float, *, ok: bool) -> None:
        assert seconds >= 0
        with self._hook_lock:
            self.loads.append((namespace, ok))

    def record_coalesced(self, namespace: tuple[str, ...]) -> None:
        with self._hook_lock:
            self.coalesced += 1
            self.waiters_arrived.notify_all()

    async def awaiting(self, count: int) -> None:
        """Yield to the loop until ``count`` callers wait (bounded, so a bug fails, not hangs)."""
        await asyncio.wait_for(self._spin_until(count), WAIT)

    async def _spin_until(self, count: int) -> None:
        while self.coalesced < count:
            await asyncio.sleep(0)

    def wait_for_waiters(self, count: int) -> None:
        with self._hook_lock:
            self.waiters_arrived.wait_for(lambda: self.coalesced >= count, timeout=WAIT)


@pytest.fixture
def cache() -> HookedCache:
    return HookedCache()


# -- forms and binding kinds ------------------------------------------------------------


def test_bare_form_uses_given_defaults(cache: HookedCache) -> None:
    from toolkit.config import configure

    calls: list[int] = []
    configure(cache=cache)
    try:

        @cached
        def double(x: int) -> int:
            calls.append(x)
            return 2 * x

        assert double(2) == double(2) == double(x=2) == 4
        assert calls == [2]
        assert double.cache_key(2)[0] == (
            __name__,
            "test_bare_form_uses_given_defaults.<locals>.double",
        )
        assert double.__wrapped__(5) == 10
        assert double.__name__ == "double"
    finally:
        configure(cache=None)


def test_options_form(cache: HookedCache) -> None:
    calls: list[tuple[int, int]] = []

    @cached("adder", ttl=60, cache=cache, version=2)
    def add(a: int, b: int = 1) -> int:
        calls.append((a, b))
        return a + b

    assert add(1) == add(1, 1) == add(a=1, b=1) == 2
    assert add(2) == 3
    assert calls == [(1, 1), (2, 1)]
    assert add.cache_key(1)[0] == ("adder", "v=2")


class Service:
    def __init__(self, tenant: str) -> None:
        self.tenant = tenant
        self.calls: list[Any] = []

    def __cache_key__(self) -> str:
        return self.tenant

    @cached(cache=None)
    def method(self, x: int) -> str:
        self.calls.append(x)
        return f"{self.tenant}:{x}"

    @classmethod
    @cached
    def klass(cls, x: int) -> str:
        CALLS.append(("klass", cls.__name__, x))
        return f"{cls.__name__}:{x}"

    @cached
    @classmethod
    def klass_outer(cls, x: int) -> str:
        CALLS.append(("klass_outer", cls.__name__, x))
        return f"{cls.__name__}:{x}"

    @staticmethod
    @cached
    def static(x: int) -> int:
        CALLS.append(("static", x))
        return -x

    @cached
    @staticmethod
    def static_outer(x: int) -> int:
        CALLS.append(("static_outer", x))
        return -x

    @cached(ignore=("self",))
    async def amethod(self, x: int) -> str:
        CALLS.append(("amethod", x))
        return f"a{x}"


class SubService(Service):
    pass


CALLS: list[Any] = []


@pytest.fixture
def default_cache(cache: HookedCache) -> Iterator[HookedCache]:
    from toolkit.config import configure

    configure(cache=cache)
    CALLS.clear()
    yield cache
    configure(cache=None)


def test_instance_method_keys_on_the_instance(default_cache: HookedCache) -> None:
    acme, acme2, other = Service("acme"), Service("acme"), Service("other")
    assert acme.method(1) == "acme:1"
    assert acme2.method(1) == "acme:1"  # same __cache_key__: a hit
    assert other.method(1) == "other:1"
    assert Service.method(acme, 1) == "acme:1"
    assert acme.calls == [1] and acme2.calls == [] and other.calls == [1]
    assert (
        acme.method.cache_key(1) == Service.method.cache_key(acme, 1) == acme2.method.cache_key(1)
    )


def test_classmethod_in_both_orders(default_cache: HookedCache) -> None:
    for _ in range(2):
        assert Service.klass(1) == Service("x").klass(1) == "Service:1"
        assert Service.klass_outer(1) == Service("x").klass_outer(1) == "Service:1"
        assert SubService.klass(1) == "SubService:1"
    assert CALLS == [
        ("klass", "Service", 1),
        ("klass_outer", "Service", 1),
        ("klass", "SubService", 1),
    ]
    assert Service.klass.cache_key(1) != SubService.klass.cache_key(1)


def test_staticmethod_in_both_orders(default_cache: HookedCache) -> None:
    for _ in range(2):
        assert Service.static(3) == Service("x").static(3) == -3
        assert Service.static_outer(3) == Service("x").static_outer(3) == -3
    assert CALLS == [("static", 3), ("static_outer", 3)]


async def test_coroutine_function(cache: HookedCache) -> None:
    calls: list[int] = []

    @cached(cache=cache)
    async def fetch(x: int) -> int:
        calls.append(x)
        await asyncio.sleep(0)
        return x * 10

    assert inspect.iscoroutinefunction(fetch)
    assert await fetch(1) == await fetch(1) == 10
    assert calls == [1]


async def test_async_method_ignoring_self(default_cache: HookedCache) -> None:
    assert inspect.iscoroutinefunction(Service("a").amethod)
    assert await Service("a").amethod(1) == await Service("b").amethod(1) == "a1"
    assert CALLS == [("amethod", 1)]


def test_unencodable_self_explains_the_fix(cache: HookedCache) -> None:
    class Plain:
        @cached(cache=cache)
        def run(self, x: int) -> int:
            return x

    with pytest.raises(TypeError, match=r"'self'.*ignore=\('self',\).*__cache_key__"):
        Plain().run(1)


def test_bad_decorator_arguments() -> None:
    for zero in (0, 0.0, timedelta(0)):
        with pytest.raises(ValueError, match=r"ttl=0\) would store nothing.*__wrapped__"):
            cached(ttl=zero)
    with pytest.raises(TypeError, match="cache"):
        cached(cache=object())  # type: ignore[call-overload]
    with pytest.raises(ValueError, match="nope"):
        cached(ignore=("nope",), key_id="f")(lambda x: x)
    with pytest.raises(TypeError, match="decorates functions"):
        cached()(42)  # type: ignore[call-overload]


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"ignore": None}, r"ignore must be a parameter name or names, got NoneType"),
        ({"ignore": 5}, r"ignore must be a parameter name or names, got int"),
        ({"ignore": ("x", 5)}, r"ignore must be a parameter name or names, got int in it"),
        ({"key": "x"}, r"key must be a function of the call's arguments, got str"),
        ({"condition": True}, r"condition must be a function of the result, got bool"),
        ({"cache_none": "no"}, r"cache_none must be True or False, got str"),
        ({"strict_containers": 0}, r"strict_containers must be True or False, got int"),
    ],
)
def test_options_of_the_wrong_kind_are_refused_at_decoration(
    options: dict[str, Any], message: str
) -> None:
    """These were taken as given: a str for cache_none or strict_containers by its truth
    ("no" stored None results), an int for key= or condition= failed only at the first miss,
    after computing (as "'int' object is not callable"), and ignore= by iterating it."""
    with pytest.raises(TypeError, match=message):
        cached("n", **options)


# -- storage rules ----------------------------------------------------------------------


def test_none_is_cached_unless_switched_off(cache: HookedCache) -> None:
    calls: list[str] = []

    @cached(cache=cache)
    def maybe(x: str) -> None:
        calls.append(x)

    @cached(cache=cache, cache_none=False)
    def never(x: str) -> None:
        calls.append("never")

    maybe("a"), maybe("a"), never("a"), never("a")
    assert calls == ["a", "never", "never"]


def test_condition_decides_what_is_stored(cache: HookedCache) -> None:
    calls: list[int] = []

    @cached(cache=cache, condition=lambda result: result > 0)
    def f(x: int) -> int:
        calls.append(x)
        return x

    f(-1), f(-1), f(1), f(1)
    assert calls == [-1, -1, 1]


def test_errors_are_not_cached(cache: HookedCache) -> None:
    calls: list[int] = []

    @cached(cache=cache)
    def boom(x: int) -> int:
        calls.append(x)
        raise RuntimeError("nope")

    for _ in range(2):
        with pytest.raises(RuntimeError):
            boom(1)
    assert calls == [1, 1]
    assert [ok for _, ok in cache.loads] == [False, False]


def test_a_functions_stop_iteration_reaches_the_caller_as_is(cache: HookedCache) -> None:
    # The call path's steps are generators, where a StopIteration would become a RuntimeError.
    @cached(cache=cache)
    def exhausted(x: int) -> int:
        return next(iter([]))

    for _ in range(2):
        with pytest.raises(StopIteration):
            exhausted(1)
    assert [ok for _, ok in cache.loads] == [False, False]


def test_key_function_and_ignore(cache: HookedCache) -> None:
    calls: list[Any] = []

    @cached(cache=cache, key=lambda user, request: user["id"])
    def profile(user: dict[str, Any], request: object) -> str:
        calls.append(user["id"])
        return str(user["id"])

    @cached(cache=cache, ignore=("verbose",))
    def lookup(q: str, verbose: bool = False) -> str:
        calls.append(q)
        return q

    profile({"id": "u1", "seen": 1}, object())
    profile({"id": "u1", "seen": 2}, object())
    lookup("a"), lookup("a", verbose=True)
    assert calls == ["u1", "a"]


def test_load_hook_reports_every_computed_miss(cache: HookedCache) -> None:
    @cached("loads", cache=cache)
    def f(x: int) -> int:
        return x

    f(1), f(1), f(2)
    assert cache.loads == [(("loads",), True), (("loads",), True)]


# -- controls ---------------------------------------------------------------------------


def test_invalidate_refresh_and_clear(cache: HookedCache) -> None:
    state = {"n": 0}

    @cached(cache=cache)
    def counter(x: int) -> int:
        state["n"] += 1
        return state["n"]

    assert counter(1) == 1 and counter(1) == 1 and counter(2) == 2
    counter.invalidate(1)
    assert counter(1) == 3 and counter(2) == 2
    assert counter.refresh(2) == 4
    assert counter(2) == 4
    counter.cache_clear()
    assert counter(1) == 5 and counter(2) == 6


def test_invalidate_deletes_the_entry_where_the_cache_can() -> None:
    cache: InMemoryCache[Any] = InMemoryCache()

    @cached(cache=cache)
    def square(x: int) -> int:
        return x * x

    square(3)
    full_key = square.cache_key(3)
    assert cache.get([full_key]) == {full_key: 9}
    square.invalidate(3)
    assert cache.get([full_key]) == {}


async def test_invalidate_on_a_cache_without_delete_still_forgets() -> None:
    from langgraph.cache.memory import InMemoryCache as LangGraphMemory

    calls: list[int] = []

    @cached(cache=observe(LangGraphMemory()))
    def square(x: int) -> int:
        calls.append(x)
        return x * x

    assert square(3) == 9 and square(3) == 9
    square.invalidate(3)
    assert square(3) == 9
    await square.ainvalidate(3)
    assert square(3) == 9
    assert calls == [3, 3, 3]


async def test_async_controls(cache: HookedCache) -> None:
    state = {"n": 0}

    @cached(cache=cache)
    async def counter(x: int) -> int:
        state["n"] += 1
        return state["n"]

    assert await counter(1) == 1 and await counter(1) == 1
    await counter.ainvalidate(1)
    assert await counter(1) == 2
    assert await counter.arefresh(1) == 3
    assert await counter(1) == 3
    await counter.acache_clear()
    assert await counter(1) == 4
    with pytest.raises(TypeError, match="arefresh"):
        counter.refresh(1)  # type: ignore[attr-defined]


async def test_sync_function_async_twins(cache: HookedCache) -> None:
    state = {"n": 0}

    @cached(cache=cache)
    def counter(x: int) -> int:
        state["n"] += 1
        return state["n"]

    assert counter(1) == 1
    await counter.ainvalidate(1)
    assert counter(1) == 2
    assert await counter.arefresh(1) == 3
    await counter.acache_clear()
    assert counter(1) == 4


class SlowOld:
    """A function whose computation of "old" waits for ``release``: ``lead`` starts one in a
    thread, then switches the source to "new"; ``finish`` lets it end."""

    def __init__(self, cache: HookedCache, name: str) -> None:
        self.started, self.release = threading.Event(), threading.Event()
        self.value = "old"

        @cached(name, cache=cache, key_id=name)
        def read(x: int) -> str:
            value = self.value
            if value == "old":
                self.started.set()
                assert self.release.wait(WAIT)
            return value

        self.read = read
        self._leader: threading.Thread | None = None

    def lead(self) -> list[str]:
        """Start the "old" computation of ``read(1)``; its result lands in the list returned."""
        result: list[str] = []
        self._leader = threading.Thread(target=lambda: result.append(self.read(1)))
        self._leader.start()
        assert self.started.wait(WAIT)
        self.value = "new"
        return result

    def finish(self) -> None:
        """Let the "old" computation end, and wait for its thread."""
        self.release.set()
        assert self._leader is not None
        self._leader.join(WAIT)


def test_a_computation_begun_before_a_forced_refresh_is_not_stored_after_it(
    cache: HookedCache,
) -> None:
    """A miss computes the old value; meanwhile ``refresh`` computes and stores the new one:
    the old computation, landing last, neither overwrites the new value nor reaches a caller
    that arrives after the refresh."""
    slow = SlowOld(cache, "controls.forced")
    before = slow.lead()
    assert slow.read.refresh(1) == "new"  # while the first computation runs
    slow.finish()
    assert before == ["old"]  # it began before the refresh: its caller gets its result
    assert slow.read(1) == "new"  # but the cache keeps the refresh's


async def test_a_refresh_whose_value_is_not_stored_forgets_the_older_one(
    cache: HookedCache, mode: str
) -> None:
    """``refresh`` returns a value that ``condition`` keeps out of the cache: the entry from
    before the refresh is forgotten, not served for the rest of its ttl as if the refresh
    had never happened; the next call computes."""
    source = {"value": "old"}

    def refuse(value: str) -> bool:
        return value != "bad"

    @cached("controls.refused", cache=cache, ttl=300, condition=refuse, key_id="refused")
    def read(x: int) -> str:
        return source["value"]

    @cached("controls.refused", cache=cache, ttl=300, condition=refuse, key_id="refused")
    async def aread(x: int) -> str:
        return source["value"]

    assert read(1) == "old"
    source["value"] = "bad"
    assert (read.refresh(1) if mode == "sync" else await aread.arefresh(1)) == "bad"
    source["value"] = "new"
    assert read(1) == "new"


def test_an_invalidation_during_a_computation_is_not_undone(cache: HookedCache) -> None:
    """A computation that began before ``invalidate`` neither stores its result after it nor
    hands it to a caller that arrives after it: that caller computes afresh."""
    slow = SlowOld(cache, "controls.race")
    read = slow.read
    before = slow.lead()
    read.invalidate(1)  # while the first computation runs
    after: list[str] = []
    follower = threading.Thread(target=lambda: after.append(read(1)))
    follower.start()
    with cache.waiters_arrived:  # the follower either joins the old flight or returns
        cache.waiters_arrived.wait_for(lambda: cache.coalesced or after, timeout=WAIT)
    slow.finish()
    follower.join(WAIT)
    assert before == ["old"]
    assert after == ["new"]  # not the computation that began before the invalidation
    assert read(1) == "new"  # nor its late write


class StoreHeld(InMemoryCache[Any]):
    """An in-memory cache whose next ``set`` waits before it stores, and again before it
    returns: a write still on its way while an invalidation runs."""

    def __init__(self) -> None:
        super().__init__()
        self.hold = False
        self.entered = threading.Event()
        self.store = threading.Event()
        self.stored = threading.Event()
        self.finish = threading.Event()
        self.forgot = threading.Event()

    def set(self, pairs: Any) -> None:
        if not self.hold:
            super().set(pairs)
            return
        self.hold = False
        self.entered.set()
        self.store.wait(WAIT)
        super().set(pairs)
        self.stored.set()
        self.finish.wait(WAIT)

    def delete(self, keys: Any) -> None:
        super().delete(keys)
        self.forgot.set()

    def clear(self, namespaces: Any = None) -> None:
        super().clear(namespaces)
        self.forgot.set()

    async def aclear(self, namespaces: Any = None) -> None:
        self.clear(namespaces)


FORGETTING = ["invalidate", "ainvalidate", "cache_clear", "acache_clear"]


def late_reader(cache: Any, name: str) -> tuple[Any, threading.Thread]:
    """A function computing "old" then "new" over ``cache``, and a thread for its first call
    (the one whose write ``cache`` holds)."""
    computed: list[str] = []

    @cached(name, cache=cache, key_id=name.replace(".", "_"))
    def read(x: int) -> str:
        computed.append("old" if not computed else "new")
        return computed[-1]

    return read, threading.Thread(target=read, args=(1,))


def forgetter_of(read: Any, how: str) -> Callable[[], None]:
    """The invalidation ``how`` names, as a call for a thread."""
    forgets: dict[str, Callable[[], None]] = {
        "invalidate": lambda: read.invalidate(1),
        "ainvalidate": lambda: asyncio.run(read.ainvalidate(1)),
        "cache_clear": read.cache_clear,
        "acache_clear": lambda: asyncio.run(read.acache_clear()),
    }
    return forgets[how]


def start_noting_return(call: Callable[[], Any]) -> tuple[threading.Thread, threading.Event]:
    """``call`` started on a thread, and an event set once it returned."""
    returned = threading.Event()

    def run() -> None:
        call()
        returned.set()

    thread = threading.Thread(target=run)
    thread.start()
    return thread, returned


def read_after_late_write(
    cache: StoreHeld, read: Any, returned: threading.Event, *threads: threading.Thread
) -> Any:
    """If the call under test returned (``returned``) before the held write landed: let it
    land and read as a caller after that call would (else ``None``); then let every thread
    finish."""
    seen = None
    if returned.wait(0.3):
        cache.store.set()  # the older write lands after the call under test
        assert cache.stored.wait(WAIT)
        seen = read(1)  # a call that starts after it returned
    cache.store.set()
    cache.finish.set()
    for thread in threads:
        thread.join(WAIT)
    return seen


@pytest.mark.parametrize("how", FORGETTING)
def test_a_write_landing_after_an_invalidation_is_never_served_once_it_returns(how: str) -> None:
    """A computation's write can reach the cache after ``invalidate`` (or ``cache_clear``)
    voided it and deleted the entry: the computation forgets it again on its way out, and the
    invalidation does not return before it has, so no caller after it is served that value."""
    cache = StoreHeld()
    read, first = late_reader(cache, "late.write")
    forgets = forgetter_of(read, how)
    cache.hold = True
    first.start()
    assert cache.entered.wait(WAIT)  # "old" computed, its write on the way
    forgetter, returned = start_noting_return(forgets)
    assert cache.forgot.wait(WAIT)
    # Unfixed, the invalidation returns at once; fixed, it waits for the write in progress,
    # so this wait ends by its bound and no read is made.
    seen = read_after_late_write(cache, read, returned, first, forgetter)
    assert returned.is_set()
    assert seen in (None, "new")
    assert read(1) == "new"


class TombstoneLost(StoreHeld):
    """A held cache whose tombstone writes fail: the computation cannot forget its late write."""

    def set(self, pairs: Any) -> None:
        if any(value == TOMBSTONE for value, _ in pairs.values()):
            raise ConnectionError("the tombstone write failed")
        super().set(pairs)


@pytest.mark.parametrize("how", FORGETTING)
def test_a_late_write_whose_forgetting_failed_is_deleted_again_by_the_invalidation(
    how: str,
) -> None:
    """The overtaken computation forgets its late write with a tombstone; behind a fail-open
    stack a failed one is dropped: the invalidation deletes again once the write landed."""
    cache = TombstoneLost()
    read, first = late_reader(observe(cache, registry=CollectorRegistry()), "late.lost")
    cache.hold = True
    first.start()
    assert cache.entered.wait(WAIT)  # "old" computed, its write on the way
    forgetter = threading.Thread(target=forgetter_of(read, how))
    forgetter.start()
    assert cache.forgot.wait(WAIT)
    cache.store.set()  # "old" lands after the delete; its tombstone will fail
    assert cache.stored.wait(WAIT)
    cache.finish.set()
    first.join(WAIT)
    forgetter.join(WAIT)
    assert not forgetter.is_alive()
    assert read(1) == "new"


@pytest.mark.parametrize("how", ["refresh", "arefresh"])
def test_an_older_write_landing_after_a_refresh_never_replaces_its_value(how: str) -> None:
    """A computation that began before ``refresh`` may have its write on the way when the
    refresh stores its newer value: the refresh waits for it (and for its forgetting it), so
    once the refresh returns its value is what callers get, not the older one, nor a miss."""
    cache = StoreHeld()
    computed: list[str] = []

    @cached("late.refresh", cache=cache, key_id="late_refresh")
    def read(x: int) -> str:
        computed.append(["old", "new"][len(computed)] if len(computed) < 2 else "newer")
        return computed[-1]

    refreshes: dict[str, Callable[[], Any]] = {
        "refresh": lambda: read.refresh(1),
        "arefresh": lambda: asyncio.run(read.arefresh(1)),
    }
    cache.hold = True
    first = threading.Thread(target=read, args=(1,))
    first.start()
    assert cache.entered.wait(WAIT)  # "old" computed, its write on the way
    refresher, returned = start_noting_return(refreshes[how])
    # Unfixed, the refresh stores "new" and returns at once; fixed, it waits for the older
    # write in progress, so this wait ends by its bound and no read is made.
    seen = read_after_late_write(cache, read, returned, first, refresher)
    assert returned.is_set()
    assert seen in (None, "new")
    assert read(1) == "new"  # the refresh's value stays, not forgotten with the older one


class DeleteHeld(InMemoryCache[Any]):
    """An in-memory cache whose next ``delete`` waits until released before it deletes."""

    def __init__(self) -> None:
        super().__init__()
        self.hold = False
        self.entered = threading.Event()
        self.release = threading.Event()

    def delete(self, keys: Any) -> None:
        if self.hold:
            self.hold = False
            self.entered.set()
            self.release.wait(WAIT)
        super().delete(keys)


def test_a_refresh_voided_by_an_invalidation_leaves_no_older_value_served() -> None:
    """An invalidation that begins while a refresh computes voids it: the refresh stores
    nothing, but it must not leave the entry from before it to be served until that
    invalidation's delete lands either; once the refresh returns, that value is gone."""
    cache = DeleteHeld()
    computing = threading.Event()
    voided = threading.Event()
    computed: list[str] = []

    @cached("voided.refresh", cache=cache, key_id="voided_refresh")
    def read(x: int) -> str:
        computed.append(["old", "refreshed"][len(computed)] if len(computed) < 2 else "new")
        if computed[-1] == "refreshed":
            computing.set()
            voided.wait(WAIT)
        return computed[-1]

    assert read(1) == "old"
    refresher = threading.Thread(target=read.refresh, args=(1,))
    refresher.start()
    assert computing.wait(WAIT)
    cache.hold = True
    invalidator = threading.Thread(target=read.invalidate, args=(1,))
    invalidator.start()
    assert cache.entered.wait(WAIT)  # the refresh is voided; the delete has not landed
    voided.set()
    refresher.join(WAIT)
    seen = read(1)  # a call that starts after the refresh returned
    cache.release.set()
    invalidator.join(WAIT)
    assert seen == "new"


def test_a_refresh_overtaken_by_a_later_refresh_returns_once_that_one_stored() -> None:
    """A refresh voided by a later refresh stores nothing: it returns only once the later one
    stored its value, else a caller after it is served the entry from before both."""
    cache = StoreHeld()
    first_computing, first_go = threading.Event(), threading.Event()
    computed: list[str] = []

    @cached("later.refresh", cache=cache, key_id="later_refresh")
    def read(x: int) -> str:
        computed.append(["old", "first", "second"][len(computed)] if len(computed) < 3 else "new")
        if computed[-1] == "first":
            first_computing.set()
            first_go.wait(WAIT)
        return computed[-1]

    assert read(1) == "old"
    returned = threading.Event()

    def first_refresh() -> None:
        read.refresh(1)
        returned.set()

    first = threading.Thread(target=first_refresh)
    first.start()
    assert first_computing.wait(WAIT)
    cache.hold = True
    second = threading.Thread(target=read.refresh, args=(1,))
    second.start()
    assert cache.entered.wait(WAIT)  # "second" computed (the first voided), its write held
    first_go.set()
    # Unfixed, the first refresh returns at once; fixed, it waits for the second's write, so
    # this wait ends by its bound and the check below is skipped.
    seen = read(1) if returned.wait(0.3) else None
    cache.store.set()
    cache.finish.set()
    first.join(WAIT)
    second.join(WAIT)
    assert returned.is_set()
    assert seen in (None, "second")
    assert read(1) == "second"


def test_bound_method_controls(default_cache: HookedCache) -> None:
    acme = Service("acme")
    acme.method(1)
    acme.method.invalidate(1)
    acme.method(1)
    assert acme.method.refresh(1) == "acme:1"
    assert acme.calls == [1, 1, 1]
    acme.method.cache_clear()
    acme.method(1)
    assert acme.calls == [1, 1, 1, 1]


# -- single-flight ----------------------------------------------------------------------


def test_threads_share_one_execution(cache: HookedCache) -> None:
    calls: list[int] = []

    @cached(cache=cache, key_id="t")  # captures unencodable test fixtures
    def slow(x: int) -> int:
        calls.append(x)
        cache.wait_for_waiters(49)  # every other thread is now waiting on this call
        return x * 2

    results: list[int] = []
    barrier = threading.Barrier(50)

    def worker() -> None:
        barrier.wait()
        results.append(slow(21))

    threads = [threading.Thread(target=worker) for _ in range(50)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(WAIT)
    assert calls == [21]
    assert results == [42] * 50
    assert cache.coalesced == 49
    assert slow(21) == 42 and calls == [21]


def test_threads_all_see_the_leaders_exception(cache: HookedCache) -> None:
    calls: list[int] = []

    @cached(cache=cache, key_id="t")  # captures unencodable test fixtures
    def fails(x: int) -> int:
        calls.append(x)
        cache.wait_for_waiters(49)
        raise ValueError("shared failure")

    errors: list[BaseException] = []
    barrier = threading.Barrier(50)

    def worker() -> None:
        barrier.wait()
        try:
            fails(1)
        except ValueError as exc:
            errors.append(exc)

    threads = [threading.Thread(target=worker) for _ in range(50)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(WAIT)
    assert calls == [1]
    assert len(errors) == 50 and all(str(e) == "shared failure" for e in errors)
    with pytest.raises(ValueError):
        fails(1)
    assert calls == [1, 1]  # nothing was cached


async def test_coroutines_share_one_execution(cache: HookedCache) -> None:
    calls: list[int] = []

    @cached(cache=cache, key_id="t")  # captures unencodable test fixtures
    async def slow(x: int) -> int:
        calls.append(x)
        await cache.awaiting(199)
        return x + 1

    results = await asyncio.gather(*(slow(1) for _ in range(200)))
    assert calls == [1]
    assert results == [2] * 200
    assert await slow(1) == 2 and calls == [1]


def test_threads_waiting_on_one_computation_get_their_own_copies(cache: HookedCache) -> None:
    """A hit is a decoded copy: a caller that waited for the leader's computation must not
    share its mutable result with the leader and the other waiters either."""

    @cached(cache=cache, key_id="t")  # captures unencodable test fixtures
    def profile(uid: int) -> dict[str, list[int]]:
        cache.wait_for_waiters(3)
        return {"seen": [uid]}

    results: list[dict[str, list[int]]] = []
    barrier = threading.Barrier(4)

    def worker(index: int) -> None:
        barrier.wait()
        mine = profile(7)
        mine["seen"].append(index)  # a caller changing what it was given
        results.append(mine)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(WAIT)
    assert cache.coalesced == 3
    assert sorted(r["seen"][1] for r in results) == [0, 1, 2, 3]
    assert all(len(r["seen"]) == 2 for r in results)  # nobody saw another's change
    assert profile(7) == {"seen": [7]}


async def test_coroutines_waiting_on_one_computation_get_their_own_copies(
    cache: HookedCache,
) -> None:
    @cached(cache=cache, key_id="t")  # captures unencodable test fixtures
    async def profile(uid: int) -> dict[str, list[int]]:
        await cache.awaiting(3)
        return {"seen": [uid]}

    results = await asyncio.gather(*(profile(7) for _ in range(4)))
    for i, mine in enumerate(results):
        mine["seen"].append(i)
    assert [r["seen"] for r in results] == [[7, 0], [7, 1], [7, 2], [7, 3]]
    assert await profile(7) == {"seen": [7]}


async def test_coroutines_all_see_the_leaders_exception(cache: HookedCache) -> None:
    calls: list[int] = []

    @cached(cache=cache, key_id="t")  # captures unencodable test fixtures
    async def fails(x: int) -> int:
        calls.append(x)
        await cache.awaiting(199)
        raise KeyError("shared")

    results = await asyncio.gather(*(fails(1) for _ in range(200)), return_exceptions=True)
    assert calls == [1]
    assert all(isinstance(r, KeyError) for r in results)
    with pytest.raises(KeyError):
        await fails(1)
    assert calls == [1, 1]


async def test_cancelled_leader_hands_over_to_a_waiter(cache: HookedCache) -> None:
    calls: list[str] = []
    release = asyncio.Event()

    @cached(cache=cache, key_id="t")  # captures unencodable test fixtures
    async def compute(x: int) -> int:
        calls.append("run")
        if len(calls) == 1:
            await asyncio.Event().wait()  # the first leader never finishes on its own
        await release.wait()
        return x

    leader = asyncio.create_task(compute(7))
    await asyncio.sleep(0)
    waiters = [asyncio.create_task(compute(7)) for _ in range(5)]
    await cache.awaiting(5)
    leader.cancel()
    release.set()
    assert await asyncio.wait_for(asyncio.gather(*waiters), WAIT) == [7] * 5
    with pytest.raises(asyncio.CancelledError):
        await leader
    assert calls == ["run", "run"]


async def test_cancelled_waiter_leaves_the_leader_alone(cache: HookedCache) -> None:
    release = asyncio.Event()

    @cached(cache=cache, key_id="t")  # captures unencodable test fixtures
    async def compute(x: int) -> int:
        await release.wait()
        return x

    leader = asyncio.create_task(compute(1))
    await asyncio.sleep(0)
    waiter = asyncio.create_task(compute(1))
    await cache.awaiting(1)
    waiter.cancel()
    release.set()
    assert await leader == 1
    with pytest.raises(asyncio.CancelledError):
        await waiter


@pytest.mark.parametrize("lock", [False, True])
def test_a_call_reentering_its_own_key_computes_instead_of_waiting_for_itself(
    cache: HookedCache, lock: bool
) -> None:
    """The leader of a key calling the function again with that key (recursion whose
    difference is an ignored argument) waited for its own flight, or its own lease: for ever."""

    @cached(cache=cache, ignore=("depth",), lock=lock)
    def total(x: int, depth: int = 0) -> int:
        return total(x, depth=1) + 1 if depth == 0 else x

    results: list[int] = []
    caller = threading.Thread(target=lambda: results.append(total(1)), daemon=True)
    caller.start()
    caller.join(WAIT)
    assert results == [2]  # what the function returns uncached, and what it stores last
    assert total(1) == 2


@pytest.mark.parametrize("lock", [False, True])
async def test_a_coroutine_reentering_its_own_key_computes_instead_of_waiting_for_itself(
    cache: HookedCache, lock: bool
) -> None:
    @cached(cache=cache, ignore=("depth",), lock=lock)
    async def total(x: int, depth: int = 0) -> int:
        return await total(x, depth=1) + 1 if depth == 0 else x

    assert await asyncio.wait_for(total(1), WAIT) == 2
    assert await total(1) == 2


def test_a_forked_child_never_waits_for_its_parents_computation() -> None:
    """A thread of the parent computes a key when the process forks: that thread does not
    exist in the child, so a caller there computes the key itself rather than waiting for
    a flight that can never land."""
    import multiprocessing
    import os

    started, release = threading.Event(), threading.Event()
    parent = os.getpid()

    @cached("fork.flight", cache=InMemoryCache(), key_id="fork.flight")
    def whose() -> int:
        if os.getpid() == parent:
            started.set()
            assert release.wait(2 * WAIT)
        return os.getpid()

    leader = threading.Thread(target=whose)
    leader.start()
    try:
        assert started.wait(WAIT)
        context = multiprocessing.get_context("fork")
        results = context.Queue()
        child = context.Process(target=lambda: results.put(whose() == os.getpid()))
        child.start()
        try:
            assert results.get(timeout=WAIT) is True  # bounded only against the hang
        finally:
            child.join(WAIT)
            if child.is_alive():
                child.kill()
                child.join()
    finally:
        release.set()
        leader.join(WAIT)


def test_a_forked_child_never_waits_for_a_lock_its_parents_threads_held() -> None:
    """Other threads of the parent are inside ``@cached``'s bookkeeping when the process forks
    (counting a computation's time, or an ``invalidate_tags``): they hold its locks, and do
    not exist in the child. The child must not inherit those locks held, or its first miss,
    ``cache_info()`` or ``invalidate_tags`` waits for ever."""
    import multiprocessing
    import os

    from toolkit import invalidate_tags
    from toolkit.decorators import tags as tags_module

    store: InMemoryCache[Any] = InMemoryCache()

    @cached("fork.locks", cache=store, tags="fork", key_id="fork.locks")
    def whose(x: int) -> int:
        return os.getpid()

    state = cast(Any, whose)._self_state
    held, release = threading.Event(), threading.Event()

    def busy() -> None:  # fault injection: a thread caught inside both critical sections
        with state.stats._lock, tags_module._WATCHED_LOCK:
            held.set()
            release.wait(2 * WAIT)

    def child() -> None:
        invalidate_tags("fork", cache=store)
        results.put((whose(1) == os.getpid(), whose.cache_info().misses))

    holder = threading.Thread(target=busy)
    holder.start()
    try:
        assert held.wait(WAIT)
        context = multiprocessing.get_context("fork")
        results = context.Queue()
        process = context.Process(target=child)
        process.start()
        try:
            assert results.get(timeout=WAIT) == (True, 1)  # bounded only against the hang
        finally:
            process.join(WAIT)
            if process.is_alive():
                process.kill()
                process.join()
    finally:
        release.set()
        holder.join(WAIT)


# -- spans ------------------------------------------------------------------------------


def test_span_per_call_with_hit_attribute(cache: HookedCache) -> None:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))

    @cached("traced", cache=cache, tracer_provider=provider)
    def f(x: int) -> int:
        return x

    f(1), f(1)
    spans = exporter.get_finished_spans()
    assert [s.name for s in spans] == ["cache.call", "cache.call"]
    assert [dict(s.attributes or {})["cache.hit"] for s in spans] == [False, True]
    assert dict(spans[0].attributes or {})["cache.namespace"] == "traced"
    provider.shutdown()


# -- every backend and stack ------------------------------------------------------------


async def test_decorator_over_every_backend(subject: Subject) -> None:
    calls: list[Any] = []

    @cached("conformance-decorator", ttl=60, cache=subject.cache)
    def sync_f(x: int, tags: list[str]) -> dict[str, Any]:
        calls.append(("sync", x))
        return {"x": x, "tags": tags}

    @cached("conformance-decorator-async", cache=subject.cache)
    async def async_f(x: int) -> list[int]:
        calls.append(("async", x))
        return [x, x]

    assert sync_f(1, ["a"]) == sync_f(1, ["a"]) == {"x": 1, "tags": ["a"]}
    assert sync_f(2, ["a"]) == {"x": 2, "tags": ["a"]}
    assert await async_f(3) == await async_f(3) == [3, 3]
    sync_f.invalidate(1, ["a"])
    sync_f(1, ["a"])
    await async_f.acache_clear()
    await async_f(3)
    assert calls == [("sync", 1), ("sync", 2), ("async", 3), ("sync", 1), ("async", 3)]


class BrokenHooks(InMemoryCache[Any]):
    """Hooks that raise: instrumentation must never break the decorated call."""

    def record_load(self, namespace: tuple[str, ...], seconds: float, *, ok: bool) -> None:
        raise RuntimeError("metrics are down")

    def record_coalesced(self, namespace: tuple[str, ...]) -> None:
        raise RuntimeError("metrics are down")


def test_failing_hooks_never_reach_the_caller() -> None:
    @cached(cache=BrokenHooks())
    def f(x: int) -> int:
        return x + 1

    assert f(1) == f(1) == 2


def test_key_function_must_return_an_encodable_value(cache: HookedCache) -> None:
    @cached(cache=cache, key=lambda x: object())
    def f(x: int) -> int:
        return x

    with pytest.raises(TypeError, match="key= function"):
        f(1)


def test_callable_objects_need_an_explicit_namespace(cache: HookedCache) -> None:
    class Scorer:
        def __call__(self, text: str) -> int:
            return len(text)

    with pytest.raises(TypeError, match="ns="):
        cached(cache=cache)(Scorer())
    scored = cached("scorer", cache=cache)(Scorer())
    assert scored("abc") == scored("abc") == 3


def test_inside_observe_spans_nest_and_loads_are_measured() -> None:
    from prometheus_client import CollectorRegistry

    from toolkit import observe

    registry = CollectorRegistry()
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    stack = observe(InMemoryCache(), registry=registry, tracer_provider=provider)

    @cached("observed", cache=stack, tracer_provider=provider)
    def f(x: int) -> int:
        if x < 0:
            raise ValueError(x)
        return x

    f(1), f(1)
    with pytest.raises(ValueError):
        f(-1)
    spans = exporter.get_finished_spans()
    calls = {s.context.span_id for s in spans if s.name == "cache.call"}
    inner = [s for s in spans if s.name != "cache.call"]
    assert len(calls) == 3
    assert {s.name for s in inner} >= {"cache.get", "cache.set"}
    assert all(s.parent is not None and s.parent.span_id in calls for s in inner)

    def loads(result: str) -> float | None:
        return registry.get_sample_value(
            "cache_load_duration_seconds_count", {"cache": "observed", "result": result}
        )

    assert loads("success") == 1
    assert loads("error") == 1
    provider.shutdown()


# -- functions never share entries by accident (issue 10 items 1, 2, 3, 11) ------------


def test_functions_sharing_a_namespace_keep_their_own_results(cache: HookedCache) -> None:
    @cached("llm", cache=cache)
    def summarize(text: str) -> str:
        return f"summary of {text}"

    @cached("llm", cache=cache)
    def translate(text: str) -> str:
        return f"translation of {text}"

    assert summarize("hello") == "summary of hello"
    assert translate("hello") == "translation of hello"
    assert summarize("hello") == "summary of hello"


def test_key_id_shares_entries_on_request(cache: HookedCache) -> None:
    calls: list[str] = []

    @cached("llm", cache=cache, key_id="summary-v1")
    def summarize(text: str) -> str:
        calls.append(text)
        return f"summary of {text}"

    @cached("llm", cache=cache, key_id="summary-v1")
    def summarize_again(text: str) -> str:
        calls.append(text)
        return f"summary of {text}"

    assert summarize("hello") == summarize_again("hello") == "summary of hello"
    assert calls == ["hello"]


def test_partials_of_one_function_keep_their_own_results(cache: HookedCache) -> None:
    def scale(factor: int, x: int) -> int:
        return factor * x

    double = cached("scale", cache=cache)(functools.partial(scale, 2))
    triple = cached("scale", cache=cache)(functools.partial(scale, 3))
    assert double(5) == 10
    assert triple(5) == 15


def test_closures_from_one_factory_keep_their_own_results(cache: HookedCache) -> None:
    def make(factor: int) -> Any:
        @cached("scale", cache=cache)
        def scaled(x: int) -> int:
            return factor * x

        return scaled

    assert make(2)(5) == 10
    assert make(3)(5) == 15
    with pytest.raises(TypeError, match=r"captures 'client'.*key_id="):
        client = object()

        @cached("scale", cache=cache)
        def uses_client(x: int) -> object:
            return client


def test_local_functions_of_one_name_defined_apart_keep_their_own_results(
    cache: HookedCache,
) -> None:
    """Two defs of one name in one function (one per branch) had one qualified name and no
    captured values: the second was served the first one's results."""

    def make(double: bool) -> Any:
        if double:

            @cached("scale", cache=cache)
            def scaled(x: int) -> int:
                return 2 * x

        else:

            @cached("scale", cache=cache)
            def scaled(x: int) -> int:
                return 3 * x

        return scaled

    assert make(True)(5) == 10
    assert make(False)(5) == 15
    assert make(True).cache_key(5) == make(True).cache_key(5)  # one def: one key, as before


def test_lambdas_are_refused_without_a_key_id(cache: HookedCache) -> None:
    with pytest.raises(TypeError, match=r"lambda.*key_id="):
        cached("l", cache=cache)(lambda x: 2 * x)
    doubled = cached("l", cache=cache, key_id="double")(lambda x: 2 * x)
    tripled = cached("l", cache=cache, key_id="triple")(lambda x: 3 * x)
    assert (doubled(5), tripled(5)) == (10, 15)


class Scaler:
    def __init__(self, factor: int) -> None:
        self.factor = factor
        self.calls = 0

    def scale(self, x: int) -> int:
        self.calls += 1
        return self.factor * x

    def __call__(self, x: int) -> int:
        return self.factor * x

    def __cache_key__(self) -> int:
        return self.factor


def test_bound_methods_key_on_their_instance(cache: HookedCache) -> None:
    two, three = Scaler(2), Scaler(3)
    double = cached("s", cache=cache)(two.scale)
    triple = cached("s", cache=cache)(three.scale)
    assert (double(5), triple(5), double(5)) == (10, 15, 10)
    assert two.calls == 1
    assert double.cache_key(5) == double.cache_key(5) != triple.cache_key(5)
    double.invalidate(5)
    assert double(5) == 10
    assert two.calls == 2


def test_a_bound_method_with_a_key_function_is_controlled_by_the_key_it_is_called_by(
    cache: HookedCache,
) -> None:
    """``key=`` takes ``self`` first for a bound method, in calls and in the controls alike:
    ``invalidate`` and ``refresh`` reach the entry the calls read."""
    two = Scaler(2)
    double = cached("s.key", cache=cache, key=lambda self, x: x)(two.scale)
    assert double(5) == 10 and two.calls == 1
    double.invalidate(5)
    assert double(5) == 10 and two.calls == 2
    two.factor = 4  # the stored result is stale now: refresh recomputes the entry calls read
    assert double.refresh(5) == 20
    assert double(5) == 20 and two.calls == 3


def test_builtins_are_called_without_a_receiver(cache: HookedCache) -> None:
    # A builtin has a __self__ (its module); like wrapt, the call passes no instance.
    absolute: Any = cached("abs", cache=cache)(abs)  # abs is generic: typed loosely here
    assert (absolute(-3), absolute(-3)) == (3, 3)
    assert absolute.cache_info().hits == 1
    assert absolute.cache_key(-3) == derive_key(abs, (-3,), ns=("abs",))


def test_callable_objects_key_on_their_state(cache: HookedCache) -> None:
    assert cached("s", cache=cache)(Scaler(2))(5) == 10
    assert cached("s", cache=cache)(Scaler(3))(5) == 15


def test_nested_models_keep_their_class_end_to_end(cache: HookedCache) -> None:
    @cached("pets", cache=cache)
    def sound(owner: Owner) -> str:
        return "meow" if isinstance(owner.pet, Cat) else "woof"

    assert sound(Owner(pet=Cat(name="x"))) == "meow"
    assert sound(Owner(pet=Dog(name="x"))) == "woof"


def test_objects_of_classes_made_inside_a_function_are_refused_as_keys(
    cache: HookedCache,
) -> None:
    def make(factor: int) -> type:
        @dataclasses.dataclass(frozen=True)
        class Setting:
            n: int

            def scaled(self) -> int:
                return self.n * factor

        return Setting

    @cached("settings", cache=cache)
    def scaled(setting: Any) -> int:
        return int(setting.scaled())

    # Both classes are named make.<locals>.Setting: their objects once shared keys (10, 10).
    for made in (make(2)(5), make(3)(5), make(2)):
        with pytest.raises(TypeError, match=r"defined inside a function.*module level"):
            scaled(made)


def test_integers_of_any_size_are_keys(cache: HookedCache) -> None:
    @cached("big", cache=cache)
    def mod7(x: int) -> int:
        return x % 7

    huge = 10**5000
    assert mod7(huge) == huge % 7
    assert mod7(huge + 1) == (huge + 1) % 7


class AsyncScaler:
    """A callable object whose ``__call__`` is a coroutine function."""

    def __init__(self, factor: int) -> None:
        self.factor = factor
        self.calls = 0

    async def __call__(self, x: int) -> int:
        self.calls += 1
        return self.factor * x

    def __cache_key__(self) -> int:
        return self.factor


async def test_callable_objects_with_an_async_call_cache_their_awaited_result(
    cache: HookedCache,
) -> None:
    """An object whose __call__ is async was wrapped as a sync function: the coroutine itself
    went to the cache (refused by its serializer: never cached), or was served once awaited."""
    two = AsyncScaler(2)
    double = cached("s", cache=cache)(two)
    halves = cached("s", cache=cache)(functools.partial(AsyncScaler(3)))
    assert (await double(5), await double(5)) == (10, 10)
    assert two.calls == 1 and double.cache_info().hits == 1
    assert (await halves(5), await halves(5)) == (15, 15)
    assert await double.arefresh(5) == 10 and two.calls == 2


def test_a_result_used_up_by_reading_it_is_refused_not_cached(cache: HookedCache) -> None:
    """A generator or iterator result went to the cache: one object for every caller to use
    up (a cache storing objects served it empty), or refused by the serializer with a log."""
    calls: list[int] = []

    @cached("gen", cache=cache)
    def evens(n: int) -> Iterator[int]:
        calls.append(n)
        return (i for i in range(0, n, 2))

    @cached("iter", cache=cache)
    def letters(text: str) -> Iterator[str]:
        return iter(text)

    for _ in range(2):
        with pytest.raises(TypeError, match=r"evens returned a generator.*list or a tuple"):
            evens(6)
    assert calls == [6, 6]
    with pytest.raises(TypeError, match=r"letters returned a str_ascii_iterator"):
        letters("ab")


async def test_a_sync_wrapper_hiding_a_coroutine_function_is_refused(cache: HookedCache) -> None:
    """A functools.wraps wrapper that returns the coroutine of an async def looks sync: the
    coroutine itself went to the cache instead of its result."""

    async def fetch(x: int) -> int:
        return x

    @functools.wraps(fetch)
    def logged(x: int) -> Any:
        return fetch(x)

    hidden = cached("hidden", cache=cache)(logged)
    with pytest.raises(TypeError, match=r"fetch returned a coroutine.*async def"):
        await hidden(1)  # the refused coroutine was closed: no 'never awaited' warning


def _define(source: str, cache: Any, ns: str, **options: Any) -> Any:
    """Run ``source`` as the module ``notebook`` (as a notebook cell runs) and cache its ``f``."""
    scope: dict[str, Any] = {"__name__": "notebook"}
    exec(compile(source, "<cell>", "exec"), scope)
    return cached(ns, cache=cache, **options)(scope["f"])


def test_other_code_under_a_cached_name_is_warned_about(cache: HookedCache) -> None:
    ns = f"cell-{uuid.uuid4()}"  # the warning remembers names for the life of the process
    first = _define("def f(x):\n    return x + 1\n", cache, ns)
    assert first(1) == 2
    # The same cell run again, even moved down a few lines: the same code, no warning.
    _define("\n\n\ndef f(x):\n    return x + 1\n", cache, ns)
    with pytest.warns(RedefinitionWarning, match=r"notebook\.f .*other code.*version="):
        edited = _define("def f(x):\n    return x + 2\n", cache, ns)
    assert edited(1) == 2  # what the warning is about: the old code's result
    kept_apart = _define("def f(x):\n    return x + 3\n", cache, ns, version=2)
    assert kept_apart(1) == 4
    named = _define("def f(x):\n    return x + 4\n", cache, ns, key_id="shared")  # on purpose
    assert named(1) == 5


def test_functions_made_by_a_factory_are_no_redefinition(cache: HookedCache) -> None:
    def make(factor: int) -> Any:
        @cached("made", cache=cache)
        def scaled(x: int) -> int:
            return x * factor

        return scaled

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert [make(n)(2) for n in (1, 2, 3)] == [2, 4, 6]


def _close_by_hand_mid_call(call: Callable[[], Any], started: Callable[[], bool]) -> Any:
    """Start ``call()`` on a loop of its own, run it until ``started()``, close the loop by
    hand (``loop.close()``, no cancelling: its task is left pending) and return a weak
    reference to the loop."""
    loop = asyncio.new_event_loop()
    task = loop.create_task(call())
    for _ in range(10_000):
        if started():
            break
        loop.run_until_complete(asyncio.sleep(0))
    assert started()
    assert not task.done()
    loop.close()
    return weakref.ref(loop)


def test_a_flight_led_in_a_loop_closed_by_hand_is_not_kept() -> None:
    """A flight held its leading task strongly: a computation left in a loop closed by hand
    kept the flight in the function's table, its task, and so the loop, for the life of the
    function. Held weakly, the task is collected, which lands the flight as abandoned."""
    entered = threading.Event()

    @cached("flight.closed.loop", cache=InMemoryCache(), key_id="stuck")
    async def stuck(x: int) -> int:
        entered.set()
        await asyncio.Event().wait()
        return x

    closed = _close_by_hand_mid_call(lambda: stuck(1), entered.is_set)
    gc.collect()
    gc.collect()  # the loop goes once the flight, landed as its task was collected, has
    assert closed() is None


class _WriteNeverAnswers(InMemoryCache[Any]):
    """An async write that never answers: its future is kept here, as a backend keeps its
    calls' futures, so the task waiting on it stays reachable after its loop is closed."""

    def __init__(self) -> None:
        super().__init__()
        self.writes: list[asyncio.Event] = []

    async def aset(self, pairs: Any) -> None:
        answer = asyncio.Event()
        self.writes.append(answer)
        await answer.wait()


@pytest.mark.parametrize("how", ["ainvalidate", "invalidate from another thread"])
def test_an_invalidation_does_not_wait_for_a_write_left_in_a_closed_loop(
    how: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An invalidation waits for the writes it overtook to end (``settle``): one left in a
    loop closed by hand never ends, so the invalidation waited its whole bound (10 s, made
    far longer here so that a wait cannot pass for none). A load whose loop is closed now
    counts as abandoned."""
    monkeypatch.setattr(flight_module, "SETTLE_SECONDS", 3_600.0)
    cache = _WriteNeverAnswers()

    @cached("flight.closed.write", cache=cache)
    async def compute(x: int) -> int:
        return x

    _close_by_hand_mid_call(lambda: compute(1), lambda: bool(cache.writes))
    done = threading.Event()

    def invalidate() -> None:
        if how == "ainvalidate":
            asyncio.run(compute.ainvalidate(1))
        else:
            compute.invalidate(1)
        done.set()

    thread = threading.Thread(target=invalidate, daemon=True)  # the old wait outlives the test
    thread.start()
    assert done.wait(WAIT)  # a hang guard only: fixed, it does not wait at all
