"""Merge concurrent async reads on one event loop into a single backend round trip."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, Generic, TypeVar

from toolkit._types import FullKey

__all__ = ["ReadCoalescer"]

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
        self._draining: set[asyncio.Task[None]] = set()

    async def get(self, keys: Sequence[FullKey], fetch: Fetch) -> dict[FullKey, V]:
        """Read ``keys`` together with every other read started in this loop iteration.

        ``fetch`` is passed per call, not held, so the coalescer never keeps its owner alive.
        """
        loop = asyncio.get_running_loop()
        future: asyncio.Future[dict[FullKey, V]] = loop.create_future()
        batch = self._pending.get(loop)
        if batch is None:
            batch = self._pending[loop] = []
            # Runs on the next iteration, after every read already scheduled has joined.
            task = loop.create_task(self._drain(loop, fetch))
            self._draining.add(task)
            task.add_done_callback(self._draining.discard)
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
        except BaseException as exc:
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
