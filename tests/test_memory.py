"""InMemoryCache's stored forms: immutable scalars kept as themselves, everything else copied."""

from __future__ import annotations

import os
import threading
import time
from typing import Any

import pytest

from tests.harness import FakeClock, in_forked_child
from toolkit import InMemoryCache
from toolkit.lease import LeaseRequest

NS = ("app",)


@pytest.mark.parametrize(
    "value", [0, -(2**80), True, False, 1.5, float("inf"), None, b"\x00raw", "", "ascii text"]
)
def test_immutable_scalars_come_back_as_themselves(value: Any) -> None:
    cache: InMemoryCache[Any] = InMemoryCache()
    cache.set({(NS, "k"): (value, None)})
    got = cache.get([(NS, "k")])
    assert got == {(NS, "k"): value}
    assert type(got[(NS, "k")]) is type(value)
    assert got[(NS, "k")] is value  # nothing to copy: it cannot be mutated


def test_mutable_values_and_subclasses_are_copies() -> None:
    cache: InMemoryCache[Any] = InMemoryCache()
    value = {"messages": ["hi"]}
    cache.set({(NS, "d"): (value, None), (NS, "l"): ([1, 2], None)})
    value["messages"].append("changed after set")
    got = cache.get([(NS, "d"), (NS, "l")])
    assert got == {(NS, "d"): {"messages": ["hi"]}, (NS, "l"): [1, 2]}
    got[(NS, "l")].append(3)
    assert cache.get([(NS, "l")]) == {(NS, "l"): [1, 2]}


def test_text_beyond_ascii_goes_through_the_serializer() -> None:
    cache: InMemoryCache[Any] = InMemoryCache()
    refused: list[tuple[Any, str, int]] = []
    cache.add_eviction_listener(lambda ns, cause, count: refused.append((ns, cause, count)))
    cache.set({(NS, "ok"): ("naïve ☃", None), (NS, "bad"): ("lone \ud800", None)})
    assert cache.get([(NS, "ok"), (NS, "bad")]) == {(NS, "ok"): "naïve ☃"}
    assert refused == [(NS, "uncacheable", 1)]  # as every other backend refuses it


def test_scalars_expire_and_count_like_any_entry() -> None:
    clock = FakeClock()
    cache: InMemoryCache[Any] = InMemoryCache(timer=clock)
    cache.set({(NS, "n"): (42, 10), (NS, "s"): ("x" * 100, None)})
    assert cache.get([(NS, "n")]) == {(NS, "n"): 42}
    assert cache.stats().bytes >= 100
    clock.advance(11)
    assert cache.get([(NS, "n"), (NS, "s")]) == {(NS, "s"): "x" * 100}


def test_tuples_of_scalars_are_kept_and_any_other_tuple_copied() -> None:
    cache: InMemoryCache[Any] = InMemoryCache()
    flat = ("answer", 1.5, None, 7)
    holding_a_list = ("answer", [1, 2])
    nested = (("a", 1), "b")
    cache.set(
        {(NS, "f"): (flat, None), (NS, "l"): (holding_a_list, None), (NS, "n"): (nested, None)}
    )
    got = cache.get([(NS, "f"), (NS, "l"), (NS, "n")])
    assert got == {(NS, "f"): flat, (NS, "l"): holding_a_list, (NS, "n"): nested}
    assert got[(NS, "f")] is flat
    assert got[(NS, "l")] is not holding_a_list and got[(NS, "n")] is not nested
    holding_a_list[1].append(3)
    assert cache.get([(NS, "l")]) == {(NS, "l"): ("answer", [1, 2])}


def test_a_bound_evicts_the_least_recently_used_entry() -> None:
    cache: InMemoryCache[Any] = InMemoryCache(max_entries=3)
    evicted: list[tuple[Any, str, int]] = []
    cache.add_eviction_listener(lambda ns, cause, count: evicted.append((ns, cause, count)))
    cache.set({(NS, k): ([k], None) for k in "abc"})
    cache.get([(NS, "a")])  # a read makes "a" the most recent
    cache.set({(NS, "b"): (["b2"], None)})  # so does a rewrite of "b"
    cache.set({(NS, "d"): (["d"], None)})
    assert cache.get([(NS, k) for k in "abcd"]) == {
        (NS, "a"): ["a"],
        (NS, "b"): ["b2"],
        (NS, "d"): ["d"],
    }
    assert evicted == [(NS, "size", 1)]


def test_an_unbounded_cache_never_evicts_and_its_bound_is_fixed() -> None:
    cache: InMemoryCache[Any] = InMemoryCache(max_entries=None)
    cache.set({(NS, str(i)): ([i], None) for i in range(20_000)})
    assert cache.entry_count() == 20_000
    assert cache.get([(NS, "0")]) == {(NS, "0"): [0]}
    with pytest.raises(AttributeError):
        cache.max_entries = 10  # type: ignore[misc]


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork()")
@pytest.mark.parametrize("held_in", ["set", "lease"])
def test_a_fork_while_another_thread_is_inside_the_cache(held_in: str) -> None:
    # The cache reads its clock under its locks: a thread stopped there holds one, and a
    # forked child, where that thread does not exist, must not wait for it for ever.
    inside, leave = threading.Event(), threading.Event()
    holder: list[int] = []

    def clock() -> float:
        if threading.get_ident() in holder:
            inside.set()
            leave.wait()
        return time.monotonic()

    cache: InMemoryCache[Any] = InMemoryCache(timer=clock)
    key = (("fork",), "k")
    request = LeaseRequest("acquire", key, "parent-token", 60.0)

    assert cache.lease(LeaseRequest("acquire", key, "earlier-token", 60.0))

    def enter() -> None:
        holder.append(threading.get_ident())
        cache.set({key: (1, 60)}) if held_in == "set" else cache.lease(request)

    def in_child() -> tuple[object, bool]:
        cache.set({key: (2, 60)})
        # The parent's threads hold no lease in the child: nobody would give it back.
        return cache.get([key]), cache.lease(LeaseRequest("acquire", key, "child-token", 60.0))

    thread = threading.Thread(target=enter)
    thread.start()
    inside.wait()
    try:
        assert in_forked_child(in_child) == ({key: 2}, True)
    finally:
        leave.set()
        thread.join()


class _ThreeByteSerde:
    """Stores ``{"n": n}`` (tag ``dict``) and ``[n]`` (tag ``list``), n < 1000, in three bytes."""

    def dumps_typed(self, obj: Any) -> tuple[str, bytes]:
        if type(obj) is dict:
            return "dict", b"%03d" % obj["n"]
        return "list", b"%03d" % obj[0]

    def loads_typed(self, data: tuple[str, bytes]) -> Any:
        tag, payload = data
        if tag == "dict":
            return {"n": int(payload)}
        if tag == "list":
            return [int(payload)]
        raise ValueError(f"not mine: {tag}")


def test_entries_of_every_tag_and_payload_length_keep_their_tag_and_expiry() -> None:
    # Most entries are stored as their payload alone (the first tag stored is implied): a
    # payload of three bytes must not pass for an expiring entry, nor another tag's for it.
    clock = FakeClock()
    cache: InMemoryCache[Any] = InMemoryCache(serde=_ThreeByteSerde(), timer=clock)
    cache.set({(NS, "dict"): ({"n": 1}, None), (NS, "list"): ([1], None)})
    cache.set({(NS, "dict-ttl"): ({"n": 2}, 5), (NS, "list-ttl"): ([2], 5)})
    expected = {
        (NS, "dict"): {"n": 1},
        (NS, "list"): [1],
        (NS, "dict-ttl"): {"n": 2},
        (NS, "list-ttl"): [2],
    }
    assert cache.get(list(expected)) == expected
    assert {info.key: info.expires_in for info in cache.iter_keys(NS)} == {
        "dict": None,
        "list": None,
        "dict-ttl": 5.0,
        "list-ttl": 5.0,
    }
    assert cache.stats().entries == 4
    clock.advance(6)
    assert cache.purge_expired() == 2
    assert cache.get(list(expected)) == {(NS, "dict"): {"n": 1}, (NS, "list"): [1]}


class _RawSerde:
    """Hands back the stored bytes as the value: would misread another serializer's payload."""

    def dumps_typed(self, obj: Any) -> tuple[str, bytes]:
        return "raw", bytes(obj)

    def loads_typed(self, data: tuple[str, bytes]) -> Any:
        tag, payload = data
        if tag != "raw":
            raise ValueError(f"not mine: {tag}")
        return payload


def test_a_replaced_serializer_never_reads_the_old_ones_payloads() -> None:
    cache: InMemoryCache[Any] = InMemoryCache()
    cache.set({(NS, "old"): ({"a": 1}, None)})
    cache.serde = _RawSerde()
    cache.set({(NS, "new"): (bytearray(b"new"), None)})
    # The old entry still carries its own tag, so the new serializer refuses it: a miss.
    assert cache.get([(NS, "old"), (NS, "new")]) == {(NS, "new"): b"new"}


def test_a_payload_that_is_not_bytes_keeps_its_tag() -> None:
    class TextSerde:
        def dumps_typed(self, obj: Any) -> tuple[str, Any]:
            return "text", repr(obj)

        def loads_typed(self, data: tuple[str, Any]) -> Any:
            assert data[0] == "text"
            return ("decoded", data[1])

    cache: InMemoryCache[Any] = InMemoryCache(serde=TextSerde())
    cache.set({(NS, "k"): ([1], None)})
    assert cache.get([(NS, "k")]) == {(NS, "k"): ("decoded", "[1]")}


BAD_ROWS: list[tuple[Any, Any]] = [
    ((NS, "k"), ["value", None]),  # the entry a list, not a (value, ttl) tuple
    ((NS, "k"), ("value", None, "extra")),
    ((NS, "k"), ("value", -1)),
    (((NS[0], 1), "k"), ("value", None)),
    ((NS, "\ud800"), ("value", None)),
]


@pytest.mark.parametrize("max_entries", [None, 10_000], ids=["unbounded", "bounded"])
@pytest.mark.parametrize("bad", BAD_ROWS, ids=repr)
def test_a_bad_row_anywhere_in_a_batch_writes_nothing(
    max_entries: int | None, bad: tuple[Any, Any]
) -> None:
    """Rows are staged as they are checked: the last one failing must leave every earlier
    one (new keys and rewrites alike) unwritten."""
    cache: InMemoryCache[Any] = InMemoryCache(max_entries=max_entries)
    cache.set({(NS, "old"): ("before", None)})
    batch: dict[Any, Any] = {(NS, f"k{i}"): ({"i": i}, None) for i in range(1_000)}
    batch[(NS, "old")] = ("after", 60)
    batch[bad[0]] = bad[1]
    with pytest.raises((TypeError, ValueError)):
        cache.set(batch)
    assert cache.entry_count() == 1
    assert cache.get([(NS, "old"), (NS, "k0"), (NS, "k999")]) == {(NS, "old"): "before"}


def test_a_rewritten_key_in_a_batch_moves_last_and_a_refused_one_is_dropped() -> None:
    cache: InMemoryCache[Any] = InMemoryCache(max_entries=3)

    class Opaque:
        pass

    cache.set({(NS, k): ([k], None) for k in "abc"})
    cache.set({(NS, "a"): (["a2"], None), (NS, "b"): (Opaque(), None)})
    cache.set({(NS, "d"): (["d"], None), (NS, "e"): (["e"], None)})  # evicts "c", the oldest
    assert cache.get([(NS, k) for k in "abcde"]) == {
        (NS, "a"): ["a2"],
        (NS, "d"): ["d"],
        (NS, "e"): ["e"],
    }
