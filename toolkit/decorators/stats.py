"""``cache_info()`` of a decorated function: its own counts, without Prometheus."""

from __future__ import annotations

import itertools
from typing import NamedTuple

from toolkit._fork import ForkSafeLock
from toolkit.middleware.recorders import count_of

__all__ = ["CacheInfo", "CacheParameters", "CallStats"]


class CacheInfo(NamedTuple):
    """What one decorated function saw since it was made (or since ``cache_clear``)."""

    hits: int
    misses: int
    errors: int
    """Computations that raised (never cached)."""
    coalesced: int
    """Calls that waited for another caller's computation instead of computing."""
    loads: int
    """Computations run (each miss that was not coalesced)."""
    load_seconds: float
    """Total time spent computing, in seconds."""


class CacheParameters(NamedTuple):
    """How a decorated function caches: its namespace, ttl (seconds) and options."""

    namespace: tuple[str, ...]
    ttl: float | None
    cache_none: bool
    strict_containers: bool
    key_id: str | None
    lock: bool = False
    """Fleet-wide single-flight (``lock=True``)."""
    lock_timeout: float | None = None
    lease_ttl: float | None = None
    stale_ttl: float | None = None
    beta: float | None = None
    """The early-refresh factor when ``early`` is on, else ``None``."""


class CallStats:
    """Counters behind ``cache_info()``, exact under threads without a lock per count.

    Each count is an ``itertools.count``: ``next()`` on it is one C call, atomic under the
    GIL, so the hit path takes no lock (``next(stats.hits)`` is all a hit costs). ``reset``
    swaps in fresh counts; only the load time, a float sum, is added under a lock.
    """

    __slots__ = (
        "_load_seconds",
        "_lock",
        "coalesces",
        "errors",
        "hits",
        "loads",
        "misses",
    )

    def __init__(self) -> None:
        # Free in a forked child, whose first computation or cache_info() would otherwise
        # wait for ever on a lock a thread of the parent held.
        self._lock = ForkSafeLock()
        self.reset()

    def reset(self) -> None:
        """Start counting from zero (``cache_clear`` does, like ``lru_cache``)."""
        with self._lock:
            self.hits: itertools.count[int] = itertools.count()
            self.misses: itertools.count[int] = itertools.count()
            self.errors: itertools.count[int] = itertools.count()
            self.coalesces: itertools.count[int] = itertools.count()
            self.loads: itertools.count[int] = itertools.count()
            self._load_seconds = 0.0

    def hit(self) -> None:
        """Count a call served from the cache."""
        next(self.hits)

    def miss(self) -> None:
        """Count a call that found nothing to serve."""
        next(self.misses)

    def coalesced(self) -> None:
        """Count a call that waited for another caller's computation."""
        next(self.coalesces)

    def loaded(self, seconds: float, *, ok: bool) -> None:
        """Count a computation that took ``seconds`` (``ok``: it returned, not raised)."""
        next(self.loads)
        if not ok:
            next(self.errors)
        with self._lock:
            self._load_seconds += seconds

    def info(self) -> CacheInfo:
        """A snapshot of the counts (each exact; a count racing the snapshot may be left out)."""
        with self._lock:
            return CacheInfo(
                count_of(self.hits),
                count_of(self.misses),
                count_of(self.errors),
                count_of(self.coalesces),
                count_of(self.loads),
                self._load_seconds,
            )
