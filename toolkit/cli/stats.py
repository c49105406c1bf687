"""``toolkit stats URL``: entries, bytes, expired entries and namespaces of a cache."""

from __future__ import annotations

import argparse
import json
from typing import Any

from toolkit.cli._namespaces import format_namespace
from toolkit.cli._target import add_target_arguments, human_bytes, open_target
from toolkit.introspect import CacheStats

__all__ = ["register", "run"]


def register(commands: Any) -> None:
    """Add the ``stats`` command."""
    parser = commands.add_parser(
        "stats",
        help="entries, bytes, expired entries and namespaces of a cache",
        description="Count what a cache holds: entries, value bytes, expired entries not yet "
        "purged, and entries per namespace. Never reads values.",
    )
    add_target_arguments(parser)
    parser.add_argument("--json", action="store_true", help="print JSON, for scripts")
    parser.set_defaults(handler=run)


def run(options: argparse.Namespace) -> int:
    """Print the cache's statistics."""
    with open_target(options) as (cache, where):
        stats = cache.stats()
    if options.json:
        print(json.dumps(as_json(stats, where), indent=2, ensure_ascii=False))
    else:
        print("\n".join(render(stats, where)))
    return 0


def as_json(stats: CacheStats, where: str) -> dict[str, Any]:
    """The statistics as a JSON-ready dict."""
    return {
        "cache": where,
        "entries": stats.entries,
        "bytes": stats.bytes,
        "expired": stats.expired,
        "unnamed": stats.unnamed,
        "namespaces": [
            {"namespace": list(ns), "path": format_namespace(ns), "entries": count}
            for ns, count in sorted(stats.namespaces.items())
        ],
    }


def render(stats: CacheStats, where: str) -> list[str]:
    """The statistics as lines of text."""
    if stats.expired is None:
        expired = "none kept (the store deletes expired entries itself)"
    elif stats.expired:
        expired = f"{stats.expired:,} not yet purged (toolkit purge deletes them now)"
    else:
        expired = "0"
    lines = [
        where,
        f"entries:    {stats.entries:,}",
        f"bytes:      {human_bytes(stats.bytes)} of stored values",
        f"expired:    {expired}",
        f"namespaces: {len(stats.namespaces):,}",
    ]
    lines += namespace_table(stats.namespaces)
    if stats.unnamed:
        lines.append(f"  ({stats.unnamed:,} entries in namespaces stored hashed, not listed)")
    return lines


def namespace_table(namespaces: dict[Any, int]) -> list[str]:
    """``entries  namespace`` rows, largest namespace first."""
    if not namespaces:
        return []
    ordered = sorted(namespaces.items(), key=lambda item: (-item[1], item[0]))
    width = max(len("entries"), *(len(f"{count:,}") for _, count in ordered))
    rows = [f"  {'entries'.rjust(width)}  namespace"]
    rows += [f"  {count:>{width},}  {format_namespace(ns)}" for ns, count in ordered]
    return rows
