"""What the observability layer lets out: bounded label sets, no key or value in metrics,
spans or logs, and ``/metrics`` on loopback unless told otherwise."""

from __future__ import annotations

import contextlib
import json
import logging
import socket
import time
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.openmetrics.exposition import generate_latest as generate_openmetrics

from tests.reliability.conftest import Tally
from tests.reliability.faults import RefusingPort
from tests.reliability.stacks import aclose, observed, redis_module, sqlite_cache
from toolkit import FullKey, InMemoryCache

CAP = 100


def _label_values(registry: CollectorRegistry, label: str) -> set[str]:
    return {
        sample.labels[label]
        for family in registry.collect()
        for sample in family.samples
        if label in sample.labels
    }


def _series(registry: CollectorRegistry) -> int:
    return sum(len(family.samples) for family in registry.collect())


@pytest.mark.slow
def test_100k_namespaces_keep_series_under_the_cap(tally: Callable[..., Tally]) -> None:
    row = tally(f"metrics: 100,000 distinct namespaces, label cap {CAP}")
    cache: InMemoryCache[Any] = InMemoryCache(max_entries=1_000)
    stack, registry = observed(cache, max_cache_labels=CAP)
    batch = 500
    for start in range(0, 100_000, batch):
        keys: list[FullKey] = [
            (("tenant", f"user-{i}"), "profile") for i in range(start, start + batch)
        ]
        row.call(stack.set, {fk: (fk[0][1], None) for fk in keys})
        got = row.call(stack.get, keys)
        row.check(got == {fk: fk[0][1] for fk in keys})
    labels = _label_values(registry, "cache")
    assert row.errors == 0 and row.wrong == 0
    assert len(labels) <= CAP + 3, f"{len(labels)} distinct cache labels"
    assert any("overflow" in label for label in labels), "namespaces past the cap were not folded"
    assert _series(registry) < 40 * (CAP + 3), f"{_series(registry)} series"


@pytest.fixture
def spans() -> Iterator[tuple[TracerProvider, InMemorySpanExporter]]:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    yield provider, exporter
    provider.shutdown()


def _leaks(
    sentinel: str,
    registries: list[CollectorRegistry],
    exporter: InMemorySpanExporter,
    records: list[logging.LogRecord],
) -> list[str]:
    """Every place the sentinel shows up: metric text, span JSON, formatted log records."""
    found = []
    for registry in registries:
        for text in (generate_latest(registry), generate_openmetrics(registry)):  # type: ignore[no-untyped-call]
            if sentinel in text.decode(errors="replace"):
                found.append("metrics exposition")
    for span in exporter.get_finished_spans():
        if sentinel in span.to_json():
            found.append(f"span {span.name}: {json.loads(span.to_json())['attributes']}")
    formatter = logging.Formatter("%(name)s %(message)s")
    for record in records:
        text = formatter.format(record)
        if sentinel in text or sentinel in repr(record.args):
            found.append(f"log {record.name}: {text[:200]}")
    return found


async def _drive(stack: Any, sentinel: str, row: Tally) -> None:
    ns = ("leaks", "plain")
    keys: list[FullKey] = [(ns, f"{sentinel}-{i}") for i in range(5)]
    value = {"secret": sentinel, "list": [sentinel] * 3}
    row.call(stack.set, {fk: (value, None) for fk in keys[:3]})
    row.call(stack.get, keys)
    await row.acall(stack.aset, {fk: (value, 60) for fk in keys[3:]})
    await row.acall(stack.aget, keys)
    row.call(stack.clear, [ns])
    await row.acall(stack.aclear, [ns])
    for bad in ([(ns, sentinel + "\ud800")], [((sentinel, 1), "k")]):
        with pytest.raises((ValueError, TypeError)):  # caller bugs reach the caller, unlogged
            stack.get(bad)


async def _drive_decorated(
    provider: TracerProvider, registries: list[CollectorRegistry], sentinel: str, row: Tally
) -> None:
    """A ``@cached`` function whose argument and result carry the sentinel."""
    decorators = pytest.importorskip("toolkit.decorators", reason="@cached not merged yet")
    stack, registry = observed(InMemoryCache(), tracer_provider=provider)
    registries.append(registry)

    def echo(secret: str) -> dict[str, str]:
        return {"echo": secret}

    lookup: Any = decorators.cached(("leaks", "fn"), cache=stack, tracer_provider=provider)(echo)
    for _ in range(2):
        row.check(row.call(lookup, sentinel) == {"echo": sentinel})


async def _scan_for_sentinel(
    tmp_path: Path,
    provider: TracerProvider,
    exporter: InMemorySpanExporter,
    caplog: pytest.LogCaptureFixture,
    refusing_port: RefusingPort,
    row: Tally,
    *,
    need_sqlite: bool = False,
) -> list[str]:
    """Drive every stack with sentinel keys and values; return where the sentinel leaked."""
    sentinel = f"S3NT1NEL{uuid.uuid4().hex}"
    registries = []
    caches: list[Any] = [InMemoryCache()]
    if need_sqlite:
        caches.append(sqlite_cache(tmp_path / "leak.db"))
    else:
        with contextlib.suppress(pytest.skip.Exception):
            caches.append(sqlite_cache(tmp_path / "leak.db"))
    with contextlib.suppress(pytest.skip.Exception):
        caches.append(redis_module().RedisCache.from_url(refusing_port.url))
    try:
        for cache in caches:
            stack, registry = observed(cache, tracer_provider=provider, failure_threshold=2)
            registries.append(registry)
            await _drive(stack, sentinel, row)
        with contextlib.suppress(pytest.skip.Exception):
            await _drive_decorated(provider, registries, sentinel, row)
    finally:
        for cache in caches:
            await aclose(cache)
    assert exporter.get_finished_spans(), "no spans were recorded: the scan would prove nothing"
    assert caplog.records, "nothing was logged: the failure path was not exercised"
    return _leaks(sentinel, registries, exporter, caplog.records)


async def test_no_key_or_value_in_metrics_spans_or_logs(
    tmp_path: Path,
    spans: tuple[TracerProvider, InMemorySpanExporter],
    caplog: pytest.LogCaptureFixture,
    refusing_port: RefusingPort,
    tally: Callable[..., Tally],
) -> None:
    """Production logging: our loggers at DEBUG, everything else at INFO."""
    caplog.set_level(logging.INFO)
    caplog.set_level(logging.DEBUG, logger="toolkit")
    row = tally("leaks: sentinel keys/values vs metrics, spans, logs (toolkit DEBUG)")
    found = await _scan_for_sentinel(tmp_path, *spans, caplog, refusing_port, row)
    assert found == []
    assert row.wrong == 0


async def test_no_key_or_value_in_logs_at_debug_everywhere(
    tmp_path: Path,
    spans: tuple[TracerProvider, InMemorySpanExporter],
    caplog: pytest.LogCaptureFixture,
    refusing_port: RefusingPort,
    tally: Callable[..., Tally],
) -> None:
    caplog.set_level(logging.DEBUG)
    row = tally("leaks: sentinel keys/values vs logs with every logger at DEBUG")
    found = await _scan_for_sentinel(tmp_path, *spans, caplog, refusing_port, row, need_sqlite=True)
    assert found == []


def _outward_address() -> str | None:
    """A non-loopback IPv4 address of this machine, if it has one."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        try:
            probe.connect(("192.0.2.1", 9))  # TEST-NET-1: no packet is sent for UDP connect
        except OSError:
            return None
        address = str(probe.getsockname()[0])
    return None if address.startswith("127.") or address == "0.0.0.0" else address


def test_metrics_endpoint_binds_loopback_by_default(tally: Callable[..., Tally]) -> None:
    exposition = pytest.importorskip("toolkit.exposition", reason="exposition not merged yet")
    row = tally("/metrics server started with defaults: reachable only on loopback", "bare")
    registry = CollectorRegistry()
    with exposition.start_metrics_server(port=0, registry=registry) as server:
        assert server.host == "127.0.0.1"
        start = time.perf_counter()
        with urllib.request.urlopen(server.url, timeout=5) as response:
            assert response.status == 200
        row.timed(time.perf_counter() - start)
        outward = _outward_address()
        if outward is not None:
            row.operations += 1
            with pytest.raises(OSError):
                socket.create_connection((outward, server.port), timeout=2).close()
