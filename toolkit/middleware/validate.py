"""Input validation in front of caches that do not check their input (LangGraph's, a user's)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from toolkit._types import ValueT
from toolkit.base import check_keys, check_namespaces, validate_pairs
from toolkit.lease import check_lease
from toolkit.middleware.base import CacheMiddleware, innermost

__all__ = ["Validate", "validates_itself"]


def validates_itself(cache: object) -> bool:
    """Whether a backend checks its input with ``toolkit.base``'s validators (ours do)."""
    declared = getattr(cache, "validates_input", None)
    if isinstance(declared, bool):
        return declared
    return type(cache).__module__.startswith("toolkit.backends.")


class Validate(CacheMiddleware[ValueT]):
    """Rejects malformed keys, pairs, ttls and namespaces with the errors our backends raise,
    before anything is read or written, so a wrapped foreign cache behaves like ours."""

    adds_read_failures = False  # raises only for caller bugs
    adds_io = False

    def wrap_sync(self, operation: str, call: Callable[..., Any]) -> Callable[..., Any]:
        """Check the argument, then call (keys are read once into a sequence)."""
        check = _CHECKS[operation]

        def validated(arg: Any = None) -> Any:
            return call(check(arg))

        return validated

    def wrap_async(
        self, operation: str, call: Callable[..., Awaitable[Any]]
    ) -> Callable[..., Awaitable[Any]]:
        """The async twin of :meth:`wrap_sync`."""
        check = _CHECKS[operation]

        async def validated(arg: Any = None) -> Any:
            return await call(check(arg))

        return validated


def _checked_pairs(pairs: Any) -> Any:
    validate_pairs(pairs)
    return pairs


_CHECKS: dict[str, Callable[[Any], Any]] = {
    "get": check_keys,
    "set": _checked_pairs,
    "clear": check_namespaces,
    "delete": check_keys,
    "lease": check_lease,
}


def needs_validation(cache: Any) -> bool:
    """Whether a stack over ``cache`` should put ``Validate`` in front."""
    return not validates_itself(innermost(cache))
