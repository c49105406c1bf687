"""Single-flight: concurrent callers of one key wait for one computation.

A flight is the one in-progress computation of a key; its leader publishes the outcome
(value or exception) and the waiters take it. A leader that leaves without an outcome
(cancelled, interrupted) marks the flight abandoned, so a waiter takes over. Errors are
handed to the waiters of that flight only, never stored.

An invalidation in this process voids what began before it: the loads in progress of its
keys store nothing (``Load``), and a caller that arrives after it starts a flight of its
own instead of joining one that may carry the forgotten result; so does one that arrives
after an invalidation of its tags (``tags.invalidate_tags``). A forced refresh
(``f.refresh``) that computed its value supersedes what began before it the same way: an
older computation landing after it must not overwrite its newer value.

A leader that calls the function again with its own key (the thread, or the task, that
leads the flight) cannot wait for itself: that call leads a flight of its own, unshared.

A loop closed by hand (``loop.close()`` with calls in flight) never runs its tasks again:
a flight keeps its leading task only weakly (collected, it lands as abandoned), and a load
whose write was left in a closed loop is not waited for.
"""

from __future__ import annotations

import asyncio
import threading
import time
import weakref
from collections.abc import Callable
from typing import Any

from toolkit._fork import start_afresh_in_children
from toolkit._loops import is_gone
from toolkit._types import FullKey
from toolkit.decorators._entry import MISSING


class Flight:
    """One in-progress computation that concurrent callers of the same key wait on."""

    __slots__ = (
        "abandoned",
        "done",
        "error",
        "leader",
        "nested",
        "slot",
        "table",
        "tags",
        "value",
        "versions",
        "waiters",
    )

    def __init__(
        self,
        done: threading.Event | asyncio.Event,
        table: dict[Any, Flight],
        slot: object,
        tags: tuple[FullKey, ...] = (),
        leader: object = None,
        *,
        nested: bool = False,
    ) -> None:
        self.done = done
        self.table = table
        self.slot = slot
        """Where the flight is found while it runs: ``table[slot]``, a thread's or a loop's."""
        self.tags = tags
        """The version keys of the call's tags: invalidating one detaches the flight."""
        self.leader = leader
        """Who leads it: a thread's ident, or a weak reference to a task (``None`` if
        unknown): held strongly, a task left in a loop closed by hand was never collected,
        so never landed the flight nor ended its load."""
        self.nested = nested
        """Led by a call inside the computation of its own key: in no table, and it takes no
        lease (the outer call holds it)."""
        self.value: Any = MISSING
        self.waiters = 0
        """Callers that joined it to wait (counted under ``Flights.lock``)."""
        self.versions: list[Any] | None = None
        """The tag versions its value was computed under (``None``: no tags, or unknown)."""
        self.error: BaseException | None = None
        self.abandoned = False
        """The leader left without an outcome (cancelled, interrupted): a waiter takes over."""

    def finish(self, value: Any, error: BaseException | None) -> None:
        """Publish the leader's outcome and wake the waiters."""
        if value is not MISSING:
            self.value = value
        elif isinstance(error, Exception):
            self.error = error
        else:
            self.abandoned = True
        self.done.set()

    def outcome(self) -> Any:
        """The leader's value, or its exception raised again."""
        if self.error is not None:
            raise self.error
        return self.value


class Load:
    """One computation of a key that will store its result, unless an invalidation voids it."""

    __slots__ = (
        "_voided",
        "ended",
        "key",
        "loop",
        "order",
        "storing",
        "superseded_by",
        "thread",
    )

    def __init__(self, key: FullKey, order: int = 0) -> None:
        self.key = key
        self.order = order
        """When it began, among the function's loads: a smaller order began earlier."""
        self._voided = False
        self.superseded_by: Load | None = None
        """The forced refresh that began later and voided it, whose value it leaves alone."""
        self.storing = False
        """Its write is on its way: an invalidation may land before it, and then waits for it."""
        self.ended: threading.Event | None = None
        """Set when it ends; made (under ``Flights.lock``) only for an invalidation that waits
        for it: an Event on every miss would cost more than the rest of its bookkeeping."""
        self.thread = threading.get_ident()
        self.loop: weakref.ref[asyncio.AbstractEventLoop] | None = None
        """The loop its write runs in (set by that write, async only); weak: a loop closed
        by hand never ends the load, and must not be kept for it."""

    def left_behind(self) -> bool:
        """Whether its write was left in a loop since closed: it never ends, as if abandoned."""
        return is_gone(self.loop)

    def void(self) -> None:
        """The key was invalidated after the computation began: its result is not stored."""
        self._voided = True

    def voided(self) -> bool:
        """Whether the key was invalidated since the computation began."""
        return self._voided


SETTLE_SECONDS = 10.0
"""How long an invalidation waits at most for the writes it overtook (each bounded by its
cache) to be forgotten again."""

LOOK_EVERY = 0.05
"""How often a wait for a load looks whether its loop was closed (a close tells no one)."""


def settle(loads: list[Load]) -> None:
    """Wait until ``loads`` (voided while storing) have ended: each forgot the write it may
    have landed after the invalidation's delete. Not a load of this thread: a coroutine of its
    loop, suspended until the caller returns."""
    here = threading.get_ident()
    _settle_all([load for load in loads if load.thread != here])


async def asettle(loads: list[Load]) -> None:
    """Wait until ``loads`` have ended, without blocking the loop (their writes may be
    coroutines of this very loop)."""
    pending = [
        load
        for load in loads
        if load.ended is not None and not load.ended.is_set() and not load.left_behind()
    ]
    if pending:
        await asyncio.to_thread(_settle_all, pending)


def _settle_all(loads: list[Load]) -> None:
    until = time.monotonic() + SETTLE_SECONDS  # for them all: a cache_clear may wait on many
    for load in loads:
        ended = load.ended
        if ended is None:
            continue
        while not load.left_behind():
            remaining = until - time.monotonic()
            if remaining <= 0 or ended.wait(min(remaining, LOOK_EVERY)):
                break


class Flights:
    """The flights in progress for one decorated function: threads, and each event loop;
    and its loads in progress (flights, background refreshes, forced refreshes)."""

    __slots__ = ("__weakref__", "aflights", "begun", "flights", "loads", "lock")

    def __init__(self) -> None:
        self._reset()
        # A forked child has none of its parent's threads or loops: their flights would
        # never land (and a lock one of them held would never be released).
        start_afresh_in_children(self, Flights._reset)

    def _reset(self) -> None:
        self.lock = threading.Lock()
        self.flights: dict[FullKey, Flight] = {}
        self.aflights: dict[tuple[FullKey, asyncio.AbstractEventLoop], Flight] = {}
        self.loads: dict[FullKey, list[Load]] = {}
        self.begun = 0  # loads begun so far: the order of the next one

    def join(self, key: FullKey, tags: tuple[FullKey, ...] = ()) -> tuple[Flight, bool]:
        """The flight of ``key`` for a thread, and whether the caller leads it."""
        leader = threading.get_ident()
        with self.lock:
            flight = self.flights.get(key)
            if flight is None:
                self.flights[key] = Flight(threading.Event(), self.flights, key, tags, leader)
                return self.flights[key], True
            if flight.leader != leader:
                flight.waiters += 1
                return flight, False
        return Flight(threading.Event(), {}, key, tags, leader, nested=True), True

    def ajoin(self, key: FullKey, tags: tuple[FullKey, ...] = ()) -> tuple[Flight, bool]:
        """The flight of ``key`` on the running loop, and whether the caller leads it."""
        slot = (key, asyncio.get_running_loop())
        task = asyncio.current_task()
        leader = None if task is None else weakref.ref(task)
        with self.lock:  # another thread's invalidation may be detaching flights
            flight = self.aflights.get(slot)
            if flight is None:
                self.aflights[slot] = Flight(asyncio.Event(), self.aflights, slot, tags, leader)
                return self.aflights[slot], True
            led = flight.leader
            if task is None or not isinstance(led, weakref.ref) or led() is not task:
                flight.waiters += 1
                return flight, False
        return Flight(asyncio.Event(), {}, slot, tags, leader, nested=True), True

    def land(
        self,
        flight: Flight,
        value: Any,
        error: BaseException | None,
        share: Callable[[Any], Any] | None = None,
    ) -> None:
        """End a flight (a thread's or a loop's) with the leader's outcome; a value that
        waiters take is handed to them as ``share(value)``."""
        with self.lock:
            if flight.table.get(flight.slot) is flight:
                del flight.table[flight.slot]
            waited = flight.waiters  # final: no caller joins a flight out of its table
        if waited and error is None and share is not None:
            value = share(value)
        flight.finish(value, error)

    def begin_load(self, key: FullKey) -> Load:
        """Register a computation of ``key`` that will store its result."""
        with self.lock:
            load = Load(key, self.begun)
            self.begun += 1
            self.loads.setdefault(key, []).append(load)
        return load

    def start_store(self, load: Load) -> bool:
        """Whether ``load`` may write its result: not voided; an invalidation from now on
        waits for it to end (``settle``), as its write may land after the delete."""
        with self.lock:
            if load.voided():
                return False
            load.storing = True
            return True

    @staticmethod
    def _awaited(load: Load) -> Load:
        """``load``, with the Event its end sets (under the lock, so ``end_load`` sees it)."""
        if load.ended is None:
            load.ended = threading.Event()
        return load

    def end_load(self, load: Load) -> None:
        """The computation of ``load`` stored its result, or gave up."""
        with self.lock:
            loads = self.loads.get(load.key)
            if loads is not None and load in loads:  # not if begun before a fork
                loads.remove(load)
                if not loads:
                    del self.loads[load.key]
            ended = load.ended
        if ended is not None:
            ended.set()

    def invalidate(self, key: FullKey | None) -> list[Load]:
        """``key`` (``None``: every key) is being invalidated: void its loads in progress and
        detach its flights, so no result computed before reaches the cache or a later caller.
        The loads whose write is on its way: the invalidation ``settle``s them after its delete,
        as such a write may land after it (the load then forgets it again)."""
        with self.lock:
            storing: list[Load] = []
            for keyed in self.loads.values() if key is None else [self.loads.get(key, [])]:
                for load in keyed:
                    load.void()
                    if load.storing:
                        storing.append(self._awaited(load))
            if key is None:
                self.flights.clear()
                self.aflights.clear()
                return storing
            self.flights.pop(key, None)
            for slot in [slot for slot in self.aflights if slot[0] == key]:
                del self.aflights[slot]
            return storing

    def supersede(self, load: Load) -> list[Load]:
        """A forced refresh (``load``) computed its value: void the loads of its key that
        began before it and detach the key's flights, so no older result overwrites its
        value or reaches a later caller. (Only once it succeeded: a refresh that raises
        leaves the computations in progress to store what they find.) The older loads whose
        write is on its way: the refresh ``settle``s them before it writes, as such a write
        (and its forgetting) may land after it."""
        with self.lock:
            storing: list[Load] = []
            for other in self.loads.get(load.key, []):
                if other.order < load.order:
                    other.void()
                    other.superseded_by = self._awaited(load)  # it settles on ``load``
                    if other.storing:
                        storing.append(self._awaited(other))
            self.flights.pop(load.key, None)
            for slot in [slot for slot in self.aflights if slot[0] == load.key]:
                del self.aflights[slot]
            return storing

    def detach_tagged(self, tags: frozenset[FullKey]) -> None:
        """Tags (their version keys) were invalidated: later callers of a key whose flight
        carries one start a flight of their own (the entry it stores is not served either)."""
        with self.lock:
            tables: tuple[dict[Any, Flight], ...] = (self.flights, self.aflights)
            for table in tables:
                for flight in [flight for flight in table.values() if tags & set(flight.tags)]:
                    del table[flight.slot]
