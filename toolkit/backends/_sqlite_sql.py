"""SqliteCache's SQL text, parameters and row decoding: everything its sync and async I/O share."""

from __future__ import annotations

import itertools
import json
import re
import zlib
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any, cast

from toolkit._types import EvictionCause, FullKey, Namespace
from toolkit.backends._integrity import RESIDUE, TRAILER
from toolkit.errors import SerializationError
from toolkit.lease import LeaseRequest

__all__ = [
    "DEFAULT_TABLE",
    "MISSING",
    "Decoded",
    "Doomed",
    "ReadPlan",
    "Statement",
    "StoredRow",
    "TableSql",
    "decode_namespace",
    "encode_namespace",
    "tally",
]

Statement = tuple[str, Sequence[object]]
Doomed = tuple[str, Sequence[object]]
"""A WHERE clause (without ``WHERE``) and its parameters, naming rows to delete."""
Row = Sequence[Any]
StoredRow = tuple[FullKey, tuple[str, bytes] | None, float | None]
"""An entry ready to store: its key, its tag and sealed payload, its expiry (``None``: never).
No payload (a value the serializer refused) deletes the key."""
_Insert = tuple[FullKey, tuple[str, bytes], float | None]

DEFAULT_TABLE = "toolkit_cache"
HELPER_SUFFIXES = ("_lease", "_expiry")
"""What the names of a table's lease table and expiry index end with."""
_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,62}")

# Safe everywhere: SQLite before 3.32 allowed only 999 variables per statement.
_FALLBACK_VARIABLE_LIMIT = 999
# Bigger statements gain nothing and each distinct size is one more prepared statement.
_MAX_KEYS_PER_SELECT = 256
_MAX_ROWS_PER_INSERT = 200
_MAX_NAMESPACES_PER_DELETE = 500


@lru_cache(maxsize=4096)
def encode_namespace(ns: Namespace) -> str:
    """Store a namespace as JSON array text: exact and injective whatever its parts contain."""
    return json.dumps(ns, ensure_ascii=False, separators=(",", ":"))


@lru_cache(maxsize=4096)
def decode_namespace(text: object) -> Namespace | None:
    """Invert :func:`encode_namespace`; ``None`` for text this cache did not write."""
    if not isinstance(text, str):
        return None
    try:
        parts = json.loads(text)
    except ValueError:
        return None
    if not isinstance(parts, list) or not all(isinstance(part, str) for part in parts):
        return None
    return tuple(parts)


_FIRST = (0,)
"""The positions a one-key read asks for."""


def _chunks(items: Sequence[Any], size: int) -> Iterable[Sequence[Any]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


MISSING: Any = type("Missing", (), {"__repr__": lambda self: "<MISSING>"})()
"""Marks a requested position with no live entry (``None`` is a cacheable value)."""


@dataclass(slots=True)
class ReadPlan:
    """The SELECTs of one batch read and, per statement, the positions of the keys it asks for."""

    keys: Sequence[FullKey]
    statements: list[Statement]
    groups: list[tuple[str, Sequence[int]]]
    """Per statement: the namespace's stored text and the positions in ``keys`` it looks up."""
    now: float


@dataclass(slots=True)
class Decoded:
    """Values found by a read, and the stored rows it must delete (expired or undecodable)."""

    by_key: dict[FullKey, Any] = field(default_factory=dict)
    """The hits, when decoded with ``keyed=True``."""
    by_position: list[Any] = field(default_factory=list)
    """One value per requested position (``MISSING`` where none), when ``keyed=False``."""
    cleanup: list[tuple[Namespace, EvictionCause, Doomed]] = field(default_factory=list)
    """Rows to delete: the key's namespace, why, and a WHERE clause with its parameters."""


class TableSql:
    """Every statement SqliteCache runs against one table, sized to the connection's limits."""

    def __init__(self, table: str = DEFAULT_TABLE) -> None:
        """Prepare statements for ``table`` (a plain SQL identifier)."""
        if not isinstance(table, str) or not _IDENTIFIER.fullmatch(table):
            raise ValueError(f"table must be a plain SQL identifier, got {table!r}")
        if table.lower().startswith("sqlite_"):
            raise ValueError(f"table names starting with 'sqlite_' are reserved, got {table!r}")
        if table.lower().endswith(HELPER_SUFFIXES):
            # "x_lease" is the lease table of the cache on "x", "x_expiry" its index: a cache
            # on either would find that table or index made (IF NOT EXISTS) and fail on it.
            raise ValueError(
                f"table names ending in {' or '.join(HELPER_SUFFIXES)} are kept for the lease "
                f"table and index of the cache on the table without it, got {table!r}"
            )
        self.table = table
        self.variable_limit = _FALLBACK_VARIABLE_LIMIT
        quoted = f'"{table}"'
        self._quoted = quoted
        self.schema = [
            f"CREATE TABLE IF NOT EXISTS {quoted} ("
            "ns TEXT NOT NULL, key TEXT NOT NULL, expiry REAL, tag TEXT NOT NULL, "
            "val BLOB NOT NULL, PRIMARY KEY (ns, key))",
            f'CREATE INDEX IF NOT EXISTS "{table}_expiry" ON {quoted} (expiry) '
            "WHERE expiry IS NOT NULL",
            # Leases on the table's keys (toolkit.lease), on the wall clock every process shares.
            f'CREATE TABLE IF NOT EXISTS "{table}_lease" ('
            "ns TEXT NOT NULL, key TEXT NOT NULL, token TEXT NOT NULL, expiry REAL NOT NULL, "
            "PRIMARY KEY (ns, key))",
        ]
        lease = f'"{table}_lease"'
        self._lease_sql = {
            "acquire": f"INSERT INTO {lease} (ns, key, token, expiry) VALUES (?, ?, ?, ?) "
            "ON CONFLICT (ns, key) DO UPDATE SET token = excluded.token, expiry = excluded.expiry "
            f"WHERE {lease}.expiry <= ?",
            "renew": f"UPDATE {lease} SET expiry = ? WHERE ns = ? AND key = ? AND token = ? "
            "AND expiry > ?",
            "release": f"DELETE FROM {lease} WHERE ns = ? AND key = ? AND token = ? AND expiry > ?",
        }
        # SQLite compares names without regard to ASCII case: table="Cache" opens the table
        # "cache" made by another cache, whose entries it would read and clear as its own.
        self.namesakes: Statement = (
            "SELECT name FROM sqlite_master WHERE type = 'table' AND name = ? COLLATE NOCASE "
            "AND name <> ?",
            (table, table),
        )
        self.clear_all: Statement = (f"DELETE FROM {quoted}", ())
        self.count: Statement = (f"SELECT count(*) FROM {quoted}", ())
        # No DELETE ... RETURNING (SQLite >= 3.35): every counted delete is a SELECT of the
        # doomed rows followed by the same DELETE, both inside one write transaction.
        self._invalid_where = "ns = ? AND key = ? AND tag IS ? AND val IS ?"
        self._purge_where = (
            f"rowid IN (SELECT rowid FROM {quoted} WHERE expiry <= ? ORDER BY expiry LIMIT ?)"
        )
        self._select_sql: dict[int, str] = {}
        self._insert_sql: dict[int, str] = {}
        self._delete_ns_sql: dict[int, str] = {}

    def set_variable_limit(self, limit: int | None) -> None:
        """Adopt the connection's ``SQLITE_LIMIT_VARIABLE_NUMBER`` when it can be read."""
        if limit is not None and limit > 0:
            self.variable_limit = limit

    # -- reads --

    def select(self, keys: Sequence[FullKey], now: float) -> ReadPlan:
        """SELECTs for a batch: per namespace, primary-key lookups chunked under the limit."""
        if len(keys) == 1:  # most reads (every @cached call): one lookup, nothing to group
            ns, key = keys[0]
            stored_ns = encode_namespace(ns)
            return ReadPlan(
                keys, [(self._select_for(1), (key, stored_ns, now))], [(stored_ns, _FIRST)], now
            )
        by_ns: dict[Namespace, list[int]] = {}
        last_ns: Namespace | None = None
        last: list[int] = []
        for position, full_key in enumerate(keys):
            ns = full_key[0]
            if ns is not last_ns:  # batches mostly share one namespace object
                last_ns = ns
                last = by_ns.setdefault(ns, [])
            last.append(position)
        per_statement = min(_MAX_KEYS_PER_SELECT, self.variable_limit - 2)
        statements: list[Statement] = []
        groups: list[tuple[str, Sequence[int]]] = []
        for ns, positions in by_ns.items():
            stored_ns = encode_namespace(ns)
            for start in range(0, len(positions), per_statement):
                chunk = positions[start : start + per_statement]
                params: list[object] = [keys[position][1] for position in chunk]
                params += (stored_ns, now)
                statements.append((self._select_for(len(chunk)), params))
                groups.append((stored_ns, chunk))
        return ReadPlan(keys, statements, groups, now)

    @staticmethod
    @lru_cache(maxsize=256)
    def _expired_where_for(n: int) -> str:
        return f"ns = ? AND expiry <= ? AND key IN ({','.join(['?'] * n)})"

    def _select_for(self, n: int) -> str:
        sql = self._select_sql.get(n)
        if sql is None:
            # Walk the requested keys (CROSS JOIN pins that order) and search the primary key
            # for each: never a scan. Rows carry the key's position, not its text, and a NULL
            # tag for an expired entry: every column returned costs per row.
            values = ",".join([f"({i},?)" for i in range(n)])
            sql = (
                f"WITH wanted(i, key) AS (VALUES {values}) "
                f"SELECT wanted.i, CASE WHEN c.expiry <= ?{n + 2} THEN NULL ELSE c.tag END, c.val "
                f"FROM wanted CROSS JOIN {self._quoted} AS c "
                f"ON c.ns = ?{n + 1} AND c.key = wanted.key"
            )
            self._select_sql[n] = sql
        return sql

    def decode(
        self,
        results: Sequence[Sequence[Row]],
        plan: ReadPlan,
        loads: Callable[[tuple[str, bytes]], Any],
        *,
        keyed: bool,
    ) -> Decoded:
        """Turn stored rows into values (by key, or by position); bad rows become deletions."""
        keys = plan.keys
        crc32 = zlib.crc32
        decoded = Decoded()
        sink: Any = decoded.by_key if keyed else decoded.by_position
        if not keyed:
            sink.extend([MISSING] * len(keys))
        for (stored_ns, positions), rows in zip(plan.groups, results, strict=True):
            expired: list[str] = []
            for i, tag, val in rows:
                position = positions[i]
                if tag is None:  # expired: the SELECT nulls the tag
                    expired.append(keys[position][1])
                    continue
                try:
                    # The integrity check inlined (see _integrity): this loop runs per row.
                    if crc32(val) != RESIDUE:
                        raise SerializationError("stored value failed its integrity check")
                    sink[keys[position] if keyed else position] = loads((tag, val[:-TRAILER]))
                except Exception:
                    # Garbage or hostile bytes are a miss; delete them so they cannot fail again.
                    key = keys[position]
                    doomed: Doomed = (self._invalid_where, (stored_ns, key[1], tag, val))
                    decoded.cleanup.append((key[0], "invalid", doomed))
            if expired:
                # One clause for the group's expired keys: every statement of the deletion
                # is a round trip for an async read, made while it holds the write lock.
                where = self._expired_where_for(len(expired))
                doomed = (where, (stored_ns, plan.now, *expired))
                decoded.cleanup.append((keys[positions[0]][0], "expired", doomed))
        return decoded

    # -- writes --

    def upsert(self, rows: Sequence[StoredRow]) -> list[Statement]:
        """INSERT OR REPLACE statements for encoded ``(key, (tag, payload), expiry)`` rows, and
        DELETEs for rows without a payload, in the order of ``rows``.

        As few statements as the variable limit allows: each is one round trip for an async
        caller, and a row repeated later in ``rows`` replaces the earlier one.
        """
        statements: list[Statement] = []
        for stored, run in itertools.groupby(rows, key=lambda row: row[1] is not None):
            if stored:
                statements += self._inserts(cast("list[_Insert]", list(run)))
            else:
                statements += self.delete([full_key for full_key, _, _ in run])
        return statements

    def _inserts(self, rows: Sequence[_Insert]) -> list[Statement]:
        per_statement = min(_MAX_ROWS_PER_INSERT, self.variable_limit // 5)
        encode = encode_namespace
        statements: list[Statement] = []
        for chunk in _chunks(rows, per_statement):
            params: list[object] = []
            for (ns, key), (tag, payload), expiry in chunk:
                params += (encode(ns), key, expiry, tag, payload)
            statements.append((self._insert_for(len(chunk)), params))
        return statements

    def _insert_for(self, n: int) -> str:
        sql = self._insert_sql.get(n)
        if sql is None:
            values = ",".join(["(?,?,?,?,?)"] * n)
            sql = (
                f"INSERT OR REPLACE INTO {self._quoted} (ns, key, expiry, tag, val) VALUES {values}"
            )
            self._insert_sql[n] = sql
        return sql

    def clear(self, namespaces: Sequence[Namespace] | None) -> list[Statement]:
        """DELETEs for exactly these namespaces (not their children), or for every entry."""
        if namespaces is None:
            return [self.clear_all]
        stored = list(dict.fromkeys(encode_namespace(ns) for ns in namespaces))
        per_statement = min(_MAX_NAMESPACES_PER_DELETE, self.variable_limit)
        return [
            (self._delete_ns_for(len(chunk)), chunk) for chunk in _chunks(stored, per_statement)
        ]

    def delete(self, keys: Sequence[FullKey]) -> list[Statement]:
        """DELETEs for exactly these keys: per namespace, ``key IN (...)`` under the limit."""
        by_ns: dict[Namespace, list[str]] = {}
        for ns, key in keys:
            by_ns.setdefault(ns, []).append(key)
        per_statement = min(_MAX_KEYS_PER_SELECT, self.variable_limit - 1)
        statements: list[Statement] = []
        for ns, names in by_ns.items():
            stored_ns = encode_namespace(ns)
            for chunk in _chunks(list(dict.fromkeys(names)), per_statement):
                marks = ",".join(["?"] * len(chunk))
                sql = f"DELETE FROM {self._quoted} WHERE ns = ? AND key IN ({marks})"
                statements.append((sql, [stored_ns, *chunk]))
        return statements

    def _delete_ns_for(self, n: int) -> str:
        sql = self._delete_ns_sql.get(n)
        if sql is None:
            sql = f"DELETE FROM {self._quoted} WHERE ns IN ({','.join(['?'] * n)})"
            self._delete_ns_sql[n] = sql
        return sql

    def lease(self, request: LeaseRequest, now: float) -> list[Statement]:
        """One lease operation, then ``changes()``: 1 when the token holds (or held) the lease."""
        ns, key = encode_namespace(request.key[0]), request.key[1]
        sql = self._lease_sql[request.action]
        params: tuple[Any, ...]
        if request.action == "acquire":
            params = (ns, key, request.token, now + request.ttl, now)
        elif request.action == "renew":
            params = (now + request.ttl, ns, key, request.token, now)
        else:
            params = (ns, key, request.token, now)
        return [(sql, params), ("SELECT changes()", ())]

    def purge(self, now: float, limit: int) -> list[Statement]:
        """Select the ns of, then delete, at most ``limit`` expired rows (via the expiry index).

        Run atomically; the first statement's rows are the purged rows' namespaces.
        """
        return self.counted_delete((self._purge_where, (now, limit)), "ns")

    def counted_delete(self, doomed: Doomed, columns: str = "1") -> list[Statement]:
        """SELECT ``columns`` of the rows matching ``doomed``, then DELETE them; run atomically."""
        where, params = doomed
        return [
            (f"SELECT {columns} FROM {self._quoted} WHERE {where}", params),
            (f"DELETE FROM {self._quoted} WHERE {where}", params),
        ]


def tally(
    evictions: Iterable[tuple[Namespace | None, EvictionCause]],
) -> dict[tuple[Namespace, EvictionCause], int]:
    """Count evictions per (namespace, cause); rows of foreign namespaces (``None``) are skipped."""
    counts: dict[tuple[Namespace, EvictionCause], int] = {}
    for ns, cause in evictions:
        if ns is not None:
            counts[(ns, cause)] = counts.get((ns, cause), 0) + 1
    return counts
