"""What we keep per event loop, let go of once that loop is closed.

A loop closed by hand (``loop.close()`` with calls still in flight, no ``asyncio.run`` to
cancel them first) never runs its tasks again: their coroutines are only closed when
collected. Whatever we keep for such a loop (a task, a batch of waiting futures, a client)
must then be dropped, never waited for, or it is kept for the life of the process and keeps
the loop, its tasks and what they hold (connections) with it.
"""

from __future__ import annotations

import asyncio
import inspect
import weakref
from collections.abc import Coroutine, MutableMapping
from typing import Any, TypeVar

__all__ = ["LoopTasks", "end_if_closed", "forget_closed", "is_gone"]

V = TypeVar("V")

_ABSENT: Any = object()


def forget_closed(per_loop: MutableMapping[asyncio.AbstractEventLoop, V]) -> list[V]:
    """Drop the entries of closed loops from ``per_loop``; returns what was dropped.

    Safe beside other threads using their own loops' entries: a closed loop's entry is never
    touched again by its own thread.
    """
    dropped: list[V] = []
    for loop in [loop for loop in list(per_loop) if loop.is_closed()]:
        value = per_loop.pop(loop, _ABSENT)
        if value is not _ABSENT:
            dropped.append(value)
    return dropped


def is_gone(loop: weakref.ref[asyncio.AbstractEventLoop] | None) -> bool:
    """Whether the loop ``loop`` refers to was closed (or collected); ``False`` for ``None``.

    Nothing tells anyone of a close: whoever waits on a loop's work asks this instead.
    """
    if loop is None:
        return False
    alive = loop()
    return alive is None or alive.is_closed()


def end_if_closed(loop: asyncio.AbstractEventLoop, exc: BaseException) -> None:
    """Raise ``GeneratorExit`` if ``loop`` is closed, whatever ``exc`` is.

    A coroutine of a closed loop runs only to be closed when collected; the cleanup of what
    it awaited may fail on the dead loop (redis-py awaits a disconnect there). That error must
    reach neither the loop's futures nor ``close()``, which would report it as unraisable.
    """
    if loop.is_closed():
        raise GeneratorExit from exc


class LoopTasks:
    """Strong references to background tasks we start (asyncio keeps only weak ones), by
    loop: a closed loop's are let go, so they are collected with all they hold."""

    __slots__ = ("_tasks",)

    def __init__(self) -> None:
        """Track no task yet."""
        # Each loop's thread alone adds and discards its loop's tasks; another thread only
        # ever drops the entry of a closed loop: no lock needed.
        self._tasks: dict[asyncio.AbstractEventLoop, set[asyncio.Task[Any]]] = {}

    def start(
        self, loop: asyncio.AbstractEventLoop, coro: Coroutine[Any, Any, Any]
    ) -> asyncio.Task[Any]:
        """Run ``coro`` as a task of ``loop`` (the running one), kept until it ends or the
        loop closes."""
        task = loop.create_task(coro)
        held = self._tasks.get(loop)
        if held is None:
            self.forget_closed()  # a loop's first task: the closed loops' go now
            held = self._tasks[loop] = set()
        held.add(task)
        task.add_done_callback(self._ended)
        return task

    def _ended(self, task: asyncio.Task[Any]) -> None:
        loop = task.get_loop()
        held = self._tasks.get(loop)
        if held is not None:
            held.discard(task)
            if not held:
                del self._tasks[loop]

    def forget_closed(self) -> None:
        """Let go of the tasks of loops that are closed."""
        for held in forget_closed(self._tasks):
            for task in held:
                coro = task.get_coro()
                # Never started: closed now, so it is not reported as never awaited. One
                # that started is closed when collected (its cleanup must not run here, in
                # another loop's task).
                if inspect.iscoroutine(coro) and inspect.getcoroutinestate(coro) == "CORO_CREATED":
                    coro.close()
