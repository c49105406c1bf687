"""The dashboard and the rules, checked without a running Prometheus.

promtool validates the rules, runs their unit tests and checks the example config; the
dashboard JSON is checked for structure (ids, grid, datasource by variable, units,
thresholds, descriptions, exemplars) and against the metrics the code exports.
"""

from __future__ import annotations

import os
import subprocess
from itertools import combinations
from pathlib import Path
from typing import Any

import pytest

from tests.dashboard_support import (
    DASHBOARD,
    EXAMPLE_CONFIG,
    RULE_TESTS,
    RULES,
    family_of,
    iter_panels,
    load_dashboard,
    load_rules,
    metric_names,
    rule_queries,
)
from tests.metric_catalog import code_metrics
from tests.prometheus_support import require_binary

DATASOURCE = {"type": "prometheus", "uid": "${datasource}"}
PROMETHEUS_OWN = {"up"}  # series Prometheus writes itself, not the code


@pytest.fixture(scope="module")
def dashboard() -> dict[str, Any]:
    return load_dashboard()


def query_panels(dashboard: dict[str, Any]) -> list[dict[str, Any]]:
    return [panel for panel in iter_panels(dashboard) if panel["type"] != "row"]


def promtool(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [require_binary("promtool"), *args],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


# -- promtool ------------------------------------------------------------------


def test_rules_pass_promtool_check() -> None:
    result = promtool("check", "rules", str(RULES))
    assert result.returncode == 0, result.stdout + result.stderr


def test_rule_unit_tests_pass() -> None:
    result = promtool("test", "rules", str(RULE_TESTS))
    assert result.returncode == 0, result.stdout + result.stderr


def test_example_prometheus_config_is_valid() -> None:
    result = promtool("check", "config", str(EXAMPLE_CONFIG))
    assert result.returncode == 0, result.stdout + result.stderr


def test_every_alert_has_a_unit_test_that_fires_and_one_that_does_not() -> None:
    import yaml

    alerts = {rule["alert"] for rule in load_rules() if "alert" in rule}
    cases = [
        case
        for test in yaml.safe_load(RULE_TESTS.read_text())["tests"]
        for case in test.get("alert_rule_test", [])
    ]
    fires = {case["alertname"] for case in cases if case.get("exp_alerts")}
    silent = {case["alertname"] for case in cases if not case.get("exp_alerts")}
    assert alerts - fires == set(), "alerts never tested firing"
    assert alerts - silent == set(), "alerts never tested staying silent"


def test_alerts_carry_for_severity_summary_and_description() -> None:
    for rule in load_rules():
        if "alert" not in rule:
            continue
        assert rule.get("for"), rule["alert"]
        assert rule["labels"]["severity"] in {"warning", "critical"}, rule["alert"]
        assert rule["annotations"]["summary"], rule["alert"]
        assert "Check" in rule["annotations"]["description"], rule["alert"]


# -- dashboard structure -------------------------------------------------------------


def test_dashboard_is_current_schema_and_importable(dashboard: dict[str, Any]) -> None:
    assert dashboard["schemaVersion"] >= 39
    assert dashboard["uid"] and dashboard["title"]
    # File provisioning cannot resolve import-time `${DS_...}` inputs: the datasource is a variable.
    assert "__inputs" not in dashboard
    assert dashboard["id"] is None


def test_dashboard_variables(dashboard: dict[str, Any]) -> None:
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    assert set(variables) == {"datasource", "job", "cache", "backend"}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    for name in ("job", "cache", "backend"):
        assert variables[name]["type"] == "query"
        assert variables[name]["datasource"] == DATASOURCE
        assert variables[name]["includeAll"] and variables[name]["allValue"] == ".*"


def test_panel_ids_are_unique(dashboard: dict[str, Any]) -> None:
    ids = [panel["id"] for panel in iter_panels(dashboard)]
    assert len(ids) == len(set(ids))


def test_panels_fit_the_grid_without_overlapping(dashboard: dict[str, Any]) -> None:
    boxes = []
    for panel in iter_panels(dashboard):
        grid = panel["gridPos"]
        assert grid["x"] >= 0 and grid["y"] >= 0 and grid["w"] > 0 and grid["h"] > 0, panel["title"]
        assert grid["x"] + grid["w"] <= 24, panel["title"]
        boxes.append((panel["title"], grid))
    for (name_a, a), (name_b, b) in combinations(boxes, 2):
        apart = (
            a["x"] + a["w"] <= b["x"]
            or b["x"] + b["w"] <= a["x"]
            or a["y"] + a["h"] <= b["y"]
            or b["y"] + b["h"] <= a["y"]
        )
        assert apart, f"{name_a!r} overlaps {name_b!r}"


def test_every_panel_uses_the_datasource_variable(dashboard: dict[str, Any]) -> None:
    for panel in query_panels(dashboard):
        assert panel["datasource"] == DATASOURCE, panel["title"]
        assert panel["targets"], panel["title"]
        for target in panel["targets"]:
            assert target["datasource"] == DATASOURCE, panel["title"]


def test_every_panel_has_unit_thresholds_and_description(dashboard: dict[str, Any]) -> None:
    for panel in query_panels(dashboard):
        defaults = panel["fieldConfig"]["defaults"]
        assert defaults["unit"], panel["title"]
        steps = defaults["thresholds"]["steps"]
        assert steps and steps[0]["value"] is None, panel["title"]
        assert len(panel["description"]) > 40, panel["title"]


def test_every_query_is_filtered_by_job(dashboard: dict[str, Any]) -> None:
    for panel in query_panels(dashboard):
        for target in panel["targets"]:
            for selector in target["expr"].split("{")[1:]:
                assert 'job=~"$job"' in selector.split("}")[0], (panel["title"], target["expr"])


def test_latency_panels_link_to_traces_by_exemplar(dashboard: dict[str, Any]) -> None:
    latency = [
        panel
        for panel in query_panels(dashboard)
        if any("_bucket" in target["expr"] for target in panel["targets"])
    ]
    assert len(latency) >= 2
    for panel in latency:
        assert all(target.get("exemplar") for target in panel["targets"]), panel["title"]


def test_dashboard_answers_the_on_call_questions(dashboard: dict[str, Any]) -> None:
    by_type: dict[str, list[str]] = {}
    for panel in query_panels(dashboard):
        by_type.setdefault(panel["type"], []).append(panel["title"].lower())
    titles = " | ".join(title for titles in by_type.values() for title in titles)
    for topic in ("hit ratio", "gets per second", "latency", "errors", "circuit", "saved",
                  "entries", "evictions", "worst hit ratio", "load"):  # fmt: skip
        assert topic in titles, topic
    assert any("hit ratio" in title for title in by_type["stat"])
    assert any("hit ratio" in title for title in by_type["timeseries"])
    assert any("worst hit ratio" in title for title in by_type["table"])


# -- dashboard and rules against the code's metrics -------------------------------------


def used_metric_names(dashboard: dict[str, Any]) -> set[str]:
    names: set[str] = set()
    for panel in query_panels(dashboard):
        for target in panel["targets"]:
            names |= metric_names(target["expr"])
    for query in rule_queries():
        names |= metric_names(query.expr)
    return names


def test_metric_name_extraction() -> None:
    expr = (
        'histogram_quantile(0.99, sum by (backend, le) (rate(x_bucket{job=~"$job",a="b c"}[5m])))'
        " / on (job) group_left y:z:rate5m offset 5m and bool w"
    )
    assert metric_names(expr) == {"x_bucket", "y:z:rate5m", "w"}


def test_every_metric_the_dashboard_and_rules_use_exists(dashboard: dict[str, Any]) -> None:
    exported = code_metrics()
    recorded = {rule["record"] for rule in load_rules() if "record" in rule}
    for name in used_metric_names(dashboard):
        if ":" in name:
            assert name in recorded, f"{name} is not a recording rule in alerts.yml"
            continue
        family = family_of(name, exported.histograms)
        assert family in exported.names | PROMETHEUS_OWN, f"{name} is not exported by the code"


def test_every_metric_the_code_exports_is_on_the_dashboard(dashboard: dict[str, Any]) -> None:
    exported = code_metrics()
    on_dashboard: set[str] = set()
    for panel in query_panels(dashboard):
        for target in panel["targets"]:
            on_dashboard |= metric_names(target["expr"])
    recorded = {rule["record"]: rule["expr"] for rule in load_rules() if "record" in rule}
    # A recording rule on the dashboard shows the raw metrics it is made of.
    pending = [name for name in on_dashboard if name in recorded]
    while pending:
        for name in metric_names(recorded[pending.pop()]):
            if name not in on_dashboard:
                on_dashboard.add(name)
                if name in recorded:
                    pending.append(name)
    shown = {family_of(name, exported.histograms) for name in on_dashboard}
    assert exported.names - shown == set(), "exported metrics missing from the dashboard"


# -- examples/monitoring: compose file and Grafana provisioning ----------------------


MONITORING = EXAMPLE_CONFIG.parent


def load_yaml(path: Path) -> Any:
    import yaml

    return yaml.safe_load(path.read_text())


def mounts(service: dict[str, Any]) -> dict[str, Path]:
    """Container path -> host path of a compose service's bind mounts."""
    found = {}
    for volume in service.get("volumes", []):
        source, target = volume.split(":")[:2]
        if source.startswith((".", "/")):
            found[target] = (MONITORING / source).resolve()
    return found


def test_compose_mounts_exist_and_match_the_configs() -> None:
    services = load_yaml(MONITORING / "compose.yaml")["services"]
    assert {"prometheus", "grafana"} <= set(services)
    for service in services.values():
        for host_path in mounts(service).values():
            assert host_path.exists(), host_path
    prometheus = services["prometheus"]
    config_flag = next(arg for arg in prometheus["command"] if arg.startswith("--config.file="))
    container_config = config_flag.split("=", 1)[1]
    prom_mounts = mounts(prometheus)
    assert prom_mounts[container_config] == EXAMPLE_CONFIG.resolve()
    # The rule file path in prometheus.yml resolves inside the container as it does here.
    container_dir = Path(container_config).parent
    for rule_file in load_yaml(EXAMPLE_CONFIG)["rule_files"]:
        inside = Path(os.path.normpath(container_dir / rule_file))
        mounted = {
            target: source
            for target, source in prom_mounts.items()
            if str(inside).startswith(target)
        }
        assert mounted, f"{inside} is not mounted into the Prometheus container"
        target, source = max(mounted.items(), key=lambda item: len(item[0]))
        assert source / inside.relative_to(target) == (EXAMPLE_CONFIG.parent / rule_file).resolve()
    assert "--enable-feature=exemplar-storage" in prometheus["command"]


def test_grafana_provisions_the_dashboard_and_prometheus_with_trace_links() -> None:
    grafana = load_yaml(MONITORING / "compose.yaml")["services"]["grafana"]
    grafana_mounts = mounts(grafana)
    provisioning = grafana_mounts["/etc/grafana/provisioning"]
    [provider] = load_yaml(provisioning / "dashboards" / "toolkit.yml")["providers"]
    assert provider["type"] == "file"
    assert grafana_mounts[provider["options"]["path"]] == DASHBOARD.parent.resolve()
    sources = {
        ds["uid"]: ds
        for ds in load_yaml(provisioning / "datasources" / "datasources.yml")["datasources"]
    }
    prometheus = next(ds for ds in sources.values() if ds["type"] == "prometheus")
    assert prometheus["isDefault"]
    [link] = prometheus["jsonData"]["exemplarTraceIdDestinations"]
    assert link["name"] == "trace_id"
    assert sources[link["datasourceUid"]]["type"] == "tempo"
