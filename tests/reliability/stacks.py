"""The caches under test, each inside ``observe`` with its own registry, and what they counted."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from tests.metric_catalog import metric_total
from toolkit import FullKey


def sqlite_cache(path: Path | str, **options: Any) -> Any:
    """A ``SqliteCache`` on ``path`` (the test skips while that backend has not landed)."""
    module = pytest.importorskip("toolkit.backends.sqlite", reason="SqliteCache not merged yet")
    return module.SqliteCache(path=str(path), **options)


def observed(cache: Any, **options: Any) -> tuple[Any, CollectorRegistry]:
    """``cache`` inside the default stack, with a fresh registry to read its counts from."""
    middleware = pytest.importorskip("toolkit.middleware", reason="observe not merged yet")
    registry = CollectorRegistry()
    return middleware.observe(cache, registry=registry, **options), registry


def errors_counted(registry: CollectorRegistry, **labels: str) -> float:
    """How many failures the metrics layer counted (``cache_errors_total``)."""
    return metric_total(registry, "cache_errors_total", **labels)


def evictions_counted(registry: CollectorRegistry, **labels: str) -> float:
    """How many evictions the metrics layer counted (``cache_evictions_total``)."""
    return metric_total(registry, "cache_evictions_total", **labels)


def tagged(full_key: FullKey, writer: int, seq: int) -> list[Any]:
    """A value that names the key it was written for, its writer and that writer's sequence."""
    return [list(full_key[0]), full_key[1], writer, seq]


def carries_key(value: Any, full_key: FullKey) -> bool:
    """Whether ``value`` (made by ``tagged``) was written for ``full_key``."""
    return (
        isinstance(value, list)
        and len(value) == 4
        and tuple(value[0]) == full_key[0]
        and value[1] == full_key[1]
    )


def close(cache: Any) -> None:
    """Close a backend that holds connections or files."""
    closer = getattr(cache, "close", None)
    if closer is not None:
        closer()


async def aclose(cache: Any) -> None:
    """Close a backend's async resources (and its sync ones)."""
    closer = getattr(cache, "aclose", None)
    if closer is not None:
        await closer()
    else:
        close(cache)


def redis_module() -> Any:
    """``toolkit.backends.redis`` (the test skips while that backend has not landed)."""
    return pytest.importorskip("toolkit.backends.redis", reason="RedisCache not merged yet")
