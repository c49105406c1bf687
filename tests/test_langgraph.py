"""Real LangGraph graphs run unchanged on every backend and stack of the conformance harness."""

from __future__ import annotations

import dataclasses
import enum
import operator
import threading
from typing import Annotated, Any, TypedDict

import pydantic
import pytest
from langchain_core.documents import Document
from langgraph.func import entrypoint, task
from langgraph.graph import END, START, StateGraph
from langgraph.types import CachePolicy

from tests.harness import Subject


class State(TypedDict, total=False):
    x: int
    doubled: int
    log: Annotated[list[str], operator.add]


def as_langgraph(subject: Subject) -> Any:
    """Our caches satisfy LangGraph's BaseCache structurally; its annotations are nominal."""
    return subject.cache


def build_graph(subject: Subject, calls: list[int]) -> Any:
    def slow(state: State) -> dict[str, Any]:
        calls.append(state["x"])
        return {"doubled": state["x"] * 2, "log": [f"slow({state['x']})"]}

    def cheap(state: State) -> dict[str, Any]:
        return {"log": ["cheap"]}

    builder = StateGraph(State)
    builder.add_node("slow", slow, cache_policy=CachePolicy(ttl=60))
    builder.add_node("cheap", cheap)
    builder.add_edge(START, "slow")
    builder.add_edge("slow", "cheap")
    builder.add_edge("cheap", END)
    return builder.compile(cache=as_langgraph(subject))


async def test_state_graph_runs_cached_node_once(subject: Subject, mode: str) -> None:
    calls: list[int] = []
    graph = build_graph(subject, calls)

    async def invoke(x: int) -> Any:
        if mode == "sync":
            return graph.invoke({"x": x})
        return await graph.ainvoke({"x": x})

    first = await invoke(3)
    assert first["doubled"] == 6
    assert first["log"] == ["slow(3)", "cheap"]
    again = await invoke(3)
    assert again == first
    assert calls == [3]

    await invoke(4)
    assert calls == [3, 4]

    if mode == "sync":
        graph.clear_cache()
    else:
        await graph.aclear_cache()
    assert (await invoke(3))["doubled"] == 6
    assert calls == [3, 4, 3]


async def test_functional_api_task_cache(subject: Subject, mode: str) -> None:
    calls: list[str] = []

    @task(cache_policy=CachePolicy())  # type: ignore[arg-type]  # LangGraph's own typing
    def shout(word: str) -> str:
        calls.append(word)
        return word.upper()

    @entrypoint(cache=as_langgraph(subject))
    def pipeline(words: list[str]) -> list[str]:
        futures: list[Any] = [shout(w) for w in words]  # type: ignore[arg-type]
        return [f.result() for f in futures]

    @task(cache_policy=CachePolicy())  # type: ignore[arg-type]  # LangGraph's own typing
    async def ashout(word: str) -> str:
        calls.append(word)
        return word.upper()

    @entrypoint(cache=as_langgraph(subject))
    async def apipeline(words: list[str]) -> list[str]:
        return [await ashout(w) for w in words]  # type: ignore[arg-type]

    # Tasks of one step run concurrently, so repeats are spread over separate runs.
    if mode == "sync":
        assert pipeline.invoke(["a", "b"]) == ["A", "B"]
        assert pipeline.invoke(["b", "c"]) == ["B", "C"]
        assert pipeline.invoke(["a"]) == ["A"]
    else:
        assert await apipeline.ainvoke(["a", "b"]) == ["A", "B"]
        assert await apipeline.ainvoke(["b", "c"]) == ["B", "C"]
        assert await apipeline.ainvoke(["a"]) == ["A"]
    assert sorted(calls) == ["a", "b", "c"]


@pytest.mark.parametrize("nodes", [None, ["slow"]])
def test_clear_cache_reaches_only_graph_namespaces(
    subject: Subject, nodes: list[str] | None
) -> None:
    calls: list[int] = []
    graph = build_graph(subject, calls)
    bystander = (("someone", "else"), "k")
    subject.cache.set({bystander: ("untouched", None)})
    graph.invoke({"x": 1})
    graph.clear_cache(nodes)
    graph.invoke({"x": 1})
    assert calls == [1, 1]
    assert subject.cache.get([bystander]) == {bystander: "untouched"}


class Verdict(enum.Enum):
    GOOD = "good"
    BAD = "bad"


class Answer(pydantic.BaseModel):
    text: str
    score: float


@dataclasses.dataclass
class Trace:
    steps: list[str]
    answer: Answer


class Structured(TypedDict, total=False):
    question: str
    answer: Answer
    trace: Trace
    verdict: Verdict
    sources: list[Document]


def build_structured_graph(subject: Subject, calls: list[str]) -> Any:
    """Nodes that return what structured LLM output looks like: models, dataclasses, enums."""

    def answer(state: Structured) -> dict[str, Any]:
        calls.append(state["question"])
        reply = Answer(text=f"about {state['question']}", score=0.5)
        return {
            "answer": reply,
            "trace": Trace(steps=["retrieve", "answer"], answer=reply),
            "verdict": Verdict.GOOD,
            "sources": [Document(page_content="doc", metadata={"page": 1})],
        }

    builder = StateGraph(Structured)
    builder.add_node("answer", answer, cache_policy=CachePolicy(ttl=60))
    builder.add_edge(START, "answer")
    builder.add_edge("answer", END)
    return builder.compile(cache=as_langgraph(subject))


async def test_nodes_returning_models_dataclasses_enums_and_documents_are_cached(
    subject: Subject, mode: str
) -> None:
    calls: list[str] = []
    graph = build_structured_graph(subject, calls)

    async def invoke() -> Any:
        if mode == "sync":
            return graph.invoke({"question": "tides"})
        return await graph.ainvoke({"question": "tides"})

    first = await invoke()
    again = await invoke()
    assert again == first
    assert type(again["answer"]) is Answer
    assert type(again["trace"]) is Trace
    assert again["verdict"] is Verdict.GOOD
    assert type(again["sources"][0]) is Document
    assert calls == ["tides"]


async def test_a_node_returning_an_uncacheable_value_still_runs(
    subject: Subject, mode: str
) -> None:
    calls: list[int] = []

    class Handles(TypedDict, total=False):
        x: int
        handle: Any

    def node(state: Handles) -> dict[str, Any]:
        calls.append(1)
        return {"handle": threading.Lock()}

    builder = StateGraph(Handles)
    builder.add_node("node", node, cache_policy=CachePolicy(ttl=60))
    builder.add_edge(START, "node")
    builder.add_edge("node", END)
    graph = builder.compile(cache=as_langgraph(subject))
    if not subject.validates_input:
        pytest.skip("a foreign cache's own serializer decides what it stores")
    for _ in range(2):
        if mode == "sync":
            out = graph.invoke({"x": 1})
        else:
            out = await graph.ainvoke({"x": 1})
        assert "handle" in out
    assert calls == [1, 1]  # never stored, so computed each time, and never an error


async def test_a_zero_ttl_policy_always_runs_the_node(subject: Subject, mode: str) -> None:
    """LangGraph's caches accept ``CachePolicy(ttl=0)``: the node runs every time, no error."""
    calls: list[int] = []

    def node(state: State) -> dict[str, Any]:
        calls.append(state["x"])
        return {"doubled": state["x"] * 2}

    builder = StateGraph(State)
    builder.add_node("node", node, cache_policy=CachePolicy(ttl=0))
    builder.add_edge(START, "node")
    builder.add_edge("node", END)
    graph = builder.compile(cache=as_langgraph(subject))
    for _ in range(2):
        out = graph.invoke({"x": 2}) if mode == "sync" else await graph.ainvoke({"x": 2})
        assert out["doubled"] == 4
    assert calls == [2, 2]
