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
from toolkit.config import default_cache, is_cache_like, not_a_cache
from toolkit.errors import BackendError, CacheClosedError
from toolkit.middleware.failopen import failures_raise

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
_CACHES: weakref.WeakSet[Any] = weakref.WeakSet()  # given to tagged functions (not the default)
_WATCHED_LOCK = ForkSafeLock()  # free in a forked child: its invalidate_tags never waits


def watch(flights: InFlight, cache: BaseCache[Any] | None = None) -> None:
    """Have every ``invalidate_tags`` of this process detach the flights of ``flights`` that
    carry its tags, so a caller after an invalidation never waits for a computation from
    before it; and, without a ``cache=``, reach ``cache`` (a tagged function's own)."""
    with _WATCHED_LOCK:
        _WATCHED.add(flights)
        if cache is not None:
            _CACHES.add(cache)


def _detach(pairs: dict[FullKey, tuple[Any, None]]) -> None:
    tags = frozenset(pairs)
    with _WATCHED_LOCK:
        watched = list(_WATCHED)
    for flights in watched:
        flights.detach_tagged(tags)


def _invalidation(tags: tuple[str, ...]) -> dict[FullKey, tuple[Any, None]]:
    return {tag_key(tag): (new_version(), None) for tag in _checked_tags(tags, "tags")}


def _targets(cache: BaseCache[Any] | None) -> list[tuple[BaseCache[Any], bool]]:
    """The given cache; else the configured one and every cache given to a tagged function
    of this process, each once: an entry is forgotten wherever its function stores it.
    Each with whether it was found rather than named (a closed one is then passed over)."""
    if cache is not None:
        if not is_cache_like(cache):
            raise not_a_cache(cache, "a cache object (a URL would open another one), or None")
        return [(cache, False)]
    with _WATCHED_LOCK:
        given = list(_CACHES)
    targets = [(default_cache(), False)]
    for other in given:
        if all(other is not known for known, _ in targets):
            targets.append((other, True))
    return targets


def _confirm(cache: Any, pairs: dict[FullKey, tuple[Any, None]], found: dict[FullKey, Any]) -> None:
    """Raise unless every tag reads back a version (its write raised if it failed). Not
    necessarily ours: another invalidation of the same tag may have landed after it."""
    lost = [key[1] for key in pairs if found.get(key) is None]
    if lost:
        raise BackendError(
            f"invalidating tags {lost!r} was not confirmed by the cache: their entries may "
            "still be served; retry when the cache answers"
        )
    hook = getattr(cache, "record_tag_invalidations", None)
    if hook is not None:
        hook(len(pairs))


class _Run:
    """One ``invalidate_tags``: its new versions, the caches it reaches, those that took the
    write, and what failed (the twins below do only the I/O)."""

    def __init__(self, tags: tuple[str, ...], cache: BaseCache[Any] | None) -> None:
        self.pairs = _invalidation(tags)
        self.keys = list(self.pairs)
        self.targets = _targets(cache)
        self.written: list[BaseCache[Any]] = []
        self.failures: list[Exception] = []

    def failed(self, exc: Exception, found: bool = False) -> None:
        """Record a failure; a cache found (not named) that is closed is passed over."""
        if not (found and isinstance(exc, CacheClosedError)):
            self.failures.append(exc)

    def finish(self) -> None:
        """After every cache was tried: raise the first failure, saying how many failed."""
        failures, reached = self.failures, len(self.targets)
        if not failures:
            return
        if len(failures) == 1 and reached == 1:
            raise failures[0]
        raise BackendError(
            f"invalidating tags failed in {len(failures)} of {reached} caches (first: "
            f"{type(failures[0]).__name__}: {failures[0]}); the others forgot their entries"
        ) from failures[0]


def invalidate_tags(*tags: str, cache: BaseCache[Any] | None = None) -> None:
    """Forget every entry cached with any of ``tags``, whatever function stored it, in O(1)
    per tag: in ``cache``, or by default in the configured cache and in every open cache
    given to a tagged function of this process. Raises ``BackendError`` if a cache did not
    take the new versions (then retry), after trying every cache."""
    run = _Run(tags, cache)
    with failures_raise():  # a fail-open stack would drop a failed write, and closing too
        for target, found in run.targets:
            try:
                target.set(run.pairs)
            except Exception as exc:
                run.failed(exc, found)
            else:
                run.written.append(target)
        _detach(run.pairs)
        for target in run.written:
            try:
                _confirm(target, run.pairs, target.get(run.keys))
            except Exception as exc:
                run.failed(exc)
    run.finish()


async def ainvalidate_tags(*tags: str, cache: BaseCache[Any] | None = None) -> None:
    """Async twin of :func:`invalidate_tags`."""
    run = _Run(tags, cache)
    with failures_raise():
        for target, found in run.targets:
            try:
                await target.aset(run.pairs)
            except Exception as exc:
                run.failed(exc, found)
            else:
                run.written.append(target)
        _detach(run.pairs)
        for target in run.written:
            try:
                _confirm(target, run.pairs, await target.aget(run.keys))
            except Exception as exc:
                run.failed(exc)
    run.finish()
