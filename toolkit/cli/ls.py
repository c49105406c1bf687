"""``toolkit ls URL [--ns a/b]``: a cache's namespaces, or the keys of one (never values)."""

from __future__ import annotations

import argparse
from typing import Any

from toolkit.cli._namespaces import SYNTAX, format_namespace, parse_namespace
from toolkit.cli._target import CliError, add_target_arguments, open_target
from toolkit.cli.stats import namespace_table
from toolkit.introspect import KeyInfo

__all__ = ["register", "run"]


def register(commands: Any) -> None:
    """Add the ``ls`` command."""
    parser = commands.add_parser(
        "ls",
        help="list namespaces, or the keys of one namespace (never values)",
        description="Without --ns, list the namespaces and their entry counts; with --ns, "
        "list that namespace's live keys and their time left. Values are never printed. " + SYNTAX,
    )
    add_target_arguments(parser)
    parser.add_argument("--ns", help="namespace whose keys to list, like llm or app.svc/answer")
    parser.add_argument(
        "--limit", type=_positive_int, default=1000, help="keys to show at most (default 1000)"
    )
    parser.set_defaults(handler=run)


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {text}")
    return value


def run(options: argparse.Namespace) -> int:
    """Print the namespaces, or one namespace's keys."""
    namespace = None
    if options.ns is not None:
        try:
            namespace = parse_namespace(options.ns)
        except ValueError as exc:
            raise CliError(str(exc)) from exc
    with open_target(options) as (cache, where):
        if namespace is None:
            counts = cache.namespaces()
            print(where)
            print("\n".join(namespace_table(counts)) if counts else "  (no entries)")
            return 0
        shown: list[KeyInfo] = []
        more = 0
        for info in cache.iter_keys(namespace):
            if len(shown) < options.limit:
                shown.append(info)
            else:
                more += 1
    print(f"{where}, namespace {format_namespace(namespace)}")
    print("\n".join(render_keys(sorted(shown))) if shown else "  (no live keys)")
    if more:
        print(f"  ... and {more:,} more keys (raise --limit to list them)")
    return 0


def render_keys(keys: list[KeyInfo]) -> list[str]:
    """``expires in  key`` rows."""
    cells = [("never" if k.expires_in is None else f"{k.expires_in:,.1f}s", k.key) for k in keys]
    width = max(len("expires in"), *(len(left) for left, _ in cells))
    return [f"  {'expires in'.rjust(width)}  key"] + [
        f"  {left.rjust(width)}  {key}" for left, key in cells
    ]
