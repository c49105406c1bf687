"""A bounded, thread-safe in-process cache with TTL and LRU eviction."""

from __future__ import annotations

import sys
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

from toolkit._fork import start_afresh_in_children
from toolkit._types import EvictionCause, FullKey, Namespace, SerializerProtocol, ValueT
from toolkit.base import (
    BaseCache,
    EvictionNotifier,
    check_keys,
    check_namespace,
    check_namespaces,
    checked_pairs,
)
from toolkit.errors import NotCacheableError
from toolkit.introspect import CacheStats, KeyInfo
from toolkit.lease import LeaseRequest, LeaseTable, check_lease

__all__ = ["InMemoryCache"]

# An entry that never expires is its payload alone when the serializer tagged it with the
# cache's usual tag (the first one it stored), else the serializer's own (type tag, payload)
# tuple; one that expires is (type tag, payload, monotonic expiry). A tuple costs 64 bytes
# an entry: most entries carry none. An immutable scalar is kept as itself under the tag
# ``None`` (no serializer's tag): a copy exists to keep callers from mutating a cached
# value, and these cannot be mutated.
_Entry = bytes | tuple[str | None, Any] | tuple[str | None, Any, float]
_AS_ITSELF = frozenset({int, float, bool, bytes, type(None)})
_Evicted = list[tuple[Namespace, EvictionCause]]

DEFAULT_MAX_ENTRIES = 10_000
_SWEEP_INTERVAL = 1.0


class InMemoryCache(EvictionNotifier, BaseCache[ValueT]):
    """In-process cache: values stored serialized (immutable scalars as themselves), TTL on a
    monotonic clock, LRU size bound."""

    backend_name = "memory"
    reads_never_fail = True
    """A get raises only for malformed keys: undecodable entries are dropped as misses."""
    in_process = True
    """No call waits on I/O, and each async call is its sync twin."""

    def __init__(
        self,
        *,
        serde: SerializerProtocol | None = None,
        max_entries: int | None = DEFAULT_MAX_ENTRIES,
        timer: Callable[[], float] = time.monotonic,
    ) -> None:
        """Initialize with a serializer, a size bound (``None`` = unbounded) and a clock."""
        super().__init__(serde=serde if serde is not None else BaseCache.serde)
        if max_entries is not None and (isinstance(max_entries, bool) or max_entries < 1):
            raise ValueError(f"max_entries must be a positive int or None, got {max_entries!r}")
        self._max_entries = max_entries
        self._timer = timer
        self._lock = threading.Lock()
        start_afresh_in_children(self, InMemoryCache._after_fork)
        # LRU order costs an OrderedDict (~50 bytes and ~40 ns per entry): only a bound needs it.
        self._lru: OrderedDict[FullKey, _Entry] | None = (
            None if max_entries is None else OrderedDict()
        )
        self._data: dict[FullKey, _Entry] = {} if self._lru is None else self._lru
        self._next_sweep = timer() + _SWEEP_INTERVAL
        self._expiring = False  # whether any entry was ever stored with a ttl
        # Fixed by the first payload stored, and never changed after: a bare payload keeps
        # meaning the tag it was stored under, even if ``serde`` is replaced.
        self._usual_tag: str | None = None
        self._leases = LeaseTable(timer)

    @property
    def max_entries(self) -> int | None:
        """The size bound (``None`` = unbounded), fixed at construction."""
        return self._max_entries

    @property
    def serde(self) -> SerializerProtocol:
        """The serializer of stored values."""
        return self._serde

    @serde.setter
    def serde(self, serde: SerializerProtocol) -> None:
        # Its methods are bound once here, not on every get and set (~30 ns each).
        self._serde = serde
        self._dumps = serde.dumps_typed
        self._loads = serde.loads_typed

    def _adopt_tag(self, tag: str) -> str:
        """Make ``tag`` the usual one unless another thread's first payload already did."""
        with self._lock:
            if self._usual_tag is None:
                self._usual_tag = tag
            return self._usual_tag

    # -- shared logic (no I/O: the async twins call these directly) --

    def get(self, keys: Sequence[FullKey]) -> dict[FullKey, ValueT]:
        """Get the cached values for the given keys."""
        keys = check_keys(keys)
        values: dict[FullKey, ValueT] = {}
        evicted: _Evicted = []
        now: float | None = None  # read the clock only for an entry that can expire
        lookup = self._data.get  # bound once per batch
        bump = None if self._lru is None else self._lru.move_to_end
        loads: Callable[[Any], Any] = self._loads  # given only entries of a serializer's tag
        for full_key in keys:
            # Lock-free hit path: dict.get and move_to_end are each atomic under the GIL,
            # and a concurrent delete between them only costs the LRU bump.
            entry = lookup(full_key)
            if entry is None:
                continue
            if isinstance(entry, bytes):  # narrows for mypy where ``type() is`` would not
                typed: tuple[str | None, Any] = (self._usual_tag, entry)
            elif len(entry) == 3:
                if now is None:
                    now = self._timer()
                if now >= entry[2]:
                    if self._discard(full_key, entry):
                        evicted.append((full_key[0], "expired"))
                    continue
                typed = (entry[0], entry[1])
            else:
                typed = entry
            if bump is not None:
                try:  # noqa: SIM105 - try/except is free in 3.11; suppress() costs ~200 ns a key
                    bump(full_key)
                except KeyError:
                    pass
            if typed[0] is None:  # a scalar kept as itself
                values[full_key] = typed[1]
                continue
            try:
                values[full_key] = loads(typed)
            except Exception:
                # Undecodable bytes are a miss; drop them so they cannot fail again.
                if self._discard(full_key, entry):
                    evicted.append((full_key[0], "invalid"))
        if evicted:
            self._report(evicted)
        return values

    def set(self, pairs: Mapping[FullKey, tuple[ValueT, int | None]]) -> None:
        """Set the cached values for the given keys."""
        # Each row is validated and encoded before the lock is taken (a bad row raises
        # with nothing written), in one loop calling the serializer directly: a helper
        # per value would cost a tenth of a large batch.
        staged: dict[FullKey, _Entry] = {}
        refused: list[FullKey] | None = None
        dumps, usual, now = self._dumps, self._usual_tag, None
        for full_key, value, ttl in checked_pairs(pairs):
            kind = type(value)
            if (
                kind is not dict
                and kind is not list
                and (  # the common values skip the tests
                    kind in _AS_ITSELF
                    or (kind is str and value.isascii())
                    or (kind is tuple and all(map(_scalar, value)))
                )
            ):
                tag, payload = None, value
            else:
                try:
                    tag, payload = dumps(value)
                except NotCacheableError as exc:
                    self._refuse(full_key, exc)
                    if refused is None:
                        refused = []
                    refused.append(full_key)
                    continue
            if ttl is not None:
                if now is None:
                    now = self._timer()
                staged[full_key] = (tag, payload, now + ttl)
                continue
            if tag is not None and type(payload) is bytes:
                if usual is None:
                    usual = self._adopt_tag(tag)
                if tag is usual or tag == usual:  # the payload alone stands for the pair
                    staged[full_key] = payload
                    continue
            staged[full_key] = (tag, payload)
        if staged or refused:
            self._write(staged, refused, now)

    def _write(
        self, staged: dict[FullKey, _Entry], refused: list[FullKey] | None, now: float | None
    ) -> None:
        """Store ``staged`` and delete ``refused`` (values the serializer refused: the old
        value must not outlive this set) under the lock; ``now``: when the ttls count from."""
        evicted: _Evicted | None = None
        data, lru = self._data, self._lru
        lock = self._lock
        lock.acquire()  # not ``with``: its protocol costs ~50 ns more than the two calls
        try:
            if refused:
                for full_key in refused:
                    data.pop(full_key, None)
            if lru is None:
                data.update(staged)
            else:  # one by one: OrderedDict.update is slower, and would not move old keys
                for full_key, entry in staged.items():
                    if full_key in lru:  # it moves last, as a new key lands
                        lru.move_to_end(full_key)
                    lru[full_key] = entry
            if now is not None:
                self._expiring = True
            # Until some entry has had a ttl there is nothing to sweep, and no clock to read.
            if self._expiring:
                if now is None:
                    now = self._timer()
                if now >= self._next_sweep:
                    evicted = self._sweep(now)
            limit = self._max_entries
            if lru is not None and limit is not None and len(lru) > limit:
                evicted = evicted or []
                while len(lru) > limit:
                    oldest, _ = lru.popitem(last=False)
                    evicted.append((oldest[0], "size"))
        finally:
            lock.release()
        if evicted:
            self._report(evicted)

    def clear(self, namespaces: Sequence[Namespace] | None = None) -> None:
        """Delete the cached values for the given namespaces.
        If no namespaces are provided, clear all cached values."""
        namespaces = check_namespaces(namespaces)
        with self._lock:
            if namespaces is None:
                self._data.clear()
                return
            doomed = set(namespaces)
            if doomed:
                # A scan, not an index: clear is rare and an index would tax every set.
                # list() copies in one C call, atomic under the GIL: lock-free gets may
                # reorder the dict meanwhile, which would break a Python-level iteration.
                for full_key in [k for k in list(self._data) if k[0] in doomed]:
                    del self._data[full_key]

    def delete(self, keys: Sequence[FullKey]) -> None:
        """Delete exactly these keys (an extension: the seed API deletes whole namespaces)."""
        keys = check_keys(keys)
        with self._lock:
            for full_key in keys:
                self._data.pop(full_key, None)

    async def adelete(self, keys: Sequence[FullKey]) -> None:
        """Asynchronously delete exactly these keys."""
        self.delete(keys)

    def lease(self, request: LeaseRequest) -> bool:
        """Take, extend or give back a lease on a key (see ``toolkit.lease``): one holder per
        key across every thread and event loop of this process."""
        return self._leases.apply(check_lease(request))

    async def alease(self, request: LeaseRequest) -> bool:
        """Async twin of :meth:`lease`."""
        return self.lease(request)

    async def aget(self, keys: Sequence[FullKey]) -> dict[FullKey, ValueT]:
        """Asynchronously get the cached values for the given keys."""
        return self.get(keys)

    async def aset(self, pairs: Mapping[FullKey, tuple[ValueT, int | None]]) -> None:
        """Asynchronously set the cached values for the given keys."""
        self.set(pairs)

    async def aclear(self, namespaces: Sequence[Namespace] | None = None) -> None:
        """Asynchronously delete the cached values for the given namespaces.
        If no namespaces are provided, clear all cached values."""
        self.clear(namespaces)

    def entry_count(self) -> int:
        """Return the number of stored entries (expired ones not yet purged included)."""
        return len(self._data)

    def purge_expired(self) -> int:
        """Drop every expired entry now; returns how many were dropped."""
        with self._lock:
            evicted = self._sweep(self._timer())
        self._report(evicted)
        return len(evicted)

    # -- introspection (SupportsIntrospection; in-process only: memory:// is per process) --

    def stats(self) -> CacheStats:
        """Entries, value bytes, expired entries not yet purged, and entries per namespace."""
        now = self._timer()
        entries = list(self._data.items())  # an atomic copy; see clear()
        return CacheStats.tally(
            (
                (full_key[0], 1, _size(entry), int(_expired(entry, now)))
                for full_key, entry in entries
            ),
            expires_itself=False,
        )

    def namespaces(self) -> dict[Namespace, int]:
        """Entries per namespace (expired ones not yet purged included)."""
        return self.stats().namespaces

    def iter_keys(self, namespace: Namespace) -> Iterator[KeyInfo]:
        """The live keys of exactly ``namespace``, least recently used first."""
        ns = check_namespace(namespace)
        now = self._timer()
        for (entry_ns, key), entry in list(self._data.items()):
            expiry = _expiry(entry)
            if entry_ns == ns and (expiry is None or now < expiry):
                yield KeyInfo(key, None if expiry is None else expiry - now)

    # -- end of introspection --

    # -- internals --

    def _after_fork(self) -> None:
        """A forked child keeps the entries, not a lock one of the parent's threads held."""
        self._lock = threading.Lock()

    def _discard(self, full_key: FullKey, entry: _Entry) -> bool:
        """Delete ``full_key`` if it still holds ``entry``; True if this call deleted it."""
        with self._lock:
            if self._data.get(full_key) is entry:
                del self._data[full_key]
                return True
        return False

    def _sweep(self, now: float) -> _Evicted:
        """Drop expired entries; the caller holds the lock."""
        self._next_sweep = now + _SWEEP_INTERVAL
        entries = list(self._data.items())  # an atomic copy; see clear()
        expired = [
            k
            for k, entry in entries
            if type(entry) is tuple and len(entry) == 3 and now >= entry[2]
        ]
        for full_key in expired:
            del self._data[full_key]
        return [(full_key[0], "expired") for full_key in expired]

    def _report(self, evicted: _Evicted) -> None:
        if not evicted or not self._eviction_listeners:
            return
        counts: dict[tuple[Namespace, EvictionCause], int] = {}
        for item in evicted:
            counts[item] = counts.get(item, 0) + 1
        for (ns, cause), count in counts.items():
            self._notify_eviction(ns, cause, count)


def _scalar(value: object) -> bool:
    """An immutable scalar: ASCII text only, as other text goes through the serializer,
    which refuses lone surrogates as every backend must."""
    if type(value) is str:
        return value.isascii()
    return type(value) in _AS_ITSELF


def _size(entry: _Entry) -> int:
    """The bytes of an entry's value: its payload, or a scalar kept as itself."""
    value = entry if type(entry) is bytes else entry[1]
    if isinstance(value, (bytes, str)):
        return len(value)
    return 0 if value is None else sys.getsizeof(value)


def _expiry(entry: _Entry) -> float | None:
    return entry[2] if type(entry) is tuple and len(entry) == 3 else None


def _expired(entry: _Entry, now: float) -> bool:
    expiry = _expiry(entry)
    return expiry is not None and now >= expiry
