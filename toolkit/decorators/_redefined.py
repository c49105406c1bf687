"""A warning when a cached function's keys are taken over by other code of the same name.

Keys name a module-level function by its module and qualified name, so that they survive
restarts. Code decorated under a name already decorated with other code in this process
(an edited notebook cell run again, a module reloaded after an edit, two defs of one name)
shares the earlier code's entries: it would be served their results for the same arguments.
"""

from __future__ import annotations

import inspect
import types
import warnings
from typing import Any

from toolkit._fork import ForkSafeLock
from toolkit._identity import defined_in_function
from toolkit._types import Namespace

__all__ = ["RedefinitionWarning", "note_definition"]


class RedefinitionWarning(UserWarning):
    """Other code was decorated under a cached function's name: they share entries."""


_SEEN: dict[tuple[Namespace, str], tuple[Any, ...]] = {}
_LOCK = ForkSafeLock()


def _fingerprint(code: types.CodeType) -> tuple[Any, ...]:
    """What a function does, not where it is: bytecode, names and constants (nested code by
    its own fingerprint, as a code object's equality also compares line numbers)."""
    consts = tuple(
        _fingerprint(const) if isinstance(const, types.CodeType) else repr(const)
        for const in code.co_consts
    )
    return (code.co_code, code.co_names, code.co_varnames, code.co_freevars, consts)


def note_definition(ns: Namespace, name: str, func: Any) -> None:
    """Remember the code keyed under ``(ns, name)``; warn if other code was keyed there.

    Only module-level functions: a local function's name carries its line and captured
    values, and a factory makes many of one code.
    """
    if not inspect.isfunction(func) or defined_in_function(func) or hasattr(func, "__wrapped__"):
        return
    fingerprint = _fingerprint(func.__code__)
    with _LOCK:
        before = _SEEN.get((ns, name))
        _SEEN[(ns, name)] = fingerprint
    if before is not None and before != fingerprint:
        warnings.warn(
            f"{func.__module__}.{func.__qualname__} was decorated with @cached again, with "
            f"other code: both key their entries alike in namespace {ns!r}, so the new code "
            "is served the old code's results for the same arguments. Pass version=... (or "
            "another ns) to keep them apart, or clear the namespace.",
            RedefinitionWarning,
            stacklevel=5,  # the decoration: past CallKeys, Cached and decorate
        )
