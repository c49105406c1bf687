"""A cache that fails on purpose: the demo's honest source of errors and circuit-breaker trips."""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from toolkit._types import FullKey, Namespace
from toolkit.backends.memory import InMemoryCache
from toolkit.base import BaseCache
from toolkit.errors import BackendError, CacheTimeoutError

__all__ = ["FlakyCache"]


class FlakyCache(BaseCache[Any]):
    """An in-memory cache that raises on a share of calls, and on every call during outages.

    Outages start ``first_outage`` seconds after creation and repeat every ``outage_every``
    seconds for ``outage_for`` seconds, long enough for a circuit breaker to open.
    """

    backend_name = "flaky-memory"

    def __init__(
        self,
        *,
        error_rate: float = 0.05,
        first_outage: float = 2.0,
        outage_every: float = 15.0,
        outage_for: float = 3.0,
        seed: int | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        """Create the cache; ``error_rate`` is the share of calls failing outside outages."""
        super().__init__()
        if not 0 <= error_rate <= 1:
            raise ValueError(f"error_rate must be within [0, 1], got {error_rate!r}")
        if not 0 < outage_for < outage_every:
            raise ValueError("outage_for must be > 0 and shorter than outage_every")
        self.error_rate = error_rate
        self.outage_every = outage_every
        self.outage_for = outage_for
        self._store: InMemoryCache[Any] = InMemoryCache()
        self._rng = random.Random(seed)
        self._clock = clock
        self._first = clock() + first_outage

    def in_outage(self) -> bool:
        """Whether every call fails right now."""
        since = self._clock() - self._first
        return since >= 0 and since % self.outage_every < self.outage_for

    def _fault(self, operation: str) -> None:
        if not self.in_outage() and self._rng.random() >= self.error_rate:
            return
        if self._rng.random() < 0.5:
            raise CacheTimeoutError(
                f"demo: injected {operation} timeout (deliberately flaky cache)"
            )
        raise BackendError(f"demo: injected {operation} failure (deliberately flaky cache)")

    def get(self, keys: Sequence[FullKey]) -> dict[FullKey, Any]:
        """Get the cached values for the given keys, or fail on purpose."""
        self._fault("get")
        return self._store.get(keys)

    async def aget(self, keys: Sequence[FullKey]) -> dict[FullKey, Any]:
        """Asynchronously get the cached values for the given keys, or fail on purpose."""
        return self.get(keys)

    def set(self, pairs: Mapping[FullKey, tuple[Any, int | None]]) -> None:
        """Set the cached values for the given keys and TTLs, or fail on purpose."""
        self._fault("set")
        self._store.set(pairs)

    async def aset(self, pairs: Mapping[FullKey, tuple[Any, int | None]]) -> None:
        """Asynchronously set the cached values, or fail on purpose."""
        self.set(pairs)

    def clear(self, namespaces: Sequence[Namespace] | None = None) -> None:
        """Delete the given namespaces (all when ``None``); never fails, so cleanup works."""
        self._store.clear(namespaces)

    async def aclear(self, namespaces: Sequence[Namespace] | None = None) -> None:
        """Asynchronously delete the given namespaces (all when ``None``)."""
        self.clear(namespaces)
