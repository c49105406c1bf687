"""The object ``@cached`` returns: a transparent ``wrapt`` proxy with cache controls.

``wrapt`` makes the wrapper a descriptor: on a class it binds like the function it wraps
(instance methods, classmethods, staticmethods), and the controls follow the binding.
It pickles by reference and copies as itself, as functions do.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from functools import partial
from typing import Any

import wrapt

from toolkit._types import FullKey
from toolkit.decorators import _invalidate, _pickling
from toolkit.decorators._call import Cached
from toolkit.decorators.flight import asettle, settle
from toolkit.decorators.stats import CacheInfo, CacheParameters


class _Controls:
    """The cache controls, written once for the plain and the bound wrapper."""

    def _bind(self) -> tuple[Cached, Any, Callable[..., Any]]:
        """The state, the instance that enters the key (or ``None``) and the callable to run."""
        raise NotImplementedError

    def __copy__(self) -> Any:
        return self

    def __deepcopy__(self, memo: dict[int, Any]) -> Any:
        return self

    def cache_key(self, *args: Any, **kwargs: Any) -> FullKey:
        """The ``FullKey`` this call reads and writes."""
        state, instance, _ = self._bind()
        return state.full_key(instance, args, kwargs)

    def invalidate(self, *args: Any, **kwargs: Any) -> None:
        """Forget the cached result of this call (and void its computations in progress);
        raises the cache's error if it could not, even through a fail-open stack."""
        state, instance, _ = self._bind()
        full_key = state.full_key(instance, args, kwargs)
        storing = state.flights.invalidate(full_key)
        _invalidate.invalidate(state.backend(), full_key)
        if storing:
            settle(storing)
            # Each overtaken write forgot itself, unless that write failed (a fail-open stack
            # drops it silently): deleting again is what makes the invalidation hold.
            _invalidate.invalidate(state.backend(), full_key)

    async def ainvalidate(self, *args: Any, **kwargs: Any) -> None:
        """Forget the cached result of this call (async I/O)."""
        state, instance, _ = self._bind()
        full_key = state.full_key(instance, args, kwargs)
        storing = state.flights.invalidate(full_key)
        await _invalidate.ainvalidate(state.backend(), full_key)
        if storing:
            await asettle(storing)
            await _invalidate.ainvalidate(state.backend(), full_key)  # as in invalidate

    def refresh(self, *args: Any, **kwargs: Any) -> Any:
        """Recompute this call, store the result and return it."""
        state, instance, target = self._bind()
        if state.is_async:
            raise TypeError(
                f"{state.func_name} is a coroutine function: use `await .arefresh(...)`"
            )
        return state.refresh(target, instance, args, kwargs)

    async def arefresh(self, *args: Any, **kwargs: Any) -> Any:
        """Recompute this call, store the result (async I/O) and return it."""
        state, instance, target = self._bind()
        return await state.arefresh(target, instance, args, kwargs)

    def cache_clear(self) -> None:
        """Forget every cached result of this function (its whole namespace; raises the cache's
        error if it could not) and zero its counts."""
        state = self._bind()[0]
        storing = state.flights.invalidate(None)
        _invalidate.forget_namespace(state.backend(), state.ns)
        if storing:
            settle(storing)
            _invalidate.forget_namespace(state.backend(), state.ns)  # as in invalidate
        state.stats.reset()

    async def acache_clear(self) -> None:
        """Forget every cached result of this function (async I/O); zero its counts."""
        state = self._bind()[0]
        storing = state.flights.invalidate(None)
        await _invalidate.aforget_namespace(state.backend(), state.ns)
        if storing:
            await asettle(storing)
            await _invalidate.aforget_namespace(state.backend(), state.ns)  # as in invalidate
        state.stats.reset()

    def cache_info(self) -> CacheInfo:
        """Hits, misses, errors, coalesced waits, loads and load time of this function."""
        return self._bind()[0].stats.info()

    def cache_parameters(self) -> CacheParameters:
        """Namespace, ttl (seconds) and options this function caches with."""
        return self._bind()[0].parameters


class BoundCachedWrapper(_Controls, wrapt.BoundFunctionWrapper[..., Any]):
    """A cached method bound to its instance or class, which the controls supply."""

    def _bind(self) -> tuple[Cached, Any, Callable[..., Any]]:
        binding = self._self_binding
        if binding == "classmethod":
            instance = getattr(self.__wrapped__, "__self__", None)
        elif binding == "staticmethod":
            instance = None
        else:
            instance = self._self_instance
        return self._self_parent._self_state, instance, self.__wrapped__

    def __reduce_ex__(self, protocol: object) -> tuple[Any, tuple[Any, str]]:
        return _pickling.bound_by_reference(self, self.__wrapped__)

    def __reduce__(self) -> tuple[Any, tuple[Any, str]]:
        return self.__reduce_ex__(None)


class CachedWrapper(_Controls, wrapt.FunctionWrapper[..., Any]):
    """The decorated function: a transparent proxy with cache controls."""

    __bound_function_wrapper__ = BoundCachedWrapper

    def __init__(self, wrapped: Any, state: Cached) -> None:
        call = state.acall if state.is_async else state.call
        super().__init__(wrapped, call)
        self._self_state = state
        # What wrapt would pass the call as the instance: a bound method's receiver, found
        # once here (wrapt looks it up per call, and for a plain function that lookup
        # raises and catches an AttributeError: a fifth of a whole cache hit).
        receiver = None if inspect.isbuiltin(wrapped) else getattr(wrapped, "__self__", None)
        self._self_run = partial(call, wrapped, receiver)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self._self_run(args, kwargs)

    def cache_key(self, *args: Any, **kwargs: Any) -> FullKey:
        """The ``FullKey`` this call reads and writes."""
        return self._self_state.full_key(None, args, kwargs)  # the common case, kept short

    def _bind(self) -> tuple[Cached, Any, Callable[..., Any]]:
        wrapped: Any = self.__wrapped__
        if isinstance(wrapped, (classmethod, staticmethod)):
            wrapped = wrapped.__func__
        return self._self_state, None, wrapped

    def __reduce_ex__(self, protocol: object) -> str:
        return _pickling.by_reference(self)

    def __reduce__(self) -> str:
        return _pickling.by_reference(self)
