"""parse_ttl: the ttl forms people write, and clear errors for the rest."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest

from toolkit import InMemoryCache, cached, parse_ttl
from toolkit.base import MAX_TTL


@pytest.mark.parametrize(
    ("value", "seconds"),
    [
        (None, None),
        (90, 90.0),
        (0.25, 0.25),
        (timedelta(minutes=15), 900.0),
        ("90", 90.0),
        ("90s", 90.0),
        ("15m", 900.0),
        ("1h", 3600.0),
        ("1d", 86_400.0),
        ("1h30m", 5400.0),
        (" 1d 2h 3m 4s ", 93_784.0),
        ("1.5h", 5400.0),
        ("2H", 7200.0),
    ],
)
def test_accepted_forms(value: float | timedelta | str | None, seconds: float | None) -> None:
    assert parse_ttl(value) == seconds


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("", "unreadable ttl ''"),
        ("soon", "unreadable ttl 'soon'"),
        ("10 minutes", "unreadable ttl"),
        ("1x", "unreadable ttl"),
        ("30m1h", "largest first"),
        ("1h1h", "each unit once"),
        ("0s", "positive"),
        ("-5", "positive"),
        (0, "positive"),
        (-1.0, "positive"),
        (timedelta(0), "positive"),
        (float("nan"), "finite"),
        ("inf", "finite"),
        (10**400, "finite"),  # was an OverflowError from float()
    ],
)
def test_bad_values_say_what_is_accepted(value: object, message: str) -> None:
    with pytest.raises(ValueError, match=message) as caught:
        parse_ttl(value)  # type: ignore[arg-type]
    assert len(str(caught.value)) < 300  # names the value, shortened
    if "unreadable" in message:
        assert '"1h30m"' in str(caught.value)  # the error shows the accepted forms


@pytest.mark.parametrize("value", [True, b"1h", [60]])
def test_other_types_are_type_errors(value: object) -> None:
    with pytest.raises(TypeError, match="ttl must be"):
        parse_ttl(value)  # type: ignore[arg-type]


def test_a_stale_window_past_the_longest_ttl_is_refused_at_decoration() -> None:
    """The backend keeps an entry ttl + stale_ttl: past MAX_TTL, @cached was accepted and
    every call raised ValueError from the cache after computing its result."""
    with pytest.raises(ValueError, match="stale_ttl"):

        @cached("ttl-test", ttl="36000d", stale_ttl="1000d", cache=InMemoryCache())
        def f(x: int) -> int:
            return x


def test_the_longest_stale_window_still_caches() -> None:
    cache: InMemoryCache[Any] = InMemoryCache()
    runs: list[int] = []

    @cached("ttl-test", ttl=MAX_TTL / 2, stale_ttl=MAX_TTL / 2, cache=cache)
    def f(x: int) -> int:
        runs.append(x)
        return x

    assert f(1) == f(1) == 1
    assert runs == [1]
