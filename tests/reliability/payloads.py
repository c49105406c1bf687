"""Hostile stored payloads: each names code to run or lies about its own shape."""

from __future__ import annotations

import datetime as dt
import json
import os
import pickle
from typing import Any

import ormsgpack

from tests.reliability.spies import CANARY, MARKER

Payload = tuple[str, bytes]
"""A stored ``(serializer tag, bytes)`` pair."""

VICTIMS = ["os.system", "posix.system", "builtins.eval", "builtins.exec", f"{CANARY}.Boom"]


class _RunsSystem:
    def __reduce__(self) -> tuple[Any, tuple[str]]:
        return (os.system, (f"echo {MARKER}",))


def pickles(tag: str) -> list[Payload]:
    """Pickles that call ``os.system``, ``eval`` or import the canary when loaded."""
    system = pickle.dumps(_RunsSystem(), protocol=4)
    canary = f"c{CANARY}\nboom\n(S'{MARKER}'\ntR.".encode()
    evil_eval = f"cbuiltins\neval\n(S'{MARKER}'\ntR.".encode()
    return [(t, p) for t in (tag, "pickle") for p in (system, canary, evil_eval)]


def msgpack_extensions(tag: str) -> list[Payload]:
    """Every msgpack extension code carrying a class or function name to revive and call."""
    found = []
    for code in range(128):
        for victim in VICTIMS:
            for body in ([victim, [MARKER]], [victim, {"cmd": MARKER}], victim):
                found.append((tag, ormsgpack.packb(ormsgpack.Ext(code, ormsgpack.packb(body)))))
    return found


def constructor_json(tag: str) -> list[Payload]:
    """LangChain-style ``{"lc": 1, "type": "constructor"}`` documents naming the canary."""
    doc = {"lc": 1, "type": "constructor", "id": [CANARY, "Boom"], "kwargs": {"x": MARKER}}
    text = json.dumps(doc).encode()
    return [(tag, text), ("json", text), ("lc-json", text)]


def constructor_msgpack(tag: str) -> Payload:
    """The constructor document as plain msgpack data: it may decode, but only as inert data."""
    doc = {"lc": 1, "type": "constructor", "id": [CANARY, "Boom"], "kwargs": {"x": MARKER}}
    return tag, ormsgpack.packb(doc)


SAMPLE: Any = {
    "user": "alice",
    "n": 12345,
    "when": dt.datetime(2024, 1, 2, 3, 4, 5),
    "tags": ("a", "b"),
    "score": 1.5,
    "blob": b"\x00\x01",
}


def truncated(tag: str, payload: bytes) -> list[Payload]:
    """A real encoding cut short at several points."""
    return [(tag, payload[:cut]) for cut in (0, 1, len(payload) // 2, len(payload) - 1)]


def oversized(tag: str) -> list[Payload]:
    """Headers claiming far more than is there, and nesting deeper than any real value."""
    return [
        (tag, b"\xc6\x7f\xff\xff\xff" + b"x" * 16),  # bin32 of 2 GiB, 16 bytes present
        (tag, b"\xdb\xff\xff\xff\xff" + b"x" * 16),  # str32 of 4 GiB
        (tag, b"\xdd\xff\xff\xff\xff\x01"),  # array32 of 4 billion items
        (tag, b"\xdf\xff\xff\xff\xff\x01\x02"),  # map32 of 4 billion pairs
        (tag, b"\x91" * 200_000 + b"\x01"),  # 200,000 nested one-item arrays
        (tag, b"\xc9\xff\xff\xff\xff\x05" + b"x" * 8),  # ext32 of 4 GiB
        (tag, b"\x81" * 100_000 + b"\xc0"),  # 100,000 nested maps with nil keys
    ]


def unknown_tags(payload: bytes) -> list[Payload]:
    """A valid encoding under tags this serializer never wrote."""
    return [("", payload), ("pickle", payload), ("x" * 200, payload), ("\x00", payload)]


def flipped(tag: str, payload: bytes) -> list[Payload]:
    """The encoding with each single byte corrupted (one bit flipped)."""
    out = []
    for i in range(len(payload)):
        damaged = bytearray(payload)
        damaged[i] ^= 0x01
        out.append((tag, bytes(damaged)))
    return out
