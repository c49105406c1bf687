"""Hostile bytes written straight into each backend's storage, then read through ``observe``.

Every payload must import and call nothing (a spy watches); payloads that cannot be our
encoding must read as a miss, be deleted, and be counted as ``invalid`` evictions.
"""

from __future__ import annotations

import contextlib
import itertools
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from tests.harness import BACKENDS, Subject
from tests.reliability import payloads
from tests.reliability.conftest import FAILED, Tally
from tests.reliability.payloads import Payload
from tests.reliability.spies import spying
from tests.reliability.stacks import evictions_counted, observed
from toolkit import FullKey, SafeSerializer

NS = ("reliability", "hostile")
FINE: FullKey = (NS, "fine")
CHUNK = 64
BACKEND_NAMES = [
    pytest.param(name, marks=[pytest.mark.redis] if name.startswith("redis") else [])
    for name in BACKENDS
    if "cluster" not in name  # the cluster runs the same code per node; it costs 3 servers
]

TAG, GOOD = SafeSerializer().dumps_typed(payloads.SAMPLE)


@contextmanager
def _subject(name: str, request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Subject]:
    with BACKENDS[name](request, tmp_path) as made:
        if made.inject is None:
            pytest.skip(f"{name} cannot take raw payloads")
        yield made


def _inert(value: Any) -> bool:
    """Plain data only: what a payload decodes to must hold nothing callable or foreign."""
    if value is None or type(value) in (bool, int, float, str, bytes):
        return True
    if type(value) in (list, tuple, set, frozenset):
        return all(_inert(item) for item in value)
    if type(value) is dict:
        return all(_inert(k) and _inert(v) for k, v in value.items())
    return False


def _read_all(
    subject: Subject,
    stack: Any,
    registry: Any,
    stored: list[Payload],
    row: Tally,
    *,
    must_miss: bool,
) -> None:
    """Inject ``stored`` in chunks and read each chunk together with a good key.

    Sync reads only: the harness builds some subjects from async fixtures, which cannot be
    requested from inside a running loop; the conformance suite covers the async decode path.
    """
    stack.set({FINE: ("ok", None)})
    assert subject.inject is not None
    for start in range(0, len(stored), CHUNK):
        chunk = stored[start : start + CHUNK]
        keys: list[FullKey] = [(NS, f"p{start + i}") for i in range(len(chunk))]
        for full_key, (tag, payload) in zip(keys, chunk, strict=True):
            subject.inject(full_key, tag, payload)
        before = evictions_counted(registry, cause="invalid")
        got = row.call(stack.get, [*keys, FINE])
        if got is FAILED:
            continue
        row.timed(0.0, count=len(chunk) - 1)  # one row op per payload read
        row.check(got.get(FINE) == "ok")
        row.check(all(_inert(value) for value in got.values()))
        if not must_miss:
            continue
        for full_key in keys:
            row.check(full_key not in got)
        counted = evictions_counted(registry, cause="invalid") - before
        row.check(counted == len(chunk))
        # Deleted, not only skipped: reading again finds nothing to count.
        again = row.call(stack.get, keys)
        row.check(again == {})
        row.check(evictions_counted(registry, cause="invalid") - before == len(chunk))


Hostile = Callable[[str, list[Payload], bool], None]


@pytest.fixture
def hostile(
    backend_name: str,
    request: pytest.FixtureRequest,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    tally: Callable[..., Tally],
) -> Hostile:
    """``hostile(what, stored, must_miss)``: read ``stored`` payloads from the backend through
    ``observe`` under the spy; nothing may run, reach the caller or read wrong."""

    def run(what: str, stored: list[Payload], must_miss: bool) -> None:
        row = tally(f"{backend_name}: {what}")
        with _subject(backend_name, request, tmp_path) as subject:
            # Payloads/keys are under test, not the deadline: a slow read on a busy machine
            # must not be served as a miss (deadlines have their own tests).
            stack, registry = observed(subject.cache, deadline=30.0)
            with spying(monkeypatch, tmp_path) as spy:
                _read_all(subject, stack, registry, stored, row, must_miss=must_miss)
        assert spy.reached == [], f"stored bytes reached code: {spy.reached[:5]}"
        assert row.errors == 0, row.error_types
        assert row.wrong == 0

    return run


@pytest.mark.slow
@pytest.mark.parametrize("backend_name", BACKEND_NAMES)
def test_payloads_naming_code_import_and_call_nothing(hostile: Hostile) -> None:
    stored = [
        *[p for p in payloads.pickles(TAG) if p[0] != TAG],
        *payloads.msgpack_extensions(TAG),
        *[p for p in payloads.constructor_json(TAG) if p[0] != TAG],
        payloads.constructor_msgpack(TAG),
    ]
    hostile("stored pickle / msgpack ext x128 / LC constructor naming code", stored, False)


@pytest.mark.parametrize("backend_name", BACKEND_NAMES)
def test_undecodable_payloads_are_deleted_and_counted(hostile: Hostile) -> None:
    stored = [
        *[p for p in payloads.pickles(TAG) if p[0] != TAG],
        *[p for p in payloads.constructor_json(TAG) if p[0] != TAG],
        *payloads.unknown_tags(GOOD),
        *payloads.truncated(TAG, GOOD),
        *payloads.oversized(TAG),
    ]
    hostile("foreign tag, truncated, oversized or nested-bomb payloads", stored, True)


@pytest.mark.parametrize("backend_name", BACKEND_NAMES)
def test_foreign_documents_under_our_tag_are_misses(hostile: Hostile) -> None:
    stored = [
        *[p for p in payloads.pickles(TAG) if p[0] == TAG],
        *[p for p in payloads.constructor_json(TAG) if p[0] == TAG],
        (TAG, GOOD + b"\x00trailing"),
    ]
    hostile("pickle / JSON / trailing bytes under our own tag", stored, True)


@pytest.mark.parametrize("backend_name", BACKEND_NAMES)
def test_every_flipped_bit_in_storage_is_a_miss(
    backend_name: str,
    request: pytest.FixtureRequest,
    tmp_path: Path,
    tally: Callable[..., Tally],
) -> None:
    """A real entry, then one bit of its stored bytes flipped, at every position in turn."""
    row = tally(f"{backend_name}: one bit flipped at each byte of a stored entry")
    dented: FullKey = (NS, "dented")
    with _subject(backend_name, request, tmp_path) as subject:
        if subject.corrupt is None:
            pytest.skip(f"{backend_name} keeps entries in the process: nothing to corrupt")
        # Payloads/keys are under test, not the deadline: a slow read on a busy machine
        # must not be served as a miss (deadlines have their own tests).
        stack, registry = observed(subject.cache, deadline=30.0)
        for position in itertools.count():
            stack.set({dented: (payloads.SAMPLE, None)})
            try:
                subject.corrupt(dented, position)
            except IndexError:  # past the last stored byte
                break
            before = evictions_counted(registry, cause="invalid")
            row.check(row.call(stack.get, [dented]) == {})
            row.check(evictions_counted(registry, cause="invalid") - before == 1)
            row.check(row.call(stack.get, [dented]) == {})  # deleted: nothing left to count
        row.check(row.call(stack.get, [dented]) == {dented: payloads.SAMPLE})
    assert position > 8, "the stored entry was implausibly short"
    assert row.errors == 0, row.error_types
    assert row.wrong == 0


def test_the_spy_sees_code_run_by_an_unsafe_serializer(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The spy is not blind: the opt-in pickle serializer running the same payloads is caught."""
    from toolkit.serde import PickleSerializer

    unsafe = PickleSerializer(i_understand_this_executes_code=True)
    tag = unsafe.dumps_typed(0)[0]
    stored = payloads.pickles(tag)[:3]  # made before the spy replaces os.system
    with spying(monkeypatch, tmp_path) as spy:
        for _, payload in stored:
            with contextlib.suppress(Exception):
                unsafe.loads_typed((tag, payload))
    assert any("os.system" in seen for seen in spy.reached)
    assert any("canary" in seen for seen in spy.reached)
    assert any("eval" in seen for seen in spy.reached)
