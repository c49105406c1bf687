"""Everyday controls of @cached: switches, cache_info, ttl forms, URLs, refusals."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import threading
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

import toolkit
from toolkit import InMemoryCache, cached, configure, disabled, refreshing


def counting(ns: str, **options: Any) -> tuple[Any, list[int]]:
    calls: list[int] = []

    @cached(ns, cache=InMemoryCache(), **options)
    def double(x: int) -> int:
        calls.append(x)
        return 2 * x

    return double, calls


def test_disabled_block_runs_the_function_and_stores_nothing() -> None:
    double, calls = counting("sw.off")
    with disabled():
        assert double(1) == 2
        assert double(1) == 2
    assert calls == [1, 1]
    assert double(1) == 2  # nothing was stored while disabled
    assert calls == [1, 1, 1]


def test_refreshing_block_recomputes_and_stores() -> None:
    double, calls = counting("sw.refresh")
    double(1)
    with refreshing():
        double(1)
    double(1)  # the refreshed value is served
    assert calls == [1, 1]


def test_configure_enabled_switches_the_process() -> None:
    double, calls = counting("sw.global")
    try:
        configure(enabled=False)
        double(3), double(3)
    finally:
        configure(enabled=True)
    double(3), double(3)
    assert calls == [3, 3, 3]
    try:  # a block's switch outranks the process's, either way round
        configure(enabled=False)
        with refreshing():
            double(3)
        assert calls == [3, 3, 3, 3]
    finally:
        configure(enabled=True)
    with disabled():
        double(3)
    assert calls == [3, 3, 3, 3, 3]
    with pytest.raises(TypeError, match="enabled"):
        configure(enabled="no")  # type: ignore[arg-type]


def test_switches_hold_per_thread_and_per_task() -> None:
    double, calls = counting("sw.scoped")
    double(5)
    seen: list[int] = []

    def other_thread() -> None:
        double(5)  # cached: the block below is not this thread's
        seen.append(len(calls))

    with disabled():
        thread = threading.Thread(target=other_thread)
        thread.start()
        thread.join()
    assert seen == [1]

    @cached("sw.tasks", cache=InMemoryCache())
    async def triple(x: int) -> int:
        calls.append(x)
        return 3 * x

    async def main() -> None:
        await triple(7)

        async def off() -> None:
            with disabled():
                await triple(7)

        await asyncio.gather(off(), triple(7))

    calls.clear()
    asyncio.run(main())
    assert calls == [7, 7]  # the first call and the disabled task; the other task hit


def test_the_environment_variable_starts_a_process_disabled(tmp_path: Path) -> None:
    script = (
        "from toolkit import cached, InMemoryCache\n"
        "calls = []\n"
        "@cached('env', cache=InMemoryCache())\n"
        "def f(x):\n    calls.append(x)\n    return x\n"
        "f(1); f(1)\nprint(len(calls))\n"
    )
    env = {**os.environ, "TOOLKIT_CACHE_DISABLED": "1"}
    done = subprocess.run(
        [sys.executable, "-c", script], env=env, capture_output=True, text=True, check=True
    )
    assert done.stdout.strip() == "2"
    env["TOOLKIT_CACHE_DISABLED"] = "maybe"
    bad = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True)
    assert bad.returncode != 0 and "TOOLKIT_CACHE_DISABLED" in bad.stderr


def test_cache_info_counts_like_lru_cache() -> None:
    double, _ = counting("info")
    double(1), double(1), double(2)

    @cached("info.err", cache=InMemoryCache())
    def boom(x: int) -> int:
        raise ValueError(x)

    with pytest.raises(ValueError):
        boom(1)
    info = double.cache_info()
    assert (info.hits, info.misses, info.loads, info.errors, info.coalesced) == (1, 2, 2, 0, 0)
    assert info.load_seconds >= 0
    assert boom.cache_info().errors == 1
    double.cache_clear()
    assert double.cache_info() == toolkit.decorators.stats.CacheInfo(0, 0, 0, 0, 0, 0.0)


def test_cache_info_counts_exactly_under_threads() -> None:
    double, _ = counting("info.threads")
    for x in range(10):
        double(x)
    barrier = threading.Barrier(8)

    def caller() -> None:
        barrier.wait()
        for i in range(2_000):
            double(i % 10)

    threads = [threading.Thread(target=caller) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    info = double.cache_info()
    assert (info.hits, info.misses, info.loads) == (16_000, 10, 10)
    double.cache_clear()
    double(1)
    assert double.cache_info()[:5] == (0, 1, 0, 0, 1)


def test_cache_parameters_and_ttl_forms() -> None:
    for given, seconds in (("90s", 90.0), ("15m", 900.0), ("1h", 3600.0), ("1d", 86400.0)):
        double, _ = counting("ttl", ttl=given)
        assert double.cache_parameters().ttl == seconds
    double, _ = counting("ttl", ttl=timedelta(minutes=2))
    assert double.cache_parameters().ttl == 120.0
    assert double.cache_parameters().namespace == ("ttl",)
    with pytest.raises(ValueError, match="ttl"):
        counting("ttl", ttl="soon")


def test_a_cache_url_is_accepted_like_configure(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'everyday.db'}"

    @cached("url", cache=url)
    def square(x: int) -> int:
        return x * x

    assert square(3) == 9 and square(3) == 9
    assert square.cache_info().hits == 1


@pytest.mark.parametrize("ns", [60, 1.5, timedelta(seconds=3)], ids=repr)
def test_a_ttl_given_as_the_namespace_gets_advice(ns: Any) -> None:
    with pytest.raises(TypeError, match=r"first argument is the namespace.*ttl="):
        cached(ns)


def test_generators_and_classes_are_refused_at_decoration() -> None:
    with pytest.raises(TypeError, match="generator"):

        @cached("gen")
        def numbers(n: int) -> Any:
            yield from range(n)

    with pytest.raises(TypeError, match="generator"):

        @cached("agen")
        async def anumbers(n: int) -> Any:
            yield n

    with pytest.raises(TypeError, match="class"):
        cached("cls")(type("Thing", (), {}))


@pytest.mark.parametrize("func", [toolkit.cached, toolkit.observe], ids=lambda f: f.__name__)
def test_help_documents_every_parameter_without_object_reprs(func: Any) -> None:
    import inspect
    import pydoc
    import re

    text = pydoc.plain(pydoc.render_doc(func))
    assert not re.findall(r"<[^>]+ at 0x[0-9a-f]+>|<built-in [^>]+>|<function [^>]+>", text)
    doc = inspect.getdoc(func) or ""
    assert "::" in doc  # an example
    for name in inspect.signature(func).parameters:
        if name not in ("cache", "ns", "func"):
            assert f"``{name}``" in doc or name in doc, name


def test_one_call_can_bypass_or_refresh_the_cache() -> None:
    cache: InMemoryCache[Any] = InMemoryCache()
    calls: list[int] = []

    class Service:
        def __cache_key__(self) -> str:
            return "service"

        @cached("sw.one.method", cache=cache)
        def double(self, x: int) -> int:
            calls.append(x)
            return 2 * x

    @cached("sw.one.async", cache=cache)
    async def atriple(x: int) -> int:
        calls.append(x)
        return 3 * x

    service = Service()
    assert service.double.__wrapped__(1) == 2  # runs alone: reads and stores nothing
    assert cache.get([service.double.cache_key(1)]) == {}
    assert service.double(1) == service.double(1) == 2
    assert service.double.refresh(1) == 2  # recomputes this one call and stores it
    assert calls == [1, 1, 1]
    assert asyncio.run(atriple.__wrapped__(2)) == 6
    assert cache.get([atriple.cache_key(2)]) == {}
    assert asyncio.run(atriple.arefresh(2)) == 6
    assert asyncio.run(atriple(2)) == 6  # the refresh stored it
    assert calls == [1, 1, 1, 2, 2]
