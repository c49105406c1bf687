"""Read the dashboard and the rules: panels, PromQL expressions, the metric names they use."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from collections.abc import Set as AbstractSet
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parent.parent
DASHBOARD = ROOT / "dashboards" / "cache.json"
RULES = ROOT / "dashboards" / "alerts.yml"
RULE_TESTS = ROOT / "dashboards" / "alerts_test.yml"
EXAMPLE_CONFIG = ROOT / "examples" / "monitoring" / "prometheus.yml"

# What Grafana puts in place of its built-in variables; any window over two 1 s scrapes works.
GRAFANA_BUILTINS = {
    "$__rate_interval": "1m",
    "$__interval": "5s",
    "$__range": "5m",
}

_KEYWORDS = {
    "and", "or", "unless", "by", "without", "on", "ignoring", "group_left", "group_right",
    "offset", "bool", "inf", "nan",
}  # fmt: skip
_LABEL_LISTS = re.compile(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)")
_STRINGS = re.compile(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'')
_IDENT = re.compile(r"(?<![\w:$])([a-zA-Z_:][a-zA-Z0-9_:]*)(\s*\()?")
_LABEL_VALUES = re.compile(r"^label_values\((?:(.*),\s*)?(\w+)\)$", re.S)


@dataclass(frozen=True)
class Query:
    """One PromQL expression of the dashboard, located for error messages."""

    where: str
    expr: str
    must_return_data: bool


def load_dashboard() -> dict[str, Any]:
    """The dashboard JSON as a dict."""
    data: dict[str, Any] = json.loads(DASHBOARD.read_text())
    return data


def load_rules() -> list[dict[str, Any]]:
    """Every rule (recording and alerting) of ``alerts.yml``, in file order."""
    data = yaml.safe_load(RULES.read_text())
    return [rule for group in data["groups"] for rule in group["rules"]]


def iter_panels(dashboard: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """Every panel, including those nested in collapsed rows."""
    for panel in dashboard["panels"]:
        yield panel
        yield from panel.get("panels", [])


def substitute(expr: str, variables: dict[str, str]) -> str:
    """Replace Grafana's built-in and the dashboard's template variables in ``expr``."""
    for name, value in GRAFANA_BUILTINS.items():
        expr = expr.replace(name, value)
    # Longest names first, so `$cache` cannot eat the start of `$cache_name`.
    for name in sorted(variables, key=len, reverse=True):
        expr = expr.replace("${" + name + "}", variables[name]).replace("$" + name, variables[name])
    return expr


def variable_queries(dashboard: dict[str, Any]) -> Iterator[tuple[str, str]]:
    """``(variable, series selector)`` for each ``label_values(selector, label)`` variable."""
    for variable in dashboard["templating"]["list"]:
        if variable["type"] != "query":
            continue
        query = variable["query"]
        text = query["query"] if isinstance(query, dict) else query
        match = _LABEL_VALUES.match(text.strip())
        if match is None:
            raise ValueError(f"variable {variable['name']}: not a label_values() query: {text!r}")
        yield variable["name"], match.group(1) or "up"


def dashboard_queries(dashboard: dict[str, Any], variables: dict[str, str]) -> list[Query]:
    """Every PromQL expression of the dashboard with variables substituted."""
    queries = [
        Query(f"variable {name}", substitute(selector, variables), must_return_data=True)
        for name, selector in variable_queries(dashboard)
    ]
    for panel in iter_panels(dashboard):
        for target in panel.get("targets", []):
            where = f"panel {panel['id']} {panel['title']!r} target {target['refId']}"
            queries.append(
                Query(where, substitute(target["expr"], variables), must_return_data=True)
            )
    return queries


def rule_queries() -> list[Query]:
    """Every recording and alert rule expression (alerts need not fire, so no data is fine)."""
    return [
        Query(
            f"rule {rule.get('record') or rule.get('alert')}",
            rule["expr"],
            must_return_data="record" in rule,
        )
        for rule in load_rules()
    ]


def metric_names(expr: str) -> set[str]:
    """The metric names an expression selects (functions, keywords and label names excluded)."""
    text = _STRINGS.sub('""', expr)
    text = re.sub(r"\{[^}]*\}", "", text)
    text = re.sub(r"\[[^\]]*\]", "", text)
    text = _LABEL_LISTS.sub("", text)
    names = set()
    for match in _IDENT.finditer(text):
        name, call = match.group(1), match.group(2)
        if call or name.lower() in _KEYWORDS:
            continue
        names.add(name)
    return names


def family_of(sample_name: str, histograms: AbstractSet[str]) -> str:
    """Map ``x_bucket``/``x_sum``/``x_count`` of a known histogram ``x`` to ``x``."""
    for suffix in ("_bucket", "_sum", "_count"):
        if sample_name.endswith(suffix) and sample_name[: -len(suffix)] in histograms:
            return sample_name[: -len(suffix)]
    return sample_name
