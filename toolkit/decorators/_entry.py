"""What the decorator writes into a cache and how it reads it back.

The one room that knows the stored form of a result: today the plain value (and a
tombstone for caches without ``delete``); a freshness envelope (logical expiry, compute
time) would wrap and unwrap here, and nowhere else.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from toolkit._types import FullKey

MISSING: Any = object()
"""No value: absent from the cache, or no outcome yet."""

TOMBSTONE = "\x00toolkit:invalidated\x00"
"""Written by ``invalidate`` into caches without ``delete`` (the seed API has no single-key
delete: LangGraph's own caches); read back as a miss."""
TOMBSTONE_TTL = 1

Pairs = dict[FullKey, tuple[Any, Any]]


def is_hit(value: Any) -> bool:
    """Whether a value read back is a cached result: neither absent nor a tombstone."""
    return value is not MISSING and not (type(value) is str and value == TOMBSTONE)


def tombstone(full_key: FullKey) -> Pairs:
    """The pairs that make ``full_key`` read back as a miss in a cache without ``delete``."""
    return {full_key: (TOMBSTONE, TOMBSTONE_TTL)}


class StorePolicy:
    """Which results are stored, and in what form."""

    __slots__ = ("cache_none", "condition", "ttl")

    def __init__(
        self, ttl: float | None, cache_none: bool, condition: Callable[[Any], bool] | None
    ) -> None:
        self.ttl = ttl
        self.cache_none = cache_none
        self.condition = condition

    def should_store(self, value: Any) -> bool:
        """Whether ``value`` (a fresh result) enters the cache."""
        if value is None and not self.cache_none:
            return False
        return self.condition is None or bool(self.condition(value))

    def pairs(self, full_key: FullKey, value: Any) -> Pairs:
        """What ``cache.set`` receives to store ``value`` under ``full_key``."""
        return {full_key: (value, self.ttl)}
