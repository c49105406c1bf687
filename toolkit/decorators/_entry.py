"""What the decorator writes into a cache and how it reads it back.

The one room that knows the stored form of a result: the plain value, or with freshness
options the envelope of ``freshness`` (logical expiry, compute time); and a tombstone for
caches without ``delete``.
"""

from __future__ import annotations

import inspect
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

from toolkit._types import FullKey
from toolkit.decorators.freshness import Freshness
from toolkit.decorators.tags import Tagging

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


_PLAIN_RESULTS = frozenset({dict, list, tuple, str, int, float, bool, bytes, type(None)})


def check_reusable(func_name: str, value: Any) -> None:
    """Refuse a result that cannot be served twice: an awaitable, an iterator or generator."""
    if type(value) in _PLAIN_RESULTS:  # the common results, spared the ABC checks below
        return
    what = type(value).__name__
    if inspect.isawaitable(value):
        if inspect.iscoroutine(value):
            value.close()  # refused unawaited: no "never awaited" warning besides the error
        raise TypeError(
            f"{func_name} returned a {what}, not its result: @cached sees a sync function (is "
            "a sync decorator hiding an async def?), so it would store the awaitable itself. "
            "Put @cached directly on the async def, or make the wrapper an async def."
        )
    if isinstance(value, (Iterator, AsyncIterator)):
        raise TypeError(
            f"{func_name} returned a {what}, which is used up by reading it: @cached would "
            "store it, and hand one object to every caller. Return a list or a tuple instead."
        )


_IMMUTABLE = frozenset({int, float, bool, str, bytes, type(None)})


class Shared:
    """The value a flight's leader computed, as its waiters take it: each decodes its own
    copy, as a hit would, so callers never share a mutable result. Encoded when the leader
    lands, before its own caller can change it; kept as is when immutable, or when the
    cache's serializer cannot encode it (then it was not stored either)."""

    __slots__ = ("serde", "typed", "value")

    def __init__(self, cache: Any, value: Any) -> None:
        self.value = value
        self.serde: Any = None
        self.typed: Any = None
        serde = getattr(cache, "serde", None)
        if type(value) in _IMMUTABLE or serde is None:
            return
        try:
            self.typed = serde.dumps_typed(value)
        except Exception:  # not cacheable: shared as computed
            return
        self.serde = serde

    def copy(self) -> Any:
        """A waiter's own copy of the value."""
        if self.serde is None:
            return self.value
        try:
            return self.serde.loads_typed(self.typed)
        except Exception:  # a serializer that cannot read its own output: as computed
            return self.value


class StorePolicy:
    """Which results are stored, and in what form."""

    __slots__ = ("cache_none", "condition", "fresh", "ttl")

    def __init__(
        self,
        ttl: float | None,
        cache_none: bool,
        condition: Callable[[Any], bool] | None,
        fresh: Freshness | None = None,
    ) -> None:
        self.ttl = ttl
        self.cache_none = cache_none
        self.condition = condition
        self.fresh = fresh

    def should_store(self, value: Any) -> bool:
        """Whether ``value`` (a fresh result) enters the cache."""
        if value is None and not self.cache_none:
            return False
        return self.condition is None or bool(self.condition(value))

    def pairs(
        self, full_key: FullKey, value: Any, delta: float = 0.0, versions: list[Any] | None = None
    ) -> Pairs:
        """What ``cache.set`` receives to store ``value``, computed in ``delta`` seconds while
        the call's tags had ``versions`` (``None``: an untagged call)."""
        fresh = self.fresh
        content, ttl = (
            (value, self.ttl) if fresh is None else (fresh.wrap(value, delta), fresh.store_ttl)
        )
        if versions is not None:
            content = Tagging.wrap(content, versions)
        return {full_key: (content, ttl)}
