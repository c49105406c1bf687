"""The demo's fleet: peer worker processes that share the main cache with the demo process.

Every ``PERIOD`` seconds a new "breaking news" question appears, named by the wall-clock
tick, so the demo and each peer ask it at the same moment without talking to each other.
``answer`` is ``@cached(lock=True)``: one process of the fleet takes the lease and calls
the model, the others wait for its value (``cache_leases_total``, lease wait latency).
Peers count into registries of their own (not scraped); the demo process's metrics show
its side of the contention.
"""

from __future__ import annotations

import multiprocessing
import random
import time
from dataclasses import dataclass
from multiprocessing.process import BaseProcess
from multiprocessing.synchronize import Event
from typing import Any

from prometheus_client import CollectorRegistry

__all__ = ["PERIOD", "Fleet", "PeerSpec", "breaking_question", "model_answer", "until_next_tick"]

PERIOD = 1.5
"""Seconds between two breaking-news questions."""


def breaking_question(now: float | None = None) -> str:
    """The breaking-news question of the current tick (the same in every process)."""
    tick = int((time.time() if now is None else now) // PERIOD)
    return f"Breaking news #{tick}"


def until_next_tick(now: float | None = None) -> float:
    """Seconds until the next tick begins."""
    now = time.time() if now is None else now
    return PERIOD - now % PERIOD


def model_answer(question: str) -> str:
    """What the simulated model answers (the same text in every process)."""
    return f"An answer about {question.lower()}"


@dataclass(frozen=True)
class PeerSpec:
    """How a peer opens the shared main cache: a SQLite file or a Redis URL and prefix."""

    sqlite_path: str | None = None
    redis_url: str | None = None
    redis_prefix: str = ""


def _open(spec: PeerSpec) -> Any:
    if spec.redis_url is not None:
        from toolkit.backends.redis import RedisCache

        return RedisCache.from_url(spec.redis_url, prefix=spec.redis_prefix)
    from toolkit.backends.sqlite import SqliteCache

    assert spec.sqlite_path is not None
    return SqliteCache(path=spec.sqlite_path)


def peer_main(spec: PeerSpec, stop: Event) -> None:
    """A peer process: ask each breaking-news question as it appears, until ``stop``."""
    from toolkit.decorators import cached
    from toolkit.middleware import observe

    backend = _open(spec)
    main = observe(backend, registry=CollectorRegistry())
    rng = random.Random()

    @cached("llm", ttl=600, cache=main, lock=True, key_id="answer")
    def answer(question: str) -> str:
        time.sleep(rng.uniform(0.04, 0.12))
        return model_answer(question)

    # A demo killed outright (SIGKILL) never sets ``stop``: a peer also ends with it.
    parent = multiprocessing.parent_process()
    try:
        # A little jitter, so that which process takes the lease varies from tick to tick.
        while not stop.wait(until_next_tick() + rng.uniform(0.0, 0.02)):
            if parent is not None and not parent.is_alive():
                break
            answer(breaking_question())
    finally:
        close = getattr(backend, "close", None)
        if callable(close):
            close()


class Fleet:
    """The peer processes of one demo run."""

    def __init__(self, spec: PeerSpec | None, peers: int) -> None:
        """``peers`` processes opening the cache ``spec`` describes (none if ``spec`` is None)."""
        context = multiprocessing.get_context("spawn")  # no inherited threads or connections
        self._stop = context.Event()
        self._processes: list[BaseProcess] = [
            context.Process(
                target=peer_main, args=(spec, self._stop), name=f"demo-peer-{n}", daemon=True
            )
            for n in range(peers if spec is not None else 0)
        ]

    def __len__(self) -> int:
        return len(self._processes)

    def start(self) -> None:
        """Start every peer."""
        for process in self._processes:
            process.start()

    def stop(self, timeout: float = 5.0) -> None:
        """Ask every peer to stop; terminate those still running after ``timeout`` s."""
        self._stop.set()
        deadline = time.monotonic() + timeout
        for process in self._processes:
            if process.pid is None:
                continue
            process.join(max(0.0, deadline - time.monotonic()))
            if process.is_alive():
                process.terminate()
                process.join(1.0)
