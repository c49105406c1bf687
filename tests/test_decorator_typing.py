"""mypy sees a decorated function's own signature (both forms, sync and async)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

SNIPPET = """
from toolkit import FullKey, cached

@cached
def plain(a: int, b: str = "x") -> float:
    return 1.0

@cached("ns", ttl=5)
async def fetch(a: int) -> list[str]:
    return []

ok_value: float = plain(1)
ok_key: FullKey = plain.cache_key(1, b="y")
plain.invalidate(1)
refreshed: float = plain.refresh(2)
plain("wrong")  # error: arg-type
bad_value: str = plain(1)  # error: assignment
plain.cache_key(1, c=2)  # error: call-arg

class Service:
    @cached(ignore=("self",))
    def lookup(self, x: int) -> str:
        return str(x)

method_value: str = Service().lookup(1)
method_key: FullKey = Service().lookup.cache_key(1)
bad_method_value: int = Service().lookup(1)  # error: assignment

class Remote:
    @cached(ignore=("self",))
    async def fetch(self, x: int) -> bytes:
        return b""

    @cached("remote.static")
    @staticmethod
    def static(x: int) -> int:
        return x

static_value: int = Remote().static(1) + Remote.static(2)

async def use() -> None:
    got: list[str] = await fetch(1)
    await fetch.arefresh(1)
    await fetch.ainvalidate(1)
    await fetch("wrong")  # error: arg-type
    fetch.refresh(1)  # error: attr-defined
    body: bytes = await Remote().fetch(1)
    fresh: bytes = await Remote().fetch.arefresh(1)
    wrong: str = await Remote().fetch(1)  # error: assignment
    Remote().fetch.refresh(1)  # error: attr-defined
"""


@pytest.mark.slow
def test_mypy_sees_the_decorated_signature(tmp_path: Path) -> None:
    api = pytest.importorskip("mypy.api")
    source = tmp_path / "typed_usage.py"
    source.write_text(SNIPPET)
    root = Path(__file__).resolve().parents[1]
    stdout, _, _ = api.run(
        [
            "--strict",
            "--no-incremental",
            "--follow-imports=silent",
            "--config-file",
            str(root / "pyproject.toml"),
            str(source),
        ]
    )
    found = {
        (int(m.group(1)), m.group(2))
        for m in re.finditer(r"typed_usage\.py:(\d+): error: .*\[([\w-]+)\]", stdout)
    }
    expected = {
        (number, line.split("# error: ")[1].strip())
        for number, line in enumerate(SNIPPET.splitlines(), start=1)
        if "# error: " in line
    }
    assert found == expected, stdout


APP = """
from typing import Any, TypedDict

from langgraph.graph import END, START, StateGraph

from toolkit import InMemoryCache, SqliteCache, observe, wrap, FailOpen
from toolkit.middleware import CacheMiddleware


class State(TypedDict):
    x: int


def node(state: State) -> dict[str, Any]:
    return {"x": state["x"] + 1}


builder = StateGraph(State)
builder.add_node("node", node)
builder.add_edge(START, "node")
builder.add_edge("node", END)
graph = builder.compile(cache=observe(SqliteCache(path=":memory:")))
bare = builder.compile(cache=InMemoryCache())
ints: CacheMiddleware[int] = observe(InMemoryCache[int]())
wrapped: CacheMiddleware[int] = wrap(InMemoryCache[int](), FailOpen())
ints.set({(("ns",), "k"): (1, None)})
ints.set({(("ns",), "k"): ("text", None)})  # error: dict-item
reveal_type(observe(InMemoryCache[int]()))  # note: CacheMiddleware[int]
"""


@pytest.mark.slow
def test_a_langgraph_app_type_checks_with_our_caches(tmp_path: Path) -> None:
    """``builder.compile(cache=observe(SqliteCache(...)))`` needs no cast under --strict."""
    api = pytest.importorskip("mypy.api")
    source = tmp_path / "typed_usage.py"
    source.write_text(APP)
    root = Path(__file__).resolve().parents[1]
    stdout, _, _ = api.run(
        [
            "--strict",
            "--no-incremental",
            "--follow-imports=silent",
            "--config-file",
            str(root / "pyproject.toml"),
            str(source),
        ]
    )
    found = {
        (int(m.group(1)), m.group(2))
        for m in re.finditer(r"typed_usage\.py:(\d+): error: .*\[([\w-]+)\]", stdout)
    }
    expected = {
        (number, line.split("# error: ")[1].strip())
        for number, line in enumerate(APP.splitlines(), start=1)
        if "# error: " in line
    }
    assert found == expected, stdout
    assert 'Revealed type is "toolkit.middleware.base.CacheMiddleware[int]"' in stdout
