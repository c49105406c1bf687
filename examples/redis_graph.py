"""A LangGraph node cached in Redis: the second identical call is served from the cache.

Run: ``REDIS_URL=redis://127.0.0.1:6379/0 python -m examples.redis_graph`` (needs the
``redis`` extra and a reachable server).
"""

from __future__ import annotations

import os
import time
from typing import Any, TypedDict

from langgraph.graph import END, START, StateGraph
from langgraph.types import CachePolicy

from toolkit import RedisCache


class State(TypedDict):
    question: str
    answer: str


def slow_answer(state: State) -> dict[str, Any]:
    """Stands in for an expensive model call."""
    time.sleep(0.5)
    return {"answer": state["question"].upper()}


def main() -> None:
    """Build the graph, run it twice, show the timings, clear the node's cache."""
    url = os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0")
    cache: RedisCache[Any] = RedisCache.from_url(url, prefix="toolkit:example:")
    builder = StateGraph(State)
    builder.add_node("answer", slow_answer, cache_policy=CachePolicy(ttl=300))
    builder.add_edge(START, "answer")
    builder.add_edge("answer", END)
    graph = builder.compile(cache=cache)
    try:
        for attempt in ("first", "second"):
            started = time.perf_counter()
            result = graph.invoke({"question": "what is cached?", "answer": ""})
            print(f"{attempt}: {result['answer']!r} in {time.perf_counter() - started:.3f} s")
        graph.clear_cache()
    finally:
        cache.close()


if __name__ == "__main__":
    main()
