"""Turning caching off, or forcing fresh results, for a process, a block or a single call.

``configure(enabled=False)`` or ``TOOLKIT_CACHE_DISABLED=1`` turn every ``@cached``
function into a plain call. ``disabled()`` does it for a block (a test, a request) and
``refreshing()`` makes every call in the block recompute and store its result. Both are
context variables: they hold for the current thread or task and what it starts, never for
other threads or tasks running at the same time.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar

__all__ = ["DISABLED_ENV_VAR", "disabled", "mode", "refreshing", "set_enabled"]

DISABLED_ENV_VAR = "TOOLKIT_CACHE_DISABLED"
"""Set to 1/true/yes/on to start the process with caching off."""

OFF = "off"
REFRESH = "refresh"

# No default: unset outside a block, so one ``get(process mode)`` answers ``mode()``.
_block_mode: ContextVar[str | None] = ContextVar("toolkit_cache_mode")


def _env_disabled() -> bool:
    value = os.environ.get(DISABLED_ENV_VAR, "").strip().lower()
    if value in ("", "0", "false", "no", "off"):
        return False
    if value in ("1", "true", "yes", "on"):
        return True
    raise ValueError(f"{DISABLED_ENV_VAR} must be 1/true/yes/on or 0/false/no/off, got {value!r}")


class _Global:
    mode: str | None = OFF if _env_disabled() else None


def set_enabled(enabled: bool) -> None:
    """Turn caching on or off for the whole process (``configure(enabled=...)`` calls this)."""
    if not isinstance(enabled, bool):
        raise TypeError(f"enabled must be True or False, got {enabled!r}")
    _Global.mode = None if enabled else OFF


def mode() -> str | None:
    """``"off"``, ``"refresh"`` or ``None`` (normal caching) for a call made now."""
    return _block_mode.get(_Global.mode)  # a block's mode, else the process's


@contextmanager
def disabled() -> Iterator[None]:
    """Run every ``@cached`` call in the block as a plain call: no reads, no writes."""
    token = _block_mode.set(OFF)
    try:
        yield
    finally:
        _block_mode.reset(token)


@contextmanager
def refreshing() -> Iterator[None]:
    """Make every ``@cached`` call in the block recompute and store its result."""
    token = _block_mode.set(REFRESH)
    try:
        yield
    finally:
        _block_mode.reset(token)
