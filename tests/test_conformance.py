"""One conformance suite, run over every backend and middleware stack, sync and async."""

from __future__ import annotations

import dataclasses
import datetime as dt
import decimal
import enum
import math
import uuid
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.harness import MISSING, Ops, Subject
from toolkit import FullKey, Namespace, serde
from toolkit.middleware.base import supports_delete

NS = ("conformance", "ns")


@serde.register
class Color(enum.Enum):
    RED = "red"
    BLUE = 2


@serde.register
@dataclasses.dataclass(frozen=True)
class Point:
    x: int
    y: float
    label: str = "p"


ROUND_TRIP_VALUES: list[Any] = [
    None,
    True,
    False,
    0,
    -1,
    2**63 - 1,
    2**70,
    -(2**70),
    1.5,
    -0.0,
    math.inf,
    "",
    "héllo wörld ✓ 🐍",
    "a\x00b",
    b"",
    b"\x00\xff bytes",
    [],
    [1, "two", 3.0, None],
    {},
    {"messages": [["ai", "hello world"]] * 3, "n": 42},
    {"nested": {"deep": [{"x": (1, 2)}]}},
    (),
    (1, "a", (2, ("b",))),
    {1, 2, 3},
    frozenset({"a", "b"}),
    {1: "int key", "1": "str key"},
    {(1, 2): "tuple key"},
    dt.datetime(2024, 5, 17, 12, 30, 45, 123456),
    dt.datetime(2024, 5, 17, 12, 30, tzinfo=dt.timezone(dt.timedelta(hours=-5))),
    dt.date(1999, 12, 31),
    dt.time(23, 59, 1, 5),
    dt.timedelta(days=3, seconds=7, microseconds=11),
    uuid.UUID("12345678-1234-5678-1234-567812345678"),
    decimal.Decimal("3.14159265358979323846264338327950288"),
    Color.RED,
    Color.BLUE,
    Point(1, 2.5),
    [Point(3, 4.0, "q"), {"p": Point(5, 6.0)}],
]


def key(name: str, ns: tuple[str, ...] = NS) -> tuple[tuple[str, ...], str]:
    return (ns, name)


async def test_empty_inputs_are_noops(ops: Ops) -> None:
    assert await ops.get([]) == {}
    await ops.set({})
    await ops.clear([])
    assert await ops.get([key("a")]) == {}


async def test_arguments_are_accepted_by_their_seed_api_names(ops: Ops) -> None:
    """``get(keys=...)``, ``set(pairs=...)``, ``clear(namespaces=...)``: the seed API names the
    arguments, so a caller may pass them by name through any stack (a stack's layers took
    them only by position: TypeError naming an internal function)."""
    cache: Any = ops.cache
    key = (NS, "by-name")
    if ops.mode == "sync":
        cache.set(pairs={key: (1, None)})
        got = cache.get(keys=[key])
        cache.clear(namespaces=[NS])
        left = cache.get(keys=[key])
    else:
        await cache.aset(pairs={key: (1, None)})
        got = await cache.aget(keys=[key])
        await cache.aclear(namespaces=[NS])
        left = await cache.aget(keys=[key])
    assert (got, left) == ({key: 1}, {})


async def test_miss_returns_no_entry(ops: Ops) -> None:
    assert await ops.get([key("absent")]) == {}


@pytest.mark.parametrize("value", ROUND_TRIP_VALUES, ids=lambda v: type(v).__name__)
async def test_round_trip(ops: Ops, subject: Subject, value: Any) -> None:
    if subject.lossy is not None and subject.lossy(value):
        pytest.skip(
            f"{subject.name}'s own serializer does not round-trip {type(value).__name__} values"
        )
    await ops.set({key("v"): (value, None)})
    got = await ops.get_one(key("v"))
    assert got == value or (got != got and value != value)
    assert type(got) is type(value)
    if isinstance(value, float) and value == 0.0:
        assert math.copysign(1, got) == math.copysign(1, value)


async def test_nan_round_trips(ops: Ops) -> None:
    await ops.set({key("nan"): (math.nan, None)})
    assert math.isnan(await ops.get_one(key("nan")))


async def test_none_is_cacheable(ops: Ops) -> None:
    await ops.set({key("none"): (None, None)})
    assert await ops.get([key("none")]) == {key("none"): None}


async def test_overwrite_replaces_value(ops: Ops) -> None:
    await ops.set({key("k"): ("first", None)})
    await ops.set({key("k"): ("second", None)})
    assert await ops.get_one(key("k")) == "second"


async def test_batch_get_returns_only_hits(ops: Ops) -> None:
    await ops.set({key("a"): (1, None), key("b"): (2, None)})
    got = await ops.get([key("a"), key("missing"), key("b"), key("a")])
    assert got == {key("a"): 1, key("b"): 2}


async def test_returned_values_are_copies(ops: Ops) -> None:
    original = {"list": [1, 2]}
    await ops.set({key("m"): (original, None)})
    original["list"].append(3)
    first = await ops.get_one(key("m"))
    assert first == {"list": [1, 2]}
    first["list"].append(99)
    assert await ops.get_one(key("m")) == {"list": [1, 2]}


async def test_ttl_expires(ops: Ops, subject: Subject) -> None:
    await ops.set({key("short"): ("x", 0.2), key("forever"): ("y", None)})
    assert await ops.get_one(key("short")) == "x"
    subject.advance(0.4)
    assert await ops.get([key("short"), key("forever")]) == {key("forever"): "y"}


async def test_overwrite_resets_ttl(ops: Ops, subject: Subject) -> None:
    await ops.set({key("t"): ("old", 0.2)})
    await ops.set({key("t"): ("new", None)})
    subject.advance(0.4)
    assert await ops.get_one(key("t")) == "new"


async def test_int_ttl_accepted(ops: Ops) -> None:
    await ops.set({key("int-ttl"): ("v", 60)})
    assert await ops.get_one(key("int-ttl")) == "v"


async def test_clear_namespaces_is_exact(ops: Ops, subject: Subject) -> None:
    if not subject.exact_namespaces:
        pytest.skip(f"{subject.name} joins namespace parts (a known limitation of that cache)")
    parent, child, sibling = ("a",), ("a", "b"), ("ab",)
    await ops.set(
        {
            (parent, "k"): (1, None),
            (child, "k"): (2, None),
            (sibling, "k"): (3, None),
            ((), "k"): (4, None),
        }
    )
    await ops.clear([parent])
    got = await ops.get([(parent, "k"), (child, "k"), (sibling, "k"), ((), "k")])
    assert got == {(child, "k"): 2, (sibling, "k"): 3, ((), "k"): 4}
    await ops.clear([child, ("never", "used")])
    assert await ops.get([(child, "k"), (sibling, "k")]) == {(sibling, "k"): 3}


async def test_clear_empty_namespace_only_clears_it(ops: Ops, subject: Subject) -> None:
    if not subject.exact_namespaces:
        pytest.skip(f"{subject.name} joins namespace parts (a known limitation of that cache)")
    await ops.set({((), "k"): (1, None), (("",), "k"): (2, None), (("x",), "k"): (3, None)})
    await ops.clear([()])
    assert await ops.get([((), "k"), (("",), "k"), (("x",), "k")]) == {
        (("",), "k"): 2,
        (("x",), "k"): 3,
    }


async def test_clear_all(ops: Ops) -> None:
    await ops.set({key("a"): (1, None), (("other",), "b"): (2, None)})
    await ops.clear()
    assert await ops.get([key("a"), (("other",), "b")]) == {}
    await ops.set({key("a"): (5, None)})
    assert await ops.get_one(key("a")) == 5


async def test_delete_removes_exactly_those_keys(ops: Ops, subject: Subject) -> None:
    cache = subject.cache
    if not supports_delete(cache):
        pytest.skip(f"{subject.name} has no single-key delete (not in the seed API)")
    other_ns = ((*NS, "child"), "a")
    await ops.set({key("a"): (1, None), key("b"): (2, None), other_ns: (3, None)})
    if ops.mode == "sync":
        cache.delete([key("a"), key("never-set")])
    else:
        await cache.adelete([key("a"), key("never-set")])
    assert await ops.get([key("a"), key("b"), other_ns]) == {key("b"): 2, other_ns: 3}
    with pytest.raises(TypeError):
        cache.delete([("not", "a key")])  # type: ignore[list-item]


TRICKY_PARTS = [
    "",
    ",",
    ":",
    "*",
    "?",
    "[",
    "]",
    "|",
    "\\",
    "'",
    '"',
    "a,b",
    "a:b",
    "%",
    "_",
    "\x00",
    "ü",
    "🐍",
]


async def test_tricky_namespaces_are_distinct(ops: Ops, subject: Subject) -> None:
    if not subject.exact_namespaces:
        pytest.skip(f"{subject.name} joins namespace parts (a known limitation of that cache)")
    namespaces: list[tuple[str, ...]] = [
        (),
        ("",),
        ("", ""),
        ("a", "b"),
        ("a,b",),
        ("a:b",),
        ("a", "b", ""),
    ]
    namespaces += [(part,) for part in TRICKY_PARTS] + [("x", part) for part in TRICKY_PARTS]
    namespaces = list(dict.fromkeys(namespaces))
    pairs = {
        (ns, k): (f"{i}:{k}", None)
        for i, ns in enumerate(namespaces)
        for k in ["", "k", "a,b", "*"]
    }
    await ops.set(pairs)
    assert await ops.get(list(pairs)) == {fk: v for fk, (v, _) in pairs.items()}
    await ops.clear([("a", "b"), ("*",)])
    remaining = {fk: v for fk, (v, _) in pairs.items() if fk[0] not in {("a", "b"), ("*",)}}
    assert await ops.get(list(pairs)) == remaining


BAD_TTLS: list[Any] = [-1, -0.5, math.nan, math.inf, 10**400, 1e12]
BAD_TTL_TYPES: list[Any] = [True, "5", [5], dt.timedelta(seconds=5)]


@pytest.mark.parametrize("ttl", BAD_TTLS, ids=repr)
async def test_bad_ttl_value_rejected_and_batch_not_written(
    ops: Ops, subject: Subject, ttl: Any
) -> None:
    if not subject.validates_input:
        pytest.skip("foreign cache does not validate input")
    with pytest.raises(ValueError, match="ttl"):
        await ops.set({key("good"): (1, None), key("bad"): (2, ttl)})
    assert await ops.get([key("good"), key("bad")]) == {}


async def test_zero_ttl_expires_at_once(ops: Ops, subject: Subject) -> None:
    """LangGraph's ``CachePolicy(ttl=0)`` passes 0: the write replaces and expires at once."""
    await ops.set({key("a"): (1, None), key("b"): (2, None)})
    await ops.set({key("a"): (3, 0), key("c"): (4, 0)})
    assert await ops.get([key("a"), key("b"), key("c")]) == {key("b"): 2}


async def test_any_iterable_of_keys_is_read_once(ops: Ops, subject: Subject) -> None:
    await ops.set({key("a"): (1, None), key("b"): (2, None)})
    wanted = [key("a"), key("b"), key("missing")]
    assert await ops.get(k for k in wanted) == {key("a"): 1, key("b"): 2}  # type: ignore[arg-type]
    assert await ops.get(iter(wanted)) == {key("a"): 1, key("b"): 2}  # type: ignore[arg-type]
    if subject.validates_input:
        with pytest.raises(TypeError):
            await ops.get("ab")  # type: ignore[arg-type]


async def test_any_iterable_of_namespaces_is_read_once(ops: Ops, subject: Subject) -> None:
    """``clear`` of a generator clears (checking it used to exhaust it: nothing was cleared)."""
    other = ("conformance", "other")
    await ops.set({key("a"): (1, None), key("b", other): (2, None), key("c"): (3, None)})
    await ops.clear(ns for ns in [NS])  # type: ignore[arg-type]
    assert await ops.get([key("a"), key("b", other), key("c")]) == {key("b", other): 2}
    await ops.clear(iter([other]))  # type: ignore[arg-type]
    assert await ops.get([key("b", other)]) == {}
    if subject.validates_input:
        for wrong in ("conformance", b"conformance"):
            with pytest.raises(TypeError):
                await ops.clear(wrong)  # type: ignore[arg-type]


@pytest.mark.parametrize("ttl", BAD_TTL_TYPES, ids=lambda t: type(t).__name__)
async def test_bad_ttl_type_rejected(ops: Ops, subject: Subject, ttl: Any) -> None:
    if not subject.validates_input:
        pytest.skip("foreign cache does not validate input")
    with pytest.raises(TypeError, match="ttl"):
        await ops.set({key("good"): (1, None), key("bad"): (2, ttl)})
    assert await ops.get([key("good")]) == {}


BAD_KEYS: list[Any] = [
    "just-a-string",
    ("ns", "k"),
    (["ns"], "k"),
    (("ns", 1), "k"),
    (("ns",), 1),
    (("ns",), b"k"),
    (("ns",), "k", "extra"),
    None,
]


@pytest.mark.parametrize("bad", BAD_KEYS, ids=repr)
async def test_bad_keys_rejected(ops: Ops, subject: Subject, bad: Any) -> None:
    if not subject.validates_input:
        pytest.skip("foreign cache does not validate input")
    with pytest.raises(TypeError):
        await ops.get([key("fine"), bad])
    with pytest.raises(TypeError):
        await ops.set({key("fine"): (1, None), bad: (2, None)})
    assert await ops.get([key("fine")]) == {}


async def test_surrogates_rejected_with_value_error(ops: Ops, subject: Subject) -> None:
    if not subject.validates_input:
        pytest.skip("foreign cache does not validate input")
    with pytest.raises(ValueError, match="surrogate"):
        await ops.set({key("\ud800"): (1, None)})
    with pytest.raises(ValueError, match="surrogate"):
        await ops.set({(("\udfff",), "k"): (1, None)})


@pytest.mark.parametrize("bad", ["ns", [["ns"]], [("ns", 3)], 5], ids=repr)
async def test_bad_namespaces_for_clear_rejected(ops: Ops, subject: Subject, bad: Any) -> None:
    if not subject.validates_input:
        pytest.skip("foreign cache does not validate input")
    await ops.set({key("kept"): (1, None)})
    with pytest.raises(TypeError):
        await ops.clear(bad)
    assert await ops.get_one(key("kept")) == 1


async def test_an_uncacheable_value_is_left_out_and_the_batch_stored(
    ops: Ops, subject: Subject
) -> None:
    class Opaque:
        pass

    pairs = {key("good"): (1, None), key("opaque"): (Opaque(), None)}
    if not subject.validates_input:  # a foreign cache's own serializer decides
        with pytest.raises(TypeError, match="Opaque"):
            await ops.set(pairs)
        return
    await ops.set(pairs)  # behind observe, even a foreign cache's refusal never escapes
    got = await ops.get([key("good"), key("opaque")])
    if subject.atomic_batches:  # ours leave out the one value; a foreign cache may drop all
        assert got == {key("good"): 1}
    assert key("opaque") not in got


async def test_a_refused_value_leaves_no_older_value_readable(ops: Ops, subject: Subject) -> None:
    """A set replaces: a value the serializer refuses must not leave the key's old value
    to be served as if the set had never happened (a refresh would be silently undone)."""

    class Opaque:
        pass

    if not subject.validates_input or not subject.atomic_batches:
        pytest.skip("a foreign cache offers no per-key delete to drop the old value with")
    await ops.set({key("old"): ("before", None), key("kept"): ("other", None)})
    await ops.set({key("old"): (Opaque(), None), key("fresh"): (2, None)})
    got = await ops.get([key("old"), key("kept"), key("fresh")])
    assert got == {key("kept"): "other", key("fresh"): 2}
    await ops.set({key("old"): ("after", None)})  # the key is usable again at once
    assert await ops.get_one(key("old")) == "after"


async def test_large_batch(ops: Ops, subject: Subject) -> None:
    n = min(100_000, subject.max_batch or 100_000)
    pairs: dict[FullKey, tuple[Any, float | None]] = {(NS, f"k{i}"): (i, None) for i in range(n)}
    await ops.set(pairs)
    got = await ops.get(list(pairs))
    assert len(got) == n
    assert got[(NS, f"k{n // 2}")] == n // 2
    await ops.clear([NS])
    assert await ops.get([(NS, "k0"), (NS, f"k{n - 1}")]) == {}


HOSTILE_PAYLOADS: list[tuple[str, bytes]] = [
    (
        "pickle",
        b"\x80\x04\x95\x1d\x00\x00\x00\x00\x00\x00\x00\x8c\x02os\x94\x8c\x06system\x94\x93\x94\x8c\x04true\x94\x85\x94R\x94.",
    ),
    ("msgpack", b"\xc7\x15\x01\x92\xa2os\xa6system\x91\xa4true\x00\x00\x00\x00"),
    ("msgpack", b"\xd9\xff"),
    ("json", b'{"lc": 1, "type": "constructor", "id": ["os", "system"], "kwargs": {}}'),
    ("nonsense-tag", b"\x00\x01"),
]


@pytest.mark.parametrize(
    "tag,payload", HOSTILE_PAYLOADS, ids=[f"{t}-{i}" for i, (t, _) in enumerate(HOSTILE_PAYLOADS)]
)
async def test_hostile_payload_is_a_miss_and_deleted(
    ops: Ops, subject: Subject, tag: str, payload: bytes
) -> None:
    if subject.inject is None:
        pytest.skip(f"{subject.name} cannot take raw payloads")
    subject.inject(key("evil"), tag, payload)
    await ops.set({key("fine"): ("ok", None)})
    assert await ops.get([key("evil"), key("fine")]) == {key("fine"): "ok"}
    # Deleted, not only skipped: a fresh value can be stored and read back.
    await ops.set({key("evil"): ("clean", None)})
    assert await ops.get_one(key("evil")) == "clean"


@pytest.mark.parametrize("position", ["first", "middle", "last"])
async def test_corrupted_entry_is_a_miss_and_deleted(
    ops: Ops, subject: Subject, position: str
) -> None:
    if subject.corrupt is None:
        pytest.skip(f"{subject.name} has no storage outside the process to corrupt")
    evicted: list[tuple[Namespace, str, int]] = []
    listen = getattr(subject.raw, "add_eviction_listener", None)
    if listen is not None:
        listen(lambda ns, cause, n: evicted.append((ns, cause, n)))
    value = {"messages": [["ai", "hello world"]] * 3, "n": 42}
    await ops.set({key("dented"): (value, None), key("fine"): ("ok", None)})
    subject.corrupt(key("dented"), position)
    assert await ops.get([key("dented"), key("fine")]) == {key("fine"): "ok"}
    assert (NS, "invalid", 1) in evicted
    await ops.set({key("dented"): ("again", None)})
    assert await ops.get_one(key("dented")) == "again"


key_part = st.text(alphabet=st.characters(codec="utf-8"), max_size=6)
full_keys = st.tuples(st.lists(key_part, max_size=3).map(tuple), key_part)


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(st.lists(full_keys, min_size=1, max_size=12, unique=True))
def test_distinct_keys_never_collide(
    subject: Subject, keys: list[tuple[tuple[str, ...], str]]
) -> None:
    if not subject.exact_namespaces:
        pytest.skip(f"{subject.name} joins namespace parts (a known limitation of that cache)")
    cache = subject.cache
    cache.clear()
    cache.set({fk: (i, None) for i, fk in enumerate(keys)})
    assert cache.get(keys) == {fk: i for i, fk in enumerate(keys)}
    doomed = keys[0][0]
    cache.clear([doomed])
    assert cache.get(keys) == {fk: i for i, fk in enumerate(keys) if fk[0] != doomed}


def test_missing_sentinel_is_not_none() -> None:
    assert MISSING is not None
