"""The ``toolkit`` command: ``python -m toolkit demo [options]``."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence


def main(argv: Sequence[str] | None = None) -> int:
    """Parse ``argv`` and run the chosen command; returns the exit code."""
    parser = argparse.ArgumentParser(
        prog="toolkit", description="LangGraph-compatible caches you can see."
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    demo = commands.add_parser(
        "demo",
        help="run a cached workload with live metrics on 127.0.0.1:9464",
        description="Run cached functions and a LangGraph graph under load, with /metrics.",
    )
    from toolkit.demo import add_arguments, run

    add_arguments(demo)
    options = parser.parse_args(argv)
    return run(options)


if __name__ == "__main__":
    sys.exit(main())
