"""A shared cache on Redis (standalone or Cluster) over redis-py, truly async on ``redis.asyncio``.

Usage::

    cache = RedisCache.from_url("redis://localhost:6379/0")   # makes a sync and an async client
    graph = builder.compile(cache=cache)

How it talks to Redis (see ``_redis_keys`` for the key encoding):

- one Redis string per entry holding ``len(tag) | tag | payload``; ``ttl`` becomes ``PX``
  in milliseconds (at least 1), ``None`` stores without expiry;
- reads: ``GET`` for one key, ``MGET`` in chunks for a batch; concurrent ``aget`` calls in
  one event-loop turn share a single MGET round trip;
- writes: ``SET`` for one entry; a batch is one short Lua script call per slot and chunk
  of 1,000 (one command and one reply instead of a pipeline of SETs), so the Redis user
  needs ``EVALSHA``/``EVAL`` permission; a batch of several chunks goes in one MULTI/EXEC
  round trip, so it is written whole or not at all (in Cluster mode each slot's part is
  written on its own: a failed batch may have written some slots);
- clears: ``SCAN MATCH`` with the namespace's escaped key prefix, ``UNLINK`` in batches of
  at most 500 keys; never ``KEYS``.

In Cluster mode every namespace lives in one hash slot: batches group by slot cheaply and
``clear(namespaces)`` scans only the node owning it, at the price that one very hot
namespace cannot spread over several shards. The async client is bound to the event loop
it first runs in (a redis-py rule).
"""

from __future__ import annotations

import asyncio
import hashlib
import time
from collections.abc import Awaitable, Iterable, Iterator, Mapping, Sequence
from typing import Any, TypeVar
from urllib.parse import unquote, urlsplit

from toolkit._loops import LoopTasks, end_if_closed
from toolkit._types import FullKey, Namespace, SerializerProtocol, ValueT
from toolkit.backends._coalesce import WriteCoalescer
from toolkit.backends._integrity import seal, unseal
from toolkit.backends._loop_clients import LoopClients
from toolkit.backends._redis_keys import KeyCodec
from toolkit.base import (
    BaseCache,
    EvictionNotifier,
    check_key,
    check_keys,
    check_namespaces,
    check_pairs,
)
from toolkit.errors import BackendError, CacheClosedError, CacheError, CacheTimeoutError
from toolkit.introspect import CacheStats, KeyInfo
from toolkit.lease import LeaseRequest, check_lease

try:
    import redis
    import redis.asyncio as aredis
    from redis.asyncio.cluster import RedisCluster as AsyncRedisCluster
    from redis.backoff import NoBackoff
    from redis.cluster import RedisCluster
    from redis.crc import key_slot
    from redis.exceptions import RedisClusterException
except ImportError as exc:  # pragma: no cover - exercised only without the extra
    raise ImportError(
        "RedisCache needs the redis package: pip install 'langgraph-cache-toolkit[redis]'"
    ) from exc

__all__ = [
    "DEFAULT_CALL_SECONDS",
    "DEFAULT_CONNECT_TIMEOUT",
    "DEFAULT_PREFIX",
    "DEFAULT_TIMEOUT",
    "RedisCache",
    "check_url",
]

DEFAULT_PREFIX = "toolkit:cache:"
ASYNC_MAX_CONNECTIONS = 32
"""Connections per event loop in a ``from_url`` cache's async pool; callers beyond wait."""
DEFAULT_TIMEOUT = 0.15
"""Seconds ``from_url`` sync clients wait for each reply."""
DEFAULT_CONNECT_TIMEOUT = 0.1
"""Seconds ``from_url`` sync clients wait to connect."""
DEFAULT_CALL_SECONDS = 0.5
"""The least bound ``from_url`` caches keep on a whole call (every round trip of it)."""

READ_CHUNK = 1_000
"""Keys per MGET: a huge batch becomes several short commands, not one long one."""
WRITE_CHUNK = 1_000
"""Entries per batch-write script call: each call runs alone on the server, so keep it short."""
SCAN_COUNT = 1_000
"""COUNT hint of each SCAN step in ``clear``."""
UNLINK_BATCH = 500
"""Keys per UNLINK in ``clear``: the server is never blocked for a whole namespace."""
_MAX_PX = 2**46
"""About 2,200 years in ms; longer ttls are stored without expiry (Redis rejects huge PX)."""

_SYNC_KINDS = (redis.Redis, RedisCluster)
_ASYNC_KINDS = (aredis.Redis, AsyncRedisCluster)
_IO_ERRORS = (redis.RedisError, RedisClusterException, OSError, asyncio.TimeoutError)
_TIMEOUTS = (redis.TimeoutError, TimeoutError, asyncio.TimeoutError)

# Writes a batch in one command and one reply: redis-py spends more CPU packing and parsing
# per-command pipelines (with or without MULTI) than the round trip costs.
_SET_MANY = """
for i = 1, #KEYS do
  local px = ARGV[2 * i]
  if px == '' then
    redis.call('SET', KEYS[i], ARGV[2 * i - 1])
  elseif px == '0' then
    redis.call('DEL', KEYS[i])
  else
    redis.call('SET', KEYS[i], ARGV[2 * i - 1], 'PX', px)
  end
end
return #KEYS
"""
_SET_MANY_SHA = hashlib.sha1(_SET_MANY.encode()).hexdigest()

# Deletes an undecodable entry only if nobody replaced it since we read it.
_DELETE_IF_SAME = (
    "if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end return 0"
)

# Leases (toolkit.lease): only the token that holds one may extend or release it.
_RENEW_IF_HELD = (
    "if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('PEXPIRE', KEYS[1], ARGV[2])"
    " end return 0"
)
_RELEASE_IF_HELD = (
    "if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end return 0"
)

T = TypeVar("T")
_Write = tuple[bytes, bytes, bytes]  # (redis key, stored bytes, PX in ms or b"" for none)
_Invalid = list[tuple[Namespace, bytes, bytes]]  # (namespace, redis key, blob)


def _error(exc: BaseException, operation: str) -> CacheError:
    """The ``CacheError`` raised for a redis-py failure (the caller chains ``exc``)."""
    kind = CacheTimeoutError if isinstance(exc, _TIMEOUTS) else BackendError
    detail = str(exc) or "no reply within the call's bound (max_call_seconds)"
    return kind(f"redis {operation} failed: {type(exc).__name__}: {detail}")


def entry_bytes(tag: str, payload: bytes) -> bytes:
    """The stored form of a serialized value: ``len(tag) | tag | payload | crc32``."""
    raw_tag = tag.encode()
    if len(raw_tag) > 255:
        raise ValueError(f"serializer type tag longer than 255 bytes: {tag[:40]!r}...")
    return seal(bytes((len(raw_tag),)) + raw_tag + payload)


def _chunks(items: Sequence[bytes], size: int) -> Iterable[Sequence[bytes]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def _by_slot(keys: Iterable[bytes]) -> dict[int, list[bytes]]:
    groups: dict[int, list[bytes]] = {}
    for rkey in keys:
        groups.setdefault(key_slot(rkey), []).append(rkey)
    return groups


def _unlink_batches(keys: Sequence[bytes], cluster: bool) -> Iterable[Sequence[bytes]]:
    """UNLINK argument lists of at most ``UNLINK_BATCH`` keys, one slot each in Cluster mode."""
    groups: Iterable[Sequence[bytes]] = _by_slot(keys).values() if cluster else (keys,)
    for group in groups:
        yield from _chunks(group, UNLINK_BATCH)


def _read_plan(rkeys: Sequence[bytes], cluster: bool) -> list[Sequence[bytes]]:
    """MGET argument lists: chunks of ``READ_CHUNK``, one slot each in Cluster mode."""
    unique = list(dict.fromkeys(rkeys))
    groups: Iterable[Sequence[bytes]] = _by_slot(unique).values() if cluster else (unique,)
    return [chunk for group in groups for chunk in _chunks(group, READ_CHUNK)]


def _px(ttl: float | None) -> bytes:
    if ttl is None:
        return b""
    if ttl == 0:
        return b"0"  # expires at once: the write deletes the key
    ms = max(1, round(ttl * 1000))
    return b"" if ms > _MAX_PX else str(ms).encode()


def _write_plan(writes: Sequence[_Write], cluster: bool) -> list[tuple[Any, ...]]:
    """Commands for a batch: a plain SET for one entry, else one script call per slot and chunk."""
    if len(writes) == 1:
        rkey, blob, px = writes[0]
        if px == b"0":
            return [("DEL", rkey)]
        return [("SET", rkey, blob, "PX", px) if px else ("SET", rkey, blob)]
    groups: Iterable[Sequence[_Write]]
    if cluster:
        by_slot: dict[int, list[_Write]] = {}
        for write in writes:
            by_slot.setdefault(key_slot(write[0]), []).append(write)
        groups = by_slot.values()
    else:
        groups = (writes,)
    plan: list[tuple[Any, ...]] = []
    for group in groups:
        for start in range(0, len(group), WRITE_CHUNK):
            chunk = group[start : start + WRITE_CHUNK]
            argv = [part for _, blob, px in chunk for part in (blob, px)]
            plan.append(("EVALSHA", _SET_MANY_SHA, len(chunk), *(w[0] for w in chunk), *argv))
    return plan


def _all_or_nothing(pipe: Any, plan: Sequence[tuple[Any, ...]]) -> Any:
    """Queue a batch's script calls in ``pipe`` (a MULTI/EXEC pipeline) and return it.

    A batch of several chunks made one round trip per chunk, so a call stopped by its bound
    (or a lost connection) between two of them had written part of the batch and raised.
    In one MULTI/EXEC the server runs every chunk or none, in one round trip. The script
    goes as text (EVAL): an unknown EVALSHA inside EXEC fails alone while the others run.
    """
    for args in plan:
        if args[0] == "EVALSHA":
            pipe.execute_command("EVAL", _SET_MANY, *args[2:])
        else:
            pipe.execute_command(*args)
    return pipe


def check_url(url: object) -> None:
    """Refuse what redis-py would read as another database, or fail on later: a database
    path that is no number (``/x`` is database 0, ``/1/2`` database 12: a ``clear`` there
    deletes another database's cache), a port that is no number, and a query option no
    connection takes (``?prefix=``: every call would raise ``TypeError``)."""
    if not isinstance(url, str):
        raise TypeError(f"url must be a str, got {type(url).__name__}")
    parts = urlsplit(url)
    _ = parts.port  # ValueError for a port that is no number, or out of range
    if parts.query:
        pool = redis.ConnectionPool.from_url(url)
        try:  # a connection object opens no socket until it is used
            pool.connection_class(**pool.connection_kwargs)
        except TypeError as exc:
            raise ValueError(
                f"not an option of a Redis URL: {exc} (the key prefix is RedisCache's "
                "prefix=, or --prefix on the command line)"
            ) from None
    if parts.scheme == "unix":
        return
    database = unquote(parts.path)
    if database not in ("", "/") and not (database[:1] == "/" and database[1:].isdigit()):
        raise ValueError(
            f"the database must be a number, like redis://host:6379/0, not {parts.path!r}"
        )


def _check_client(client: object, kinds: tuple[type, ...], what: str) -> None:
    if not isinstance(client, kinds):
        raise TypeError(
            f"{what} must be a redis-py client (redis.Redis, redis.asyncio.Redis or their "
            f"RedisCluster), got {type(client).__name__}"
        )
    get_encoder = getattr(client, "get_encoder", None)
    if get_encoder is not None and getattr(get_encoder(), "decode_responses", False):
        raise ValueError("RedisCache stores bytes: pass a client made with decode_responses=False")


class _PendingRead:
    """Keys wanted by the ``aget`` calls of one event-loop turn, answered by one MGET round."""

    __slots__ = ("keys", "loop", "waiters")

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.keys: dict[bytes, None] = {}
        self.waiters: list[asyncio.Future[dict[bytes, Any]]] = []


class _Budget:
    """A sync call's time bound: a further round trip starts only if a whole one still fits."""

    __slots__ = ("deadline", "operation", "round_trip")

    def __init__(self, seconds: float | None, round_trip: float, operation: str) -> None:
        self.deadline = None if seconds is None else time.monotonic() + seconds
        self.round_trip = round_trip
        self.operation = operation

    def next_round_trip(self) -> None:
        """Raise ``CacheTimeoutError`` if one more round trip could overrun the bound."""
        if self.deadline is not None and time.monotonic() + self.round_trip > self.deadline:
            raise CacheTimeoutError(
                f"redis {self.operation} stopped: another round trip could overrun the "
                "declared bound (max_call_seconds)"
            )


class RedisCache(EvictionNotifier, BaseCache[ValueT]):
    """Redis cache: MGET reads, batched ``SET PX`` writes, SCAN + UNLINK clears; Cluster too."""

    backend_name = "redis"

    def __init__(
        self,
        client: Any = None,
        *,
        aclient: Any = None,
        serde: SerializerProtocol | None = None,
        prefix: str = DEFAULT_PREFIX,
    ) -> None:
        """Use ``client`` (sync or async redis-py client) and/or ``aclient`` (async), as given."""
        super().__init__(serde=serde)
        if client is not None and isinstance(client, _ASYNC_KINDS):
            if aclient is not None:
                raise TypeError(
                    "client= is async and aclient= is given too: pass the sync client as client="
                )
            client, aclient = None, client
        if client is None and aclient is None:
            raise TypeError(
                "RedisCache needs client=redis.Redis(...) and/or aclient=redis.asyncio.Redis(...)"
            )
        if client is not None:
            _check_client(client, _SYNC_KINDS, "client")
        if aclient is not None:
            _check_client(aclient, _ASYNC_KINDS, "aclient")
        self.client = client
        self.aclient = aclient
        """The async client given (``from_url`` caches make one per event loop instead)."""
        self._aclients = LoopClients(None, aclient)
        self.prefix = prefix
        self.endpoint = _endpoint(client if client is not None else aclient)
        """``host:port/db`` of the server (or ``cluster``), for messages; never a password."""
        self._codec = KeyCodec(prefix)
        self._cluster = isinstance(client, RedisCluster)
        self._acluster = isinstance(aclient, AsyncRedisCluster)
        self._owns_clients = False
        self._closed = False
        self.max_call_seconds: float | None = None
        """A bound on a whole call, known only for clients ``from_url`` made."""
        self._round_trip = 0.0  # worst case of one sync round trip: a connect and a reply
        self._pending: _PendingRead | None = None
        self._flushes = LoopTasks()  # a loop closed mid-read lets its read go
        self._write_turns = WriteCoalescer()

    @classmethod
    def from_url(
        cls,
        url: str,
        *,
        serde: SerializerProtocol | None = None,
        prefix: str = DEFAULT_PREFIX,
        cluster: bool = False,
        socket_timeout: float = DEFAULT_TIMEOUT,
        socket_connect_timeout: float = DEFAULT_CONNECT_TIMEOUT,
        max_call_seconds: float | None = None,
        **client_options: Any,
    ) -> RedisCache[Any]:
        """A cache owning a sync client and one async client per event loop for ``url``.

        ``max_call_seconds`` bounds each call as a whole (FailOpen then needs no deadline
        thread); by default the larger of ``DEFAULT_CALL_SECONDS`` and two sync round trips
        (``socket_connect_timeout + socket_timeout`` each). A sync call starts a further round
        trip only while a whole one still fits; an async call runs under ``asyncio.timeout``.
        """
        check_url(url)
        round_trip = socket_connect_timeout + socket_timeout
        if max_call_seconds is None:
            max_call_seconds = max(DEFAULT_CALL_SECONDS, 2 * round_trip)
        if not round_trip <= max_call_seconds:
            raise ValueError(
                f"max_call_seconds={max_call_seconds!r} must fit one round trip: "
                f"socket_connect_timeout + socket_timeout = {round_trip!r}"
            )
        options: dict[str, Any] = {
            "socket_timeout": socket_timeout,
            "socket_connect_timeout": socket_connect_timeout,
            # No CLIENT SETINFO on connect: a new connection costs one round trip, no more.
            "driver_info": None,
            **client_options,
        }
        # An async call is bounded as a whole by asyncio.timeout, so its socket timeouts
        # only need to fit inside it: a shorter per-read timeout would just fail replies
        # delayed by a busy event loop rather than by Redis.
        async_options = {
            **options,
            "socket_timeout": max_call_seconds,
            "socket_connect_timeout": max_call_seconds,
        }
        if cluster:
            try:  # the sync cluster client loads the slot map right away
                sync_client: Any = RedisCluster.from_url(url, **_retry_once(options, sync=True))
            except _IO_ERRORS as exc:
                raise _error(exc, "cluster discovery") from exc

            def make_async() -> Any:
                return AsyncRedisCluster.from_url(url, **_retry_once(async_options, sync=False))
        else:
            sync_client = redis.Redis.from_url(url, **_retry_once(options, sync=True))

            def make_async() -> Any:
                # A bounded pool: a burst of coroutines shares a few connections instead of
                # opening hundreds at once (each racing its connect timeout).
                pool = aredis.BlockingConnectionPool.from_url(
                    url,
                    max_connections=ASYNC_MAX_CONNECTIONS,
                    timeout=max_call_seconds,  # the call's bound caps the wait as well
                    **_retry_once(async_options, sync=False),
                )
                return aredis.Redis.from_pool(pool)  # the client owns (and closes) the pool

        cache: RedisCache[Any] = cls(sync_client, serde=serde, prefix=prefix)
        cache._aclients = LoopClients(make_async)
        cache._acluster = cluster
        cache._owns_clients = True
        if "retry" not in client_options:
            # A timeout is never retried; a dropped connection is retried once at once.
            # FailOpen trusts this bound instead of a deadline thread per call.
            cache.max_call_seconds = max_call_seconds
            cache._round_trip = round_trip
        return cache

    # -- reads --

    def get(self, keys: Sequence[FullKey]) -> dict[FullKey, ValueT]:
        """Get the cached values for the given keys."""
        keys = check_keys(keys)
        if not keys:
            return {}
        client = self._sync_client()
        budget = self._budget("get")
        encode = self._codec.encode
        if len(keys) == 1:
            # The hot path (one node's lookup) skips the batch bookkeeping.
            full_key = keys[0]
            rkey = encode(*full_key)
            try:
                blob = client.get(rkey)
            except _IO_ERRORS as exc:
                raise _error(exc, "get") from exc
            if blob is None:
                return {}
            try:
                return {full_key: self._load(blob)}
            except Exception:
                values: dict[FullKey, ValueT] = {}
                invalid: _Invalid = [(full_key[0], rkey, blob)]
        else:
            rkeys = [encode(ns, key) for ns, key in keys]
            try:
                blobs = self._mget(client, rkeys, budget)
            except _IO_ERRORS as exc:
                raise _error(exc, "get") from exc
            values, invalid = self._decode(keys, rkeys, blobs)
        if invalid:
            try:
                for _, rkey, blob in invalid:
                    budget.next_round_trip()
                    client.eval(_DELETE_IF_SAME, 1, rkey, blob)
            except _IO_ERRORS as exc:
                raise _error(exc, "get") from exc
            self._report_invalid(invalid)
        return values

    async def aget(self, keys: Sequence[FullKey]) -> dict[FullKey, ValueT]:
        """Asynchronously get the cached values for the given keys."""
        await self._ready("get")
        return await self._bounded("get", self._aget(keys))

    async def _aget(self, keys: Sequence[FullKey]) -> dict[FullKey, ValueT]:
        keys = check_keys(keys)
        if not keys:
            return {}
        aclient = await self._async_client()
        encode = self._codec.encode
        rkeys = [encode(ns, key) for ns, key in keys]
        blobs = await self._read_soon(rkeys)
        values, invalid = self._decode(keys, rkeys, blobs)
        if invalid:
            try:
                for _, rkey, blob in invalid:
                    await aclient.eval(_DELETE_IF_SAME, 1, rkey, blob)
            except _IO_ERRORS as exc:
                raise _error(exc, "get") from exc
            self._report_invalid(invalid)
        return values

    def _mget(self, client: Any, rkeys: Sequence[bytes], budget: _Budget) -> dict[bytes, Any]:
        """One MGET per chunk, each a round trip the budget must still allow (a pipeline
        would wait up to a socket timeout per reply, past any bound)."""
        blobs: dict[bytes, Any] = {}
        for index, chunk in enumerate(_read_plan(rkeys, self._cluster)):
            if index:
                budget.next_round_trip()
            blobs.update(zip(chunk, client.mget(chunk), strict=True))
        return blobs

    async def _amget(self, aclient: Any, rkeys: Sequence[bytes]) -> dict[bytes, Any]:
        plan = _read_plan(rkeys, self._acluster)
        if len(plan) == 1:
            return dict(zip(plan[0], await aclient.mget(plan[0]), strict=True))
        pipe = aclient.pipeline(transaction=False)
        for chunk in plan:
            pipe.execute_command("MGET", *chunk)
        return _zip_plan(plan, await pipe.execute())

    async def _read_soon(self, rkeys: Sequence[bytes]) -> dict[bytes, Any]:
        """Join the reads of this loop turn: concurrent ``aget`` calls share one MGET round trip."""
        loop = asyncio.get_running_loop()
        pending = self._pending
        if pending is None or pending.loop is not loop:
            pending = self._pending = _PendingRead(loop)
            loop.call_soon(self._start_read, pending)
        waiter: asyncio.Future[dict[bytes, Any]] = loop.create_future()
        pending.keys.update(dict.fromkeys(rkeys))
        pending.waiters.append(waiter)
        return await waiter

    def _start_read(self, pending: _PendingRead) -> None:
        if self._pending is pending:
            self._pending = None
        self._flushes.start(pending.loop, self._finish_read(pending))

    async def _finish_read(self, pending: _PendingRead) -> None:
        waiters = pending.waiters
        try:
            rkeys = list(pending.keys)
            try:
                async with asyncio.timeout(self.max_call_seconds):  # the waiters' bound too
                    aclient = await self._async_client()
                    if len(rkeys) == 1:
                        blobs: dict[bytes, Any] = {rkeys[0]: await aclient.get(rkeys[0])}
                    else:
                        blobs = await self._amget(aclient, rkeys)
            except BaseException as exc:
                end_if_closed(pending.loop, exc)  # collected after its loop was closed by hand
                raise
        except _IO_ERRORS as exc:
            for waiter in waiters:
                if not waiter.done():
                    error = _error(exc, "get")
                    error.__cause__ = exc
                    waiter.set_exception(error)
        except asyncio.CancelledError:
            for waiter in waiters:
                waiter.cancel()
            raise
        except Exception as exc:
            for waiter in waiters:
                if not waiter.done():
                    waiter.set_exception(exc)
        else:
            for waiter in waiters:
                if not waiter.done():
                    waiter.set_result(blobs)

    def _decode(
        self, keys: Sequence[FullKey], rkeys: Sequence[bytes], blobs: Mapping[bytes, Any]
    ) -> tuple[dict[FullKey, ValueT], _Invalid]:
        values: dict[FullKey, ValueT] = {}
        invalid: _Invalid = []
        load = self._load
        for full_key, rkey in zip(keys, rkeys, strict=True):
            blob = blobs[rkey]
            if blob is None:
                continue
            try:
                values[full_key] = load(blob)
            except Exception:
                if not any(item[1] == rkey for item in invalid):
                    invalid.append((full_key[0], rkey, blob))
        return values, invalid

    def _load(self, blob: bytes) -> ValueT:
        """Decode stored bytes; any failure means the entry is invalid (a miss, then deleted)."""
        blob = unseal(blob)
        size = blob[0]
        if len(blob) <= size:
            raise ValueError("truncated entry header")
        value: ValueT = self.serde.loads_typed((blob[1 : 1 + size].decode(), blob[1 + size :]))
        return value

    def _report_invalid(self, invalid: _Invalid) -> None:
        for ns, _, _ in invalid:
            self._notify_eviction(ns, "invalid")

    # -- writes --

    def set(self, pairs: Mapping[FullKey, tuple[ValueT, int | None]]) -> None:
        """Set the cached values for the given keys and TTLs."""
        writes = self._encode_pairs(pairs)
        if not writes:
            return
        client = self._sync_client()
        plan = _write_plan(writes, self._cluster)
        if len(plan) > 1 and not self._cluster:
            try:  # one round trip, all or nothing (see _all_or_nothing)
                _all_or_nothing(client.pipeline(transaction=True), plan).execute()
            except _IO_ERRORS as exc:
                raise _error(exc, "set") from exc
            return
        budget = self._budget("set")
        try:
            for index, args in enumerate(plan):
                if index:
                    budget.next_round_trip()
                try:
                    client.execute_command(*args)
                except redis.exceptions.NoScriptError:
                    budget.next_round_trip()
                    client.execute_command("EVAL", _SET_MANY, *args[2:])
        except _IO_ERRORS as exc:
            raise _error(exc, "set") from exc

    async def aset(self, pairs: Mapping[FullKey, tuple[ValueT, int | None]]) -> None:
        """Asynchronously set the cached values for the given keys and TTLs."""
        await self._ready("set")
        return await self._bounded("set", self._aset(pairs))

    async def _aset(self, pairs: Mapping[FullKey, tuple[ValueT, int | None]]) -> None:
        writes = self._encode_pairs(pairs)
        if not writes:
            return
        try:
            # Writes issued while one runs join the next script call: a burst of asets is a
            # few round trips, not one each queueing for a connection past the call's bound.
            await self._write_turns.write(writes, self._awrite)
        except _IO_ERRORS as exc:
            raise _error(exc, "set") from exc

    async def _awrite(self, writes: list[_Write]) -> None:
        """Run merged writes (and deletes) in order, under the call bound."""
        async with asyncio.timeout(self.max_call_seconds):
            aclient = await self._async_client()
            plan = _write_plan(writes, self._acluster)
            if len(plan) > 1 and not self._acluster:
                await _all_or_nothing(aclient.pipeline(transaction=True), plan).execute()
                return
            for args in plan:
                try:
                    await aclient.execute_command(*args)
                except redis.exceptions.NoScriptError:
                    await aclient.execute_command("EVAL", _SET_MANY, *args[2:])

    def _encode_pairs(self, pairs: Mapping[FullKey, tuple[ValueT, int | None]]) -> list[_Write]:
        """Validate and serialize a whole batch before anything is written."""
        rows = check_pairs(pairs, self._entry_bytes, self._refuse)
        encode = self._codec.encode
        return [
            (encode(ns, key), entry, _px(ttl))
            if entry is not None
            else (encode(ns, key), b"", b"0")  # refused: deleted (a set replaces)
            for (ns, key), entry, ttl in rows
        ]

    def _entry_bytes(self, value: Any) -> bytes:
        return entry_bytes(*self.serde.dumps_typed(value))

    def redis_key(self, full_key: FullKey) -> bytes:
        """The Redis key that stores ``full_key`` (for inspection with ``redis-cli``)."""
        ns, key = check_key(full_key)
        return self._codec.encode(ns, key)

    def delete(self, keys: Sequence[FullKey]) -> None:
        """Delete exactly these keys (an extension: the seed API deletes whole namespaces)."""
        rkeys = self._delete_plan(keys)
        if not rkeys:
            return
        client = self._sync_client()
        budget = self._budget("delete")
        try:
            for index, batch in enumerate(_unlink_batches(rkeys, self._cluster)):
                if index:
                    budget.next_round_trip()
                client.unlink(*batch)
        except _IO_ERRORS as exc:
            raise _error(exc, "delete") from exc

    async def adelete(self, keys: Sequence[FullKey]) -> None:
        """Asynchronously delete exactly these keys."""
        await self._ready("delete")
        return await self._bounded("delete", self._adelete(keys))

    async def _adelete(self, keys: Sequence[FullKey]) -> None:
        rkeys = self._delete_plan(keys)
        if not rkeys:
            return
        try:
            # A delete is a write expiring at once: it keeps its order among the asets.
            await self._write_turns.write([(rkey, b"", b"0") for rkey in rkeys], self._awrite)
        except _IO_ERRORS as exc:
            raise _error(exc, "delete") from exc

    def _delete_plan(self, keys: Sequence[FullKey]) -> list[bytes]:
        encode = self._codec.encode
        return list(dict.fromkeys(encode(ns, key) for ns, key in check_keys(keys)))

    # -- leases --

    def lease(self, request: LeaseRequest) -> bool:
        """Take, extend or give back a lease on a key (see ``toolkit.lease``): ``SET NX PX``
        with the token, extended and released only by that token (a script compares it)."""
        client = self._sync_client()
        lkey, token, px = self._lease_args(request)
        try:
            if request.action == "acquire":
                return bool(client.set(lkey, token, nx=True, px=px))
            script = _RENEW_IF_HELD if request.action == "renew" else _RELEASE_IF_HELD
            return bool(client.eval(script, 1, lkey, token, px))
        except _IO_ERRORS as exc:
            raise _error(exc, "lease") from exc

    async def alease(self, request: LeaseRequest) -> bool:
        """Async twin of :meth:`lease`."""
        await self._ready("lease")
        return await self._bounded("lease", self._alease(request))

    async def _alease(self, request: LeaseRequest) -> bool:
        aclient = await self._async_client()
        lkey, token, px = self._lease_args(request)
        try:
            if request.action == "acquire":
                return bool(await aclient.set(lkey, token, nx=True, px=px))
            script = _RENEW_IF_HELD if request.action == "renew" else _RELEASE_IF_HELD
            return bool(await aclient.eval(script, 1, lkey, token, px))
        except _IO_ERRORS as exc:
            raise _error(exc, "lease") from exc

    def _lease_args(self, request: LeaseRequest) -> tuple[bytes, bytes, int]:
        ns, key = check_lease(request).key
        return (
            self._codec.lease_key(ns, key),
            request.token.encode(),
            max(1, round(request.ttl * 1000)),
        )

    # -- clear --

    def clear(self, namespaces: Sequence[Namespace] | None = None) -> None:
        """Delete the cached values for the given namespaces.
        If no namespaces are provided, clear all cached values."""
        patterns = self._patterns(namespaces)
        if not patterns:
            return
        client = self._sync_client()
        budget = self._budget("clear")
        first = True
        try:
            for pattern, node in self._scan_targets(client, patterns, self._cluster):
                target = client.get_redis_connection(node) if self._cluster else client
                cursor = 0
                while True:
                    if not first:
                        budget.next_round_trip()
                    first = False
                    cursor, found = target.scan(cursor, match=pattern, count=SCAN_COUNT)
                    for batch in _unlink_batches(found, self._cluster):
                        budget.next_round_trip()
                        target.unlink(*batch)
                    if int(cursor) == 0:
                        break
        except _IO_ERRORS as exc:
            raise _error(exc, "clear") from exc

    async def aclear(self, namespaces: Sequence[Namespace] | None = None) -> None:
        """Asynchronously delete the cached values for the given namespaces.
        If no namespaces are provided, clear all cached values."""
        await self._ready("clear")
        return await self._bounded("clear", self._aclear(namespaces))

    async def _aclear(self, namespaces: Sequence[Namespace] | None = None) -> None:
        patterns = self._patterns(namespaces)
        if not patterns:
            return
        aclient = await self._async_client()
        try:
            if self._acluster:
                await aclient.initialize()  # the slot map is loaded lazily; scans need it now
            for pattern, node in self._scan_targets(aclient, patterns, self._acluster):
                cursor = 0
                while True:
                    if self._acluster:
                        cursor, found = await node.execute_command(
                            "SCAN", cursor, "MATCH", pattern, "COUNT", SCAN_COUNT
                        )
                    else:
                        cursor, found = await aclient.scan(cursor, match=pattern, count=SCAN_COUNT)
                    for batch in _unlink_batches(found, self._acluster):
                        if self._acluster:
                            await node.execute_command("UNLINK", *batch)
                        else:
                            await aclient.unlink(*batch)
                    if int(cursor) == 0:
                        break
        except _IO_ERRORS as exc:
            raise _error(exc, "clear") from exc

    def _patterns(self, namespaces: Sequence[Namespace] | None) -> list[tuple[bytes, bytes | None]]:
        """``(MATCH pattern, a key of that namespace or None for all)`` for each scan to run."""
        namespaces = check_namespaces(namespaces)
        codec = self._codec
        if namespaces is None:
            return [(codec.all_pattern(), None)]
        unique = dict.fromkeys(namespaces)
        return [(codec.namespace_pattern(ns), codec.encode(ns, "")) for ns in unique]

    @staticmethod
    def _scan_targets(
        client: Any, patterns: list[tuple[bytes, bytes | None]], cluster: bool
    ) -> list[tuple[bytes, Any]]:
        """Which node each pattern is scanned on: a namespace's slot owner, or every primary."""
        if not cluster:
            return [(pattern, None) for pattern, _ in patterns]
        targets: list[tuple[bytes, Any]] = []
        for pattern, sample in patterns:
            if sample is None:
                targets += [(pattern, node) for node in client.get_primaries()]
            else:
                targets.append((pattern, client.get_node_from_key(sample)))
        return targets

    # -- introspection (SupportsIntrospection; the `toolkit` command's stats and ls) --
    # Sync only, for tools: SCAN in steps of SCAN_COUNT (never KEYS), one pipelined
    # STRLEN or PTTL round trip per step.

    def stats(self) -> CacheStats:
        """Entries, value bytes, entries per namespace; ``expired=None``: Redis drops them."""
        rows: list[tuple[Namespace | None, int, int, int]] = []
        for target, found in self._scan_all():
            pipe = target.pipeline(transaction=False)
            for rkey in found:
                pipe.strlen(rkey)
            for rkey, size in zip(found, self._execute(pipe), strict=True):
                decoded = self._codec.decode(rkey)
                if decoded is not None and size:
                    rows.append((decoded[0], 1, int(size), 0))
        return CacheStats.tally(rows, expires_itself=True)

    def namespaces(self) -> dict[Namespace, int]:
        """Entries per namespace (namespaces stored hashed, over 120 bytes, are left out)."""
        counts: dict[Namespace, int] = {}
        for _, found in self._scan_all():
            for rkey in found:
                decoded = self._codec.decode(rkey)
                if decoded is not None and decoded[0] is not None:
                    counts[decoded[0]] = counts.get(decoded[0], 0) + 1
        return counts

    def iter_keys(self, namespace: Namespace) -> Iterator[KeyInfo]:
        """The keys of exactly ``namespace``, in SCAN order, with seconds left to live."""
        [(pattern, sample)] = self._patterns([namespace])
        for target, found in self._scan(pattern, sample):
            pipe = target.pipeline(transaction=False)
            for rkey in found:
                pipe.pttl(rkey)
            for rkey, pttl in zip(found, self._execute(pipe), strict=True):
                decoded = self._codec.decode(rkey)
                if decoded is None or pttl == -2:  # not ours, or expired since the SCAN
                    continue
                yield KeyInfo(decoded[1], None if pttl < 0 else pttl / 1000)

    def purge_expired(self) -> int:
        """Nothing to do: Redis deletes expired keys itself. Returns 0."""
        return 0

    def _scan_all(self) -> Iterator[tuple[Any, list[bytes]]]:
        [(pattern, sample)] = self._patterns(None)
        return self._scan(pattern, sample)

    def _scan(self, pattern: bytes, sample: bytes | None) -> Iterator[tuple[Any, list[bytes]]]:
        """``(connection, keys)`` per SCAN step over the node(s) that can hold ``pattern``."""
        client = self._sync_client()
        try:
            for _, node in self._scan_targets(client, [(pattern, sample)], self._cluster):
                target = client.get_redis_connection(node) if self._cluster else client
                cursor = 0
                while True:
                    cursor, found = target.scan(cursor, match=pattern, count=SCAN_COUNT)
                    if found:
                        yield target, list(found)
                    if int(cursor) == 0:
                        break
        except _IO_ERRORS as exc:
            raise _error(exc, "scan") from exc

    @staticmethod
    def _execute(pipe: Any) -> list[Any]:
        try:
            return list(pipe.execute())
        except _IO_ERRORS as exc:
            raise _error(exc, "scan") from exc

    # -- end of introspection --

    # -- clients --

    def _sync_client(self) -> Any:
        if self._closed:
            raise CacheClosedError("this RedisCache is closed")
        if self.client is None:
            raise TypeError(_missing_client("an async", "aget/aset/aclear", "client=redis.Redis"))
        return self.client

    async def _bounded(self, operation: str, call: Awaitable[T]) -> T:
        """Run an async call within ``max_call_seconds`` as a whole (if declared)."""
        if self.max_call_seconds is None:
            return await call
        try:
            async with asyncio.timeout(self.max_call_seconds):
                return await call
        except TimeoutError as exc:
            raise _error(exc, operation) from exc

    def _budget(self, operation: str) -> _Budget:
        return _Budget(self.max_call_seconds, self._round_trip, operation)

    async def _ready(self, operation: str) -> None:
        """Make this loop's client, and have a cluster client learn the slots, before a
        call's bound starts: as for SQLite, opening is not waiting (a loaded machine's first
        call must not time out on it); the client's own timeouts bound it."""
        aclient = await self._async_client()
        if self._acluster:
            try:
                await aclient.initialize()  # returns at once once the topology is known
            except _IO_ERRORS as exc:
                raise _error(exc, operation) from exc

    async def _async_client(self) -> Any:
        if self._closed:
            raise CacheClosedError("this RedisCache is closed")
        if not self._aclients.available:
            raise TypeError(
                _missing_client("a sync", "get/set/clear", "aclient=redis.asyncio.Redis")
            )
        return await self._aclients.current()

    def close(self) -> None:
        """Close the sync client if this cache made it (``from_url``); one passed in stays open.
        Later calls raise ``CacheClosedError``, as with the other backends."""
        self._closed = True
        if self._owns_clients and self.client is not None:
            if self._cluster:
                # RedisCluster.close() can leave a node's pooled socket open (redis-py 8):
                # disconnect every node's pool first so nothing leaks.
                for node in self.client.get_nodes():
                    if node.redis_connection is not None:
                        node.redis_connection.connection_pool.disconnect()
            self.client.close()

    async def aclose(self) -> None:
        """Close both clients if this cache made them; a client passed in is left open."""
        self.close()
        if self._owns_clients:
            await self._aclients.aclose()


def _endpoint(client: Any) -> str:
    if isinstance(client, (RedisCluster, AsyncRedisCluster)):
        return "redis cluster"
    kwargs = getattr(getattr(client, "connection_pool", None), "connection_kwargs", {})
    if "path" in kwargs:
        return f"unix:{kwargs['path']}/{kwargs.get('db', 0)}"
    return f"{kwargs.get('host', '?')}:{kwargs.get('port', '?')}/{kwargs.get('db', 0)}"


def _missing_client(kind: str, methods: str, argument: str) -> str:
    return (
        f"this RedisCache has only {kind} client: call {methods}, or pass {argument}(...) "
        "too (RedisCache.from_url makes both)"
    )


def _zip_plan(
    plan: Sequence[Sequence[bytes]], replies: Sequence[Sequence[Any]]
) -> dict[bytes, Any]:
    blobs: dict[bytes, Any] = {}
    for chunk, reply in zip(plan, replies, strict=True):
        blobs.update(zip(chunk, reply, strict=True))
    return blobs


def _retry_once(options: dict[str, Any], *, sync: bool) -> dict[str, Any]:
    """Default to one immediate retry on a dropped connection, none on timeouts."""
    if "retry" in options:
        return options
    if sync:
        from redis.retry import Retry
    else:
        from redis.asyncio.retry import Retry  # type: ignore[assignment]
    return {**options, "retry": Retry(NoBackoff(), 1, supported_errors=(redis.ConnectionError,))}
