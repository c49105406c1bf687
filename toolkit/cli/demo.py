"""``toolkit demo``: cached functions under load, with live metrics (see ``toolkit.demo``)."""

from __future__ import annotations

import argparse
from typing import Any

__all__ = ["register", "run"]


def register(commands: Any) -> None:
    """Add the ``demo`` command."""
    parser = commands.add_parser(
        "demo",
        help="run a cached workload with live metrics on 127.0.0.1:9464",
        description="Run cached functions and a LangGraph graph under load, with /metrics.",
    )
    from toolkit.demo import add_arguments

    add_arguments(parser)
    parser.set_defaults(handler=run)


def run(options: argparse.Namespace) -> int:
    """Run the demo."""
    from toolkit.demo import run as run_demo

    return run_demo(options)
