"""Real LangGraph graphs compiled with our caches: two graphs sharing one cache."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any, TypedDict

import pytest
from langgraph.graph import END, START, StateGraph
from prometheus_client import CollectorRegistry

from toolkit import InMemoryCache, SqliteCache, observe
from toolkit.base import BaseCache
from toolkit.integrations.langgraph import cache_policy, key_func, scoped_key_func


class Sum(TypedDict, total=False):
    x: int
    out: int


def times(state: Sum, k: int) -> Sum:
    return {"out": state["x"] * k}


class Times:
    def __init__(self, k: int) -> None:
        self.k = k

    def __call__(self, state: Sum) -> Sum:
        return {"out": state["x"] * self.k}


def closure(k: int) -> Callable[[Sum], Sum]:
    def node(state: Sum) -> Sum:
        return {"out": state["x"] * k}

    return node


NODES: dict[str, Callable[[int], Callable[[Sum], Sum]]] = {
    "partial": lambda k: partial(times, k=k),
    "instance": Times,
    "closure": closure,
}


def one_node_graph(node: Any, policy: Any, cache: Any) -> Any:
    builder = StateGraph(Sum)
    builder.add_node("double", node, cache_policy=policy)
    builder.add_edge(START, "double")
    builder.add_edge("double", END)
    return builder.compile(cache=cache)


@pytest.fixture(params=["memory", "sqlite", "observed"])
def shared(request: pytest.FixtureRequest, tmp_path: Path) -> BaseCache[Any]:
    if request.param == "memory":
        return InMemoryCache()
    sqlite: SqliteCache[Any] = SqliteCache(path=str(tmp_path / "c.db"))
    if request.param == "sqlite":
        return sqlite
    return observe(sqlite, registry=CollectorRegistry())


@pytest.mark.parametrize("kind", sorted(NODES))
def test_scoped_graphs_sharing_a_cache_never_serve_each_others_results(
    kind: str, shared: BaseCache[Any]
) -> None:
    """LangGraph files both nodes under one namespace (a partial or callable instance is
    ``__dynamic__``, closures of one factory share a qualified name): the second graph got
    the first one's result. With distinct scopes each graph gets its own."""
    make = NODES[kind]
    first = one_node_graph(make(2), cache_policy(scope="first"), shared)
    second = one_node_graph(make(3), cache_policy(60, scope="second"), shared)
    assert first.invoke({"x": 5}) == {"x": 5, "out": 10}
    assert second.invoke({"x": 5}) == {"x": 5, "out": 15}
    assert first.invoke({"x": 5}) == {"x": 5, "out": 10}
    assert second.invoke({"x": 5}) == {"x": 5, "out": 15}


def test_without_a_scope_langgraph_shares_the_namespace() -> None:
    """The collision the scope exists for (LangGraph's namespace, not our caches)."""
    cache: InMemoryCache[Any] = InMemoryCache()
    one_node_graph(Times(2), cache_policy(), cache).invoke({"x": 5})
    assert one_node_graph(Times(3), cache_policy(), cache).invoke({"x": 5})["out"] == 10


def test_scoped_keys_never_meet_unscoped_or_other_scopes() -> None:
    value = {"x": 5}
    keys = {
        key_func(value),
        scoped_key_func("a")(value),
        scoped_key_func("ab")(value),
        scoped_key_func("a")({"x": 6}),
        scoped_key_func("a")(1, b=2),
    }
    assert len(keys) == 5
    assert scoped_key_func("a")(value) == scoped_key_func("a")(dict(value))
    assert cache_policy().key_func is key_func
    with pytest.raises(TypeError, match="scope"):
        cache_policy(scope="")


def test_a_lost_graph_clear_cache_raises_inside_failures_raise() -> None:
    """observe() drops a failed clear, graph.clear_cache()'s too (README): the node results
    it should have removed are served once the backend answers. failures_raise() makes the
    loss raise, for the sync and the async clear."""
    from toolkit.backends.redis import RedisCache
    from toolkit.errors import CacheError
    from toolkit.middleware import failures_raise

    refused: RedisCache[Any] = RedisCache.from_url("redis://127.0.0.1:1/0")  # nothing listens
    cache = observe(refused, registry=CollectorRegistry())
    graph = one_node_graph(Times(2), cache_policy(), cache)
    assert graph.invoke({"x": 5}) == {"x": 5, "out": 10}  # the graph runs: fail-open
    graph.clear_cache()  # dropped, logged
    with pytest.raises(CacheError), failures_raise():
        graph.clear_cache()

    async def aclear() -> None:
        with failures_raise():
            await graph.aclear_cache()

    with pytest.raises(CacheError):
        asyncio.run(aclear())


def test_a_node_naming_messages_by_id_needs_a_key_with_the_ids() -> None:
    """README: key_func leaves message ids out, so a trimming node's cached RemoveMessages
    name another thread's ids; LangGraph's CachePolicy() (ids in the key) stays right."""
    from langchain_core.messages import HumanMessage, RemoveMessage
    from langgraph.checkpoint.memory import InMemorySaver
    from langgraph.graph import MessagesState
    from langgraph.types import CachePolicy

    def trim(state: MessagesState) -> dict[str, Any]:
        return {"messages": [RemoveMessage(id=str(m.id)) for m in state["messages"][:-1]]}

    def graph(policy: Any) -> Any:
        builder = StateGraph(MessagesState)
        builder.add_node("trim", trim, cache_policy=policy)
        builder.add_edge(START, "trim")
        builder.add_edge("trim", END)
        return builder.compile(cache=InMemoryCache(), checkpointer=InMemorySaver())

    def run(compiled: Any, thread: str) -> list[Any]:
        config = {"configurable": {"thread_id": thread}}
        out = compiled.invoke({"messages": [HumanMessage("x"), HumanMessage("y")]}, config)
        return [m.content for m in out["messages"]]

    right = graph(CachePolicy())
    assert run(right, "a") == run(right, "b") == ["y"]
    wrong = graph(cache_policy())
    assert run(wrong, "a") == ["y"]
    with pytest.raises(ValueError, match="doesn't exist"):
        run(wrong, "b")
