"""Tracing decisions use OpenTelemetry's public API only, and follow an SDK installed later."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import toolkit

SCRIPT = """
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from prometheus_client import CollectorRegistry
from toolkit import InMemoryCache, observe
from toolkit.middleware.otel import global_tracing_live, refresh_global_tracing

cache = observe(InMemoryCache(), registry=CollectorRegistry())
cache.get([(("ns",), "k")])
assert not global_tracing_live()
exporter = InMemorySpanExporter()
provider = TracerProvider()
provider.add_span_processor(SimpleSpanProcessor(exporter))
trace.set_tracer_provider(provider)
refresh_global_tracing()
assert global_tracing_live()
cache.get([(("ns",), "k")])
print(sorted(span.name for span in exporter.get_finished_spans()))
"""


def test_an_sdk_installed_after_the_cache_is_followed() -> None:
    done = subprocess.run(
        [sys.executable, "-c", SCRIPT], capture_output=True, text=True, timeout=120, check=False
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "['cache.get']"


def test_no_module_reads_opentelemetry_private_state() -> None:
    package = Path(toolkit.__file__).parent
    offenders = [
        str(path.relative_to(package))
        for path in package.rglob("*.py")
        if "_TRACER_PROVIDER" in path.read_text(encoding="utf-8")
    ]
    assert offenders == []
