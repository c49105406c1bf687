"""``@cached``: memoize functions, methods and coroutines in any cache, with single-flight.

    @cached
    def embed(text: str) -> list[float]: ...

    @cached("llm", ttl=3600, ignore=("self",))
    async def answer(self, question: str) -> str: ...

A call derives a ``FullKey`` from its bound arguments (``toolkit.keys``), reads the cache,
and on a miss runs the function once per key even under concurrency (threads, and
coroutines on one loop): the other callers wait for that result or exception. Errors are
never cached. The wrapper carries ``cache_key``, ``invalidate``, ``refresh`` and
``cache_clear`` (and ``a``-prefixed async twins).
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import threading
import time
from collections.abc import Callable, Coroutine, Iterable
from typing import Any, ParamSpec, Protocol, TypeVar, cast, overload

import wrapt
from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.context import _SUPPRESS_INSTRUMENTATION_KEY

from toolkit._types import FullKey, Namespace
from toolkit.base import BaseCache, check_namespace, check_ttl
from toolkit.config import default_cache, is_cache_like
from toolkit.keys import KeyPlan, namespace_of
from toolkit.middleware.base import supports_delete

__all__ = ["AsyncCachedFunction", "CachedDecorator", "CachedFunction", "cached"]

P = ParamSpec("P")
R = TypeVar("R")
R_co = TypeVar("R_co", covariant=True)

SPAN_NAME = "cache.call"
_TOMBSTONE = "\x00toolkit:invalidated\x00"
"""Written by ``invalidate`` into caches without ``delete`` (the seed API has no single-key
delete: LangGraph's own caches); read back as a miss."""
_TOMBSTONE_TTL = 1
_MISSING: Any = object()
_log = logging.getLogger(__name__)


def _is_hit(value: Any) -> bool:
    """Whether a value read back is a cached result: neither absent nor a tombstone."""
    return value is not _MISSING and not (type(value) is str and value == _TOMBSTONE)


# -- public types -----------------------------------------------------------------------


class BoundCached(Protocol[R_co]):
    """A cached method bound to an instance or class: the same surface, ``self`` supplied."""

    def __call__(self, *args: Any, **kwargs: Any) -> R_co: ...
    def cache_key(self, *args: Any, **kwargs: Any) -> FullKey: ...
    def invalidate(self, *args: Any, **kwargs: Any) -> None: ...
    async def ainvalidate(self, *args: Any, **kwargs: Any) -> None: ...
    def refresh(self, *args: Any, **kwargs: Any) -> R_co: ...
    async def arefresh(self, *args: Any, **kwargs: Any) -> Any: ...
    def cache_clear(self) -> None: ...
    async def acache_clear(self) -> None: ...


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


class AsyncCachedFunction(Protocol[P, R_co]):
    """A cached coroutine function: awaited like the original, plus cache controls."""

    __name__: str
    __qualname__: str

    @property
    def __wrapped__(self) -> Callable[P, Coroutine[Any, Any, R_co]]: ...
    async def __call__(self, *args: P.args, **kwargs: P.kwargs) -> R_co: ...
    def __get__(self, instance: object, owner: type | None = None) -> BoundCached[Any]: ...
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


class CachedDecorator(Protocol):
    """What ``cached(...)`` with options returns."""

    @overload
    def __call__(  # type: ignore[overload-overlap]
        self, func: Callable[P, Coroutine[Any, Any, R]], /
    ) -> AsyncCachedFunction[P, R]: ...
    @overload
    def __call__(self, func: Callable[P, R], /) -> CachedFunction[P, R]: ...


# -- single-flight ----------------------------------------------------------------------


class _Flight:
    """One in-progress computation that concurrent callers of the same key wait on."""

    __slots__ = ("abandoned", "done", "error", "value")

    def __init__(self, done: threading.Event | asyncio.Event) -> None:
        self.done = done
        self.value: Any = _MISSING
        self.error: BaseException | None = None
        self.abandoned = False
        """The leader left without an outcome (cancelled, interrupted): a waiter takes over."""

    def finish(self, value: Any, error: BaseException | None) -> None:
        """Publish the leader's outcome and wake the waiters."""
        if value is not _MISSING:
            self.value = value
        elif isinstance(error, Exception):
            self.error = error
        else:
            self.abandoned = True
        self.done.set()

    def outcome(self) -> Any:
        if self.error is not None:
            raise self.error
        return self.value


class _LoadTimer:
    """Times one computation of a miss and reports it through the cache's ``record_load``."""

    __slots__ = ("cache", "start", "state")

    def __init__(self, state: _Cached, cache: BaseCache[Any]) -> None:
        self.state = state
        self.cache = cache
        self.start = 0.0

    def __enter__(self) -> None:
        self.start = time.perf_counter()

    def __exit__(self, exc_type: type[BaseException] | None, *_: object) -> None:
        seconds = time.perf_counter() - self.start
        self.state.hook(self.cache, "record_load", seconds, ok=exc_type is None)


# -- the shared per-function state ------------------------------------------------------


class _Cached:
    """Everything one decorated function needs per call; the sync and async paths share it."""

    def __init__(
        self,
        func: Callable[..., Any],
        *,
        ns: Namespace,
        ttl: float | None,
        cache: BaseCache[Any] | None,
        key: Callable[..., Any] | None,
        ignore: Iterable[str],
        cache_none: bool,
        condition: Callable[[Any], bool] | None,
        strict_containers: bool,
        tracer_provider: trace.TracerProvider | None,
        key_id: str | None = None,
    ) -> None:
        self.ns = ns
        self.ns_label = ".".join(ns)  # the middleware's short form for plain namespaces
        self.ttl = ttl
        self.cache = cache
        self.key_func = key
        self.cache_none = cache_none
        self.condition = condition
        self.is_async = inspect.iscoroutinefunction(func)
        self.plan = KeyPlan(func, ignore=ignore, strict_containers=strict_containers, key_id=key_id)
        self.digest = self.plan.digest
        self.func_name = self.plan.func_name
        from toolkit import __version__

        self.tracer = trace.get_tracer(__name__, __version__, tracer_provider=tracer_provider)
        # get_tracer_provider() installs one named by OTEL_PYTHON_TRACER_PROVIDER, if any, so
        # that afterwards "no global provider" is one module lookup per call.
        self.uses_global_provider = tracer_provider is None and isinstance(
            trace.get_tracer_provider(), trace.ProxyTracerProvider
        )
        self.lock = threading.Lock()
        self.flights: dict[FullKey, _Flight] = {}
        self.aflights: dict[tuple[FullKey, asyncio.AbstractEventLoop], _Flight] = {}

    # -- keys and storage decisions (no I/O) --

    def full_key(self, instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> FullKey:
        instance = self.plan.receiver if instance is None else instance  # cached(obj.method)
        if instance is not None:
            args = (instance, *args)
        if self.key_func is not None:
            return (self.ns, self._custom_key(args, kwargs))
        return (self.ns, self.digest(args, kwargs))

    def _custom_key(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> str:
        assert self.key_func is not None
        made = self.key_func(*args, **kwargs)
        try:
            return self.plan.hash_value(made)
        except TypeError as exc:
            raise TypeError(
                f"key= function of {self.func_name} returned a {type(made).__name__}, "
                f"which has no canonical encoding: {exc}"
            ) from None

    def backend(self) -> BaseCache[Any]:
        return self.cache if self.cache is not None else default_cache()

    def should_store(self, value: Any) -> bool:
        if value is None and not self.cache_none:
            return False
        return self.condition is None or bool(self.condition(value))

    def store_pairs(self, full_key: FullKey, value: Any) -> dict[FullKey, tuple[Any, Any]]:
        return {full_key: (value, self.ttl)}

    # -- instrumentation: never raises into the caller --

    def start_span(self) -> trace.Span | None:
        if otel_context.get_value(_SUPPRESS_INSTRUMENTATION_KEY):
            return None
        try:
            span = self.tracer.start_span(SPAN_NAME)
            if not span.is_recording():
                return None
            span.set_attribute("cache.namespace", self.ns_label)
            span.set_attribute("code.function.name", self.func_name)
            return span
        except Exception:
            _log.debug("starting the %s span failed", SPAN_NAME, exc_info=True)
            return None

    def hook(self, cache: Any, name: str, *args: Any, **kwargs: Any) -> None:
        fn = getattr(cache, name, None)
        if fn is None:
            return
        try:
            fn(self.ns, *args, **kwargs)
        except Exception:
            _log.debug("cache hook %s failed", name, exc_info=True)

    def begin(
        self, instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> tuple[FullKey, BaseCache[Any], trace.Span | None]:
        """What every call needs before its first I/O: the key, the cache and maybe a span."""
        if instance is None and self.key_func is None:
            full_key = (self.ns, self.digest(args, kwargs))
        else:
            full_key = self.full_key(instance, args, kwargs)
        cache = self.cache
        if cache is None:
            cache = default_cache()
        # With no explicit provider and no global SDK provider a span could only be a
        # non-recording no-op: skip even the ProxyTracer round trip.
        if self.uses_global_provider and trace._TRACER_PROVIDER is None:
            return full_key, cache, None
        return full_key, cache, self.start_span()

    # -- the sync path --

    def call(
        self,
        wrapped: Callable[..., Any],
        instance: Any,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
    ) -> Any:
        full_key, cache, span = self.begin(instance, args, kwargs)
        if span is None:
            value = cache.get([full_key]).get(full_key, _MISSING)
            if _is_hit(value):
                return value
            return self._single_flight(cache, wrapped, args, kwargs, full_key, None)
        with trace.use_span(span, end_on_exit=True):
            value = cache.get([full_key]).get(full_key, _MISSING)
            hit = _is_hit(value)
            span.set_attribute("cache.hit", hit)
            if hit:
                return value
            return self._single_flight(cache, wrapped, args, kwargs, full_key, span)

    def _single_flight(
        self,
        cache: BaseCache[Any],
        wrapped: Callable[..., Any],
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        full_key: FullKey,
        span: trace.Span | None,
    ) -> Any:
        while True:
            with self.lock:
                flight = self.flights.get(full_key)
                leader = flight is None
                if flight is None:
                    flight = self.flights[full_key] = _Flight(threading.Event())
            if leader:
                return self._lead(cache, wrapped, args, kwargs, full_key, flight)
            self.hook(cache, "record_coalesced")
            if span is not None:
                span.set_attribute("cache.coalesced", True)
            flight.done.wait()
            if not flight.abandoned:
                return flight.outcome()
            # The leader was interrupted: another waiter may have taken over and finished.
            value = cache.get([full_key]).get(full_key, _MISSING)
            if _is_hit(value):
                return value

    def _lead(
        self,
        cache: BaseCache[Any],
        wrapped: Callable[..., Any],
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        full_key: FullKey,
        flight: _Flight,
    ) -> Any:
        value: Any = _MISSING
        error: BaseException | None = None
        try:
            value = self._compute(cache, wrapped, args, kwargs)
            if self.should_store(value):
                cache.set(self.store_pairs(full_key, value))
            return value
        except BaseException as exc:
            error = exc
            raise
        finally:
            with self.lock:
                self.flights.pop(full_key, None)
            flight.finish(value, error)

    def _compute(
        self,
        cache: BaseCache[Any],
        wrapped: Callable[..., Any],
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
    ) -> Any:
        with _LoadTimer(self, cache):
            return wrapped(*args, **kwargs)

    def refresh(
        self,
        wrapped: Callable[..., Any],
        instance: Any,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
    ) -> Any:
        full_key = self.full_key(instance, args, kwargs)
        cache = self.backend()
        value = self._compute(cache, wrapped, args, kwargs)
        if self.should_store(value):
            cache.set(self.store_pairs(full_key, value))
        return value

    # -- the async path: the same steps, awaiting the I/O --

    async def acall(
        self,
        wrapped: Callable[..., Any],
        instance: Any,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
    ) -> Any:
        full_key, cache, span = self.begin(instance, args, kwargs)
        if span is None:
            value = (await cache.aget([full_key])).get(full_key, _MISSING)
            if _is_hit(value):
                return value
            return await self._asingle_flight(cache, wrapped, args, kwargs, full_key, None)
        with trace.use_span(span, end_on_exit=True):
            value = (await cache.aget([full_key])).get(full_key, _MISSING)
            hit = _is_hit(value)
            span.set_attribute("cache.hit", hit)
            if hit:
                return value
            return await self._asingle_flight(cache, wrapped, args, kwargs, full_key, span)

    async def _asingle_flight(
        self,
        cache: BaseCache[Any],
        wrapped: Callable[..., Any],
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        full_key: FullKey,
        span: trace.Span | None,
    ) -> Any:
        slot = (full_key, asyncio.get_running_loop())
        while True:
            flight = self.aflights.get(slot)
            if flight is None:
                flight = self.aflights[slot] = _Flight(asyncio.Event())
                return await self._alead(cache, wrapped, args, kwargs, slot, flight)
            self.hook(cache, "record_coalesced")
            if span is not None:
                span.set_attribute("cache.coalesced", True)
            await flight.done.wait()  # type: ignore[misc]
            if not flight.abandoned:
                return flight.outcome()
            # The leader was cancelled: another waiter may have taken over and finished.
            value = (await cache.aget([full_key])).get(full_key, _MISSING)
            if _is_hit(value):
                return value

    async def _alead(
        self,
        cache: BaseCache[Any],
        wrapped: Callable[..., Any],
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        slot: tuple[FullKey, asyncio.AbstractEventLoop],
        flight: _Flight,
    ) -> Any:
        value: Any = _MISSING
        error: BaseException | None = None
        try:
            value = await self._acompute(cache, wrapped, args, kwargs)
            if self.should_store(value):
                await cache.aset(self.store_pairs(slot[0], value))
            return value
        except BaseException as exc:
            error = exc
            raise
        finally:
            if self.aflights.get(slot) is flight:
                del self.aflights[slot]
            flight.finish(value, error)

    async def _acompute(
        self,
        cache: BaseCache[Any],
        wrapped: Callable[..., Any],
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
    ) -> Any:
        with _LoadTimer(self, cache):
            value = wrapped(*args, **kwargs)
            return await value if self.is_async else value

    async def arefresh(
        self,
        wrapped: Callable[..., Any],
        instance: Any,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
    ) -> Any:
        full_key = self.full_key(instance, args, kwargs)
        cache = self.backend()
        value = await self._acompute(cache, wrapped, args, kwargs)
        if self.should_store(value):
            await cache.aset(self.store_pairs(full_key, value))
        return value

    # -- invalidation --

    def tombstone(self, full_key: FullKey) -> dict[FullKey, tuple[Any, Any]]:
        return {full_key: (_TOMBSTONE, _TOMBSTONE_TTL)}


# -- the wrapt proxies ------------------------------------------------------------------


class _Controls:
    """The cache controls, written once for the plain and the bound wrapper."""

    def _bind(self) -> tuple[_Cached, Any, Callable[..., Any]]:
        """The state, the instance that enters the key (or ``None``) and the callable to run."""
        raise NotImplementedError

    def cache_key(self, *args: Any, **kwargs: Any) -> FullKey:
        """The ``FullKey`` this call reads and writes."""
        state, instance, _ = self._bind()
        return state.full_key(instance, args, kwargs)

    def invalidate(self, *args: Any, **kwargs: Any) -> None:
        """Forget the cached result of this call."""
        state, instance, _ = self._bind()
        full_key = state.full_key(instance, args, kwargs)
        cache = state.backend()
        if supports_delete(cache):
            cache.delete([full_key])
        else:
            cache.set(state.tombstone(full_key))

    async def ainvalidate(self, *args: Any, **kwargs: Any) -> None:
        """Forget the cached result of this call (async I/O)."""
        state, instance, _ = self._bind()
        full_key = state.full_key(instance, args, kwargs)
        cache = state.backend()
        if supports_delete(cache):
            await cache.adelete([full_key])
        else:
            await cache.aset(state.tombstone(full_key))

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
        """Forget every cached result of this function (its whole namespace)."""
        state = self._bind()[0]
        state.backend().clear([state.ns])

    async def acache_clear(self) -> None:
        """Forget every cached result of this function (async I/O)."""
        state = self._bind()[0]
        await state.backend().aclear([state.ns])


class _BoundCachedWrapper(_Controls, wrapt.BoundFunctionWrapper[..., Any]):
    """A cached method bound to its instance or class, which the controls supply."""

    def _bind(self) -> tuple[_Cached, Any, Callable[..., Any]]:
        binding = self._self_binding
        if binding == "classmethod":
            instance = getattr(self.__wrapped__, "__self__", None)
        elif binding == "staticmethod":
            instance = None
        else:
            instance = self._self_instance
        return self._self_parent._self_state, instance, self.__wrapped__


class _CachedWrapper(_Controls, wrapt.FunctionWrapper[..., Any]):
    """The decorated function: a transparent proxy with cache controls."""

    __bound_function_wrapper__ = _BoundCachedWrapper

    def __init__(self, wrapped: Any, state: _Cached) -> None:
        super().__init__(wrapped, state.acall if state.is_async else state.call)
        self._self_state = state

    def cache_key(self, *args: Any, **kwargs: Any) -> FullKey:
        """The ``FullKey`` this call reads and writes."""
        return self._self_state.full_key(None, args, kwargs)  # the common case, kept short

    def _bind(self) -> tuple[_Cached, Any, Callable[..., Any]]:
        wrapped: Any = self.__wrapped__
        if isinstance(wrapped, (classmethod, staticmethod)):
            wrapped = wrapped.__func__
        return self._self_state, None, wrapped


# -- the decorator ----------------------------------------------------------------------


def _is_decoratable(obj: object) -> bool:
    return isinstance(obj, (classmethod, staticmethod)) or (
        callable(obj) and not isinstance(obj, (str, tuple))
    )


def _namespace(ns: str | Namespace | None, func: Any, version: str | int | None) -> Namespace:
    if ns is None:
        namespace = namespace_of(func)
    elif isinstance(ns, str):
        namespace = (ns,)
    else:
        namespace = check_namespace(ns)
    if not namespace:
        raise ValueError("ns must not be empty")
    if version is not None:
        if isinstance(version, bool) or not isinstance(version, (str, int)):
            raise TypeError(f"version must be a str or int, got {type(version).__name__}")
        namespace = (*namespace, f"v={version}")
    check_namespace(namespace)
    return namespace


@overload
def cached(func: Callable[P, Coroutine[Any, Any, R]], /) -> AsyncCachedFunction[P, R]: ...  # type: ignore[overload-overlap]
@overload
def cached(func: Callable[P, R], /) -> CachedFunction[P, R]: ...
@overload
def cached(
    ns: str | Namespace | None = None,
    ttl: float | None = None,
    *,
    cache: BaseCache[Any] | None = None,
    key: Callable[..., Any] | None = None,
    ignore: Iterable[str] = (),
    version: str | int | None = None,
    cache_none: bool = True,
    condition: Callable[[Any], bool] | None = None,
    strict_containers: bool = True,
    tracer_provider: trace.TracerProvider | None = None,
    key_id: str | None = None,
) -> CachedDecorator: ...
def cached(
    ns: Any = None,
    ttl: float | None = None,
    *,
    cache: BaseCache[Any] | None = None,
    key: Callable[..., Any] | None = None,
    ignore: Iterable[str] = (),
    version: str | int | None = None,
    cache_none: bool = True,
    condition: Callable[[Any], bool] | None = None,
    strict_containers: bool = True,
    tracer_provider: trace.TracerProvider | None = None,
    key_id: str | None = None,
) -> Any:
    """Cache a function's results by its arguments: ``@cached`` or ``@cached(ns, ttl, ...)``.

    ``ns`` (str or tuple; default module and qualified name) and ``version`` (appended to
    it) name the entries; ``ttl`` in seconds (``None`` = never expire); ``cache`` (default:
    ``toolkit.configure``'s, ``TOOLKIT_CACHE_URL`` or ``observe(InMemoryCache())``);
    ``key(*args, **kwargs)`` (``self``/``cls`` first for methods) returns the value to key on
    instead of the arguments; ``ignore`` leaves parameters out of the key; ``cache_none``
    and ``condition(result)`` decide what is stored; ``strict_containers=False`` makes
    lists/tuples and sets/frozensets one key; ``tracer_provider`` overrides the global one;
    ``key_id`` names the function in its keys instead of its module and qualified name (the
    one way for two functions to share entries; see ``toolkit._identity``).
    """
    func, name = (ns, None) if _is_decoratable(ns) else (None, ns)
    check_ttl(ttl, "@cached", allow_zero=False)
    if cache is not None and not is_cache_like(cache):
        raise TypeError(f"cache must be a BaseCache-like object, got {type(cache).__name__}")
    if isinstance(ignore, str):
        ignore = (ignore,)
    ignore = tuple(ignore)

    def decorate(func: Any) -> Any:
        if not _is_decoratable(func):
            raise TypeError(f"@cached decorates functions and methods, got {type(func).__name__}")
        target = func.__func__ if isinstance(func, (classmethod, staticmethod)) else func
        state = _Cached(
            target,
            ns=_namespace(name, target, version),
            ttl=ttl,
            cache=cache,
            key=key,
            ignore=ignore,
            cache_none=cache_none,
            condition=condition,
            strict_containers=strict_containers,
            tracer_provider=tracer_provider,
            key_id=key_id,
        )
        return _CachedWrapper(func, state)

    return decorate(func) if func is not None else cast(CachedDecorator, decorate)
