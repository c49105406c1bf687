"""Key derivation: canonical, type-tagged, stable across processes and hash seeds."""

from __future__ import annotations

import dataclasses
import datetime as dt
import decimal
import enum
import functools
import json
import math
import os
import struct
import subprocess
import sys
import uuid
import zoneinfo
from collections import OrderedDict
from collections.abc import Callable
from pathlib import Path
from typing import Any, NamedTuple, cast

import numpy as np
import pydantic
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from langchain_core.messages import AIMessage, HumanMessage
from langchain_core.runnables import RunnableConfig

from toolkit import InMemoryCache, cached
from toolkit.keys import KeyPlan, derive_key, encode, encode_bytes, hash_encoding, namespace_of

ROOT = Path(__file__).resolve().parents[1]


def key(value: Any, **options: Any) -> str:
    return hash_encoding(encode(value, **options))


# -- distinct values give distinct keys -------------------------------------------------

DISTINCT: list[Any] = [
    None,
    0,
    1,
    -1,
    1.0,
    0.0,
    -0.0,
    math.nan,
    math.inf,
    -math.inf,
    True,
    False,
    "1",
    "",
    b"1",
    b"",
    (),
    [],
    {},
    set(),
    frozenset(),
    ("a b",),
    ("a", "b"),
    ["a", "b"],
    {1: "x"},
    {"1": "x"},
    {True: "x"},
    {1.0: "x"},
    {"a": 1, "b": 2},
    {"a": 2, "b": 1},
    {"ab": 1},
    {"a": "b1"},
    (1, 2),
    ((1,), 2),
    (1, (2,)),
    {1, 2},
    frozenset({1, 2}),
    dt.date(2024, 1, 2),
    dt.datetime(2024, 1, 2),
    dt.datetime(2024, 1, 2, tzinfo=dt.timezone.utc),
    dt.time(1, 2),
    dt.timedelta(seconds=1),
    uuid.UUID(int=1),
    decimal.Decimal("1"),
    decimal.Decimal("1.0"),
    1 + 2j,
    "2024-01-02",
    b"x" * 300,
    b"x" * 301,
]


def test_distinct_values_have_distinct_keys() -> None:
    keys = [key(v) for v in DISTINCT]
    clashes = [
        (a, b) for i, a in enumerate(DISTINCT) for b in DISTINCT[i + 1 :] if key(a) == key(b)
    ]
    assert clashes == []
    assert len(set(keys)) == len(DISTINCT)


def test_one_instant_in_two_zones_is_two_keys() -> None:
    """Same instant, same offset, other zone: a function may format it differently."""
    paris = dt.datetime(2024, 1, 1, 12, tzinfo=zoneinfo.ZoneInfo("Europe/Paris"))
    zones = [
        paris,
        paris.replace(tzinfo=dt.timezone(dt.timedelta(hours=1))),
        paris.replace(tzinfo=dt.timezone(dt.timedelta(hours=1), "CET")),
        paris.replace(tzinfo=zoneinfo.ZoneInfo("Africa/Lagos")),  # +01:00 all year
    ]
    assert len({key(when) for when in zones}) == len(zones)
    assert len({key(when.timetz()) for when in zones[1:3]}) == 2
    assert len({encode_bytes([when]) for when in zones}) == len(zones)
    assert key(paris) == key(dt.datetime(2024, 1, 1, 12, tzinfo=zoneinfo.ZoneInfo("Europe/Paris")))
    assert key(paris.replace(tzinfo=None)) == key(dt.datetime(2024, 1, 1, 12))

    class Nameless(dt.tzinfo):
        def utcoffset(self, when: dt.datetime | None) -> dt.timedelta:
            return dt.timedelta(hours=1)

        def tzname(self, when: dt.datetime | None) -> str:
            raise NotImplementedError

        def dst(self, when: dt.datetime | None) -> dt.timedelta:
            return dt.timedelta(0)

    assert key(dt.time(12, tzinfo=Nameless())) == key(dt.time(12, tzinfo=Nameless()))


def test_keys_are_128_bit_hex() -> None:
    digest = key("anything")
    assert len(digest) == 32
    int(digest, 16)


def test_equal_values_in_any_order_share_a_key() -> None:
    assert key({"a": 1, "b": [1, 2]}) == key({"b": [1, 2], "a": 1})
    assert key({3, 1, 2}) == key({2, 3, 1})
    assert key(frozenset("abc")) == key(frozenset("cba"))
    assert key(OrderedDict(a=1, b=2)) == key(OrderedDict(b=2, a=1))
    assert key(math.nan) == key(float("nan")) == key(-math.nan)


def test_lists_and_tuples_differ_unless_loose() -> None:
    assert key([1, 2]) != key((1, 2))
    assert key({1}) != key(frozenset({1}))
    assert key([1, 2], strict_containers=False) == key((1, 2), strict_containers=False)
    assert key({1}, strict_containers=False) == key(frozenset({1}), strict_containers=False)


class Color(enum.Enum):
    RED = 1
    BLUE = 2


class Shade(enum.IntEnum):
    RED = 1


@dataclasses.dataclass
class Point:
    x: int
    y: int
    note: str = dataclasses.field(default="", compare=False)


@dataclasses.dataclass
class Other:
    x: int
    y: int


class Model(pydantic.BaseModel):
    a: int
    b: list[str] = []


class Pair(NamedTuple):
    a: int
    b: int


class Tenant:
    def __init__(self, name: str) -> None:
        self.name = name

    def __cache_key__(self) -> str:
        return self.name


def test_supported_rich_types() -> None:
    assert key(Color.RED) != key(Color.BLUE) != key(1)
    assert key(Shade.RED) != key(1)
    assert key(Point(1, 2)) == key(Point(1, 2, note="ignored: compare=False"))
    assert key(Point(1, 2)) != key(Point(2, 1))
    assert key(Point(1, 2)) != key(Other(1, 2))
    assert key(Model(a=1)) == key(Model(a=1, b=[]))
    assert key(Model(a=1)) != key(Model(a=2))
    assert key(Pair(1, 2)) != key((1, 2))  # a namedtuple keeps its class
    assert key(Tenant("acme")) == key(Tenant("acme"))
    assert key(Tenant("acme")) != key(Tenant("umbrella"))
    assert key(Tenant("acme")) != key("acme")
    assert key(Point) != key(Other)


@dataclasses.dataclass
class Batch:
    name: str
    data: Any


def test_numpy_arrays_inside_records() -> None:
    assert key(Batch("b", np.arange(3))) == key(Batch("b", np.arange(3)))
    assert key(Batch("b", np.arange(3))) != key(Batch("b", np.arange(4)))


def test_numpy_arrays_by_dtype_shape_and_bytes() -> None:
    a = np.arange(6, dtype=np.int64)
    assert key(a) == key(np.arange(6, dtype=np.int64))
    assert key(a) != key(a.astype(np.int32))
    assert key(a) != key(a.reshape(2, 3))
    assert key(a) != key(a + 1)
    assert key(a.astype(">i8")) == key(a)  # byte order is normalized
    assert key(np.float64(1.0)) != key(1.0)
    assert key(np.array([1, "a"], dtype=object)) == key(np.array([1, "a"], dtype=object))


def test_langchain_messages_ignore_run_specific_fields() -> None:
    first = AIMessage("hello", id="run-1", response_metadata={"latency": 1.2})
    second = AIMessage("hello", id="run-2", response_metadata={"latency": 3.4})
    assert key(first) == key(second)
    assert key(first) != key(AIMessage("hello!"))
    assert key(first) != key(HumanMessage("hello"))


class Opaque:
    """A user's class with no encoding of its own."""


def test_unsupported_value_is_a_type_error_naming_the_parameter() -> None:
    def f(x: Any, opts: Any) -> None: ...

    with pytest.raises(TypeError) as info:
        derive_key(f, (1, {"a": Opaque()}))
    message = str(info.value)
    assert "'opts'" in message
    assert "tests.test_keys.Opaque" in message
    assert "key=" in message and "ignore=('opts',)" in message and "__cache_key__" in message


def test_cyclic_value_is_a_clear_error() -> None:
    def f(x: Any) -> None: ...

    loop: list[Any] = []
    loop.append(loop)
    with pytest.raises(TypeError, match=r"'x'.*cyclic"):
        derive_key(f, (loop,))


# -- binding ----------------------------------------------------------------------------


def test_defaults_and_keywords_bind_to_one_key() -> None:
    def f(a: int, b: int = 2, *, c: int = 3) -> None: ...

    expected = derive_key(f, (1,))
    assert derive_key(f, (), {"a": 1}) == expected
    assert derive_key(f, (1, 2)) == expected
    assert derive_key(f, (1,), {"b": 2, "c": 3}) == expected
    assert derive_key(f, (), {"c": 3, "b": 2, "a": 1}) == expected
    assert derive_key(f, (1, 3)) != expected


def test_varargs_and_varkw() -> None:
    def f(a: int, *rest: int, **extra: int) -> None: ...

    assert derive_key(f, (1, 2, 3)) != derive_key(f, (1, 2))
    assert derive_key(f, (1,), {"x": 1, "y": 2}) == derive_key(f, (1,), {"y": 2, "x": 1})
    assert derive_key(f, (1,), {"x": 1}) != derive_key(f, (1, 1))


def test_parameter_names_are_part_of_the_key() -> None:
    def f(a: int) -> None: ...

    def g(b: int) -> None: ...

    assert derive_key(f, (1,), ns=("x",)) != derive_key(g, (1,), ns=("x",))


def test_bad_calls_raise_like_the_function_would() -> None:
    def f(a: int, b: int) -> None: ...

    with pytest.raises(TypeError, match="missing a required argument"):
        derive_key(f, (1,))
    with pytest.raises(TypeError):
        derive_key(f, (1, 2, 3))
    with pytest.raises(TypeError):
        derive_key(f, (1,), {"c": 2})


def test_framework_parameters_never_enter_a_key() -> None:
    def node(
        state: dict[str, Any], config: Any, *, runtime: Any = None, store: Any = None
    ) -> None: ...

    def typed(state: dict[str, Any], cfg: RunnableConfig, w: StreamWriter) -> None: ...

    base = derive_key(node, ({"q": 1}, {"configurable": {"thread_id": "a"}}))
    assert derive_key(node, ({"q": 1}, object()), {"runtime": object()}) == base
    assert KeyPlan(typed).skipped == {"cfg", "w"}
    assert derive_key(typed, ({"q": 1}, object(), object())) == derive_key(typed, ({"q": 1}, 1, 2))


BaseStore = Any
StreamWriter = Any  # the annotation name alone marks the parameter (string annotations)


def test_a_framework_name_annotated_as_a_scalar_is_the_callers_data() -> None:
    """LangGraph never injects a str or an int: ``price(store: str, item)`` must not serve
    one store's price for another's."""

    def price(store: str, item: str) -> None: ...

    def priced(item: str, config: int | None = None, writer: bytes = b"") -> None: ...

    def node(state: dict[str, Any], store: BaseStore | None = None) -> None: ...

    assert derive_key(price, ("north", "tea")) != derive_key(price, ("south", "tea"))
    assert KeyPlan(priced).skipped == frozenset()
    assert derive_key(priced, ("tea", 1)) != derive_key(priced, ("tea", 2))
    assert KeyPlan(node).skipped == {"store"}


def test_ignore_must_name_real_parameters() -> None:
    def f(a: int) -> None: ...

    with pytest.raises(ValueError, match="nope"):
        KeyPlan(f, ignore=("nope",))


def test_default_namespace_is_module_and_qualname() -> None:
    assert namespace_of(test_default_namespace_is_module_and_qualname) == (
        __name__,
        "test_default_namespace_is_module_and_qualname",
    )


# -- properties -------------------------------------------------------------------------

scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.floats(allow_nan=True),
    st.text(),
    st.binary(),
    st.decimals(allow_nan=False),
    st.datetimes(),
    st.uuids(),
)
hashables = st.recursive(scalars, lambda inner: st.tuples(inner, inner), max_leaves=4)
values = st.recursive(
    scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4),
        st.lists(inner, max_size=4).map(tuple),
        st.dictionaries(hashables, inner, max_size=4),
        st.frozensets(hashables, max_size=4),
    ),
    max_leaves=12,
)


def same(a: Any, b: Any) -> bool:
    """Equality that also requires equal types all the way down (NaN equals NaN)."""
    if type(a) is not type(b):
        return False
    if isinstance(a, float):
        return (math.isnan(a) and math.isnan(b)) or (
            a == b and math.copysign(1, a) == math.copysign(1, b)
        )
    if isinstance(a, (list, tuple)):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, dict):
        if len(a) != len(b):
            return False
        return all(any(same(k, k2) and same(v, b[k2]) for k2 in b) for k, v in a.items())
    if isinstance(a, frozenset):
        return len(a) == len(b) and all(any(same(x, y) for y in b) for x in a)
    if isinstance(a, decimal.Decimal):
        return bool(a.as_tuple() == b.as_tuple())
    return bool(a == b)


def reordered(value: Any) -> Any:
    """A copy built in a different insertion order."""
    if isinstance(value, dict):
        return {k: reordered(value[k]) for k in reversed(list(value))}
    if isinstance(value, list):
        return [reordered(v) for v in value]
    if isinstance(value, tuple):
        return tuple(reordered(v) for v in value)
    if isinstance(value, frozenset):
        return frozenset(reversed([reordered(v) for v in value]))
    return value


@settings(max_examples=300, deadline=None)
@given(values)
def test_equal_inputs_give_equal_keys(value: Any) -> None:
    assert key(value) == key(reordered(value))


@settings(max_examples=300, deadline=None)
@given(values, values)
def test_keys_are_equal_exactly_when_values_are(a: Any, b: Any) -> None:
    assert (key(a) == key(b)) == same(a, b)


# -- stability across processes --------------------------------------------------------

PROBE = """
import datetime, decimal, json, uuid
from toolkit.keys import derive_key, hash_encoding, encode
def f(a, b=2, *rest, **kw): ...
values = [{"b": 1, "a": [1, 2.5, None]}, {"x", "y", "z", "w"}, frozenset({(1, "a"), (2, "b")}),
          {1: "a", "1": "b", (1, 2): {3, 4}}, datetime.datetime(2024, 5, 17, 12, 30),
          uuid.UUID(int=7), decimal.Decimal("3.14"), b"bytes", -0.0, float("nan")]
keys = [hash_encoding(encode(v)) for v in values]
keys.append(derive_key(f, (1, 3, 4), {"z": 1, "y": {"q", "r"}}, ns=("n",))[1])
print(json.dumps(keys))
"""


def test_keys_are_identical_across_hash_seeds() -> None:
    outputs = set()
    for seed in ("0", "1", "42", "1234", "random"):
        env = {**os.environ, "PYTHONHASHSEED": seed, "PYTHONPATH": str(ROOT)}
        done = subprocess.run(
            [sys.executable, "-c", PROBE], env=env, capture_output=True, text=True, check=True
        )
        outputs.add(done.stdout)
    assert len(outputs) == 1
    assert len(json.loads(outputs.pop())) == 11


# -- function identity (issue 10 items 1 and 3) -----------------------------------------


def _summarize(text: str) -> str:
    return f"summary of {text}"


def _translate(text: str) -> str:
    return f"translation of {text}"


def scale(factor: int, x: int) -> int:
    return factor * x


def test_functions_with_one_namespace_and_parameters_get_distinct_keys() -> None:
    assert derive_key(_summarize, ("hello",), ns=("llm",)) != derive_key(
        _translate, ("hello",), ns=("llm",)
    )


def test_key_id_is_the_explicit_way_to_share() -> None:
    shared = KeyPlan(_summarize, key_id="text-v1").digest(("hello",), {})
    assert KeyPlan(_translate, key_id="text-v1").digest(("hello",), {}) == shared
    assert KeyPlan(_translate, key_id="text-v2").digest(("hello",), {}) != shared
    # key_id names the function as module:qualname would, so a renamed function keeps its keys
    derived = KeyPlan(_summarize).digest(("hello",), {})
    assert KeyPlan(_translate, key_id=f"{__name__}:_summarize").digest(("hello",), {}) == derived
    with pytest.raises(TypeError, match="key_id"):
        KeyPlan(_summarize, key_id=3)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="key_id"):
        KeyPlan(_summarize, key_id="")


def test_partials_key_on_the_wrapped_function_and_frozen_arguments() -> None:
    double, triple = functools.partial(scale, 2), functools.partial(scale, 3)
    assert derive_key(double, (5,), ns=("s",)) != derive_key(triple, (5,), ns=("s",))
    assert derive_key(double, (5,), ns=("s",)) == derive_key(
        functools.partial(scale, 2), (5,), ns=("s",)
    )
    assert derive_key(functools.partial(scale, factor=2), (), {"x": 5}, ns=("s",)) != (
        derive_key(functools.partial(scale, factor=3), (), {"x": 5}, ns=("s",))
    )
    with pytest.raises(TypeError, match="key_id="):
        KeyPlan(functools.partial(scale, cast(Any, object())))


def _make_scaler(factor: Any) -> Any:
    def scaled(x: int) -> Any:
        return factor * x

    return scaled


def test_closures_key_on_their_captured_values() -> None:
    assert KeyPlan(_make_scaler(2)).digest((5,), {}) != KeyPlan(_make_scaler(3)).digest((5,), {})
    assert KeyPlan(_make_scaler(2)).digest((5,), {}) == KeyPlan(_make_scaler(2)).digest((5,), {})
    with pytest.raises(TypeError, match=r"captures 'factor'.*key_id="):
        KeyPlan(_make_scaler(object()))
    assert KeyPlan(_make_scaler(object()), key_id="scaler").digest((5,), {})


def test_closures_over_functions_key_on_their_identity() -> None:
    assert KeyPlan(_make_scaler(_summarize)).digest((5,), {}) != (
        KeyPlan(_make_scaler(_translate)).digest((5,), {})
    )
    assert KeyPlan(_make_scaler(_make_scaler(2))).digest((5,), {}) != (
        KeyPlan(_make_scaler(_make_scaler(3))).digest((5,), {})
    )


def test_lambdas_need_a_key_id() -> None:
    with pytest.raises(TypeError, match=r"lambda.*key_id="):
        KeyPlan(lambda x: x)
    first = KeyPlan(lambda x: x, key_id="first").digest((1,), {})
    assert first != KeyPlan(lambda x: -x, key_id="second").digest((1,), {})


class Multiplier:
    def __init__(self, factor: int) -> None:
        self.factor = factor

    def __call__(self, x: int) -> int:
        return self.factor * x

    def __cache_key__(self) -> int:
        return self.factor


def test_callable_objects_key_on_their_state() -> None:
    assert KeyPlan(Multiplier(2)).digest((5,), {}) != KeyPlan(Multiplier(3)).digest((5,), {})
    assert KeyPlan(Multiplier(2)).digest((5,), {}) == KeyPlan(Multiplier(2)).digest((5,), {})


# -- classes stay in the encoding (issue 10 item 2) -------------------------------------


class Cat(pydantic.BaseModel):
    name: str


class Dog(pydantic.BaseModel):
    name: str


class Owner(pydantic.BaseModel):
    pet: Cat | Dog


@dataclasses.dataclass
class CatRecord:
    name: str


@dataclasses.dataclass
class DogRecord:
    name: str


@dataclasses.dataclass
class OwnerRecord:
    pet: CatRecord | DogRecord


class Loose(pydantic.BaseModel, extra="allow"):
    a: int


class Point2(NamedTuple):
    x: int
    y: int


class Size2(NamedTuple):
    x: int
    y: int


class UserId(str):
    pass


class OrderId(str):
    pass


class Size(enum.Enum):
    SMALL = 1


class Perm(enum.Flag):
    R = 1
    W = 2


def test_nested_models_keep_their_class() -> None:
    assert key(Owner(pet=Cat(name="x"))) != key(Owner(pet=Dog(name="x")))
    assert key(Owner(pet=Cat(name="x"))) == key(Owner(pet=Cat(name="x")))
    assert key(OwnerRecord(CatRecord("x"))) != key(OwnerRecord(DogRecord("x")))
    assert key([Cat(name="x")]) != key([Dog(name="x")])
    assert key({"pet": Cat(name="x")}) != key({"pet": Dog(name="x")})


def test_extra_fields_of_models_enter_the_key() -> None:
    assert key(Loose.model_validate({"a": 1, "b": 2})) != key(
        Loose.model_validate({"a": 1, "b": 3})
    )
    assert key(Loose.model_validate({"a": 1, "b": 2})) != key(Loose(a=1))


def test_unions_of_lookalike_classes_stay_apart() -> None:
    assert key(Point2(1, 2)) != key(Size2(1, 2))
    assert key(Point2(1, 2)) != key((1, 2))
    assert key(UserId("5")) != key(OrderId("5"))
    assert key(UserId("5")) != key("5")
    assert key({"a": 1}) != key(OrderedDict(a=1))
    assert key(Color.RED) != key(Size.SMALL)
    assert key(Perm.R | Perm.W) != key(Perm.R)
    assert key(Perm(0)) != key(Perm.R)


# -- any size, any depth (issue 10 item 11) ---------------------------------------------


def test_integers_of_any_size() -> None:
    huge = 10**5000
    assert key(huge) != key(huge + 1)
    assert key(-huge) != key(huge)
    assert key([huge]) != key([huge - 1])
    assert key({"n": huge}) == key({"n": 10**5000})

    def f(x: int) -> None: ...

    assert derive_key(f, (huge,)) != derive_key(f, (huge + 1,))


def test_huge_integers_do_not_depend_on_the_str_digits_limit() -> None:
    probe = "from toolkit.keys import encode, hash_encoding; print(hash_encoding(encode(7**9000)))"
    outputs = set()
    for limit in ("0", "640", "4300"):
        done = subprocess.run(
            [sys.executable, "-X", f"int_max_str_digits={limit}", "-c", probe],
            env={**os.environ, "PYTHONPATH": str(ROOT)},
            capture_output=True,
            text=True,
            check=True,
        )
        outputs.add(done.stdout)
    assert len(outputs) == 1


def test_huge_floats_decimals_and_strings() -> None:
    assert key(1e308) != key(1.7976931348623157e308)
    assert key(decimal.Decimal("1e999999")) != key(decimal.Decimal("1e999998"))
    long = "x" * 5_000_000
    assert key(long) != key(long + "y")


def test_deep_nesting_is_a_type_error_naming_the_parameter() -> None:
    def f(x: int, deep: Any) -> None: ...

    deep: list[Any] = []
    for _ in range(100_000):
        deep = [deep]
    with pytest.raises(TypeError, match=r"'deep'.*nested too deeply"):
        derive_key(f, (1, deep))
    with pytest.raises(TypeError, match="nested too deeply"):
        encode(deep)


# -- encode_bytes: the C-speed form agrees with the text form (issue 12) ----------------


class Label(str):
    pass


@dataclasses.dataclass(frozen=True)
class Wrapper:
    inner: Any


def _nan(payload: int, negative: bool) -> float:
    bits = 0x7FF8000000000000 | payload | (1 << 63 if negative else 0)
    return float(struct.unpack("<d", struct.pack("<Q", bits))[0])


LEAVES: list[Any] = [
    None, True, False, 0, 1, -1, 1.0, 0.0, -0.0, math.inf, -math.inf, _nan(0, False),
    _nan(1, True), "1", "", "\ud800", Label("1"), b"1", bytearray(b"1"), 2**63, 2**64,
    -(2**63) - 1, 3**3000, Color.RED, Shade.RED, Pair(1, 2), Point(1, 2), Cat(name="x"),
    Dog(name="x"), AIMessage("x", id="1"), HumanMessage("x"), Loose(a=1),
    Loose.model_validate({"a": 1, "b": 2.5}),
    dt.date(2024, 1, 2), uuid.UUID(int=1), decimal.Decimal("1"),
]  # fmt: skip
leaves = st.one_of(st.sampled_from(LEAVES), scalars, st.text(st.characters(codec=None)))
rich = st.recursive(
    leaves,
    lambda inner: st.one_of(
        st.lists(inner, max_size=3),
        st.lists(inner, max_size=3).map(tuple),
        st.dictionaries(st.text(max_size=2), inner, max_size=3),
        st.dictionaries(hashables, inner, max_size=3),
        st.dictionaries(st.text(max_size=2), inner, max_size=3).map(OrderedDict),
        st.frozensets(hashables, max_size=3),
        inner.map(Wrapper),
    ),
    max_leaves=10,
)


def variant(value: Any) -> Any:
    """An equal-canonical copy: other insertion order, other NaN payload, fresh objects."""
    if isinstance(value, float) and math.isnan(value):
        return _nan(0x1234, not math.copysign(1, value) < 0)
    if type(value) is dict:
        return {k: variant(value[k]) for k in reversed(list(value))}
    if type(value) is list:
        return [variant(v) for v in value]
    if type(value) is tuple:
        return tuple(variant(v) for v in value)
    if type(value) is Wrapper:
        return Wrapper(variant(value.inner))
    if type(value) is str:
        return "".join(list(value))
    return value


def agree(a: Any, b: Any) -> None:
    assert (encode_bytes(a) == encode_bytes(b)) == (encode(a) == encode(b))


@settings(max_examples=400, deadline=None)
@given(rich)
def test_encode_bytes_is_canonical(value: Any) -> None:
    copy = variant(value)
    assert encode(copy) == encode(value)
    assert encode_bytes(copy) == encode_bytes(value)


@settings(max_examples=400, deadline=None)
@given(rich, rich)
def test_encode_bytes_and_encode_agree_on_equality(a: Any, b: Any) -> None:
    agree(a, b)


def test_encode_bytes_agrees_on_every_pair_of_lookalike_leaves() -> None:
    for a in LEAVES:
        for b in [*LEAVES, variant(a)]:
            agree(a, b)
            agree([a], [b])
            agree({"k": a}, {"k": b})
            agree((a,), (b,))


def test_encode_bytes_keeps_lookalikes_apart() -> None:
    lookalikes = [1, 1.0, True, "1", b"1", [1], (1,), {1}, frozenset({1}), {"1": 1}, {1: 1}]
    lookalikes += [Label("1"), Shade.RED, OrderedDict({"1": 1}), Pair(1, 1), Wrapper(1)]
    assert len({encode_bytes(v) for v in lookalikes}) == len(lookalikes)
    assert encode_bytes({"a": 1, "b": [1, 2]}) == encode_bytes({"b": [1, 2], "a": 1})
    assert encode_bytes(math.nan) == encode_bytes(-math.nan)
    assert encode_bytes(Owner(pet=Cat(name="x"))) != encode_bytes(Owner(pet=Dog(name="x")))


class _Base:
    def lookup(self, x: int) -> int:
        return x


def test_methods_calling_super_and_recursive_closures_are_keyed() -> None:
    plans: list[KeyPlan] = []

    def plan(func: Any) -> Any:  # runs in the class body, as @cached does
        plans.append(KeyPlan(func, ignore=("self",)))
        return func

    class Child(_Base):
        @plan
        def lookup(self, x: int) -> int:  # captures __class__, empty while the class is built
            return super().lookup(x) + 1

    base = KeyPlan(_Base.lookup, ignore=("self",))
    assert plans[0].digest((Child(), 1), {}) != base.digest((Child(), 1), {})

    def factory() -> Any:
        def fib(n: int) -> int:  # captures itself
            return n if n < 2 else fib(n - 1) + fib(n - 2)

        return fib

    assert KeyPlan(factory()).digest((3,), {})


def _scaled(factor: int) -> Any:
    def decorate(func: Any) -> Any:
        @functools.wraps(func)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            return func(*args, **kwargs) * factor

        return wrapper

    return decorate


def _logged(func: Any) -> Any:
    settings = object()  # the decorator's own state, with no encoding: enters by its type

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        assert settings
        return func(*args, **kwargs)

    return wrapper


def test_a_wrapper_is_keyed_by_what_it_wraps_and_by_itself() -> None:
    def digest(func: Any) -> str:
        return KeyPlan(func).digest(("a",), {})

    # functools.wraps gives both wrappers _summarize's names: they once shared keys.
    assert digest(_scaled(2)(_summarize)) != digest(_scaled(3)(_summarize))
    assert digest(_scaled(2)(_summarize)) == digest(_scaled(2)(_summarize))
    assert digest(_logged(_summarize)) == digest(_logged(_summarize))
    assert digest(_logged(_summarize)) != digest(_summarize)
    assert digest(_logged(_summarize)) != digest(_logged(_translate))
    assert digest(_logged(_scaled(2)(_summarize))) != digest(_scaled(2)(_logged(_summarize)))


def test_functions_made_by_one_decorator_with_other_settings_keep_their_results() -> None:
    cache: InMemoryCache[Any] = InMemoryCache()

    def double(x: int) -> int:
        return x

    twice = cached(cache=cache)(_scaled(2)(double))
    thrice = cached(cache=cache)(_scaled(3)(double))
    assert (twice(5), thrice(5), twice(5), thrice(5)) == (10, 15, 10, 15)


# -- @cached memoizes keys of exact int, str and None arguments (issue 12) -------------


def _memo_subject(a: Any, b: Any = 0) -> None: ...


def _list_default(a: Any, b: list[int] = []) -> None: ...  # noqa: B006 - mutated below


lookalike_args = st.lists(
    st.one_of(
        st.sampled_from(
            [0, 1, -1, True, False, 1.0, 0.0, -0.0, "1", "", None, b"", Label("1"), Shade.RED]
        ),
        st.integers(),
        st.booleans(),
        st.floats(),
        st.text(max_size=3),
    ),
    min_size=1,
    max_size=2,
).map(tuple)


@settings(max_examples=300, deadline=None)
@given(st.lists(lookalike_args, min_size=1, max_size=12))
def test_memoized_keys_are_the_derived_keys(calls: list[tuple[Any, ...]]) -> None:
    keyed = cached("memo", cache=InMemoryCache())(_memo_subject)
    for args in calls + calls:  # the second round reads the memo
        assert keyed.cache_key(*args) == derive_key(_memo_subject, args, ns=("memo",))


def test_the_memo_keeps_one_true_and_one_point_zero_apart() -> None:
    keyed = cached("memo", cache=InMemoryCache())(_memo_subject)
    for order in ([1, True, 1.0], [1.0, True, 1], [True, 1, 1.0]):
        assert len({keyed.cache_key(x) for x in order * 2}) == 3
        assert len({keyed.cache_key(x, "s") for x in order * 2}) == 3
    assert len({keyed.cache_key(x) for x in [0, False, 0.0, None, "", b""] * 2}) == 6
    assert keyed.cache_key("1") != keyed.cache_key(Label("1"))
    assert keyed.cache_key(1, 2) != keyed.cache_key(Shade.RED, 2)


def test_calls_are_memoized_only_where_arguments_decide_the_key() -> None:
    plain = cached("memo", cache=InMemoryCache())(_memo_subject)
    assert plain.cache_key(1) == plain.cache_key(1, 0)
    assert plain._self_state.keys.memo  # type: ignore[attr-defined]
    # A default that can change is read at every call, as before.
    listed = cached("memo.list", cache=InMemoryCache())(_list_default)
    before = listed.cache_key(1)
    _list_default.__defaults__[0].append(1)  # type: ignore[index]
    try:
        assert listed.cache_key(1) != before
    finally:
        _list_default.__defaults__[0].clear()  # type: ignore[index]
    assert listed.cache_key(1) == before
    # A callable object's state enters every key: read at every call too.
    multiplier = Multiplier(2)
    scaled = cached("memo.obj", cache=InMemoryCache())(multiplier)
    before = scaled.cache_key(5)
    multiplier.factor = 3
    assert scaled.cache_key(5) != before
    assert not KeyPlan(multiplier).memoizable and not KeyPlan(_list_default).memoizable


@dataclasses.dataclass(frozen=True)
class Inventory:
    name: str


def test_a_config_or_store_annotated_as_other_data_is_the_callers_data() -> None:
    """LangGraph injects config and store only unannotated or annotated as its own types:
    ``render(template, config: dict)`` served one config's page for another's. (It injects
    runtime whatever its annotation, and writer as a callable: those stay out.)"""

    def render(template: str, config: dict[str, Any]) -> None: ...

    def stock(item: str, store: Inventory | None = None) -> None: ...

    def node(
        state: dict[str, Any],
        config: RunnableConfig,
        runtime: dict[str, Any],
        writer: Callable[[Any], None],
    ) -> None: ...

    page = derive_key(render, ("t", {"lang": "en"}))
    assert page != derive_key(render, ("t", {"lang": "fr"}))
    assert KeyPlan(stock).skipped == frozenset()
    assert derive_key(stock, ("tea", Inventory("north"))) != derive_key(
        stock, ("tea", Inventory("south"))
    )
    assert KeyPlan(node).skipped == {"config", "runtime", "writer"}
