"""Input validation in front of caches that do not check their input (LangGraph's, a user's)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from toolkit._types import FullKey, Namespace, ValueT
from toolkit.base import check_keys, check_namespaces, check_pairs
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

    def get(self, keys: Sequence[FullKey]) -> dict[FullKey, ValueT]:
        """Get the cached values for the given keys."""
        return self.inner.get(check_keys(keys))  # type: ignore[no-any-return]

    async def aget(self, keys: Sequence[FullKey]) -> dict[FullKey, ValueT]:
        """Asynchronously get the cached values for the given keys."""
        return await self.inner.aget(check_keys(keys))  # type: ignore[no-any-return]

    def set(self, pairs: Mapping[FullKey, tuple[ValueT, int | None]]) -> None:
        """Set the cached values for the given keys and TTLs."""
        check_pairs(pairs)
        self.inner.set(pairs)

    def delete(self, keys: Sequence[FullKey]) -> None:
        """Delete exactly these keys."""
        self.inner.delete(check_keys(keys))

    async def adelete(self, keys: Sequence[FullKey]) -> None:
        """Asynchronously delete exactly these keys."""
        await self.inner.adelete(check_keys(keys))

    async def aset(self, pairs: Mapping[FullKey, tuple[ValueT, int | None]]) -> None:
        """Asynchronously set the cached values for the given keys and TTLs."""
        check_pairs(pairs)
        await self.inner.aset(pairs)

    def clear(self, namespaces: Sequence[Namespace] | None = None) -> None:
        """Delete the cached values for the given namespaces (all when ``None``)."""
        self.inner.clear(check_namespaces(namespaces))

    async def aclear(self, namespaces: Sequence[Namespace] | None = None) -> None:
        """Asynchronously delete the cached values for the given namespaces (all when ``None``)."""
        await self.inner.aclear(check_namespaces(namespaces))


def needs_validation(cache: Any) -> bool:
    """Whether a stack over ``cache`` should put ``Validate`` in front."""
    return not validates_itself(innermost(cache))
