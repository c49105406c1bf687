"""A shared cache in PostgreSQL (psycopg 3): for teams that already run Postgres for LangGraph.

Usage::

    cache = PostgresCache.from_url("postgresql://user@db/app")      # makes its own pools
    cache = PostgresCache(pool=checkpointer_pool)                    # or the checkpointer's
    graph = builder.compile(cache=cache)

How it talks to PostgreSQL (statements in ``_postgres_sql``, connections in ``_postgres_conn``):

- one row per entry in ``schema.table`` (default ``public.toolkit_cache``), created on first
  use under an advisory lock (any number of processes may start at once); ``unlogged=True``
  makes it an UNLOGGED table: writes skip the WAL (faster), and the server empties the
  table after a crash and does not replicate it, which is fine for a cache;
- a get of one key is one primary-key SELECT; of N keys one SELECT over ``unnest``; a set of
  N entries one ``INSERT ... SELECT FROM unnest ... ON CONFLICT DO UPDATE``; concurrent
  ``aget`` calls in one event-loop turn share one SELECT;
- expiry is the server's clock: expired rows are never returned, and are deleted in bounded
  batches (``FOR UPDATE SKIP LOCKED``) by a write at most once a second;
- every call has one deadline, ``max_call_seconds = connect_timeout + timeout`` (0.5 s by
  default: within ``observe``'s deadline, so the stack adds no thread): waiting for a pooled
  connection, connecting (on a helper thread for sync calls: psycopg waits at least 2 s),
  and the statement itself (``statement_timeout`` on the connections this cache makes; the
  client gives up at the deadline in any case, closing that connection and having the server
  cancel the statement, which matters on a user's pool: it has no statement_timeout of ours).
  A connection lost to a restarted server is replaced and the call run again while its
  deadline allows;
- after ``fork()`` the child's pools (those this cache made) start empty: it connects anew
  and never touches its parent's sessions. A pool passed in is its owner's to manage.

Connections from a user's pool are used as they are: statements are prepared per connection
under names starting ``toolkit_`` and run with binary parameters on the libpq connection, so
row factories and the pool's other settings do not matter.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import time
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

from toolkit._types import FullKey, Namespace, SerializerProtocol, ValueT
from toolkit.backends._coalesce import ReadCoalescer
from toolkit.backends._integrity import seal, unseal
from toolkit.base import (
    BaseCache,
    EvictionNotifier,
    check_keys,
    check_namespace,
    check_namespaces,
    check_pairs,
)
from toolkit.errors import BackendError, CacheClosedError, CacheError, CacheTimeoutError
from toolkit.introspect import CacheStats, KeyInfo
from toolkit.lease import LeaseRequest, check_lease

try:
    import psycopg
    import psycopg_pool
    from psycopg.conninfo import conninfo_to_dict, make_conninfo
except ImportError as exc:  # pragma: no cover - exercised only without the extra
    raise ImportError(
        "PostgresCache needs psycopg 3 and psycopg-pool: "
        "pip install 'langgraph-cache-toolkit[postgres]'"
    ) from exc

from toolkit.backends._postgres_conn import (
    AsyncPools,
    CallTimeout,
    ConnectionLost,
    PoolTimeout,
    ServerError,
    SyncPool,
    broken,
    exchange_all,
    prepared_on,
)
from toolkit.backends._postgres_conn import adrive as _adrive
from toolkit.backends._postgres_conn import drive as _drive
from toolkit.backends._postgres_sql import (
    BYTEA_ARRAY,
    DEFAULT_SCHEMA,
    DEFAULT_TABLE,
    FLOAT8_ARRAY,
    MAX_TTL,
    TEXT_ARRAY,
    Param,
    Rows,
    Statement,
    TableSql,
    array,
    decode_namespace,
    encode_namespace,
    float8,
    int8,
    read_float,
    read_int,
)

__all__ = ["DEFAULT_CONNECT_TIMEOUT", "DEFAULT_TIMEOUT", "PostgresCache"]

DEFAULT_CONNECT_TIMEOUT = 0.25
"""Seconds to open a new connection (a call's wait for a pooled one counts against the
call's whole bound, ``max_call_seconds``)."""
DEFAULT_TIMEOUT = 0.25
"""Seconds a statement may run (``statement_timeout``) and the client waits for its answer.

With the connect timeout, a call's bound is 0.5 s: within ``observe``'s default deadline, so
the stack needs no deadline thread nor loop timer."""
ADMIN_TIMEOUT = 60.0
"""Seconds a statement of ``stats``, ``iter_keys``, ``purge_expired`` and ``entry_count`` may
run: they scan the table, off the hot path (a metrics scrape, the ``toolkit`` command)."""
DEFAULT_POOL_SIZE = 10
PURGE_INTERVAL = 1.0
PURGE_BATCH = 500
KEY_PAGE = 1_000

_MISSING: Any = type("Missing", (), {"__repr__": lambda self: "<MISSING>"})()
_TIMEOUT_STATES = {"57014", "55P03"}  # query_canceled (statement_timeout), lock_not_available
_LOST = (ConnectionLost, psycopg.OperationalError, OSError)
_CHECKOUT_TIMEOUTS = (PoolTimeout, psycopg_pool.PoolTimeout, asyncio.TimeoutError, TimeoutError)

Call = tuple[Statement, Sequence[Param]]
_Invalid = list[tuple[FullKey, bytes]]


def _error(exc: BaseException, operation: str) -> CacheError:
    """The ``CacheError`` raised for a failure (the caller chains ``exc``)."""
    timeout = isinstance(exc, (CallTimeout, *_CHECKOUT_TIMEOUTS, psycopg.errors.ConnectionTimeout))
    if isinstance(exc, ServerError) and exc.sqlstate in _TIMEOUT_STATES:
        timeout = True
    kind = CacheTimeoutError if timeout else BackendError
    return kind(f"postgres {operation} failed: {type(exc).__name__}: {exc}")


def _is_async_pool(pool: object) -> bool:
    return isinstance(pool, psycopg_pool.AsyncConnectionPool)


class PostgresCache(EvictionNotifier, BaseCache[ValueT]):
    """PostgreSQL cache: prepared binary statements, batched upserts, exact namespace clears."""

    backend_name = "postgres"

    def __init__(
        self,
        url: str | None = None,
        *,
        pool: Any = None,
        apool: Any = None,
        serde: SerializerProtocol | None = None,
        table: str = DEFAULT_TABLE,
        schema: str = DEFAULT_SCHEMA,
        unlogged: bool = False,
        connect_timeout: float = DEFAULT_CONNECT_TIMEOUT,
        timeout: float = DEFAULT_TIMEOUT,
        pool_size: int = DEFAULT_POOL_SIZE,
    ) -> None:
        """A cache on ``url`` (its own pools), on the user's ``pool``/``apool``, or both.

        A pool passed in serves its side (sync or async); the URL serves the other. The
        table is created on first use.
        """
        super().__init__(serde=serde)
        if pool is not None and _is_async_pool(pool):
            if apool is not None:
                raise TypeError(
                    "pool= is async and apool= is given too: pass the sync one as pool="
                )
            pool, apool = None, pool
        if pool is not None and not isinstance(pool, psycopg_pool.ConnectionPool):
            raise TypeError(
                f"pool must be a psycopg_pool.ConnectionPool, got {type(pool).__name__}"
            )
        if apool is not None and not _is_async_pool(apool):
            raise TypeError(
                f"apool must be a psycopg_pool.AsyncConnectionPool, got {type(apool).__name__}"
            )
        if url is None and pool is None and apool is None:
            raise TypeError("PostgresCache needs a URL, pool=ConnectionPool(...) or both")
        if url is not None and not isinstance(url, str):
            raise TypeError(f"url must be a str, got {type(url).__name__}")
        _check_seconds(connect_timeout, "connect_timeout")
        _check_seconds(timeout, "timeout")
        if isinstance(pool_size, bool) or not isinstance(pool_size, int) or pool_size < 1:
            raise ValueError(f"pool_size must be an int >= 1, got {pool_size!r}")
        self._sql = TableSql(table, schema, unlogged=unlogged)
        self.table = self._sql.table
        self.schema = self._sql.schema
        self.timeout = float(timeout)
        self.connect_timeout = float(connect_timeout)
        self.max_call_seconds: float | None = self.connect_timeout + self.timeout
        """One call's bound: a connection, the statement and any rerun all fit in it."""
        self.pool = pool
        self.apool = apool
        self._url = url
        self._own: SyncPool | None = None
        self._aown: AsyncPools | None = None
        if url is not None:
            conninfo = self._conninfo(url)
            if pool is None:
                self._own = SyncPool(lambda: psycopg.Connection.connect(conninfo), pool_size)
            if apool is None:
                self._aown = AsyncPools(
                    lambda: psycopg.AsyncConnection.connect(conninfo), pool_size
                )
        self.endpoint = _endpoint(url, pool if pool is not None else apool)
        """``host:port/dbname`` of the server, for logs and labels."""
        self._closed = False
        self._reads: ReadCoalescer[ValueT] = ReadCoalescer(_MISSING)
        self._next_purge = 0.0

    @classmethod
    def from_url(cls, url: str, **options: Any) -> PostgresCache[Any]:
        """A cache owning its sync and async pools for ``url``."""
        return cls(url, **options)

    def __repr__(self) -> str:
        state = "closed" if self._closed else "open"
        return f"<PostgresCache {self.endpoint} table={self.schema}.{self.table} {state}>"

    def _conninfo(self, url: str) -> str:
        try:
            options = conninfo_to_dict(url).get("options") or ""
        except psycopg.ProgrammingError as exc:
            raise ValueError(f"not a PostgreSQL URL or conninfo: {exc}") from None
        statement_ms = max(1, round(self.timeout * 1000))
        return make_conninfo(
            url,
            # psycopg waits at least 2 s; the call stops waiting at its own deadline.
            connect_timeout=str(max(2, math.ceil(self.connect_timeout))),
            options=f"{options} -c statement_timeout={statement_ms}".strip(),
            application_name="toolkit-cache",
        )

    # -- reads --

    def get(self, keys: Sequence[FullKey]) -> dict[FullKey, ValueT]:
        """Get the cached values for the given keys."""
        keys = check_keys(keys)
        if not keys:
            return {}
        [rows] = self._run([self._read_call(keys)], "get")
        found, invalid = self._decode(keys, rows)
        if invalid:
            self._drop_invalid(invalid, self._try_run(self._delete_call(invalid)))
        return {k: v for k, v in zip(keys, found, strict=True) if v is not _MISSING}

    async def aget(self, keys: Sequence[FullKey]) -> dict[FullKey, ValueT]:
        """Asynchronously get the cached values for the given keys."""
        keys = check_keys(keys)
        if not keys:
            return {}
        # Concurrent agets (asyncio.gather) share one SELECT.
        return await self._reads.get(keys, self._aget_positions)

    async def _aget_positions(self, keys: list[FullKey]) -> list[Any]:
        [rows] = await self._arun([self._read_call(keys)], "get")
        found, invalid = self._decode(keys, rows)
        if invalid:
            self._drop_invalid(invalid, await self._atry_run(self._delete_call(invalid)))
        return found

    def _read_call(self, keys: Sequence[FullKey]) -> Call:
        if len(keys) == 1:
            ns, key = keys[0]
            return self._sql.get_one, (encode_namespace(ns), key.encode())
        return self._sql.get_many, (
            array(BYTEA_ARRAY, [encode_namespace(ns) for ns, _ in keys]),
            array(BYTEA_ARRAY, [key.encode() for _, key in keys]),
        )

    def _decode(self, keys: Sequence[FullKey], rows: Rows) -> tuple[list[Any], _Invalid]:
        """One value per position of ``keys`` (``_MISSING`` where none) and the undecodable."""
        found: list[Any] = [_MISSING] * len(keys)
        invalid: _Invalid = []
        load = self._load
        if len(keys) == 1:
            positioned = [(0, row[0], row[1]) for row in rows]
        else:
            positioned = [(read_int(row[0]) - 1, row[1], row[2]) for row in rows]
        for at, tag, blob in positioned:
            try:
                found[at] = load(tag, blob)
            except Exception:
                if blob is not None:
                    invalid.append((keys[at], blob))
        return found, invalid

    def _load(self, tag: bytes | None, blob: bytes | None) -> ValueT:
        """Decode a stored row; any failure means the entry is invalid (a miss, then deleted)."""
        if tag is None or blob is None:
            raise ValueError("stored row without tag or value")
        value: ValueT = self.serde.loads_typed((tag.decode(), unseal(blob)))
        return value

    def _delete_call(self, invalid: _Invalid) -> list[Call]:
        return [
            (self._sql.delete_if_same, (encode_namespace(ns), key.encode(), blob))
            for (ns, key), blob in dict(invalid).items()
        ]

    def _drop_invalid(self, invalid: _Invalid, results: list[Rows] | None) -> None:
        if results is not None:
            for (ns, _), _blob in dict(invalid).items():
                self._notify_eviction(ns, "invalid")

    # -- writes --

    def set(self, pairs: Mapping[FullKey, tuple[ValueT, int | None]]) -> None:
        """Set the cached values for the given keys and TTLs."""
        calls = self._write_calls(pairs)
        if calls:
            self._run(calls, "set")
            purge = self._due_purge()
            if purge is not None:
                self._report_purge(self._try_run([purge]))

    async def aset(self, pairs: Mapping[FullKey, tuple[ValueT, int | None]]) -> None:
        """Asynchronously set the cached values for the given keys and TTLs."""
        calls = self._write_calls(pairs)
        if calls:
            await self._arun(calls, "set")
            purge = self._due_purge()
            if purge is not None:
                self._report_purge(await self._atry_run([purge]))

    def _write_calls(self, pairs: Mapping[FullKey, tuple[ValueT, int | None]]) -> list[Call]:
        """Validate and serialize the whole batch: a delete of the refused values' keys and
        one upsert."""
        rows = check_pairs(pairs, self._dumps_sealed, self._refuse)
        if not rows:
            return []
        # A refused value deletes the key: a set replaces, the old value must not stay.
        refused = self._delete_keys_call([key for key, sealed, _ in rows if sealed is None])
        calls: list[Call] = [] if refused is None else [refused]
        encoded = sorted(
            # One order for every writer: concurrent batches lock rows alike, never deadlock.
            (encode_namespace(ns), key.encode(), ttl, sealed[0], sealed[1])
            for (ns, key), sealed, ttl in rows
            if sealed is not None
        )
        if encoded:
            calls.append(self._upsert_call(encoded))
        return calls

    def _due_purge(self) -> Call | None:
        """A purge of expired rows, at most once per ``PURGE_INTERVAL``, run after a write
        on its own: its failure is not the write's (the entries are stored)."""
        now = time.monotonic()
        if now < self._next_purge:
            return None
        # Two threads may both find it due: two purges skip each other's rows (SKIP LOCKED).
        self._next_purge = now + PURGE_INTERVAL
        return self._sql.purge, (int8(PURGE_BATCH),)

    def _upsert_call(self, encoded: list[tuple[bytes, bytes, float | None, bytes, bytes]]) -> Call:
        return (
            self._sql.upsert,
            (
                array(BYTEA_ARRAY, [row[0] for row in encoded]),
                array(BYTEA_ARRAY, [row[1] for row in encoded]),
                array(FLOAT8_ARRAY, [_ttl(row[2]) for row in encoded]),
                array(TEXT_ARRAY, [row[3] for row in encoded]),
                array(BYTEA_ARRAY, [row[4] for row in encoded]),
            ),
        )

    def _dumps_sealed(self, value: Any) -> tuple[bytes, bytes]:
        tag, payload = self.serde.dumps_typed(value)
        return tag.encode(), seal(payload)

    def _report_purge(self, results: list[Rows] | None) -> None:
        if results is None:
            self._next_purge = 0.0  # it failed: the next write tries again
            return
        purged = results[0]
        if len(purged) >= PURGE_BATCH:
            self._next_purge = 0.0  # more are waiting: the next write takes another batch
        self._report_expired(purged)

    def _report_expired(self, purged: Rows) -> None:
        counts: dict[Namespace, int] = {}
        for (stored,) in purged:
            ns = decode_namespace(stored) if stored is not None else None
            if ns is not None:
                counts[ns] = counts.get(ns, 0) + 1
        for ns, count in counts.items():
            self._notify_eviction(ns, "expired", count)

    def delete(self, keys: Sequence[FullKey]) -> None:
        """Delete exactly these keys (an extension: the seed API deletes whole namespaces)."""
        call = self._delete_keys_call(keys)
        if call is not None:
            self._run([call], "delete")

    async def adelete(self, keys: Sequence[FullKey]) -> None:
        """Asynchronously delete exactly these keys."""
        call = self._delete_keys_call(keys)
        if call is not None:
            await self._arun([call], "delete")

    def _delete_keys_call(self, keys: Sequence[FullKey]) -> Call | None:
        unique = list(dict.fromkeys(check_keys(keys)))
        if not unique:
            return None
        return self._sql.delete, (
            array(BYTEA_ARRAY, [encode_namespace(ns) for ns, _ in unique]),
            array(BYTEA_ARRAY, [key.encode() for _, key in unique]),
        )

    # -- leases --

    def lease(self, request: LeaseRequest) -> bool:
        """Take, extend or give back a lease on a key (see ``toolkit.lease``): a row in the
        ``<table>_lease`` table beside the entries, on the server's clock."""
        [rows] = self._run([self._lease_call(request)], "lease")
        return bool(rows)

    async def alease(self, request: LeaseRequest) -> bool:
        """Async twin of :meth:`lease`."""
        [rows] = await self._arun([self._lease_call(request)], "lease")
        return bool(rows)

    def _lease_call(self, request: LeaseRequest) -> Call:
        ns, key = check_lease(request).key
        params = (encode_namespace(ns), key.encode(), request.token.encode(), float8(request.ttl))
        return self._sql.lease[request.action], params

    # -- clear --

    def clear(self, namespaces: Sequence[Namespace] | None = None) -> None:
        """Delete the cached values for the given namespaces.
        If no namespaces are provided, clear all cached values."""
        call = self._clear_call(namespaces)
        if call is not None:
            self._run([call], "clear")

    async def aclear(self, namespaces: Sequence[Namespace] | None = None) -> None:
        """Asynchronously delete the cached values for the given namespaces.
        If no namespaces are provided, clear all cached values."""
        call = self._clear_call(namespaces)
        if call is not None:
            await self._arun([call], "clear")

    def _clear_call(self, namespaces: Sequence[Namespace] | None) -> Call | None:
        namespaces = check_namespaces(namespaces)
        if namespaces is None:
            return self._sql.clear_all, ()
        unique = list(dict.fromkeys(encode_namespace(ns) for ns in namespaces))
        if not unique:
            return None
        return self._sql.clear_namespaces, (array(BYTEA_ARRAY, unique),)

    # -- introspection (SupportsIntrospection; the `toolkit` command's stats and ls) --

    def stats(self) -> CacheStats:
        """Entries, value bytes, expired entries not yet purged, and entries per namespace."""
        [rows] = self._run([(self._sql.tally, ())], "stats", ADMIN_TIMEOUT)
        return CacheStats.tally(
            (
                (
                    decode_namespace(ns) if ns is not None else None,
                    read_int(count),
                    read_int(size),
                    read_int(expired),
                )
                for ns, count, size, expired in rows
            ),
            expires_itself=False,
        )

    def namespaces(self) -> dict[Namespace, int]:
        """Entries per namespace (expired ones not yet purged included)."""
        return self.stats().namespaces

    def iter_keys(self, namespace: Namespace) -> Iterator[KeyInfo]:
        """The live keys of exactly ``namespace`` in key order, read a page at a time."""
        stored = encode_namespace(check_namespace(namespace))
        after: bytes | None = None
        while True:
            params = (stored, after, int8(KEY_PAGE))
            [rows] = self._run([(self._sql.keys_page, params)], "scan", ADMIN_TIMEOUT)
            for key, left in rows:
                if key is not None:
                    yield KeyInfo(key.decode(), read_float(left))
            if len(rows) < KEY_PAGE:
                return
            after = rows[-1][0]

    def purge_expired(self) -> int:
        """Delete every expired entry now, in bounded batches; returns how many went."""
        total = 0
        while True:
            [rows] = self._run([(self._sql.purge, (int8(PURGE_BATCH),))], "purge", ADMIN_TIMEOUT)
            self._report_expired(rows)
            total += len(rows)
            if len(rows) < PURGE_BATCH:
                return total

    def entry_count(self) -> int:
        """Return the number of stored entries (expired ones not yet purged included)."""
        [rows] = self._run([(self._sql.count, ())], "count", ADMIN_TIMEOUT)
        return read_int(rows[0][0])

    # -- I/O: one deadline per call; a lost connection is replaced while time remains --

    def _run(
        self, calls: Sequence[Call], operation: str, timeout: float | None = None
    ) -> list[Rows]:
        """Run ``calls`` on one connection; ``timeout`` replaces the statement timeout."""
        source = self._sync_source()
        statement_ms = None if timeout is None else round(timeout * 1000)
        timeout = self.timeout if timeout is None else timeout
        deadline = time.monotonic() + self.connect_timeout + timeout
        while True:
            try:
                conn = source.getconn(timeout=max(0.0, deadline - time.monotonic()))
            except Exception as exc:
                raise _error(exc, operation) from exc
            try:
                protocol = exchange_all(
                    conn.pgconn, prepared_on(conn), self._sql.create, calls, statement_ms
                )
                return _drive(protocol, conn.pgconn.socket, deadline)
            except ServerError as exc:
                raise _error(exc, operation) from exc.__cause__
            except _LOST as exc:
                broken(conn)
                retry = deadline - time.monotonic() > timeout
                self._discard_idle(source)
                if not retry:
                    raise _error(exc, operation) from exc
            except BaseException as exc:
                broken(conn)
                if isinstance(exc, CallTimeout):
                    raise _error(exc, operation) from exc
                raise
            finally:
                source.putconn(conn)

    async def _arun(self, calls: Sequence[Call], operation: str) -> list[Rows]:
        source = self._async_source()
        deadline = time.monotonic() + self.connect_timeout + self.timeout
        while True:
            try:
                conn = await source.getconn(timeout=max(0.0, deadline - time.monotonic()))
            except Exception as exc:
                raise _error(exc, operation) from exc
            try:
                protocol = exchange_all(conn.pgconn, prepared_on(conn), self._sql.create, calls)
                return await _adrive(protocol, conn.pgconn.socket, deadline)
            except ServerError as exc:
                raise _error(exc, operation) from exc.__cause__
            except _LOST as exc:
                broken(conn)
                retry = deadline - time.monotonic() > self.timeout
                await self._adiscard_idle(source)
                if not retry:
                    raise _error(exc, operation) from exc
            except BaseException as exc:
                broken(conn)
                if isinstance(exc, CallTimeout):
                    raise _error(exc, operation) from exc
                raise
            finally:
                await source.putconn(conn)

    def _try_run(self, calls: Sequence[Call]) -> list[Rows] | None:
        """Best-effort cleanup: ``None`` if it failed (the rows stay until a later read)."""
        try:
            return self._run(calls, "cleanup")
        except CacheError:
            return None

    async def _atry_run(self, calls: Sequence[Call]) -> list[Rows] | None:
        try:
            return await self._arun(calls, "cleanup")
        except CacheError:
            return None

    @staticmethod
    def _discard_idle(source: Any) -> None:
        if isinstance(source, SyncPool):
            source.discard_idle()
        else:
            with contextlib.suppress(Exception):
                source.check()

    @staticmethod
    async def _adiscard_idle(source: Any) -> None:
        if isinstance(source, psycopg_pool.AsyncConnectionPool):
            with contextlib.suppress(Exception):
                await source.check()
        else:
            source.discard_idle()

    def _sync_source(self) -> Any:
        if self._closed:
            raise CacheClosedError("this PostgresCache is closed")
        if self.pool is not None:
            return self.pool
        if self._own is None:
            raise TypeError(
                "this PostgresCache has only an async pool: call aget/aset/aclear, or pass "
                "pool=psycopg_pool.ConnectionPool(...) or a URL too"
            )
        return self._own

    def _async_source(self) -> Any:
        if self._closed:
            raise CacheClosedError("this PostgresCache is closed")
        if self.apool is not None:
            return self.apool
        if self._aown is None:
            raise TypeError(
                "this PostgresCache has only a sync pool: call get/set/clear, or pass "
                "apool=psycopg_pool.AsyncConnectionPool(...) or a URL too"
            )
        return self._aown.for_loop(asyncio.get_running_loop())

    # -- lifecycle --

    def close(self) -> None:
        """Close the connections this cache made; a pool passed in stays open."""
        self._closed = True
        if self._own is not None:
            self._own.close()
        if self._aown is not None:
            self._aown.close()

    async def aclose(self) -> None:
        """Close the connections this cache made (from any event loop)."""
        self.close()


def _ttl(ttl: float | None) -> Param:
    return float8(None if ttl is None or ttl > MAX_TTL else ttl)


def _check_seconds(value: object, what: str) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{what} must be seconds (int or float), got {type(value).__name__}")
    if not 0 < value < math.inf:
        raise ValueError(f"{what} must be a finite number of seconds > 0, got {value!r}")


def _endpoint(url: str | None, pool: Any) -> str:
    conninfo = url if url is not None else getattr(pool, "conninfo", "")
    try:
        params = conninfo_to_dict(conninfo or "")
    except psycopg.ProgrammingError:
        return "?"
    host = params.get("host") or "localhost"
    port = params.get("port") or "5432"
    return f"{host}:{port}/{params.get('dbname') or params.get('user') or ''}"
