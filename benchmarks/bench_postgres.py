"""PostgresCache against raw psycopg doing the same reads and writes on the same table.

The raw side is plain psycopg 3 on one autocommit connection set up as the cache's are:
statements prepared from the first run (``prepare=True``), parameters and results binary
(``binary=True``). It reads and writes the very bytes the cache stores, finds rows by
``(ns, key)`` and skips expired ones with the same predicate, so the ratios measure the cache
machinery: checks, pool checkout, encoding, the serializer and the integrity trailer. The
server is found or started by the tests' rules (``tests/postgres_servers.py``).
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import psycopg

from benchmarks._harness import Comparison, sync_of
from tests.postgres_servers import find_or_start
from toolkit import FullKey, SafeSerializer
from toolkit.backends._integrity import seal
from toolkit.backends._postgres_sql import encode_namespace
from toolkit.backends.postgres import PostgresCache

NS = ("bench", "node")
VALUE = {"messages": [["ai", "hello world " * 4]] * 3, "step": 7}
BATCH = 100
TABLE = "toolkit_bench"
LIVE = "(expires_at IS NULL OR expires_at > now())"


def suite() -> Iterator[Comparison]:
    """get of 1 hit and of 100, set of 100, and 100 gathered agets."""
    with find_or_start() as url:
        loop = asyncio.new_event_loop()
        ours: PostgresCache[Any] = PostgresCache.from_url(url, table=TABLE, serde=SafeSerializer())
        raw = psycopg.connect(url, autocommit=True)
        try:
            ours.clear()
            yield from _comparisons(ours, raw, loop)
        finally:
            ours.clear()
            raw.execute(f"DROP TABLE IF EXISTS {TABLE}, {TABLE}_lease")
            loop.run_until_complete(ours.aclose())
            loop.close()
            raw.close()


def _comparisons(
    ours: PostgresCache[Any], raw: psycopg.Connection[Any], loop: asyncio.AbstractEventLoop
) -> Iterator[Comparison]:
    hit: FullKey = (NS, "hit")
    ours.set({hit: (VALUE, None)})
    stored_ns = encode_namespace(NS)
    select_one = f"SELECT tag, val FROM {TABLE} WHERE ns = %s AND key = %s AND {LIVE}"
    yield Comparison(
        "postgres get 1 hit vs raw psycopg PK SELECT of the same bytes",
        lambda: ours.get([hit]),
        lambda: raw.execute(select_one, (stored_ns, b"hit"), prepare=True, binary=True).fetchone(),
        baseline="psycopg SELECT (floor)",
        target=1.1,
        inner_loops=200,
    )
    # Report only: libpq's own blocking call, below any Python driver (no cursor, no rows).
    pgconn = raw.pgconn
    pgconn.prepare(b"bench_get_one", select_one.replace("%s", "$1", 1).replace("%s", "$2").encode())
    libpq_args = [stored_ns, b"hit"]
    yield Comparison(
        "postgres get 1 hit vs libpq exec_prepared (report only)",
        lambda: ours.get([hit]),
        lambda: pgconn.exec_prepared(b"bench_get_one", libpq_args, [1, 1], 1).get_value(0, 1),
        baseline="libpq round trip, no driver",
        inner_loops=200,
    )

    pairs: dict[FullKey, tuple[Any, int | None]] = {
        (NS, f"k{i}"): (VALUE, 60) for i in range(BATCH)
    }
    ours.set(pairs)
    keys = list(pairs)
    raw_keys = [key.encode() for _, key in keys]
    select_many = f"SELECT key, tag, val FROM {TABLE} WHERE ns = %s AND key = ANY(%s) AND {LIVE}"
    yield Comparison(
        f"postgres get {BATCH} hits vs one raw SELECT ... = ANY(...)",
        lambda: ours.get(keys),
        lambda: raw.execute(
            select_many, (stored_ns, raw_keys), prepare=True, binary=True
        ).fetchall(),
        baseline="psycopg = ANY (floor)",
        target=1.2,
        inner_loops=20,
    )

    tag, payload = ours.serde.dumps_typed(VALUE)
    sealed = seal(payload)
    upsert = (
        f"INSERT INTO {TABLE} (ns, key, expires_at, tag, val) "
        "VALUES (%s, %s, now() + interval '60 seconds', %s, %s) "
        "ON CONFLICT (ns, key) DO UPDATE SET "
        "expires_at = excluded.expires_at, tag = excluded.tag, val = excluded.val"
    )

    def single_upserts() -> None:
        for key in raw_keys:
            raw.execute(upsert, (stored_ns, key, tag, sealed), prepare=True, binary=True)

    yield Comparison(
        f"postgres set {BATCH} (ttl 60 s) vs {BATCH} single raw upserts",
        lambda: ours.set(pairs),
        single_upserts,
        baseline="psycopg upsert x100",
        target=0.5,
        inner_loops=5,
    )

    async def gathered() -> object:
        return await asyncio.gather(*(ours.aget([key]) for key in keys))

    async def sequential() -> object:
        return [await ours.aget([key]) for key in keys]

    yield Comparison(
        f"postgres {BATCH} gathered agets vs {BATCH} sequential",
        sync_of(gathered, loop),
        sync_of(sequential, loop),
        baseline="the same agets in sequence",
        target=0.3,
        inner_loops=5,
    )
