"""Tracing decisions use OpenTelemetry's public API only, and follow an SDK installed later."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

import toolkit

SCRIPT = """
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from prometheus_client import CollectorRegistry
from toolkit import InMemoryCache, observe
from prometheus_client.openmetrics.exposition import generate_latest
from toolkit.middleware.otel import global_tracing_live, refresh_global_tracing

import asyncio, gc
from toolkit import FailOpen, SqliteCache, Tracing, wrap

registry = CollectorRegistry()
cache = observe(InMemoryCache(), registry=registry)
cache.get([(("ns",), "k")])
# Built before the SDK too: a layer over the tracing layer, over an I/O backend (async
# calls of their own), and a stack dropped before the SDK arrives.
stacked = wrap(SqliteCache(path=":memory:"), FailOpen(), Tracing())
wrap(InMemoryCache(), FailOpen(), Tracing())
gc.collect()
assert not global_tracing_live()
exporter = InMemorySpanExporter()
provider = TracerProvider()
provider.add_span_processor(SimpleSpanProcessor(exporter))
trace.set_tracer_provider(provider)
refresh_global_tracing()
assert global_tracing_live()
cache.get([(("ns",), "k")])
asyncio.run(cache.aset({(("ns",), "k"): (1, None)}))
stacked.get([(("ns",), "k")])
asyncio.run(stacked.aclear())
print(sorted(span.name for span in exporter.get_finished_spans()))
with trace.get_tracer("test").start_as_current_span("caller") as caller:
    cache.get([(("ns",), "k")])
trace_id = format(caller.get_span_context().trace_id, "032x")
print(f'trace_id="{trace_id}"' in generate_latest(registry).decode())
"""


def test_an_sdk_installed_after_the_cache_is_followed_by_spans_and_exemplars() -> None:
    done = subprocess.run(
        [sys.executable, "-c", SCRIPT], capture_output=True, text=True, timeout=120, check=False
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == [
        "['cache.clear',",
        "'cache.get',",
        "'cache.get',",
        "'cache.set']",
        "True",
    ]


FOLLOWED_WITHOUT_REFRESH = """
import os, sys, time
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from prometheus_client import CollectorRegistry
from toolkit import InMemoryCache, observe

cache = observe(InMemoryCache(), registry=CollectorRegistry())
cache.get([(("ns",), "k")])  # the watcher runs from here on
if FORK and os.fork():
    _, status = os.wait()
    sys.exit(os.waitstatus_to_exitcode(status))
exporter = InMemorySpanExporter()
provider = TracerProvider()
provider.add_span_processor(SimpleSpanProcessor(exporter))
trace.set_tracer_provider(provider)  # no refresh_global_tracing(): the watcher must notice
give_up = time.monotonic() + 60  # a generous bound for a busy machine; normally 0.5 s
while not exporter.get_finished_spans() and time.monotonic() < give_up:
    cache.get([(("ns",), "k")])
    time.sleep(0.01)
print(sorted({span.name for span in exporter.get_finished_spans()}))
"""


@pytest.mark.parametrize("fork", [False, True], ids=["same-process", "forked-child"])
def test_an_sdk_installed_later_is_noticed_without_being_told(fork: bool) -> None:
    script = f"FORK = {fork}\n{FOLLOWED_WITHOUT_REFRESH}"
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=120, check=False
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["['cache.get']"]


def test_no_module_reads_opentelemetry_private_state() -> None:
    package = Path(toolkit.__file__).parent
    offenders = [
        str(path.relative_to(package))
        for path in package.rglob("*.py")
        if "_TRACER_PROVIDER" in path.read_text(encoding="utf-8")
    ]
    assert offenders == []


def test_no_module_reads_prometheus_clients_private_state() -> None:
    package = Path(toolkit.__file__).parent
    private = re.compile(r"prometheus_\w*\._[a-z]|from prometheus_client[\w.]* import _")
    offenders = [
        str(path.relative_to(package))
        for path in package.rglob("*.py")
        if private.search(path.read_text(encoding="utf-8"))
    ]
    assert offenders == []
