"""Serializers. PLACEHOLDER: replaced by the safe serializer work (plain msgpack data only)."""

from __future__ import annotations

from typing import Any

import ormsgpack

from toolkit.errors import SerializationError


class SafeSerializer:
    """Data-only msgpack serializer."""

    def dumps_typed(self, obj: Any) -> tuple[str, bytes]:
        """Encode ``obj``."""
        try:
            return "msgpack", ormsgpack.packb(obj)
        except ormsgpack.MsgpackEncodeError as exc:
            raise TypeError(str(exc)) from exc

    def loads_typed(self, data: tuple[str, bytes]) -> Any:
        """Decode a pair made by ``dumps_typed``."""
        tag, payload = data
        if tag != "msgpack":
            raise SerializationError(f"unknown tag {tag!r}")
        try:
            return ormsgpack.unpackb(payload)
        except Exception as exc:
            raise SerializationError("undecodable payload") from exc


def register(cls: Any) -> Any:
    """PLACEHOLDER."""
    return cls
