"""Key derivation: canonical, type-tagged, stable across processes and hash seeds."""

from __future__ import annotations

import dataclasses
import datetime as dt
import decimal
import enum
import json
import math
import os
import subprocess
import sys
import uuid
from collections import OrderedDict
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import pydantic
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from langchain_core.messages import AIMessage, HumanMessage
from langchain_core.runnables import RunnableConfig

from toolkit.keys import KeyPlan, derive_key, encode, hash_encoding, namespace_of

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


def test_keys_are_128_bit_hex() -> None:
    digest = key("anything")
    assert len(digest) == 32
    int(digest, 16)


def test_equal_values_in_any_order_share_a_key() -> None:
    assert key({"a": 1, "b": [1, 2]}) == key({"b": [1, 2], "a": 1})
    assert key({3, 1, 2}) == key({2, 3, 1})
    assert key(frozenset("abc")) == key(frozenset("cba"))
    assert key(OrderedDict(a=1)) == key({"a": 1})
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
    assert key(Pair(1, 2)) == key((1, 2))  # tuple subclasses encode as tuples
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


def test_unsupported_value_is_a_type_error_naming_the_parameter() -> None:
    def f(x: Any, opts: Any) -> None: ...

    with pytest.raises(TypeError) as info:
        derive_key(f, (1, {"a": object()}))
    message = str(info.value)
    assert "'opts'" in message
    assert "object" in message
    assert "key=" in message and "ignore=('opts',)" in message and "__cache_key__" in message


def test_cyclic_value_is_a_clear_error() -> None:
    loop: list[Any] = []
    loop.append(loop)
    with pytest.raises(ValueError, match="cyclic"):
        derive_key(lambda x: x, (loop,))


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


StreamWriter = Any  # the annotation name alone marks the parameter (string annotations)


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
