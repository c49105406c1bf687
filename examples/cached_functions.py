"""Decorating plain and async functions with ``@cached``, then reading the metrics.

python examples/cached_functions.py
"""

from __future__ import annotations

import asyncio
import time

from prometheus_client import CollectorRegistry, generate_latest

from toolkit import InMemoryCache, cached, observe

registry = CollectorRegistry()
cache = observe(InMemoryCache(), registry=registry)
calls: list[str] = []


@cached("pricing", ttl=60, cache=cache)
def price(sku: str, quantity: int = 1) -> float:
    """A slow lookup: runs once per distinct (sku, quantity)."""
    calls.append(sku)
    time.sleep(0.05)
    return 9.99 * quantity


@cached("profiles", ttl=300, cache=cache)
async def profile(user_id: int) -> dict[str, object]:
    """An async fetch: cached the same way, awaited the same way."""
    calls.append(f"user {user_id}")
    await asyncio.sleep(0.05)
    return {"id": user_id, "name": f"user-{user_id}"}


def main() -> None:
    assert price("A-1") == price("A-1") == price(sku="A-1")  # one call: same key
    price("A-1", quantity=2)  # a different key
    first = asyncio.run(profile(7))
    assert asyncio.run(profile(7)) == first
    print("function bodies ran for:", calls)
    text = generate_latest(registry).decode()
    for line in text.splitlines():
        if line.startswith(("cache_gets_total", "cache_load_duration_seconds_count")):
            print(line)


if __name__ == "__main__":
    main()
