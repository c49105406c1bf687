"""``toolkit dashboards --out DIR``: write the Grafana dashboard and Prometheus rules shipped."""

from __future__ import annotations

import argparse
from importlib import resources
from importlib.abc import Traversable
from pathlib import Path
from typing import Any

from toolkit.cli._target import CliError

__all__ = ["dashboard_files", "register", "run"]


def register(commands: Any) -> None:
    """Add the ``dashboards`` command."""
    parser = commands.add_parser(
        "dashboards",
        help="write the Grafana dashboard and Prometheus alert rules to a directory",
        description="Write cache.json (Grafana), alerts.yml (Prometheus alert and recording "
        "rules) and alerts_test.yml (their promtool tests) into a directory.",
    )
    parser.add_argument("--out", required=True, type=Path, help="directory to write into")
    parser.add_argument("--force", action="store_true", help="overwrite files already there")
    parser.set_defaults(handler=run)


def dashboard_files() -> Traversable:
    """Where the shipped files are: package data in a wheel, ``dashboards/`` in a checkout."""
    packaged = resources.files("toolkit") / "dashboards"
    if packaged.is_dir():
        return packaged
    # A source checkout or editable install: the wheel build copies this directory in.
    checkout = Path(__file__).resolve().parents[2] / "dashboards"
    if checkout.is_dir():
        return checkout
    raise CliError("this installation of toolkit has no dashboards (a broken wheel?)")


def run(options: argparse.Namespace) -> int:
    """Copy the files, refusing to overwrite different ones unless ``--force``."""
    source = dashboard_files()
    out: Path = options.out
    if out.exists() and not out.is_dir():
        raise CliError(f"{out} exists and is not a directory")
    contents = {
        item.name: item.read_bytes()
        for item in sorted(source.iterdir(), key=lambda item: item.name)
        if item.is_file()
    }
    clashes = [
        name
        for name, data in contents.items()
        if (out / name).exists() and (out / name).read_bytes() != data
    ]
    if clashes and not options.force:
        raise CliError(
            f"{', '.join(str(out / name) for name in clashes)} already exist with other "
            "content: pass --force to overwrite"
        )
    out.mkdir(parents=True, exist_ok=True)
    for name, data in contents.items():
        (out / name).write_bytes(data)
        print(out / name)
    print(
        f"Grafana: import {out / 'cache.json'} (Dashboards > New > Import).\n"
        f"Prometheus: add {out / 'alerts.yml'} to rule_files; "
        f"check with promtool test rules {out / 'alerts_test.yml'}"
    )
    return 0
