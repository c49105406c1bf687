"""The dashboard and rules against a real Prometheus that scraped the running demo.

Every PromQL expression of the dashboard (variables substituted) and every rule must
parse in Prometheus, and every panel query and recording rule must return data.
``make demo`` itself also runs, briefly, with a real scrape of its ``/metrics``.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.dashboard_support import (
    ROOT,
    RULES,
    Query,
    dashboard_queries,
    load_dashboard,
    rule_queries,
)
from tests.metric_catalog import code_metrics
from tests.prometheus_support import (
    JOB,
    PrometheusServer,
    QueryError,
    free_port,
    http_get,
    require_binary,
    running_prometheus,
    stop_process,
)

pytestmark = pytest.mark.prometheus

DATA_TIMEOUT = 25.0
"""How long a query may take to return data after the first scrapes (rates need two samples)."""


def demo_env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(ROOT), "PYTHONUNBUFFERED": "1"}


def wait_for_metrics(url: str, process: subprocess.Popen[bytes], log: Path) -> str:
    """Poll ``url`` until it serves cache metrics; fail with the demo's output otherwise."""
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"the demo exited with {process.returncode}:\n{log.read_text()}")
        try:
            status, body = http_get(url, timeout=2)
        except OSError:
            status, body = 0, ""
        if status == 200 and "\ncache_gets_total{" in body:  # a sample, not just its HELP line
            return body
        time.sleep(0.1)
    pytest.fail(f"{url} never served cache metrics:\n{log.read_text()}")


@pytest.fixture(scope="module")
def prometheus(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PrometheusServer]:
    """Prometheus scraping the demo (SQLite backend) every second, with the rules loaded."""
    require_binary("prometheus")
    tmp = tmp_path_factory.mktemp("e2e")
    port = free_port()
    log = tmp / "demo.log"
    command = [sys.executable, "-m", "toolkit", "demo", "--forever", "--plain", "--seed", "7"]
    command += ["--port", str(port), "--sqlite-path", str(tmp / "demo.sqlite")]
    with log.open("wb") as out:
        demo = subprocess.Popen(
            command, cwd=ROOT, env=demo_env(), stdout=out, stderr=subprocess.STDOUT
        )
    try:
        wait_for_metrics(f"http://127.0.0.1:{port}/metrics", demo, log)
        with running_prometheus(tmp, [f"127.0.0.1:{port}"], rule_files=[RULES]) as server:
            # Several scrapes, so that every rate has two samples and the rules have run.
            server.wait_for(f'count_over_time(up{{job="{JOB}"}}[1m]) >= 4', timeout=DATA_TIMEOUT)
            yield server
    finally:
        stop_process(demo)


def query_ids(queries: list[Query]) -> list[str]:
    return [query.where for query in queries]


VARIABLES = {"job": JOB, "cache": ".*", "backend": ".*", "datasource": "prometheus"}
PANEL_QUERIES = dashboard_queries(load_dashboard(), VARIABLES)
RULE_QUERIES = rule_queries()


def test_demo_target_is_up(prometheus: PrometheusServer) -> None:
    [series] = prometheus.query(f'up{{job="{JOB}"}}')
    assert series["value"][1] == "1"


@pytest.mark.parametrize("query", PANEL_QUERIES, ids=query_ids(PANEL_QUERIES))
def test_dashboard_query_returns_data(prometheus: PrometheusServer, query: Query) -> None:
    try:
        prometheus.wait_for(query.expr, timeout=DATA_TIMEOUT)
    except QueryError as exc:
        pytest.fail(f"{query.where}: Prometheus refused the query: {exc}")


@pytest.mark.parametrize("query", RULE_QUERIES, ids=query_ids(RULE_QUERIES))
def test_rule_expression_runs(prometheus: PrometheusServer, query: Query) -> None:
    try:
        if query.must_return_data:
            prometheus.wait_for(query.expr, timeout=DATA_TIMEOUT)
        else:
            prometheus.query(query.expr)  # an alert need not fire, but must parse and run
    except QueryError as exc:
        pytest.fail(f"{query.where}: Prometheus refused the expression: {exc}")


def test_rules_loaded_without_evaluation_errors(prometheus: PrometheusServer) -> None:
    import json

    status, body = http_get(f"{prometheus.url}/api/v1/rules")
    assert status == 200
    rules = [rule for group in json.loads(body)["data"]["groups"] for rule in group["rules"]]
    assert len(rules) == len(RULE_QUERIES)
    for rule in rules:
        assert rule["health"] in ("ok", "unknown"), (rule["name"], rule.get("lastError"))


def test_latency_exemplars_carry_trace_ids(prometheus: PrometheusServer) -> None:
    import json
    import urllib.parse

    now = time.time()
    params = urllib.parse.urlencode(
        {
            "query": f'cache_load_duration_seconds_bucket{{job="{JOB}"}}',
            "start": now - 120,
            "end": now,
        }
    )
    deadline = time.monotonic() + DATA_TIMEOUT
    while True:
        status, body = http_get(f"{prometheus.url}/api/v1/query_exemplars?{params}")
        assert status == 200, body
        found = [e for series in json.loads(body)["data"] for e in series["exemplars"]]
        if found or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    assert found, "no exemplars stored for the load histogram"
    assert all(len(exemplar["labels"]["trace_id"]) == 32 for exemplar in found)


# -- make demo ------------------------------------------------------------------


def test_make_demo_runs_briefly_and_serves_metrics(tmp_path: Path) -> None:
    make = shutil.which("make")
    if make is None:
        pytest.skip("`make` is not installed")
    if sys.prefix == sys.base_prefix:
        pytest.skip("the test interpreter is not in a virtual environment for `make` to use")
    venv = Path(sys.prefix)
    port = free_port()
    log = tmp_path / "make-demo.log"
    args = f"--duration 3 --port {port} --sqlite-path {tmp_path / 'demo.sqlite'}"
    # `-o` keeps make from rebuilding the virtual environment the suite already runs in.
    command = [
        make,
        "--no-print-directory",
        "-o",
        f"{venv}/.installed",
        "demo",
        f"VENV={venv}",
        f"ARGS={args}",
    ]
    with log.open("wb") as out:
        process = subprocess.Popen(
            command, cwd=ROOT, env=demo_env(), stdout=out, stderr=subprocess.STDOUT
        )
    try:
        body = wait_for_metrics(f"http://127.0.0.1:{port}/metrics", process, log)
        try:
            assert process.wait(timeout=60) == 0, log.read_text()
        except subprocess.TimeoutExpired:
            pytest.fail(f"make demo --duration 3 still ran after a minute:\n{log.read_text()}")
    finally:
        stop_process(process)
    scraped = {
        sample.name for family in text_string_to_metric_families(body) for sample in family.samples
    }
    for name in ("cache_gets_total", "cache_puts_total", "cache_operation_duration_seconds_bucket"):
        assert name in scraped, name
    assert scraped <= _known_sample_names(), scraped - _known_sample_names()
    output = log.read_text()
    assert "Summary after" in output
    assert "overall hit ratio" in output
    assert f"http://127.0.0.1:{port}/metrics" in output


def _known_sample_names() -> set[str]:
    exported = code_metrics()
    names = set(exported.names)
    for histogram in exported.histograms:
        names |= {f"{histogram}_bucket", f"{histogram}_sum", f"{histogram}_count"}
    # prometheus-client also exposes the creation time of counters and histograms.
    names |= {name.removesuffix("_total") + "_created" for name in exported.names}
    return names
