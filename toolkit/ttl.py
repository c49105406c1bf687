"""Time-to-live values in the forms people write: seconds, ``timedelta`` or ``"1h30m"``."""

from __future__ import annotations

import math
import re
import reprlib
from datetime import timedelta

__all__ = ["parse_ttl"]

_UNIT_SECONDS = {"d": 86_400.0, "h": 3_600.0, "m": 60.0, "s": 1.0}
_PART = re.compile(r"\s*(\d+(?:\.\d*)?|\.\d+)\s*([dhms])")
_FORMS = 'seconds (90 or "90"), a timedelta, or a duration string like "90s", "15m", "1h30m", "1d"'


def parse_ttl(value: float | timedelta | str | None) -> float | None:
    """Seconds of a ttl given as seconds, a ``timedelta`` or ``"90s"/"15m"/"1h30m"/"1d"``.

    ``None`` (never expires) stays ``None``; zero, negative, NaN or infinite durations and
    unreadable strings raise ``ValueError``; other types raise ``TypeError``.
    """
    if value is None:
        return None
    if isinstance(value, bool):
        raise TypeError(f"ttl must be {_FORMS}; got a bool")
    if isinstance(value, timedelta):
        seconds = value.total_seconds()
    elif isinstance(value, (int, float)):
        try:
            seconds = float(value)
        except OverflowError:  # an int past any float: as infinite as it gets
            seconds = math.inf
    elif isinstance(value, str):
        seconds = _parse_text(value)
    else:
        raise TypeError(f"ttl must be {_FORMS}; got {type(value).__name__}")
    if not math.isfinite(seconds) or seconds <= 0:
        raise ValueError(f"ttl must be a positive, finite duration, got {reprlib.repr(value)}")
    return seconds


def _parse_text(text: str) -> float:
    stripped = text.strip().lower()
    try:
        return float(stripped)  # a bare number is seconds, as on the command line
    except ValueError:
        pass
    seconds = 0.0
    seen: list[str] = []
    position = 0
    while position < len(stripped):
        match = _PART.match(stripped, position)
        if match is None:
            raise ValueError(f"unreadable ttl {text!r}: expected {_FORMS}")
        number, unit = match.groups()
        if seen and "dhms".index(unit) <= "dhms".index(seen[-1]):
            raise ValueError(
                f"unreadable ttl {text!r}: give each unit once, largest first (like 1d2h30m15s)"
            )
        seen.append(unit)
        seconds += float(number) * _UNIT_SECONDS[unit]
        position = match.end()
    if not seen:
        raise ValueError(f"unreadable ttl {text!r}: expected {_FORMS}")
    return seconds
