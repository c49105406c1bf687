"""A default ttl for writes that carry none: ``observe(cache, default_ttl="1h")``."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from datetime import timedelta
from typing import Any

from toolkit._types import ValueT
from toolkit.base import check_ttl
from toolkit.middleware.base import CacheMiddleware
from toolkit.ttl import parse_ttl

__all__ = ["DefaultTtl"]


class DefaultTtl(CacheMiddleware[ValueT]):
    """Gives ``set`` pairs whose ttl is ``None`` the default ttl; explicit ttls are kept.

    The seed API's ``set`` reads ``None`` as "never expires": through this layer it reads
    "the default". ``ttl`` is seconds, a ``timedelta`` or ``"90s"``/``"15m"``/``"1h"``/``"1d"``.
    """

    adds_read_failures = False  # reads pass straight through
    adds_io = False

    def __init__(self, ttl: float | timedelta | str, inner: Any = None) -> None:
        """Check ``ttl`` (a positive duration); bound to ``inner`` when given."""
        seconds = check_ttl(parse_ttl(ttl), "default_ttl", allow_zero=False)
        if seconds is None:  # untyped callers
            raise TypeError("DefaultTtl needs a ttl: seconds, a timedelta or a string like '1h'")
        # The seed API types ttls as int seconds: keep whole seconds an int for foreign caches.
        self.ttl: float = int(seconds) if seconds.is_integer() else seconds
        """The default, in seconds."""
        super().__init__(inner)

    def _defaulted(self, pairs: Any) -> Any:
        """``pairs`` with the default in place of ``None`` ttls (the same object if none are)."""
        if not isinstance(pairs, Mapping):
            return pairs  # not ours to judge: the cache's own check refuses it
        ttl = self.ttl
        out: dict[Any, Any] | None = None
        for key, entry in pairs.items():
            if isinstance(entry, tuple) and len(entry) == 2 and entry[1] is None:
                if out is None:
                    out = dict(pairs)
                out[key] = (entry[0], ttl)
        return pairs if out is None else out

    def wrap_sync(self, operation: str, call: Callable[..., Any]) -> Callable[..., Any]:
        """Default the ttls of ``set``; other operations pass through."""
        if operation != "set":
            return call
        defaulted = self._defaulted

        def set_with_default(pairs: Any) -> Any:
            return call(defaulted(pairs))

        return set_with_default

    def wrap_async(
        self, operation: str, call: Callable[..., Awaitable[Any]]
    ) -> Callable[..., Awaitable[Any]]:
        """The async twin of :meth:`wrap_sync`."""
        if operation != "set":
            return call
        defaulted = self._defaulted

        async def aset_with_default(pairs: Any) -> Any:
            return await call(defaulted(pairs))

        return aset_with_default
