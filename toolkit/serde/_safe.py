"""The default serializer: msgpack data with extension tags, no code from stored bytes.

Plain data (None, bool, int, float, str, bytes, list, dict with str keys) takes
ormsgpack's native path. Tuples, sets, frozensets, ints beyond 64 bits, dicts with
other keys, datetime/date/time/timedelta (fixed-offset or ``zoneinfo`` zones), UUID,
Decimal and deque travel as msgpack extensions and come back as exactly those types;
Enums and other classes only when allow-listed (see ``toolkit.serde._allow``).
``bytearray`` and ``memoryview`` are stored as msgpack bin and come back as ``bytes``.
"""

from __future__ import annotations

import datetime as dt
import decimal
import struct
import threading
import uuid
import zoneinfo
from collections import deque
from collections.abc import Callable, Iterable
from typing import Any

import ormsgpack

from toolkit.errors import NotCacheableError, SerializationError
from toolkit.serde._allow import DEFAULT_ALLOW, LEARNED, AllowList, ClassInfo, is_data_class

SAFE_TAG = "toolkit-msgpack-v3"
# Every payload is the msgpack body, its length as 4 big-endian bytes, then 0xC1 (the one
# byte msgpack never uses). ormsgpack stops reading after the first object, so without
# this frame a pickle (0x80: an empty map), a JSON document ("{": the int 123) or junk
# after a value would decode as something; the length pins what precedes the marker.
END = b"\xc1"
_END = 0xC1
_FRAME = 5
_TRAILER = struct.Struct(">IB")  # (body length, END), packed and read in one C call each
_pack_trailer, _read_trailer = _TRAILER.pack, _TRAILER.unpack_from
_MAX_BODY = 2**32 - 1

MAX_NESTING = 10
"""How deep extension values (tuples, sets, records, ...) may nest in one another. Each level
is a nested call of the C codec, whose own limit (~1,000 plain levels) restarts per call, so
an unbounded chain can overflow the C stack and crash the process (SIGSEGV), whatever
Python's recursion limit says: 99 levels of 250 lists each did."""


def frame(body: bytes) -> bytes:
    """Close a msgpack body with its length and the end marker."""
    size = len(body)
    if size > _MAX_BODY:
        raise NotCacheableError(f"cannot serialize a value of {size} bytes (limit 4 GiB)")
    return body + _pack_trailer(size, _END)


# Packing a trailer costs about a third of encoding a small value: those of short bodies, the
# most common, are packed once here.
_SHORT = 512
_SHORT_TRAILERS = tuple(_pack_trailer(size, _END) for size in range(_SHORT))


# msgpack extension codes; the payload of each is itself msgpack. They start at 32 so
# LangGraph's extensions (codes 0-6, which name constructors) never decode as ours.
(
    TUPLE,
    SET,
    FROZENSET,
    BIG_INT,
    DICT,
    DATETIME,
    DATE,
    TIME,
    TIMEDELTA,
    UUID,
    DECIMAL,
    DEQUE,
    ENUM,
    OBJECT,
) = range(32, 46)

# Everything ormsgpack would otherwise encode lossily (tuple as list, datetime as str,
# subclasses as their base) is handed to our ``default`` hook instead.
_OPTIONS = (
    ormsgpack.OPT_PASSTHROUGH_BIG_INT
    | ormsgpack.OPT_PASSTHROUGH_DATACLASS
    | ormsgpack.OPT_PASSTHROUGH_DATETIME
    | ormsgpack.OPT_PASSTHROUGH_ENUM
    | ormsgpack.OPT_PASSTHROUGH_SUBCLASS
    | ormsgpack.OPT_PASSTHROUGH_TUPLE
    | ormsgpack.OPT_PASSTHROUGH_UUID
)
_packb = ormsgpack.packb
_unpackb = ormsgpack.unpackb
_Ext = ormsgpack.Ext
_MsgpackEncodeError = ormsgpack.MsgpackEncodeError

_NATIVE = frozenset({type(None), bool, float, str, bytes})
_I64_MIN, _U64_END = -(2**63), 2**64

# ormsgpack replaces a hook's exception with a generic one; the innermost real cause is parked here.
_failure = threading.local()


def _tz_state(tz: dt.tzinfo | None) -> Any:
    if tz is None:
        return None
    if type(tz) is dt.timezone:
        offset = tz.utcoffset(None)
        state: list[Any] = [offset.days, offset.seconds, offset.microseconds]
        name = tz.tzname(None)
        if name != dt.timezone(offset).tzname(None):  # timezone(offset, name): keep the name
            state.append(name)
        return state
    if type(tz) is zoneinfo.ZoneInfo:
        if tz.key is None:  # read from a file: no name to revive it by (None means naive)
            raise TypeError(
                "cannot serialize a ZoneInfo without a key (made by ZoneInfo.from_file): "
                "use zoneinfo.ZoneInfo(key)"
            )
        return tz.key
    raise TypeError(
        f"cannot serialize tzinfo of type {type(tz).__qualname__}: "
        "use datetime.timezone or zoneinfo.ZoneInfo"
    )


def _tz_from(state: Any) -> dt.tzinfo | None:
    if state is None:
        return None
    if type(state) is str:
        return zoneinfo.ZoneInfo(state)
    named = type(state) is list and len(state) == 4  # a timezone(offset, name)
    days, seconds, microseconds = _ints(state[:3] if named else state, 3)
    offset = dt.timedelta(days, seconds, microseconds)
    return dt.timezone(offset, _of_type(state[3], str)) if named else dt.timezone(offset)


def _ints(state: Any, count: int) -> list[int]:
    if (
        type(state) is not list
        or len(state) != count
        or any(type(item) is not int for item in state)
    ):
        raise TypeError(f"expected a list of {count} ints, got {state!r}")
    return state


def _of_type(state: Any, kind: type) -> Any:
    if type(state) is not kind:
        raise TypeError(f"expected {kind.__name__}, got {type(state).__name__}")
    return state


def _datetime(state: Any) -> dt.datetime:
    *fields, tz = _of_type(state, list)
    year, month, day, hour, minute, second, micro, fold = _ints(fields, 8)
    return dt.datetime(year, month, day, hour, minute, second, micro, _tz_from(tz), fold=fold)


def _time(state: Any) -> dt.time:
    *fields, tz = _of_type(state, list)
    hour, minute, second, micro, fold = _ints(fields, 5)
    return dt.time(hour, minute, second, micro, _tz_from(tz), fold=fold)


def _pairs(state: Any) -> dict[Any, Any]:
    flat = _of_type(state, list)
    if len(flat) % 2:
        raise ValueError("odd number of items in a key/value list")
    pairs = iter(flat)
    return dict(zip(pairs, pairs, strict=True))


def _deque(state: Any) -> deque[Any]:
    maxlen, items = _of_type(state, list)
    if maxlen is not None:
        _of_type(maxlen, int)
    return deque(_of_type(items, list), maxlen)


def _uuid(state: Any) -> uuid.UUID:
    return uuid.UUID(bytes=_of_type(state, bytes))


# How each supported type becomes (extension code, msgpack-able content).
_REDUCERS: dict[type, Callable[[Any], tuple[int, Any]]] = {
    tuple: lambda obj: (TUPLE, list(obj)),
    set: lambda obj: (SET, list(obj)),
    frozenset: lambda obj: (FROZENSET, list(obj)),
    int: lambda obj: (BIG_INT, obj.to_bytes((obj.bit_length() + 8) // 8, "big", signed=True)),
    dict: lambda obj: (DICT, [item for pair in obj.items() for item in pair]),
    dt.datetime: lambda obj: (
        DATETIME,
        [
            obj.year,
            obj.month,
            obj.day,
            obj.hour,
            obj.minute,
            obj.second,
            obj.microsecond,
            obj.fold,
            _tz_state(obj.tzinfo),
        ],
    ),
    dt.date: lambda obj: (DATE, [obj.year, obj.month, obj.day]),
    dt.time: lambda obj: (
        TIME,
        [obj.hour, obj.minute, obj.second, obj.microsecond, obj.fold, _tz_state(obj.tzinfo)],
    ),
    dt.timedelta: lambda obj: (TIMEDELTA, [obj.days, obj.seconds, obj.microseconds]),
    uuid.UUID: lambda obj: (UUID, obj.bytes),
    decimal.Decimal: lambda obj: (DECIMAL, str(obj)),
    deque: lambda obj: (DEQUE, [obj.maxlen, list(obj)]),
}

# How each extension's decoded content becomes the value again (classes excepted).
_REVIVERS: dict[int, Callable[[Any], Any]] = {
    TUPLE: lambda state: tuple(_of_type(state, list)),
    SET: lambda state: set(_of_type(state, list)),
    FROZENSET: lambda state: frozenset(_of_type(state, list)),
    BIG_INT: lambda state: int.from_bytes(_of_type(state, bytes), "big", signed=True),
    DICT: _pairs,
    DATETIME: _datetime,
    DATE: lambda state: dt.date(*_ints(state, 3)),
    TIME: _time,
    TIMEDELTA: lambda state: dt.timedelta(*_ints(state, 3)),
    UUID: _uuid,
    DECIMAL: lambda state: decimal.Decimal(_of_type(state, str)),
    DEQUE: _deque,
}


def _too_deep(obj: Any) -> NotCacheableError:
    return NotCacheableError(
        f"cannot serialize a {type(obj).__qualname__}: nested too deeply (more than "
        f"{MAX_NESTING} levels of tuples, sets or records); flatten the value or pass "
        "another serde= to the cache"
    )


class SafeSerializer:
    """Data-only msgpack serializer; classes revive only from the allow-list (``register``)."""

    tag = SAFE_TAG

    def __init__(self, *, allow: Iterable[type] = ()) -> None:
        self._allow = AllowList(parent=DEFAULT_ALLOW)
        for cls in allow:
            self._allow.add(cls)
        # Built once: one hook per nesting level, each handing the next to ormsgpack, so
        # the depth is bounded without any per-call state.
        self._default_hook = self._encoder_chain()
        self._ext_hook_bound = self._decoder_chain()

    def dumps_typed(self, obj: Any) -> tuple[str, bytes]:
        """Encode ``obj``; a value it cannot store safely raises ``NotCacheableError``."""
        try:
            # Positional, not keywords: ormsgpack parses keyword names on every call (~10 ns).
            body = _packb(obj, self._default_hook, _OPTIONS)
        except _MsgpackEncodeError:
            # Dicts with non-str keys (or an unsupported type) defeat the native path;
            # the Python walk below encodes the former and names the latter precisely.
            try:
                body = _packb(self._to_wire(obj))
            except NotCacheableError:
                raise
            except (RecursionError, _MsgpackEncodeError) as exc:
                # Plain lists past the codec's limit, or text with a lone surrogate.
                deep = isinstance(exc, RecursionError) or "recursion" in str(exc).lower()
                reason = f"nested too deeply ({exc})" if deep else str(exc)
                raise NotCacheableError(
                    f"cannot serialize a {type(obj).__qualname__}: {reason}"
                ) from exc
            except (TypeError, ValueError, OverflowError) as exc:
                # Lists nested past ormsgpack's limit, an unsupported tzinfo, ...
                raise NotCacheableError(
                    f"cannot serialize a {type(obj).__qualname__}: {exc}"
                ) from exc
        size = len(body)
        return SAFE_TAG, body + _SHORT_TRAILERS[size] if size < _SHORT else frame(body)

    def loads_typed(self, data: tuple[str, bytes]) -> Any:
        """Decode a pair made by ``dumps_typed``; anything else raises ``SerializationError``."""
        try:
            tag, payload = data
        except (TypeError, ValueError) as exc:
            raise SerializationError("expected a (tag, bytes) pair") from exc
        if tag != SAFE_TAG:
            raise SerializationError(f"unknown serialization tag {tag!r} (expected {SAFE_TAG!r})")
        try:
            body_length = len(payload) - _FRAME
            if body_length < 0 or _read_trailer(payload, body_length) != (body_length, _END):
                raise SerializationError("payload lacks the toolkit frame: foreign or truncated")
            # No slice: ormsgpack stops after the first object, so the marker is never read
            # (tests/test_serde.py pins that behaviour).
            return _unpackb(payload, ext_hook=self._ext_hook_bound)
        except Exception as exc:
            cause = getattr(_failure, "error", None) or exc
            _failure.error = None
            raise SerializationError(f"cannot decode stored value: {cause}") from cause

    def _reduce(self, obj: Any) -> tuple[int, Any]:
        cls = type(obj)
        reducer = _REDUCERS.get(cls)
        if reducer is not None:
            return reducer(obj)
        info = self._allow.by_type(cls) or self._learn(cls)
        if info is None:
            raise NotCacheableError(
                f"cannot serialize {cls.__module__}.{cls.__qualname__}: the safe serializer "
                "stores plain data, enums, dataclasses, pydantic models, named tuples and "
                "registered classes only; register the class with toolkit.serde.register(cls) "
                "or pass another serde= to the cache"
            )
        if info.is_enum:
            return ENUM, [info.name, obj.value]
        return OBJECT, [info.name, info.capture(obj)]

    @staticmethod
    def _learn(cls: type) -> ClassInfo | None:
        """Allow a record class this process stores, so this process can revive it."""
        if not is_data_class(cls):
            return None
        try:
            return LEARNED.learn(cls)
        except TypeError:
            return None  # e.g. a dataclass deriving from a built-in type

    def _encoder_chain(self) -> Callable[[Any], Any]:
        """ormsgpack's ``default`` hook for the outermost extension value."""

        def too_deep(obj: Any) -> Any:
            raise _too_deep(obj)

        hook: Callable[[Any], Any] = too_deep
        for _ in range(MAX_NESTING):
            hook = self._encoder(hook)
        return hook

    def _encoder(self, inner: Callable[[Any], Any]) -> Callable[[Any], Any]:
        reduce = self._reduce

        def default(obj: Any) -> Any:
            code, content = reduce(obj)
            return _Ext(code, _packb(content, inner, _OPTIONS))

        return default

    def _to_wire(self, obj: Any, depth: int = 0) -> Any:
        """Turn ``obj`` into plain msgpack data and ``Ext`` values in Python (the rare path)."""
        cls = type(obj)
        if cls in _NATIVE or (cls is int and _I64_MIN <= obj < _U64_END):
            return obj
        if cls is list:
            return [self._to_wire(item, depth) for item in obj]
        if cls is dict and all(type(key) is str for key in obj):
            return {key: self._to_wire(value, depth) for key, value in obj.items()}
        if depth == MAX_NESTING:
            raise _too_deep(obj)
        code, content = self._reduce(obj)
        return _Ext(code, _packb(self._to_wire(content, depth + 1)))

    def _decoder_chain(self) -> Callable[[int, bytes], Any]:
        """ormsgpack's ``ext_hook`` for the outermost extension value."""

        def too_deep(code: int, data: bytes) -> Any:
            error = ValueError(f"extension values nested deeper than {MAX_NESTING} levels")
            if getattr(_failure, "error", None) is None:
                _failure.error = error
            raise error

        hook: Callable[[int, bytes], Any] = too_deep
        for _ in range(MAX_NESTING):
            hook = self._decoder(hook)
        return hook

    def _decoder(self, inner: Callable[[int, bytes], Any]) -> Callable[[int, bytes], Any]:
        def ext_hook(code: int, data: bytes) -> Any:
            try:
                reviver = _REVIVERS.get(code)
                if reviver is not None:
                    return reviver(_unpackb(data, ext_hook=inner))
                if code != ENUM and code != OBJECT:
                    raise ValueError(f"unknown extension type {code}")
                name, value = _of_type(_unpackb(data, ext_hook=inner), list)
                info = self._allowed(_of_type(name, str), is_enum=code == ENUM)
                return info.cls(value) if info.is_enum else info.revive(value)
            except Exception as exc:
                if getattr(_failure, "error", None) is None:  # keep the innermost cause
                    _failure.error = exc
                raise

        return ext_hook

    def _allowed(self, name: str, *, is_enum: bool) -> ClassInfo:
        info = self._allow.by_name(name)
        if info is None:
            raise ValueError(
                f"class {name!r} is not on the allow-list; "
                "register it with toolkit.serde.register(cls)"
            )
        if info.is_enum != is_enum:
            raise ValueError(f"class {name!r} is stored as the wrong kind")
        return info
