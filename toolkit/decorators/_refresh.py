"""Background refreshes (stale-while-revalidate, early refresh): off the caller's path.

At most one refresh per key runs in a process at a time (fleet-wide, the lease decides);
sync ones on a small shared thread pool, async ones as tasks of the caller's loop.
"""

from __future__ import annotations

import asyncio
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


_POOL = _DaemonPool(_POOL_WORKERS)


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
        self._running: set[FullKey] = set()
        self._tasks: set[asyncio.Task[None]] = set()  # strong references while they run

    def claim(self, full_key: FullKey) -> bool:
        """Whether the caller may start a refresh of ``full_key`` (none runs here yet)."""
        with self._lock:
            if full_key in self._running:
                return False
            self._running.add(full_key)
            return True

    def release(self, full_key: FullKey) -> None:
        """The refresh of ``full_key`` ended."""
        with self._lock:
            self._running.discard(full_key)

    @staticmethod
    def warm() -> None:
        """Have a refresh thread ready before the first refresh (see ``_DaemonPool.warm``)."""
        _POOL.warm()

    def run_in_thread(self, full_key: FullKey, job: Callable[[], None]) -> None:
        """Run a claimed sync refresh on the shared pool."""
        _POOL.submit(partial(self._then_release, full_key, job))

    def run_as_task(self, full_key: FullKey, job: Coroutine[Any, Any, None]) -> None:
        """Run a claimed async refresh as a task of the running loop."""
        task = asyncio.get_running_loop().create_task(self._athen_release(full_key, job))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _then_release(self, full_key: FullKey, job: Callable[[], None]) -> None:
        try:
            job()
        finally:
            self.release(full_key)

    async def _athen_release(self, full_key: FullKey, job: Coroutine[Any, Any, None]) -> None:
        try:
            await job
        finally:
            self.release(full_key)
