"""SqliteCache's introspection SQL: per-namespace tallies and paged key listings (never values)."""

from __future__ import annotations

from collections.abc import Iterator, Sequence

from toolkit._types import Namespace
from toolkit.backends._sqlite_sql import Row, Statement, decode_namespace, encode_namespace
from toolkit.introspect import KeyInfo

__all__ = ["KEY_PAGE", "key_infos", "keys_page", "stats_rows", "tally_statement"]

KEY_PAGE = 1_000
"""Keys per query of ``iter_keys``: a huge namespace is read in short statements."""


def tally_statement(table: str, now: float) -> Statement:
    """Per stored namespace: entries, value bytes and entries already expired."""
    return (
        "SELECT ns, count(*), coalesce(sum(length(val)), 0), "
        f'coalesce(sum(expiry <= ?), 0) FROM "{table}" GROUP BY ns',
        (now,),
    )


def stats_rows(rows: Sequence[Row]) -> Iterator[tuple[Namespace | None, int, int, int]]:
    """Decode the namespaces of ``tally_statement`` rows (``None`` for rows we did not write)."""
    for ns, count, size, expired in rows:
        yield decode_namespace(ns), int(count), int(size), int(expired)


def keys_page(table: str, ns: Namespace, after: str | None, now: float) -> Statement:
    """The next ``KEY_PAGE`` live keys of ``ns`` in key order, after ``after``."""
    where = "ns = ? AND (expiry IS NULL OR expiry > ?)"
    params: list[object] = [encode_namespace(ns), now]
    if after is not None:
        where += " AND key > ?"
        params.append(after)
    sql = f'SELECT key, expiry FROM "{table}" WHERE {where} ORDER BY key LIMIT {KEY_PAGE}'
    return sql, params


def key_infos(rows: Sequence[Row], now: float) -> list[KeyInfo]:
    """``KeyInfo`` for each ``(key, expiry)`` row."""
    return [KeyInfo(key, None if expiry is None else expiry - now) for key, expiry in rows]
