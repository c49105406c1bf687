"""The two runners of the call steps (``_steps``): the only code written twice.

``Blocking`` does a step's I/O requests (``_requests``) with blocking calls in the caller's
thread; ``Awaiting`` awaits them in the caller's task. An exception the I/O raises is
thrown into the step at its ``yield``, so the step's ``try``/``finally`` see it as plain
code would (a cancelled caller still releases its lease).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import weakref
from collections.abc import Awaitable, Callable
from functools import partial
from typing import Any

from toolkit._types import FullKey
from toolkit.base import BaseCache
from toolkit.decorators._refresh import Refresher
from toolkit.decorators._requests import (
    Ask,
    Await,
    Background,
    Compute,
    Join,
    Read,
    Release,
    Renew,
    Settle,
    Sleep,
    Step,
    T,
    Write,
)
from toolkit.decorators.fleet import RENEWER, renew_until_cancelled
from toolkit.decorators.flight import Flight, Flights, asettle, settle
from toolkit.lease import LeaseRequest

_log = logging.getLogger("toolkit.decorators")


def _answer(held: object) -> bool | None:
    """A cache's answer to a lease request as ``True``/``False`` (``None``: no answer)."""
    return None if held is None else bool(held)


def _failed(lease: LeaseRequest) -> None:
    """Log a lease request the cache failed to answer (the caller goes on without it)."""
    _log.debug("lease %s failed", lease.action, exc_info=True)


class _Stopped(Exception):
    """A ``StopIteration`` the function raised, carried through the steps: raised as is
    inside a generator it would become a ``RuntimeError``."""

    def __init__(self, stop: StopIteration) -> None:
        super().__init__()
        self.stop = stop


class Blocking:
    """Runs steps in the caller's thread, doing their I/O with blocking calls."""

    __slots__ = ("doers", "flights", "refresher")

    def __init__(self, flights: Flights, refresher: Refresher) -> None:
        self.flights = flights
        self.refresher = refresher
        self.doers: dict[type[Any], Callable[[BaseCache[Any], Any], Any]] = {
            Read: self._read,
            Join: self._join,
            Compute: self._compute,
            Write: self._write,
            Ask: self._ask,
            Release: self._ask,
            Renew: self._renew,
            Sleep: self._sleep,
            Await: self._await,
            Settle: self._settle,
            Background: self.background,
        }

    def run(self, cache: BaseCache[Any], steps: Step[T]) -> T:
        """Drive ``steps`` to their result, reading and writing ``cache``."""
        doers = self.doers
        result: Any = None
        error: BaseException | None = None
        while True:
            try:
                request = steps.send(result) if error is None else steps.throw(error)
            except StopIteration as done:
                return done.value  # type: ignore[no-any-return]
            except _Stopped as stopped:
                raise stopped.stop from None
            result = error = None
            try:
                result = doers[type(request)](cache, request)
            except BaseException as exc:
                error = exc

    @staticmethod
    def _read(cache: BaseCache[Any], request: Read) -> dict[FullKey, Any]:
        return cache.get(request.keys)

    def _join(self, cache: BaseCache[Any], request: Join) -> tuple[Flight, bool]:
        return self.flights.join(request.key, request.tags)

    @staticmethod
    def _compute(cache: BaseCache[Any], request: Compute) -> Any:
        try:
            return request.func(*request.args, **request.kwargs)
        except StopIteration as stop:
            raise _Stopped(stop) from None

    @staticmethod
    def _write(cache: BaseCache[Any], request: Write) -> None:
        cache.set(request.pairs)

    @staticmethod
    def _ask(cache: Any, request: Ask | Release | Renew) -> bool | None:
        try:
            held = cache.lease(request.lease)
        except Exception:
            _failed(request.lease)
            return None
        return _answer(held)

    @staticmethod
    def _renew(cache: BaseCache[Any], request: Renew) -> Callable[[], None]:
        return RENEWER.hold(partial(Blocking._ask, cache, request), request.every)

    @staticmethod
    def _sleep(cache: BaseCache[Any], request: Sleep) -> None:
        time.sleep(request.seconds)

    @staticmethod
    def _await(cache: BaseCache[Any], request: Await) -> None:
        request.flight.done.wait()

    @staticmethod
    def _settle(cache: BaseCache[Any], request: Settle) -> None:
        settle(request.loads)

    def background(self, cache: BaseCache[Any], request: Background) -> None:
        """Run the steps of ``request`` on the refresh threads."""
        self.refresher.run_in_thread(request.key, partial(self.run, cache, request.steps))


class Awaiting:
    """Runs steps in the caller's task, awaiting their I/O."""

    __slots__ = ("blocking", "doers", "flights", "is_async", "refresher")

    def __init__(self, blocking: Blocking, is_async: bool) -> None:
        self.blocking = blocking  # for a sync function's background refreshes
        self.flights = blocking.flights
        self.refresher = blocking.refresher
        self.is_async = is_async
        self.doers: dict[type[Any], Callable[[BaseCache[Any], Any], Awaitable[Any]]] = {
            Read: self._read,
            Join: self._join,
            Compute: self._compute,
            Write: self._write,
            Ask: self._ask,
            Release: self._release,
            Renew: self._renew,
            Sleep: self._sleep,
            Await: self._await,
            Settle: self._settle,
            Background: self._background,
        }

    async def run(self, cache: BaseCache[Any], steps: Step[T]) -> T:
        """Drive ``steps`` to their result, reading and writing ``cache``."""
        doers = self.doers
        result: Any = None
        error: BaseException | None = None
        while True:
            try:
                request = steps.send(result) if error is None else steps.throw(error)
            except StopIteration as done:
                return done.value  # type: ignore[no-any-return]
            result = error = None
            try:
                result = await doers[type(request)](cache, request)
            except GeneratorExit:
                # Closed unfinished (a refresh left behind in a closed loop, collected): no
                # more I/O can run, so the steps are closed, not driven to their end.
                with contextlib.suppress(Exception):
                    steps.close()
                raise
            except BaseException as exc:
                error = exc

    @staticmethod
    async def _read(cache: BaseCache[Any], request: Read) -> dict[FullKey, Any]:
        return await cache.aget(request.keys)

    async def _join(self, cache: BaseCache[Any], request: Join) -> tuple[Flight, bool]:
        return self.flights.ajoin(request.key, request.tags)

    async def _compute(self, cache: BaseCache[Any], request: Compute) -> Any:
        value = request.func(*request.args, **request.kwargs)
        return (await value) if self.is_async else value

    @staticmethod
    async def _write(cache: BaseCache[Any], request: Write) -> None:
        if request.load is not None:  # an invalidation may wait for this write: on this loop
            request.load.loop = weakref.ref(asyncio.get_running_loop())
        await cache.aset(request.pairs)

    @staticmethod
    async def _ask(cache: Any, request: Ask | Release | Renew) -> bool | None:
        try:
            held = await cache.alease(request.lease)
        except Exception:
            _failed(request.lease)
            return None
        return _answer(held)

    @staticmethod
    async def _release(cache: BaseCache[Any], request: Release) -> None:
        await asyncio.shield(Awaiting._ask(cache, request))

    @staticmethod
    async def _renew(cache: BaseCache[Any], request: Renew) -> Callable[[], None]:
        renew = partial(Awaiting._ask, cache, request)
        loop = asyncio.get_running_loop()
        renewer = loop.create_task(renew_until_cancelled(renew, request.every))

        def stop() -> None:
            if not loop.is_closed():  # else it never runs again (and cannot be cancelled)
                renewer.cancel()

        return stop

    @staticmethod
    async def _sleep(cache: BaseCache[Any], request: Sleep) -> None:
        await asyncio.sleep(request.seconds)

    @staticmethod
    async def _await(cache: BaseCache[Any], request: Await) -> None:
        await request.flight.done.wait()  # type: ignore[misc]

    @staticmethod
    async def _settle(cache: BaseCache[Any], request: Settle) -> None:
        await asettle(request.loads)

    async def _background(self, cache: BaseCache[Any], request: Background) -> None:
        if self.is_async:
            self.refresher.run_as_task(request.key, self.run(cache, request.steps))
        else:  # on the refresh threads, where a sync function cannot block the loop
            self.blocking.background(cache, request)
