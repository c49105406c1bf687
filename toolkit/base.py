"""The seed cache API (LangGraph's ``BaseCache``) and the validation every backend shares."""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Generic

from toolkit._types import EvictionCause, EvictionListener, FullKey, Namespace, SerializerProtocol, ValueT
from toolkit.serde import SafeSerializer

__all__ = [
    "BaseCache",
    "EvictionNotifier",
    "check_keys",
    "check_namespaces",
    "check_pairs",
    "check_ttl",
]

_REPR_LIMIT = 80


def _short(obj: object) -> str:
    text = repr(obj)
    return text if len(text) <= _REPR_LIMIT else text[: _REPR_LIMIT - 3] + "..."


def _check_text(part: object, what: str, where: object) -> None:
    if not isinstance(part, str):
        raise TypeError(f"{what} must be str, got {type(part).__name__} in {_short(where)}")
    # Lone surrogates cannot be stored by SQLite or Redis; refuse them everywhere alike.
    if not part.isascii():
        try:
            part.encode("utf-8")
        except UnicodeEncodeError:
            raise ValueError(
                f"{what} is not valid UTF-8 text (lone surrogate) in {_short(where)}"
            ) from None


def check_namespace(ns: object) -> Namespace:
    """Return ``ns`` if it is a tuple of str, else raise ``TypeError``/``ValueError``."""
    if not isinstance(ns, tuple):
        raise TypeError(f"namespace must be a tuple of str, got {type(ns).__name__}: {_short(ns)}")
    for part in ns:
        _check_text(part, "namespace part", ns)
    return ns


def check_key(full_key: object) -> FullKey:
    """Return ``full_key`` if it is ``(tuple[str, ...], str)``, else raise."""
    if not isinstance(full_key, tuple) or len(full_key) != 2:
        raise TypeError(
            f"cache key must be a (namespace tuple, str) pair, got {type(full_key).__name__}: "
            f"{_short(full_key)}"
        )
    ns, key = full_key
    check_namespace(ns)
    _check_text(key, "key", full_key)
    return full_key


def _plainly_valid(full_key: object) -> bool:
    """Cheap accept-only test for the common shape: ASCII str parts in exact tuples."""
    if type(full_key) is not tuple or len(full_key) != 2:
        return False
    ns, key = full_key
    if type(ns) is not tuple or type(key) is not str or not key.isascii():
        return False
    return all(type(part) is str and part.isascii() for part in ns)


def _plainly_valid(full_key: object) -> bool:
    """Cheap accept-only test for the common shape: ASCII str parts in exact tuples."""
    if type(full_key) is not tuple or len(full_key) != 2:
        return False
    ns, key = full_key
    if type(ns) is not tuple or type(key) is not str or not key.isascii():
        return False
    for part in ns:  # noqa: SIM110 - a plain loop beats all() over a generator here
        if type(part) is not str or not part.isascii():
            return False
    return True


def check_keys(keys: Sequence[FullKey]) -> Sequence[FullKey]:
    """Validate every key of a batch before any I/O; returns the batch unchanged."""
    if type(keys) is list and all(map(_plainly_valid, keys)):
        return keys  # the hot path of every get: skip the ABC isinstance and per-part checks
    if type(keys) is list and all(map(_plainly_valid, keys)):
        return keys  # the hot path of every get: skip the ABC isinstance and per-part checks
    if isinstance(keys, (str, bytes)) or not isinstance(keys, Iterable):
        raise TypeError(f"keys must be a sequence of (namespace, key) pairs, got {_short(keys)}")
    for full_key in keys:
        check_key(full_key)
    return keys


def check_ttl(ttl: object, where: object = None) -> float | None:
    """Return a ttl in seconds (``None`` = never expires); reject bools, non-numbers and ttl <= 0."""
    if ttl is None:
        return None
    if isinstance(ttl, bool) or not isinstance(ttl, (int, float)):
        raise TypeError(f"ttl must be int, float or None (seconds), got {type(ttl).__name__} for {_short(where)}")
    if not ttl > 0 or not math.isfinite(ttl):
        raise ValueError(f"ttl must be a finite number of seconds > 0 (None never expires), got {ttl!r} for {_short(where)}")
    return float(ttl)


def check_pairs(pairs: Mapping[FullKey, tuple[Any, int | None]]) -> list[tuple[FullKey, Any, float | None]]:
    """Validate a whole ``set`` batch before anything is written; returns ``(key, value, ttl)`` rows."""
    if not isinstance(pairs, Mapping):
        raise TypeError(f"set() takes a mapping of key -> (value, ttl), got {type(pairs).__name__}")
    rows: list[tuple[FullKey, Any, float | None]] = []
    for full_key, entry in pairs.items():
        check_key(full_key)
        if not isinstance(entry, tuple) or len(entry) != 2:
            raise TypeError(
                f"set() values must be (value, ttl) pairs, got {type(entry).__name__} for {_short(full_key)}"
            )
        value, ttl = entry
        rows.append((full_key, value, check_ttl(ttl, full_key)))
    return rows


def check_namespaces(namespaces: Sequence[Namespace] | None) -> Sequence[Namespace] | None:
    """Validate the argument of ``clear``; ``None`` means every entry of this cache."""
    if namespaces is None:
        return None
    if isinstance(namespaces, (str, bytes)) or not isinstance(namespaces, Iterable):
        raise TypeError(f"namespaces must be a sequence of tuples of str or None, got {_short(namespaces)}")
    for ns in namespaces:
        check_namespace(ns)
    return namespaces


class EvictionNotifier:
    """Mixin that lets a backend report evictions to listeners (the metrics layer)."""

    _eviction_listeners: tuple[EvictionListener, ...] = ()

    def add_eviction_listener(self, listener: EvictionListener) -> None:
        """Register ``listener(namespace, cause, count)`` for every future eviction."""
        self._eviction_listeners = (*self._eviction_listeners, listener)

    def _notify_eviction(self, ns: Namespace, cause: EvictionCause, count: int = 1) -> None:
        for listener in self._eviction_listeners:
            try:
                listener(ns, cause, count)
            except Exception:  # noqa: BLE001 - a listener must never break the cache
                pass


class BaseCache(ABC, Generic[ValueT]):
    """Base class for a cache."""

    serde: SerializerProtocol = SafeSerializer()

    def __init__(self, *, serde: SerializerProtocol | None = None) -> None:
        """Initialize the cache with a serializer."""
        self.serde = serde if serde is not None else self.serde

    @abstractmethod
    def get(self, keys: Sequence[FullKey]) -> dict[FullKey, ValueT]:
        """Get the cached values for the given keys."""

    @abstractmethod
    async def aget(self, keys: Sequence[FullKey]) -> dict[FullKey, ValueT]:
        """Asynchronously get the cached values for the given keys."""

    @abstractmethod
    def set(self, pairs: Mapping[FullKey, tuple[ValueT, int | None]]) -> None:
        """Set the cached values for the given keys and TTLs."""

    @abstractmethod
    async def aset(self, pairs: Mapping[FullKey, tuple[ValueT, int | None]]) -> None:
        """Asynchronously set the cached values for the given keys and TTLs."""

    @abstractmethod
    def clear(self, namespaces: Sequence[Namespace] | None = None) -> None:
        """Delete the cached values for the given namespaces.
        If no namespaces are provided, clear all cached values."""

    @abstractmethod
    async def aclear(self, namespaces: Sequence[Namespace] | None = None) -> None:
        """Asynchronously delete the cached values for the given namespaces.
        If no namespaces are provided, clear all cached values."""
