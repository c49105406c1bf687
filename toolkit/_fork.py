"""Starting over in a forked child: state that belongs to the parent's other threads.

A fork copies only the forking thread. A lock another thread held stays held, a queue it
served is never served, a computation it ran never ends: objects keeping such state register
how to start afresh, and each child runs that for every one still alive, before anything else.
"""

from __future__ import annotations

import os
import threading
import weakref
from collections.abc import Callable
from types import TracebackType
from typing import Any, TypeVar

__all__ = ["ForkSafeLock", "start_afresh_in_children"]

T = TypeVar("T")

_LIVE: weakref.WeakKeyDictionary[Any, Callable[[Any], None]] = weakref.WeakKeyDictionary()


def start_afresh_in_children(owner: T, reset: Callable[[T], None]) -> None:
    """Run ``reset(owner)`` in every forked child while ``owner`` lives (held weakly)."""
    _LIVE[owner] = reset


class ForkSafeLock:
    """A lock for short bookkeeping (a label or a cell made once) that a forked child finds
    free: a thread of the parent caught holding it does not exist in the child, which would
    otherwise wait for ever the first time it needs it."""

    __slots__ = ("__weakref__", "_lock")

    def __init__(self) -> None:
        self._lock = threading.Lock()
        start_afresh_in_children(self, ForkSafeLock._renew)

    def _renew(self) -> None:
        self._lock = threading.Lock()

    def __enter__(self) -> None:
        self._lock.acquire()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._lock.release()


def _in_child() -> None:
    for owner, reset in list(_LIVE.items()):
        reset(owner)


os.register_at_fork(after_in_child=_in_child)
