"""The forwarding cache every middleware builds on, and the hooks that travel down a stack."""

from __future__ import annotations

import logging
import types
from collections.abc import Awaitable, Callable, Collection, Iterable, Mapping, Sequence
from types import TracebackType
from typing import Any, NoReturn, Protocol, Self, TypeGuard

from toolkit._types import FullKey, Namespace, SupportsDelete, ValueT
from toolkit.base import BaseCache

__all__ = [
    "CIRCUIT_CLOSED",
    "CIRCUIT_HALF_OPEN",
    "CIRCUIT_OPEN",
    "OPERATIONS",
    "READ_ONCE",
    "CacheMiddleware",
    "Recomposer",
    "backend_name",
    "innermost",
    "read_once",
    "reads_never_fail",
    "runs_in_process",
    "supports_delete",
    "supports_lease",
]

CIRCUIT_CLOSED, CIRCUIT_HALF_OPEN, CIRCUIT_OPEN = 0, 1, 2

OPERATIONS = ("get", "set", "clear", "delete", "lease")
"""What a layer wraps; each also has its async twin (``aget``...). ``delete`` and ``lease``
exist only where the wrapped cache has them."""

PARAMETERS = {
    "get": "keys",
    "set": "pairs",
    "clear": "namespaces",
    "delete": "keys",
    "lease": "request",
}
"""The name each operation's one argument has in the seed API (``clear(namespaces=...)``)."""

READ_ONCE = frozenset({"get", "delete", "clear"})
"""The operations whose argument (keys, namespaces) may be a one-shot iterable: see
``read_once``."""

HOOKS = (
    "record_load",
    "record_coalesced",
    "record_lease",
    "record_stale",
    "record_refresh",
    "record_tag_invalidations",
    "record_error",
    "record_circuit_state",
)
"""The events a stack carries down to the layers that record them (see ``CacheMiddleware``)."""

logger = logging.getLogger("toolkit.middleware")
"""The one logger of the middleware layer (rate-limited failures, failing user hooks)."""


class Recomposer(Protocol):
    """Something that may change how a layer composes its calls after it is bound."""

    def when_live(self, callback: Callable[[], object]) -> None:
        """Call ``callback`` (held weakly) once the change happens, or now if it has."""


class _Unbound:
    """Stands in for ``inner`` until a middleware is bound, so a stray call fails clearly."""

    def __getattr__(self, name: str) -> NoReturn:
        if name.startswith("__"):
            raise AttributeError(name)
        # TypeError, a caller bug: FailOpen lets it through instead of serving a miss.
        raise TypeError(
            "this middleware wraps no cache yet: build a stack with wrap(cache, middleware, ...)"
        )

    def __repr__(self) -> str:
        return "<unbound>"


_UNBOUND: Any = _Unbound()


def innermost(cache: object) -> object:
    """Return the cache at the bottom of a middleware stack (the object itself if not wrapped)."""
    while isinstance(cache, CacheMiddleware):
        cache = cache.inner
    return cache


def read_once(arg: Any) -> Any:
    """The keys or namespaces of a call as a list when they are a one-shot iterable (a
    generator, an iterator), so that a layer looking at them leaves them for the cache;
    anything else as it is (``None``, a collection, a str or a non-iterable: the cache's
    own checks judge those)."""
    if arg is None or isinstance(arg, Collection) or not isinstance(arg, Iterable):
        return arg
    return list(arg)


def supports_delete(cache: object) -> TypeGuard[SupportsDelete]:
    """Whether ``cache`` (through any middleware) can delete single keys."""
    bottom = innermost(cache)
    return callable(getattr(bottom, "delete", None)) and callable(getattr(bottom, "adelete", None))


def reads_never_fail(cache: object) -> bool:
    """Whether a get on ``cache`` raises only for caller bugs: an in-process backend that
    turns undecodable entries into misses declares ``reads_never_fail = True``, and a stack
    keeps the claim only while every layer above it adds no failure of its own."""
    return getattr(cache, "reads_never_fail", False) is True


_IN_PROCESS = {("langgraph.cache.memory", "InMemoryCache")}  # it declares nothing itself


def runs_in_process(cache: object) -> bool:
    """Whether no call on ``cache`` waits on I/O: an in-process backend (one that declares
    ``in_process = True``, or LangGraph's ``InMemoryCache``), under layers that add none."""
    declared = getattr(cache, "in_process", None)
    if isinstance(declared, bool):
        return declared
    return (type(cache).__module__, type(cache).__qualname__) in _IN_PROCESS


def supports_lease(cache: object) -> bool:
    """Whether ``cache`` (through any middleware) stores leases (see ``toolkit.lease``)."""
    return callable(getattr(cache, "lease", None)) and callable(getattr(cache, "alease", None))


def backend_name(cache: object) -> str:
    """The ``backend`` label of a stack: the innermost cache's ``backend_name`` or its type name."""
    bottom = innermost(cache)
    name = getattr(bottom, "backend_name", None)
    return name if isinstance(name, str) and name else type(bottom).__name__.lower()


class CacheMiddleware(BaseCache[ValueT]):
    """A cache that holds ``inner`` (any object with the six cache methods) and forwards to it.

    A middleware is created unbound, as a spec of its options (``Metrics(registry=r)``), and
    bound once to the cache it wraps, by :func:`toolkit.wrap` or by passing ``inner=`` directly.
    Subclasses override the methods they act on and ``_on_bind`` for set-up that needs ``inner``.
    The ``record_*`` hooks carry events that only an outer layer sees (a load by ``@cached``,
    a timeout or circuit change in ``FailOpen``) down to the layer that records them.
    """

    inner: Any = _UNBOUND
    _below: Any = _UNBOUND  # hook -> the inner cache's hook (or None), resolved when bound

    adds_read_failures = True
    """Whether this layer's get can fail on its own; layers that only record or check say no."""

    adds_io = True
    """Whether this layer may wait on I/O of its own, or do more in an async call than in its
    sync twin; layers that only record or check say no."""

    recomposes_when: tuple[Recomposer, ...] = ()
    """What may still change the calls of this layer or of one below it, once bound: each
    recomposes the layer through ``when_live`` (a tracing SDK installed after the stack)."""

    def __init__(self, inner: Any = None) -> None:
        """Create the middleware, bound to ``inner`` when given."""
        if inner is not None:
            self.bind(inner)

    @property
    def serde(self) -> Any:  # type: ignore[override]
        """The serializer of the wrapped cache (values pass through untouched)."""
        return self.inner.serde

    @property
    def reads_never_fail(self) -> bool:
        """Whether a get through this layer raises only for caller bugs (see the function)."""
        return not self.adds_read_failures and reads_never_fail(self.inner)

    @property
    def in_process(self) -> bool:
        """Whether no call through this layer waits on I/O (see ``runs_in_process``)."""
        return not self.adds_io and runs_in_process(self.inner)

    def bind(self, inner: Any) -> CacheMiddleware[ValueT]:
        """Wrap ``inner`` and return ``self``; a middleware wraps exactly one cache."""
        if self.inner is not _UNBOUND:
            raise ValueError(
                f"{type(self).__name__} already wraps {self.inner!r}; create one per stack"
            )
        if isinstance(inner, type):  # observe(SqliteCache): its methods look callable too
            raise TypeError(
                f"{inner.__name__} is a class, not a cache: pass an instance, like "
                f"{inner.__name__}(...)"
            )
        missing = [
            m
            for m in ("get", "aget", "set", "aset", "clear", "aclear")
            if not callable(getattr(inner, m, None))
        ]
        if missing:
            raise TypeError(f"{type(inner).__name__} is not a cache: it lacks {', '.join(missing)}")
        self.inner = inner
        self._link_hooks()
        self._on_bind()
        self._compose()
        below = inner.recomposes_when if isinstance(inner, CacheMiddleware) else ()
        triggers = tuple(dict.fromkeys((*below, *self._recomposers())))
        if triggers:
            self.recomposes_when = triggers
            for trigger in triggers:  # after the layers below: they recompose first
                trigger.when_live(self._compose)
        return self

    def _recomposers(self) -> tuple[Recomposer, ...]:
        """What may change this layer's own calls after it is bound; none by default."""
        return ()

    def _on_bind(self) -> None:
        """Set-up that needs ``self.inner``; runs once, when bound."""

    def _compose(self) -> None:
        """Install this layer's calls, each wrapping the inner layer's, as instance attributes.

        Built once, here: a call through a whole stack is one closure per layer, each
        calling the next directly (no method lookup, no ``__getattr__``), the way Starlette
        builds its middleware stack once. ``delete`` is composed only when the inner cache
        has it, ``lease`` only when it stores leases. Over a stack that never waits on I/O
        (``in_process``), an async call runs the sync one: one coroutine for the whole stack
        rather than one per layer.
        """
        inner, attrs, in_process = self.inner, self.__dict__, self.in_process
        operations = [
            operation
            for operation in OPERATIONS
            if callable(getattr(inner, operation, None))
            and callable(getattr(inner, f"a{operation}", None))
        ]
        for operation in operations:
            call = self.wrap_sync(operation, getattr(inner, operation))
            attrs[operation] = _seed_named(call, operation)
            attrs[f"a{operation}"] = _seed_named(
                _awaitable(call)
                if in_process
                else self.wrap_async(operation, getattr(inner, f"a{operation}")),
                operation,
            )

    def _link_hooks(self) -> None:
        """Resolve, once, where each ``record_*`` hook goes next: the inner cache's hook, or
        nowhere. A hook this layer does not record becomes the inner one itself (or a no-op),
        so an event crosses only the layers that record it, not one forwarding call per layer.
        """
        attrs = self.__dict__
        below: dict[str, Callable[..., None] | None]
        below = self._below = {hook: getattr(self.inner, hook, None) for hook in HOOKS}
        for hook, forward in below.items():
            if getattr(type(self), hook) is getattr(CacheMiddleware, hook):
                attrs[hook] = _ignore if forward is None else forward

    def wrap_sync(self, operation: str, call: Callable[..., Any]) -> Callable[..., Any]:
        """This layer's job around one sync operation (``get``, ``set``, ``clear``, ``delete``)
        of the inner cache; the default forwards unchanged."""
        return call

    def wrap_async(
        self, operation: str, call: Callable[..., Awaitable[Any]]
    ) -> Callable[..., Awaitable[Any]]:
        """The async twin of :meth:`wrap_sync`."""
        return call

    def __getattr__(self, name: str) -> Any:
        """Anything else public (``close``, ``entry_count``...) is the wrapped cache's."""
        if name.startswith("_"):
            raise AttributeError(name)
        return getattr(self.inner, name)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.inner!r})"

    # -- ``with``/``async with``: a stack is a context manager exactly when its cache is one --

    def _context(self, method: str) -> Any:
        """The wrapped cache's ``method`` (``__enter__``...), looked up as ``with`` does."""
        if not callable(getattr(type(self.inner), method, None)):
            raise TypeError(
                f"{type(innermost(self)).__name__} does not support the "
                f"{'asynchronous ' if method.startswith('__a') else ''}context manager "
                "protocol: call its close() (if it has one) instead"
            )
        return getattr(self.inner, method)

    def __enter__(self) -> Self:
        """Enter the wrapped cache (``with observe(SqliteCache(...)) as cache``); the stack
        is what ``as`` binds."""
        self._context("__enter__")()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> bool | None:
        """Exit the wrapped cache (which closes it)."""
        result: bool | None = self._context("__exit__")(exc_type, exc, tb)
        return result

    async def __aenter__(self) -> Self:
        """The async twin of :meth:`__enter__`."""
        await self._context("__aenter__")()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> bool | None:
        """The async twin of :meth:`__exit__`."""
        result: bool | None = await self._context("__aexit__")(exc_type, exc, tb)
        return result

    def get(self, keys: Sequence[FullKey]) -> dict[FullKey, ValueT]:
        """Get the cached values for the given keys."""
        result: dict[FullKey, ValueT] = self.inner.get(keys)
        return result

    async def aget(self, keys: Sequence[FullKey]) -> dict[FullKey, ValueT]:
        """Asynchronously get the cached values for the given keys."""
        result: dict[FullKey, ValueT] = await self.inner.aget(keys)
        return result

    def set(self, pairs: Mapping[FullKey, tuple[ValueT, int | None]]) -> None:
        """Set the cached values for the given keys and TTLs."""
        self.inner.set(pairs)

    async def aset(self, pairs: Mapping[FullKey, tuple[ValueT, int | None]]) -> None:
        """Asynchronously set the cached values for the given keys and TTLs."""
        await self.inner.aset(pairs)

    def clear(self, namespaces: Sequence[Namespace] | None = None) -> None:
        """Delete the cached values for the given namespaces (all when ``None``)."""
        self.inner.clear(namespaces)

    async def aclear(self, namespaces: Sequence[Namespace] | None = None) -> None:
        """Asynchronously delete the cached values for the given namespaces (all when ``None``)."""
        await self.inner.aclear(namespaces)

    def delete(self, keys: Sequence[FullKey]) -> None:
        """Delete exactly these keys (when the innermost cache can: see ``supports_delete``)."""
        self.inner.delete(keys)

    async def adelete(self, keys: Sequence[FullKey]) -> None:
        """Asynchronously delete exactly these keys."""
        await self.inner.adelete(keys)

    # -- hooks forwarded down the stack; a layer that records one overrides it and calls super --

    def _forward(self, hook: str, *args: Any, **kwargs: Any) -> None:
        """Pass a ``record_*`` hook to the wrapped cache, if it takes it."""
        forward = self._below.get(hook)
        if forward is not None:
            forward(*args, **kwargs)

    def record_load(self, namespace: Namespace, seconds: float, *, ok: bool) -> None:
        """Report ``@cached`` computed a missing value in ``seconds`` (``ok=False``: it raised)."""
        self._forward("record_load", namespace, seconds, ok=ok)

    def record_coalesced(self, namespace: Namespace) -> None:
        """Report that a caller waited for another caller's load instead of computing."""
        self._forward("record_coalesced", namespace)

    def record_lease(self, namespace: Namespace, outcome: str, waited: float | None) -> None:
        """Report how ``@cached(lock=True)`` got a missing value (``toolkit.decorators.fleet``
        ``LeaseOutcome``), and the seconds it waited for another holder (``None``: no wait)."""
        self._forward("record_lease", namespace, outcome, waited)

    def record_stale(self, namespace: Namespace) -> None:
        """Report a stale result served while a background refresh runs."""
        self._forward("record_stale", namespace)

    def record_refresh(self, namespace: Namespace, trigger: str, result: str) -> None:
        """Report a background refresh (``trigger`` stale or early; ``result`` success,
        error or skipped: another process, or an earlier refresh, did it)."""
        self._forward("record_refresh", namespace, trigger, result)

    def record_tag_invalidations(self, count: int) -> None:
        """Report ``count`` tags invalidated (``toolkit.invalidate_tags``)."""
        self._forward("record_tag_invalidations", count)

    def record_error(
        self, operation: str, namespaces: Sequence[Namespace] | None, error_type: str
    ) -> None:
        """Report a failure an outer layer raised itself (a deadline, an open circuit)."""
        self._forward("record_error", operation, namespaces, error_type)

    def record_circuit_state(self, state: int) -> None:
        """Report the circuit breaker's state: 0 closed, 1 half-open, 2 open."""
        self._forward("record_circuit_state", state)


def _ignore(*_: Any, **__: Any) -> None:
    """A hook no layer below records."""


def _seed_named(call: Callable[..., Any], operation: str) -> Callable[..., Any]:
    """``call`` taking its argument under the seed API's name too (``clear(namespaces=...)``).

    A layer's closures name their one argument ``arg`` (one closure serves every operation);
    the same closure with that parameter renamed accepts the keyword a caller of the seed API
    may use, at no cost per call. Anything else (a bound method, a closure whose argument a
    nested function captures, one already named so) is returned as it is.
    """
    name = PARAMETERS[operation]
    if not isinstance(call, types.FunctionType):
        return call
    code = call.__code__
    first = code.co_varnames[0] if code.co_argcount else None
    if first is None or first == name or first in code.co_cellvars or name in code.co_varnames:
        return call
    renamed = types.FunctionType(
        code.replace(co_varnames=(name, *code.co_varnames[1:])),
        call.__globals__,
        call.__name__,
        call.__defaults__,
        call.__closure__,
    )
    renamed.__qualname__ = call.__qualname__
    renamed.__kwdefaults__ = call.__kwdefaults__
    return renamed


def _awaitable(call: Callable[..., Any]) -> Callable[..., Awaitable[Any]]:
    """The async form of a sync call that never waits."""

    async def run(arg: Any = None) -> Any:
        return call(arg)

    return run
