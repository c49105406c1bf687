"""Shared type aliases and the protocols that extension points implement."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, Literal, Protocol, runtime_checkable

from typing_extensions import TypeVar

ValueT = TypeVar("ValueT", default=Any)  # a bare InMemoryCache() needs no annotation
Namespace = tuple[str, ...]
FullKey = tuple[Namespace, str]

EvictionCause = Literal["size", "expired", "invalid", "uncacheable"]
"""Why an entry left (or never entered) a cache: LRU bound, TTL, undecodable bytes, or a
value the serializer refused."""

EvictionListener = Callable[[Namespace, EvictionCause, int], None]
"""Called by a backend as ``listener(namespace, cause, count)`` after it drops entries."""


@runtime_checkable
class SerializerProtocol(Protocol):
    """LangGraph's serializer protocol: typed dumps and loads."""

    def dumps_typed(self, obj: Any) -> tuple[str, bytes]:
        """Encode ``obj`` as ``(type_tag, payload)``."""
        ...

    def loads_typed(self, data: tuple[str, bytes]) -> Any:
        """Decode a ``(type_tag, payload)`` pair."""
        ...


@runtime_checkable
class SupportsEvictionListeners(Protocol):
    """A backend that reports the entries it drops on its own."""

    def add_eviction_listener(self, listener: EvictionListener) -> None:
        """Register ``listener`` for every future eviction."""
        ...


@runtime_checkable
class SupportsEntryCount(Protocol):
    """A backend that can count its live entries cheaply."""

    def entry_count(self) -> int:
        """Return the number of entries currently stored (expired ones may be included)."""
        ...


@runtime_checkable
class SupportsDelete(Protocol):
    """A cache that can delete single keys (ours can; the seed API only clears namespaces)."""

    def delete(self, keys: Sequence[FullKey]) -> None:
        """Delete exactly these keys."""
        ...

    async def adelete(self, keys: Sequence[FullKey]) -> None:
        """Asynchronously delete exactly these keys."""
        ...
