"""Background refreshes (stale-while-revalidate, early refresh): off the caller's path.

At most one refresh per key runs in a process at a time (fleet-wide, the lease decides);
sync ones on a small shared thread pool, async ones as tasks of the caller's loop.
"""

from __future__ import annotations

import asyncio
import logging
import os
import queue
import threading
from collections.abc import Callable, Coroutine
from functools import partial
from typing import Any

from toolkit._fork import start_afresh_in_children
from toolkit._types import FullKey

__all__ = ["Refresher"]

_POOL_WORKERS = 4
_log = logging.getLogger("toolkit.decorators")


class _DaemonPool:
    """A few daemon threads running jobs from a queue: a refresh still running when the
    process exits (a hung upstream) never holds the exit up, as a ThreadPoolExecutor's
    joined workers would. Started lazily, and again in a forked child, which has none."""

    def __init__(self, workers: int) -> None:
        self._workers = workers
        self._reset()
        os.register_at_fork(after_in_child=self._reset)

    def _reset(self) -> None:
        self._lock = threading.Lock()
        self._jobs: queue.SimpleQueue[Callable[[], None]] = queue.SimpleQueue()
        self._started = 0
        self._idle = 0

    def submit(self, job: Callable[[], None]) -> None:
        """Run ``job`` on a pool thread."""
        with self._lock:
            self._jobs.put(job)
            if self._idle == 0 and self._started < self._workers:
                self._start_worker()

    def warm(self) -> None:
        """Start a first worker now, so the first refresh does not pay for starting one on a
        caller's path (a function with freshness options will need it)."""
        with self._lock:
            if self._started == 0:
                self._start_worker()

    def _start_worker(self) -> None:
        self._started += 1
        thread = threading.Thread(target=self._work, args=(self._jobs,), name="toolkit-refresh")
        thread.daemon = True
        thread.start()

    def _work(self, jobs: queue.SimpleQueue[Callable[[], None]]) -> None:
        while True:
            with self._lock:
                self._idle += 1
            job = jobs.get()
            with self._lock:
                self._idle -= 1
            try:
                job()
            except Exception:  # a job reports its own failures; the worker carries on
                continue
            except BaseException:  # e.g. a function's SystemExit
                # It must not end the worker: one that ends is never replaced, and once all
                # have, queued refreshes never run and their keys stay claimed for ever.
                _log.warning("a background refresh raised", exc_info=True)


_POOL = _DaemonPool(_POOL_WORKERS)


_CLAIMED = object()
"""The holder of a key claimed for a refresh not running as a task (not yet, or a thread's)."""


class _InLoop:
    """The holder of a key whose refresh runs as a task of ``loop``."""

    __slots__ = ("loop", "task")

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.task: asyncio.Task[None] | None = None


class Refresher:
    """The background refreshes of one decorated function."""

    __slots__ = ("__weakref__", "_lock", "_running", "_tasks")

    def __init__(self) -> None:
        self._reset()
        # A forked child has none of its parent's refreshes: a key one of them held claimed
        # would never be refreshed there again.
        start_afresh_in_children(self, Refresher._reset)

    def _reset(self) -> None:
        self._lock = threading.Lock()
        self._running: dict[FullKey, object] = {}  # key -> _CLAIMED, or its task's _InLoop
        self._tasks: set[asyncio.Task[None]] = set()  # strong references while they run

    def claim(self, full_key: FullKey) -> bool:
        """Whether the caller may start a refresh of ``full_key`` (none runs here yet).

        A refresh left behind in a closed event loop (one loop per request, closed while
        the refresh ran) never ends nor releases its claim: it is no refresh running, and
        the key is claimed anew (or it would never be refreshed in this process again)."""
        with self._lock:
            holder = self._running.get(full_key)
            if holder is not None:
                if not isinstance(holder, _InLoop) or not holder.loop.is_closed():
                    return False
                if holder.task is not None:  # it never runs again: let it be collected
                    self._tasks.discard(holder.task)
            self._running[full_key] = _CLAIMED
            return True

    def release(self, full_key: FullKey, holder: object = _CLAIMED) -> None:
        """The refresh of ``full_key`` (held by ``holder``) ended."""
        with self._lock:
            if self._running.get(full_key) is holder:
                del self._running[full_key]

    @staticmethod
    def warm() -> None:
        """Have a refresh thread ready before the first refresh (see ``_DaemonPool.warm``)."""
        _POOL.warm()

    def run_in_thread(self, full_key: FullKey, job: Callable[[], None]) -> None:
        """Run a claimed sync refresh on the shared pool."""
        _POOL.submit(partial(self._then_release, full_key, job))

    def run_as_task(self, full_key: FullKey, job: Coroutine[Any, Any, None]) -> None:
        """Run a claimed async refresh as a task of the running loop."""
        loop = asyncio.get_running_loop()
        holder = _InLoop(loop)
        task = holder.task = loop.create_task(self._athen_release(full_key, job, holder))
        with self._lock:
            if self._running.get(full_key) is _CLAIMED:
                self._running[full_key] = holder
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _then_release(self, full_key: FullKey, job: Callable[[], None]) -> None:
        try:
            job()
        finally:
            self.release(full_key)

    async def _athen_release(
        self, full_key: FullKey, job: Coroutine[Any, Any, None], holder: _InLoop
    ) -> None:
        try:
            await job
        finally:
            self.release(full_key, holder)
