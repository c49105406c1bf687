"""SqliteCache against LangGraph's SqliteCache (targets from issue 2), each in its own temp file."""

from __future__ import annotations

import asyncio
import itertools
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from langgraph.cache.sqlite import SqliteCache as LangGraphSqliteCache

from benchmarks._harness import Comparison, sync_of
from benchmarks.workload import PRELOAD, keys, pairs
from toolkit import SqliteCache


def suite() -> Iterator[Comparison]:
    """SQLite backend comparisons on 10k preloaded keys."""
    workdir = Path(tempfile.mkdtemp(prefix="toolkit-bench-sqlite-"))
    loop = asyncio.new_event_loop()
    ours: SqliteCache[Any] = SqliteCache(path=str(workdir / "ours.db"))
    theirs: LangGraphSqliteCache[Any] = LangGraphSqliteCache(path=str(workdir / "theirs.db"))
    try:
        for cache in (ours, theirs):
            cache.set(pairs(PRELOAD))
        hundred = keys(100, 1_000)

        yield Comparison(
            "sqlite get 100 hits",
            lambda: ours.get(hundred),
            lambda: theirs.get(hundred),
            "langgraph SqliteCache",
            target=0.15,
            inner_loops=10,
        )

        fresh = itertools.count(PRELOAD)

        def set_one(cache: Any) -> None:
            cache.set(pairs(1, next(fresh) % (PRELOAD * 2)))

        yield Comparison(
            "sqlite set 1",
            lambda: set_one(ours),
            lambda: set_one(theirs),
            "langgraph SqliteCache",
            target=0.3,
            inner_loops=10,
        )

        def set_hundred(cache: Any) -> None:
            cache.set(pairs(100, next(fresh) % (PRELOAD * 2)))

        yield Comparison(
            "sqlite set 100",
            lambda: set_hundred(ours),
            lambda: set_hundred(theirs),
            "langgraph SqliteCache",
            target=0.6,
            inner_loops=5,
        )

        singles = [[k] for k in hundred]

        async def gather_ours() -> object:
            return await asyncio.gather(*(ours.aget(one) for one in singles))

        async def gather_theirs() -> object:
            return await asyncio.gather(*(theirs.aget(one) for one in singles))

        yield Comparison(
            "sqlite 100 concurrent aget (asyncio.gather)",
            sync_of(gather_ours, loop),
            sync_of(gather_theirs, loop),
            "langgraph SqliteCache",
            target=0.3,
            inner_loops=5,
        )
    finally:
        loop.run_until_complete(ours.aclose())
        loop.run_until_complete(loop.shutdown_default_executor())
        loop.close()
        # LangGraph's cache has no close(): its connection closes when the object is collected.
        shutil.rmtree(workdir, ignore_errors=True)
