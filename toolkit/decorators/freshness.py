"""Freshness of a stored result: logical expiry, stale-while-revalidate and early refresh.

With ``stale_ttl`` or ``early``, ``@cached`` stores an envelope instead of the bare result:
the result, its logical expiry (wall clock, shared by every process of the fleet) and the
time it took to compute (delta). The backend keeps the entry ``stale_ttl`` longer than
``ttl``, so a read after the logical expiry finds it stale: it is served at once while one
background refresh runs. ``early`` applies XFetch (Vattani, Chierichetti and Lowenstein,
"Optimal Probabilistic Cache Stampede Prevention", VLDB 2015): a fresh hit refreshes early
when ``now - delta * beta * ln(random()) >= expiry``, more likely the closer the expiry
and the longer the computation.
"""

from __future__ import annotations

import math
import random
import time
from typing import Any, Literal

__all__ = ["EARLY", "FRESH", "MISS", "STALE", "Freshness", "Verdict"]

Verdict = Literal["fresh", "early", "stale", "miss"]
FRESH: Verdict = "fresh"
EARLY: Verdict = "early"
"""Fresh, and chosen for an early refresh: serve it and refresh in the background."""
STALE: Verdict = "stale"
"""Past its expiry, within the stale window: serve it and refresh in the background."""
MISS: Verdict = "miss"

ENVELOPE = "\x00toolkit:fresh:v1\x00"
"""The first item of a stored envelope; no function's own result starts with it."""


_now, _log, _random = time.time, math.log, random.random
_MAX_DRAW = 37.0
"""Above -log(1 - u) for every float u that random() returns (53 bits: at most ~36.7)."""


class Freshness:
    """The freshness options of one decorated function, and the envelope they store."""

    __slots__ = ("beta", "early", "stale_ttl", "store_ttl", "ttl")

    def __init__(self, ttl: float, stale_ttl: float | None, beta: float | None) -> None:
        self.ttl = ttl
        self.stale_ttl = stale_ttl or 0.0
        self.early = beta is not None
        self.beta = beta if beta is not None else 0.0
        self.store_ttl = ttl + self.stale_ttl
        """How long the backend keeps an entry: the stale window past the logical expiry."""

    def wrap(self, value: Any, delta: float, now: float | None = None) -> tuple[Any, ...]:
        """The envelope stored for ``value``, computed in ``delta`` seconds."""
        expiry = (time.time() if now is None else now) + self.ttl
        return (ENVELOPE, value, expiry, delta)

    def judge(self, stored: Any, now: float | None = None) -> tuple[Verdict, Any]:
        """What a read found: the verdict, and the result to serve (unless a miss).

        Anything that is not one of our envelopes (an entry written before the function
        gained these options) is a miss, so it is recomputed and rewritten as one.
        """
        kind = type(stored)  # a foreign serializer may hand a tuple back as a list
        if (kind is not tuple and kind is not list) or len(stored) != 4 or stored[0] != ENVELOPE:
            return MISS, None
        _, value, expiry, delta = stored
        if now is None:
            now = _now()
        if now >= expiry:
            return (STALE, value) if now < expiry + self.stale_ttl else (MISS, None)
        if self.early:
            window = delta * self.beta
            # -log(1 - random()) < _MAX_DRAW always: far from the expiry, skip the draw.
            if (
                now + window * _MAX_DRAW >= expiry
                and now - window * _log(1.0 - _random()) >= expiry
            ):
                return EARLY, value
        return FRESH, value
