"""The Tracing layer, asserted with the SDK's in-memory exporter."""

from __future__ import annotations

import logging
from typing import Any

import pytest
from opentelemetry.instrumentation.utils import suppress_instrumentation
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import NoOpTracerProvider, SpanKind, StatusCode
from prometheus_client import CollectorRegistry

from tests.faults import FlakyCache, HangingCache
from toolkit import BackendError, InMemoryCache, SqliteCache, Tracing, cached, observe, wrap
from toolkit.middleware.tracing import hash_key

# Each test runs against observe()'s fused layer and against the plain stack.
pytestmark = pytest.mark.usefixtures("observe_form")

NS = ("app", "users")


def traced(provider: TracerProvider, inner: Any = None, **options: Any) -> Any:
    return wrap(
        inner if inner is not None else InMemoryCache(),
        Tracing(tracer_provider=provider, **options),
    )


def only(exporter: InMemorySpanExporter, name: str) -> ReadableSpan:
    spans = [s for s in exporter.get_finished_spans() if s.name == name]
    assert len(spans) == 1, [s.name for s in exporter.get_finished_spans()]
    return spans[0]


async def test_single_get_span(
    provider: TracerProvider, exporter: InMemorySpanExporter, mode: str
) -> None:
    cache = traced(provider)
    cache.set({(NS, "a"): ({"v": 1}, None)})
    got = cache.get([(NS, "a")]) if mode == "sync" else await cache.aget([(NS, "a")])
    assert got == {(NS, "a"): {"v": 1}}
    span = only(exporter, "cache.get")
    assert span.kind is SpanKind.CLIENT
    assert dict(span.attributes or {}) == {
        "cache.backend": "memory",
        "cache.batch_size": 1,
        "cache.namespace": "app.users",
        "cache.hits": 1,
        "cache.hit": True,
    }
    assert span.status.status_code is StatusCode.UNSET


async def test_batch_get_set_clear_spans(
    provider: TracerProvider, exporter: InMemorySpanExporter, mode: str
) -> None:
    cache = traced(provider)
    pairs = {(NS, "a"): (1, None), (NS, "b"): (2, None)}
    keys = [(NS, "a"), (NS, "b"), (("other",), "c")]
    if mode == "sync":
        cache.set(pairs)
        cache.get(keys)
        cache.clear([NS])
    else:
        await cache.aset(pairs)
        await cache.aget(keys)
        await cache.aclear([NS])
    assert [s.name for s in exporter.get_finished_spans()] == [
        "cache.set",
        "cache.get",
        "cache.clear",
    ]
    get = only(exporter, "cache.get").attributes or {}
    assert (get["cache.batch_size"], get["cache.hits"], get["cache.namespace"]) == (
        3,
        2,
        "(multiple)",
    )
    assert "cache.hit" not in get
    assert (only(exporter, "cache.set").attributes or {})["cache.batch_size"] == 2
    assert (only(exporter, "cache.clear").attributes or {})["cache.namespace"] == "app.users"


async def test_error_status_and_type(
    provider: TracerProvider, exporter: InMemorySpanExporter, mode: str
) -> None:
    cache = traced(provider, FlakyCache())
    with pytest.raises(BackendError):
        if mode == "sync":
            cache.get([(NS, "a")])
        else:
            await cache.aget([(NS, "a")])
    span = only(exporter, "cache.get")
    assert span.status.status_code is StatusCode.ERROR
    assert (span.attributes or {})["error.type"] == "BackendError"
    assert "backend down" not in str(span.status.description) and not span.events


def test_failed_get_is_traced_inside_fail_open(
    provider: TracerProvider, exporter: InMemorySpanExporter
) -> None:
    cache = observe(
        FlakyCache(), registry=CollectorRegistry(), tracer_provider=provider, deadline=None
    )
    assert cache.get([(NS, "a")]) == {}
    assert only(exporter, "cache.get").status.status_code is StatusCode.ERROR


def test_spans_nest_under_the_callers_span(
    provider: TracerProvider, exporter: InMemorySpanExporter
) -> None:
    cache = traced(provider)
    with provider.get_tracer("test").start_as_current_span("node") as parent:
        cache.get([(NS, "a")])
    span = only(exporter, "cache.get")
    assert span.parent is not None
    assert span.parent.span_id == parent.get_span_context().span_id
    assert span.context is not None
    assert span.context.trace_id == parent.get_span_context().trace_id


def test_spans_nest_across_the_deadline_thread(
    provider: TracerProvider, exporter: InMemorySpanExporter
) -> None:
    cache = observe(
        FlakyCache(), registry=CollectorRegistry(), tracer_provider=provider, deadline=5.0
    )
    with provider.get_tracer("test").start_as_current_span("node") as parent:
        cache.get([(NS, "a")])
    span = only(exporter, "cache.get")
    assert span.parent is not None and span.parent.span_id == parent.get_span_context().span_id


def test_deadline_is_recorded_on_the_callers_span(
    provider: TracerProvider, exporter: InMemorySpanExporter
) -> None:
    hanging = HangingCache()
    cache = observe(hanging, registry=CollectorRegistry(), tracer_provider=provider, deadline=0.05)
    try:
        with provider.get_tracer("test").start_as_current_span("node"):
            assert cache.get([(NS, "a")]) == {}
    finally:
        hanging.release()
    node = only(exporter, "node")
    assert [(e.name, dict(e.attributes or {})) for e in node.events] == [
        ("cache.error", {"cache.operation": "get", "error.type": "DeadlineExceededError"})
    ]


def test_nothing_recorded_when_suppressed(
    provider: TracerProvider, exporter: InMemorySpanExporter
) -> None:
    cache = traced(provider)

    @cached(NS, cache=cache, tracer_provider=provider)
    def double(n: int) -> int:
        return 2 * n

    with suppress_instrumentation():
        cache.set({(NS, "a"): (1, None)})
        assert cache.get([(NS, "a")]) == {(NS, "a"): 1}
        assert double(2) == double(2) == 4
    assert exporter.get_finished_spans() == ()
    assert double(3) == 6
    assert {span.name for span in exporter.get_finished_spans()} >= {"cache.call", "cache.get"}


def test_no_op_tracer_provider_records_nothing(exporter: InMemorySpanExporter) -> None:
    cache = wrap(InMemoryCache(), Tracing(tracer_provider=NoOpTracerProvider()))
    cache.set({(NS, "a"): (1, None)})
    assert cache.get([(NS, "a")]) == {(NS, "a"): 1}
    assert exporter.get_finished_spans() == ()


@pytest.mark.parametrize("where", ["Tracing", "observe", "cached"])
def test_a_wrong_tracer_provider_is_refused_by_name(where: str) -> None:
    """A wrong ``tracer_provider`` (a str from a config file, say) is a TypeError naming the
    option when the stack or decorator is built, not an AttributeError from OpenTelemetry."""
    wrong: Any = "otlp"
    with pytest.raises(TypeError, match="tracer_provider must be an OpenTelemetry"):
        if where == "Tracing":
            Tracing(tracer_provider=wrong)
        elif where == "observe":
            observe(InMemoryCache(), registry=CollectorRegistry(), tracer_provider=wrong)
        else:
            cached("app.users", cache=InMemoryCache(), key_id="x", tracer_provider=wrong)(abs)


def test_keys_only_hashed_and_only_on_opt_in(
    provider: TracerProvider, exporter: InMemorySpanExporter
) -> None:
    secret = (NS, "secret-key")
    traced(provider).get([secret])
    traced(provider, record_keys=True).get([secret])
    plain, hashed = exporter.get_finished_spans()
    assert "cache.keys_hashed" not in (plain.attributes or {})
    assert (hashed.attributes or {})["cache.keys_hashed"] == (hash_key(secret),)
    for span in (plain, hashed):
        assert "secret-key" not in repr(dict(span.attributes or {}))


def test_values_never_recorded(provider: TracerProvider, exporter: InMemorySpanExporter) -> None:
    cache = traced(provider, record_keys=True)
    cache.set({(NS, "a"): ("secret-value", None)})
    cache.get([(NS, "a")])
    for span in exporter.get_finished_spans():
        assert "secret-value" not in repr(dict(span.attributes or {}))


def test_hooks_run_and_their_errors_are_swallowed(
    provider: TracerProvider, exporter: InMemorySpanExporter, caplog: pytest.LogCaptureFixture
) -> None:
    seen: list[tuple[str, Any]] = []

    def request_hook(span: Any, operation: str, arg: Any) -> None:
        raise RuntimeError("hook bug")

    def response_hook(span: Any, operation: str, result: Any) -> None:
        seen.append((operation, result))
        span.set_attribute("app.custom", "yes")

    cache = traced(provider, request_hook=request_hook, response_hook=response_hook)
    cache.set({(NS, "a"): (1, None)})
    with caplog.at_level(logging.WARNING, logger="toolkit.middleware"):
        assert cache.get([(NS, "a")]) == {(NS, "a"): 1}
    assert seen == [("set", None), ("get", {(NS, "a"): 1})]
    assert (only(exporter, "cache.get").attributes or {})["app.custom"] == "yes"
    assert any("hook" in r.getMessage() for r in caplog.records)


class _BrokenTracerProvider(TracerProvider):
    """An SDK whose spans fail to start or to end (a broken exporter set-up)."""

    def __init__(self, where: str) -> None:
        super().__init__()
        self.where = where

    def get_tracer(self, *args: Any, **kwargs: Any) -> Any:
        tracer = super().get_tracer(*args, **kwargs)
        where = self.where

        class Broken:
            def start_span(self, *a: Any, **k: Any) -> Any:
                if where == "start":
                    raise RuntimeError("exporter misconfigured")
                span = tracer.start_span(*a, **k)
                original_end = span.end

                def end(*e: Any, **ek: Any) -> None:
                    original_end(*e, **ek)
                    raise RuntimeError("exporter misconfigured")

                span.end = end  # type: ignore[method-assign]
                return span

        return Broken()


@pytest.mark.parametrize("where", ["start", "end"])
async def test_a_broken_sdk_never_fails_the_call(mode: str, where: str) -> None:
    memory: InMemoryCache[Any] = InMemoryCache()
    memory.set({(("app",), "a"): (1, None)})
    for cache in (
        wrap(memory, Tracing(tracer_provider=_BrokenTracerProvider(where))),
        observe(memory, registry=CollectorRegistry(), tracer_provider=_BrokenTracerProvider(where)),
    ):
        keys = [(("app",), "a")]
        got = cache.get(keys) if mode == "sync" else await cache.aget(keys)
        assert got == {(("app",), "a"): 1}


@pytest.mark.parametrize("backend", ["memory", "sqlite"])
async def test_one_shot_iterables_reach_the_cache_whole(
    provider: TracerProvider, exporter: InMemorySpanExporter, mode: str, backend: str, tmp_path: Any
) -> None:
    """A span reads the keys and namespaces of a call: a generator or iterator among them must
    still reach the cache whole (a traced clear of a generator deleted nothing, a traced get
    of an iterator raised TypeError after the cache answered)."""
    other = (("other",), "b")

    def bottom() -> Any:
        return InMemoryCache() if backend == "memory" else SqliteCache(path=str(tmp_path / "c.db"))

    stacks = [
        traced(provider, bottom()),
        observe(bottom(), registry=CollectorRegistry(), tracer_provider=provider),
    ]
    for cache in stacks:
        cache.set({(NS, "a"): (1, None), other: (2, None)})
        if mode == "sync":
            got = cache.get(iter([(NS, "a")]))
            cache.clear(ns for ns in [NS])
            left = cache.get([(NS, "a"), other])
        else:
            got = await cache.aget(iter([(NS, "a")]))
            await cache.aclear(ns for ns in [NS])
            left = await cache.aget([(NS, "a"), other])
        assert got == {(NS, "a"): 1}
        assert left == {other: 2}
        cache.clear()
    clears = [s for s in exporter.get_finished_spans() if s.name == "cache.clear"]
    assert clears and all(
        s.attributes and s.attributes["cache.namespace"] in ("app.users", "__all__") for s in clears
    )
