"""PostgresCache's connections: where they come from, and one protocol both I/O styles drive.

The exchange with the server is written once, as a generator that says when it must wait for
the socket (``READ``/``WRITE``); the sync driver waits with ``poll`` and the async one with the
event loop's readers, both against one deadline per call. It talks to libpq through psycopg's
public ``Connection.pgconn`` with named prepared statements, binary in and out, so it needs
nothing of a connection's row factory or transaction settings (a LangGraph checkpointer's pool
has ``dict_row`` connections: they serve as well).

Connections come from a pool: the user's ``psycopg_pool.ConnectionPool`` /
``AsyncConnectionPool``, or pools this module makes from a URL (one per event loop for async
calls: an asyncio connection belongs to the loop it was made in). After ``fork()`` the child's
pools start empty: it never uses nor closes a connection it inherited (closing one would end
the parent's session too; psycopg does not close it when collected in another process).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import os
import queue
import select
import threading
import time
import weakref
from collections.abc import Callable, Generator, Sequence
from typing import Any, TypeVar

import psycopg
from psycopg import pq

from toolkit._loops import forget_closed
from toolkit.backends._postgres_sql import Param, Rows, Statement

__all__ = [
    "AsyncPools",
    "CallTimeout",
    "ConnectionLost",
    "ServerError",
    "SyncPool",
    "exchange_all",
]

READ, WRITE = 1, 2
T = TypeVar("T")
Protocol = Generator[int, None, T]

_UNDEFINED = {"42P01", "3F000"}
"""undefined_table, invalid_schema_name: the table is created, then the call runs again."""
_NO_STATEMENT = "26000"
"""invalid_sql_statement_name: the connection forgot our statements (DISCARD ALL, a reset)."""
_TRANSIENT = {"40P01", "40001"}
"""deadlock_detected, serialization_failure: nothing was written; the call runs again."""
_TRANSIENT_TRIES = 5


class ServerError(Exception):
    """The server refused a statement; ``sqlstate`` says why, ``__cause__`` is psycopg's error."""

    def __init__(self, sqlstate: str, message: str) -> None:
        super().__init__(f"{sqlstate}: {message}")
        self.sqlstate = sqlstate


class ConnectionLost(Exception):
    """The connection broke during a call (the server restarted or went away)."""


class CallTimeout(Exception):
    """The call's deadline passed before the server answered."""


def _psycopg_error(sqlstate: str, message: str) -> Exception:
    try:
        kind: type[Exception] = psycopg.errors.lookup(sqlstate)
    except KeyError:
        kind = psycopg.DatabaseError
    return kind(message)


def _exchange(pgconn: pq.abc.PGconn) -> Protocol[list[pq.abc.PGresult]]:
    """Send what libpq holds and collect every result of the command."""
    while pgconn.flush():
        yield WRITE
    results: list[pq.abc.PGresult] = []
    while True:
        pgconn.consume_input()
        while not pgconn.is_busy():
            result = pgconn.get_result()
            if result is None:
                return results
            results.append(result)
        yield READ


def _checked(results: list[pq.abc.PGresult], pgconn: pq.abc.PGconn) -> pq.abc.PGresult:
    """The last result, or ``ServerError`` for the first failed one."""
    for result in results:
        if result.status == pq.ExecStatus.FATAL_ERROR:
            raw_state = result.error_field(pq.DiagnosticField.SQLSTATE) or b""
            sqlstate = raw_state.decode()
            message = result.error_message.decode(errors="replace").strip()
            error = ServerError(sqlstate, message)
            error.__cause__ = _psycopg_error(sqlstate, message)
            raise error
    if not results:
        raise ConnectionLost(pgconn.get_error_message() or "no result from the server")
    return results[-1]


def _rows(result: pq.abc.PGresult) -> Rows:
    fields = range(result.nfields)
    value = result.get_value
    return [[value(row, col) for col in fields] for row in range(result.ntuples)]


def _call(
    pgconn: pq.abc.PGconn, prepared: set[bytes], statement: Statement, params: Sequence[Param]
) -> Protocol[Rows]:
    """Run one prepared statement (preparing it on this connection first if needed)."""
    for _ in range(2):
        if statement.name not in prepared:
            pgconn.send_prepare(statement.name, statement.sql, param_types=statement.types)
            _checked((yield from _exchange(pgconn)), pgconn)
            prepared.add(statement.name)
        pgconn.send_query_prepared(
            statement.name, params, param_formats=[1] * len(params), result_format=1
        )
        try:
            return _rows(_checked((yield from _exchange(pgconn)), pgconn))
        except ServerError as exc:
            if exc.sqlstate != _NO_STATEMENT:
                raise
            prepared.clear()
    raise AssertionError("unreachable: a statement prepared twice is missing")


def _simple(pgconn: pq.abc.PGconn, sql: bytes) -> Protocol[None]:
    pgconn.send_query(sql)
    _checked((yield from _exchange(pgconn)), pgconn)


Call = tuple[Statement, Sequence[Param]]


def exchange_all(
    pgconn: pq.abc.PGconn,
    prepared: set[bytes],
    create: bytes,
    calls: Sequence[Call],
    statement_ms: int | None = None,
) -> Protocol[list[Rows]]:
    """Run ``calls`` in order; create the table if missing, rerun on a deadlock.

    With ``statement_ms`` they run in one transaction under that ``statement_timeout``
    instead of the connection's own (``SET LOCAL``: the connection keeps its setting).
    """
    tries = 0
    while True:
        try:
            if statement_ms is not None:
                yield from _simple(
                    pgconn, b"BEGIN; SET LOCAL statement_timeout = %d" % statement_ms
                )
            results = []
            for statement, params in calls:
                results.append((yield from _call(pgconn, prepared, statement, params)))
            if statement_ms is not None:
                yield from _simple(pgconn, b"COMMIT")
            return results
        except ServerError as exc:
            if pgconn.transaction_status != pq.TransactionStatus.IDLE:
                yield from _simple(pgconn, b"ROLLBACK")
            tries += 1
            if exc.sqlstate in _UNDEFINED and tries == 1:
                yield from _simple(pgconn, create)
                prepared.clear()  # plans made before the table existed are gone
            elif exc.sqlstate in _TRANSIENT and tries < _TRANSIENT_TRIES:
                continue
            else:
                raise


def _poll_ready(fd: int, wait: int, seconds: float) -> bool:
    poller = select.poll()
    poller.register(fd, select.POLLIN if wait == READ else select.POLLOUT)
    return bool(poller.poll(max(0, int(seconds * 1000) + 1)))


def drive(protocol: Protocol[T], fd: int, deadline: float) -> T:
    """Run ``protocol`` on a blocking thread, waiting on ``fd`` until ``deadline``."""
    try:
        wait = next(protocol)
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0 or not _poll_ready(fd, wait, remaining):
                raise CallTimeout("no answer before the deadline")
            wait = protocol.send(None)
    except StopIteration as stop:
        return stop.value  # type: ignore[no-any-return]


def _wake(future: asyncio.Future[bool], ready: bool) -> None:
    if not future.done():
        future.set_result(ready)


async def adrive(protocol: Protocol[T], fd: int, deadline: float) -> T:
    """Run ``protocol`` in the running event loop, waiting on ``fd`` until ``deadline``."""
    loop = asyncio.get_running_loop()
    try:
        wait = next(protocol)
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise CallTimeout("no answer before the deadline")
            future: asyncio.Future[bool] = loop.create_future()
            if wait == READ:
                loop.add_reader(fd, _wake, future, True)
            else:
                loop.add_writer(fd, _wake, future, True)
            timer = loop.call_later(remaining, _wake, future, False)
            try:
                ready = await future
            finally:
                timer.cancel()
                if wait == READ:
                    loop.remove_reader(fd)
                else:
                    loop.remove_writer(fd)
            if not ready:
                raise CallTimeout("no answer before the deadline")
            wait = protocol.send(None)
    except StopIteration as stop:
        return stop.value  # type: ignore[no-any-return]


# Which of our statements each connection has prepared; gone with the connection.
_PREPARED: weakref.WeakKeyDictionary[Any, set[bytes]] = weakref.WeakKeyDictionary()
_PREPARED_LOCK = threading.Lock()


def prepared_on(conn: Any) -> set[bytes]:
    """The names of our statements prepared on ``conn``."""
    found = _PREPARED.get(conn)
    if found is None:
        with _PREPARED_LOCK:
            found = _PREPARED.setdefault(conn, set())
    return found


def healthy(conn: Any) -> bool:
    """Whether ``conn`` can serve another call (idle, not broken)."""
    pgconn = conn.pgconn
    return bool(
        pgconn.status == pq.ConnStatus.OK and pgconn.transaction_status == pq.TransactionStatus.IDLE
    )


def broken(conn: Any) -> None:
    """Close a connection left mid-exchange: nobody can tell what it will read next.

    A statement still running there is cancelled on the server too: closing alone does not
    stop it (a statement waiting for a lock never reads the socket), and on a connection
    without our ``statement_timeout`` (a user's pool) each call that gave up would leave a
    server process behind until the lock is gone, up to the server's ``max_connections``.
    """
    pgconn = conn.pgconn
    if pgconn.status == pq.ConnStatus.OK and pgconn.transaction_status == _RUNNING:
        request: Callable[[], None] | None
        try:  # either outlives the connection: key and address only
            request = functools.partial(_cancel_within, pgconn.cancel_conn(), CANCEL_SECONDS)
        except psycopg.NotSupportedError:  # libpq before 17: only the blocking cancel
            request = pgconn.get_cancel().cancel
        except psycopg.Error:
            request = None
        if request is not None:
            _CANCELLER.send(request)
    pgconn.finish()


CANCEL_SECONDS = 10.0
"""How long the canceller waits for the server to take one cancel request."""

_RUNNING = pq.TransactionStatus.ACTIVE
"""libpq's status while a statement sent is not answered in full."""
_CANCEL_BACKLOG = 64


class _Canceller:
    """Sends cancel requests on one lazily started daemon thread, never on a caller's time.

    libpq's blocking cancel (``PGcancel.cancel``) waits for the server without a timeout and,
    in psycopg's binary build, holding the GIL: a server slow to take it froze every thread
    of the process. With libpq 17+ the request is a non-blocking cancel connection polled
    here for at most ``CANCEL_SECONDS``; older libpq falls back to the blocking call. A
    server that never answers holds up only the requests queued behind it, at most
    ``_CANCEL_BACKLOG`` (later ones are dropped: their statements end as they would have).
    """

    def __init__(self) -> None:
        """An idle canceller; its thread starts with the first request."""
        self._requests: queue.Queue[Callable[[], None]] = queue.Queue(_CANCEL_BACKLOG)
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None

    def send(self, request: Callable[[], None]) -> None:
        """Queue a cancel request (dropped if the backlog is full)."""
        try:
            self._requests.put_nowait(request)
        except queue.Full:
            return
        with self._lock:
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(
                    target=self._serve, name="toolkit-postgres-cancel", daemon=True
                )
                self._thread.start()

    def _serve(self) -> None:
        while True:
            request = self._requests.get()
            with contextlib.suppress(psycopg.Error):  # the server is gone: nothing runs there
                request()


def _cancel_within(request: pq.abc.PGcancelConn, seconds: float) -> None:
    """Drive a non-blocking cancel request to its end, or give up after ``seconds``."""
    deadline = time.monotonic() + seconds
    try:
        request.start()
        while True:
            status = request.poll()
            if status == pq.PollingStatus.OK or status == pq.PollingStatus.FAILED:
                return
            wait = READ if status == pq.PollingStatus.READING else WRITE
            remaining = deadline - time.monotonic()
            if remaining <= 0 or not _poll_ready(request.socket, wait, remaining):
                return
    finally:
        request.finish()


_CANCELLER = _Canceller()


class PoolTimeout(Exception):
    """Every connection of a pool was busy until the deadline."""


class SyncPool:
    """A small thread-safe pool: idle connections in a list, a semaphore for the size bound."""

    def __init__(self, connect: Callable[[], psycopg.Connection[Any]], size: int) -> None:
        """Make connections with ``connect`` on demand, at most ``size`` at once."""
        self._connect = connect
        self._size = size
        self._idle: list[psycopg.Connection[Any]] = []
        self._slots = threading.BoundedSemaphore(size)
        self._closed = False
        _FORKABLE.add(self)

    def forget(self) -> None:
        """In a forked child: drop the inherited connections unclosed, free every slot."""
        self._idle = []
        self._slots = threading.BoundedSemaphore(self._size)

    def getconn(self, timeout: float) -> psycopg.Connection[Any]:
        """An idle connection, or a new one; ``PoolTimeout`` if all are busy past ``timeout``."""
        if self._closed:
            raise psycopg.OperationalError("the cache's connection pool is closed")
        if not self._slots.acquire(timeout=max(0.0, timeout)):
            raise PoolTimeout(f"every pooled connection stayed busy for {timeout:.2f}s")
        try:
            while self._idle:
                try:
                    conn = self._idle.pop()
                except IndexError:
                    break
                if healthy(conn):
                    return conn
                conn.close()
        except BaseException:
            self._slots.release()
            raise
        return self._connect_within(timeout)

    def _connect_within(self, timeout: float) -> psycopg.Connection[Any]:
        """A new connection on a helper thread, waited for at most ``timeout`` seconds.

        psycopg waits at least 2 s to connect; the caller's deadline may be shorter. A
        connection that arrives after its caller gave up joins the idle ones. The slot the
        caller took passes to the connection (or is released if none is made).
        """
        lock = threading.Lock()
        done = threading.Event()
        outcome: list[psycopg.Connection[Any] | BaseException] = []
        abandoned = False
        slots = self._slots

        def connect() -> None:
            try:
                made: psycopg.Connection[Any] | BaseException = self._connect()
            except BaseException as exc:  # handed to the caller, who raises it
                made = exc
            with lock:
                if not abandoned:
                    outcome.append(made)
                    done.set()
                    return
            if isinstance(made, BaseException):
                slots.release()
            elif slots is self._slots:  # not after fork(): the child's pool starts empty
                self.putconn(made)

        threading.Thread(target=connect, name="toolkit-postgres-connect", daemon=True).start()
        done.wait(max(0.0, timeout))
        with lock:
            if not outcome:
                abandoned = True
                raise PoolTimeout(f"no new connection within {timeout:.2f}s")
        made = outcome[0]
        if isinstance(made, BaseException):
            slots.release()
            raise made
        return made

    def putconn(self, conn: psycopg.Connection[Any]) -> None:
        """Take back a connection; a broken one is closed."""
        if healthy(conn) and not self._closed:
            self._idle.append(conn)
        else:
            conn.close()
        self._slots.release()

    def discard_idle(self) -> None:
        """Close the idle connections (after a lost one: the server probably restarted)."""
        while self._idle:
            try:
                self._idle.pop().close()
            except IndexError:
                break

    def close(self) -> None:
        """Close the idle connections and refuse new calls."""
        self._closed = True
        self.discard_idle()


class AsyncPool:
    """The async twin of ``SyncPool`` for one event loop.

    It knows the connections it lent: if its loop is closed by hand while a call holds one,
    the call never resumes to give it back (its coroutine is only closed when collected, if
    ever), so closing the pool closes those too.
    """

    def __init__(
        self, connect: Callable[[], Any], size: int, loop: asyncio.AbstractEventLoop
    ) -> None:
        """Make connections with ``connect`` (a coroutine function), at most ``size`` at once."""
        self._connect = connect
        self._idle: list[psycopg.AsyncConnection[Any]] = []
        self._lent: set[psycopg.AsyncConnection[Any]] = set()
        self._slots = asyncio.Semaphore(size)
        self.loop = loop
        self._closed = False

    async def getconn(self, timeout: float) -> psycopg.AsyncConnection[Any]:
        """An idle connection, or a new one; ``PoolTimeout`` if all are busy past ``timeout``."""
        if self._closed:
            raise psycopg.OperationalError("the cache's connection pool is closed")
        if self._slots.locked():
            try:
                await asyncio.wait_for(self._slots.acquire(), max(0.0, timeout))
            except asyncio.TimeoutError:
                raise PoolTimeout(
                    f"every pooled connection stayed busy for {timeout:.2f}s"
                ) from None
        else:
            await self._slots.acquire()
        try:
            while self._idle:
                conn = self._idle.pop()
                if healthy(conn):
                    self._lent.add(conn)
                    return conn
                broken(conn)
            conn = await asyncio.wait_for(self._connect(), max(0.001, timeout))
        except BaseException:
            self._slots.release()
            raise
        self._lent.add(conn)
        return conn

    async def putconn(self, conn: psycopg.AsyncConnection[Any]) -> None:
        """Take back a connection; a broken one is closed."""
        if conn not in self._lent:  # closed with the pool already, its slot given up
            broken(conn)
            return
        self._lent.discard(conn)
        if healthy(conn) and not self._closed:
            self._idle.append(conn)
        else:
            broken(conn)
        if not self.loop.is_closed():  # else waking a waiter would touch a dead loop
            self._slots.release()

    def discard_idle(self) -> None:
        """Close the idle connections (after a lost one: the server probably restarted)."""
        while self._idle:
            broken(self._idle.pop())

    def close(self) -> None:
        """Close the idle connections (synchronously: also when the loop is gone), and those
        lent if the loop is closed: no call of it will give them back."""
        self._closed = True
        self.discard_idle()
        if self.loop.is_closed():
            while self._lent:
                broken(self._lent.pop())


class AsyncPools:
    """One ``AsyncPool`` per event loop; pools of loops that closed are closed on the way."""

    def __init__(self, connect: Callable[[], Any], size: int) -> None:
        """Pools that make connections with ``connect``, ``size`` at most each."""
        self._connect = connect
        self._size = size
        self._pools: dict[asyncio.AbstractEventLoop, AsyncPool] = {}
        self._lock = threading.Lock()
        self._closed = False
        _FORKABLE.add(self)

    def forget(self) -> None:
        """In a forked child: drop every loop's pool and its inherited connections unclosed."""
        self._pools = {}
        self._lock = threading.Lock()

    def for_loop(self, loop: asyncio.AbstractEventLoop) -> AsyncPool:
        """The pool of ``loop``, made on first use."""
        pool = self._pools.get(loop)
        if pool is not None:
            return pool
        with self._lock:
            if self._closed:
                raise psycopg.OperationalError("the cache's connection pool is closed")
            for closed in forget_closed(self._pools):
                closed.close()
            pool = self._pools.get(loop)
            if pool is None:
                pool = self._pools[loop] = AsyncPool(self._connect, self._size, loop)
            return pool

    def close(self) -> None:
        """Close every loop's idle connections, and closed loops' lent ones."""
        with self._lock:
            self._closed = True
            pools, self._pools = list(self._pools.values()), {}
        for pool in pools:
            pool.close()


_FORKABLE: weakref.WeakSet[SyncPool | AsyncPools] = weakref.WeakSet()
"""Every pool this module made; a forked child empties them before it runs anything else."""


def _forget_after_fork() -> None:
    global _PREPARED_LOCK, _CANCELLER
    _PREPARED_LOCK = threading.Lock()  # another thread of the parent may have held it
    _CANCELLER = _Canceller()  # the parent's thread is not in the child, its queue may be locked
    for pool in list(_FORKABLE):
        pool.forget()


os.register_at_fork(after_in_child=_forget_after_fork)
