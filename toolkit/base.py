"""The seed cache API (LangGraph's ``BaseCache``) and the validation every backend shares."""

from __future__ import annotations

import contextlib
import logging
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Generic

from toolkit._types import (
    EvictionCause,
    EvictionListener,
    FullKey,
    Namespace,
    SerializerProtocol,
    ValueT,
)
from toolkit.errors import CacheError, NotCacheableError
from toolkit.serde import SafeSerializer

__all__ = [
    "MAX_TTL",
    "BaseCache",
    "EvictionNotifier",
    "check_keys",
    "check_namespaces",
    "check_pairs",
    "check_ttl",
    "checked_pairs",
    "is_refusal",
    "key_sequence",
    "validate_pairs",
    "warn_uncacheable",
]

_REPR_LIMIT = 80
_MAX_INT_TTL = 100 * 365 * 86400
_log = logging.getLogger("toolkit")
_warned: set[str] = set()
_WARN_LIMIT = 256


def warn_uncacheable(error: NotCacheableError) -> None:
    """Log a serializer refusal once per distinct message (it names a type, never a value)."""
    text = str(error)
    if text in _warned or len(_warned) >= _WARN_LIMIT:
        return
    _warned.add(text)
    _log.warning("value not cached: %s", text)


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


# Namespaces already proven valid: a handful per application, so checking one is a set lookup.
_KNOWN_NAMESPACES: set[Namespace] = set()
_KNOWN_LIMIT = 4096


def check_namespace(ns: object) -> Namespace:
    """Return ``ns`` if it is a tuple of str, else raise ``TypeError``/``ValueError``."""
    if type(ns) is tuple:
        try:
            if ns in _KNOWN_NAMESPACES:
                return ns
        except TypeError:  # an unhashable part: the full check below names it
            pass
    if not isinstance(ns, tuple):
        raise TypeError(f"namespace must be a tuple of str, got {type(ns).__name__}: {_short(ns)}")
    for part in ns:
        _check_text(part, "namespace part", ns)
    if type(ns) is tuple and all(type(part) is str for part in ns):
        if len(_KNOWN_NAMESPACES) >= _KNOWN_LIMIT:
            _KNOWN_NAMESPACES.clear()
        _KNOWN_NAMESPACES.add(ns)
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
    if type(key) is not str or not key.isascii():
        _check_text(key, "key", full_key)
    return full_key


def key_sequence(keys: Iterable[FullKey]) -> Sequence[FullKey]:
    """``keys`` as a sequence: a list or tuple as is, any other iterable read once into a list.

    A str or bytes (a common slip for one key) and non-iterables are ``TypeError``.
    """
    if type(keys) is list or type(keys) is tuple:
        return keys
    raw: object = keys  # callers break the annotation; check what really arrived
    if isinstance(raw, (str, bytes)) or not isinstance(raw, Iterable):
        raise TypeError(f"keys must be a sequence of (namespace, key) pairs, got {_short(raw)}")
    return list(raw)


def check_keys(keys: Iterable[FullKey]) -> Sequence[FullKey]:
    """Validate every key of a batch before any I/O; returns it as a sequence (see
    ``key_sequence``: a one-shot iterable is read once)."""
    if type(keys) is not list and type(keys) is not tuple:  # the call costs a third of a key
        keys = key_sequence(keys)
    known = _KNOWN_NAMESPACES
    # The namespace of the key before, proven valid: a batch's keys usually share one
    # tuple, and an identity test spares hashing it again (tuples do not cache hashes).
    last_ns: object = None
    for full_key in keys:
        # Fast path for the common case; anything unusual takes the full check.
        try:
            if (
                type(full_key) is tuple
                and len(full_key) == 2
                and (full_key[0] is last_ns or full_key[0] in known)
                and type(full_key[1]) is str
                and full_key[1].isascii()
            ):
                last_ns = full_key[0]
                continue
        except TypeError:
            pass
        last_ns = check_key(full_key)[0]
    return keys


MAX_TTL = 100 * 365.25 * 86400
"""The longest ttl accepted (100 years): longer is a mistake, and overflows some backends."""


def check_ttl(ttl: object, where: object = None, *, allow_zero: bool = True) -> float | None:
    """Return a ttl in seconds (``None`` = never expires, ``0`` = expires at once).

    ``0`` is what LangGraph's ``CachePolicy(ttl=0)`` passes (the node always runs); it is
    accepted by ``set`` and stores nothing readable. Negative, non-finite and longer than
    ``MAX_TTL`` (100 years) are ``ValueError``; non-numbers ``TypeError``.
    """
    if ttl is None:
        return None
    if isinstance(ttl, bool) or not isinstance(ttl, (int, float)):
        raise TypeError(
            f"ttl must be int, float or None (seconds), "
            f"got {type(ttl).__name__} for {_short(where)}"
        )
    least = ">= 0" if allow_zero else "> 0"
    if not (ttl >= 0 if allow_zero else ttl > 0) or not ttl <= MAX_TTL:  # NaN fails both
        raise ValueError(
            f"ttl must be a finite number of seconds, {least} and at most {MAX_TTL:.0f} "
            f"(100 years; None never expires), got {_short(ttl)} for {_short(where)}"
        )
    return float(ttl)


def check_pairs(
    pairs: Mapping[FullKey, tuple[Any, int | None]],
    encode: Callable[[Any], Any] | None = None,
    refused: Callable[[FullKey, NotCacheableError], None] | None = None,
) -> list[tuple[FullKey, Any, float | None]]:
    """Validate (and, given ``encode``, encode) a whole ``set`` batch before anything is written.

    Returns ``(key, value, ttl)`` rows, with ``value`` replaced by ``encode(value)`` if given;
    the first bad key, entry or ttl raises before the caller writes. A value the serializer
    refuses is handed to ``refused`` (re-raised when it is ``None``) and its row kept with
    the value ``None``: the caller deletes that key in the same write, as a set replaces and
    the old value must not be served as if the refused one had never been set.
    """
    return list(checked_pairs(pairs, encode, refused))


def validate_pairs(pairs: Mapping[FullKey, tuple[Any, int | None]]) -> None:
    """Validate a ``set`` batch as :func:`check_pairs` does, keeping none of its rows: for a
    layer in front of a cache that stores the batch itself."""
    for _ in checked_pairs(pairs):
        pass


def checked_pairs(
    pairs: Mapping[FullKey, tuple[Any, int | None]],
    encode: Callable[[Any], Any] | None = None,
    refused: Callable[[FullKey, NotCacheableError], None] | None = None,
) -> Iterator[tuple[FullKey, Any, float | None]]:
    """The rows of :func:`check_pairs`, each validated as it is read: for a caller that
    writes nothing until it has read them all (``InMemoryCache`` stages its entries)."""
    raw: object = pairs
    if type(raw) is not dict and not isinstance(raw, Mapping):
        raise TypeError(f"set() takes a mapping of key -> (value, ttl), got {type(raw).__name__}")
    known = _KNOWN_NAMESPACES
    last_ns: object = None  # as in check_keys
    for full_key, entry in pairs.items():
        # The common row passes one test; any other takes the full checks, which name it.
        common = False
        if type(full_key) is tuple and type(entry) is tuple:
            try:
                ns, name = full_key
                value, ttl = entry
                common = (ns is last_ns or ns in known) and type(name) is str and name.isascii()
            except (TypeError, ValueError):  # not pairs, or an unhashable namespace
                pass
        if common:
            last_ns = ns
        else:
            check_key(full_key)
            if type(entry) is not tuple or len(entry) != 2:
                raise TypeError(
                    f"set() values must be (value, ttl) pairs, "
                    f"got {type(entry).__name__} for {_short(full_key)}"
                )
            value, ttl = entry
        if ttl is None:
            checked_ttl = None
        elif type(ttl) is int and 0 < ttl <= _MAX_INT_TTL:
            checked_ttl = float(ttl)
        else:
            checked_ttl = check_ttl(ttl, full_key)
        if encode is None:
            yield full_key, value, checked_ttl
            continue
        try:
            encoded = encode(value)
        except NotCacheableError as exc:
            if refused is None:
                raise
            refused(full_key, exc)
            encoded = None
        yield full_key, encoded, checked_ttl


def check_namespaces(namespaces: Iterable[Namespace] | None) -> Sequence[Namespace] | None:
    """Validate the argument of ``clear``; ``None`` means every entry of this cache.

    Returns it as a sequence (a one-shot iterable is read once: callers must use the
    result, not the argument); a str or bytes is ``TypeError``, like a non-iterable.
    """
    if namespaces is None:
        return None
    if type(namespaces) is not list and type(namespaces) is not tuple:
        raw: object = namespaces
        if isinstance(raw, (str, bytes)) or not isinstance(raw, Iterable):
            raise TypeError(
                f"namespaces must be a sequence of tuples of str or None, got {_short(raw)}"
            )
        namespaces = list(namespaces)
    for ns in namespaces:
        check_namespace(ns)
    return namespaces


def is_refusal(operation: str, exc: BaseException, arg: Any) -> bool:
    """A serializer that refused a value: never a backend failure, never a caller bug.

    Our backends leave such values out themselves; a foreign cache (LangGraph's own) raises
    a plain ``TypeError`` from its serializer, told apart from bad input by checking it.
    """
    if operation != "set" or not isinstance(exc, TypeError):
        return False
    if isinstance(exc, NotCacheableError):
        return True
    if isinstance(exc, CacheError):
        return False
    try:
        check_pairs(arg)
    except (TypeError, ValueError):
        return False
    return True


class EvictionNotifier:
    """Mixin that lets a backend report evictions to listeners (the metrics layer)."""

    _eviction_listeners: tuple[EvictionListener, ...] = ()

    def add_eviction_listener(self, listener: EvictionListener) -> None:
        """Register ``listener(namespace, cause, count)`` for every future eviction."""
        self._eviction_listeners = (*self._eviction_listeners, listener)

    def _refuse(self, full_key: FullKey, error: NotCacheableError) -> None:
        """Leave out a value the serializer refused: warn once per message, count it."""
        warn_uncacheable(error)
        self._notify_eviction(full_key[0], "uncacheable")

    def _notify_eviction(self, ns: Namespace, cause: EvictionCause, count: int = 1) -> None:
        for listener in self._eviction_listeners:
            # A listener (the metrics layer) must never break the cache it observes.
            with contextlib.suppress(Exception):
                listener(ns, cause, count)


if TYPE_CHECKING:
    # Type checkers see LangGraph's BaseCache as our root, so any of our caches (and any
    # stack of middleware) is accepted by ``builder.compile(cache=...)`` with no cast. At
    # run time LangGraph stays an optional dependency of the core.
    from langgraph.cache.base import BaseCache as _SeedBase
else:

    class _SeedBase(ABC, Generic[ValueT]):
        """The run-time root of ``BaseCache`` (see the ``TYPE_CHECKING`` branch)."""


class BaseCache(_SeedBase[ValueT]):
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
