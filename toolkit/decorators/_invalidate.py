"""Forgetting results: one call's entry (delete, or a tombstone) or the whole namespace."""

from __future__ import annotations

from typing import Any

from toolkit._types import FullKey
from toolkit.base import BaseCache
from toolkit.decorators._entry import tombstone
from toolkit.middleware.base import supports_delete


def invalidate(cache: BaseCache[Any], full_key: FullKey) -> None:
    """Forget one entry: ``delete`` where the cache has it, else a short-lived tombstone."""
    if supports_delete(cache):
        cache.delete([full_key])
    else:
        cache.set(tombstone(full_key))


async def ainvalidate(cache: BaseCache[Any], full_key: FullKey) -> None:
    """Forget one entry (async I/O)."""
    if supports_delete(cache):
        await cache.adelete([full_key])
    else:
        await cache.aset(tombstone(full_key))
