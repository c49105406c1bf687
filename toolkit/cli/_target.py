"""Opening the cache a command-line URL names, and the errors and prompts commands share."""

from __future__ import annotations

import argparse
import math
import os
import sqlite3
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, Protocol
from urllib.parse import urlsplit

from toolkit._types import Namespace
from toolkit.config import cache_from_url, redacted_url, sqlite_url_path
from toolkit.introspect import SupportsIntrospection

__all__ = [
    "CliError",
    "Target",
    "add_target_arguments",
    "confirm",
    "entries",
    "human_bytes",
    "open_target",
]

URL_HELP = (
    "cache URL: sqlite:///relative.db, sqlite:////abs/path.db, redis://host:6379/0 "
    "or postgresql://user@host:5432/db"
)


# The command line is not a hot path: clearing or purging a large cache may take minutes,
# which the backends' call bounds (0.5 s, sized for observe's deadline) would cut short.
ADMIN_CALL_SECONDS = 600.0
ADMIN_ROUND_TRIP_SECONDS = 5.0
# The backends' defaults (not imported: that would load every backend's driver).
DEFAULT_TABLE = "toolkit_cache"
DEFAULT_SCHEMA = "public"


class CliError(Exception):
    """Bad input or a refused action: printed as one line, exit status 2, no traceback."""


class Target(SupportsIntrospection, Protocol):
    """What the commands need of a cache: introspection and ``clear``."""

    def clear(self, namespaces: list[Namespace] | None = None) -> None:
        """Delete the given namespaces, or every entry of this cache."""
        ...


def add_target_arguments(parser: argparse.ArgumentParser) -> None:
    """The URL argument and the options that say where in the store the cache lives."""
    parser.add_argument("url", help=URL_HELP)
    parser.add_argument(
        "--prefix", help="Redis key prefix of the cache (default: RedisCache's, toolkit:cache:)"
    )
    # No argparse defaults: an option given for another backend is refused, not ignored.
    parser.add_argument(
        "--table", help=f"SQLite or PostgreSQL table of the cache (default {DEFAULT_TABLE})"
    )
    parser.add_argument(
        "--schema", help=f"PostgreSQL schema of the table (default {DEFAULT_SCHEMA})"
    )


_OPTIONS = {
    "sqlite": ("table",),
    "redis": ("prefix",),
    "rediss": ("prefix",),
    "unix": ("prefix",),
    "postgresql": ("table", "schema"),
    "postgres": ("table", "schema"),
}


def _refuse_foreign_options(options: argparse.Namespace, scheme: str) -> None:
    """An option for another backend would be ignored, so the command would act on this
    backend's default cache (``clear``: delete its entries) rather than the one meant."""
    takes = _OPTIONS.get(scheme)
    if takes is None:
        return  # not a URL the command opens: that is the error to report
    for name in ("prefix", "table", "schema"):
        if getattr(options, name, None) is not None and name not in takes:
            raise CliError(f"--{name} does not apply to {scheme}:// caches")


@contextmanager
def open_target(options: argparse.Namespace) -> Iterator[tuple[Target, str]]:
    """The cache ``options.url`` names and a description of where it is; closed afterwards."""
    url: str = options.url
    scheme = urlsplit(url).scheme.lower()
    cache: Any
    if scheme == "memory":
        raise CliError(
            "memory:// caches live inside one process, out of the command line's sight: "
            "call cache.stats() or cache.iter_keys(ns) in that process instead"
        )
    _refuse_foreign_options(options, scheme)
    table = DEFAULT_TABLE if options.table is None else options.table
    schema = DEFAULT_SCHEMA if options.schema is None else options.schema
    if scheme == "sqlite":
        path = _sqlite_file(url, table)
        from toolkit.backends.sqlite import SqliteCache

        try:
            cache = SqliteCache(path=path, table=table)
        except (TypeError, ValueError) as exc:
            raise CliError(str(exc)) from exc
        where = f"SQLite file {os.path.abspath(path)} (table {table})"
    elif scheme in ("redis", "rediss", "unix"):
        try:
            from toolkit.backends.redis import DEFAULT_PREFIX, RedisCache, check_url
        except ImportError as exc:
            raise CliError(str(exc)) from exc
        # An empty --prefix (an unset shell variable) is refused by the cache, not read as
        # the default prefix: that would be another cache's entries.
        prefix = DEFAULT_PREFIX if options.prefix is None else options.prefix
        try:
            check_url(url)
        except ValueError as exc:
            raise CliError(f"bad Redis URL {redacted_url(url)!r}: {exc}") from exc
        try:
            cache = RedisCache.from_url(
                url,
                prefix=prefix,
                socket_timeout=ADMIN_ROUND_TRIP_SECONDS,
                max_call_seconds=ADMIN_CALL_SECONDS,
            )
        except (TypeError, ValueError) as exc:  # the prefix, or URL options redis-py refuses
            raise CliError(f"{exc} (Redis {redacted_url(url)}, --prefix {prefix!r})") from exc
        where = f"Redis {redacted_url(url)} (keys under {prefix})"
    elif scheme in ("postgresql", "postgres"):
        try:
            from toolkit.backends.postgres import PostgresCache
        except ImportError as exc:
            raise CliError(str(exc)) from exc
        try:
            cache = PostgresCache.from_url(
                url,
                table=table,
                schema=schema,
                connect_timeout=ADMIN_ROUND_TRIP_SECONDS,
                timeout=ADMIN_CALL_SECONDS,
            )
        except (TypeError, ValueError) as exc:
            raise CliError(str(exc)) from exc
        where = f"PostgreSQL {redacted_url(url)} (table {schema}.{table})"
        try:
            _postgres_table(url, cache.schema, cache.table)
        except BaseException:
            cache.close()
            raise
    else:
        try:
            cache_from_url(url)
        except (TypeError, ValueError) as exc:
            raise CliError(str(exc)) from exc
        raise CliError(f"{scheme}:// caches cannot be inspected from the command line")
    try:
        yield cache, where
    finally:
        cache.close()


def _sqlite_file(url: str, table: str) -> str:
    """The path of an existing SQLite file holding ``table``, checked without writing to it."""
    try:
        path = sqlite_url_path(url)
    except ValueError as exc:
        raise CliError(str(exc)) from exc
    if path == ":memory:":
        raise CliError(
            "sqlite://:memory: lives inside one process, out of the command line's sight"
        )
    if not os.path.isfile(path):
        raise CliError(f"no SQLite file at {os.path.abspath(path)}")
    try:
        with _read_only(path) as conn:
            found = conn.execute(
                "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?", (table,)
            ).fetchone()
            columns = {
                row[0] for row in conn.execute("SELECT name FROM pragma_table_info(?)", (table,))
            }
    except sqlite3.DatabaseError as exc:
        raise CliError(f"{path} is not a SQLite cache: {exc}") from exc
    if found is None:
        raise CliError(f"{path} has no cache table {table!r} (is --table right?)")
    # Another application's table, or the cache's lease table: opening it as a cache would
    # change its schema (an index), and clear would empty it.
    if not columns >= _CACHE_COLUMNS:
        raise CliError(f"{path}: {table!r} is not a cache table (is --table right?)")
    return path


_CACHE_COLUMNS = frozenset({"ns", "key", "expiry", "tag", "val"})


def _postgres_table(url: str, schema: str, table: str) -> None:
    """Check the cache table exists, without creating it: the cache creates its schema and
    tables on first use, so a mistyped --table or --schema would otherwise create them in
    the user's database and report an empty cache."""
    import psycopg

    from toolkit.errors import BackendError

    try:
        with psycopg.connect(url, connect_timeout=math.ceil(ADMIN_ROUND_TRIP_SECONDS)) as conn:
            found = conn.execute(
                "SELECT 1 FROM pg_catalog.pg_tables WHERE schemaname = %s AND tablename = %s",
                (schema, table),
            ).fetchone()
    except psycopg.Error as exc:
        raise BackendError(f"postgres connect failed: {type(exc).__name__}: {exc}") from exc
    if found is None:
        raise CliError(
            f"PostgreSQL {redacted_url(url)} has no cache table {schema}.{table} "
            "(are --table and --schema right?)"
        )


@contextmanager
def _read_only(path: str) -> Iterator[sqlite3.Connection]:
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        yield conn
    finally:
        conn.close()


def confirm(question: str, *, yes: bool) -> None:
    """Go ahead if ``yes`` or the user types y at a terminal; else raise ``CliError``."""
    if yes:
        return
    if not sys.stdin.isatty():
        raise CliError("refusing without confirmation: no terminal to ask on; pass --yes")
    print(f"{question} [y/N] ", end="", flush=True)
    answer = sys.stdin.readline().strip().lower()
    if answer not in ("y", "yes"):
        raise CliError("not confirmed: nothing was deleted")


def human_bytes(count: int) -> str:
    """``1536`` as ``1.5 KiB``."""
    if count < 1024:
        return f"{count} B"
    size, unit = count / 1024, "KiB"
    for larger in ("MiB", "GiB"):
        if size < 1024:
            break
        size, unit = size / 1024, larger
    return f"{size:,.1f} {unit}"


def entries(count: int) -> str:
    """``1 entry``, ``1,234 entries``."""
    return f"{count:,} {'entry' if count == 1 else 'entries'}"
