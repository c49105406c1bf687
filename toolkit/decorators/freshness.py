"""Freshness of a stored result: logical expiry, stale-while-revalidate and early refresh.

With ``stale_ttl`` or ``early``, ``@cached`` stores an envelope instead of the bare result:
``(result, logical expiry, delta)``, the expiry on the wall clock every process of the
fleet shares and delta the time the result took to compute. Such a function's keys end in
``ENVELOPE_KEY_SUFFIX``, so an envelope and a bare result (stored before the function had
these options) never share a key, and a plain tuple is all an envelope needs to be: one
of immutable scalars is kept as itself by ``InMemoryCache``, like the bare result would be.
A serializer that reads tuples back as lists is fine too.

The backend keeps the entry ``stale_ttl`` longer than ``ttl``, so a read after the logical
expiry finds it stale: it is served at once while one background refresh runs. ``early``
applies XFetch (Vattani, Chierichetti and Lowenstein, "Optimal Probabilistic Cache
Stampede Prevention", VLDB 2015): a fresh hit refreshes early when
``now - delta * beta * ln(random()) >= expiry``, more likely the closer the expiry and the
longer the computation.
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

ENVELOPE_KEY_SUFFIX = "~fresh2"
"""Ends the keys of functions that store envelopes (a new stored form gets a new suffix)."""


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

    def wrap(self, value: Any, delta: float, now: float | None = None) -> tuple[Any, float, float]:
        """The envelope stored for ``value``, computed in ``delta`` seconds."""
        expiry = (_now() if now is None else now) + self.ttl
        return (value, expiry, delta)

    def judge(self, stored: Any, now: float | None = None) -> tuple[Verdict, Any]:
        """What a read found: the verdict, and the result to serve (unless a miss).

        Anything that is not an envelope (absent, a tombstone) is a miss.
        """
        # _is_envelope, inlined: this runs on every hit.
        if (type(stored) is not tuple and type(stored) is not list) or len(stored) != 3:
            return MISS, None
        value, expiry, delta = stored
        if now is None:
            now = _now()
        if now < expiry:
            if not self.early:
                return FRESH, value
            window = delta * self.beta
            # -log(1 - random()) < _MAX_DRAW always: far from the expiry, skip the draw.
            if now + window * _MAX_DRAW < expiry or now - window * _log(1.0 - _random()) < expiry:
                return FRESH, value
            return EARLY, value
        return (STALE, value) if now < expiry + self.stale_ttl else (MISS, None)

    @staticmethod
    def newer(stored: Any, than: Any) -> bool:
        """Whether ``stored`` is an envelope written after the envelope ``than`` (its logical
        expiry is later: every envelope of one function has the same ttl)."""
        return _is_envelope(stored) and (not _is_envelope(than) or stored[1] > than[1])


def _is_envelope(stored: Any) -> bool:
    return (type(stored) is tuple or type(stored) is list) and len(stored) == 3
