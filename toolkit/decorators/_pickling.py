"""Pickling a cached function by reference, as pickle does for plain functions.

Unpickling looks the function up again by module and qualified name, so the result is the
very wrapper (same cache, same counts), never a copy; what cannot be found that way is a
``pickle.PicklingError`` that says why.
"""

from __future__ import annotations

import importlib
import pickle
from typing import Any


def _refuse(module: str, qualname: str, why: str) -> pickle.PicklingError:
    return pickle.PicklingError(
        f"Can't pickle the cached function {module}.{qualname}: {why}; cached functions "
        "pickle by reference (module and qualified name), like plain functions"
    )


def names(obj: Any) -> tuple[str, str]:
    """The module and qualified name ``obj`` is found by, or a ``PicklingError``."""
    module = getattr(obj, "__module__", None)
    qualname = getattr(obj, "__qualname__", None)
    if not isinstance(module, str) or not isinstance(qualname, str):
        raise pickle.PicklingError(
            f"Can't pickle the cached callable {obj!r}: it has no module and qualified name "
            "to be found by on unpickling; decorate a module-level function instead"
        )
    parts = qualname.split(".")
    if parts[-1] == "<lambda>":
        raise _refuse(
            module, qualname, "a lambda has no name to be found by; use a module-level def"
        )
    if "<locals>" in parts:
        raise _refuse(
            module,
            qualname,
            "it is defined inside a function, so unpickling cannot find it by name; "
            "define it at module level",
        )
    return module, qualname


def lookup(module: str, qualname: str) -> Any:
    """The object at ``module.qualname`` (attribute by attribute), or a ``PicklingError``."""
    try:
        found: Any = importlib.import_module(module)
        for part in qualname.split("."):
            found = getattr(found, part)
    except (ImportError, AttributeError) as exc:
        raise _refuse(module, qualname, f"it is not found by that name ({exc})") from None
    return found


def by_reference(wrapper: Any) -> str:
    """What ``__reduce_ex__`` returns for a module-level cached function: its global name."""
    module, qualname = names(wrapper)
    if lookup(module, qualname) is not wrapper:
        raise _refuse(
            module,
            qualname,
            "that name holds another object (was the function decorated again or rebound?)",
        )
    return qualname


def bound_by_reference(wrapper: Any, wrapped: Any) -> tuple[Any, tuple[Any, str]]:
    """``__reduce_ex__`` for a cached method bound by attribute access: ``getattr(owner, name)``."""
    holder = getattr(wrapped, "__self__", None)  # the instance, or the class of a classmethod
    name: str = wrapper.__name__
    if holder is None:  # reached through its class: an unbound method or a staticmethod
        module, qualname = names(wrapper)
        owner, _, name = qualname.rpartition(".")
        holder = lookup(module, owner) if owner else None
        if holder is None or getattr(getattr(holder, name, None), "__wrapped__", None) is not (
            wrapped
        ):
            raise _refuse(module, qualname, "its class does not hold it under that name")
    return getattr, (holder, name)
