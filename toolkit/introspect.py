"""Looking inside a cache: entry counts, stored bytes, namespaces and keys (never values).

``SqliteCache``, ``RedisCache`` and ``InMemoryCache`` implement :class:`SupportsIntrospection`;
the ``toolkit`` command's ``stats``, ``ls`` and ``purge`` use nothing else.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import NamedTuple, Protocol, runtime_checkable

from toolkit._types import Namespace

__all__ = ["CacheStats", "KeyInfo", "SupportsIntrospection"]


@dataclass(frozen=True)
class CacheStats:
    """What a cache holds, counted in one pass."""

    entries: int
    """Stored entries, expired ones not yet purged included."""
    bytes: int
    """Stored value bytes as serialized (keys and the store's own overhead not counted)."""
    expired: int | None
    """Entries past their expiry still stored; ``None`` where the store drops them itself."""
    namespaces: dict[Namespace, int] = field(default_factory=dict)
    """Entries per namespace."""
    unnamed: int = 0
    """Entries whose namespace cannot be read back (Redis hashes namespaces over 120 bytes)."""

    @classmethod
    def tally(
        cls, rows: Iterable[tuple[Namespace | None, int, int, int]], *, expires_itself: bool
    ) -> CacheStats:
        """Sum ``(namespace or None, entries, bytes, expired)`` rows into one ``CacheStats``."""
        namespaces: dict[Namespace, int] = {}
        entries = size = expired = unnamed = 0
        for ns, count, nbytes, nexpired in rows:
            entries += count
            size += nbytes
            expired += nexpired
            if ns is None:
                unnamed += count
            else:
                namespaces[ns] = namespaces.get(ns, 0) + count
        return cls(entries, size, None if expires_itself else expired, namespaces, unnamed)


class KeyInfo(NamedTuple):
    """One stored key of a namespace, as ``iter_keys`` lists it."""

    key: str
    """The key; a Redis key over 120 bytes is stored hashed and listed as ``#<digest>``."""
    expires_in: float | None
    """Seconds left to live, ``None`` for an entry without expiry."""


@runtime_checkable
class SupportsIntrospection(Protocol):
    """A cache that can describe its contents (for tools such as the ``toolkit`` command)."""

    def stats(self) -> CacheStats:
        """Entries, bytes, expired entries and entries per namespace."""
        ...

    def namespaces(self) -> dict[Namespace, int]:
        """Entries per namespace."""
        ...

    def iter_keys(self, namespace: Namespace) -> Iterator[KeyInfo]:
        """The live keys of exactly ``namespace`` (not its children); never values."""
        ...

    def purge_expired(self) -> int:
        """Delete the expired entries now; returns how many went."""
        ...
