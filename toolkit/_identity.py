"""What names a callable in its cache keys, so two callables never share entries by accident.

A plain function is named by ``module:qualname``, stable across processes and restarts.
What makes two callables with one qualified name differ enters as well: the line a local
function is defined on (two defs of one name in one function, one per branch), a closure's
captured values (read once, at decoration), a partial's frozen arguments and a callable
object's state (both read on every call). A ``functools.wraps`` wrapper, which carries the
name of the function it wraps, adds its own: its code's name and captured settings. A bound
method keeps its own signature, so its instance binds to ``self`` and enters the key as a
method's does. What cannot be named stably (lambdas, captured values without a canonical
encoding) is refused with a ``TypeError`` that asks for ``key_id=``: an explicit name that
replaces all of the above, and the one way for two callables to share entries.
"""

from __future__ import annotations

import functools
import inspect
import types
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

__all__ = ["Identity", "defined_in_function", "identify"]

Encoder = Callable[[Any], str]


@dataclass(frozen=True)
class Identity:
    """A callable's stable name, the signature to bind calls to and per-call key context."""

    name: str
    """Enters every key of the callable (``module:qualname``, captured values, or key_id)."""
    target: Callable[..., Any]
    """Whose signature binds a call's arguments (a bound method's function: ``self`` first)."""
    receiver: Any = None
    """A bound method's instance: the decorator passes it as the first argument."""
    context: tuple[tuple[str, Any], ...] = ()
    """Values encoded into every key beside the arguments (a partial's, a callable object's)."""


def identify(func: Any, encode: Encoder, *, key_id: str | None = None) -> Identity:
    """The identity of ``func``; ``key_id`` names it explicitly instead."""
    if isinstance(func, (classmethod, staticmethod)):
        func = func.__func__
    if key_id is not None:
        return _named(func, _check_key_id(key_id))
    return _Namer(encode).identity(func)


def defined_in_function(obj: Any) -> bool:
    """Whether ``obj`` (a function or class) is defined inside a function: each one that
    function makes carries the same qualified name (a factory's, or one per branch)."""
    return "<locals>" in str(getattr(obj, "__qualname__", "")).split(".")


def _check_key_id(key_id: object) -> str:
    if not isinstance(key_id, str):
        raise TypeError(f"key_id must be a str, got {type(key_id).__name__}")
    if not key_id:
        raise ValueError("key_id must not be empty")
    return key_id


def _named(func: Any, key_id: str) -> Identity:
    """The explicit identity: only the signature is still read from ``func``."""
    if inspect.ismethod(func):
        return Identity(key_id, func.__func__, receiver=func.__self__)
    return Identity(key_id, func)


def _qualified(obj: Any) -> str | None:
    module, qualname = getattr(obj, "__module__", None), getattr(obj, "__qualname__", None)
    if isinstance(module, str) and isinstance(qualname, str):
        return f"{module}:{qualname}"
    return None


class _Namer:
    """Derives identities; remembers the functions on its path so recursion terminates."""

    def __init__(self, encode: Encoder) -> None:
        self.encode = encode
        self.visiting: set[int] = set()

    def identity(self, func: Any) -> Identity:
        if inspect.ismethod(func):
            inner = self.identity(func.__func__)
            return Identity(inner.name, func.__func__, receiver=func.__self__)
        if isinstance(func, functools.partial):
            inner = self.identity(func.func)
            context = (*inner.context, ("partial args", func.args))
            context = (*context, ("partial keywords", func.keywords))
            if inner.receiver is not None:
                context = (*context, ("bound instance", inner.receiver))
            return Identity(f"partial({inner.name})", func, context=context)
        if inspect.isfunction(func):
            original = getattr(func, "__wrapped__", None)
            if original is None or id(func) in self.visiting:
                return Identity(self.function_name(func), func)
            # A functools.wraps wrapper: the function it wraps, then the wrapper itself, as a
            # decorator's settings can change the result (scale(2)(f) is not scale(3)(f)).
            self.visiting.add(id(func))
            try:
                wrapped = self.identity(original)
                wrapper = self.wrapper_name(func, original)
            finally:
                self.visiting.discard(id(func))
            context = wrapped.context
            if wrapped.receiver is not None:
                context = (*context, ("bound instance", wrapped.receiver))
            return Identity(f"{wrapped.name} via {wrapper}", func, context=context)
        if isinstance(func, type):
            return Identity(_qualified(func) or func.__qualname__, func)
        if inspect.isbuiltin(func):
            name = _qualified(func) or f"builtin:{func.__name__}"
            owner = func.__self__
            if owner is None or isinstance(owner, types.ModuleType):
                return Identity(name, func)
            return Identity(name, func, context=(("bound instance", owner),))
        return self.callable_object(func)

    def function_name(self, func: types.FunctionType) -> str:
        qualified = _qualified(func)
        assert qualified is not None  # every Python function has both
        if func.__name__ == "<lambda>":
            raise TypeError(
                f"cannot key {qualified}: every lambda is named <lambda>, so two of them "
                "would share entries. Pass key_id='...' naming this one, or use a def."
            )
        name = qualified
        if defined_in_function(func):
            # Only here can two defs share a qualified name in one process; the line of a
            # module-level def stays out, so editing the module keeps its keys.
            name = f"{qualified}@{func.__code__.co_firstlineno}"
        if not func.__closure__ or id(func) in self.visiting:
            return name
        self.visiting.add(id(func))
        try:
            captured = "".join(self.captured(func, qualified))
        finally:
            self.visiting.discard(id(func))
        return f"{name}[{captured}]"

    def wrapper_name(self, func: types.FunctionType, wrapped: Any) -> str:
        """A wrapper's own name: where its code is defined (``functools.wraps`` gave it the
        wrapped function's names) and the values it captures besides the wrapped function.
        Those with an encoding (a decorator's settings) enter as a closure's do; the others
        (a logger, a lock, a retry policy) by their type: refusing them, as a plain closure's
        are, would refuse most decorators, and they rarely change a result."""
        code = func.__code__
        # By line, as wrappers are local functions, and co_qualname is not in Python 3.10.
        name = f"{func.__globals__.get('__name__', '?')}:{code.co_name}@{code.co_firstlineno}"
        parts = []
        for var, cell in zip(code.co_freevars, func.__closure__ or (), strict=True):
            try:
                value = cell.cell_contents
            except ValueError:  # not yet assigned
                continue
            if value is wrapped:
                continue
            try:
                encoded = self.value(value)
            except TypeError:
                encoded = f"t{_qualified(type(value)) or type(value).__qualname__}"
            parts.append(f"{len(var)}:{var}{encoded}")
        return f"{name}[{''.join(parts)}]" if parts else name

    def captured(self, func: types.FunctionType, qualified: str) -> list[str]:
        """Each captured variable's name and value, encoded at decoration time."""
        parts = []
        assert func.__closure__ is not None
        for var, cell in zip(func.__code__.co_freevars, func.__closure__, strict=True):
            try:
                value = cell.cell_contents
            except ValueError:  # not yet assigned
                # A recursive function naming itself, or super()'s class of a method being
                # defined: both are named by the qualified name already.
                if var in (func.__name__, "__class__"):
                    continue
                raise self.refuse(qualified, var, "is not assigned yet") from None
            try:
                parts.append(f"{len(var)}:{var}{self.value(value)}")
            except TypeError as exc:
                what = f"holds a {type(value).__qualname__} ({exc})"
                raise self.refuse(qualified, var, what) from None
        return parts

    def value(self, value: Any) -> str:
        """A captured value: callables and modules by identity, data by its encoding."""
        if isinstance(value, types.ModuleType):
            return f"m{len(value.__name__)}:{value.__name__}"
        if callable(value) and not isinstance(value, type) and _is_routine(value):
            identity = self.identity(value)
            context = "".join(self.encode(v) for _, v in identity.context)
            receiver = "" if identity.receiver is None else self.encode(identity.receiver)
            return f"c{len(identity.name)}:{identity.name}{receiver}{context}"
        return self.encode(value)

    def callable_object(self, func: Any) -> Identity:
        cls = type(func)
        name = f"{_qualified(cls) or cls.__qualname__}.__call__"
        if not getattr(func, "__dict__", True) and not getattr(cls, "__slots__", ()):
            return Identity(name, func)  # no state of its own: the class says it all
        try:
            self.encode(func)
        except TypeError:
            raise TypeError(
                f"cannot key calls of a {cls.__qualname__} object: its state has no canonical "
                f"encoding, so two {cls.__qualname__} objects would share entries. Give "
                f"{cls.__qualname__} a __cache_key__(self) method, or pass key_id='...' "
                "naming this one."
            ) from None
        return Identity(name, func, context=(("instance", func),))

    @staticmethod
    def refuse(qualified: str, var: str, why: str) -> TypeError:
        return TypeError(
            f"cannot key {qualified}: it captures {var!r}, which {why}, so two functions "
            f"made by the same factory would share entries. Pass key_id='...' naming this "
            f"one (a distinct key_id per instance that must not share), or make {var!r} a "
            "parameter."
        )


def _is_routine(value: Any) -> bool:
    return (
        inspect.isroutine(value)
        or isinstance(value, functools.partial)
        or inspect.isfunction(getattr(value, "__wrapped__", None))
    )
