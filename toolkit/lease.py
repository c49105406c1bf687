"""Leases: short, token-owned claims on one key, stored beside the key's value.

A lease makes one caller in the whole fleet the one that computes a missing value
(``@cached(lock=True)``) or refreshes a stale one. It is taken only if nobody holds it (or
the holder's lease lapsed), extended while its holder works, and released only by the
token that took it (compare-and-delete), so a slow holder whose lease lapsed cannot
release its successor's. A backend offers leases by implementing ``lease``/``alease``
(:class:`SupportsLease`); the middleware stack forwards them, failing open to ``None``.
"""

from __future__ import annotations

import math
import secrets
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal, Protocol, runtime_checkable

from toolkit._fork import start_afresh_in_children
from toolkit._types import FullKey
from toolkit.base import check_key

__all__ = [
    "MAX_LEASE_SECONDS",
    "LeaseAction",
    "LeaseRequest",
    "LeaseTable",
    "SupportsLease",
    "check_lease",
    "new_token",
]

LeaseAction = Literal["acquire", "renew", "release"]
_ACTIONS = ("acquire", "renew", "release")

MAX_LEASE_SECONDS = 86_400.0
"""The longest a lease may be taken or extended for in one request (one day)."""


@dataclass(frozen=True, slots=True)
class LeaseRequest:
    """One lease operation on ``key`` for ``token``: take it, extend it, or give it back.

    ``ttl`` is how long (seconds from now) the lease lives after an ``acquire`` or
    ``renew``; a ``release`` ignores it.
    """

    action: LeaseAction
    key: FullKey
    token: str
    ttl: float = 0.0


@runtime_checkable
class SupportsLease(Protocol):
    """A cache that stores leases beside its entries."""

    def lease(self, request: LeaseRequest) -> bool:
        """Apply ``request``; whether ``request.token`` holds (acquire, renew) or held
        (release) the lease."""
        ...

    async def alease(self, request: LeaseRequest) -> bool:
        """Async twin of :meth:`lease`."""
        ...


def new_token() -> str:
    """A fresh random lease token (128 bits, hex)."""
    return secrets.token_hex(16)


def check_lease(request: object) -> LeaseRequest:
    """Return ``request`` if it is a well-formed :class:`LeaseRequest`, else raise."""
    if not isinstance(request, LeaseRequest):
        raise TypeError(f"a lease operation takes a LeaseRequest, got {type(request).__name__}")
    if request.action not in _ACTIONS:
        raise ValueError(f"lease action must be one of {_ACTIONS}, got {request.action!r}")
    check_key(request.key)
    token = request.token
    if not isinstance(token, str) or not token or len(token) > 128 or not token.isprintable():
        raise ValueError("a lease token must be a printable str of 1-128 characters")
    if request.action != "release":
        ttl = request.ttl
        if isinstance(ttl, bool) or not isinstance(ttl, (int, float)):
            raise TypeError(f"lease ttl must be seconds, got {type(ttl).__name__}")
        if not (0 < ttl <= MAX_LEASE_SECONDS) or math.isnan(ttl):
            raise ValueError(f"lease ttl must be > 0 and <= {MAX_LEASE_SECONDS:g} s, got {ttl!r}")
    return request


class LeaseTable:
    """Leases held in this process: what an in-process cache stores beside its entries."""

    __slots__ = ("__weakref__", "_clock", "_held", "_lock")

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._reset()
        start_afresh_in_children(self, LeaseTable._reset)

    def _reset(self) -> None:
        # In a forked child the holders are the parent's threads: none will give a lease
        # back there, nor release a lock it held.
        self._lock = threading.Lock()
        self._held: dict[FullKey, tuple[str, float]] = {}  # key -> (token, expiry)

    def apply(self, request: LeaseRequest) -> bool:
        """Apply a checked request atomically (see :meth:`SupportsLease.lease`)."""
        key, token = request.key, request.token
        with self._lock:
            now = self._clock()
            held = self._held.get(key)
            live = held is not None and held[1] > now
            if request.action == "acquire":
                if live:
                    return False
                if len(self._held) >= 1024:
                    self._forget_lapsed(now)
                self._held[key] = (token, now + request.ttl)
                return True
            if not live or held is None or held[0] != token:
                return False
            if request.action == "renew":
                self._held[key] = (token, now + request.ttl)
            else:
                del self._held[key]
            return True

    def _forget_lapsed(self, now: float) -> None:
        for key in [k for k, (_, expiry) in self._held.items() if expiry <= now]:
            del self._held[key]
