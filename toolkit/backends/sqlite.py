"""A SQLite-backed cache in a file or ``:memory:``; async calls run on the cache's own threads.

Usage::

    cache = SqliteCache(path="cache.db")
    graph = builder.compile(cache=cache)
    ...
    cache.close()
"""

from __future__ import annotations

import os
import time
import uuid
import weakref
from collections.abc import Callable, Iterator, Mapping, Sequence
from types import TracebackType
from typing import Any

from toolkit._types import EvictionCause, FullKey, Namespace, SerializerProtocol, ValueT
from toolkit.backends._coalesce import ReadCoalescer, WriteCoalescer
from toolkit.backends._integrity import seal
from toolkit.backends._sqlite_conn import Connections
from toolkit.backends._sqlite_inspect import (
    KEY_PAGE,
    key_infos,
    keys_page,
    stats_rows,
    tally_statement,
)
from toolkit.backends._sqlite_sql import (
    DEFAULT_TABLE,
    MISSING,
    Decoded,
    ReadPlan,
    Row,
    Statement,
    StoredRow,
    TableSql,
    decode_namespace,
    tally,
)
from toolkit.base import (
    BaseCache,
    EvictionNotifier,
    check_keys,
    check_namespace,
    check_namespaces,
    check_pairs,
)
from toolkit.errors import CacheError
from toolkit.introspect import CacheStats, KeyInfo
from toolkit.lease import LeaseRequest, check_lease

__all__ = ["SqliteCache"]

DEFAULT_BUSY_TIMEOUT = 0.2
# SQLite copies the write-ahead log into the database inside the commit that grows it past
# this many pages, while that writer holds the write connection: 1,000 (SQLite's default,
# 4 MB) made the copy and its fsyncs stall the writers queued behind it for up to 0.2 s on
# a slow disk (busy_timeout). A quarter of it: smaller stalls, a smaller log to search.
_AUTOCHECKPOINT_PAGES = 250
_PURGE_INTERVAL = 1.0
_PURGE_BATCH = 256


class SqliteCache(EvictionNotifier, BaseCache[ValueT]):
    """Cache in a SQLite file, shared safely by threads and processes.

    ``path=":memory:"`` gives one private in-memory database per cache object, seen by its
    sync and async methods alike and gone when the cache is closed.
    """

    backend_name = "sqlite"

    def __init__(
        self,
        *,
        path: str,
        serde: SerializerProtocol | None = None,
        table: str = DEFAULT_TABLE,
        busy_timeout: float = DEFAULT_BUSY_TIMEOUT,
        timer: Callable[[], float] = time.time,
    ) -> None:
        """Open (creating if needed) the cache table in the database at ``path``.

        ``busy_timeout`` is how long a write waits for another writer, in seconds (reads do
        not wait behind writes); ``timer`` is the wall clock that expiry times are stored in.
        """
        super().__init__(serde=serde)
        database, uri, memory = _database(path)
        if isinstance(busy_timeout, bool) or not isinstance(busy_timeout, (int, float)):
            raise TypeError(f"busy_timeout must be seconds, got {type(busy_timeout).__name__}")
        if not busy_timeout >= 0:
            raise ValueError(f"busy_timeout must be >= 0 seconds, got {busy_timeout!r}")
        self.path = path
        self.endpoint = str(path)
        """Where the data lives, for messages (the file, or ``:memory:``)."""
        self._sql = TableSql(table)
        self._timer = timer
        self._next_purge = 0.0
        pragmas = ["PRAGMA synchronous = NORMAL"]
        if not memory:
            pragmas.append(f"PRAGMA wal_autocheckpoint = {_AUTOCHECKPOINT_PAGES}")
        # No read_uncommitted for ":memory:" (a shared-cache database): it let readers skip
        # the table locks, and so see the rows of a write still open, or about to roll back.
        # A read meeting a write's table lock retries (SQLITE_LOCKED) until it commits.
        self._conns = Connections(
            database=database, uri=uri, busy_timeout=float(busy_timeout), pragmas=pragmas
        )
        setup = self._sql.schema if memory else ["PRAGMA journal_mode = WAL", *self._sql.schema]
        # Opened now, and kept open: it also keeps a ":memory:" database alive.
        self._conns.open_sync(setup)
        self._sql.set_variable_limit(self._conns.variable_limit)
        [namesakes] = self._conns.run([self._sql.namesakes])
        if namesakes:
            self._conns.close()
            raise ValueError(
                f"table {table!r} is the table {namesakes[0][0]!r} of this database (SQLite "
                "table names ignore case): a cache with its own entries needs another name"
            )
        self._reads: ReadCoalescer[ValueT] = ReadCoalescer(MISSING)
        self._write_turns = WriteCoalescer()
        self._finalizer = weakref.finalize(self, self._conns.close)

    @property
    def max_call_seconds(self) -> float:
        """The bound every call keeps by itself (twice ``busy_timeout`` plus a margin), so
        ``observe`` needs no deadline thread when it fits within the deadline."""
        return self._conns.max_call_seconds

    def __repr__(self) -> str:
        state = "closed" if self._conns.closed else "open"
        return f"<SqliteCache path={self.path!r} table={self._sql.table!r} {state}>"

    # -- the seed API: each sync method beside its async twin; only the I/O differs --

    def get(self, keys: Sequence[FullKey]) -> dict[FullKey, ValueT]:
        """Get the cached values for the given keys."""
        keys = check_keys(keys)
        if not keys:
            return {}
        plan = self._sql.select(keys, self._timer())
        decoded = self._decode(plan, self._conns.run(plan.statements), keyed=True)
        if decoded.cleanup:
            self._report_cleanup(decoded, self._conns.try_write(self._cleanup(decoded)))
        return decoded.by_key

    async def aget(self, keys: Sequence[FullKey]) -> dict[FullKey, ValueT]:
        """Asynchronously get the cached values for the given keys."""
        keys = check_keys(keys)
        if not keys:
            return {}
        # Concurrent agets (asyncio.gather) share one round trip to a read thread.
        return await self._reads.get(keys, self._aget_positions)

    async def _aget_positions(self, keys: list[FullKey]) -> list[Any]:
        plan = self._sql.select(keys, self._timer())
        decoded = self._decode(plan, await self._conns.arun(plan.statements), keyed=False)
        if decoded.cleanup:
            self._report_cleanup(decoded, await self._conns.atry_write(self._cleanup(decoded)))
        return decoded.by_position

    def set(self, pairs: Mapping[FullKey, tuple[ValueT, int | None]]) -> None:
        """Set the cached values for the given keys and TTLs."""
        rows, now = self._write_plan(pairs)
        if not rows:
            return
        self._conns.run(self._sql.upsert(rows), atomic=True, write=True)
        purge = self._due_purge(now)
        if purge is not None:
            try:
                results = self._conns.run(purge, atomic=True, write=True)
            except CacheError:
                results = None  # the set is done; the purge is a later write's
            self._report_purge(now, results)

    async def aset(self, pairs: Mapping[FullKey, tuple[ValueT, int | None]]) -> None:
        """Asynchronously set the cached values for the given keys and TTLs."""
        rows, now = self._write_plan(pairs)
        if not rows:
            return
        # Rows, not statements: the asets joining one transaction share its INSERTs too.
        await self._write_turns.write(rows, self._awrite)
        purge = self._due_purge(now)
        if purge is not None:
            try:
                results = await self._conns.arun(purge, atomic=True, write=True)
            except CacheError:
                results = None  # as in set
            self._report_purge(now, results)

    def clear(self, namespaces: Sequence[Namespace] | None = None) -> None:
        """Delete the cached values for the given namespaces.
        If no namespaces are provided, clear all cached values."""
        statements = self._sql.clear(check_namespaces(namespaces))
        if statements:
            self._conns.run(statements, atomic=True, write=True)

    async def aclear(self, namespaces: Sequence[Namespace] | None = None) -> None:
        """Asynchronously delete the cached values for the given namespaces.
        If no namespaces are provided, clear all cached values."""
        statements = self._sql.clear(check_namespaces(namespaces))
        if statements:
            await self._conns.arun(statements, atomic=True, write=True)

    def delete(self, keys: Sequence[FullKey]) -> None:
        """Delete exactly these keys (an extension: the seed API deletes whole namespaces)."""
        statements = self._sql.delete(check_keys(keys))
        if statements:
            self._conns.run(statements, atomic=True, write=True)

    async def adelete(self, keys: Sequence[FullKey]) -> None:
        """Asynchronously delete exactly these keys."""
        statements = self._sql.delete(check_keys(keys))
        if statements:
            await self._conns.arun(statements, atomic=True, write=True)

    def lease(self, request: LeaseRequest) -> bool:
        """Take, extend or give back a lease on a key (see ``toolkit.lease``): a row in the
        ``<table>_lease`` table of the same file, so every process using it takes part."""
        statements = self._sql.lease(check_lease(request), self._timer())
        [_, [(changed,)]] = self._conns.run(statements, atomic=True, write=True)
        return bool(changed)

    async def alease(self, request: LeaseRequest) -> bool:
        """Async twin of :meth:`lease`."""
        statements = self._sql.lease(check_lease(request), self._timer())
        [_, [(changed,)]] = await self._conns.arun(statements, atomic=True, write=True)
        return bool(changed)

    # -- lifecycle --

    def close(self) -> None:
        """Close the database connections; later calls raise ``CacheClosedError``."""
        self._finalizer.detach()
        self._conns.close()

    async def aclose(self) -> None:
        """Close the database connections without blocking the event loop."""
        self._finalizer.detach()
        await self._conns.aclose()

    def __enter__(self) -> SqliteCache[ValueT]:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    async def __aenter__(self) -> SqliteCache[ValueT]:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    # -- inspection and maintenance --

    def entry_count(self) -> int:
        """Return the number of stored entries (expired ones not yet purged included)."""
        [[(count,)]] = self._conns.run([self._sql.count])
        return int(count)

    def purge_expired(self) -> int:
        """Delete every expired entry now, in bounded batches; returns how many went."""
        total = 0
        while True:
            now = self._timer()
            results = self._conns.run(self._sql.purge(now, _PURGE_BATCH), atomic=True, write=True)
            self._report_purge(now, results)
            total += len(results[0])
            if len(results[0]) < _PURGE_BATCH:
                return total

    # -- introspection (SupportsIntrospection; the `toolkit` command's stats and ls) --

    def stats(self) -> CacheStats:
        """Entries, value bytes, expired entries not yet purged, and entries per namespace."""
        [rows] = self._conns.run([tally_statement(self._sql.table, self._timer())])
        return CacheStats.tally(stats_rows(rows), expires_itself=False)

    def namespaces(self) -> dict[Namespace, int]:
        """Entries per namespace (expired ones not yet purged included)."""
        return self.stats().namespaces

    def iter_keys(self, namespace: Namespace) -> Iterator[KeyInfo]:
        """The live keys of exactly ``namespace`` in key order, read a page at a time."""
        ns = check_namespace(namespace)
        after: str | None = None
        while True:
            now = self._timer()
            [rows] = self._conns.run([keys_page(self._sql.table, ns, after, now)])
            yield from key_infos(rows, now)
            if len(rows) < KEY_PAGE:
                return
            after = rows[-1][0]

    # -- end of introspection --

    async def _awrite(self, rows: list[StoredRow]) -> None:
        await self._conns.arun(self._sql.upsert(rows), atomic=True, write=True)

    # -- shared non-I/O steps --

    def _decode(self, plan: ReadPlan, results: list[list[Row]], *, keyed: bool) -> Decoded:
        return self._sql.decode(results, plan, self.serde.loads_typed, keyed=keyed)

    def _dumps_sealed(self, value: Any) -> tuple[str, bytes]:
        tag, payload = self.serde.dumps_typed(value)
        return tag, seal(payload)

    def _write_plan(
        self, pairs: Mapping[FullKey, tuple[ValueT, int | None]]
    ) -> tuple[list[StoredRow], float]:
        """The rows to store, each with its expiry, and the time it counts from."""
        rows = check_pairs(pairs, self._dumps_sealed, self._refuse)
        now = self._timer()
        return [(key, sealed, None if ttl is None else now + ttl) for key, sealed, ttl in rows], now

    def _due_purge(self, now: float) -> list[Statement] | None:
        if now < self._next_purge:
            return None
        self._next_purge = now + _PURGE_INTERVAL
        return self._sql.purge(now, _PURGE_BATCH)

    def _report_purge(self, now: float, results: list[list[Row]] | None) -> None:
        """Count a purge's rows; ``None``: it failed after the set's own write had committed,
        which a set must not report as its failure (the caller would take its stored values
        for lost), so the next write tries again."""
        if results is None:
            self._next_purge = now
            return
        rows = results[0]
        if len(rows) >= _PURGE_BATCH:
            self._next_purge = now  # more are waiting: take the next batch on the next write
        self._report(tally((decode_namespace(ns), "expired") for (ns,) in rows))

    def _cleanup(self, decoded: Decoded) -> list[Statement]:
        statements: list[Statement] = []
        for _, _, doomed in decoded.cleanup:
            statements += self._sql.counted_delete(doomed)
        return statements

    def _report_cleanup(self, decoded: Decoded, results: list[list[Row]] | None) -> None:
        if results is None:
            return  # the write lock was busy: the rows stay until a later read or purge
        # results alternate: the SELECT of each counted delete, then the DELETE itself
        deleted = zip(decoded.cleanup, results[::2], strict=True)
        self._report(tally((ns, cause) for (ns, cause, _), rows in deleted for _ in rows))

    def _report(self, counts: dict[tuple[Namespace, EvictionCause], int]) -> None:
        for (ns, cause), count in counts.items():
            self._notify_eviction(ns, cause, count)


def _database(path: object) -> tuple[str, bool, bool]:
    """Return ``(database, uri, memory)`` for ``path``; ``:memory:`` becomes a shared-cache URI."""
    if isinstance(path, os.PathLike):
        path = os.fspath(path)
    if not isinstance(path, str):
        raise TypeError(f"path must be a file path or ':memory:', got {type(path).__name__}")
    if path == ":memory:":
        # One private in-memory database that the read and write connections share.
        return f"file:toolkit-{uuid.uuid4().hex}?mode=memory&cache=shared", True, True
    if not path:
        raise ValueError("path must be a file path or ':memory:', got an empty string")
    # Absolute: connections opened later (and reopened, see Connections) must find the same
    # file if the process changes its working directory meanwhile.
    return os.path.abspath(path), False, False
