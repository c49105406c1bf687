"""What to do about a value with no canonical key encoding, fitted to what the value is.

``__cache_key__`` is only advice for classes the user can change: a function, a file or a
lock needs another remedy (pass its name or path, or leave it out of the key).
"""

from __future__ import annotations

import functools
import inspect
import io
import sys
import types
from collections.abc import Iterator

from toolkit._identity import defined_in_function

# Modules whose objects are live resources (connections, threads, processes, loops).
_RESOURCE_MODULES = frozenset(
    {
        "_socket",
        "_ssl",
        "_thread",
        "asyncio",
        "concurrent",
        "mmap",
        "multiprocessing",
        "queue",
        "select",
        "selectors",
        "socket",
        "sqlite3",
        "ssl",
        "subprocess",
        "threading",
    }
)


def _top_module(cls: type) -> str:
    return str(getattr(cls, "__module__", "") or "").partition(".")[0]


def _third_party(module: str) -> bool:
    path = str(getattr(sys.modules.get(module), "__file__", "") or "")
    return "site-packages" in path or "dist-packages" in path


def is_users_class(cls: type) -> bool:
    """Whether ``cls`` comes from the user's own code (so it can gain a ``__cache_key__``)."""
    module = _top_module(cls)
    return not (
        module in sys.stdlib_module_names or module in ("builtins", "") or _third_party(module)
    )


def advice(culprit: object, *, leave_out: str, custom_key: str) -> str:
    """How to key a call holding ``culprit``: ``leave_out`` and ``custom_key`` name the remedies
    the caller has (``ignore=('x',)`` and ``key=...`` for ``@cached``)."""
    key_it = f"build the key yourself with {custom_key}"
    cls = type(culprit)
    local = culprit if isinstance(culprit, type) else cls
    if defined_in_function(local):
        return (
            f"{local.__module__}.{local.__qualname__} is defined inside a function: every "
            f"class that function makes has its name, so they (and their objects) cannot be "
            f"told apart in a key. Define it at module level, leave it out with {leave_out} "
            f"if it does not change the result, give it a __cache_key__(self) method "
            f"returning what sets its objects apart (its factory's settings too), or "
            f"{key_it}."
        )
    module = _top_module(cls)
    if inspect.isroutine(culprit) or isinstance(culprit, functools.partial):
        return (
            "A function cannot be keyed by what it does: pass its name (a str) and look it up "
            f"inside, {key_it}, or leave it out with {leave_out} if it does not change the result."
        )
    if isinstance(culprit, types.ModuleType):
        return f"Pass the module's name (a str) instead, or leave it out with {leave_out}."
    if isinstance(culprit, io.IOBase):
        return (
            "An open file is a handle, not data: pass its path (a str or pathlib.Path) and open "
            f"it inside the function, or {key_it} (from its path, or its contents)."
        )
    if inspect.isawaitable(culprit):
        return "An awaitable is not a value yet: await it and pass the result."
    if isinstance(culprit, Iterator):
        return (
            "An iterator or generator is used up by reading it, so its items cannot enter a "
            "key: pass a list or tuple of them."
        )
    if callable(getattr(culprit, "acquire", None)) and callable(getattr(culprit, "release", None)):
        return f"A lock is synchronisation, not data: leave it out with {leave_out}."
    if module in _RESOURCE_MODULES:
        return (
            "A live resource (a connection, socket, thread, process or loop) is not data: pass "
            f"what identifies it (an address, URL, path or name), or leave it out with "
            f"{leave_out} if it does not change the result."
        )
    if module in sys.stdlib_module_names or module in ("builtins", ""):
        return (
            "Pass a supported value instead (str, int, float, bytes, tuple, list, dict, a "
            f"dataclass...), {key_it}, or leave it out with {leave_out}."
        )
    if not is_users_class(cls):
        return (
            f"Build the key yourself with {custom_key} (from what identifies it), leave it out "
            f"with {leave_out}, or pass an object of your own class with a __cache_key__(self) "
            "method."
        )
    return (
        f"Build the key yourself with {custom_key}, leave it out with {leave_out}, or give "
        f"{cls.__module__}.{cls.__qualname__} a __cache_key__(self) method returning a "
        "supported value."
    )
