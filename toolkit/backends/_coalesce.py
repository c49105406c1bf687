"""Merge concurrent async reads (one round trip) and writes (one transaction) per event loop.

A loop closed by hand mid-batch never runs its drain again: its batch and drain task are
dropped (``toolkit._loops``) when another loop starts a batch, and a drain closed when
collected touches none of its futures (their loop is gone).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, Generic, TypeVar

from toolkit._loops import LoopTasks, end_if_closed, forget_closed
from toolkit._types import FullKey

__all__ = ["ReadCoalescer", "WriteCoalescer"]

V = TypeVar("V")

Fetch = Callable[[list[FullKey]], Awaitable[Sequence[Any]]]
"""Reads keys in one round trip; returns one value per key by position (a sentinel for none)."""


class ReadCoalescer(Generic[V]):
    """Batches the reads that coroutines issue in the same loop iteration (``asyncio.gather``).

    Each caller still gets its own decoded values: keys are concatenated, not deduplicated,
    so two callers never share a mutable object.
    """

    def __init__(self, missing: object) -> None:
        """Coalesce reads whose fetch marks misses with ``missing``."""
        self._missing = missing
        self._pending: dict[asyncio.AbstractEventLoop, list[tuple[Sequence[FullKey], Any]]] = {}
        self._draining = LoopTasks()

    async def get(self, keys: Sequence[FullKey], fetch: Fetch) -> dict[FullKey, V]:
        """Read ``keys`` together with every other read started in this loop iteration.

        ``fetch`` is passed per call, not held, so the coalescer never keeps its owner alive.
        """
        loop = asyncio.get_running_loop()
        future: asyncio.Future[dict[FullKey, V]] = loop.create_future()
        batch = self._pending.get(loop)
        if batch is None:
            forget_closed(self._pending)  # batches of loops closed before their drain ran
            batch = self._pending[loop] = []
            # Runs on the next iteration, after every read already scheduled has joined.
            self._draining.start(loop, self._drain(loop, fetch))
        batch.append((keys, future))
        return await future

    async def _drain(self, loop: asyncio.AbstractEventLoop, fetch: Fetch) -> None:
        waiters = [(keys, fut) for keys, fut in self._pending.pop(loop, []) if not fut.done()]
        if not waiters:
            return
        merged: list[FullKey] = []
        for keys, _ in waiters:
            merged.extend(keys)
        try:
            values = await fetch(merged)
        except GeneratorExit:  # closed when collected, its loop closed: no future to touch
            raise
        except BaseException as exc:
            end_if_closed(loop, exc)
            for _, fut in waiters:
                if not fut.done():
                    if isinstance(exc, asyncio.CancelledError):
                        fut.cancel()
                    else:
                        fut.set_exception(exc)
            if not isinstance(exc, Exception):
                raise
            return
        missing = self._missing
        start = 0
        for keys, fut in waiters:
            count = len(keys)
            if count == 1:  # the common shape under asyncio.gather: skip slicing and zipping
                value = values[start]
                result = {} if value is missing else {keys[0]: value}
            else:
                found = values[start : start + count]
                result = {k: v for k, v in zip(keys, found, strict=True) if v is not missing}
            if not fut.done():
                fut.set_result(result)
            start += count


Write = Callable[[list[Any]], Awaitable[object]]
"""Runs the items of several writes (statements, or rows to store) as one write transaction."""


class WriteCoalescer:
    """Joins the writes coroutines issue while a write is running into the next transaction.

    Writes to one SQLite file are serialized anyway; one transaction for many ``aset``s
    costs one lock turn and one commit instead of one each. Each caller's statements stay
    together and in the order they were issued; a caller who stops waiting before its
    turn is left out.
    """

    def __init__(self) -> None:
        self._queues: dict[asyncio.AbstractEventLoop, list[tuple[list[Any], Any]]] = {}
        self._draining = LoopTasks()

    async def write(self, statements: list[Any], run: Write) -> None:
        """Run ``statements`` in the next transaction of this loop; ``run`` executes one."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[None] = loop.create_future()
        queue = self._queues.get(loop)
        if queue is None:
            forget_closed(self._queues)  # queues of loops closed mid-batch
            queue = self._queues[loop] = []
            self._draining.start(loop, self._drain(loop, run))
        queue.append((statements, future))
        await future

    async def _drain(self, loop: asyncio.AbstractEventLoop, run: Write) -> None:
        while True:
            waiters = [(st, fut) for st, fut in self._queues.get(loop, []) if not fut.done()]
            if not waiters:
                self._queues.pop(loop, None)
                return
            self._queues[loop] = []  # writes issued from now on join the next transaction
            try:
                await run([statement for statements, _ in waiters for statement in statements])
            except GeneratorExit:  # closed when collected, its loop closed: as in ReadCoalescer
                raise
            except BaseException as exc:
                end_if_closed(loop, exc)
                for _, fut in waiters:
                    if not fut.done():
                        if isinstance(exc, asyncio.CancelledError):
                            fut.cancel()
                        else:
                            fut.set_exception(exc)
                if not isinstance(exc, Exception):
                    self._queues.pop(loop, None)
                    raise
                continue
            for _, fut in waiters:
                if not fut.done():
                    fut.set_result(None)
