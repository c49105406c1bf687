"""Async clients per event loop: an asyncio client is bound to the loop it first ran on."""

from __future__ import annotations

import asyncio
import contextlib
import threading
import weakref
from collections.abc import AsyncIterator, Callable
from typing import Any

from toolkit._loops import forget_closed
from toolkit.errors import EventLoopMismatchError

__all__ = ["LoopClients"]


class LoopClients:
    """One async client per running event loop, made lazily by ``factory``.

    A client passed in by the user (``given``) cannot be copied: it serves the first loop
    that uses it, and any other loop gets a clear ``EventLoopMismatchError`` instead of a
    hang or a "bound to a different event loop" error from deep inside the driver.
    """

    def __init__(self, factory: Callable[[], Any] | None, given: Any = None) -> None:
        self._factory = factory
        self._given = given
        self._given_loop: weakref.ref[asyncio.AbstractEventLoop] | None = None
        self._clients: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, Any] = (
            weakref.WeakKeyDictionary()
        )
        self._lock = threading.Lock()

    @property
    def available(self) -> bool:
        """Whether an async client can be had at all."""
        return self._factory is not None or self._given is not None

    async def current(self) -> Any:
        """The client of the running loop, made on first use and closed with the loop."""
        loop = asyncio.get_running_loop()
        if self._factory is None:
            return self._bound_given(loop)
        held = self._clients.get(loop)
        if held is None:
            with self._lock:
                held = self._clients.get(loop)
                if held is None:
                    self._forget_closed()
                    client = self._factory()
                    keeper = _close_with_loop(client)
                    held = self._clients[loop] = (client, keeper)
            await keeper.__anext__()  # the loop now tracks it: see _close_with_loop
        return held[0]

    def _forget_closed(self) -> None:
        """Drop the clients of loops closed by hand (no ``shutdown_asyncgens`` closed them).

        Nothing can close them on their dead loop: dropped, they are collected, and their
        sockets closed with them. Kept, each held its connections for the cache's life (the
        weak key never died: the client's keeper refers to its loop).
        """
        forget_closed(self._clients)

    def _bound_given(self, loop: asyncio.AbstractEventLoop) -> Any:
        first = self._given_loop() if self._given_loop is not None else None
        if first is None or first.is_closed():
            if first is not None and first is not loop:
                raise EventLoopMismatchError(
                    "the async Redis client given to RedisCache was bound to an event loop "
                    "that has closed (a second asyncio.run?); build the cache with "
                    "RedisCache.from_url(...), which makes one client per loop"
                )
            self._given_loop = weakref.ref(loop)
            return self._given
        if first is not loop:
            raise EventLoopMismatchError(
                "the async Redis client given to RedisCache is bound to another event loop "
                "(used from two threads or loops); build the cache with "
                "RedisCache.from_url(...), which makes one client per loop"
            )
        return self._given

    def any(self) -> Any:
        """Some client (for type checks and settings), without making one."""
        if self._given is not None:
            return self._given
        return next((client for client, _ in list(self._clients.values())), None)

    async def aclose(self) -> None:
        """Close the running loop's client; hand others to their loops, drop dead loops'."""
        loop = asyncio.get_running_loop()
        with self._lock:
            owned = list(self._clients.items())
            self._clients.clear()
        for owner, (_client, keeper) in owned:
            if owner is loop:
                await keeper.aclose()  # closes the client
            elif not owner.is_closed() and owner.is_running():
                with contextlib.suppress(RuntimeError):  # it closed meanwhile
                    asyncio.run_coroutine_threadsafe(keeper.aclose(), owner)


async def _close_with_loop(client: Any) -> AsyncIterator[None]:
    """Closes ``client`` when the loop shuts down its async generators.

    ``asyncio.run`` (and every runner built on it) calls ``loop.shutdown_asyncgens()``
    before closing the loop: a started generator is how a client learns, through public
    API only, that its loop is ending, so its sockets close on that loop and none leak.
    """
    try:
        yield
        await asyncio.Event().wait()  # parked until the loop (or aclose) finalizes it
    finally:
        await client.aclose()
