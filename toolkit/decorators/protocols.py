"""The public types of ``@cached``: what a decorated function, method or coroutine offers."""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from typing import Any, ParamSpec, Protocol, TypeVar, overload

from toolkit._types import FullKey
from toolkit.decorators.stats import CacheInfo, CacheParameters

__all__ = [
    "AsyncBoundCached",
    "AsyncCachedFunction",
    "BoundCached",
    "CachedDecorator",
    "CachedFunction",
]

P = ParamSpec("P")
R = TypeVar("R")
R_co = TypeVar("R_co", covariant=True)


class BoundCached(Protocol[R_co]):
    """A cached method bound to an instance or class: the same surface, ``self`` supplied."""

    @property
    def __wrapped__(self) -> Callable[..., R_co]: ...
    def __call__(self, *args: Any, **kwargs: Any) -> R_co: ...
    def cache_key(self, *args: Any, **kwargs: Any) -> FullKey: ...
    def invalidate(self, *args: Any, **kwargs: Any) -> None: ...
    async def ainvalidate(self, *args: Any, **kwargs: Any) -> None: ...
    def refresh(self, *args: Any, **kwargs: Any) -> R_co: ...
    async def arefresh(self, *args: Any, **kwargs: Any) -> Any: ...
    def cache_clear(self) -> None: ...
    async def acache_clear(self) -> None: ...
    def cache_info(self) -> CacheInfo: ...
    def cache_parameters(self) -> CacheParameters: ...


class AsyncBoundCached(Protocol[R_co]):
    """A cached coroutine method bound to an instance or class, ``self`` supplied."""

    @property
    def __wrapped__(self) -> Callable[..., Coroutine[Any, Any, R_co]]: ...
    async def __call__(self, *args: Any, **kwargs: Any) -> R_co: ...
    def cache_key(self, *args: Any, **kwargs: Any) -> FullKey: ...
    def invalidate(self, *args: Any, **kwargs: Any) -> None: ...
    async def ainvalidate(self, *args: Any, **kwargs: Any) -> None: ...
    async def arefresh(self, *args: Any, **kwargs: Any) -> R_co: ...
    def cache_clear(self) -> None: ...
    async def acache_clear(self) -> None: ...
    def cache_info(self) -> CacheInfo: ...
    def cache_parameters(self) -> CacheParameters: ...


class CachedFunction(Protocol[P, R_co]):
    """A cached sync function: called like the original, plus cache controls."""

    __name__: str
    __qualname__: str

    @property
    def __wrapped__(self) -> Callable[P, R_co]: ...
    def __call__(self, *args: P.args, **kwargs: P.kwargs) -> R_co: ...
    def __get__(self, instance: object, owner: type | None = None) -> BoundCached[R_co]: ...
    def cache_key(self, *args: P.args, **kwargs: P.kwargs) -> FullKey:
        """The ``FullKey`` this call reads and writes."""
        ...

    def invalidate(self, *args: P.args, **kwargs: P.kwargs) -> None:
        """Forget the cached result of this call."""
        ...

    async def ainvalidate(self, *args: P.args, **kwargs: P.kwargs) -> None:
        """Forget the cached result of this call (async I/O)."""
        ...

    def refresh(self, *args: P.args, **kwargs: P.kwargs) -> R_co:
        """Recompute this call, store the result and return it."""
        ...

    async def arefresh(self, *args: P.args, **kwargs: P.kwargs) -> R_co:
        """Recompute this call, store the result (async I/O) and return it."""
        ...

    def cache_clear(self) -> None:
        """Forget every cached result of this function (its whole namespace)."""
        ...

    async def acache_clear(self) -> None:
        """Forget every cached result of this function (async I/O)."""
        ...

    def cache_info(self) -> CacheInfo:
        """Hits, misses, errors, coalesced waits, loads and load time of this function."""
        ...

    def cache_parameters(self) -> CacheParameters:
        """Namespace, ttl (seconds) and options this function caches with."""
        ...


class AsyncCachedFunction(Protocol[P, R_co]):
    """A cached coroutine function: awaited like the original, plus cache controls."""

    __name__: str
    __qualname__: str

    @property
    def __wrapped__(self) -> Callable[P, Coroutine[Any, Any, R_co]]: ...
    async def __call__(self, *args: P.args, **kwargs: P.kwargs) -> R_co: ...
    def __get__(self, instance: object, owner: type | None = None) -> AsyncBoundCached[R_co]: ...
    def cache_key(self, *args: P.args, **kwargs: P.kwargs) -> FullKey:
        """The ``FullKey`` this call reads and writes."""
        ...

    def invalidate(self, *args: P.args, **kwargs: P.kwargs) -> None:
        """Forget the cached result of this call."""
        ...

    async def ainvalidate(self, *args: P.args, **kwargs: P.kwargs) -> None:
        """Forget the cached result of this call (async I/O)."""
        ...

    async def arefresh(self, *args: P.args, **kwargs: P.kwargs) -> R_co:
        """Recompute this call, store the result and return it."""
        ...

    def cache_clear(self) -> None:
        """Forget every cached result of this function (its whole namespace)."""
        ...

    async def acache_clear(self) -> None:
        """Forget every cached result of this function (async I/O)."""
        ...

    def cache_info(self) -> CacheInfo:
        """Hits, misses, errors, coalesced waits, loads and load time of this function."""
        ...

    def cache_parameters(self) -> CacheParameters:
        """Namespace, ttl (seconds) and options this function caches with."""
        ...


class CachedDecorator(Protocol):
    """What ``cached(...)`` with options returns."""

    @overload
    def __call__(  # type: ignore[overload-overlap]
        self, func: Callable[P, Coroutine[Any, Any, R]], /
    ) -> AsyncCachedFunction[P, R]: ...
    @overload
    def __call__(self, func: Callable[P, R], /) -> CachedFunction[P, R]: ...
