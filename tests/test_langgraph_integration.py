"""Real LangGraph graphs: ``@cached`` nodes and ``CachePolicy(key_func=key_func)``."""

from __future__ import annotations

from datetime import timedelta
from typing import Any, TypedDict

import pytest
from langchain_core.callbacks import BaseCallbackHandler
from langchain_core.messages import AIMessage, HumanMessage
from langchain_core.runnables import RunnableConfig
from langgraph.graph import END, START, MessagesState, StateGraph
from langgraph.types import CachePolicy

from toolkit import InMemoryCache
from toolkit.decorators import cached
from toolkit.integrations.langgraph import cache_policy, key_func


def message_cache() -> InMemoryCache[Any]:
    """A cache with the default safe serializer, which round-trips LangChain messages."""
    return InMemoryCache()


class QA(TypedDict, total=False):
    question: str
    answer: str


class Noisy(BaseCallbackHandler):
    """A callback handler: part of the config, never of the key."""


def configs() -> list[RunnableConfig]:
    return [
        {"configurable": {"thread_id": "t1"}},
        {"configurable": {"thread_id": "t2", "user": "x"}, "callbacks": [Noisy()]},
        {"tags": ["again"], "metadata": {"run": 3}},
    ]


def test_cached_sync_node_ignores_config() -> None:
    cache: InMemoryCache[Any] = InMemoryCache()
    calls: list[str] = []

    @cached(cache=cache)
    def answer(state: QA, config: RunnableConfig) -> QA:
        calls.append(state["question"])
        return {"answer": state["question"].upper()}

    builder = StateGraph(QA)
    builder.add_node("answer", answer)
    builder.add_edge(START, "answer")
    builder.add_edge("answer", END)
    graph = builder.compile()
    for config in configs():
        assert graph.invoke({"question": "hi"}, config) == {"question": "hi", "answer": "HI"}
    assert graph.invoke({"question": "bye"})["answer"] == "BYE"
    assert calls == ["hi", "bye"]


async def test_cached_async_message_node_hits_across_runs() -> None:
    cache = message_cache()
    calls: list[str] = []

    @cached(cache=cache)
    async def reply(state: MessagesState, config: RunnableConfig) -> dict[str, Any]:
        calls.append(str(state["messages"][-1].content))
        return {"messages": [AIMessage(f"echo: {state['messages'][-1].content}")]}

    builder = StateGraph(MessagesState)
    builder.add_node("reply", reply)
    builder.add_edge(START, "reply")
    graph = builder.compile()
    for config in configs():
        # add_messages gives every run fresh message ids: the key must not see them.
        out = await graph.ainvoke({"messages": [HumanMessage("hello")]}, config)
        assert out["messages"][-1].content == "echo: hello"
    await graph.ainvoke({"messages": [HumanMessage("other")]})
    assert calls == ["hello", "other"]


def _policy_graph(policy: CachePolicy[Any], calls: list[str]) -> Any:
    def reply(state: MessagesState) -> dict[str, Any]:
        calls.append(str(state["messages"][-1].content))
        return {"messages": [AIMessage("ok")]}

    builder = StateGraph(MessagesState)
    builder.add_node("reply", reply, cache_policy=policy)
    builder.add_edge(START, "reply")
    return builder.compile(cache=message_cache())


def test_cache_policy_key_func_is_stable_across_runs() -> None:
    calls: list[str] = []
    graph = _policy_graph(CachePolicy(key_func=key_func), calls)
    for config in configs():
        graph.invoke({"messages": [HumanMessage("hello")]}, config)
    graph.invoke({"messages": [HumanMessage("different")]})
    assert calls == ["hello", "different"]

    # LangGraph's default key pickles the fresh message ids, so the same input misses.
    default_calls: list[str] = []
    default_graph = _policy_graph(CachePolicy(), default_calls)
    default_graph.invoke({"messages": [HumanMessage("hello")]})
    default_graph.invoke({"messages": [HumanMessage("hello")]})
    assert default_calls == ["hello", "hello"]


async def test_cache_policy_helper_async() -> None:
    calls: list[str] = []
    graph = _policy_graph(cache_policy(ttl=60), calls)
    await graph.ainvoke({"messages": [HumanMessage("a")]})
    await graph.ainvoke({"messages": [HumanMessage("a")]})
    assert calls == ["a"]


@pytest.mark.parametrize(
    ("ttl", "seconds"),
    [(None, None), (0, 0), (60, 60), (1.5, 1.5), ("1h", 3600), (timedelta(minutes=2), 120)],
)
def test_cache_policy_takes_the_ttl_forms_of_the_stack(ttl: Any, seconds: float | None) -> None:
    """The forms observe(default_ttl=...) takes; a string used to reach the cache as is and
    fail in a run, after the node had computed."""
    policy = cache_policy(ttl)
    assert policy.ttl == seconds and type(policy.ttl) is type(seconds)


@pytest.mark.parametrize(
    ("ttl", "error"), [(-5, ValueError), ("soon", ValueError), (True, TypeError)]
)
def test_cache_policy_refuses_a_bad_ttl_where_the_graph_is_built(ttl: Any, error: type) -> None:
    """A negative ttl was accepted here and raised from the cache write in every run, after
    the node had computed (its result lost)."""
    with pytest.raises(error, match="ttl"):
        cache_policy(ttl)


def test_key_func_is_canonical() -> None:
    first = {"messages": [HumanMessage("hi", id="1")], "n": 1, "tags": {"a", "b"}}
    second = {"tags": {"b", "a"}, "n": 1, "messages": [HumanMessage("hi", id="2")]}
    assert key_func(first) == key_func(second)
    assert key_func(first) != key_func({**first, "n": 2})
    assert key_func(1) != key_func(1.0) != key_func(True)
    assert key_func(1, b=2) == key_func(1, **{"b": 2})
    assert key_func(1, b=2) != key_func(1, 2)


class UserContext(TypedDict):
    user: str


def test_runtime_and_store_parameters_never_enter_the_key() -> None:
    from langgraph.runtime import Runtime
    from langgraph.store.memory import InMemoryStore

    cache: InMemoryCache[Any] = InMemoryCache()
    calls: list[str] = []

    @cached(cache=cache)
    def answer(state: QA, runtime: Runtime[UserContext]) -> QA:
        calls.append(state["question"])
        return {"answer": state["question"][::-1]}

    builder = StateGraph(QA, context_schema=UserContext)
    builder.add_node("answer", answer)
    builder.add_edge(START, "answer")
    graph = builder.compile(store=InMemoryStore())
    assert graph.invoke({"question": "abc"}, context={"user": "a"})["answer"] == "cba"
    assert graph.invoke({"question": "abc"}, context={"user": "b"})["answer"] == "cba"
    assert calls == ["abc"]
