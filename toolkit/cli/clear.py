"""``toolkit clear URL [--ns a/b ...]``: delete whole namespaces, or every entry of a cache."""

from __future__ import annotations

import argparse
from typing import Any

from toolkit.cli._namespaces import SYNTAX, format_namespace, parse_namespace
from toolkit.cli._target import CliError, add_target_arguments, confirm, entries, open_target

__all__ = ["register", "run"]


def register(commands: Any) -> None:
    """Add the ``clear`` command."""
    parser = commands.add_parser(
        "clear",
        help="delete namespaces, or every entry of the cache (asks first)",
        description="Delete exactly the given namespaces (not their children), or with no "
        "--ns every entry of this cache and nothing else in a shared store. Asks for "
        "confirmation; without a terminal, only --yes proceeds. " + SYNTAX,
    )
    add_target_arguments(parser)
    parser.add_argument("--ns", action="append", help="a namespace to delete (repeat for several)")
    parser.add_argument("--yes", "-y", action="store_true", help="do not ask for confirmation")
    parser.set_defaults(handler=run)


def run(options: argparse.Namespace) -> int:
    """Delete what was asked, after confirmation."""
    try:
        namespaces = None if options.ns is None else [parse_namespace(ns) for ns in options.ns]
    except ValueError as exc:
        raise CliError(str(exc)) from exc
    with open_target(options) as (cache, where):
        if namespaces is None:
            doomed = cache.stats().entries
            what = "every entry"
        else:
            counts = cache.namespaces()
            # A namespace stored hashed (a long one, in Redis) is left out of the counts, not
            # empty: its own keys say how many entries it holds.
            doomed = sum(
                counts[ns] if ns in counts else sum(1 for _ in cache.iter_keys(ns))
                for ns in dict.fromkeys(namespaces)
            )
            what = "namespace " + ", ".join(format_namespace(ns) for ns in namespaces)
        if doomed == 0:
            print(f"nothing to delete: no entries ({what}) in {where}")
            return 0
        confirm(f"Delete {entries(doomed)} ({what}) of {where}?", yes=options.yes)
        cache.clear(namespaces)
    print(f"deleted {what} of {where} ({entries(doomed)})")
    return 0
