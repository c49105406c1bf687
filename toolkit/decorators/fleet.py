"""Fleet-wide single-flight for ``@cached(lock=True)``: one computation per key per fleet.

The in-process flight leader of a missing key takes a lease on it in the cache itself
(``toolkit.lease``), so every process on every machine that shares the cache agrees on one
computing caller. While the holder computes, a renewer extends its lease; the others poll
for the value with jittered backoff. Nothing can deadlock: a holder that dies stops
renewing, its lease lapses and a waiter takes it over; a waiter past ``lock_timeout``
computes itself; a cache that cannot lease (no support, or failing behind ``observe``)
leaves the caller to compute, as in-process single-flight would. Hits never touch a lease.

Only the decisions live here, once; the sync and async callers do the I/O.
"""

from __future__ import annotations

import asyncio
import heapq
import os
import random
import threading
import time
from collections.abc import Awaitable, Callable
from typing import Literal

from toolkit._types import FullKey
from toolkit.lease import LeaseRequest, new_token

__all__ = ["DEFAULT_LEASE_TTL", "DEFAULT_LOCK_TIMEOUT", "LeaseOutcome", "LeasePolicy", "Waiting"]

DEFAULT_LEASE_TTL = 10.0
"""Seconds a lease lives unless renewed: how soon a dead holder's key is taken over."""
DEFAULT_LOCK_TIMEOUT = 60.0
"""Seconds a caller waits for another's computation before computing itself."""

_FIRST_POLL = 0.005
_MAX_POLL = 0.2

LeaseOutcome = Literal["acquired", "waited", "timeout", "taken_over", "unavailable", "unsupported"]
"""How a caller that needed a value ended up with it (the ``outcome`` label):

- ``acquired``: it took the lease and computed;
- ``waited``: another holder computed, and it read the value;
- ``timeout``: it waited ``lock_timeout`` and computed itself;
- ``taken_over``: the holder gave up or died, and it took the lease and computed;
- ``unavailable``: the cache failed to answer a lease request (served by ``observe``'s
  fail-open), so it computed without one;
- ``unsupported``: the cache cannot lease (LangGraph's own caches), so it computed
  with in-process single-flight only.
"""


class LeasePolicy:
    """The lease options of one decorated function."""

    __slots__ = ("lease_ttl", "lock_timeout", "renew_every")

    def __init__(self, lease_ttl: float, lock_timeout: float) -> None:
        self.lease_ttl = lease_ttl
        self.lock_timeout = lock_timeout
        self.renew_every = lease_ttl / 3

    def acquire(self, full_key: FullKey) -> LeaseRequest:
        """A request for a new lease on ``full_key``, with a fresh token."""
        return LeaseRequest("acquire", full_key, new_token(), self.lease_ttl)

    def renew(self, held: LeaseRequest) -> LeaseRequest:
        """The request that extends ``held``."""
        return LeaseRequest("renew", held.key, held.token, self.lease_ttl)

    @staticmethod
    def release(held: LeaseRequest) -> LeaseRequest:
        """The request that gives ``held`` back."""
        return LeaseRequest("release", held.key, held.token)

    def waiting(self) -> Waiting:
        """The schedule of one caller's wait for another's computation."""
        return Waiting(self.lock_timeout)


class Waiting:
    """When to look again, and when to stop waiting: jittered exponential backoff."""

    __slots__ = ("_delay", "deadline", "start")

    def __init__(self, timeout: float) -> None:
        self.start = time.monotonic()
        self.deadline = self.start + timeout
        self._delay = _FIRST_POLL

    def next_pause(self) -> float | None:
        """Seconds to sleep before the next look, or ``None`` once the wait is over."""
        remaining = self.deadline - time.monotonic()
        if remaining <= 0:
            return None
        pause = self._delay * (0.5 + random.random())  # jitter: waiters do not move in step
        self._delay = min(self._delay * 1.6, _MAX_POLL)
        return min(pause, remaining)

    def waited(self) -> float:
        """Seconds since the wait began."""
        return time.monotonic() - self.start


class Renewer:
    """Extends the leases of running sync computations from one daemon thread per process."""

    def __init__(self) -> None:
        self._count = 0
        self._reset()
        # A child forked while the lock was held must not inherit it held (nor the thread).
        os.register_at_fork(after_in_child=self._reset)

    def _reset(self) -> None:
        self._cond = threading.Condition()
        self._due: list[tuple[float, int, _Renewal]] = []
        self._live: set[int] = set()
        self._pid = -1

    def hold(self, renew: Callable[[], bool | None], every: float) -> Callable[[], None]:
        """Call ``renew`` every ``every`` seconds until the returned function is called."""
        with self._cond:
            if self._pid != os.getpid():  # first use, or a forked child: the thread is gone
                self._pid = os.getpid()
                self._due.clear()
                self._live.clear()
                threading.Thread(
                    target=self._run, name="toolkit-lease-renewer", daemon=True
                ).start()
            self._count += 1
            ident = self._count
            self._live.add(ident)
            heapq.heappush(self._due, (time.monotonic() + every, ident, _Renewal(renew, every)))
            self._cond.notify()

        def stop() -> None:
            with self._cond:
                self._live.discard(ident)

        return stop

    def _run(self) -> None:
        pid = os.getpid()
        while True:
            with self._cond:
                if self._pid != pid:
                    return
                while self._due and self._due[0][1] not in self._live:
                    heapq.heappop(self._due)
                if not self._due:
                    self._cond.wait()
                    continue
                when, ident, job = self._due[0]
                now = time.monotonic()
                if when > now:
                    self._cond.wait(when - now)
                    continue
                heapq.heappop(self._due)
            held = job()  # the I/O runs outside the lock
            with self._cond:
                if ident in self._live and held:
                    heapq.heappush(self._due, (time.monotonic() + job.every, ident, job))


class _Renewal:
    """One lease's renewal, and its period."""

    __slots__ = ("every", "renew")

    def __init__(self, renew: Callable[[], bool | None], every: float) -> None:
        self.renew = renew
        self.every = every

    def __call__(self) -> bool:
        """Renew once; whether to keep renewing (not once the lease is known lost)."""
        try:
            return self.renew() is not False  # None: the cache did not answer; try again
        except Exception:  # a failing renewal is a lapsing lease, never a crashed renewer
            return True


RENEWER = Renewer()
"""The process's one renewer thread (started on first use, again after ``fork``)."""


async def renew_until_cancelled(renew: Callable[[], Awaitable[bool | None]], every: float) -> None:
    """Extend a lease every ``every`` seconds from a task, until cancelled or lost."""
    while True:
        await asyncio.sleep(every)
        try:
            if await renew() is False:
                return  # lost: another holder has it now
        except Exception:  # a failing renewal is a lapsing lease; keep trying
            continue


LEAD, ALONE, WAIT = "lead", "alone", "wait"


class Contention:
    """One caller's way to a missing value under ``lock=True``: the decisions, not the I/O.

    The caller asks for ``request`` (a lease), then tells :meth:`answered` what the cache
    said: it leads (computes, holding the lease), goes alone (computes without one), or
    waits (:meth:`pause`, then reads the key and asks again).
    """

    __slots__ = ("outcome", "policy", "request", "waiting")

    def __init__(self, policy: LeasePolicy, full_key: FullKey) -> None:
        self.policy = policy
        self.request = policy.acquire(full_key)
        self.waiting: Waiting | None = None
        self.outcome: LeaseOutcome = "acquired"

    def answered(self, held: bool | None) -> str:
        """What to do after the cache answered an acquire: ``LEAD``, ``ALONE`` or ``WAIT``."""
        if held is None:
            self.outcome = "unavailable"
            return ALONE
        if held:
            self.outcome = "acquired" if self.waiting is None else "taken_over"
            return LEAD
        return WAIT

    def pause(self) -> float | None:
        """Seconds to wait before reading again; ``None`` once ``lock_timeout`` has passed."""
        if self.waiting is None:
            self.waiting = self.policy.waiting()
        pause = self.waiting.next_pause()
        if pause is None:
            self.outcome = "timeout"
        return pause

    def found(self) -> None:
        """The value appeared while waiting (or just as the lease was taken)."""
        self.outcome = "waited"

    def waited(self) -> float | None:
        """Seconds spent waiting for another holder, or ``None`` if the caller never waited."""
        return None if self.waiting is None else self.waiting.waited()
