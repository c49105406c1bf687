"""How a namespace becomes a short, bounded ``cache`` label (never a key, never a value)."""

from __future__ import annotations

from collections.abc import Callable, Iterable

from toolkit._fork import ForkSafeLock
from toolkit._types import Namespace
from toolkit.base import check_namespace
from toolkit.middleware.base import logger

__all__ = [
    "ALL_CACHES",
    "INVALID",
    "MAX_LABEL_LENGTH",
    "OVERFLOW",
    "CacheLabeler",
    "default_cache_label",
]

LANGGRAPH_WRITES_NS = "__pregel_ns_writes"
MAX_LABEL_LENGTH = 64
OVERFLOW = "__overflow__"
INVALID = "__invalid__"
ALL_CACHES = "__all__"
"""The ``cache`` label of a whole-backend figure (``cache_entries``, ``clear()`` of everything)."""


def default_cache_label(namespace: Namespace) -> str:
    """LangGraph node namespaces become the node (or task) name; others join parts with ``.``."""
    if len(namespace) >= 2 and namespace[0] == LANGGRAPH_WRITES_NS:
        # (writes, identifier, node) for graph nodes; (writes, "module.qualname") for @task.
        name = namespace[2] if len(namespace) >= 3 else namespace[1].rpartition(".")[2]
    else:
        name = ".".join(namespace)
    if len(name) > MAX_LABEL_LENGTH:
        return name[: MAX_LABEL_LENGTH - 1] + "…"
    return name


class CacheLabeler:
    """Maps namespaces to labels with a user function, capped at ``max_values`` distinct labels."""

    def __init__(
        self, label: Callable[[Namespace], str] = default_cache_label, max_values: int = 100
    ) -> None:
        """Name namespaces with ``label``; past ``max_values`` distinct names, use ``OVERFLOW``."""
        if isinstance(max_values, bool) or not isinstance(max_values, int) or max_values < 1:
            raise ValueError(f"max_values must be a positive int, got {max_values!r}")
        self._label = label
        self._max_values = max_values
        self._seen: set[str] = set()
        self._memo: dict[Namespace, str] = {}
        self._lock = ForkSafeLock()

    def __call__(self, namespace: Namespace) -> str:
        """The label for ``namespace``; never raises (a failing function yields ``__invalid__``)."""
        label = self._memo.get(namespace)
        if label is not None:
            return label
        try:
            label = str(self._label(namespace))
        except Exception:
            # A malformed namespace is the caller's bug and validation reports it to them;
            # only a label function failing on a valid namespace deserves a warning.
            if _is_namespace(namespace):
                logger.warning("cache label function failed; using %r", INVALID, exc_info=True)
            label = INVALID
        with self._lock:
            if label not in self._seen:
                if len(self._seen) >= self._max_values:
                    label = OVERFLOW
                else:
                    self._seen.add(label)
            # The memo is bounded too: past its size, namespaces are labelled afresh each time.
            if len(self._memo) < 16 * self._max_values:
                self._memo[namespace] = label
        return label

    def labels_of(self, namespaces: Iterable[Namespace] | None) -> list[str]:
        """The distinct labels of ``namespaces`` in first-seen order; ``None`` means every cache."""
        if namespaces is None:
            return [ALL_CACHES]
        return list(dict.fromkeys(self(ns) for ns in namespaces))


def _is_namespace(namespace: object) -> bool:
    try:
        check_namespace(namespace)
    except (TypeError, ValueError):
        return False
    return True
