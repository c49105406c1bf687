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

Modules, one job each: ``_decorate`` (the ``cached`` options), ``wrapper`` (the proxy,
binding, controls), ``_call`` (the entry points and the hit path), ``_steps`` (the miss,
lease and refresh decisions, once for sync and async), ``_requests`` (the I/O they ask
for), ``_run`` (the blocking and the awaiting runner), ``_plan`` (keys), ``_entry`` (the
stored form and hit judgement), ``flight`` (single-flight), ``_invalidate`` (forgetting),
``_telemetry`` (span and hooks), ``_redefined`` (other code under a cached name),
``protocols`` (the public types).
"""

from toolkit.decorators._decorate import cached
from toolkit.decorators._redefined import RedefinitionWarning
from toolkit.decorators.protocols import (
    AsyncBoundCached,
    AsyncCachedFunction,
    BoundCached,
    CachedDecorator,
    CachedFunction,
)

__all__ = [
    "AsyncBoundCached",
    "AsyncCachedFunction",
    "BoundCached",
    "CachedDecorator",
    "CachedFunction",
    "RedefinitionWarning",
    "cached",
]
