"""Single-flight: concurrent callers of one key wait for one computation.

A flight is the one in-progress computation of a key; its leader publishes the outcome
(value or exception) and the waiters take it. A leader that leaves without an outcome
(cancelled, interrupted) marks the flight abandoned, so a waiter takes over. Errors are
handed to the waiters of that flight only, never stored.
"""

from __future__ import annotations

import asyncio
import threading
from typing import Any

from toolkit._types import FullKey
from toolkit.decorators._entry import MISSING


class Flight:
    """One in-progress computation that concurrent callers of the same key wait on."""

    __slots__ = ("abandoned", "done", "error", "value")

    def __init__(self, done: threading.Event | asyncio.Event) -> None:
        self.done = done
        self.value: Any = MISSING
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


class Flights:
    """The flights in progress for one decorated function: threads, and each event loop."""

    __slots__ = ("aflights", "flights", "lock")

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.flights: dict[FullKey, Flight] = {}
        self.aflights: dict[tuple[FullKey, asyncio.AbstractEventLoop], Flight] = {}

    def join(self, key: FullKey) -> tuple[Flight, bool]:
        """The flight of ``key`` for a thread, and whether the caller leads it."""
        with self.lock:
            flight = self.flights.get(key)
            if flight is not None:
                return flight, False
            flight = self.flights[key] = Flight(threading.Event())
            return flight, True

    def land(self, key: FullKey, flight: Flight, value: Any, error: BaseException | None) -> None:
        """End a thread flight with the leader's outcome."""
        with self.lock:
            self.flights.pop(key, None)
        flight.finish(value, error)

    def ajoin(self, key: FullKey) -> tuple[Flight, bool]:
        """The flight of ``key`` on the running loop, and whether the caller leads it."""
        slot = (key, asyncio.get_running_loop())
        flight = self.aflights.get(slot)
        if flight is not None:
            return flight, False
        flight = self.aflights[slot] = Flight(asyncio.Event())
        return flight, True

    def aland(self, key: FullKey, flight: Flight, value: Any, error: BaseException | None) -> None:
        """End a flight on the running loop with the leader's outcome."""
        slot = (key, asyncio.get_running_loop())
        if self.aflights.get(slot) is flight:
            del self.aflights[slot]
        flight.finish(value, error)
