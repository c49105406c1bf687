"""Spans of fleet freshness: a lease wait under the call's span, a refresh linked to it."""

from __future__ import annotations

import threading
import time

from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from prometheus_client import CollectorRegistry

from toolkit import InMemoryCache, cached, observe
from toolkit.lease import LeaseRequest

HANG = 20.0


def named(exporter: InMemorySpanExporter, name: str) -> list[ReadableSpan]:
    return [span for span in exporter.get_finished_spans() if span.name == name]


def test_a_lease_wait_is_a_span_under_the_call(
    provider: TracerProvider, exporter: InMemorySpanExporter
) -> None:
    backend: InMemoryCache[int] = InMemoryCache()
    cache = observe(backend, registry=CollectorRegistry())

    @cached("spans.lock", cache=cache, lock=True, tracer_provider=provider, key_id="spans.lock")
    def answer() -> int:
        return 1

    full_key = answer.cache_key()
    # Another holder (another process, as far as this one can tell) computes the value.
    assert backend.lease(LeaseRequest("acquire", full_key, "elsewhere", 30.0))

    def other_holder() -> None:
        time.sleep(0.05)
        backend.set({full_key: (42, None)})
        backend.lease(LeaseRequest("release", full_key, "elsewhere"))

    holder = threading.Thread(target=other_holder)
    holder.start()
    assert answer() == 42  # the holder's value, read after waiting; never computed here
    holder.join(HANG)
    [call] = named(exporter, "cache.call")
    [wait] = named(exporter, "cache.lease.wait")
    assert wait.parent is not None and wait.parent.span_id == call.context.span_id
    assert call.attributes is not None
    assert call.attributes["cache.lease.outcome"] == "waited"
    assert float(str(call.attributes["cache.lease.wait_seconds"])) > 0


def test_a_background_refresh_is_a_span_linked_to_the_call_that_started_it(
    provider: TracerProvider, exporter: InMemorySpanExporter
) -> None:
    refreshed = threading.Event()
    calls = 0

    @cached(
        "spans.stale",
        cache=observe(InMemoryCache(), registry=CollectorRegistry()),
        ttl=0.05,
        stale_ttl=60,
        tracer_provider=provider,
        key_id="spans.stale",
    )
    def value() -> int:
        nonlocal calls
        calls += 1
        if calls > 1:
            refreshed.set()
        return calls

    assert value() == 1
    time.sleep(0.1)  # past the ttl, inside the stale window
    exporter.clear()
    assert value() == 1  # stale, served at once; the refresh runs in the background
    assert refreshed.wait(HANG)
    deadline = time.monotonic() + HANG
    while not named(exporter, "cache.refresh"):
        assert time.monotonic() < deadline, "the refresh span never ended"
        time.sleep(0.01)
    [refresh] = named(exporter, "cache.refresh")
    [call] = [
        s for s in named(exporter, "cache.call") if s.attributes and s.attributes.get("cache.stale")
    ]
    assert refresh.parent is None  # its own trace: it outlives the call
    assert [link.context.span_id for link in refresh.links] == [call.context.span_id]
