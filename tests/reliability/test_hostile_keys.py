"""Keys and namespaces built from hostile characters: no collisions, only documented errors,
and ``clear`` removes exactly what it names, in every backend, bare and inside ``observe``."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.harness import BACKENDS
from tests.reliability.conftest import Tally
from tests.reliability.stacks import observed
from toolkit import FullKey

BACKEND_NAMES = [
    pytest.param(name, marks=[pytest.mark.redis] if name.startswith("redis") else [])
    for name in BACKENDS
    if "cluster" not in name  # the cluster runs the same code per node; it costs 3 servers
]
HOSTILE_CHARS = [*":,./\\|*?[]{}^!-\x00\n\r\t\"'%#;=@$ ~`", "é", "🐍", "\u2028", "\ufeff"]

hostile_part = st.one_of(
    st.text(alphabet=st.sampled_from(HOSTILE_CHARS), max_size=8),
    st.text(alphabet=st.characters(), max_size=5),  # any code point, lone surrogates included
    st.sampled_from(["", "*", ":", "\x00", "a:b", "a\x00b", "*:*", "[a-z]", "\\*", "a" * 10_000]),
)
hostile_keys = st.tuples(st.lists(hostile_part, max_size=4).map(tuple), hostile_part)


def _has_surrogate(full_key: FullKey) -> bool:
    return any(
        any(0xD800 <= ord(ch) <= 0xDFFF for ch in part) for part in (*full_key[0], full_key[1])
    )


def _expect(row: Tally, kind: type[Exception], fn: Callable[..., object], *args: Any) -> None:
    """One operation that must raise ``kind``: anything else is an error, success is wrong."""
    row.operations += 1
    try:
        fn(*args)
    except kind:
        return
    except Exception as exc:
        row.error(exc)
        return
    row.wrong += 1


def _exercise(cache: Any, keys: list[FullKey], row: Tally) -> None:
    """Write distinct values under ``keys``, read them back, clear one namespace and a parent."""
    bad = [fk for fk in keys if _has_surrogate(fk)]
    good = [fk for fk in keys if not _has_surrogate(fk)]
    for full_key in bad:  # documented: lone surrogates are a ValueError, nothing is written
        _expect(row, ValueError, cache.set, {full_key: (0, None)})
        _expect(row, ValueError, cache.get, [full_key])
    if not good:
        return
    row.call(cache.clear)
    expected = {fk: [i, list(fk[0]), fk[1][:50]] for i, fk in enumerate(good)}
    row.call(cache.set, {fk: (value, None) for fk, value in expected.items()})
    got = row.call(cache.get, good)
    row.check(got == expected)
    doomed = good[0][0]
    namespaces = {fk[0] for fk in good}
    # A parent, a glob-looking sibling and an unused namespace must clear nothing of ours.
    for other in (doomed[:-1], (*doomed[:-1], "*"), ("*",), (*doomed, "")):
        if other not in namespaces:
            row.call(cache.clear, [other])
    row.check(row.call(cache.get, good) == expected)
    row.call(cache.clear, [doomed])
    kept = {fk: value for fk, value in expected.items() if fk[0] != doomed}
    row.check(row.call(cache.get, good) == kept)


@pytest.mark.slow
@pytest.mark.parametrize("stack", ["bare", "observe"])
@pytest.mark.parametrize("backend_name", BACKEND_NAMES)
def test_hostile_keys_never_collide(
    backend_name: str,
    stack: str,
    request: pytest.FixtureRequest,
    tmp_path: Path,
    tally: Callable[..., Tally],
) -> None:
    row = tally(
        f"{backend_name}: hypothesis keys of separators, globs, NUL, surrogates, 10k chars", stack
    )
    with BACKENDS[backend_name](request, tmp_path) as subject:
        if stack == "bare" and backend_name.startswith("langgraph"):
            pytest.skip("LangGraph's own caches are tested here only inside observe")
        if not subject.exact_namespaces:
            pytest.skip(f"{backend_name} joins namespace parts (a known limitation of that cache)")
        # Payloads/keys are under test, not the deadline: a slow read on a busy machine
        # must not be served as a miss (deadlines have their own tests).
        cache = subject.cache if stack == "bare" else observed(subject.cache, deadline=30.0)[0]

        @settings(
            max_examples=40,
            deadline=None,
            database=None,
            suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
        )
        @given(st.lists(hostile_keys, min_size=1, max_size=10, unique=True))
        def check(keys: list[FullKey]) -> None:
            _exercise(cache, keys, row)
            assert row.errors == 0, row.error_types
            assert row.wrong == 0

        check()
    assert row.operations > 0


def test_namespace_types_are_checked_before_io(tally: Callable[..., Tally]) -> None:
    """Non-str parts and non-tuple namespaces are a TypeError, never a storage error."""
    from toolkit import InMemoryCache

    row = tally("memory: non-str key parts, lists as namespaces, bytes keys", "bare")
    cache: InMemoryCache[Any] = InMemoryCache()
    bad: list[Any] = [
        ((1,), "k"),
        (["a"], "k"),
        (("a",), b"k"),
        (("a",), None),
        ("a", "k"),
        (("a", ("b",)), "k"),
    ]
    for full_key in bad:
        try:
            pairs = {full_key: (0, None)}
        except TypeError:
            pass  # unhashable: no mapping can even carry it to set()
        else:
            _expect(row, TypeError, cache.set, pairs)
        _expect(row, TypeError, cache.get, [full_key])
    bad_ns: list[Any] = [["a"], "a", (1,), None]
    for ns in bad_ns:
        _expect(row, TypeError, cache.clear, [ns])
    assert row.errors == 0, row.error_types
    assert row.wrong == 0
