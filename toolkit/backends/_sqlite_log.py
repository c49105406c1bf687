"""Keep cached keys and values out of aiosqlite's DEBUG log lines.

aiosqlite logs every call it runs (``executing functools.partial(<execute>, sql, params)``),
so with root logging at DEBUG our parameters — keys and encoded values — would reach the
log. DESIGN forbids logging values; this filter names the function and drops its arguments.
"""

from __future__ import annotations

import functools
import logging

_installed = False


def _describe(call: functools.partial[object]) -> str:
    name = getattr(call.func, "__qualname__", type(call.func).__name__)
    return f"{name}(<{len(call.args) + len(call.keywords)} arguments redacted>)"


def _redact(record: logging.LogRecord) -> bool:
    args = record.args
    if isinstance(args, tuple) and any(isinstance(a, functools.partial) for a in args):
        record.args = tuple(_describe(a) if isinstance(a, functools.partial) else a for a in args)
    return True


def redact_aiosqlite_calls() -> None:
    """Install the filter on the ``aiosqlite`` logger (once per process)."""
    global _installed
    if not _installed:
        logging.getLogger("aiosqlite").addFilter(_redact)
        _installed = True
