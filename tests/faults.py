"""Caches that fail on demand: the faults a real backend cannot produce when a test asks."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Mapping, Sequence
from typing import Any

from toolkit import BackendError, FullKey, InMemoryCache, Namespace


class FlakyCache:
    """A real in-memory cache that raises ``error`` from every call while ``failing`` is set.

    Declares itself out-of-process so ``FailOpen`` treats it like a network backend.
    """

    backend_name = "flaky"
    in_process = False

    def __init__(self, error: Exception | None = None) -> None:
        self.store: InMemoryCache[Any] = InMemoryCache()
        self.error = error if error is not None else BackendError("backend down")
        self.failing = True
        self.calls = 0
        self.threads: set[int] = set()

    def _enter(self) -> None:
        self.calls += 1
        self.threads.add(threading.get_ident())
        if self.failing:
            raise self.error

    def get(self, keys: Sequence[FullKey]) -> dict[FullKey, Any]:
        self._enter()
        return self.store.get(keys)

    async def aget(self, keys: Sequence[FullKey]) -> dict[FullKey, Any]:
        self._enter()
        return self.store.get(keys)

    def set(self, pairs: Mapping[FullKey, tuple[Any, int | None]]) -> None:
        self._enter()
        self.store.set(pairs)

    async def aset(self, pairs: Mapping[FullKey, tuple[Any, int | None]]) -> None:
        self._enter()
        self.store.set(pairs)

    def clear(self, namespaces: Sequence[Namespace] | None = None) -> None:
        self._enter()
        self.store.clear(namespaces)

    async def aclear(self, namespaces: Sequence[Namespace] | None = None) -> None:
        self._enter()
        self.store.clear(namespaces)

    def delete(self, keys: Sequence[FullKey]) -> None:
        self._enter()
        self.store.delete(keys)

    async def adelete(self, keys: Sequence[FullKey]) -> None:
        self._enter()
        self.store.delete(keys)


class HangingCache:
    """A backend whose calls never answer until ``release()`` (sync) or cancellation (async)."""

    backend_name = "hanging"
    in_process = False

    def __init__(self) -> None:
        self.released = threading.Event()
        self.calls = 0

    def release(self) -> None:
        self.released.set()

    def _hang(self) -> None:
        self.calls += 1
        self.released.wait()

    async def _ahang(self) -> None:
        self.calls += 1
        await asyncio.Event().wait()

    def get(self, keys: Sequence[FullKey]) -> dict[FullKey, Any]:
        self._hang()
        return {}

    async def aget(self, keys: Sequence[FullKey]) -> dict[FullKey, Any]:
        await self._ahang()
        return {}

    def set(self, pairs: Mapping[FullKey, tuple[Any, int | None]]) -> None:
        self._hang()

    async def aset(self, pairs: Mapping[FullKey, tuple[Any, int | None]]) -> None:
        await self._ahang()

    def clear(self, namespaces: Sequence[Namespace] | None = None) -> None:
        self._hang()

    async def aclear(self, namespaces: Sequence[Namespace] | None = None) -> None:
        await self._ahang()
