"""Pytest fixtures for a real PostgreSQL: the session server, a private server, per-test caches.

Skips with the reason when no PostgreSQL can be found or started; ``TOOLKIT_REQUIRE_POSTGRES=1``
turns the skip into a failure (CI sets it). Every test cache has its own table, dropped after
the test, so parallel runs never collide.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import AbstractContextManager
from typing import Any

import psycopg
import pytest

from tests.harness import Subject, flip_byte, real_sleep
from tests.postgres_servers import (
    PostgresServer,
    PostgresUnavailable,
    find_or_start,
    private_postgres,
)
from toolkit import FullKey
from toolkit.backends._integrity import seal
from toolkit.backends._postgres_sql import encode_namespace, helper_name
from toolkit.backends.postgres import PostgresCache

__all__ = [
    "lock_waiters",
    "make_pg_cache",
    "pg_closer",
    "pg_subject",
    "pg_url",
    "private_pg",
    "unique_table",
]

TEST_TIMEOUT = 5.0
"""Statement timeout of test caches: generous, since the test machine is shared and busy."""


def _unavailable(reason: str) -> None:
    if os.environ.get("TOOLKIT_REQUIRE_POSTGRES") == "1":
        pytest.fail(f"TOOLKIT_REQUIRE_POSTGRES=1 but {reason}")
    pytest.skip(reason)


def _serve(starter: AbstractContextManager[Any]) -> Iterator[Any]:
    try:
        value = starter.__enter__()
    except PostgresUnavailable as exc:
        _unavailable(str(exc))
        return
    try:
        yield value
    finally:
        starter.__exit__(None, None, None)


@pytest.fixture(scope="session")
def pg_url() -> Iterator[str]:
    """URL of a PostgreSQL: POSTGRES_URL, the local default, or a private server."""
    yield from _serve(find_or_start())


@pytest.fixture
def private_pg() -> Iterator[PostgresServer]:
    """A private server this test may stop and restart (never the shared one)."""
    yield from _serve(private_postgres())


def unique_table() -> str:
    """A table name no other test (or test run) uses."""
    return f"toolkit_test_{uuid.uuid4().hex[:16]}"


def lock_waiters(locker: psycopg.Connection[Any], cache: PostgresCache[Any]) -> int:
    """How many sessions wait for a lock on the cache's table."""
    row = locker.execute(
        "SELECT count(*) FROM pg_locks WHERE NOT granted AND relation = %s::regclass",
        (f'"{cache.schema}"."{cache.table}"',),
    ).fetchone()
    return int(row[0]) if row else 0


def drop_table(url: str, schema: str, table: str) -> None:
    """Drop a test's table (and its schema if the test made one)."""
    with psycopg.connect(url, autocommit=True, connect_timeout=5) as conn:
        lease = helper_name(table, "_lease")
        conn.execute(f'DROP TABLE IF EXISTS "{schema}"."{table}", "{schema}"."{lease}"')
        if schema != "public":
            conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')


@pytest.fixture
async def pg_closer() -> AsyncIterator[list[tuple[str, PostgresCache[Any]]]]:
    """Caches registered here are closed and their tables dropped after the test."""
    caches: list[tuple[str, PostgresCache[Any]]] = []
    yield caches
    for url, cache in caches:
        try:
            cache.close()
        finally:
            drop_table(url, cache.schema, cache.table)


def make_pg_cache(
    closer: list[tuple[str, PostgresCache[Any]]], url: str, **options: Any
) -> PostgresCache[Any]:
    """A cache on its own table, closed and dropped by ``pg_closer``."""
    options.setdefault("timeout", TEST_TIMEOUT)
    options.setdefault("table", unique_table())
    cache: PostgresCache[Any] = PostgresCache.from_url(url, **options)
    closer.append((url, cache))
    return cache


def pg_subject(request: pytest.FixtureRequest) -> Subject:
    """A conformance subject over a fresh table on the session server."""
    url = request.getfixturevalue("pg_url")
    cache = make_pg_cache(request.getfixturevalue("pg_closer"), url)
    table = f'"{cache.schema}"."{cache.table}"'

    def inject(full_key: FullKey, tag: str, payload: bytes) -> None:
        cache.set({full_key: (0, None)})  # creates the table if this is its first write
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute(
                f"UPDATE {table} SET tag = %s, val = %s WHERE ns = %s AND key = %s",
                # text cannot hold NUL: such a tag is stored as its escape, still not a tag
                (
                    tag.replace("\x00", "\\0"),
                    seal(payload),
                    encode_namespace(full_key[0]),
                    full_key[1].encode(),
                ),
            )

    def corrupt(full_key: FullKey, where: str | int) -> None:
        match = "WHERE ns = %s AND key = %s"
        args = (encode_namespace(full_key[0]), full_key[1].encode())
        with psycopg.connect(url, autocommit=True) as conn:
            row = conn.execute(f"SELECT val FROM {table} {match}", args).fetchone()
            assert row is not None, "nothing stored to corrupt"
            conn.execute(f"UPDATE {table} SET val = %s {match}", (flip_byte(row[0], where), *args))

    return Subject("postgres", cache, real_sleep, inject=inject, corrupt=corrupt, raw=cache)
