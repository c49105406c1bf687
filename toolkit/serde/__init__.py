"""Serializers for cached values: the safe default and an explicitly unsafe pickle.

``SafeSerializer`` stores data only (msgpack with type tags) and revives classes solely
from an allow-list; add yours with ``register``::

    from toolkit import serde

    @serde.register
    @dataclasses.dataclass
    class Point:
        x: int
        y: int
"""

from __future__ import annotations

from toolkit.serde._allow import register
from toolkit.serde._pickle import PickleSerializer
from toolkit.serde._safe import SafeSerializer

__all__ = ["PickleSerializer", "SafeSerializer", "register"]
