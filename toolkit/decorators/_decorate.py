"""``cached``: check the options once, then wrap each function in a ``CachedWrapper``."""

from __future__ import annotations

import inspect
import math
from collections.abc import Callable, Coroutine, Iterable
from datetime import timedelta
from typing import Any, ParamSpec, TypeVar, cast, overload

from opentelemetry import trace

from toolkit._types import Namespace
from toolkit.base import MAX_TTL, BaseCache, check_ttl
from toolkit.config import is_cache_like, not_a_cache, observed_from_url
from toolkit.decorators._call import Cached
from toolkit.decorators._plan import namespace
from toolkit.decorators.fleet import DEFAULT_LEASE_TTL, DEFAULT_LOCK_TIMEOUT, LeasePolicy
from toolkit.decorators.freshness import Freshness
from toolkit.decorators.protocols import AsyncCachedFunction, CachedDecorator, CachedFunction
from toolkit.decorators.tags import Tagging, TagsOption
from toolkit.decorators.wrapper import CachedWrapper
from toolkit.lease import MAX_LEASE_SECONDS
from toolkit.ttl import parse_ttl

P = ParamSpec("P")
R = TypeVar("R")


def _refuse_uncacheable(target: object) -> None:
    """Refuse, at decoration time, what can never be cached."""
    name = getattr(target, "__qualname__", type(target).__name__)
    if isinstance(target, type):
        raise TypeError(
            f"@cached cannot decorate the class {name}: decorate its methods, or a factory "
            "function that builds instances"
        )
    if inspect.isgeneratorfunction(target) or inspect.isasyncgenfunction(target):
        raise TypeError(
            f"@cached cannot decorate the generator function {name}: a generator is consumed "
            "once and cannot be stored; return a list (or a tuple) instead"
        )


def _ignored(ignore: object) -> tuple[str, ...]:
    """The parameter names of ``ignore=``: one name or an iterable of names."""
    if isinstance(ignore, str):
        return (ignore,)
    if not isinstance(ignore, Iterable):
        raise TypeError(f"ignore must be a parameter name or names, got {type(ignore).__name__}")
    names = tuple(ignore)
    for name in names:
        if not isinstance(name, str):
            raise TypeError(
                f"ignore must be a parameter name or names, got {type(name).__name__} in it"
            )
    return names


def _check_options(key: object, condition: object, cache_none: object, strict: object) -> None:
    """Refuse now the options that would be taken by their truth, or fail only at a miss."""
    if key is not None and not callable(key):
        raise TypeError(f"key must be a function of the call's arguments, got {type(key).__name__}")
    if condition is not None and not callable(condition):
        raise TypeError(
            f"condition must be a function of the result, got {type(condition).__name__}"
        )
    for name, flag in (("cache_none", cache_none), ("strict_containers", strict)):
        if not isinstance(flag, bool):
            raise TypeError(f"{name} must be True or False, got {type(flag).__name__}")


def _seconds(value: float | timedelta | str | None, name: str) -> float | None:
    try:
        return parse_ttl(value)
    except (TypeError, ValueError) as exc:
        raise type(exc)(f"{name}: {exc}".replace("ttl must", "it must")) from None


def _lease_policy(
    lock: object,
    lock_timeout: float | timedelta | str | None,
    lease_ttl: float | timedelta | str | None,
) -> LeasePolicy | None:
    if not isinstance(lock, bool):
        raise TypeError(f"lock must be True or False, got {type(lock).__name__}")
    timeout = _seconds(lock_timeout, "lock_timeout")
    lease = _seconds(lease_ttl, "lease_ttl")
    if not lock:
        if timeout is not None or lease is not None:
            raise ValueError("lock_timeout and lease_ttl apply to lock=True only")
        return None
    if lease is not None and lease > MAX_LEASE_SECONDS:
        raise ValueError(f"lease_ttl must be at most {MAX_LEASE_SECONDS:g} s, got {lease:g}")
    return LeasePolicy(
        DEFAULT_LEASE_TTL if lease is None else lease,
        DEFAULT_LOCK_TIMEOUT if timeout is None else timeout,
    )


def _freshness(
    ttl: float | None,
    stale_ttl: float | timedelta | str | None,
    early: object,
    beta: object,
) -> Freshness | None:
    if not isinstance(early, bool):
        raise TypeError(f"early must be True or False, got {type(early).__name__}")
    if beta is not None:
        if isinstance(beta, bool) or not isinstance(beta, (int, float)):
            raise TypeError(f"beta must be a number, got {type(beta).__name__}")
        if not (0 < beta < math.inf):
            raise ValueError(f"beta must be a positive, finite number, got {beta!r}")
    stale = _seconds(stale_ttl, "stale_ttl")
    factor = float(beta) if beta is not None else (1.0 if early else None)
    if stale is None and factor is None:
        return None
    if ttl is None:
        raise ValueError(
            "stale_ttl and early refresh need a ttl: a result that never expires is never stale"
        )
    if stale is not None and not ttl + stale <= MAX_TTL:  # what the backend is asked to keep
        raise ValueError(
            f"ttl + stale_ttl must be at most {MAX_TTL:.0f} seconds (100 years), "
            f"got {ttl:.0f} + {stale:.0f}"
        )
    return Freshness(ttl, stale, factor)


def _is_decoratable(obj: object) -> bool:
    return isinstance(obj, (classmethod, staticmethod)) or (
        callable(obj) and not isinstance(obj, (str, tuple))
    )


@overload
def cached(func: Callable[P, Coroutine[Any, Any, R]], /) -> AsyncCachedFunction[P, R]: ...  # type: ignore[overload-overlap]
@overload
def cached(func: Callable[P, R], /) -> CachedFunction[P, R]: ...
@overload
def cached(
    ns: str | Namespace | None = None,
    ttl: float | timedelta | str | None = None,
    *,
    cache: BaseCache[Any] | str | None = None,
    key: Callable[..., Any] | None = None,
    ignore: Iterable[str] = (),
    version: str | int | None = None,
    cache_none: bool = True,
    condition: Callable[[Any], bool] | None = None,
    strict_containers: bool = True,
    tracer_provider: trace.TracerProvider | None = None,
    key_id: str | None = None,
    lock: bool = False,
    lock_timeout: float | timedelta | str | None = None,
    lease_ttl: float | timedelta | str | None = None,
    stale_ttl: float | timedelta | str | None = None,
    early: bool = False,
    beta: float | None = None,
    tags: TagsOption | None = None,
) -> CachedDecorator: ...
def cached(
    ns: Any = None,
    ttl: float | timedelta | str | None = None,
    *,
    cache: BaseCache[Any] | str | None = None,
    key: Callable[..., Any] | None = None,
    ignore: Iterable[str] = (),
    version: str | int | None = None,
    cache_none: bool = True,
    condition: Callable[[Any], bool] | None = None,
    strict_containers: bool = True,
    tracer_provider: trace.TracerProvider | None = None,
    key_id: str | None = None,
    lock: bool = False,
    lock_timeout: float | timedelta | str | None = None,
    lease_ttl: float | timedelta | str | None = None,
    stale_ttl: float | timedelta | str | None = None,
    early: bool = False,
    beta: float | None = None,
    tags: TagsOption | None = None,
) -> Any:
    """Cache a function's results by its arguments: ``@cached`` or ``@cached(ns, ttl, ...)``::

        @cached("llm", ttl="1h")
        def summarize(text: str) -> str: ...

        summarize("hello")              # computes, stores
        summarize("hello")              # served from the cache
        summarize.invalidate("hello")   # forgets that one result

    - ``ns``: namespace, a str (``"a.b"``) or tuple of str; default (module, qualified
      name). ``version`` is appended to it (bump it when the function's output changes).
    - ``ttl``: how long a result lives: seconds, a ``timedelta`` or ``"90s"``/``"15m"``/
      ``"1h"``/``"1d"``; ``None`` never expires.
    - ``cache``: a cache (any ``BaseCache``-like object) or a URL (``"sqlite:///app.db"``,
      wrapped in ``observe``); default ``toolkit.configure``'s, ``TOOLKIT_CACHE_URL``'s or
      ``observe(InMemoryCache())``.
    - ``key(*args, **kwargs)``: the value to key on instead of the arguments (``self``/``cls``
      first for methods); ``ignore``: parameter names left out of the key.
    - ``cache_none``: store ``None`` results; ``condition(result)``: store only when true.
    - ``strict_containers``: ``False`` makes lists/tuples and sets/frozensets one key.
    - ``tracer_provider``: OpenTelemetry provider for the ``cache.call`` span (default global).
    - ``key_id``: the name of the function in its keys instead of its module and qualified
      name: the one way for two functions to share entries (see ``toolkit._identity``).
    - ``lock``: one computation of a missing key in the whole fleet, not only per process:
      the caller that takes a lease on the key in the cache computes, the others wait for
      its value (at most ``lock_timeout``, default 60 s, then compute themselves). The lease
      lives ``lease_ttl`` (default 10 s) and is renewed while the function runs, so a
      holder that dies is replaced within it. Caches without leases (LangGraph's own)
      fall back to in-process single-flight.
    - ``stale_ttl``: after ``ttl``, serve the stale result for this long while one
      background refresh runs (one in the fleet where the cache has leases).
    - ``tags``: a tag, tags, or ``tags(*args, **kwargs)`` returning them (``self`` first
      for methods); ``toolkit.invalidate_tags("user:42")`` forgets every entry stored with
      that tag, whatever function stored it (in this process's caches), in O(1) per tag.
    - ``early`` (or ``beta``, default 1.0, which implies it): refresh a hit in the
      background before it expires, more likely the nearer its expiry and the longer the
      function takes (XFetch; a larger ``beta`` refreshes earlier).

    The result keeps the function's signature and adds ``cache_key``, ``invalidate``,
    ``refresh``, ``cache_clear`` (and async twins), ``cache_info`` and ``cache_parameters``.
    """
    func, name = (ns, None) if _is_decoratable(ns) else (None, ns)
    given: object = name
    if isinstance(given, (int, float, timedelta)) and not isinstance(given, bool):  # @cached(60)
        raise TypeError(
            f"@cached({name!r}): the first argument is the namespace (a str or tuple of str); "
            f"for a ttl write @cached(ttl={name!r}) or @cached('my.namespace', {name!r})"
        )
    if isinstance(ttl, (int, float, timedelta)) and not isinstance(ttl, bool) and not ttl:
        raise ValueError(
            "@cached(ttl=0) would store nothing: give a positive ttl, or run the function "
            "past the cache with f.__wrapped__(...) or `with toolkit.disabled():`"
        )
    seconds = check_ttl(parse_ttl(ttl), "@cached", allow_zero=False)
    if isinstance(cache, str):
        cache = observed_from_url(cache)  # as configure(cache=url) does
    if cache is not None and not is_cache_like(cache):
        raise not_a_cache(cache, "a BaseCache-like object or a cache URL")
    ignore = _ignored(ignore)
    _check_options(key, condition, cache_none, strict_containers)
    leases = _lease_policy(lock, lock_timeout, lease_ttl)
    if tags is not None and not callable(tags):
        Tagging(tags, "@cached")  # a bad static tag is refused now, not at the first call
    fresh = _freshness(seconds, stale_ttl, early, beta)

    def decorate(func: Any) -> Any:
        if not _is_decoratable(func):
            raise TypeError(f"@cached decorates functions and methods, got {type(func).__name__}")
        target = func.__func__ if isinstance(func, (classmethod, staticmethod)) else func
        _refuse_uncacheable(target)
        state = Cached(
            target,
            ns=namespace(name, target, version),
            ttl=seconds,
            cache=cache,
            key=key,
            ignore=ignore,
            cache_none=cache_none,
            condition=condition,
            strict_containers=strict_containers,
            tracer_provider=tracer_provider,
            key_id=key_id,
            fresh=fresh,
            leases=leases,
            tags=tags,
        )
        return CachedWrapper(func, state)

    return decorate(func) if func is not None else cast(CachedDecorator, decorate)
