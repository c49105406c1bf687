"""Canonical, type-tagged encoding of call arguments and ``FullKey`` derivation.

Every supported value encodes to a prefix-free string (a one-letter type tag, then a
length or a terminator), so concatenations never collide: ``1``, ``1.0``, ``True``,
``"1"`` and ``b"1"`` differ; ``("a b",)`` and ``("a", "b")`` differ. Dict entries and set
members are sorted by their encodings, so insertion order and hash seed never matter.
The encoding is hashed with BLAKE2b to a 128-bit hex digest. No ``hash()``, ``repr()`` of
arbitrary objects, ``id()`` or pickle is ever used, so keys are stable across processes,
``PYTHONHASHSEED`` values, machines and Python versions.

Choices worth knowing:

- lists and tuples are different keys by default (``f([1])`` and ``f((1,))`` may behave
  differently); ``strict_containers=False`` makes them, and set/frozenset, one key.
- every NaN is one key (NaN never equals itself, so a cache keyed on identity of bits
  would never hit twice for a recomputed NaN); ``0.0`` and ``-0.0`` are two keys.
- every class stays in the encoding, nested ones included, so a union of look-alike types
  never shares a key: subclasses of builtins (``str``, ``dict``...) encode their class and
  their base value; dataclasses their class and ``compare=True`` fields; namedtuples and
  pydantic models their class and fields (extra fields included); LangChain messages their
  class and content fields without the ``id``, ``response_metadata`` and
  ``usage_metadata`` that change on every run; enums their class and member.
- integers of any size encode, whatever ``sys.set_int_max_str_digits`` says.
- numpy arrays encode dtype, shape and bytes (numpy is never imported by this module).
- anything else needs ``__cache_key__(self)`` returning a supported value, or ``key=`` /
  ``ignore=`` on ``@cached``; otherwise a ``TypeError`` names the parameter.

A function's own identity enters its keys too (``toolkit._identity``): two functions never
share entries unless they are given the same ``key_id``.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import decimal
import enum
import functools
import hashlib
import inspect
import math
import re
import sys
import types
import typing
import uuid
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import ormsgpack

from toolkit._identity import defined_in_function, identify
from toolkit._key_advice import advice, is_users_class
from toolkit._types import FullKey, Namespace

__all__ = [
    "FRAMEWORK_PARAMETERS",
    "KeyPlan",
    "UnsupportedKeyType",
    "derive_key",
    "encode",
    "encode_bytes",
    "hash_encoding",
    "key_plan",
    "namespace_of",
]

FRAMEWORK_PARAMETERS = frozenset({"config", "runtime", "store", "writer"})
"""LangGraph injects these by name; they never enter a key, unless annotated as plain scalars
(``store: str``), or ``config`` and ``store`` as other data (``config: dict``), which LangGraph
never injects."""
_TYPED_INJECTIONS = frozenset({"config", "store"})
"""Injected only unannotated or annotated as LangGraph's own type (``runtime`` whatever its
annotation, ``writer`` as any callable)."""
_UNTYPED_NAMES = frozenset({"Any", "typing.Any", "object"})

_FRAMEWORK_ANNOTATION = re.compile(r"\b(RunnableConfig|Runtime|BaseStore|StreamWriter)\b")
_PERSON = b"toolkit.key.v2"  # BLAKE2 personalization: retires every key if the encoding changes
_BIG_BYTES = 256  # longer byte strings enter the encoding as their own digest
_MESSAGE_SKIP = frozenset({"id", "response_metadata", "usage_metadata"})


class UnsupportedKeyType(TypeError):
    """A value with no canonical encoding; carries the offending object."""

    def __init__(self, obj: object) -> None:
        super().__init__(f"{_type_name(type(obj))} has no canonical cache-key encoding")
        self.obj = obj


Encoder = Callable[[Any], str]


def _type_name(cls: type) -> str:
    module = getattr(cls, "__module__", "")
    qualname = getattr(cls, "__qualname__", cls.__name__)
    return qualname if module in ("builtins", "") else f"{module}.{qualname}"


def _text(tag: str, text: str) -> str:
    return f"{tag}{len(text)}:{text}"


# -- scalar encoders --------------------------------------------------------------------


def _enc_none(obj: Any) -> str:
    return "N"


def _enc_bool(obj: Any) -> str:
    return "T" if obj else "F"


def _enc_int(obj: Any) -> str:
    try:
        return f"i{int.__repr__(obj)};"
    except ValueError:  # beyond sys.get_int_max_str_digits(); Decimal prints any size exactly
        return f"i{decimal.Decimal(int(obj))};"


def _enc_float(obj: Any) -> str:
    if math.isnan(obj):
        return "fnan;"
    # repr is the shortest round-tripping form and keeps the sign of -0.0.
    return f"f{float.__repr__(obj)};"


def _enc_complex(obj: Any) -> str:
    return f"j{_enc_float(obj.real)}{_enc_float(obj.imag)}"


def _enc_str(obj: Any) -> str:
    return f"s{len(obj)}:{obj}"


def _enc_bytes(obj: Any) -> str:
    data = bytes(obj)
    if len(data) <= _BIG_BYTES:
        return f"b{len(data)}:{data.decode('latin-1')}"
    digest = hashlib.blake2b(data, digest_size=32).hexdigest()
    return f"B{len(data)}:{digest}"


def _enc_datetime(obj: Any) -> str:
    return _text("D", obj.isoformat()) + _zone(obj.tzinfo, obj)


def _enc_date(obj: Any) -> str:
    return _text("A", obj.isoformat())


def _enc_time(obj: Any) -> str:
    return _text("M", obj.isoformat()) + _zone(obj.tzinfo, None)


def _zone(tz: Any, when: Any) -> str:
    """Which zone an aware value is in, not only its offset: 12:00 in Europe/Paris and 12:00
    at a fixed +01:00 (or in a zone named "CET") are one instant but answer differently."""
    if tz is None:
        return ""  # naive: the encoding of every earlier release
    name = getattr(tz, "key", None) or getattr(tz, "zone", None)
    if not isinstance(name, str):
        try:
            name = tz.tzname(when)
        except Exception:  # a tzinfo that names nothing without a datetime: its offset decides
            name = None
    return _text("Z", f"{_type_name(type(tz))}:{name if isinstance(name, str) else ''}")


def _enc_timedelta(obj: Any) -> str:
    return f"R{obj.days};{obj.seconds};{obj.microseconds};"


def _enc_uuid(obj: Any) -> str:
    return f"U{obj.hex}"


def _enc_decimal(obj: Any) -> str:
    return _text("C", str(obj))


def _enc_type(obj: Any) -> str:
    if defined_in_function(obj):
        raise UnsupportedKeyType(obj)
    return _text("Y", _type_name(obj))


# -- the encoder: a per-type dispatch table filled lazily -------------------------------


class _Codec:
    """One encoding variant (strict or loose containers) with its own dispatch table."""

    def __init__(self, strict_containers: bool, *, inline_ints: bool = True) -> None:
        self.strict = strict_containers
        # f"{n}" fails past sys.get_int_max_str_digits(); the variant without inlined ints
        # sends every int to _enc_int, which prints any size (see _Codec.encode_exact).
        small_int: type = int if inline_ints else _NeverInlined
        list_tag = "l" if strict_containers else "t"
        frozenset_tag = "z" if strict_containers else "e"
        table: dict[type, Encoder] = {}
        resolve = self._resolve

        # Closures rather than methods: the hot path is a chain of these calls, and the
        # commonest scalars are inlined before the table lookup.
        def encode(obj: Any) -> str:
            cls = type(obj)
            if cls is str:
                return f"s{len(obj)}:{obj}"
            if cls is small_int:
                return f"i{obj};"
            if cls is dict:
                return enc_dict(obj)
            if cls is list:
                return enc_sequence(list_tag, obj)
            if obj is None:
                return "N"
            fn = table.get(cls)
            if fn is None:
                fn = resolve(cls, obj)
            return fn(obj)

        def enc_sequence(tag: str, obj: Any) -> str:
            out = f"{tag}{len(obj)}:"
            for item in obj:
                cls = type(item)
                if cls is str:
                    out += f"s{len(item)}:{item}"
                elif cls is small_int:
                    out += f"i{item};"
                else:
                    out += encode(item)
            return out

        def enc_list(obj: Any) -> str:
            return enc_sequence(list_tag, obj)

        def enc_tuple(obj: Any) -> str:
            return enc_sequence("t", obj)

        def enc_dict(obj: Any) -> str:
            items = []
            for k, v in obj.items():
                head = f"s{len(k)}:{k}" if type(k) is str else encode(k)
                cls = type(v)
                if cls is str:
                    items.append(f"{head}s{len(v)}:{v}")
                elif cls is small_int:
                    items.append(f"{head}i{v};")
                elif cls is bool:
                    items.append(head + ("T" if v else "F"))
                else:
                    items.append(head + encode(v))
            if len(items) > 1:
                items.sort()
            return f"d{len(items)}:{''.join(items)}"

        def enc_set(obj: Any) -> str:
            return f"e{len(obj)}:{''.join(sorted(map(encode, obj)))}"

        def enc_frozenset(obj: Any) -> str:
            return f"{frozenset_tag}{len(obj)}:{''.join(sorted(map(encode, obj)))}"

        table.update(
            {
                type(None): _enc_none,
                bool: _enc_bool,
                int: _enc_int,
                float: _enc_float,
                complex: _enc_complex,
                str: _enc_str,
                bytes: _enc_bytes,
                bytearray: _enc_bytes,
                memoryview: _enc_bytes,
                dt.datetime: _enc_datetime,
                dt.date: _enc_date,
                dt.time: _enc_time,
                dt.timedelta: _enc_timedelta,
                uuid.UUID: _enc_uuid,
                decimal.Decimal: _enc_decimal,
                list: enc_list,
                tuple: enc_tuple,
                dict: enc_dict,
                set: enc_set,
                frozenset: enc_frozenset,
            }
        )
        self.table = table
        self.empty: dict[type, str] = {list: f"{list_tag}0:", dict: "d0:"}
        self.encode: Encoder = encode
        """Encode one value; raises ``UnsupportedKeyType`` for values with no encoding."""
        self.enc_dict = enc_dict

    def _resolve(self, cls: type, obj: Any) -> Encoder:
        fn = self._encoder_for(cls, obj)
        if fn is None:
            raise UnsupportedKeyType(obj)
        self.table[cls] = fn
        return fn

    def _encoder_for(self, cls: type, obj: Any) -> Encoder | None:
        """Pick the encoder of a type seen for the first time; ``None`` if unsupported."""
        enc = self.encode
        name = _type_name(cls)
        if callable(getattr(cls, "__cache_key__", None)):
            return lambda o: f"K{_text('', name)}{enc(o.__cache_key__())}"
        if defined_in_function(cls):
            return None
        if issubclass(cls, enum.Enum):
            head = f"E{_text('', name)}"
            # A Flag combination without a name of its own is told apart by its value.
            return lambda o: head + (_enc_str(o.name) if o.name is not None else enc(o.value))
        if isinstance(obj, type):
            return _enc_type
        numpy = sys.modules.get("numpy")
        if numpy is not None:
            if issubclass(cls, numpy.ndarray):
                return self._enc_ndarray
            if issubclass(cls, numpy.generic):
                return self._enc_npscalar
        layout = _record_layout(cls)
        if layout is not None:
            tag, fields, has_extra = layout
            record = self._record_encoder(tag, name, fields)
            if not has_extra:
                return record
            return lambda o: record(o) + (enc(extra) if (extra := o.__pydantic_extra__) else "d0:")
        base = next((b for b in cls.__mro__[1:] if b in _BUILTIN_ENCODERS), None)
        if base is not None:
            head = f"X{_text('', name)}"
            base_fn = _enc_str if base is str else self.table[base]
            to_base = _BUILTIN_VALUE.get(base)
            if to_base is not None:  # don't let an overridden __str__/__format__ speak
                return lambda o: head + base_fn(to_base(o))
            return lambda o: head + base_fn(o)
        if isinstance(obj, Mapping):
            head = f"X{_text('', name)}"
            return lambda o: head + self.enc_dict(o)
        return None

    def _record_encoder(self, tag: str, name: str, fields: tuple[str, ...]) -> Encoder:
        enc = self.encode
        empty = self.empty
        head = f"{tag}{_text('', name)}{len(fields)}:"
        prefixes = tuple((f, _enc_str(f)) for f in fields)

        def encode_record(obj: Any) -> str:
            out = head
            for field, prefix in prefixes:
                value = getattr(obj, field)
                if type(value) is str:
                    out += f"{prefix}s{len(value)}:{value}"
                elif value is None:
                    out += prefix + "N"
                elif type(value) in empty and not value:
                    out += prefix + empty[type(value)]
                else:
                    out += prefix + enc(value)
            return out

        return encode_record

    def _enc_ndarray(self, obj: Any) -> str:
        dtype = obj.dtype
        shape = ",".join(map(str, obj.shape))
        if dtype.hasobject:
            return f"O{_text('', shape)}{self.encode(obj.tolist())}"
        if dtype.byteorder == ">" or (dtype.byteorder == "=" and sys.byteorder == "big"):
            obj = obj.astype(dtype.newbyteorder("<"))
            dtype = obj.dtype
        return f"n{_text('', dtype.str)}{_text('', shape)}{_enc_bytes(obj.tobytes())}"

    def _enc_npscalar(self, obj: Any) -> str:
        return f"g{_text('', obj.dtype.str)}{_enc_bytes(obj.tobytes())}"


class _NeverInlined:
    """Matches no value: the exact variant of a codec inlines no int formatting."""


_BUILTIN_ENCODERS = frozenset(
    {bool, int, float, complex, str, bytes, bytearray, list, tuple, dict, set, frozenset}
    | {dt.datetime, dt.date, dt.time, dt.timedelta, uuid.UUID, decimal.Decimal}
)
"""Classes whose subclasses encode as ``X`` + their class + the base encoding."""
_BUILTIN_VALUE: dict[type, Callable[[Any], Any]] = {str: str.__str__}


def _record_layout(cls: type) -> tuple[str, tuple[str, ...], bool] | None:
    """A record class's tag, key fields and whether extra fields follow; ``None`` if no record.

    Dataclasses keep their ``compare=True`` fields, namedtuples and pydantic models all of
    theirs (and a model's extra fields where it allows them), LangChain messages those that
    do not change from run to run.
    """
    if callable(getattr(cls, "__cache_key__", None)) or issubclass(cls, enum.Enum):
        return None
    if dataclasses.is_dataclass(cls):
        return ("P", tuple(f.name for f in dataclasses.fields(cls) if f.compare), False)
    named = getattr(cls, "_fields", None)
    if issubclass(cls, tuple) and isinstance(named, tuple):
        return ("R", named, False)  # a namedtuple
    pydantic = sys.modules.get("pydantic")
    if pydantic is None or not issubclass(cls, pydantic.BaseModel):
        return None
    model: Any = cls
    message = _langchain_message_class()
    tag, skip = ("L", _MESSAGE_SKIP) if message and issubclass(cls, message) else ("Q", ())
    fields = tuple(f for f in model.model_fields if f not in skip)
    return (tag, fields, model.model_config.get("extra") == "allow")


def _langchain_message_class() -> type | None:
    module = sys.modules.get("langchain_core.messages")
    return getattr(module, "BaseMessage", None) if module is not None else None


_STRICT = _Codec(strict_containers=True)
_LOOSE = _Codec(strict_containers=False)
_EXACT = {
    _STRICT: _Codec(strict_containers=True, inline_ints=False),
    _LOOSE: _Codec(strict_containers=False, inline_ints=False),
}


def _encode_with(codec: _Codec, obj: Any) -> str:
    """Encode with ``codec``; an int too long for ``f"{n}"`` retries on the exact variant."""
    try:
        return codec.encode(obj)
    except ValueError:
        return _EXACT[codec].encode(obj)


def _too_deep(what: str) -> TypeError:
    return TypeError(f"{what} is cyclic or nested too deeply to derive a cache key")


def encode(obj: Any, *, strict_containers: bool = True) -> str:
    """Return the canonical encoding of ``obj``; raises ``TypeError`` if it has none."""
    try:
        return _encode_with(_STRICT if strict_containers else _LOOSE, obj)
    except RecursionError:
        raise _too_deep("the value") from None


# -- the same canonical identity as bytes, at C speed for plain data ---------------------

# msgpack keeps None, bool, int, float, str, bytes, list and str-keyed dicts apart natively;
# every other value reaches _packed as an extension: records (dataclasses, models, messages)
# as their class and fields, the rest (tuples, sets, subclasses, big ints...) as their text
# encoding, so classes are never lost.
_PACK_OPTIONS = (
    ormsgpack.OPT_SORT_KEYS
    | ormsgpack.OPT_PASSTHROUGH_BIG_INT
    | ormsgpack.OPT_PASSTHROUGH_DATACLASS
    | ormsgpack.OPT_PASSTHROUGH_DATETIME
    | ormsgpack.OPT_PASSTHROUGH_ENUM
    | ormsgpack.OPT_PASSTHROUGH_SUBCLASS
    | ormsgpack.OPT_PASSTHROUGH_TUPLE
    | ormsgpack.OPT_PASSTHROUGH_UUID
)
_TEXT_MARK = b"\xc1"  # never starts a msgpack document, so the two forms cannot meet
_NON_FINITE = (b"\xcb\x7f", b"\xcb\xff")  # how a float64 NaN or infinity starts


_PACKED_RECORDS: dict[type, tuple[bytes, tuple[str, ...], bool] | None] = {}


def _packed_record_layout(cls: type) -> tuple[bytes, tuple[str, ...], bool] | None:
    layout = None if defined_in_function(cls) else _record_layout(cls)
    if layout is None:
        return None
    tag, fields, has_extra = layout
    return (ormsgpack.packb([tag, _type_name(cls), list(fields)]), fields, has_extra)


def _packed(obj: Any) -> ormsgpack.Ext:
    """What msgpack has no type for: a record's fields packed natively, anything else as text."""
    cls = type(obj)
    try:
        layout = _PACKED_RECORDS[cls]
    except KeyError:
        layout = _PACKED_RECORDS[cls] = _packed_record_layout(cls)
    if layout is None:
        return ormsgpack.Ext(0, _encode_with(_STRICT, obj).encode("utf-8", "surrogatepass"))
    head, fields, has_extra = layout
    values = [getattr(obj, field) for field in fields]
    if has_extra:
        values.append(obj.__pydantic_extra__ or {})
    return ormsgpack.Ext(1, head + ormsgpack.packb(values, default=_packed, option=_PACK_OPTIONS))


def encode_bytes(obj: Any) -> bytes:
    """Canonical bytes of ``obj``: equal exactly when ``encode(obj)`` is (strict containers)."""
    try:
        packed = ormsgpack.packb(obj, default=_packed, option=_PACK_OPTIONS)
    except (TypeError, ValueError, RecursionError):
        pass  # a non-str dict key, a surrogate, deep nesting: the text form decides
    else:
        # msgpack keeps a NaN's payload bits, the text form makes every NaN one key: a value
        # that may hold one (or just these bytes inside a string) takes the text form.
        if _NON_FINITE[0] not in packed and _NON_FINITE[1] not in packed:
            return packed
    return _TEXT_MARK + encode(obj).encode("utf-8", "surrogatepass")


_HASHER = hashlib.blake2b(digest_size=16, person=_PERSON)
# Hot keys repeat: a dict lookup of a short encoding costs a fifth of hashing it again.
_MEMO_MAX_ENTRIES = 2048
_MEMO_MAX_LENGTH = 256
_FROZEN_DEFAULTS = frozenset({type(None), bool, int, float, str, bytes})


def memoize(memo: dict[Any, Any], key: Any, value: Any, length: int) -> None:
    """Keep ``value`` for ``key`` if its encoding is short (``length`` characters); a full
    memo starts over (the hot keys come back first)."""
    if length <= _MEMO_MAX_LENGTH:
        if len(memo) >= _MEMO_MAX_ENTRIES:
            memo.clear()
        memo[key] = value


def hash_encoding(encoding: str) -> str:
    """Hash an encoding to the 32-hex-digit (128-bit) key string."""
    hasher = _HASHER.copy()  # copying the personalized state beats re-initializing it
    hasher.update(encoding.encode("utf-8", "surrogatepass"))
    return hasher.hexdigest()


# -- binding: a per-function plan computed once -----------------------------------------


def _unwrap(func: Any) -> Callable[..., Any]:
    if isinstance(func, (classmethod, staticmethod)):
        return func.__func__
    return func  # type: ignore[no-any-return]


def _is_framework(param: inspect.Parameter) -> bool:
    annotation = param.annotation
    if annotation is inspect.Parameter.empty:
        return param.name in FRAMEWORK_PARAMETERS
    text = annotation if isinstance(annotation, str) else repr(annotation)
    if _FRAMEWORK_ANNOTATION.search(text) is not None:
        return True
    if param.name not in FRAMEWORK_PARAMETERS:
        return False
    # LangGraph injects by name, never a scalar: ``price(store: str, item)`` is data; nor a
    # config or store annotated as other data: ``render(template, config: dict)`` is data.
    if param.name in _TYPED_INJECTIONS:
        return annotation in (typing.Any, object) or text.strip("\"' ") in _UNTYPED_NAMES
    return not _scalar_annotation(annotation)


_SCALAR_NAMES = frozenset({"str", "int", "float", "bool", "bytes"})
_SCALAR_TYPES = frozenset({str, int, float, bool, bytes})


def _scalar_annotation(annotation: Any) -> bool:
    """Whether an annotation admits only plain scalars (``str``, ``int | None``, ``"bytes"``)."""
    if isinstance(annotation, str):
        names = [name.strip().strip("\"'") for name in annotation.split("|")]
        scalars = [name for name in names if name != "None"]
        return bool(scalars) and all(name in _SCALAR_NAMES for name in scalars)
    if annotation in _SCALAR_TYPES:
        return True
    members = [a for a in typing.get_args(annotation) if a is not type(None)]
    is_union = typing.get_origin(annotation) in (typing.Union, types.UnionType)
    return is_union and bool(members) and all(a in _SCALAR_TYPES for a in members)


def namespace_of(func: Any) -> Namespace:
    """The default namespace of a function: ``(module, qualified name)``."""
    func = _unwrap(func)
    module = getattr(func, "__module__", None)
    qualname = getattr(func, "__qualname__", None)
    if not isinstance(module, str) or not isinstance(qualname, str):
        raise TypeError(
            f"{type(func).__name__} objects have no stable qualified name: pass ns=... explicitly"
        )
    return (module, qualname)


class KeyPlan:
    """How one function's arguments become a key: computed once at decoration time."""

    def __init__(
        self,
        func: Callable[..., Any],
        *,
        ignore: Iterable[str] = (),
        strict_containers: bool = True,
        key_id: str | None = None,
        suffix: str = "",
    ) -> None:
        """Inspect ``func``; ``ignore`` names parameters left out, ``key_id`` names ``func``,
        ``suffix`` ends every digest (a stored form of its own)."""
        func = _unwrap(func)
        self.suffix = suffix
        self.func_name = str(getattr(func, "__qualname__", None) or type(func).__qualname__)
        self.strict_containers = strict_containers
        self.codec = _STRICT if strict_containers else _LOOSE
        self.encode = self.codec.encode
        identity = identify(func, self.encode_value, key_id=key_id)
        self.identity_name = identity.name
        """What names ``func`` in its keys (``module:qualname``, or ``key_id``)."""
        self.receiver = identity.receiver
        """A bound method's instance, which callers pass as the first argument."""
        self.context = identity.context
        context_names = ",".join(what for what, _ in identity.context)
        self.hasher = _HASHER.copy()
        head = f"F{_text('', identity.name)}{_text('', context_names)}"
        self.hasher.update(head.encode("utf-8", "surrogatepass"))
        self.recent: dict[str, str] = {}
        for what, value in self.context:  # refuse at decoration what no call could encode
            self._encode_context_value(what, value)
        self.signature = inspect.signature(identity.target)
        params = list(self.signature.parameters.values())
        ignored = set(ignore)
        unknown = ignored - {p.name for p in params}
        if unknown:
            raise ValueError(
                f"ignore= names no parameter of {self.func_name}: {sorted(unknown)} "
                f"(parameters: {[p.name for p in params]})"
            )
        self.skipped = frozenset(p.name for p in params if p.name in ignored or _is_framework(p))
        self.params = params
        P = inspect.Parameter
        positional = [p for p in params if p.kind in (P.POSITIONAL_ONLY, P.POSITIONAL_OR_KEYWORD)]
        self.simple = all(p.kind in (P.POSITIONAL_ONLY, P.POSITIONAL_OR_KEYWORD) for p in params)
        # Fast path: purely positional signatures bound by index, defaults filled from a tuple.
        self.n_positional = len(positional)
        self.defaults = tuple(p.default for p in positional)
        self.n_required = sum(1 for p in positional if p.default is P.empty)
        self.names = tuple(p.name for p in positional)
        self.kinds = tuple(p.kind for p in positional)
        self.kept = tuple(
            (i, _enc_str(p.name), p.name)
            for i, p in enumerate(positional)
            if p.name not in self.skipped
        )
        self.encode_positional = self._positional_encoder()
        self.memoizable = (
            self.simple
            and not self.context
            and all(d is P.empty or type(d) in _FROZEN_DEFAULTS for d in self.defaults)
        )
        """Whether a call's positional arguments alone decide its encoding: no per-call
        context, no default that can change (callers memoize by the argument tuple)."""
        if self.receiver is not None and self.kept and self.kept[0][0] == 0:
            self._encode_bound([(self.kept[0][1], self.kept[0][2], self.receiver)])  # fail now

    def bind(self, args: tuple[Any, ...], kwargs: Mapping[str, Any]) -> list[tuple[str, str, Any]]:
        """Return ``(prefix, name, value)`` for every parameter that enters the key."""
        if self.simple:
            n = len(args)
            if n <= self.n_positional and n >= self.n_required and not kwargs:
                values = args + self.defaults[n:] if n < self.n_positional else args
                return [(prefix, name, values[i]) for i, prefix, name in self.kept]
            if kwargs and n <= self.n_positional:
                by_hand = self._bind_keywords(args, kwargs)
                if by_hand is not None:
                    return [(prefix, name, by_hand[i]) for i, prefix, name in self.kept]
        bound = self.signature.bind(*args, **kwargs)
        bound.apply_defaults()
        skipped = self.skipped
        return [
            (_enc_str(name), name, value)
            for name, value in bound.arguments.items()
            if name not in skipped
        ]

    def _bind_keywords(self, args: tuple[Any, ...], kwargs: Mapping[str, Any]) -> list[Any] | None:
        """Bind a simple signature with keywords by hand; ``None`` defers to ``Signature.bind``."""
        values = list(args)
        used = 0
        empty = inspect.Parameter.empty
        for i in range(len(args), self.n_positional):
            name = self.names[i]
            if name in kwargs and self.kinds[i] is not inspect.Parameter.POSITIONAL_ONLY:
                values.append(kwargs[name])
                used += 1
            elif self.defaults[i] is not empty:
                values.append(self.defaults[i])
            else:
                return None
        return values if used == len(kwargs) else None

    def encode_value(self, value: Any) -> str:
        """The canonical encoding of one value under this plan's container rules."""
        return _encode_with(self.codec, value)

    def encode_call(self, args: tuple[Any, ...], kwargs: Mapping[str, Any]) -> str:
        """The canonical encoding of one call's key-relevant arguments."""
        if not kwargs and self.simple:
            encoded = self.encode_positional(args)
            if encoded is not None:
                return self._encode_context() + encoded if self.context else encoded
        encoded = self._encode_bound(self.bind(args, kwargs))
        return self._encode_context() + encoded if self.context else encoded

    def _encode_context(self) -> str:
        return "".join(self._encode_context_value(what, value) for what, value in self.context)

    def _encode_context_value(self, what: str, value: Any) -> str:
        try:
            return self.encode_value(value)
        except UnsupportedKeyType as exc:
            culprit = type(exc.obj)
            remedy = ", or give that class a __cache_key__(self)" if is_users_class(culprit) else ""
            raise TypeError(
                f"cannot derive a cache key for {self.func_name}: its {what} contain a "
                f"{_type_name(culprit)}, which has no canonical encoding. Pass "
                f"key_id='...' naming this callable{remedy}."
            ) from None
        except RecursionError:
            raise _too_deep(f"the {what} of {self.func_name}") from None

    def hash_value(self, value: Any) -> str:
        """The key string of a ``key=`` function's result: it replaces the arguments."""
        try:
            encoded = self.encode_value(value)
        except RecursionError:
            raise _too_deep("the value") from None
        return self._hash(self._encode_context() + encoded if self.context else encoded)

    def _hash(self, encoding: str) -> str:
        hasher = self.hasher.copy()
        hasher.update(encoding.encode("utf-8", "surrogatepass"))
        return hasher.hexdigest()

    def _positional_encoder(self) -> Callable[[tuple[Any, ...]], str | None]:
        """The fast path for purely positional calls: closure locals, scalars inlined.

        Returns ``None`` when it cannot encode (wrong arity, unsupported value) so that
        the slow path binds properly and names the parameter that failed.
        """
        n_required, n_positional = self.n_required, self.n_positional
        defaults, kept, enc = self.defaults, self.kept, self.encode

        def encode_positional(args: tuple[Any, ...]) -> str | None:
            n = len(args)
            if not n_required <= n <= n_positional:
                return None
            values = args if n == n_positional else args + defaults[n:]
            out = ""
            try:
                for i, prefix, _ in kept:
                    value = values[i]
                    cls = type(value)
                    if cls is int:
                        out += f"{prefix}i{value};"
                    elif cls is str:
                        out += f"{prefix}s{len(value)}:{value}"
                    else:
                        out += prefix + enc(value)
            except (TypeError, ValueError, RecursionError):
                return None
            return out

        return encode_positional

    def digest(self, args: tuple[Any, ...], kwargs: Mapping[str, Any]) -> str:
        """The key string of one call: the 128-bit hex digest of its encoding."""
        encoding = self.encode_call(args, kwargs)
        recent = self.recent
        digest = recent.get(encoding)
        if digest is None:
            digest = self.digest_of(encoding)
            memoize(recent, encoding, digest, len(encoding))
        return digest

    def digest_of(self, encoding: str) -> str:
        """The key string of a call's encoding (``encode_call``'s), unmemoized."""
        return self._hash(encoding) + self.suffix

    def _encode_bound(self, bound: list[tuple[str, str, Any]]) -> str:
        parts = []
        for prefix, name, value in bound:
            try:
                parts.append(prefix + self.encode_value(value))
            except UnsupportedKeyType as exc:
                raise self._unsupported(name, value, exc.obj) from None
            except RecursionError:
                raise _too_deep(f"parameter {name!r} of {self.func_name}") from None
        return "".join(parts)

    def _unsupported(self, name: str, value: Any, culprit: Any) -> TypeError:
        what = _type_name(type(culprit))
        inside = "" if culprit is value else f" (it contains a {what})"
        return TypeError(
            f"cannot derive a cache key from parameter {name!r} of {self.func_name}: "
            f"a {_type_name(type(value))}{inside} has no canonical encoding. "
            + advice(culprit, leave_out=f"ignore=({name!r},)", custom_key="key=... in @cached")
        )


@functools.lru_cache(maxsize=256)
def key_plan(
    func: Callable[..., Any],
    *,
    ignore: tuple[str, ...] = (),
    strict_containers: bool = True,
    key_id: str | None = None,
) -> KeyPlan:
    """The (memoized) key plan of ``func``."""
    return KeyPlan(func, ignore=ignore, strict_containers=strict_containers, key_id=key_id)


def derive_key(
    func: Callable[..., Any],
    args: tuple[Any, ...] = (),
    kwargs: Mapping[str, Any] | None = None,
    *,
    ns: Namespace | None = None,
    ignore: Iterable[str] = (),
    strict_containers: bool = True,
    key_id: str | None = None,
) -> FullKey:
    """The ``FullKey`` that ``@cached`` gives ``func(*args, **kwargs)``."""
    plan = key_plan(
        func, ignore=tuple(sorted(ignore)), strict_containers=strict_containers, key_id=key_id
    )
    if plan.receiver is not None:
        args = (plan.receiver, *args)
    return (ns if ns is not None else namespace_of(func), plan.digest(args, kwargs or {}))
