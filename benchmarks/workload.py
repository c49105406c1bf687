"""The value and key shapes every benchmark uses, so figures compare like with like."""

from __future__ import annotations

from typing import Any

from toolkit import FullKey

VALUE: dict[str, Any] = {"messages": [["ai", "hello world"]] * 3, "n": 42}
NS = ("__pregel_ns_writes", "bench.node", "node")
PRELOAD = 10_000


def keys(n: int, start: int = 0) -> list[FullKey]:
    """``n`` distinct keys in the benchmark namespace."""
    return [(NS, f"key-{i:08d}") for i in range(start, start + n)]


def pairs(n: int, start: int = 0, ttl: int | None = None) -> dict[FullKey, tuple[Any, int | None]]:
    """A ``set`` batch of ``n`` keys holding the benchmark value."""
    return {k: (VALUE, ttl) for k in keys(n, start)}
