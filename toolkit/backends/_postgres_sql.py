"""PostgresCache's SQL text and its binary parameters and rows: what the sync and async I/O share.

Statements run as named prepared statements with binary parameters and binary results, so a
call costs libpq one message each way and no SQL parsing or text conversion on either side.

Layout of the table (one row per entry)::

    ns          bytea        the namespace as JSON array text in UTF-8: exact for any parts
                             (NUL included, which a Postgres ``text`` cannot hold), and one
                             scalar per row, so a batch passes namespaces as one flat array
    key         bytea        the key in UTF-8 (NUL included)
    expires_at  timestamptz  NULL for no expiry; the server's clock decides, as Redis's does
    tag         text         the serializer's type tag
    val         bytea        the serialized value with a CRC-32 trailer
"""

from __future__ import annotations

import hashlib
import json
import re
import struct
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache

from toolkit._types import Namespace

__all__ = [
    "BYTEA_ARRAY",
    "DEFAULT_SCHEMA",
    "DEFAULT_TABLE",
    "FLOAT8_ARRAY",
    "HELPER_SUFFIXES",
    "INT8",
    "MAX_TTL",
    "TEXT_ARRAY",
    "Param",
    "Rows",
    "Statement",
    "TableSql",
    "array",
    "decode_namespace",
    "encode_namespace",
    "float8",
    "helper_name",
    "int8",
    "read_float",
    "read_int",
]

DEFAULT_SCHEMA = "public"
DEFAULT_TABLE = "toolkit_cache"
MAX_TTL = 2.0**46 / 1000
"""About 2,200 years; longer ttls are stored without expiry (timestamps end at 294276 AD)."""

_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,62}")
_MAX_IDENTIFIER = 63
"""PostgreSQL's identifier length (NAMEDATALEN - 1): longer names are silently truncated."""
_DIGEST_CHARS = 12

TEXT, BYTEA, FLOAT8, INT8 = 25, 17, 701, 20
TEXT_ARRAY, BYTEA_ARRAY, FLOAT8_ARRAY = 1009, 1001, 1022
_ELEMENT = {TEXT_ARRAY: TEXT, BYTEA_ARRAY: BYTEA, FLOAT8_ARRAY: FLOAT8}

Param = bytes | None
"""A parameter in binary wire format (``None`` is SQL NULL)."""
Rows = list[list[bytes | None]]
"""A result's rows, each column in binary wire format (``None`` is SQL NULL)."""

_ARRAY_HEAD = struct.Struct(">iiIii")
_LENGTH = struct.Struct(">i")
_DOUBLE = struct.Struct(">d")
_LONG = struct.Struct(">q")


@dataclass(frozen=True)
class Statement:
    """One prepared statement: a name derived from its text, the text, its parameter types."""

    name: bytes
    sql: bytes
    types: tuple[int, ...]

    @classmethod
    def of(cls, sql: str, *types: int) -> Statement:
        """The statement for ``sql`` with ``$1..$n`` of the given type oids."""
        digest = hashlib.sha1(sql.encode()).hexdigest()[:16]
        return cls(f"toolkit_{digest}".encode(), sql.encode(), types)


@lru_cache(maxsize=4096)
def encode_namespace(ns: Namespace) -> bytes:
    """Store a namespace as JSON array text in UTF-8: exact and injective whatever its parts."""
    return json.dumps(ns, ensure_ascii=False, separators=(",", ":")).encode()


@lru_cache(maxsize=4096)
def decode_namespace(stored: bytes) -> Namespace | None:
    """Invert :func:`encode_namespace`; ``None`` for bytes this cache did not write."""
    try:
        parts = json.loads(stored)
    except ValueError:
        return None
    if not isinstance(parts, list) or not all(isinstance(part, str) for part in parts):
        return None
    return tuple(parts)


def float8(value: float | None) -> Param:
    """A ``float8`` parameter."""
    return None if value is None else _DOUBLE.pack(value)


def int8(value: int) -> Param:
    """An ``int8`` parameter."""
    return _LONG.pack(value)


def array(array_type: int, items: Sequence[bytes | None]) -> bytes:
    """A one-dimensional array parameter of already-encoded binary elements."""
    has_null = any(item is None for item in items)
    parts = [_ARRAY_HEAD.pack(1, int(has_null), _ELEMENT[array_type], len(items), 1)]
    pack = _LENGTH.pack
    for item in items:
        if item is None:
            parts.append(pack(-1))
        else:
            parts.append(pack(len(item)))
            parts.append(item)
    return b"".join(parts)


def read_int(cell: bytes | None) -> int:
    """An ``int8`` result column."""
    return 0 if cell is None else int(_LONG.unpack(cell)[0])


def read_float(cell: bytes | None) -> float | None:
    """A ``float8`` result column."""
    return None if cell is None else float(_DOUBLE.unpack(cell)[0])


HELPER_SUFFIXES = ("_lease", "_expires_at")
"""What the names of a table's lease table and expiry index end with."""


def _identifier(value: object, what: str) -> str:
    if not isinstance(value, str) or not _IDENTIFIER.fullmatch(value):
        raise ValueError(f"{what} must be a plain SQL identifier, got {value!r}")
    return value


def _table_name(value: object) -> str:
    table = _identifier(value, "table")
    if table.endswith(HELPER_SUFFIXES):
        # "x_lease" is the lease table of the cache on "x", "x_expires_at" its index: a cache
        # on either would find that relation made (CREATE ... IF NOT EXISTS) and fail on it.
        raise ValueError(
            f"table names ending in {' or '.join(HELPER_SUFFIXES)} are kept for the lease "
            f"table and index of the cache on the table without it, got {table!r}"
        )
    return table


def helper_name(table: str, suffix: str) -> str:
    """The name of a relation that belongs to ``table`` (its lease table, its index).

    ``table + suffix`` when that fits in an identifier (every name this cache ever made
    stays as it was). A longer one would be truncated by the server, so tables sharing their
    first 63 - len(suffix) characters would share it (one lease table serving two caches,
    one table left without its index): it keeps a prefix of ``table`` and adds a digest of
    the whole name instead, so distinct tables never share a helper.
    """
    name = table + suffix
    if len(name) <= _MAX_IDENTIFIER:
        return name
    digest = hashlib.sha1(table.encode()).hexdigest()[:_DIGEST_CHARS]
    keep = _MAX_IDENTIFIER - len(suffix) - _DIGEST_CHARS - 1
    return f"{table[:keep]}_{digest}{suffix}"


class TableSql:
    """Every statement PostgresCache runs against one table."""

    def __init__(
        self, table: str = DEFAULT_TABLE, schema: str = DEFAULT_SCHEMA, *, unlogged: bool = False
    ) -> None:
        """Statements for ``schema.table`` (plain SQL identifiers)."""
        self.table = _table_name(table)
        self.schema = _identifier(schema, "schema")
        qualified = f'"{self.schema}"."{self.table}"'
        self.qualified = qualified
        live = "(expires_at IS NULL OR expires_at > now())"
        # Serializes concurrent first uses: CREATE ... IF NOT EXISTS alone can still collide
        # on the catalog when two sessions create the same table at once.
        lock_key = int.from_bytes(hashlib.sha1(qualified.encode()).digest()[:8], "big", signed=True)
        kind = "UNLOGGED TABLE" if unlogged else "TABLE"
        # Leases on the table's keys (toolkit.lease), on the server's clock.
        self.lease_table = helper_name(self.table, "_lease")
        self.expiry_index = helper_name(self.table, "_expires_at")
        lease = f'"{self.schema}"."{self.lease_table}"'
        self.create = (
            f"BEGIN; SELECT pg_advisory_xact_lock({lock_key}); "
            f'CREATE SCHEMA IF NOT EXISTS "{self.schema}"; '
            f"CREATE {kind} IF NOT EXISTS {qualified} ("
            "ns bytea NOT NULL, key bytea NOT NULL, expires_at timestamptz, "
            "tag text NOT NULL, val bytea NOT NULL, PRIMARY KEY (ns, key)); "
            f'CREATE INDEX IF NOT EXISTS "{self.expiry_index}" ON {qualified} (expires_at) '
            "WHERE expires_at IS NOT NULL; "
            f"CREATE {kind} IF NOT EXISTS {lease} ("
            "ns bytea NOT NULL, key bytea NOT NULL, token text NOT NULL, "
            "expires_at timestamptz NOT NULL, PRIMARY KEY (ns, key)); COMMIT"
        ).encode()
        until = "now() + $4 * interval '1 second'"
        self.lease = {
            "acquire": Statement.of(
                f"INSERT INTO {lease} AS l (ns, key, token, expires_at) "
                f"VALUES ($1, $2, $3, {until}) "
                "ON CONFLICT (ns, key) DO UPDATE SET token = excluded.token, "
                "expires_at = excluded.expires_at WHERE l.expires_at <= now() RETURNING 1",
                BYTEA,
                BYTEA,
                TEXT,
                FLOAT8,
            ),
            "renew": Statement.of(
                f"UPDATE {lease} SET expires_at = {until} "
                "WHERE ns = $1 AND key = $2 AND token = $3 AND expires_at > now() RETURNING 1",
                BYTEA,
                BYTEA,
                TEXT,
                FLOAT8,
            ),
            "release": Statement.of(
                f"DELETE FROM {lease} WHERE ns = $1 AND key = $2 AND token = $3 "
                "AND expires_at > now() AND $4::float8 IS NOT NULL RETURNING 1",
                BYTEA,
                BYTEA,
                TEXT,
                FLOAT8,
            ),
        }
        self.get_one = Statement.of(
            f"SELECT tag, val FROM {qualified} WHERE ns = $1 AND key = $2 AND {live}",
            BYTEA,
            BYTEA,
        )
        self.get_many = Statement.of(
            "SELECT k.i, t.tag, t.val FROM unnest($1::bytea[], $2::bytea[]) "
            f"WITH ORDINALITY AS k(ns, key, i) JOIN {qualified} t "
            f"ON t.ns = k.ns AND t.key = k.key WHERE {live.replace('expires_at', 't.expires_at')}",
            BYTEA_ARRAY,
            BYTEA_ARRAY,
        )
        self.upsert = Statement.of(
            f"INSERT INTO {qualified} AS t (ns, key, expires_at, tag, val) "
            "SELECT ns, key, now() + ttl * interval '1 second', tag, val "
            "FROM unnest($1::bytea[], $2::bytea[], $3::float8[], $4::text[], $5::bytea[]) "
            "AS u(ns, key, ttl, tag, val) "
            "ON CONFLICT (ns, key) DO UPDATE SET "
            "expires_at = excluded.expires_at, tag = excluded.tag, val = excluded.val",
            BYTEA_ARRAY,
            BYTEA_ARRAY,
            FLOAT8_ARRAY,
            TEXT_ARRAY,
            BYTEA_ARRAY,
        )
        self.delete = Statement.of(
            f"DELETE FROM {qualified} t USING unnest($1::bytea[], $2::bytea[]) AS k(ns, key) "
            "WHERE t.ns = k.ns AND t.key = k.key",
            BYTEA_ARRAY,
            BYTEA_ARRAY,
        )
        self.delete_if_same = Statement.of(
            f"DELETE FROM {qualified} WHERE ns = $1 AND key = $2 AND val = $3",
            BYTEA,
            BYTEA,
            BYTEA,
        )
        self.clear_namespaces = Statement.of(
            f"DELETE FROM {qualified} WHERE ns = ANY($1::bytea[])", BYTEA_ARRAY
        )
        self.clear_all = Statement.of(f"DELETE FROM {qualified}")
        # SKIP LOCKED: two purgers (or a purger and a writer) never wait on each other.
        self.purge = Statement.of(
            f"DELETE FROM {qualified} WHERE ctid = ANY(ARRAY("
            f"SELECT ctid FROM {qualified} WHERE expires_at <= now() "
            "LIMIT $1 FOR UPDATE SKIP LOCKED)) RETURNING ns",
            INT8,
        )
        self.count = Statement.of(f"SELECT count(*) FROM {qualified}")
        self.tally = Statement.of(
            "SELECT ns, count(*), coalesce(sum(octet_length(val)), 0)::int8, "
            f"count(*) FILTER (WHERE expires_at <= now()) FROM {qualified} GROUP BY ns"
        )
        self.keys_page = Statement.of(
            "SELECT key, extract(epoch FROM expires_at - now())::float8 "
            f"FROM {qualified} WHERE ns = $1 AND ($2::bytea IS NULL OR key > $2) AND {live} "
            "ORDER BY key LIMIT $3",
            BYTEA,
            BYTEA,
            INT8,
        )
