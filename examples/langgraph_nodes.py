"""Caching LangGraph nodes two ways, with metrics: ``@cached`` on a node and ``CachePolicy``.

    python examples/langgraph_nodes.py

``@cached`` caches one node function wherever it runs (its key is the node's input state;
LangGraph's ``config`` never enters it). ``CachePolicy`` asks LangGraph to cache a node's
writes in the graph's cache, here our in-memory cache inside ``observe``.
"""

from __future__ import annotations

import time
from typing import Any, TypedDict

from langgraph.graph import END, START, StateGraph
from langgraph.types import CachePolicy
from prometheus_client import CollectorRegistry, generate_latest

from toolkit import InMemoryCache, cached, observe

registry = CollectorRegistry()
cache = observe(InMemoryCache(), registry=registry)
runs: list[str] = []


class State(TypedDict, total=False):
    question: str
    documents: list[str]
    answer: str


@cached("retrieve", ttl=300, cache=cache)
def retrieve(state: State) -> dict[str, Any]:
    """A search call, cached by the decorator."""
    runs.append("retrieve")
    time.sleep(0.02)
    return {"documents": [f"doc about {state['question']}"]}


def generate(state: State) -> dict[str, Any]:
    """The slow "model call", cached by LangGraph through CachePolicy."""
    runs.append("generate")
    time.sleep(0.05)
    return {"answer": f"{state['question']} -> {state['documents'][0]}"}


def build() -> Any:
    builder = StateGraph(State)
    builder.add_node("retrieve", retrieve)
    builder.add_node("generate", generate, cache_policy=CachePolicy(ttl=300))
    builder.add_edge(START, "retrieve")
    builder.add_edge("retrieve", "generate")
    builder.add_edge("generate", END)
    return builder.compile(cache=cache)


def main() -> None:
    graph = build()
    first = graph.invoke({"question": "what is a cache?"})
    again = graph.invoke({"question": "what is a cache?"})
    assert first == again
    graph.invoke({"question": "why cache?"})
    print("node bodies ran:", runs)
    print("answer:", first["answer"])
    for line in generate_latest(registry).decode().splitlines():
        if line.startswith("cache_gets_total"):
            print(line)


if __name__ == "__main__":
    main()
