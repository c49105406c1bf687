"""The safe default serializer: exact round trips, the allow-list, and hostile bytes."""

from __future__ import annotations

import builtins
import collections
import dataclasses
import datetime as dt
import decimal
import enum
import importlib
import io
import math
import pickle
import struct
import sys
import uuid
import zoneinfo
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Annotated, Any, TypedDict

import ormsgpack
import pydantic
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from langchain_core.messages import (
    AIMessage,
    AIMessageChunk,
    ChatMessage,
    FunctionMessage,
    HumanMessage,
    HumanMessageChunk,
    RemoveMessage,
    SystemMessage,
    ToolMessage,
    ToolMessageChunk,
)
from langgraph.checkpoint.serde.jsonplus import JsonPlusSerializer
from langgraph.graph import START, StateGraph
from langgraph.graph.message import add_messages
from langgraph.types import CachePolicy, Command, Interrupt, Overwrite, Send

from toolkit import (
    InMemoryCache,
    NotCacheableError,
    PickleSerializer,
    SafeSerializer,
    SerializationError,
    serde,
)
from toolkit.serde import _safe

SAFE = SafeSerializer()
TAG = _safe.SAFE_TAG


@serde.register
class Mood(enum.Enum):
    HAPPY = "happy"
    GRUMPY = ("grumpy", 2)


@serde.register
class Level(enum.IntEnum):
    LOW = 1
    HIGH = 2


@serde.register
class Perm(enum.Flag):
    R = 1
    W = 2


@serde.register
@dataclasses.dataclass
class Box:
    items: list[Any]
    label: str = "box"


@serde.register
@dataclasses.dataclass(frozen=True, slots=True)
class Frozen:
    when: dt.datetime
    tags: frozenset[str]


@serde.register
class Plain:
    __slots__ = ("__secret", "name")

    def __init__(self, name: str, secret: int) -> None:
        self.name = name
        self.__secret = secret

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Plain) and (self.name, self.__secret) == (
            other.name,
            other.__secret,
        )

    __hash__ = None  # type: ignore[assignment]


@serde.register
class Model(pydantic.BaseModel):
    name: str
    scores: list[float] = []
    box: Box | None = None


ROUND_TRIPS: list[Any] = [
    None,
    True,
    False,
    0,
    -(2**63),
    2**64 - 1,
    2**64,
    -(2**63) - 1,
    10**40,
    0.1,
    -0.0,
    math.inf,
    -math.inf,
    "",
    "ünï ✓ 🐍 \x00",
    b"",
    b"\x00\xff",
    [],
    {},
    (),
    (1,),
    ((), [()], {"t": (1, (2, [3]))}),
    {1, "a", (1, 2)},
    frozenset({frozenset({1}), 2}),
    {1: "int", "1": "str", (1, "x"): "tuple", None: "none", 2.5: "float"},
    {"outer": [{"inner": {1: {2: (3, {4: 5})}}}]},
    dt.datetime(2024, 5, 17, 12, 30, 45, 123456),
    dt.datetime(2024, 5, 17, 12, 30, tzinfo=dt.timezone(dt.timedelta(hours=5, minutes=45))),
    dt.datetime(2024, 5, 17, 12, 30, tzinfo=dt.timezone.utc),
    dt.datetime(2024, 11, 3, 1, 30, fold=1, tzinfo=zoneinfo.ZoneInfo("America/New_York")),
    dt.date(1, 1, 1),
    dt.time(23, 59, 59, 999999),
    dt.time(8, 0, tzinfo=dt.timezone(-dt.timedelta(hours=3))),
    dt.timedelta(days=-3, microseconds=7),
    uuid.UUID("12345678-1234-5678-1234-567812345678"),
    decimal.Decimal("-1.50E+30"),
    decimal.Decimal("-0"),
    decimal.Decimal("Infinity"),
    collections.deque([("messages", [1]), ("n", 2)]),
    collections.deque([1, 2], maxlen=5),
    Mood.HAPPY,
    Mood.GRUMPY,
    Level.HIGH,
    Perm.R | Perm.W,
    Box([1, (2, 3)]),
    Frozen(dt.datetime(2020, 1, 1), frozenset({"x"})),
    Plain("p", 7),
    Model(name="m"),
    Model(name="n", scores=[1.5], box=Box([Mood.HAPPY], "inner")),
    AIMessage(
        "hi",
        id="ai-1",
        tool_calls=[{"name": "f", "args": {"a": 1}, "id": "c1"}],
        usage_metadata={"input_tokens": 1, "output_tokens": 2, "total_tokens": 3},
    ),
    AIMessageChunk(content="partial"),
    HumanMessage("yo"),
    HumanMessageChunk(content="y"),
    SystemMessage("be brief"),
    ToolMessage("42", tool_call_id="c1"),
    ToolMessageChunk(content="4", tool_call_id="c1"),
    FunctionMessage(content="out", name="fn"),
    ChatMessage(content="x", role="critic"),
    RemoveMessage(id="gone"),
    Send("node", {"n": 5}),
    Send("node", [1], timeout=3.0),
    Command(goto=[Send("b", 1)], update={"x": 1}),
    Command(resume={"answer": 1}),
    Interrupt("question", id="i-1"),
    Overwrite([1, 2]),
    collections.deque([("__pregel_tasks", Send("b", {})), ("messages", [AIMessage("a", id="1")])]),
]


def same(a: Any, b: Any) -> bool:
    """Equal with the same types all the way down (NaN equals NaN, -0.0 differs from 0.0)."""
    if type(a) is not type(b):
        return False
    if isinstance(a, float):
        return (math.isnan(a) and math.isnan(b)) or (
            a == b and math.copysign(1, a) == math.copysign(1, b)
        )
    if isinstance(a, (list, tuple, collections.deque)):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, dict):
        return (
            list(a) == list(b)
            and all(same(a[k], b[k]) for k in a)
            and all(type(x) is type(y) for x, y in zip(a, b, strict=True))
        )
    if dataclasses.is_dataclass(a):
        return all(same(getattr(a, f.name), getattr(b, f.name)) for f in dataclasses.fields(a))
    if isinstance(a, decimal.Decimal):
        return str(a) == str(b)
    return bool(a == b)


def round_trip(value: Any, serializer: Any = SAFE) -> Any:
    tag, payload = serializer.dumps_typed(value)
    assert type(tag) is str and type(payload) is bytes
    return serializer.loads_typed((tag, payload))


@pytest.mark.parametrize("value", ROUND_TRIPS, ids=lambda v: type(v).__name__)
def test_round_trip_is_exact(value: Any) -> None:
    assert same(round_trip(value), value)


def test_special_floats_round_trip() -> None:
    for value in (math.nan, math.inf, -math.inf, -0.0, 5e-324):
        assert same(round_trip(value), value)
    assert math.isnan(round_trip(decimal.Decimal("NaN")))


def test_deque_keeps_maxlen_and_aware_datetime_keeps_zone() -> None:
    assert round_trip(collections.deque([1], maxlen=3)).maxlen == 3
    paris = dt.datetime(2024, 1, 1, tzinfo=zoneinfo.ZoneInfo("Europe/Paris"))
    assert round_trip(paris).tzinfo is zoneinfo.ZoneInfo("Europe/Paris")


def test_pydantic_model_keeps_fields_set() -> None:
    got = round_trip(Model(name="m"))
    assert got.model_fields_set == {"name"}
    assert got.model_dump(exclude_unset=True) == {"name": "m"}


def test_distinct_values_stay_distinct() -> None:
    groups: list[list[Any]] = [
        [1, 1.0, True, "1", b"1", decimal.Decimal(1), (1,), [1]],
        [{1: "x"}, {"1": "x"}, {1.0: "x"}, {True: "x"}, {(1,): "x"}],
        [(), [], set(), frozenset(), {}, collections.deque()],
        [0, 0.0, -0.0, False, None, ""],
    ]
    for group in groups:
        payloads = {SAFE.dumps_typed(v)[1] for v in group}
        assert len(payloads) == len(group)
        for value in group:
            assert same(round_trip(value), value)


def test_plain_data_uses_plain_msgpack() -> None:
    value = {"messages": [["ai", "hello world"]] * 3, "n": 42, "f": 1.5, "b": b"x", "z": None}
    tag, payload = SAFE.dumps_typed(value)
    assert tag == "toolkit-msgpack-v3"
    assert payload == _safe.frame(ormsgpack.packb(value))


@pytest.mark.parametrize("size", [0, 1, 200, 508, 509, 600, 70_000])
def test_every_payload_size_gets_the_same_frame(size: int) -> None:
    # Bodies up to 511 bytes take a precomputed trailer (508 B of bin is a 511 B body), longer
    # ones pack theirs: one format either way.
    value = b"x" * size
    body = ormsgpack.packb(value)
    assert SAFE.dumps_typed(value)[1] == _safe.frame(body)
    assert body + struct.pack(">IB", len(body), 0xC1) == _safe.frame(body)
    assert SAFE.loads_typed(SAFE.dumps_typed(value)) == value


scalars = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=True)
    | st.text()
    | st.binary()
    | st.datetimes(timezones=st.none() | st.timezones())
    | st.dates()
    | st.times()
    | st.timedeltas()
    | st.uuids()
    | st.decimals(allow_nan=False)
    | st.sampled_from(Mood)
)
hashables = st.recursive(
    scalars.filter(lambda v: not (isinstance(v, float) and math.isnan(v))),
    lambda inner: st.tuples(inner, inner) | st.frozensets(inner, max_size=3),
    max_leaves=6,
)
data = st.recursive(
    scalars,
    lambda inner: (
        st.lists(inner, max_size=4)
        | st.lists(inner, max_size=4).map(tuple)
        | st.lists(inner, max_size=4).map(collections.deque)
        | st.dictionaries(st.text(max_size=5), inner, max_size=4)
        | st.dictionaries(hashables, inner, max_size=4)
        | st.sets(hashables, max_size=4)
        | st.builds(Box, st.lists(inner, max_size=3))
    ),
    max_leaves=25,
)


def ext_depth(value: Any) -> int:
    """How deeply ``data``'s values nest msgpack extensions (tuples, sets, records, ...)."""
    kind = type(value)
    if kind in (type(None), bool, float, str, bytes):
        return 0
    if kind is int:
        return 0 if -(2**63) <= value < 2**64 else 1
    if kind is list:
        return max(map(ext_depth, value), default=0)
    if kind is dict:
        inner = max((ext_depth(item) for pair in value.items() for item in pair), default=0)
        return inner if all(type(k) is str for k in value) else 1 + inner
    if kind in (tuple, set, frozenset, collections.deque):
        return 1 + max(map(ext_depth, value), default=0)
    if kind is Box:
        return 1 + ext_depth(value.items)
    if kind is Mood:
        return 1 + ext_depth(value.value)
    return 1  # datetime, date, time, timedelta, UUID, Decimal


@settings(max_examples=150, deadline=None)
@given(data)
def test_generated_data_round_trips_exactly(value: Any) -> None:
    if ext_depth(value) > _safe.MAX_NESTING:
        with pytest.raises(NotCacheableError, match="nested too deeply"):
            SAFE.dumps_typed(value)
        return
    got = round_trip(value)
    if isinstance(value, (set, frozenset)):
        assert got == value and type(got) is type(value)
    else:
        assert same(got, value)


class Unregistered:
    pass


class UnregisteredPoint:
    def __init__(self, x: int) -> None:
        self.x = x


class Shouty(str):
    pass


class Zone(dt.tzinfo):
    def utcoffset(self, when: dt.datetime | None) -> dt.timedelta:
        return dt.timedelta(0)

    def dst(self, when: dt.datetime | None) -> dt.timedelta:
        return dt.timedelta(0)

    def tzname(self, when: dt.datetime | None) -> str:
        return "zone"


@pytest.mark.parametrize(
    "value,name",
    [
        (Unregistered(), "Unregistered"),
        ([{"deep": (1, Unregistered())}], "Unregistered"),
        ({1: UnregisteredPoint(1)}, "UnregisteredPoint"),
        (Shouty("x"), "Shouty"),
        (bytearray, "type"),
        (dt.datetime(2024, 1, 1, tzinfo=Zone()), "Zone"),
    ],
    ids=["object", "nested", "non-str-key-dict", "str-subclass", "class", "tzinfo"],
)
def test_unknown_type_is_not_cacheable_naming_it(value: Any, name: str) -> None:
    with pytest.raises(NotCacheableError, match=name) as raised:
        SAFE.dumps_typed(value)
    if name != "Zone":
        assert "toolkit.serde.register" in str(raised.value)


def test_register_is_a_decorator_and_per_instance_allow_does_not_leak() -> None:
    class Local:
        def __init__(self, v: int) -> None:
            self.v = v

        def __eq__(self, other: object) -> bool:
            return type(other) is Local and other.v == self.v

    with pytest.raises(NotCacheableError, match="Local"):
        SAFE.dumps_typed(Local(1))
    own = SafeSerializer(allow=[Local])
    assert round_trip(Local(1), own) == Local(1)
    forged = own.dumps_typed(Local(1))
    with pytest.raises(SerializationError, match="not on the allow-list"):
        SAFE.loads_typed(forged)
    assert serde.register(Box) is Box


def test_register_rejects_what_cannot_be_revived_safely() -> None:
    class Listy(list[int]):
        pass

    with pytest.raises(TypeError, match="built-in list"):
        serde.register(Listy)
    with pytest.raises(TypeError, match="takes a class"):
        serde.register(len)  # type: ignore[type-var]


def test_two_classes_cannot_share_a_wire_name() -> None:
    def make() -> type:
        @dataclasses.dataclass
        class Twin:
            v: int

        return Twin

    first, second = make(), make()
    own = SafeSerializer(allow=[first])
    with pytest.raises(ValueError, match="already registered"):
        SafeSerializer(allow=[first, second])
    assert round_trip(first(1), own) == first(1)


def test_revival_runs_no_user_code() -> None:
    ran: list[str] = []

    @dataclasses.dataclass
    class Guarded:
        v: int

        def __new__(cls, *args: Any, **kwargs: Any) -> Guarded:
            ran.append("__new__")
            return super().__new__(cls)

        def __post_init__(self) -> None:
            ran.append("__post_init__")

        def __setstate__(self, state: Any) -> None:
            ran.append("__setstate__")

        def __reduce__(self) -> Any:
            ran.append("__reduce__")
            return (Guarded, (self.v,))

    own = SafeSerializer(allow=[Guarded])
    payload = own.dumps_typed(Guarded(3))
    ran.clear()
    got = own.loads_typed(payload)
    assert type(got) is Guarded and got.v == 3
    assert ran == []


def ext(code: int, content: Any) -> bytes:
    """A framed payload holding one extension value (so only its content can be refused)."""
    return _safe.frame(ormsgpack.packb(ormsgpack.Ext(code, ormsgpack.packb(content))))


TRIGGERED: list[str] = []


class Trap:
    """Not registered: every hook records that it ran."""

    def __new__(cls, *args: Any, **kwargs: Any) -> Trap:
        TRIGGERED.append("__new__")
        return super().__new__(cls)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        TRIGGERED.append("__init__")

    def __setstate__(self, state: Any) -> None:
        TRIGGERED.append("__setstate__")

    def __reduce__(self) -> Any:
        TRIGGERED.append("__reduce__")
        return (Trap, ())


TRAP_NAME = f"{Trap.__module__}:{Trap.__qualname__}"
HOSTILE: dict[str, Any] = {
    "pickle": ("pickle", pickle.dumps(Trap())),
    "langgraph-msgpack-os-system": (
        "msgpack",
        b"\xc7\x15\x01\x92\xa2os\xa6system\x91\xa4true\x00\x00\x00\x00",
    ),
    "langgraph-ext-under-our-tag": (
        TAG,
        _safe.frame(ormsgpack.packb(ormsgpack.Ext(1, ormsgpack.packb(["os", "system", ["true"]])))),
    ),
    "object-os-system": (TAG, ext(_safe.OBJECT, ["os:system", {"command": "true"}])),
    "object-builtins-eval": (TAG, ext(_safe.OBJECT, ["builtins:eval", {}])),
    "enum-os-system": (TAG, ext(_safe.ENUM, ["os:system", "true"])),
    "object-unregistered-trap": (TAG, ext(_safe.OBJECT, [TRAP_NAME, {}])),
    "object-dotted-name": (TAG, ext(_safe.OBJECT, ["os.system", {}])),
    "enum-as-object": (TAG, ext(_safe.OBJECT, [f"{Mood.__module__}:Mood", {}])),
    "object-as-enum": (TAG, ext(_safe.ENUM, [f"{Box.__module__}:Box", 1])),
    "class-attribute-swap": (TAG, ext(_safe.OBJECT, [f"{Box.__module__}:Box", {"__class__": 1}])),
    "unknown-slot": (TAG, ext(_safe.OBJECT, [f"{Plain.__module__}:Plain", {"other": 1}])),
    "unknown-ext-code": (TAG, _safe.frame(ormsgpack.packb(ormsgpack.Ext(99, b"\x90")))),
    "bad-ext-content": (TAG, ext(_safe.UUID, "not 16 bytes")),
    "bad-datetime": (TAG, ext(_safe.DATETIME, [2024, 13, 1, 0, 0, 0, 0, 0, None])),
    "bad-zone": (TAG, ext(_safe.DATETIME, [2024, 1, 1, 0, 0, 0, 0, 0, "../../etc/passwd"])),
    "odd-dict": (TAG, ext(_safe.DICT, [1])),
    "unhashable-set": (TAG, ext(_safe.SET, [[1]])),
    "langchain-constructor-json": (
        "json",
        b'{"lc": 1, "type": "constructor", "id": ["os", "system"], "kwargs": {}}',
    ),
    "unknown-tag": ("nonsense", b"\x90"),
    "truncated": (TAG, SAFE.dumps_typed({"a": (1, 2)})[1][:-1]),
    "empty": (TAG, b""),
    "reserved-byte": (TAG, b"\xc1"),
    "not-a-pair": ("only-one",),
    "not-bytes": (TAG, 12),
    "none": (None, None),
}


def imports_during(call: Callable[[], Any]) -> tuple[list[str], BaseException | None]:
    """Run ``call`` with every import attempt recorded; return them and what it raised."""
    imported: list[str] = []
    real_import, real_import_module = builtins.__import__, importlib.import_module

    def spy_import(name: str, *args: Any, **kwargs: Any) -> Any:
        imported.append(name)
        return real_import(name, *args, **kwargs)

    def spy_import_module(name: str, package: str | None = None) -> Any:
        imported.append(name)
        return real_import_module(name, package)

    builtins.__import__, importlib.import_module = spy_import, spy_import_module
    try:
        call()
    except BaseException as exc:  # handed back so the caller asserts on it unpatched
        return imported, exc
    finally:
        builtins.__import__, importlib.import_module = real_import, real_import_module
    return imported, None


@pytest.mark.parametrize("data", HOSTILE.values(), ids=HOSTILE.keys())
def test_hostile_payload_raises_serialization_error_and_runs_nothing(data: Any) -> None:
    TRIGGERED.clear()
    imported, raised = imports_during(lambda: SAFE.loads_typed(data))
    assert isinstance(raised, SerializationError), raised
    assert imported == []
    assert TRIGGERED == []


def test_pickle_relabelled_with_our_tag_is_refused_inertly() -> None:
    # Without the end marker msgpack would read the pickle's PROTO byte (0x80) as an empty map.
    payload = pickle.dumps(Trap())
    TRIGGERED.clear()
    imported, raised = imports_during(lambda: SAFE.loads_typed((TAG, payload)))
    assert imported == [] and TRIGGERED == []
    assert isinstance(raised, SerializationError)


@pytest.mark.parametrize("payload", [b"", b"{}", b"\x01\x02junk", b"\x80\x04\x95."])
def test_payloads_without_the_end_marker_are_refused(payload: bytes) -> None:
    with pytest.raises(SerializationError):
        SAFE.loads_typed((TAG, payload))


def test_constructor_shaped_map_is_inert_data() -> None:
    shaped = {"lc": 1, "type": "constructor", "id": ["os", "system"], "kwargs": {}}
    assert SAFE.loads_typed((TAG, _safe.frame(ormsgpack.packb(shaped)))) == shaped


RICH = {
    "t": (1, dt.datetime(2024, 1, 1)),
    "s": {Mood.HAPPY},
    "b": Box([uuid.UUID(int=5)]),
    "k": {1: 2},
}


def test_every_truncation_is_a_serialization_error() -> None:
    payload = SAFE.dumps_typed(RICH)[1]
    for end in range(len(payload)):
        with pytest.raises(SerializationError):
            SAFE.loads_typed((TAG, payload[:end]))


def test_flipped_bytes_decode_to_data_or_serialization_error() -> None:
    # msgpack has no checksum: a flip inside a string or number yields other data. What
    # must hold is that no flip escapes as another exception or imports anything.
    payload = SAFE.dumps_typed(RICH)[1]
    outcomes: list[BaseException | None] = []
    for index in range(len(payload)):
        for mask in (0x01, 0x80, 0xFF):
            flipped = bytearray(payload)
            flipped[index] ^= mask
            imported, raised = imports_during(partial(SAFE.loads_typed, (TAG, bytes(flipped))))
            assert imported == []
            assert raised is None or isinstance(raised, SerializationError), raised
            outcomes.append(raised)
    assert sum(raised is not None for raised in outcomes) > len(payload)


def test_foreign_serializers_payloads_are_rejected() -> None:
    for foreign in (
        JsonPlusSerializer().dumps_typed({"a": 1}),
        PickleSerializer(i_understand_this_executes_code=True).dumps_typed(1),
    ):
        with pytest.raises(SerializationError, match="unknown serialization tag"):
            SAFE.loads_typed(foreign)


def test_pickle_serializer_requires_the_explicit_flag() -> None:
    with pytest.raises(ValueError, match="executes code"):
        PickleSerializer()
    with pytest.raises(ValueError, match="executes code"):
        PickleSerializer(i_understand_this_executes_code="yes")  # type: ignore[arg-type]
    unsafe = PickleSerializer(i_understand_this_executes_code=True)
    value = {"t": (1, {2}), "u": Unregistered.__name__, "d": dt.date(2020, 1, 2)}
    assert round_trip(value, unsafe) == value
    with pytest.raises(SerializationError):
        unsafe.loads_typed(SAFE.dumps_typed(1))
    with pytest.raises(SerializationError):
        unsafe.loads_typed(("pickle", b"\x80\x04garbage"))


@pytest.mark.parametrize(
    "serializer",
    [
        JsonPlusSerializer(),
        PickleSerializer(i_understand_this_executes_code=True),
        SafeSerializer(),
    ],
    ids=["jsonplus", "pickle", "safe"],
)
def test_any_serializer_works_for_our_cache(serializer: Any) -> None:
    cache: InMemoryCache[Any] = InMemoryCache(serde=serializer)
    value = {"messages": [["ai", "hello world"]] * 3, "n": 42, "when": dt.date(2024, 1, 2)}
    cache.set({(("ns",), "k"): (value, None)})
    assert cache.get([(("ns",), "k")]) == {(("ns",), "k"): value}


class Chat(TypedDict):
    messages: Annotated[list[Any], add_messages]
    fanout: list[str]


def test_langgraph_node_writes_with_messages_and_send_round_trip() -> None:
    calls: list[str] = []

    def plan(state: Chat) -> Command[Any]:
        calls.append("plan")
        return Command(
            goto=[Send("work", {"messages": [], "fanout": [topic]}) for topic in state["fanout"]],
            update={"messages": [AIMessage("planning", id="plan-1")]},
        )

    def work(state: Chat) -> dict[str, Any]:
        calls.append("work")
        return {"messages": [AIMessage(f"did {state['fanout'][0]}", id=f"w-{state['fanout'][0]}")]}

    builder = StateGraph(Chat)
    builder.add_node("plan", plan, cache_policy=CachePolicy(), destinations=("work",))
    builder.add_node("work", work, cache_policy=CachePolicy())
    builder.add_edge(START, "plan")
    graph = builder.compile(cache=InMemoryCache())
    start: Chat = {"messages": [HumanMessage("go", id="h")], "fanout": ["a", "b"]}
    first = graph.invoke(start)
    assert calls.count("plan") == 1 and calls.count("work") == 2
    again = graph.invoke(start)
    assert again == first
    assert calls.count("plan") == 1 and calls.count("work") == 2
    assert [m.content for m in first["messages"]] == ["go", "planning", "did a", "did b"]


def test_deeply_nested_payloads_are_serialization_errors() -> None:
    nested = b"\x90"
    for _ in range(5000):  # a tuple inside a tuple inside ... far past the recursion limit
        nested = ormsgpack.packb(ormsgpack.Ext(_safe.TUPLE, nested))
    with pytest.raises(SerializationError, match="nested"):
        SAFE.loads_typed((TAG, _safe.frame(nested)))
    with pytest.raises(SerializationError, match=r"[Rr]ecursion"):
        SAFE.loads_typed((TAG, _safe.frame(b"\x91" * 100_000 + b"\xc0")))


class Pair(collections.namedtuple("Pair", "left right")):
    __slots__ = ()

    @staticmethod
    def of(value: Any) -> Pair:
        return Pair(value, None)


class Shape(enum.Enum):
    ROUND = "round"


@dataclasses.dataclass
class Cat:
    name: str


@dataclasses.dataclass
class Dog:
    name: str


class Owner(pydantic.BaseModel):
    pet: Cat | Dog
    shape: Shape


def test_langchain_documents_round_trip_without_recursion() -> None:
    from langchain_core.documents import Document

    doc = Document(page_content="text", metadata={"page": 3})
    back = round_trip(doc)
    assert type(back) is Document and back == doc


def test_langgraph_policies_never_recurse() -> None:
    """The allow-list's type lookup once called itself forever for LangGraph's classes."""
    from langgraph.types import RetryPolicy

    # Its default ``retry_on`` is a function: refused with a clear error, not a RecursionError.
    with pytest.raises(NotCacheableError, match="function"):
        SAFE.dumps_typed(RetryPolicy())
    policy = RetryPolicy(retry_on=ValueError)
    with pytest.raises(NotCacheableError):
        SAFE.dumps_typed(policy)  # a class is not data either


def test_records_the_process_stores_revive_with_their_nested_classes() -> None:
    value = [Owner(pet=Cat("x"), shape=Shape.ROUND), Owner(pet=Dog("x"), shape=Shape.ROUND)]
    back = round_trip(value)
    assert back == value
    assert [type(owner.pet) for owner in back] == [Cat, Dog]
    assert round_trip(Pair(1, (2, 3))) == Pair(1, (2, 3))
    assert type(round_trip(Pair(1, 2))) is Pair


def test_a_record_never_stored_here_is_refused_by_name() -> None:
    @dataclasses.dataclass
    class NeverStored:
        v: int

    forged = SafeSerializer(allow=[NeverStored]).dumps_typed(NeverStored(1))
    with pytest.raises(SerializationError, match="not on the allow-list"):
        SAFE.loads_typed(forged)


@pytest.mark.parametrize(
    "body",
    [pickle.dumps({"a": 1}), b'{"a": 1}', b"123", ormsgpack.packb({"a": 1}) + b"junk"],
    ids=["pickle", "json-object", "json-number", "msgpack-with-junk"],
)
def test_foreign_bytes_ending_in_the_marker_are_refused(body: bytes) -> None:
    with pytest.raises(SerializationError, match="frame"):
        SAFE.loads_typed((TAG, body + _safe.END))


@pytest.mark.parametrize("wrap", [lambda v: (v,), lambda v: [v], lambda v: {"k": v}, Pair.of])
def test_too_deep_nesting_is_not_cacheable_whatever_the_recursion_limit(
    wrap: Callable[[Any], Any],
) -> None:
    value: Any = 1
    for _ in range(20_000):
        value = wrap(value)
    limit = sys.getrecursionlimit()
    sys.setrecursionlimit(100_000)  # as hypothesis and some apps do: no crash either way
    try:
        with pytest.raises(NotCacheableError, match="nested too deeply"):
            SAFE.dumps_typed(value)
    finally:
        sys.setrecursionlimit(limit)
    shallow = value
    for _ in range(20_000 - _safe.MAX_NESTING + 1):
        shallow = shallow[0] if not isinstance(shallow, dict) else shallow["k"]
    assert round_trip(shallow) == shallow


def test_crafted_deep_extension_bytes_are_refused() -> None:
    inner = ormsgpack.packb([])
    for _ in range(5_000):
        inner = ormsgpack.packb(ormsgpack.Ext(_safe.TUPLE, inner))
    with pytest.raises(SerializationError, match="nested deeper"):
        SAFE.loads_typed((TAG, _safe.frame(inner)))


def boxed(depth: int) -> Any:
    """A value whose extensions nest exactly ``depth`` deep (tuples around a record)."""
    value: Any = Cat("x")
    for _ in range(depth - 1):
        value = (value,)
    return value


def test_extension_nesting_is_bounded_on_both_sides() -> None:
    deepest = boxed(_safe.MAX_NESTING)
    assert round_trip(deepest) == deepest
    with pytest.raises(NotCacheableError, match="Cat: nested too deeply"):
        SAFE.dumps_typed(boxed(_safe.MAX_NESTING + 1))
    with pytest.raises(NotCacheableError, match="nested too deeply"):
        SAFE.dumps_typed({1: boxed(_safe.MAX_NESTING)})  # the Python walk keeps the same bound
    hostile = ormsgpack.packb(None)
    for _ in range(_safe.MAX_NESTING + 1):
        hostile = ormsgpack.packb(ormsgpack.Ext(_safe.TUPLE, b"\x91" + hostile))
    with pytest.raises(SerializationError, match="nested deeper than"):
        SAFE.loads_typed((TAG, _safe.frame(hostile)))


DEEP_SCRIPT = """
import sys, dataclasses, threading, ormsgpack
from toolkit import NotCacheableError, SafeSerializer, SerializationError
from toolkit.serde import _safe
sys.setrecursionlimit(1_000_000)  # applications do; the C stack is then the only limit
safe = SafeSerializer()
@dataclasses.dataclass
class Node:
    inner: object
def refused(call, error):
    try:
        call()
    except error:
        return
    raise AssertionError("accepted")
def hostile(levels, lists):
    data = ormsgpack.packb(None)
    for _ in range(levels):  # each level: an extension holding lists nested ``lists`` deep
        data = ormsgpack.packb(ormsgpack.Ext(_safe.TUPLE, b"\\x91" * (lists + 1) + data))
    return (_safe.SAFE_TAG, _safe.frame(data))
def run():
    for levels, lists in ((50_000, 0), (99, 250), (99, 900)):
        refused(lambda: safe.loads_typed(hostile(levels, lists)), SerializationError)
    for leaf in (None, {1: 2}):
        value = leaf
        for _ in range(50_000):
            value = Node(value)
        refused(lambda: safe.dumps_typed(value), NotCacheableError)
    plain = 1
    for _ in range(50_000):
        plain = [plain]
    refused(lambda: safe.dumps_typed(plain), NotCacheableError)
    print("ok")
worker = threading.Thread(target=run)  # a thread's C stack is what web servers run on
worker.start()
worker.join()
"""


def test_deep_nesting_never_crashes_the_process_with_a_raised_recursion_limit() -> None:
    """ormsgpack recurses on the C stack through our hooks: without a bound this was SIGSEGV."""
    import subprocess
    import sys

    done = subprocess.run(
        [sys.executable, "-c", DEEP_SCRIPT], capture_output=True, text=True, timeout=120
    )
    assert (done.returncode, done.stdout.strip()) == (0, "ok"), done.stderr[-2000:]


def test_every_refusal_is_not_cacheable() -> None:
    """A value the serializer cannot store is always NotCacheableError, never a bare TypeError."""
    with pytest.raises(NotCacheableError, match="tzinfo of type Zone"):
        SAFE.dumps_typed(dt.datetime(2024, 1, 1, tzinfo=Zone()))
    with pytest.raises(NotCacheableError, match="tzinfo of type Zone"):
        SAFE.dumps_typed({1: dt.time(tzinfo=Zone())})


def test_a_lone_surrogate_is_refused_for_what_it_is() -> None:
    with pytest.raises(NotCacheableError, match="str: string contains surrogates"):
        SafeSerializer().dumps_typed("lone \ud800")


def test_a_zone_without_a_key_is_refused_not_stored_naive() -> None:
    """A ``ZoneInfo`` read from a file has no key to revive it by: it used to come back as
    ``None``, so an aware datetime read back naive."""
    paris = zoneinfo.ZoneInfo.from_file(io.BytesIO(_zone_file("Europe/Paris")))
    with pytest.raises(NotCacheableError, match="ZoneInfo without a key"):
        SAFE.dumps_typed(dt.datetime(2024, 7, 1, 12, tzinfo=paris))
    with pytest.raises(NotCacheableError, match="ZoneInfo without a key"):
        SAFE.dumps_typed([dt.time(12, tzinfo=paris)])


def _zone_file(key: str) -> bytes:
    for root in zoneinfo.TZPATH:
        path = Path(root) / key
        if path.is_file():
            return path.read_bytes()
    pytest.skip(f"no tz database file for {key}")


def test_a_named_fixed_offset_zone_keeps_its_name() -> None:
    """``timezone(offset, "CET")`` used to come back unnamed: ``tzname()`` said "UTC+01:00"."""
    cet = dt.timezone(dt.timedelta(hours=1), "CET")
    got = round_trip(dt.datetime(2024, 1, 1, tzinfo=cet))
    assert got.tzname() == "CET"
    assert round_trip(dt.time(8, tzinfo=cet)).tzname() == "CET"
    plain = round_trip(dt.datetime(2024, 1, 1, tzinfo=dt.timezone(dt.timedelta(hours=1))))
    assert plain.tzname() == "UTC+01:00"
    assert round_trip(dt.datetime(2024, 1, 1, tzinfo=dt.timezone.utc)).tzinfo is dt.timezone.utc


def _crafted_object(cls: type, state: dict[str, Any]) -> tuple[str, bytes]:
    name = f"{cls.__module__}:{cls.__qualname__}"
    content = ormsgpack.packb([name, state])
    return TAG, _safe.frame(ormsgpack.packb(ormsgpack.Ext(_safe.OBJECT, content)))


def test_stored_state_never_runs_a_property_setter() -> None:
    # Revival wrote each stored attribute with setattr, so bytes naming a property with a
    # setter ran that setter (user code, with a value from the store) while decoding.
    ran: list[Any] = []

    @dataclasses.dataclass
    class Account:
        name: str

        @property
        def email(self) -> str:
            return "fixed"

        @email.setter
        def email(self, value: str) -> None:
            ran.append(value)

    serializer = SafeSerializer(allow=[Account])
    revived = serializer.loads_typed(
        _crafted_object(Account, {"name": "a", "email": "from the store"})
    )
    assert ran == []
    assert type(revived) is Account and revived.name == "a" and revived.email == "fixed"


def test_a_slot_shadowed_by_a_property_round_trips_through_the_slot() -> None:
    ran: list[Any] = []

    class Base:
        __slots__ = ("level",)

    class Shadowed(Base):
        __slots__ = ()

        @property
        def level(self) -> int:
            ran.append("get")
            return -1

        @level.setter
        def level(self, value: int) -> None:
            ran.append(("set", value))

    serializer = SafeSerializer(allow=[Shadowed])
    value = Shadowed()
    Base.level.__set__(value, 3)  # type: ignore[attr-defined]
    revived = serializer.loads_typed(serializer.dumps_typed(value))
    assert ran == []
    assert Base.level.__get__(revived, Shadowed) == 3  # type: ignore[attr-defined]


class _Labelled(collections.namedtuple("_Labelled", "x y")):
    def total(self) -> Any:
        return self.x + self.y


def test_a_named_tuple_with_instance_attributes_is_refused_not_stripped() -> None:
    # A namedtuple subclass without __slots__ = () has an instance dict; only the items
    # were stored, so an attribute set on the value was silently missing after a hit.
    plain = _Labelled(1, 2)
    assert SAFE.loads_typed(SAFE.dumps_typed(plain)) == plain
    labelled = _Labelled(1, 2)
    labelled.label = "origin"  # type: ignore[attr-defined]
    with pytest.raises(NotCacheableError, match="instance attributes"):
        SAFE.dumps_typed(labelled)
    with pytest.raises(NotCacheableError, match="instance attributes"):
        SAFE.dumps_typed({(1,): [labelled]})  # the Python walk (non-str keys) as well
