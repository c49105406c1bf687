"""How one decorated function's calls become ``FullKey``s: namespace plus argument digest."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from toolkit._types import FullKey, Namespace
from toolkit.base import check_namespace
from toolkit.decorators._keyfunc import KeyFunction
from toolkit.decorators._redefined import note_definition
from toolkit.keys import KeyPlan, memoize, namespace_of


def namespace(ns: str | Namespace | None, func: Any, version: str | int | None) -> Namespace:
    """The namespace of ``func``'s entries: ``ns`` (default: its module and name) + version."""
    if ns is None:
        names = namespace_of(func)
    elif isinstance(ns, str):
        names = (ns,)
    else:
        names = check_namespace(ns)
    if not names:
        raise ValueError("ns must not be empty")
    if version is not None:
        if isinstance(version, bool) or not isinstance(version, (str, int)):
            raise TypeError(f"version must be a str or int, got {type(version).__name__}")
        names = (*names, f"v={version}")
    check_namespace(names)
    return names


class CallKeys:
    """Derives the ``FullKey`` of a call; the argument encoding is ``toolkit.keys.KeyPlan``'s."""

    __slots__ = ("digest", "func_name", "key_func", "memo", "ns", "plan", "suffix")

    def __init__(
        self,
        func: Callable[..., Any],
        ns: Namespace,
        *,
        key: Callable[..., Any] | None,
        ignore: Iterable[str],
        strict_containers: bool,
        key_id: str | None,
        suffix: str = "",
    ) -> None:
        self.ns = ns
        self.plan = KeyPlan(
            func,
            ignore=ignore,
            strict_containers=strict_containers,
            key_id=key_id,
            suffix=suffix,
        )
        if key_id is None:  # an explicit key_id may be shared on purpose
            note_definition(ns, self.plan.identity_name, func)
        self.suffix = suffix
        """Ends every key: a stored form of its own (``freshness``) never meets another."""
        self.digest = self.plan.digest
        self.func_name = self.plan.func_name
        self.key_func = (
            None if key is None else KeyFunction(key, self.func_name, self.plan.signature)
        )
        self.memo: dict[tuple[Any, ...], FullKey] | None = (
            {} if key is None and self.plan.receiver is None and self.plan.memoizable else None
        )
        """The keys of recent calls made of exact ``int`` and ``str`` arguments and ``None``."""

    def full_key(self, instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> FullKey:
        """The key of a call; ``instance`` is the bound receiver or ``None``."""
        memo = self.memo
        if memo is not None and instance is None and not kwargs:
            for arg in args:
                cls = type(arg)
                if cls is not str and cls is not int and arg is not None:
                    break
            else:
                # Equal tuples of exact ints, strs and None encode alike (1 == True == 1.0
                # never meet here: bool and float are other types), so the tuple stands for
                # its encoding.
                found = memo.get(args)
                return found if found is not None else self._memoized(memo, args)
        if instance is None:
            instance = self.plan.receiver  # cached(obj.method): its controls pass none
            if instance is None and self.key_func is None:
                return (self.ns, self.digest(args, kwargs))
        if instance is not None:
            args = (instance, *args)
        if self.key_func is not None:
            return (self.ns, self._custom_key(args, kwargs))
        return (self.ns, self.digest(args, kwargs))

    def _memoized(self, memo: dict[tuple[Any, ...], FullKey], args: tuple[Any, ...]) -> FullKey:
        encoding = self.plan.encode_call(args, {})
        full_key = (self.ns, self.plan.digest_of(encoding))
        memoize(memo, args, full_key, len(encoding))
        return full_key

    def _custom_key(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> str:
        assert self.key_func is not None
        made = self.key_func(args, kwargs)
        try:
            return self.plan.hash_value(made) + self.suffix
        except TypeError as exc:
            raise TypeError(
                f"key= function of {self.func_name} returned a {type(made).__name__}, "
                f"which has no canonical encoding: {exc}"
            ) from None
