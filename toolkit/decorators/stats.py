"""``cache_info()`` of a decorated function: its own counts, without Prometheus."""

from __future__ import annotations

import threading
from typing import NamedTuple

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
    """Thread-safe counters behind ``cache_info()``."""

    __slots__ = ("_coalesced", "_errors", "_hits", "_load_seconds", "_loads", "_lock", "_misses")

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.reset()

    def reset(self) -> None:
        """Start counting from zero (``cache_clear`` does, like ``lru_cache``)."""
        with self._lock:
            self._hits = self._misses = self._errors = self._coalesced = self._loads = 0
            self._load_seconds = 0.0

    def hit(self) -> None:
        with self._lock:
            self._hits += 1

    def miss(self) -> None:
        with self._lock:
            self._misses += 1

    def coalesced(self) -> None:
        with self._lock:
            self._coalesced += 1

    def loaded(self, seconds: float, *, ok: bool) -> None:
        with self._lock:
            self._loads += 1
            self._load_seconds += seconds
            if not ok:
                self._errors += 1

    def info(self) -> CacheInfo:
        """A snapshot of the counts."""
        with self._lock:
            return CacheInfo(
                self._hits,
                self._misses,
                self._errors,
                self._coalesced,
                self._loads,
                self._load_seconds,
            )
