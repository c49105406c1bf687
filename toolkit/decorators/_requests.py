"""The I/O a call step asks for: what ``_steps`` yields and the runners of ``_run`` do.

A step is a generator: it yields one of these requests, and the runner sends back the
result (or throws the exception) of doing it with blocking calls or by awaiting.
"""

from __future__ import annotations

from collections.abc import Callable, Generator
from dataclasses import dataclass
from typing import Any, TypeVar

from toolkit._types import FullKey
from toolkit.decorators._entry import Pairs
from toolkit.decorators.flight import Flight, Load
from toolkit.lease import LeaseRequest

T = TypeVar("T")


@dataclass(slots=True)
class Read:
    """Get ``keys`` from the cache; the result is what ``get`` returns."""

    keys: list[FullKey]


@dataclass(slots=True)
class Write:
    """Set ``pairs`` in the cache (the result of ``load``, if given)."""

    pairs: Pairs
    load: Load | None = None


@dataclass(slots=True)
class Compute:
    """Run the decorated function (awaiting a coroutine function's result); its value."""

    func: Callable[..., Any]
    args: tuple[Any, ...]
    kwargs: dict[str, Any]


@dataclass(slots=True)
class Ask:
    """Send a lease request to the cache; ``True``/``False``, or ``None`` with no answer."""

    lease: LeaseRequest


@dataclass(slots=True)
class Release:
    """Give a lease back, even while the caller is being cancelled."""

    lease: LeaseRequest


@dataclass(slots=True)
class Renew:
    """Renew ``lease`` every ``every`` seconds meanwhile; the result stops the renewals."""

    lease: LeaseRequest
    every: float


@dataclass(slots=True)
class Sleep:
    """Pause for ``seconds``."""

    seconds: float


@dataclass(slots=True)
class Join:
    """Join the flight of ``key`` in this thread or on this loop: ``(flight, leads)``; a
    flight begun here carries the version keys of the call's ``tags``."""

    key: FullKey
    tags: tuple[FullKey, ...] = ()


@dataclass(slots=True)
class Await:
    """Wait until ``flight`` lands."""

    flight: Flight


@dataclass(slots=True)
class Settle:
    """Wait until ``loads`` (older computations whose write is on its way) have ended."""

    loads: list[Load]


@dataclass(slots=True)
class Background:
    """Run ``steps`` in the background, off the caller's path (a claimed refresh of ``key``)."""

    key: FullKey
    steps: Step[None]


Request = (
    Read | Write | Compute | Ask | Release | Renew | Sleep | Join | Await | Settle | Background
)
"""Every request a step may yield."""

Step = Generator[Request, Any, T]
"""A step of a call: a generator of requests that returns a ``T``."""
