"""SqliteCache's connections: sqlite3 for every call, async calls run on the cache's threads.

Writes take one connection, serving every thread behind its own lock; reads take a pool of
them, so threads read side by side. An async call runs whole (its statements, retries and
commit) on one of the cache's worker threads, the loop awaiting only its result: reads on
as many threads as the pool has connections, writes on one thread, one at a time. A caller
that stops waiting (cancelled, or its loop closed) cannot stop a transaction half done: the
thread finishes it, commit or rollback, and the connection stays usable. Only the I/O lives
here; what to execute is decided by the caller.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import sqlite3
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from typing import Any, TypeVar

from toolkit._fork import ForkSafeLock
from toolkit.backends._sqlite_sql import Row, Statement
from toolkit.errors import BackendError, CacheClosedError, CacheTimeoutError

__all__ = ["Connections"]

_T = TypeVar("_T")
_log = logging.getLogger("toolkit.backends.sqlite")

# Connections inherited across fork(): the child must neither use nor close them (closing one
# may checkpoint the parent's WAL or drop its locks), so they stay referenced here for good.
_INHERITED: list[object] = []

_forks = 0
"""How many forks led to this process: connections opened under another count are inherited."""


def _count_fork() -> None:
    global _forks
    _forks += 1


# Counted at fork and compared per call: cheaper than a getpid() system call per call.
os.register_at_fork(after_in_child=_count_fork)

_BEGIN: Statement = ("BEGIN IMMEDIATE", ())
_COMMIT: Statement = ("COMMIT", ())
# Shared-cache (":memory:") table locks fail at once with SQLITE_LOCKED: busy_timeout does
# not wait on them, so the caller retries until the timeout.
_SQLITE_LOCKED = 6
_NO_WAIT = "PRAGMA busy_timeout = 0"
_FIRST_RETRY_DELAY = 0.0005
_MAX_RETRY_DELAY = 0.05
_STATEMENT_MARGIN = 0.05
_LOOK_SECONDS = 1.0
"""How often calls look whether the database file was deleted or replaced (a stat)."""


class _Moved(sqlite3.Error):
    """The connection a call took was retired (its file was deleted or replaced): retry at
    once on the current one."""


def _missing_table(exc: Exception) -> bool:
    """Whether SQLite reports a table of the cache missing (dropped, or a new empty file)."""
    return isinstance(exc, sqlite3.OperationalError) and "no such table" in str(exc)


def _identity(file: str) -> tuple[int, int] | None:
    """Which file ``file`` names now (device, inode); ``None`` if none."""
    try:
        found = os.stat(file)
    except OSError:
        return None
    return found.st_dev, found.st_ino


def _framed(statements: Sequence[Statement], atomic: bool) -> tuple[Sequence[Statement], bool]:
    """Wrap several statements in one write transaction when they must apply together."""
    if atomic and len(statements) > 1:
        return [_BEGIN, *statements, _COMMIT], True
    return statements, False


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


class _Reader:
    """One sync read connection of the pool, and the lock that lends it to one call."""

    __slots__ = ("conn", "lock")

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.conn: sqlite3.Connection | None = None


class _ReadPool:
    """The sync read connections: a call takes a free one (opened on first use), so threads
    read side by side (SQLite's WAL lets them) instead of queueing for one connection, and a
    thread stalled mid-read holds up only the calls queued on its connection. Each is lent
    under a plain lock, so a call that finds none free waits on one of them (picked by its
    thread, to spread the waiters) with the lock's own fast hand-off."""

    def __init__(self, size: int) -> None:
        self.closed = False
        self._readers = [_Reader() for _ in range(size)]

    def take(self, open_one: Callable[[], sqlite3.Connection], deadline: float) -> _Reader | None:
        """A reader, its lock held (its connection opened, unless the pool is closed);
        ``None`` if none was free until ``deadline``."""
        for reader in self._readers:
            if reader.lock.acquire(False):  # positional: keyword parsing costs a third of it
                break
        else:
            reader = self._readers[threading.get_ident() % len(self._readers)]
            if not reader.lock.acquire(timeout=max(0.0, deadline - time.monotonic())):
                return None
        if reader.conn is None and not self.closed:
            try:
                reader.conn = open_one()  # opening is not waiting (see Connections.run)
            except BaseException:
                reader.lock.release()
                raise
        return reader

    def close(self) -> None:
        """Close every connection, each once no call is using it."""
        self.closed = True
        for reader in self._readers:
            with reader.lock:
                conn, reader.conn = reader.conn, None
            if conn is not None:
                conn.close()

    def idle(self) -> list[sqlite3.Connection]:
        """The open connections (a forked child inherits them, and must neither use nor
        close them)."""
        return [reader.conn for reader in self._readers if reader.conn is not None]


def _reader_count() -> int:
    """Sync read connections per cache: one per core this process may run on, 2 to 8.

    Each lets one more thread run SQLite outside the GIL at once. Past the cores they only add
    threads contending for the GIL: on 2 cores, 4 threads ran 27k calls/s on 2 readers and 18k
    on 4. Each also holds a file handle and its own page cache.
    """
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not on every platform
        cores = os.cpu_count() or 2
    return max(2, min(8, cores))


_READERS = _reader_count()


class _Path:
    """The write connection, the lock that lends it to one call, and the lock that opens it."""

    def __init__(self, pragmas: Sequence[str]) -> None:
        self.pragmas = tuple(pragmas)
        self.lock = threading.Lock()  # serializes use of the connection
        self.opening = threading.Lock()  # serializes opening it
        self.sync: sqlite3.Connection | None = None
        self.retired = False  # its file was deleted or replaced: calls move to a new _Path

    def detach(self) -> sqlite3.Connection | None:
        conn, self.sync = self.sync, None
        return conn


class Connections:
    """The connections of one SqliteCache, reopened after ``fork()`` and closed exactly once.

    Reads and writes take separate connections (and, for async calls, separate threads): a
    write waiting for another process's lock never delays a read, which WAL serves from the
    last committed snapshot.

    A database file deleted or replaced under an open connection is no longer the one other
    processes use: this process would keep reading its own entries, and never see their
    writes or clears. So calls look at the file at most once a ``_LOOK_SECONDS``, and move
    to new connections when it changed (the old ones close once idle); a missing table
    (dropped, or a new empty file) is created again, once per call, from the setup given to
    :meth:`open_sync`.
    """

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
        self._file = None if uri else database  # a URI is a private in-memory database
        self._setup: list[Statement] = []  # runs again where a table turns out missing
        self._opened: tuple[int, int] | None = None  # the file the connections opened
        self._next_look = 0.0
        # Protects the fields below; never held during I/O. Fork-safe: a forked child takes
        # it first thing (_after_fork), and a parent thread caught holding it is not there.
        self._guard = ForkSafeLock()
        self._reset()

    def _reset(self) -> None:
        self._forks = _forks
        # A thread per read connection; writes run one at a time anyway, on one thread.
        self._read_threads = ThreadPoolExecutor(_READERS, "toolkit-sqlite-read")
        self._write_thread = ThreadPoolExecutor(1, "toolkit-sqlite-write")
        self._renew()

    def _renew(self) -> None:
        """New, unopened connections (and their locks) for every later call."""
        # query_only: a read connection that tried to write would wait on the write lock.
        self._read_pragmas = (*self.pragmas, "PRAGMA query_only = 1")
        self._writer = _Path(self.pragmas)
        self._reads = _ReadPool(_READERS)

    def _connect_kwargs(self) -> dict[str, Any]:
        return {
            "uri": self.uri,
            "timeout": self.busy_timeout,
            "isolation_level": None,  # autocommit; multi-statement writes BEGIN explicitly
            "check_same_thread": False,
            "cached_statements": 256,
        }

    def _check(self) -> None:
        if self._forks != _forks:
            self._after_fork()
        if self.closed:
            raise CacheClosedError("SqliteCache is closed")
        if self._opened is not None and time.monotonic() >= self._next_look:
            self._look_at_file()

    def _opened_file(self) -> None:
        """Note which file a new connection opened (the first one since the last move)."""
        if self._file is not None and self._opened is None:
            with self._guard:
                if self._opened is None:
                    self._opened = _identity(self._file)
                    self._next_look = time.monotonic() + _LOOK_SECONDS

    def _look_at_file(self) -> None:
        """Move to new connections if the database file was deleted or replaced."""
        assert self._file is not None
        with self._guard:
            now = time.monotonic()
            if self._opened is None or now < self._next_look:
                return  # another call just looked
            self._next_look = now + _LOOK_SECONDS
            if _identity(self._file) == self._opened or self.closed:
                return
            self._opened = None
            retired = self._reads, self._writer, self._detach_writer()
            self._renew()
        _log.warning("SQLite database %r was deleted or replaced: reopening it", self._file)
        threading.Thread(
            target=_close_all, args=retired, name="toolkit-sqlite-retire", daemon=True
        ).start()

    def _detach_writer(self) -> sqlite3.Connection | None:
        """Take the write connection off its path, which no call will open again; under _guard."""
        self._writer.retired = True
        return self._writer.detach()

    def _after_fork(self) -> None:
        with self._guard:
            if self._forks == _forks:
                return
            _INHERITED.extend(c for c in (self._writer.sync, *self._reads.idle()) if c)
            self._reset()

    # -- sync I/O --

    def open_sync(self, setup: Sequence[str] = ()) -> sqlite3.Connection:
        """Open the sync write connection now (running ``setup`` once), or return the open one.

        ``setup`` is kept: it runs again where a table turns out missing."""
        self._setup = [(sql, ()) for sql in setup]
        self._check()
        with self._writer.lock:
            return self._sync_connection(self._writer, setup)

    def _sync_connection(self, path: _Path, setup: Sequence[str] = ()) -> sqlite3.Connection:
        conn = path.sync
        if conn is not None:
            return conn
        with path.opening:
            return self._open_sync(path, setup)

    def _open_sync(self, path: _Path, setup: Sequence[str]) -> sqlite3.Connection:
        conn = path.sync
        if conn is None:
            if path.retired:  # under path.lock: a retired path's connection stays closed
                raise _Moved()
            conn = self._connect(path.pragmas, setup)
            path.sync = conn
        return conn

    def _connect(self, pragmas: Sequence[str], setup: Sequence[str] = ()) -> sqlite3.Connection:
        """A new sync connection with its pragmas (and ``setup``) run."""
        try:
            conn: sqlite3.Connection = sqlite3.connect(self.database, **self._connect_kwargs())
        except sqlite3.Error as exc:
            raise BackendError(f"cannot open SQLite database {self.database!r}: {exc}") from exc
        try:
            for sql in (*pragmas, *setup):
                conn.execute(sql).fetchall()
            limit = getattr(conn, "getlimit", None)  # Python >= 3.11
            self.variable_limit = limit(sqlite3.SQLITE_LIMIT_VARIABLE_NUMBER) if limit else None
        except sqlite3.Error as exc:
            conn.close()
            raise BackendError(f"cannot set up SQLite database {self.database!r}: {exc}") from exc
        self._opened_file()
        return conn

    def _open_reader(self) -> sqlite3.Connection:
        return self._connect(self._read_pragmas)

    def _read_once(
        self, framed: Sequence[Statement], in_transaction: bool, deadline: float
    ) -> list[list[Row]] | sqlite3.Error:
        """One try on a pooled read connection (see ``_ReadPool``): the rows, or the error."""
        reader = self._reads.take(self._open_reader, deadline)
        if reader is None:
            raise CacheTimeoutError(
                f"SQLite {self.database!r}: waited busy_timeout ({self.busy_timeout:g}s) "
                "for a read connection"
            )
        try:
            if self.closed:
                raise CacheClosedError("SqliteCache is closed")
            if reader.conn is None:  # its pool closed: retired, as the cache is not closed
                return _Moved()
            return _execute(reader.conn, framed, in_transaction)
        except sqlite3.Error as exc:
            return exc
        finally:
            reader.lock.release()

    def _write_once(
        self, framed: Sequence[Statement], in_transaction: bool, deadline: float
    ) -> list[list[Row]] | sqlite3.Error:
        """One try on the write connection, waiting for its turn: the rows, or the error."""
        path = self._writer
        turn_deadline = deadline + self.busy_timeout  # see _turn_wait
        if not path.lock.acquire(timeout=max(0.0, turn_deadline - time.monotonic())):
            raise self._no_turn()
        try:
            if self.closed:
                raise CacheClosedError("SqliteCache is closed")
            conn = self._sync_connection(path)
            wait = self._turn_wait(turn_deadline)
            if wait is None:
                return _execute(conn, framed, in_transaction)
            return _execute_waiting(conn, framed, in_transaction, wait, self._waiting())
        except sqlite3.Error as exc:
            return exc
        finally:
            path.lock.release()

    def _turn_wait(self, turn_deadline: float) -> str | None:
        """The busy_timeout pragma for a write whose turn came late, or ``None`` if on time.

        A write's turn on the connection and SQLite's own busy wait share one budget, twice
        ``busy_timeout`` (see :attr:`max_call_seconds`): a writer queued behind a slow commit
        (a checkpoint's fsync) may wait for its turn past ``busy_timeout``, and SQLite then
        waits only for what is left, so the call still ends within the budget.
        """
        left = turn_deadline - time.monotonic()
        return None if left >= self.busy_timeout else self._waiting(max(0.0, left))

    def _no_turn(self) -> CacheTimeoutError:
        return CacheTimeoutError(
            f"SQLite {self.database!r}: waited {2 * self.busy_timeout:g}s (twice busy_timeout) "
            "for the write connection"
        )

    def run(
        self,
        statements: Sequence[Statement],
        *,
        atomic: bool = False,
        write: bool = False,
        since: float | None = None,
    ) -> list[list[Row]]:
        """Run statements on a read or the write connection; one transaction if ``atomic``.

        The wait is bounded from ``since`` (a ``time.monotonic()``; default now): an async
        call counts the time it queued for a worker thread.
        """
        framed, in_transaction = _framed(statements, atomic)
        if write and self._writer.sync is None:
            # Opening is not waiting: SQLite's busy handler bounds its locks, and a slow
            # machine's first call must not time out on the work of opening itself.
            self._check()
            with contextlib.suppress(_Moved):  # retired meanwhile: the loop opens the new one
                self._sync_connection(self._writer)
            since = None
        once = self._write_once if write else self._read_once
        deadline = (time.monotonic() if since is None else since) + self.busy_timeout
        attempt = 0
        recreated = False
        while True:
            self._check()
            try:
                found = once(framed, in_transaction, deadline)
            except _Moved as exc:
                found = exc
            if not isinstance(found, sqlite3.Error):
                return found
            if isinstance(found, _Moved):
                continue
            if _missing_table(found) and not recreated and self._setup:
                recreated = True
                self.run(self._setup, write=True)
                continue
            delay = _retry_delay(found, attempt, deadline)
            if delay is None:
                raise self._failure(found) from found
            attempt += 1
            time.sleep(delay)

    def try_write(self, statements: Sequence[Statement]) -> list[list[Row]] | None:
        """Run one write transaction only if it need not wait; ``None`` when it did not run.

        For deletions a read discovers: a read must never wait on the write lock.
        """
        self._check()
        path = self._writer
        if not path.lock.acquire(blocking=False):
            return None
        try:
            if self.closed:
                return None
            conn = self._sync_connection(path)
            framed, in_transaction = _framed(statements, True)
            return _execute_waiting(conn, framed, in_transaction, _NO_WAIT, self._waiting())
        except (sqlite3.Error, BackendError):
            return None  # it stays stored; the next read or the purge deletes it
        finally:
            path.lock.release()

    @property
    def max_call_seconds(self) -> float:
        """The longest one call can take once its connections are open: the wait for the
        connection and SQLite's own busy wait (at most twice ``busy_timeout`` together, see
        ``_turn_wait``), and a margin for the statements themselves."""
        return 2 * self.busy_timeout + _STATEMENT_MARGIN

    def _waiting(self, seconds: float | None = None) -> str:
        wait = self.busy_timeout if seconds is None else seconds
        return f"PRAGMA busy_timeout = {round(wait * 1000)}"

    # -- async I/O: the sync calls, run on the cache's threads --

    async def arun(
        self, statements: Sequence[Statement], *, atomic: bool = False, write: bool = False
    ) -> list[list[Row]]:
        """Async twin of :meth:`run`, on a read thread or the write thread."""
        call = partial(self.run, statements, atomic=atomic, write=write, since=time.monotonic())
        return await self._in_thread(write, call)

    async def atry_write(self, statements: Sequence[Statement]) -> list[list[Row]] | None:
        """Async twin of :meth:`try_write`; on a read thread, as it never waits."""
        return await self._in_thread(False, partial(self.try_write, statements))

    async def _in_thread(self, write: bool, call: Callable[[], _T]) -> _T:
        """Run ``call`` on the write thread or a read thread, and await its result.

        Once started, the thread runs it to the end whether or not anyone still awaits it;
        a call cancelled while still queued never starts.
        """
        if self._forks != _forks:
            self._after_fork()
        if self.closed:
            raise CacheClosedError("SqliteCache is closed")
        threads = self._write_thread if write else self._read_threads
        try:
            done = asyncio.get_running_loop().run_in_executor(threads, call)
        except RuntimeError as exc:  # shut down: closed meanwhile, or the interpreter exits
            raise CacheClosedError("SqliteCache is closed") from exc
        return await done

    def _failure(self, exc: BaseException) -> CacheClosedError | BackendError:
        if self.closed:
            return CacheClosedError("SqliteCache is closed")
        return BackendError(f"SQLite {type(exc).__name__}: {exc}")

    # -- closing --

    def _detach(self) -> tuple[_ReadPool, _Path, sqlite3.Connection | None] | None:
        with self._guard:
            if self.closed:
                return None
            self.closed = True
            if self._forks != _forks:
                return None  # a forked child never touches its parent's connections
            # Later async calls are refused; the ones queued run and find the cache closed.
            self._read_threads.shutdown(wait=False)
            self._write_thread.shutdown(wait=False)
            return self._reads, self._writer, self._detach_writer()

    def close(self) -> None:
        """Close every connection; idempotent, callable from any thread or at exit."""
        detached = self._detach()
        if detached is not None:
            _close_all(*detached)

    async def aclose(self) -> None:
        """Close every connection without blocking the event loop; idempotent."""
        await asyncio.to_thread(self.close)


def _execute(
    conn: sqlite3.Connection, framed: Sequence[Statement], in_transaction: bool
) -> list[list[Row]]:
    """Run framed statements on a connection, rolling back a transaction that failed."""
    try:
        results = [conn.execute(sql, params).fetchall() for sql, params in framed]
    except BaseException:
        if in_transaction and conn.in_transaction:
            with contextlib.suppress(sqlite3.Error):
                conn.rollback()
        raise
    return results[1:-1] if in_transaction else results


def _execute_waiting(
    conn: sqlite3.Connection,
    framed: Sequence[Statement],
    in_transaction: bool,
    wait: str,
    restore: str,
) -> list[list[Row]]:
    """:func:`_execute` with SQLite's busy wait set to ``wait`` for these statements only."""
    conn.execute(wait).fetchall()
    try:
        return _execute(conn, framed, in_transaction)
    finally:
        conn.execute(restore).fetchall()


def _close_all(pool: _ReadPool, writer: _Path, conn: sqlite3.Connection | None) -> None:
    """Close a read pool and a detached write connection, each once no call is using it."""
    pool.close()
    if conn is not None:
        with writer.lock:
            conn.close()
