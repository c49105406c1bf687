"""InMemoryCache against LangGraph's InMemoryCache (targets from issue 2) and cachetools."""

from __future__ import annotations

import gc
import itertools
import tracemalloc
from collections.abc import Iterator
from typing import Any

import cachetools
from langgraph.cache.memory import InMemoryCache as LangGraphInMemoryCache

from benchmarks._harness import Comparison
from benchmarks.workload import PRELOAD, VALUE, keys, pairs
from toolkit import InMemoryCache


def suite() -> Iterator[Comparison]:
    """Memory backend comparisons on 10k preloaded keys."""
    ours: InMemoryCache[Any] = InMemoryCache(max_entries=PRELOAD * 4)
    theirs: LangGraphInMemoryCache[Any] = LangGraphInMemoryCache()
    for cache in (ours, theirs):
        cache.set(pairs(PRELOAD))
    one = keys(1, 5_000)
    hundred = keys(100, 1_000)

    yield Comparison(
        "memory get 1 hit",
        lambda: ours.get(one),
        lambda: theirs.get(one),
        "langgraph InMemoryCache",
        target=0.7,
        inner_loops=2_000,
    )
    yield Comparison(
        "memory get 100 hits",
        lambda: ours.get(hundred),
        lambda: theirs.get(hundred),
        "langgraph InMemoryCache",
        target=0.7,
        inner_loops=50,
    )

    fresh = itertools.count(PRELOAD)

    def set_ours() -> None:
        ours.set(pairs(1, next(fresh) % (PRELOAD * 2)))

    def set_theirs() -> None:
        theirs.set(pairs(1, next(fresh) % (PRELOAD * 2)))

    yield Comparison(
        "memory set 1",
        set_ours,
        set_theirs,
        "langgraph InMemoryCache",
        target=1.0,
        inner_loops=2_000,
    )

    yield from _large()

    # cachetools keeps live objects (no serialization, no copy): the floor, reported only.
    lru: cachetools.LRUCache[Any, Any] = cachetools.LRUCache(maxsize=PRELOAD * 4)
    for k in keys(PRELOAD):
        lru[k] = VALUE
    single = one[0]
    yield Comparison(
        "memory get 1 hit vs cachetools.LRUCache[k]",
        lambda: ours.get(one),
        lambda: lru.get(single),
        "cachetools LRUCache (live objects)",
        inner_loops=2_000,
    )


LARGE = 100_000


def _large() -> Iterator[Comparison]:
    """One 100k-entry ``set`` and the bytes each stored entry costs (issue 12)."""
    batch = pairs(LARGE)
    yield Comparison(
        "memory set of 100k entries (one call, fresh cache)",
        lambda: InMemoryCache(max_entries=None).set(batch),
        lambda: LangGraphInMemoryCache().set(batch),
        "langgraph InMemoryCache",
        target=1.0,
        inner_loops=1,
        rounds=7,
    )
    held: list[Any] = []
    started: list[int] = []

    def build(make: Any) -> None:
        held.clear()
        gc.collect()
        tracemalloc.start()
        started[:] = [tracemalloc.get_traced_memory()[0]]
        cache = make()
        cache.set(batch)
        held.append(cache)

    def per_entry() -> float:
        gc.collect()
        used = tracemalloc.get_traced_memory()[0] - started[0]
        tracemalloc.stop()
        held.clear()
        return used / LARGE

    yield Comparison(
        "memory bytes per entry, 100k entries",
        lambda: build(lambda: InMemoryCache(max_entries=None)),
        lambda: build(LangGraphInMemoryCache),
        "langgraph InMemoryCache",
        target=1.0,
        rounds=3,
        measure=per_entry,
    )
