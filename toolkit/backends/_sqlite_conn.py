"""SqliteCache's connections: sqlite3 for sync calls, aiosqlite for async ones; fork- and exit-safe.

One sqlite3 connection serves every thread behind a lock, one aiosqlite connection (its own
daemon thread) serves every event loop. Only the I/O lives here, written twice side by side
(``run`` / ``arun``); what to execute is decided by the caller.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import sqlite3
import threading
import time
import weakref
from collections.abc import AsyncIterator, Sequence
from typing import Any, cast

import aiosqlite

from toolkit.backends._sqlite_sql import Row, Statement
from toolkit.errors import BackendError, CacheClosedError

__all__ = ["AsyncMutex", "Connections"]

# Connections inherited across fork(): the child must neither use nor close them (closing one
# may checkpoint the parent's WAL or drop its locks), so they stay referenced here for good.
_INHERITED: list[object] = []

_BEGIN: Statement = ("BEGIN IMMEDIATE", ())
_COMMIT: Statement = ("COMMIT", ())
# Shared-cache (":memory:") table locks fail at once with SQLITE_LOCKED: busy_timeout does
# not wait on them, so the caller retries until the timeout.
_SQLITE_LOCKED = 6
_FIRST_RETRY_DELAY = 0.0005
_MAX_RETRY_DELAY = 0.05


def _framed(statements: Sequence[Statement], atomic: bool) -> tuple[list[Statement], bool]:
    """Wrap several statements in one write transaction when they must apply together."""
    if atomic and len(statements) > 1:
        return [_BEGIN, *statements, _COMMIT], True
    return list(statements), False


def _retry_delay(exc: Exception, attempt: int, deadline: float) -> float | None:
    """Seconds to wait before retrying a table-lock conflict; ``None`` when it is final."""
    code = getattr(exc, "sqlite_errorcode", None)  # Python >= 3.11
    if code is not None:
        locked = code & 0xFF == _SQLITE_LOCKED
    else:
        locked = "table is locked" in str(exc) or "schema is locked" in str(exc)
    remaining = deadline - time.monotonic()
    if not locked or remaining <= 0:
        return None
    return min(_FIRST_RETRY_DELAY * (1 << attempt), _MAX_RETRY_DELAY, remaining)


def _daemonize(conn: aiosqlite.Connection) -> None:
    # aiosqlite's worker thread is not a daemon: an unclosed connection would keep the
    # interpreter from exiting. (aiosqlite < 0.21 made the connection itself the thread.)
    thread = conn if isinstance(conn, threading.Thread) else getattr(conn, "_thread", None)
    if isinstance(thread, threading.Thread) and not thread.is_alive():
        thread.daemon = True


class AsyncMutex:
    """Mutual exclusion for coroutines of any event loop, never blocking a loop."""

    def __init__(self) -> None:
        self._held = threading.Lock()
        self._queues: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, asyncio.Lock] = (
            weakref.WeakKeyDictionary()
        )

    @contextlib.asynccontextmanager
    async def hold(self) -> AsyncIterator[None]:
        """Hold the mutex for the body of an ``async with``."""
        loop = asyncio.get_running_loop()
        queue = self._queues.get(loop)
        if queue is None:
            queue = self._queues.setdefault(loop, asyncio.Lock())
        async with queue:
            delay = _FIRST_RETRY_DELAY
            # Only a coroutine of another loop (another thread) can hold it now: poll briefly.
            while not self._held.acquire(blocking=False):
                await asyncio.sleep(delay)
                delay = min(delay * 2, _MAX_RETRY_DELAY)
            try:
                yield
            finally:
                self._held.release()


class Connections:
    """The connections of one SqliteCache, reopened after ``fork()`` and closed exactly once."""

    variable_limit: int | None = None
    """SQLite's limit on ``?`` parameters per statement, once a connection has reported it."""

    def __init__(
        self, *, database: str, uri: bool, busy_timeout: float, pragmas: Sequence[str]
    ) -> None:
        """Describe how to connect; nothing opens until :meth:`open_sync` or first use."""
        self.database = database
        self.uri = uri
        self.busy_timeout = busy_timeout
        self.pragmas = tuple(pragmas)
        self.closed = False
        self._guard = threading.Lock()  # protects the fields below; never held during I/O
        self._reset()

    def _reset(self) -> None:
        self.pid = os.getpid()
        self._lock = threading.Lock()  # serializes use of the sync connection
        self._sync: sqlite3.Connection | None = None
        self._aio: aiosqlite.Connection | None = None
        self._aio_opening: asyncio.Task[aiosqlite.Connection] | None = None
        self._writes = AsyncMutex()

    def _connect_kwargs(self) -> dict[str, Any]:
        return {
            "uri": self.uri,
            "timeout": self.busy_timeout,
            "isolation_level": None,  # autocommit; multi-statement writes BEGIN explicitly
            "check_same_thread": False,
            "cached_statements": 256,
        }

    def _check(self) -> None:
        if self.pid != os.getpid():
            self._after_fork()
        if self.closed:
            raise CacheClosedError("SqliteCache is closed")

    def _after_fork(self) -> None:
        with self._guard:
            if self.pid == os.getpid():
                return
            _INHERITED.extend(c for c in (self._sync, self._aio, self._aio_opening) if c)
            self._guard = threading.Lock()
            self._reset()

    # -- sync I/O --

    def open_sync(self, setup: Sequence[str] = ()) -> sqlite3.Connection:
        """Open the sync connection now (running ``setup`` once), or return the open one."""
        self._check()
        with self._lock:
            return self._sync_connection(setup)

    def _sync_connection(self, setup: Sequence[str] = ()) -> sqlite3.Connection:
        conn = self._sync
        if conn is None:
            try:
                conn = sqlite3.connect(self.database, **self._connect_kwargs())
            except sqlite3.Error as exc:
                raise BackendError(f"cannot open SQLite database {self.database!r}: {exc}") from exc
            try:
                for sql in (*self.pragmas, *setup):
                    conn.execute(sql).fetchall()
                limit = getattr(conn, "getlimit", None)  # Python >= 3.11
                self.variable_limit = limit(sqlite3.SQLITE_LIMIT_VARIABLE_NUMBER) if limit else None
            except sqlite3.Error as exc:
                conn.close()
                raise BackendError(
                    f"cannot set up SQLite database {self.database!r}: {exc}"
                ) from exc
            self._sync = conn
        return conn

    def run(
        self, statements: Sequence[Statement], *, atomic: bool = False, write: bool = False
    ) -> list[list[Row]]:
        """Execute statements on the sync connection; one transaction if ``atomic``."""
        del write  # the sync lock already serializes every statement
        framed, in_transaction = _framed(statements, atomic)
        deadline = time.monotonic() + self.busy_timeout
        attempt = 0
        while True:
            self._check()
            with self._lock:
                if self.closed:
                    raise CacheClosedError("SqliteCache is closed")
                conn = self._sync_connection()
                try:
                    results = [conn.execute(sql, params).fetchall() for sql, params in framed]
                except BaseException as exc:
                    if in_transaction and conn.in_transaction:
                        with contextlib.suppress(sqlite3.Error):
                            conn.rollback()
                    if not isinstance(exc, sqlite3.Error):
                        raise
                    error = exc
                else:
                    return results[1:-1] if in_transaction else results
            delay = _retry_delay(error, attempt, deadline)
            if delay is None:
                raise self._failure(error) from error
            attempt += 1
            time.sleep(delay)

    # -- async I/O --

    async def _aconnection(self) -> aiosqlite.Connection:
        self._check()
        conn = self._aio
        if conn is not None:
            return conn
        loop = asyncio.get_running_loop()
        with self._guard:
            opening = self._aio_opening
            if opening is None or opening.get_loop() is not loop:
                opening = self._aio_opening = loop.create_task(self._aopen())
        return await asyncio.shield(opening)

    async def _aopen(self) -> aiosqlite.Connection:
        conn = aiosqlite.connect(self.database, **self._connect_kwargs())
        _daemonize(conn)
        try:
            await conn
            for sql in self.pragmas:
                await conn.execute_fetchall(sql)
        except BaseException as exc:
            with self._guard:
                self._aio_opening = None
            await conn.close()
            if isinstance(exc, sqlite3.Error):
                raise BackendError(f"cannot open SQLite database {self.database!r}: {exc}") from exc
            raise
        with self._guard:
            self._aio_opening = None
            winner = self._aio if not self.closed else None
            if winner is None and not self.closed:
                self._aio = winner = conn
        if winner is not conn:  # closed meanwhile, or another event loop opened one first
            await conn.close()
        if winner is None:
            raise CacheClosedError("SqliteCache is closed")
        return winner

    async def arun(
        self, statements: Sequence[Statement], *, atomic: bool = False, write: bool = False
    ) -> list[list[Row]]:
        """Execute statements on the aiosqlite connection; one transaction if ``atomic``."""
        framed, in_transaction = _framed(statements, atomic)
        deadline = time.monotonic() + self.busy_timeout
        attempt = 0
        while True:
            conn = await self._aconnection()
            async with self._writes.hold() if write else contextlib.nullcontext():
                try:
                    results = [await conn.execute_fetchall(sql, params) for sql, params in framed]
                except BaseException as exc:
                    if in_transaction:
                        # Enqueued before the mutex is released, so it runs before any later
                        # transaction even if this task is being cancelled.
                        with contextlib.suppress(sqlite3.Error, ValueError):
                            await conn.rollback()
                    # aiosqlite reports its own state (e.g. a closed connection) as ValueError.
                    if not isinstance(exc, (sqlite3.Error, ValueError)):
                        raise
                    error = exc
                else:
                    # execute_fetchall returns lists of plain tuples (no row factory is set)
                    rows = cast("list[list[Row]]", results)
                    return rows[1:-1] if in_transaction else rows
            delay = _retry_delay(error, attempt, deadline)
            if delay is None:
                raise self._failure(error) from error
            attempt += 1
            await asyncio.sleep(delay)

    def _failure(self, exc: BaseException) -> CacheClosedError | BackendError:
        if self.closed:
            return CacheClosedError("SqliteCache is closed")
        return BackendError(f"SQLite {type(exc).__name__}: {exc}")

    # -- closing --

    def _detach(self) -> tuple[sqlite3.Connection | None, aiosqlite.Connection | None] | None:
        with self._guard:
            if self.closed:
                return None
            self.closed = True
            if self.pid != os.getpid():
                return None  # a forked child never touches its parent's connections
            conns, self._sync, self._aio = (self._sync, self._aio), None, None
            return conns

    def close(self) -> None:
        """Close both connections; idempotent, callable from any thread or at exit."""
        conns = self._detach()
        if conns is None:
            return
        sync, aio = conns
        if sync is not None:
            with self._lock:
                sync.close()
        if aio is not None:
            _close_aio_blocking(aio)

    async def aclose(self) -> None:
        """Close both connections without blocking the event loop; idempotent."""
        conns = self._detach()
        if conns is None:
            return
        sync, aio = conns
        if aio is not None:
            await aio.close()
        if sync is not None:
            await asyncio.to_thread(self._close_sync, sync)

    def _close_sync(self, conn: sqlite3.Connection) -> None:
        with self._lock:
            conn.close()


def _close_aio_blocking(conn: aiosqlite.Connection) -> None:
    """Close an aiosqlite connection from sync code, whether or not a loop runs here."""

    def close_on_fresh_loop() -> None:
        loop = asyncio.new_event_loop()
        try:
            loop.run_until_complete(conn.close())
        finally:
            loop.close()

    try:
        asyncio.get_running_loop()
    except RuntimeError:
        close_on_fresh_loop()  # no loop here (plain sync code, or interpreter exit)
        return
    # A loop runs in this thread and must not be re-entered: close from a helper thread.
    helper = threading.Thread(target=close_on_fresh_loop, name="toolkit-sqlite-close")
    helper.start()
    helper.join()
