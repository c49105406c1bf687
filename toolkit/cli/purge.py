"""``toolkit purge URL``: delete expired entries now (never a live one, so no confirmation)."""

from __future__ import annotations

import argparse
from typing import Any

from toolkit.cli._target import add_target_arguments, entries, open_target

__all__ = ["register", "run"]


def register(commands: Any) -> None:
    """Add the ``purge`` command."""
    parser = commands.add_parser(
        "purge",
        help="delete expired entries now (live entries are kept)",
        description="Delete the entries whose ttl has passed. They are already invisible to "
        "get, so nothing is lost and nothing is asked. Redis deletes expired keys itself.",
    )
    add_target_arguments(parser)
    parser.set_defaults(handler=run)


def run(options: argparse.Namespace) -> int:
    """Purge and say how many entries went."""
    with open_target(options) as (cache, where):
        expired = cache.stats().expired
        purged = cache.purge_expired()
    if expired is None:
        print(f"nothing to purge: {where} deletes expired entries itself")
    else:
        print(f"purged {entries(purged)} (expired) from {where}")
    return 0
