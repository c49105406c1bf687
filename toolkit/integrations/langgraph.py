"""LangGraph helpers: a stable ``key_func`` for ``CachePolicy`` and a ready-made policy.

LangGraph's default node key pickles the node input, so it changes with dict insertion
order, set iteration order (hash seed) and message ids. ``key_func`` uses the canonical
encoding of ``toolkit.keys`` instead (``encode_bytes``: msgpack at C speed for plain data,
the text encoding for everything else), and is faster than the default::

    from langgraph.types import CachePolicy
    from toolkit.integrations.langgraph import key_func

    builder.add_node("summarize", summarize, cache_policy=CachePolicy(key_func=key_func))
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from typing import Any

from toolkit._key_advice import advice
from toolkit.base import check_ttl
from toolkit.keys import UnsupportedKeyType, encode, encode_bytes
from toolkit.ttl import parse_ttl

__all__ = ["cache_policy", "key_func", "scoped_key_func"]


def key_func(*args: Any, **kwargs: Any) -> bytes:
    """Canonical bytes of a node's (or task's) input; LangGraph hashes them into the key."""
    try:
        if len(args) == 1 and not kwargs:  # a node's input
            return encode_bytes(args[0])
        # A task's arguments: the text form, marked as encode_bytes marks it, then "*", which
        # starts no text encoding.
        return b"\xc1*" + f"{encode(args)}{encode(kwargs)}".encode("utf-8", "surrogatepass")
    except UnsupportedKeyType as exc:
        raise TypeError(
            f"key_func cannot derive a cache key: the input contains a "
            f"{type(exc.obj).__module__}.{type(exc.obj).__qualname__}, which has no canonical "
            "encoding. "
            + advice(
                exc.obj,
                leave_out="a key_func of your own that skips it",
                custom_key="CachePolicy(key_func=...)",
            )
        ) from None


def scoped_key_func(scope: str) -> Callable[..., bytes]:
    """``key_func`` with ``scope`` in every key: nodes of two graphs that LangGraph files under
    one namespace (same node name, and a lambda or closure of one scope, a ``partial``, a
    callable instance or a Runnable) keep apart when their scopes differ."""
    if not isinstance(scope, str) or not scope:
        raise TypeError(f"scope must be a non-empty str, not {scope!r}")
    # "@" starts no text encoding and \xc1 no msgpack document, so a scoped key never meets
    # an unscoped one; the scope's encoding carries its length, so scopes never run together.
    mark = b"\xc1@" + encode(scope).encode("utf-8", "surrogatepass")

    def scoped(*args: Any, **kwargs: Any) -> bytes:
        return mark + key_func(*args, **kwargs)

    return scoped


def cache_policy(ttl: float | timedelta | str | None = None, *, scope: str | None = None) -> Any:
    """A LangGraph ``CachePolicy`` using ``key_func``.

    ``ttl``: seconds (``0``: the node always runs), a ``timedelta`` or ``"90s"``/``"15m"``/
    ``"1h"``/``"1d"``, as ``observe(default_ttl=...)`` takes it; ``None`` = forever. Checked
    here, so a bad one fails where the graph is built, not in a run after the node computed.

    ``scope``: a name (say, the graph's) mixed into every key. LangGraph files a node's
    entries under (node name, function's module and qualified name), or ``__dynamic__`` for
    a ``partial``, a callable instance or a Runnable: two graphs sharing a cache whose nodes
    coincide there serve each other's results for the same input unless their scopes differ.
    """
    from langgraph.types import CachePolicy

    number = isinstance(ttl, (int, float)) and not isinstance(ttl, bool)
    seconds = check_ttl(ttl if number else parse_ttl(ttl), "cache_policy(ttl=...)")
    # LangGraph types ttls as int seconds: whole ones stay ints; a fraction works with every
    # cache (theirs and ours), as it did before.
    checked: Any = int(seconds) if seconds is not None and seconds.is_integer() else seconds
    keys = key_func if scope is None else scoped_key_func(scope)
    return CachePolicy(key_func=keys, ttl=checked)
