"""Wrapping LangGraph's own cache with ``observe``: metrics, traces and fail-open for free.

    python examples/observe_langgraph_cache.py

``observe`` takes any object with the six cache methods, so a graph keeps using
LangGraph's ``InMemoryCache`` (or its ``SqliteCache``) and gains the toolkit's metrics.
"""

from __future__ import annotations

import time
from typing import Any, TypedDict

from langgraph.cache.memory import InMemoryCache as LangGraphMemoryCache
from langgraph.graph import END, START, StateGraph
from langgraph.types import CachePolicy
from prometheus_client import CollectorRegistry, generate_latest

from toolkit import observe

registry = CollectorRegistry()
cache = observe(LangGraphMemoryCache(), registry=registry)
runs: list[int] = []


class State(TypedDict, total=False):
    x: int
    squared: int


def square(state: State) -> dict[str, Any]:
    runs.append(state["x"])
    time.sleep(0.02)
    return {"squared": state["x"] ** 2}


def build() -> Any:
    builder = StateGraph(State)
    builder.add_node("square", square, cache_policy=CachePolicy(ttl=60))
    builder.add_edge(START, "square")
    builder.add_edge("square", END)
    return builder.compile(cache=cache)


def main() -> None:
    graph = build()
    results = [graph.invoke({"x": x})["squared"] for x in (3, 3, 4, 3)]
    assert results == [9, 9, 16, 9]
    print("square ran for:", runs)
    for line in generate_latest(registry).decode().splitlines():
        if line.startswith(("cache_gets_total", "cache_puts_total")):
            print(line)


if __name__ == "__main__":
    main()
