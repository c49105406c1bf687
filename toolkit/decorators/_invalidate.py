"""Forgetting results: one call's entry (delete, or a tombstone) or the whole namespace."""

from __future__ import annotations

from typing import Any

from toolkit._types import FullKey, Namespace
from toolkit.base import BaseCache
from toolkit.decorators._entry import tombstone
from toolkit.middleware.base import supports_delete
from toolkit.middleware.failopen import failures_raise

# Each raises when the cache could not forget, even through a fail-open stack: a dropped
# delete would leave the forgotten result to be served once the backend answers again.


def invalidate(cache: BaseCache[Any], full_key: FullKey) -> None:
    """Forget one entry: ``delete`` where the cache has it, else a short-lived tombstone."""
    with failures_raise():
        if supports_delete(cache):
            cache.delete([full_key])
        else:
            cache.set(tombstone(full_key))


async def ainvalidate(cache: BaseCache[Any], full_key: FullKey) -> None:
    """Forget one entry (async I/O)."""
    with failures_raise():
        if supports_delete(cache):
            await cache.adelete([full_key])
        else:
            await cache.aset(tombstone(full_key))


def forget_namespace(cache: BaseCache[Any], ns: Namespace) -> None:
    """Forget every entry of ``ns``."""
    with failures_raise():
        cache.clear([ns])


async def aforget_namespace(cache: BaseCache[Any], ns: Namespace) -> None:
    """Forget every entry of ``ns`` (async I/O)."""
    with failures_raise():
        await cache.aclear([ns])
