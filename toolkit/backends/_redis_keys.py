"""How ``(namespace, key)`` pairs become Redis keys, and the SCAN patterns that find them.

A Redis key is ``prefix + "{" + tag + "}" + keypart``:

- ``tag`` is ``"ns"`` followed by ``"/" + part`` for every namespace part, with ``%``, ``/``
  and ``}`` percent-escaped, so the tag never contains a raw ``}``; a tag longer than
  ``MAX_TAG_BYTES`` becomes ``"#" + blake2b(tag)`` (a literal tag starts with ``ns``, never ``#``).
- ``keypart`` is ``":" + key`` or, for a key longer than ``MAX_KEY_BYTES``, ``"#" + blake2b(key)``.
- keys that are not entries (a lease on an entry: ``LEASE_MARK + keypart``) put another
  marker right after the ``}``, so no entry key can equal them and ``decode`` (hence
  ``stats``, ``namespaces`` and ``iter_keys``) skips them; ``clear`` of the namespace
  removes them with its entries.

The ``{...}`` segment ends at its first ``}``, so it is prefix-free: a namespace's keys are
exactly the keys that start with ``prefix + segment``, which one escaped SCAN pattern selects
(children and siblings never match). The braces are also a Redis Cluster hash tag, so every
key of one namespace lives in one slot. Distinct pairs map to distinct keys (up to 128-bit
hash collisions for hashed parts).
"""

from __future__ import annotations

import hashlib
import re

from toolkit._types import Namespace

__all__ = ["LEASE_MARK", "KeyCodec", "glob_escape"]

MAX_TAG_BYTES = 120
MAX_KEY_BYTES = 120
_SEGMENT_CACHE_LIMIT = 4096

_PART_ESCAPES = str.maketrans({"%": "%25", "/": "%2F", "}": "%7D"})
_GLOB_SPECIALS = frozenset(b"*?[]\\")
_PART_UNESCAPES = {b"25": b"%", b"2F": b"/", b"7D": b"}"}
_ESCAPED = re.compile(rb"%(25|2F|7D)")
_DIGEST = re.compile(r"[0-9a-f]{32}")
LEASE_MARK = b"!lease"
"""What follows the namespace segment in a lease key, instead of an entry's ``:`` or ``#``."""


def _digest(data: bytes) -> str:
    return hashlib.blake2b(data, digest_size=16).hexdigest()


def glob_escape(literal: bytes) -> bytes:
    """Escape ``literal`` so a Redis MATCH pattern matches it character for character."""
    if not any(byte in _GLOB_SPECIALS for byte in literal):
        return literal
    out = bytearray()
    for byte in literal:
        if byte in _GLOB_SPECIALS:
            out.append(0x5C)
        out.append(byte)
    return bytes(out)


def check_prefix(prefix: object) -> str:
    """Return ``prefix`` if it is a usable key prefix, else raise."""
    if not isinstance(prefix, str):
        raise TypeError(f"prefix must be str, got {type(prefix).__name__}")
    if not prefix:
        raise ValueError("prefix must not be empty: clear() deletes every key under it")
    if "{" in prefix or "}" in prefix:
        raise ValueError(
            f"prefix must not contain '{{' or '}}' (the cache puts a hash tag per namespace), "
            f"got {prefix!r}"
        )
    return prefix


class KeyCodec:
    """Encodes full keys for one prefix; remembers recent namespace segments."""

    def __init__(self, prefix: str) -> None:
        """Build a codec for keys under ``prefix``."""
        self.prefix = check_prefix(prefix)
        self._prefix_bytes = prefix.encode()
        self._segments: dict[Namespace, bytes] = {}

    def segment(self, ns: Namespace) -> bytes:
        """``prefix + "{tag}"`` for ``ns``: the start shared by every key of the namespace."""
        found = self._segments.get(ns)
        if found is not None:
            return found
        tag = "ns" + "".join("/" + part.translate(_PART_ESCAPES) for part in ns)
        raw = tag.encode()
        if len(raw) > MAX_TAG_BYTES:
            raw = b"#" + _digest(raw).encode()
        made = self._prefix_bytes + b"{" + raw + b"}"
        if len(self._segments) >= _SEGMENT_CACHE_LIMIT:
            self._segments.clear()
        self._segments[ns] = made
        return made

    def encode(self, ns: Namespace, key: str) -> bytes:
        """The Redis key of ``(ns, key)``."""
        raw = key.encode()
        if len(raw) > MAX_KEY_BYTES:
            return self.segment(ns) + b"#" + _digest(raw).encode()
        return self.segment(ns) + b":" + raw

    def lease_key(self, ns: Namespace, key: str) -> bytes:
        """The Redis key of the lease on ``(ns, key)``: same slot, never an entry's key."""
        return self.segment(ns) + LEASE_MARK + self.encode(ns, key)[len(self.segment(ns)) :]

    def namespace_pattern(self, ns: Namespace) -> bytes:
        """A SCAN MATCH pattern selecting exactly the keys of ``ns``."""
        return glob_escape(self.segment(ns)) + b"*"

    def all_pattern(self) -> bytes:
        """A SCAN MATCH pattern selecting every key this codec can make."""
        return glob_escape(self._prefix_bytes) + b"{*"

    # -- decoding (introspection: RedisCache.stats, namespaces and iter_keys) --

    def decode(self, rkey: bytes) -> tuple[Namespace | None, str] | None:
        """``(namespace, key)`` of a Redis key this codec made, else ``None``.

        A hashed namespace decodes as ``None`` and a hashed key as ``"#<digest>"``: hashing
        cannot be undone.
        """
        start = len(self._prefix_bytes) + 1
        if not rkey.startswith(self._prefix_bytes + b"{"):
            return None
        end = rkey.find(b"}", start)
        if end < 0:
            return None
        tag, rest = rkey[start:end], rkey[end + 1 :]
        try:
            key = rest[1:].decode()
            if rest[:1] == b"#":
                if _DIGEST.fullmatch(key) is None:
                    return None  # a hashed key part is exactly one digest, nothing appended
                key = "#" + key
            elif rest[:1] != b":":
                return None
            if tag.startswith(b"#"):
                return None, key
            if not tag.startswith(b"ns"):
                return None
            parts = tag[2:].split(b"/")[1:]
            ns = tuple(
                _ESCAPED.sub(lambda m: _PART_UNESCAPES[m.group(1)], p).decode() for p in parts
            )
        except UnicodeDecodeError:
            return None
        # Only an exact round trip is ours: anything else under the prefix is foreign.
        if not rkey.startswith(self.segment(ns)):
            return None
        if not key.startswith("#") and self.encode(ns, key) != rkey:
            return None
        return ns, key
