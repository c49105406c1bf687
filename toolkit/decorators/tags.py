"""Tag invalidation: ``@cached(tags=...)`` and ``invalidate_tags``, O(1) per tag.

Each tag has a version, stored in the cache itself beside the entries (namespace
``TAG_NAMESPACE``, key: the tag). An entry of a tagged call carries the versions its tags
had *before* the function ran; a read fetches the entry and its tags' versions in one batch
and serves the entry only if every version still matches. ``invalidate_tags`` writes a new
random version per tag: no scan, and exact under concurrency (a computation that overlaps
an invalidation stores the version it read before, which no longer matches). A version
that disappears (evicted, expired, cleared) fails the match too: never a stale serve.
"""

from __future__ import annotations

import secrets
import weakref
from collections.abc import Callable, Iterable
from typing import Any, Protocol

from toolkit._fork import ForkSafeLock
from toolkit._types import FullKey, Namespace
from toolkit.base import BaseCache
from toolkit.config import default_cache
from toolkit.errors import BackendError

__all__ = ["TAG_NAMESPACE", "Tagging", "ainvalidate_tags", "invalidate_tags", "tag_key"]

TAG_NAMESPACE: Namespace = ("toolkit", "tags")
"""Where tag versions live in a cache."""

TAGGED = "\x00toolkit:tagged:v1\x00"
"""The first item of a tagged entry; no function's own result starts with it."""

TAGGED_KEY_SUFFIX = "~tagged1"
"""Ends the keys of functions with tags: a tagged entry and a bare result (stored while the
function had no tags, or read after they were dropped) never share a key."""

MAX_TAG_LENGTH = 256

TagsOption = str | Iterable[str] | Callable[..., Any]
"""``@cached(tags=...)``: a tag, tags, or a function of the call's arguments returning them."""


def _checked_tags(tags: object, where: str) -> tuple[str, ...]:
    if isinstance(tags, str):
        tags = (tags,)
    elif isinstance(tags, (bytes, bytearray)) or not isinstance(tags, Iterable):
        raise TypeError(f"{where} must be a str or an iterable of str, got {type(tags).__name__}")
    found = tuple(dict.fromkeys(tags))
    for tag in found:
        if not isinstance(tag, str):
            raise TypeError(f"{where}: a tag must be a str, got {type(tag).__name__}")
        if not tag or len(tag) > MAX_TAG_LENGTH:
            raise ValueError(f"{where}: a tag must have 1-{MAX_TAG_LENGTH} characters, got {tag!r}")
    return found


def tag_key(tag: str) -> FullKey:
    """The cache key of ``tag``'s version."""
    return (TAG_NAMESPACE, tag)


def new_version() -> str:
    """A fresh random tag version."""
    return secrets.token_hex(8)


class Tagging:
    """The tags of one decorated function's calls, and the stored form of tagged entries."""

    __slots__ = ("func_name", "static", "tags_of")

    def __init__(self, tags: TagsOption, func_name: str) -> None:
        self.func_name = func_name
        self.tags_of: Callable[..., Any] | None = None
        self.static: tuple[FullKey, ...] = ()
        if callable(tags) and not isinstance(tags, str):
            self.tags_of = tags
        else:
            self.static = tuple(tag_key(t) for t in _checked_tags(tags, "tags"))

    def keys(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> tuple[FullKey, ...]:
        """The version keys of a call's tags (``args`` with ``self`` first for methods)."""
        if self.tags_of is None:
            return self.static
        where = f"the tags= function of {self.func_name}"
        return tuple(tag_key(t) for t in _checked_tags(self.tags_of(*args, **kwargs), where))

    @staticmethod
    def versions(found: dict[FullKey, Any], keys: tuple[FullKey, ...]) -> list[Any]:
        """The current versions of ``keys`` in a batch read (``None`` where absent)."""
        return [found.get(key) for key in keys]

    @staticmethod
    def completed(
        found: dict[FullKey, Any], keys: tuple[FullKey, ...]
    ) -> tuple[list[Any], dict[FullKey, tuple[Any, None]]]:
        """The versions a computation stores under, read before it runs: those of ``found``,
        with a new version for each tag that has none yet, and the writes that create them.
        An entry must never carry "absent", which a lost version (evicted, cleared) would
        match again."""
        created: dict[FullKey, tuple[Any, None]] = {}
        versions = []
        for key in keys:
            version = found.get(key)
            if version is None:
                version = new_version()
                created[key] = (version, None)
            versions.append(version)
        return versions, created

    @staticmethod
    def check(stored: Any, versions: list[Any]) -> tuple[bool, Any]:
        """Whether ``stored`` is a tagged entry whose versions all still match, and its
        content (the value, or its freshness envelope)."""
        kind = type(stored)  # a foreign serializer may hand a tuple back as a list
        if (kind is not tuple and kind is not list) or len(stored) != 3 or stored[0] != TAGGED:
            return False, None
        return list(stored[2]) == versions, stored[1]

    @staticmethod
    def wrap(content: Any, versions: list[Any]) -> tuple[Any, ...]:
        """The stored form of ``content`` computed while the tags had ``versions``."""
        return (TAGGED, content, tuple(versions))


class InFlight(Protocol):
    """The flights in progress of one tagged function (``flight.Flights``)."""

    def detach_tagged(self, tags: frozenset[FullKey]) -> None:
        """Leave the flights of calls with any of ``tags`` (version keys) to their waiters."""


_WATCHED: weakref.WeakSet[Any] = weakref.WeakSet()
_WATCHED_LOCK = ForkSafeLock()  # free in a forked child: its invalidate_tags never waits


def watch(flights: InFlight) -> None:
    """Have every ``invalidate_tags`` of this process detach the flights of ``flights`` that
    carry its tags, so a caller after an invalidation never waits for a computation from
    before it."""
    with _WATCHED_LOCK:
        _WATCHED.add(flights)


def _detach(pairs: dict[FullKey, tuple[Any, None]]) -> None:
    tags = frozenset(pairs)
    with _WATCHED_LOCK:
        watched = list(_WATCHED)
    for flights in watched:
        flights.detach_tagged(tags)


def _invalidation(tags: tuple[str, ...]) -> dict[FullKey, tuple[Any, None]]:
    return {tag_key(tag): (new_version(), None) for tag in _checked_tags(tags, "tags")}


def _confirm(cache: Any, pairs: dict[FullKey, tuple[Any, None]], found: dict[FullKey, Any]) -> None:
    """Raise unless every new version reads back (a fail-open stack drops failed writes)."""
    lost = [key[1] for key, (version, _) in pairs.items() if found.get(key) != version]
    if lost:
        raise BackendError(
            f"invalidating tags {lost!r} was not confirmed by the cache: their entries may "
            "still be served; retry when the cache answers"
        )
    hook = getattr(cache, "record_tag_invalidations", None)
    if hook is not None:
        hook(len(pairs))


def invalidate_tags(*tags: str, cache: BaseCache[Any] | None = None) -> None:
    """Forget every entry cached with any of ``tags`` (in ``cache``, default the configured
    one), whatever function stored it; O(1) per tag. Raises ``BackendError`` if the cache
    did not take the new versions (then retry)."""
    target = default_cache() if cache is None else cache
    pairs = _invalidation(tags)
    target.set(pairs)
    _detach(pairs)
    _confirm(target, pairs, target.get(list(pairs)))


async def ainvalidate_tags(*tags: str, cache: BaseCache[Any] | None = None) -> None:
    """Async twin of :func:`invalidate_tags`."""
    target = default_cache() if cache is None else cache
    pairs = _invalidation(tags)
    await target.aset(pairs)
    _detach(pairs)
    _confirm(target, pairs, await target.aget(list(pairs)))
