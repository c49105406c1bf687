"""An opt-in pickle serializer for trusted storage only."""

from __future__ import annotations

import pickle
from typing import Any

from toolkit.errors import NotCacheableError, SerializationError

PICKLE_TAG = "pickle"


class PickleSerializer:
    """UNSAFE: pickle; loading stored bytes runs arbitrary code. Only for fully trusted storage.

    Anyone who can write to the cache's storage (a shared Redis, a SQLite file) can
    make ``loads_typed`` execute code of their choosing. It exists for values the
    safe default cannot represent; construct it with
    ``PickleSerializer(i_understand_this_executes_code=True)`` to acknowledge that.
    """

    def __init__(self, *, i_understand_this_executes_code: bool = False) -> None:
        if i_understand_this_executes_code is not True:
            raise ValueError(
                "PickleSerializer executes code from stored bytes when loading; "
                "pass i_understand_this_executes_code=True only if the storage is fully trusted, "
                "or keep the default SafeSerializer and register your classes with "
                "toolkit.serde.register"
            )

    def dumps_typed(self, obj: Any) -> tuple[str, bytes]:
        """Pickle ``obj`` (highest protocol); an unpicklable value is ``NotCacheableError``."""
        try:
            return PICKLE_TAG, pickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL)
        except (pickle.PicklingError, TypeError, AttributeError, RecursionError) as exc:
            raise NotCacheableError(f"cannot pickle a {type(obj).__qualname__}: {exc}") from exc

    def loads_typed(self, data: tuple[str, bytes]) -> Any:
        """Unpickle a pair made by ``dumps_typed`` (this runs code named by the bytes)."""
        try:
            tag, payload = data
        except (TypeError, ValueError) as exc:
            raise SerializationError("expected a (tag, bytes) pair") from exc
        if tag != PICKLE_TAG:
            raise SerializationError(f"not a pickle payload: tag {tag!r}")
        try:
            return pickle.loads(payload)
        except Exception as exc:
            raise SerializationError("undecodable pickle payload") from exc
