"""A bounded, thread-safe in-process cache with TTL and LRU eviction."""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence

from toolkit._types import EvictionCause, FullKey, Namespace, SerializerProtocol, ValueT
from toolkit.base import BaseCache, EvictionNotifier, check_keys, check_namespaces, check_pairs

__all__ = ["InMemoryCache"]

_Entry = tuple[str, bytes, float | None]  # (type tag, payload, monotonic expiry or None)
_Evicted = list[tuple[Namespace, EvictionCause]]

DEFAULT_MAX_ENTRIES = 10_000
_SWEEP_INTERVAL = 1.0


class InMemoryCache(EvictionNotifier, BaseCache[ValueT]):
    """In-process cache: values stored serialized, TTL on a monotonic clock, LRU size bound."""

    backend_name = "memory"

    def __init__(
        self,
        *,
        serde: SerializerProtocol | None = None,
        max_entries: int | None = DEFAULT_MAX_ENTRIES,
        timer: Callable[[], float] = time.monotonic,
    ) -> None:
        """Initialize with a serializer, a size bound (``None`` = unbounded) and a clock."""
        super().__init__(serde=serde)
        if max_entries is not None and (isinstance(max_entries, bool) or max_entries < 1):
            raise ValueError(f"max_entries must be a positive int or None, got {max_entries!r}")
        self.max_entries = max_entries
        self._timer = timer
        self._lock = threading.Lock()
        self._data: OrderedDict[FullKey, _Entry] = OrderedDict()
        self._by_ns: dict[Namespace, set[str]] = {}
        self._next_sweep = timer() + _SWEEP_INTERVAL

    # -- shared logic (no I/O: the async twins call these directly) --

    def get(self, keys: Sequence[FullKey]) -> dict[FullKey, ValueT]:
        """Get the cached values for the given keys."""
        check_keys(keys)
        if not keys:
            return {}
        found: dict[FullKey, tuple[str, bytes]] = {}
        evicted: _Evicted = []
        with self._lock:
            now = self._timer()
            data = self._data
            for full_key in keys:
                entry = data.get(full_key)
                if entry is None:
                    continue
                expiry = entry[2]
                if expiry is not None and now >= expiry:
                    self._drop(full_key)
                    evicted.append((full_key[0], "expired"))
                    continue
                data.move_to_end(full_key)
                found[full_key] = (entry[0], entry[1])
        values: dict[FullKey, ValueT] = {}
        loads = self.serde.loads_typed
        for full_key, typed in found.items():
            try:
                values[full_key] = loads(typed)
            except Exception:
                # Undecodable bytes are a miss; drop them so they cannot fail again.
                with self._lock:
                    if self._data.get(full_key, (None, None))[1] is typed[1]:
                        self._drop(full_key)
                evicted.append((full_key[0], "invalid"))
        self._report(evicted)
        return values

    def set(self, pairs: Mapping[FullKey, tuple[ValueT, int | None]]) -> None:
        """Set the cached values for the given keys."""
        rows = check_pairs(pairs)
        if not rows:
            return
        dumps = self.serde.dumps_typed
        encoded = [(full_key, *dumps(value), ttl) for full_key, value, ttl in rows]
        evicted: _Evicted = []
        with self._lock:
            now = self._timer()
            data = self._data
            for full_key, tag, payload, ttl in encoded:
                ns, key = full_key
                data[full_key] = (tag, payload, None if ttl is None else now + ttl)
                data.move_to_end(full_key)
                members = self._by_ns.get(ns)
                if members is None:
                    self._by_ns[ns] = {key}
                else:
                    members.add(key)
            if now >= self._next_sweep:
                self._sweep(now, evicted)
            limit = self.max_entries
            if limit is not None:
                while len(data) > limit:
                    oldest = next(iter(data))
                    self._drop(oldest)
                    evicted.append((oldest[0], "size"))
        self._report(evicted)

    def clear(self, namespaces: Sequence[Namespace] | None = None) -> None:
        """Delete the cached values for the given namespaces.
        If no namespaces are provided, clear all cached values."""
        check_namespaces(namespaces)
        with self._lock:
            if namespaces is None:
                self._data.clear()
                self._by_ns.clear()
                return
            for ns in namespaces:
                for key in self._by_ns.pop(ns, ()):
                    self._data.pop((ns, key), None)

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
        evicted: _Evicted = []
        with self._lock:
            self._sweep(self._timer(), evicted)
        self._report(evicted)
        return len(evicted)

    # -- internals; callers hold the lock --

    def _drop(self, full_key: FullKey) -> None:
        del self._data[full_key]
        ns, key = full_key
        members = self._by_ns.get(ns)
        if members is not None:
            members.discard(key)
            if not members:
                del self._by_ns[ns]

    def _sweep(self, now: float, evicted: _Evicted) -> None:
        self._next_sweep = now + _SWEEP_INTERVAL
        expired = [k for k, (_, _, exp) in self._data.items() if exp is not None and now >= exp]
        for full_key in expired:
            self._drop(full_key)
            evicted.append((full_key[0], "expired"))

    def _report(self, evicted: _Evicted) -> None:
        if not evicted or not self._eviction_listeners:
            return
        counts: dict[tuple[Namespace, EvictionCause], int] = {}
        for item in evicted:
            counts[item] = counts.get(item, 0) + 1
        for (ns, cause), count in counts.items():
            self._notify_eviction(ns, cause, count)
