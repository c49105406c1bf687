"""Background refreshes (stale-while-revalidate, early refresh): off the caller's path.

At most one refresh per key runs in a process at a time (fleet-wide, the lease decides);
sync ones on a small shared thread pool, async ones as tasks of the caller's loop.
"""

from __future__ import annotations

import asyncio
import os
import threading
from collections.abc import Callable, Coroutine
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from toolkit._types import FullKey

__all__ = ["Refresher"]

_POOL_WORKERS = 4
_pool: ThreadPoolExecutor | None = None
_pool_pid = -1
_pool_lock = threading.Lock()


def _shared_pool() -> ThreadPoolExecutor:
    """The process's refresh threads (made again in a forked child, which has none)."""
    global _pool, _pool_pid
    with _pool_lock:
        if _pool is None or _pool_pid != os.getpid():
            _pool = ThreadPoolExecutor(_POOL_WORKERS, thread_name_prefix="toolkit-refresh")
            _pool_pid = os.getpid()
        return _pool


class Refresher:
    """The background refreshes of one decorated function."""

    __slots__ = ("_lock", "_running", "_tasks")

    def __init__(self) -> None:
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

    def run_in_thread(self, full_key: FullKey, job: Callable[[], None]) -> None:
        """Run a claimed sync refresh on the shared pool."""
        try:
            _shared_pool().submit(self._then_release, full_key, job)
        except RuntimeError:  # the interpreter is shutting down: no refresh, nothing lost
            self.release(full_key)

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
