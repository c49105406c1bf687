"""A ``key=`` function, checked against the decorated function's call so misfits say so."""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

_EMPTY = inspect.Parameter.empty
_POSITIONAL = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
_RECEIVES = (
    "key= receives the arguments exactly as the decorated function does, self or cls first "
    "for methods (write it as key=lambda *args, **kwargs: ... to take any call)"
)


class _Elided:
    def __repr__(self) -> str:
        return "..."


def _shape(signature: inspect.Signature) -> str:
    """``signature`` as names only: ``(a, b=..., *, c)``, no annotations or default values."""
    elided = _Elided()
    return str(
        signature.replace(
            parameters=[
                p.replace(annotation=_EMPTY, default=_EMPTY if p.default is _EMPTY else elided)
                for p in signature.parameters.values()
            ],
            return_annotation=_EMPTY,
        )
    )


def _signature(func: Callable[..., Any]) -> inspect.Signature | None:
    try:
        return inspect.signature(func)
    except (TypeError, ValueError):  # builtins without text signatures
        return None


def _fits(signature: inspect.Signature, args: tuple[Any, ...], kwargs: dict[str, Any]) -> str:
    """Why ``signature`` cannot take this call, or ``""`` when it can."""
    try:
        signature.bind(*args, **kwargs)
    except TypeError as exc:
        return str(exc)
    return ""


class KeyFunction:
    """Calls a ``key=`` function; an arity misfit names the decorated function and both shapes."""

    __slots__ = ("func", "func_name", "func_signature", "name", "signature")

    def __init__(
        self, func: Callable[..., Any], func_name: str, func_signature: inspect.Signature
    ) -> None:
        self.func = func
        self.func_name = func_name
        self.func_signature = func_signature
        self.signature = _signature(func)
        self.name = str(getattr(func, "__name__", None) or type(func).__name__)
        if self.signature is not None:
            self._check_fits()

    def _describe(self) -> str:
        shape = _shape(self.signature) if self.signature is not None else "(...)"
        return f"the key= function {self.name}{shape} of {self.func_name}"

    def _check_fits(self) -> None:
        """Refuse at decoration a key function that no call with all (or only required) fits."""
        assert self.signature is not None
        params = list(self.func_signature.parameters.values())
        for only_required in (False, True):
            given = [p for p in params if not (only_required and p.default is not _EMPTY)]
            args = tuple(p.name for p in given if p.kind in _POSITIONAL)
            kwargs = {p.name: p.name for p in given if p.kind is inspect.Parameter.KEYWORD_ONLY}
            why = _fits(self.signature, args, kwargs)
            if why:
                called = ", ".join([*args, *(f"{k}=..." for k in kwargs)])
                raise TypeError(
                    f"{self._describe()} cannot take its calls: "
                    f"{self.func_name}{_shape(self.func_signature)} calls it as key({called}), "
                    f"and that fails: {why}. {_RECEIVES}."
                )

    def __call__(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        """The key function's result for one call."""
        try:
            return self.func(*args, **kwargs)
        except TypeError as exc:
            if self.signature is None:
                raise
            why = _fits(self.signature, args, kwargs)
            if not why:
                raise  # the arguments fit: the error came from inside the key function
            wrong_call = _fits(self.func_signature, args, kwargs)
            if wrong_call:  # the call does not fit the decorated function either
                raise TypeError(f"{self.func_name}(): {wrong_call}") from None
            raise TypeError(
                f"{self._describe()} cannot take this call, key({self._received(args, kwargs)}): "
                f"{why}. {_RECEIVES}."
            ) from exc

    def _received(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> str:
        """The call's shape in the decorated function's parameter names, never its values."""
        names = [p.name for p in self.func_signature.parameters.values() if p.kind in _POSITIONAL]
        shown = [names[i] if i < len(names) else f"<extra {i}>" for i in range(len(args))]
        return ", ".join([*shown, *(f"{k}=..." for k in kwargs)])
