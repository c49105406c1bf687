"""The ``toolkit`` command (also ``python -m toolkit``): look inside caches, run the demo.

One module per command; each adds its parser with ``register(commands)`` and sets the
``handler`` that runs it. Errors in the input print one line and exit with status 2; a
cache that cannot be reached exits with status 1.
"""

from __future__ import annotations

import argparse
import os
import sys
import textwrap
from collections.abc import Sequence

from toolkit.cli import clear, dashboards, demo, ls, purge, stats
from toolkit.cli._namespaces import SYNTAX
from toolkit.cli._target import CliError
from toolkit.errors import CacheError

__all__ = ["build_parser", "main"]

COMMANDS = (stats, ls, clear, purge, dashboards, demo)

EPILOG = f"""\
examples:
  toolkit stats sqlite:///cache.db
  toolkit ls redis://127.0.0.1:6379/0 --ns app.services/answer
  toolkit clear sqlite:///cache.db --ns llm
  toolkit purge sqlite:///cache.db
  toolkit dashboards --out ./monitoring

{textwrap.fill(SYNTAX, 78)}
"toolkit COMMAND --help" describes each command.
"""


def build_parser() -> argparse.ArgumentParser:
    """The parser of every command."""
    from toolkit import __version__

    parser = argparse.ArgumentParser(
        prog="toolkit",
        description="LangGraph-compatible caches you can see: inspect and maintain caches, "
        "write the dashboards, run the demo.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"toolkit {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for command in COMMANDS:
        command.register(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Parse ``argv`` and run the chosen command; returns the exit status."""
    options = build_parser().parse_args(argv)
    try:
        status: int = options.handler(options)
    except CliError as exc:
        print(f"toolkit {options.command}: {exc}", file=sys.stderr)
        return 2
    except CacheError as exc:
        print(f"toolkit {options.command}: the cache failed: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        # The reader went away (``toolkit ls ... | head``): quiet, as other tools are.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 141
    return status
