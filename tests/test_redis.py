"""RedisCache beyond the conformance suite: key encoding, bounded clears, timeouts, LangGraph."""

from __future__ import annotations

import asyncio
import operator
import os
import re
import socket
import subprocess
import sys
import threading
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Annotated, Any, TypedDict

import pytest
import redis
import redis.asyncio as aredis
from hypothesis import given, settings
from hypothesis import strategies as st
from langgraph.graph import END, START, StateGraph
from langgraph.types import CachePolicy
from prometheus_client import CollectorRegistry

from tests.redis_support import TEST_TIMEOUT, make_cache, unique_prefix
from toolkit import (
    BackendError,
    CacheClosedError,
    CacheTimeoutError,
    EventLoopMismatchError,
    FullKey,
    Namespace,
    RedisCache,
    cache_from_url,
    observe,
)
from toolkit.backends import redis as redis_backend
from toolkit.backends._redis_keys import KeyCodec

pytestmark = pytest.mark.redis

# -- key encoding (no server needed) --

text = st.text(alphabet=st.characters(codec="utf-8"), max_size=8)
long_text = st.text(alphabet=st.characters(codec="utf-8"), min_size=60, max_size=200)
ns_part = text | long_text
full_keys = st.tuples(st.lists(ns_part, max_size=3).map(tuple), text | long_text)


@settings(max_examples=300, deadline=None)
@given(full_keys, full_keys)
def test_encoding_is_injective_and_namespaces_are_prefix_free(a: FullKey, b: FullKey) -> None:
    codec = KeyCodec("p:")
    assert (codec.encode(*a) == codec.encode(*b)) == (a == b)
    # A namespace's keys are exactly those starting with its segment: clear() relies on it.
    assert codec.encode(*b).startswith(codec.segment(a[0])) == (a[0] == b[0])


def test_long_parts_are_hashed_and_keys_stay_short() -> None:
    codec = KeyCodec("p:")
    long_ns: Namespace = ("x" * 5000, "y" * 5000)
    rkey = codec.encode(long_ns, "k" * 10_000)
    assert len(rkey) < 120
    assert codec.encode(long_ns, "k" * 10_000) == rkey
    assert codec.encode(long_ns, "k" * 9_999) != rkey


@settings(max_examples=300, deadline=None)
@given(full_keys, full_keys)
def test_lease_keys_are_never_entries(a: FullKey, b: FullKey) -> None:
    codec = KeyCodec("p:")
    lease = codec.lease_key(*a)
    assert lease != codec.encode(*b)
    assert codec.decode(lease) is None  # introspection skips it
    assert lease.startswith(codec.segment(a[0]))  # same slot; clear(ns) removes it
    assert (codec.lease_key(*a) == codec.lease_key(*b)) == (a == b)


def test_decode_refuses_keys_that_only_look_like_entries() -> None:
    codec = KeyCodec("p:")
    hashed = codec.encode(("n",), "k" * 500)
    assert codec.decode(hashed) == (("n",), "#" + hashed.split(b"#")[1].decode())
    assert codec.decode(hashed + b"!lease") is None
    assert codec.decode(codec.encode(("n",), "k") + b"!lease") == (("n",), "k!lease")  # a real key
    assert codec.decode(codec.segment(("n",)) + b"!lease:k") is None
    assert codec.decode(codec.segment(("n",)) + b"#nothex") is None


def test_introspection_skips_lease_keys(
    redis_url: str, redis_closer: list[RedisCache[Any]]
) -> None:
    cache = make_cache(redis_closer, redis_url)
    cache.set({(("n",), "k"): (1, None), (("n",), "x" * 500): (2, None)})
    codec = KeyCodec(cache.prefix)
    cache.client.set(codec.lease_key(("n",), "k"), b"token", px=60_000)
    cache.client.set(codec.lease_key(("n",), "x" * 500), b"token", px=60_000)
    cache.client.set(codec.lease_key(("other",), "k"), b"token", px=60_000)
    assert cache.namespaces() == {("n",): 2}
    assert len(list(cache.iter_keys(("n",)))) == 2
    assert cache.stats().entries == 2
    cache.clear([("n",)])
    assert cache.client.exists(codec.lease_key(("n",), "k")) == 0


@pytest.mark.parametrize("prefix", ["", "a{b}:", "}", 3])
def test_bad_prefix_rejected(prefix: Any) -> None:
    with pytest.raises((TypeError, ValueError), match="prefix"):
        KeyCodec(prefix)


@pytest.mark.parametrize(
    "url",
    ["redis://127.0.0.1:6379/x", "redis://127.0.0.1:6379/1/2", "redis://127.0.0.1:6379/1x"],
)
def test_a_database_that_is_no_number_is_refused(url: str) -> None:
    """redis-py reads ``/x`` as database 0 and ``/1/2`` as database 12: a cache (or a
    ``toolkit clear``) there would read and delete another database's entries."""
    with pytest.raises(ValueError, match="database must be a number"):
        RedisCache.from_url(url)
    with pytest.raises(ValueError, match="database must be a number"):
        cache_from_url(url)


@pytest.mark.parametrize(
    "url", ["redis://127.0.0.1:6379", "redis://127.0.0.1:6379/", "redis://h/15"]
)
def test_a_database_given_as_a_number_or_not_at_all_is_taken(url: str) -> None:
    RedisCache.from_url(url).close()


# -- caches on the session server (standalone and cluster) --


@pytest.fixture(params=["standalone", "cluster"])
def cache(request: pytest.FixtureRequest, redis_closer: list[RedisCache[Any]]) -> RedisCache[Any]:
    """A fresh-prefixed cache on the session server or on the session cluster."""
    cluster = request.param == "cluster"
    url = request.getfixturevalue("redis_cluster_url" if cluster else "redis_url")
    return make_cache(redis_closer, url, cluster=cluster)


GLOB_NAMESPACES: list[Namespace] = [
    ("a*",),
    ("a*", "child"),
    ("a",),
    ("ab",),
    ("a*b",),
    ("a?",),
    ("a[*]",),
    ("a\\*",),
    ("*",),
    (),
]


@pytest.mark.parametrize("doomed", [("a*",), ("*",), ("a[*]",), ("a\\*",)], ids=repr)
async def test_glob_characters_in_namespace_clear_only_it(
    cache: RedisCache[Any], doomed: Namespace
) -> None:
    pairs: dict[FullKey, tuple[Any, int | None]] = {
        (ns, key): (i, None) for i, ns in enumerate(GLOB_NAMESPACES) for key in ("k", "*", "")
    }
    cache.set(pairs)
    await cache.aclear([doomed])
    expected = {fk: v for fk, (v, _) in pairs.items() if fk[0] != doomed}
    assert cache.get(list(pairs)) == expected
    cache.set(pairs)
    cache.clear([doomed])
    assert await cache.aget(list(pairs)) == expected


async def test_clear_all_keeps_other_prefixes(
    cache: RedisCache[Any], request: pytest.FixtureRequest, redis_closer: list[RedisCache[Any]]
) -> None:
    url = request.getfixturevalue("redis_cluster_url" if cache._cluster else "redis_url")
    other = make_cache(redis_closer, url, cluster=cache._cluster)
    nested = make_cache(redis_closer, url, cluster=cache._cluster, prefix=cache.prefix + "inner:")
    entry: FullKey = (("ns",), "k")
    cache.set({entry: (1, None)})
    other.set({entry: (2, None)})
    nested.set({entry: (3, None)})
    await cache.aclear()
    assert cache.get([entry]) == {}
    assert other.get([entry]) == {entry: 2}
    assert nested.get([entry]) == {entry: 3}  # a prefix that extends ours is not ours
    nested.clear()
    assert other.get([entry]) == {entry: 2}


async def test_batches_span_many_namespaces(cache: RedisCache[Any]) -> None:
    # In cluster mode these land in many slots: reads and writes are grouped per slot.
    pairs: dict[FullKey, tuple[Any, int | None]] = {
        ((f"ns{i % 37}",), f"k{i}"): (i, 60 if i % 2 else None) for i in range(2_500)
    }
    await cache.aset(pairs)
    assert cache.get(list(pairs)) == {fk: v for fk, (v, _) in pairs.items()}
    cache.set(pairs)
    assert await cache.aget(list(pairs)) == {fk: v for fk, (v, _) in pairs.items()}


async def test_a_batch_of_several_chunks_is_written_whole(
    redis_url: str, redis_closer: list[RedisCache[Any]]
) -> None:
    """A batch over WRITE_CHUNK entries was one script call per chunk, and a sync call starts
    a further round trip only while a whole one fits its bound: with a bound of one round
    trip, set() wrote the first chunk and raised CacheTimeoutError (an async call stopped by
    its timer between chunks did the same), leaving part of the batch stored. The chunks now
    go in one MULTI/EXEC round trip: all of the batch is written, or none of it."""
    reader = make_cache(redis_closer, redis_url)
    one_round_trip = 2 * TEST_TIMEOUT
    tight: RedisCache[Any] = RedisCache.from_url(
        redis_url,
        prefix=reader.prefix,
        socket_timeout=TEST_TIMEOUT,
        socket_connect_timeout=TEST_TIMEOUT,
        max_call_seconds=one_round_trip,
    )
    entries: dict[FullKey, tuple[Any, int | None]] = {
        (("batch",), f"k{i}"): (i, None) for i in range(2 * redis_backend.WRITE_CHUNK + 500)
    }
    expected = {key: value for key, (value, _) in entries.items()}
    try:
        tight.set(entries)
        assert reader.get(list(entries)) == expected
        reader.clear()
        await tight.aset(entries)
        assert await reader.aget(list(entries)) == expected
    finally:
        await tight.aclose()


async def test_ttl_is_milliseconds_and_none_never_expires(cache: RedisCache[Any]) -> None:
    timed, forever, tiny = (("t",), "timed"), (("t",), "forever"), (("t",), "tiny")
    cache.set({timed: ("x", 30), forever: ("y", None)})
    await cache.aset({tiny: ("z", 0.0001)})  # type: ignore[dict-item]
    client = cache.client
    assert 29_000 < client.pttl(cache.redis_key(timed)) <= 30_000
    assert client.pttl(cache.redis_key(forever)) == -1
    assert client.pttl(cache.redis_key(tiny)) <= 1  # at least 1 ms, never a rejected PX 0


async def test_concurrent_agets_each_get_their_own_answer(cache: RedisCache[Any]) -> None:
    pairs: dict[FullKey, tuple[Any, int | None]] = {
        ((f"n{i % 5}",), f"k{i}"): (i, None) for i in range(60)
    }
    cache.set(pairs)
    keys = list(pairs)

    async def one(i: int) -> dict[FullKey, Any]:
        return await cache.aget([keys[i], (("n0",), "absent")])

    victim = asyncio.ensure_future(cache.aget([keys[0]]))
    calls = [asyncio.ensure_future(one(i)) for i in range(60)]
    await asyncio.sleep(0)
    victim.cancel()  # a cancelled waiter does not disturb the batch it joined
    results = await asyncio.gather(*calls)
    assert results == [{keys[i]: i} for i in range(60)]
    assert victim.cancelled()


async def test_undecodable_entry_is_reported_and_deleted(cache: RedisCache[Any]) -> None:
    seen: list[tuple[Namespace, str, int]] = []
    cache.add_eviction_listener(lambda ns, cause, count: seen.append((ns, cause, count)))
    bad: FullKey = (("n",), "bad")
    cache.client.set(cache.redis_key(bad), b"\x03tag")  # header says 3 bytes of tag: truncated
    assert cache.get([bad]) == {}
    assert cache.client.exists(cache.redis_key(bad)) == 0
    cache.client.set(cache.redis_key(bad), b"garbage that is not ours")
    assert await cache.aget([bad, (("n",), "absent")]) == {}
    assert cache.client.exists(cache.redis_key(bad)) == 0
    assert seen == [(("n",), "invalid", 1), (("n",), "invalid", 1)]


# -- clearing 100k keys never blocks the server for long --

_MORE = re.compile(rb"\.\.\. \((\d+) more arguments\)$")


def _arg_count(command: bytes) -> int:
    """Arguments after the command name in a SLOWLOG entry (which shows at most 31 of them)."""
    more = _MORE.search(command)
    shown = command[: more.start()] if more else command
    return len(shown.split()) - 1 + (int(more.group(1)) if more else 0)


async def test_clear_100k_keys_in_bounded_commands(
    private_redis_url: str, redis_closer: list[RedisCache[Any]], mode: str
) -> None:
    cache = make_cache(redis_closer, private_redis_url)
    admin = cache.client
    ns: Namespace = ("big",)
    n = 100_000
    cache.set({(ns, f"k{i}"): (i, None) for i in range(n)})
    cache.set({(("neighbour",), "k"): ("kept", None)})
    admin.config_set("slowlog-log-slower-than", 0)
    admin.config_set("slowlog-max-len", 10_000)
    admin.slowlog_reset()
    if mode == "sync":
        cache.clear([ns])
    else:
        await cache.aclear([ns])
    log = admin.slowlog_get(10_000)
    unlinks = [e for e in log if e["command"].startswith(b"UNLINK ")]
    scans = [e for e in log if e["command"].startswith(b"SCAN ")]
    assert sum(_arg_count(e["command"]) for e in unlinks) == n
    assert max(_arg_count(e["command"]) for e in unlinks) <= redis_backend.UNLINK_BATCH
    for scan in scans:
        assert scan["command"].split()[-2:] == [b"COUNT", str(redis_backend.SCAN_COUNT).encode()]
    assert not [e for e in log if e["command"].split()[0] in (b"KEYS", b"FLUSHDB", b"DEL")]
    longest = max(e["duration"] for e in unlinks + scans)
    print(f"longest SCAN/UNLINK while clearing {n} keys: {longest} µs")  # seen with -s
    assert cache.get([(ns, "k0"), (("neighbour",), "k")]) == {(("neighbour",), "k"): "kept"}


# -- a server that accepts connections and never answers --


@pytest.fixture
def silent_server() -> Iterator[str]:
    """A loopback listener that completes TCP handshakes and never says a word."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(64)
        yield f"redis://127.0.0.1:{listener.getsockname()[1]}/0"


@pytest.fixture
async def silent_cache(silent_server: str) -> AsyncIterator[RedisCache[Any]]:
    cache: RedisCache[Any] = RedisCache.from_url(silent_server, socket_timeout=0.3)
    yield cache
    await cache.aclose()


def test_silent_server_times_out_sync(silent_cache: RedisCache[Any]) -> None:
    entry: FullKey = (("n",), "k")
    started = time.monotonic()
    with pytest.raises(CacheTimeoutError) as caught:
        silent_cache.get([entry])
    elapsed = time.monotonic() - started
    assert isinstance(caught.value.__cause__, redis.TimeoutError)
    # redis-py's defaults would wait forever here; generous bound, not a benchmark.
    assert elapsed < 10 * 0.3
    with pytest.raises(CacheTimeoutError):
        silent_cache.set({entry: (1, None)})
    with pytest.raises(CacheTimeoutError):
        silent_cache.clear()


async def test_silent_server_times_out_async_without_blocking_the_loop(
    silent_cache: RedisCache[Any],
) -> None:
    gaps: list[float] = []
    stop = asyncio.Event()

    async def ticker() -> None:
        last = time.monotonic()
        while not stop.is_set():
            await asyncio.sleep(0.005)
            now = time.monotonic()
            gaps.append(now - last)
            last = now

    ticking = asyncio.create_task(ticker())
    await asyncio.sleep(0.02)
    try:
        with pytest.raises(CacheTimeoutError) as caught:
            await silent_cache.aget([(("n",), "k")])
        with pytest.raises(CacheTimeoutError):
            await silent_cache.aset({(("n",), "k"): (1, None)})
        with pytest.raises(CacheTimeoutError):
            await silent_cache.aclear([("n",)])
    finally:
        stop.set()
        await ticking
    # The whole-call bound (asyncio.timeout) or a socket timeout: whichever came first.
    assert isinstance(caught.value.__cause__, (redis.TimeoutError, TimeoutError))
    # The loop kept running while each call waited out its 0.3 s timeout.
    assert len(gaps) > 10
    assert max(gaps) < 0.3 / 2


def test_refused_connection_is_backend_error() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    cache: RedisCache[Any] = RedisCache.from_url(f"redis://127.0.0.1:{port}/0")
    try:
        with pytest.raises(BackendError) as caught:
            cache.get([(("n",), "k")])
        assert isinstance(caught.value.__cause__, redis.ConnectionError)
    finally:
        cache.close()
    with pytest.raises(BackendError, match="cluster discovery"):
        RedisCache.from_url(f"redis://127.0.0.1:{port}/0", cluster=True)


async def test_use_after_close_raises_as_with_every_backend(redis_url: str) -> None:
    """A closed RedisCache used to reconnect silently; SQLite and Postgres refuse."""
    made: RedisCache[Any] = RedisCache.from_url(redis_url, prefix=unique_prefix())
    client = redis.Redis.from_url(redis_url)
    given_client: RedisCache[Any] = RedisCache(client, prefix=unique_prefix())
    try:
        for cache in (made, given_client):
            cache.set({(("n",), "k"): (1, None)})
            await cache.aclose()
            cache.close()  # idempotent
            with pytest.raises(CacheClosedError):
                cache.get([(("n",), "k")])
            with pytest.raises(CacheClosedError):
                cache.set({(("n",), "k"): (2, None)})
            with pytest.raises(CacheClosedError):
                await cache.aget([(("n",), "k")])
            with pytest.raises(CacheClosedError):
                await cache.aclear()
        assert client.ping()  # a client passed in is still never closed
    finally:
        client.close()


# -- constructing with the wrong kind of client --


async def test_sync_only_cache_refuses_async_calls(redis_url: str) -> None:
    client = redis.Redis.from_url(redis_url)
    try:
        cache: RedisCache[Any] = RedisCache(client, prefix=unique_prefix())
        assert cache.get([(("n",), "k")]) == {}
        with pytest.raises(TypeError, match=r"aclient=redis\.asyncio\.Redis"):
            await cache.aget([(("n",), "k")])
        with pytest.raises(TypeError, match="only a sync client"):
            await cache.aset({(("n",), "k"): (1, None)})
        await cache.aclose()
        assert client.ping()  # a client passed in is used as given, never closed
    finally:
        client.close()


async def test_async_only_cache_refuses_sync_calls(redis_url: str) -> None:
    aclient = aredis.Redis.from_url(redis_url)
    try:
        cache: RedisCache[Any] = RedisCache(aclient, prefix=unique_prefix())  # async as client=
        assert cache.aclient is aclient
        assert await cache.aget([(("n",), "k")]) == {}
        with pytest.raises(TypeError, match=r"client=redis\.Redis"):
            cache.get([(("n",), "k")])
        with pytest.raises(TypeError, match="only an async client"):
            cache.clear()
    finally:
        await aclient.aclose()


async def test_bad_clients_rejected(redis_url: str) -> None:
    with pytest.raises(TypeError, match="needs client"):
        RedisCache()
    with pytest.raises(TypeError, match="redis-py client"):
        RedisCache(client="redis://localhost")
    text_client = redis.Redis.from_url(redis_url, decode_responses=True)
    try:
        with pytest.raises(ValueError, match="decode_responses=False"):
            RedisCache(text_client)
    finally:
        text_client.close()


# -- LangGraph graphs compiled with RedisCache --


class State(TypedDict):
    x: int
    calls: Annotated[list[int], operator.add]


def _graph(cache: Any, runs: list[int]) -> Any:
    def double(state: State) -> dict[str, Any]:
        runs.append(state["x"])
        return {"x": state["x"] * 2, "calls": [state["x"]]}

    builder = StateGraph(State)
    builder.add_node("double", double, cache_policy=CachePolicy(ttl=60))
    builder.add_edge(START, "double")
    builder.add_edge("double", END)
    return builder.compile(cache=cache)


def test_langgraph_sync_graph_uses_redis_cache(
    redis_closer: list[RedisCache[Any]], redis_url: str
) -> None:
    runs: list[int] = []
    graph = _graph(make_cache(redis_closer, redis_url), runs)
    first = graph.invoke({"x": 3, "calls": []})
    assert graph.invoke({"x": 3, "calls": []}) == first == {"x": 6, "calls": [3]}
    assert runs == [3]
    graph.invoke({"x": 4, "calls": []})
    assert runs == [3, 4]
    graph.clear_cache()
    graph.invoke({"x": 3, "calls": []})
    assert runs == [3, 4, 3]


async def test_langgraph_async_graph_uses_redis_cache(
    redis_closer: list[RedisCache[Any]], redis_url: str
) -> None:
    runs: list[int] = []
    graph = _graph(make_cache(redis_closer, redis_url), runs)
    first = await graph.ainvoke({"x": 5, "calls": []})
    assert await graph.ainvoke({"x": 5, "calls": []}) == first == {"x": 10, "calls": [5]}
    assert runs == [5]
    await graph.aclear_cache()
    await graph.ainvoke({"x": 5, "calls": []})
    assert runs == [5, 5]


def test_toolkit_imports_without_redis_and_names_the_extra() -> None:
    script = (
        "import sys; sys.modules['redis'] = None\n"
        "import toolkit\n"
        "try:\n"
        "    toolkit.RedisCache\n"
        "except ImportError as exc:\n"
        "    print(exc)\n"
    )
    root = Path(__file__).resolve().parent.parent
    done = subprocess.run(
        [sys.executable, "-c", script],
        env={**os.environ, "PYTHONPATH": str(root)},
        capture_output=True,
        text=True,
        check=True,
    )
    assert "pip install 'langgraph-cache-toolkit[redis]'" in done.stdout


async def test_call_bound_known_only_for_clients_it_made(
    redis_url: str, redis_closer: list[RedisCache[Any]]
) -> None:
    made = make_cache(redis_closer, redis_url, socket_timeout=0.2, socket_connect_timeout=0.1)
    assert made.max_call_seconds == pytest.approx(0.6)  # two round trips fit
    bounded = make_cache(
        redis_closer,
        redis_url,
        socket_timeout=0.2,
        socket_connect_timeout=0.1,
        max_call_seconds=0.4,
    )
    assert bounded.max_call_seconds == pytest.approx(0.4)
    with pytest.raises(ValueError, match="must fit one round trip"):
        make_cache(
            redis_closer,
            redis_url,
            socket_timeout=0.2,
            socket_connect_timeout=0.1,
            max_call_seconds=0.2,
        )
    given: RedisCache[Any] = RedisCache(redis.Redis.from_url(redis_url), prefix=unique_prefix())
    try:
        assert given.max_call_seconds is None
    finally:
        given.client.close()


def test_cluster_close_leaves_no_socket_open(redis_cluster_url: str) -> None:
    import gc
    import warnings

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        cache: RedisCache[Any] = RedisCache.from_url(
            redis_cluster_url, cluster=True, prefix=unique_prefix()
        )
        cache.set({((str(i),), "k"): (i, None) for i in range(20)})
        cache.get([((str(i),), "k") for i in range(20)])
        cache.clear()
        cache.close()
        del cache
        gc.collect()
    assert [w for w in caught if issubclass(w.category, ResourceWarning)] == []


@pytest.mark.parametrize("cluster", [False, True], ids=["standalone", "cluster"])
@pytest.mark.parametrize("observed", [False, True], ids=["bare", "observed"])
def test_one_cache_serves_every_event_loop(
    request: pytest.FixtureRequest, cluster: bool, observed: bool
) -> None:
    """asyncio.run twice, and two threads with their own loops, share one from_url cache."""
    url = request.getfixturevalue("redis_cluster_url" if cluster else "redis_url")
    backend: RedisCache[Any] = RedisCache.from_url(url, prefix=unique_prefix())
    cache: Any = (
        observe(backend, registry=CollectorRegistry(), deadline=30) if observed else backend
    )

    async def round_trip(tag: str) -> Any:
        await cache.aset({(("loops",), tag): (tag, None)})
        return (await cache.aget([(("loops",), tag)])).get((("loops",), tag))

    assert asyncio.run(round_trip("first")) == "first"
    assert asyncio.run(round_trip("second")) == "second"  # a second loop: no hang, no error
    answers: dict[str, Any] = {}

    def in_thread(tag: str) -> None:
        answers[tag] = asyncio.run(round_trip(tag))

    threads = [threading.Thread(target=in_thread, args=(f"t{i}",)) for i in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert answers == {"t0": "t0", "t1": "t1"}

    async def done() -> None:
        await cache.aclear()
        await cache.aclose()

    asyncio.run(done())


@pytest.mark.filterwarnings("ignore::ResourceWarning")  # a dead loop's sockets: closed as collected
def test_redis_loops_closed_by_hand_leave_no_connection_behind(redis_url: str) -> None:
    """Each loop closed by hand (no ``asyncio.run``: nothing closed its client) kept its
    client and the client's connection for the cache's life: one more open connection per
    loop, without bound. Another loop's first call now lets them go."""
    import gc
    import uuid

    name = f"toolkit-loops-{uuid.uuid4().hex[:12]}"
    cache: RedisCache[Any] = RedisCache.from_url(
        redis_url, prefix=unique_prefix(), client_name=name
    )
    admin = redis.Redis.from_url(redis_url)
    key: FullKey = (("loops",), "k")

    def connections_within(most: int) -> int:
        deadline = time.monotonic() + 30  # the server sees a close a moment later: a hang guard
        while True:
            gc.collect()
            found = sum(1 for client in admin.client_list() if client.get("name") == name)
            if found <= most or time.monotonic() > deadline:
                return found
            time.sleep(0.05)

    try:
        for n in range(4):
            loop = asyncio.new_event_loop()
            loop.run_until_complete(cache.aset({key: (n, None)}))
            assert loop.run_until_complete(cache.aget([key])) == {key: n}
            loop.close()
            del loop
        assert connections_within(1) <= 1  # the last loop's, let go by the next loop's call
        assert asyncio.run(cache.aget([key])) == {key: 3}
        assert connections_within(0) == 0
    finally:
        admin.close()
        asyncio.run(cache.aclear())
        asyncio.run(cache.aclose())


def test_a_given_async_client_on_a_second_loop_is_a_clear_error(redis_url: str) -> None:
    aclient = aredis.Redis.from_url(redis_url)
    cache: RedisCache[Any] = RedisCache(aclient, prefix=unique_prefix())

    async def first() -> Any:
        try:
            return await cache.aget([(("n",), "k")])
        finally:
            await aclient.aclose()  # the user's client: closed by the user, on its loop

    assert asyncio.run(first()) == {}
    with pytest.raises(EventLoopMismatchError, match="from_url"):
        asyncio.run(cache.aget([(("n",), "k")]))
    with pytest.raises(ValueError):  # it is a ValueError too: a usage mistake, not an outage
        asyncio.run(cache.aget([(("n",), "k")]))


def test_a_slow_cluster_discovery_is_not_counted_against_the_first_call(
    redis_cluster_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """On a loaded machine learning the slots can outlast a call's bound: like opening a
    SQLite connection, it happens before the bound starts (its own timeouts bound it)."""
    from redis.asyncio.cluster import RedisCluster as AsyncRedisCluster

    learn = AsyncRedisCluster.initialize
    learned: set[int] = set()

    async def slow_initialize(self: Any, *args: Any, **kwargs: Any) -> Any:
        if id(self) not in learned:  # the first discovery is slow; later calls return at once
            learned.add(id(self))
            await asyncio.sleep(0.3)
        return await learn(self, *args, **kwargs)

    monkeypatch.setattr(AsyncRedisCluster, "initialize", slow_initialize)
    cache = RedisCache.from_url(
        redis_cluster_url,
        cluster=True,
        prefix=f"toolkit:test:{os.getpid()}:{time.monotonic_ns()}:",
        socket_timeout=0.1,
        socket_connect_timeout=0.1,
        max_call_seconds=0.25,
    )
    key = (("cluster", "first"), "k")

    async def first_calls() -> dict[Any, Any]:
        try:
            await cache.aset({key: (1, None)})
            return await cache.aget([key])
        finally:
            await cache.aclear([key[0]])
            await cache.aclose()

    assert asyncio.run(first_calls()) == {key: 1}
    cache.close()
