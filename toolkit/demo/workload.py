"""The demo's workload: decorated functions and a LangGraph graph over three observed caches.

The main cache is the chosen backend (SQLite by default). A tiny bounded in-memory cache
evicts by size and by short ttl, and a deliberately flaky cache (``FlakyCache``) behind the
default fail-open stack feeds the error and circuit-breaker panels.
"""

from __future__ import annotations

import asyncio
import random
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypedDict

from opentelemetry.trace import TracerProvider
from prometheus_client import CollectorRegistry

from toolkit.backends.memory import InMemoryCache
from toolkit.decorators import cached
from toolkit.decorators.tags import ainvalidate_tags
from toolkit.demo.faults import FlakyCache
from toolkit.demo.fleet import breaking_question, model_answer, until_next_tick
from toolkit.middleware import observe

__all__ = ["CallStats", "DemoCaches", "Workload", "build_caches"]

TOPICS = (
    "vector databases", "prompt caching", "retry budgets", "token limits", "rate limiting",
    "embeddings", "tool calling", "streaming", "graph checkpoints", "evaluation", "guardrails",
    "latency budgets", "cost tracking", "fine-tuning", "context windows", "observability",
)  # fmt: skip
QUESTIONS = tuple(f"{verb} {topic}?" for topic in TOPICS for verb in ("What is", "Why use"))
CITIES = ("Lisbon", "Oslo", "Nairobi", "Lima", "Osaka", "Austin", "Tbilisi", "Perth")
FRESH_SHARE = 0.15
"""Share of requests with an input never seen before: the misses a real workload always has."""
UPSTREAM_FAILURE_SHARE = 0.02
"""Share of model calls that fail (not cached, counted as load errors)."""


class UpstreamError(RuntimeError):
    """A simulated failure of the slow service behind a cached function."""


@dataclass
class DemoCaches:
    """The observed caches the workload uses, and the bare backends to close at the end."""

    main: Any
    small: Any
    flaky: Any
    main_label: str
    bare: list[Any] = field(default_factory=list)

    def close(self) -> None:
        """Close every backend that can be closed."""
        for backend in self.bare:
            close = getattr(backend, "close", None)
            if callable(close):
                close()


def build_caches(
    main_backend: Any,
    *,
    registry: CollectorRegistry,
    tracer_provider: TracerProvider | None,
) -> DemoCaches:
    """Wrap the main backend, a 24-entry memory cache and a flaky cache in the default stack."""
    small: InMemoryCache[Any] = InMemoryCache(max_entries=24)
    flaky = FlakyCache()

    def observed(backend: Any, **options: Any) -> Any:
        return observe(backend, registry=registry, tracer_provider=tracer_provider, **options)

    return DemoCaches(
        main=observed(main_backend),
        small=observed(small),
        # A low threshold and a short reset make the breaker visibly open and close in a demo.
        flaky=observed(flaky, failure_threshold=3, reset_timeout=1.0),
        main_label=str(getattr(main_backend, "backend_name", type(main_backend).__name__)),
        bare=[main_backend, small, flaky],
    )


class CallStats:
    """Latency of the workload's calls per cache label, as the caller sees it (hits and misses)."""

    def __init__(self, keep: int = 5000) -> None:
        self._lock = threading.Lock()
        self._keep = keep
        self._latencies: dict[str, deque[float]] = {}
        self.failures: dict[str, int] = {}
        self.surprises: dict[str, str] = {}
        self.calls = 0
        self.deliberate_failures = 0
        """Calls that failed on purpose (the simulated model failures)."""
        self.unexpected_calls = 0
        """Calls that raised anything else: zero in a healthy run."""

    def record(
        self, label: str, seconds: float, *, failed: bool = False, deliberate: bool = False
    ) -> None:
        """Record one call of ``label`` that took ``seconds`` (and failed, on purpose or not)."""
        with self._lock:
            self.calls += 1
            self._latencies.setdefault(label, deque(maxlen=self._keep)).append(seconds)
            if failed:
                self.failures[label] = self.failures.get(label, 0) + 1
                self.deliberate_failures += deliberate

    def unexpected(self, label: str, exc: BaseException) -> None:
        """Count an unexpected exception; remember the first of each kind per label."""
        with self._lock:
            self.unexpected_calls += 1
            self.surprises.setdefault(f"{label}: {type(exc).__name__}", str(exc)[:200])

    def percentiles(self, label: str) -> tuple[float, float] | None:
        """``(p50, p95)`` of the recent calls of ``label``, or ``None`` before the first call."""
        with self._lock:
            samples = sorted(self._latencies.get(label, ()))
        if not samples:
            return None
        return samples[len(samples) // 2], samples[min(len(samples) - 1, int(len(samples) * 0.95))]

    def labels(self) -> list[str]:
        """Every label seen so far."""
        with self._lock:
            return list(self._latencies)


class _State(TypedDict, total=False):
    prompt: str
    draft: str
    answer: str


class Workload:
    """Threads and an event loop calling cached functions until ``stop`` is set."""

    def __init__(
        self,
        caches: DemoCaches,
        stats: CallStats,
        *,
        workers: int = 3,
        seed: int | None = None,
        tracer_provider: TracerProvider | None = None,
    ) -> None:
        self.caches = caches
        self.stats = stats
        self.workers = workers
        self.stop = threading.Event()
        self._rng = random.Random(seed)
        self._fresh = 0
        self._fresh_lock = threading.Lock()
        self._threads: list[threading.Thread] = []
        self._build_functions(tracer_provider)
        self.graph = self._build_graph()

    # -- inputs --

    def _fresh_id(self) -> int:
        with self._fresh_lock:
            self._fresh += 1
            return self._fresh

    def _question(self) -> str:
        if self._rng.random() < FRESH_SHARE:
            return f"Tell me something new #{self._fresh_id()}"
        # Popular questions are asked far more often, as in real traffic (Zipf-like).
        return QUESTIONS[self._popular(len(QUESTIONS))]

    def _popular(self, count: int) -> int:
        return self._rng.choices(range(count), weights=[1 / (i + 1) for i in range(count)])[0]

    def _pause(self, low: float, high: float) -> None:
        self.stop.wait(self._rng.uniform(low, high))

    # -- the cached functions --

    def _build_functions(self, tp: TracerProvider | None) -> None:
        # The functions capture this workload's random generator, which has no key
        # encoding: key_id names each one (one workload per process).
        main, small, flaky = self.caches.main, self.caches.small, self.caches.flaky
        rng = self._rng

        @cached("llm", ttl=600, cache=main, tracer_provider=tp, key_id="answer", lock=True)
        def answer(question: str) -> str:
            """A slow model call, computed once in the whole fleet (see ``fleet``)."""
            time.sleep(rng.uniform(0.04, 0.12))
            if rng.random() < UPSTREAM_FAILURE_SHARE:
                raise UpstreamError("demo: simulated model timeout")
            return model_answer(question)

        @cached("embeddings", cache=main, tracer_provider=tp, key_id="embed")
        def embed(text: str) -> list[float]:
            """A cheaper embedding call; embeddings never go stale."""
            time.sleep(rng.uniform(0.005, 0.015))
            return [float(ord(ch) % 7) for ch in text[:8]]

        @cached(
            "weather",
            ttl=2,
            stale_ttl=30,
            beta=8.0,
            cache=main,
            tracer_provider=tp,
            key_id="weather",
        )
        def weather(city: str) -> dict[str, Any]:
            """A lookup fresh for two seconds: refreshed early or served stale meanwhile."""
            time.sleep(rng.uniform(0.01, 0.03))
            return {"city": city, "celsius": rng.randint(-5, 35)}

        @cached(
            "profiles",
            ttl=30,
            cache=main,
            tracer_provider=tp,
            key_id="profile",
            tags=lambda user_id: f"user:{user_id}",
        )
        async def profile(user_id: int) -> dict[str, Any]:
            """An async fetch of a user profile, forgotten when the user changes (a tag)."""
            await asyncio.sleep(rng.uniform(0.01, 0.03))
            return {"id": user_id, "name": f"user-{user_id}"}

        @cached("render", ttl=60, cache=small, tracer_provider=tp, key_id="render")
        def render(page: int) -> str:
            """Renders pages into a cache too small for them all: size evictions."""
            time.sleep(rng.uniform(0.002, 0.006))
            return f"<html>page {page}</html>"

        @cached("sessions", ttl=1, cache=small, tracer_provider=tp, key_id="session")
        def session(user: str) -> str:
            """Short-lived session tokens: expiry evictions."""
            time.sleep(0.002)
            return f"token-{user}-{rng.randint(0, 1 << 30)}"

        @cached("recommendations", ttl=120, cache=flaky, tracer_provider=tp, key_id="recommend")
        def recommend(user_id: int) -> list[int]:
            """Recommendations cached on the deliberately flaky cache."""
            time.sleep(rng.uniform(0.01, 0.03))
            return [user_id * 7 % 100, user_id * 13 % 100]

        self.answer, self.embed, self.weather, self.profile = answer, embed, weather, profile
        self.render, self.session, self.recommend = render, session, recommend

    def _build_graph(self) -> Any:
        try:
            from langgraph.graph import END, START, StateGraph
            from langgraph.types import CachePolicy
        except ImportError:
            return None
        rng = self._rng

        def model(state: _State) -> dict[str, Any]:
            time.sleep(rng.uniform(0.06, 0.15))  # the slow "model call"
            return {"draft": f"draft for {state['prompt']}"}

        def polish(state: _State) -> dict[str, Any]:
            return {"answer": state["draft"].capitalize()}

        builder = StateGraph(_State)
        builder.add_node("model", model, cache_policy=CachePolicy(ttl=300))
        builder.add_node("polish", polish, cache_policy=CachePolicy(ttl=300))
        builder.add_edge(START, "model")
        builder.add_edge("model", "polish")
        builder.add_edge("polish", END)
        return builder.compile(cache=self.caches.main)

    # -- running --

    def _timed(self, label: str, call: Callable[[], Any]) -> None:
        start = time.perf_counter()
        try:
            call()
        except Exception as exc:  # keep the demo running; the summary reports it
            self._failed(label, start, exc)
        else:
            self.stats.record(label, time.perf_counter() - start)

    def _failed(self, label: str, start: float, exc: Exception) -> None:
        deliberate = isinstance(exc, UpstreamError)
        self.stats.record(label, time.perf_counter() - start, failed=True, deliberate=deliberate)
        if not deliberate:
            self.stats.unexpected(label, exc)

    def _tasks(self) -> list[tuple[int, str, Callable[[], Any]]]:
        rng = self._rng
        tasks: list[tuple[int, str, Callable[[], Any]]] = [
            (30, "llm", lambda: self.answer(self._question())),
            (20, "embeddings", lambda: self.embed(rng.choice(QUESTIONS))),
            (10, "weather", lambda: self.weather(rng.choice(CITIES))),
            (15, "render", lambda: self.render(self._popular(60))),
            (8, "sessions", lambda: self.session(f"u{rng.randrange(6)}")),
            (10, "recommendations", lambda: self.recommend(rng.randrange(20))),
        ]
        if self.graph is not None:
            graph = self.graph
            tasks.append((7, "graph", lambda: graph.invoke({"prompt": self._question()})))
        return tasks

    def _worker(self) -> None:
        tasks = self._tasks()
        weights = [weight for weight, _, _ in tasks]
        while not self.stop.is_set():
            _, label, call = self._rng.choices(tasks, weights=weights)[0]
            self._timed(label, call)
            self._pause(0.002, 0.02)

    def _burst(self) -> None:
        """Each tick four callers miss on the same fresh key at once: one loads, three wait
        (and the peer processes of the fleet ask it too: one process loads)."""
        # The same jitter as the peers': which process takes the lease varies by tick.
        while not self.stop.wait(until_next_tick() + self._rng.uniform(0.0, 0.02)):
            question = breaking_question()
            gate = threading.Barrier(4)

            def caller(question: str = question, gate: threading.Barrier = gate) -> None:
                try:
                    gate.wait(timeout=2)
                except threading.BrokenBarrierError:
                    return
                self._timed("llm", lambda: self.answer(question))

            callers = [threading.Thread(target=caller, daemon=True) for _ in range(4)]
            for thread in callers:
                thread.start()
            for thread in callers:
                thread.join()

    def _async_worker(self) -> None:
        async def fetch() -> None:
            while not self.stop.is_set():
                start = time.perf_counter()
                try:
                    await self.profile(self._rng.randrange(40))
                except Exception as exc:  # keep fetching; the summary reports it
                    self._failed("profiles", start, exc)
                else:
                    self.stats.record("profiles", time.perf_counter() - start)
                await asyncio.sleep(self._rng.uniform(0.02, 0.08))

        async def edit_profiles() -> None:
            # A user edits their profile about once a second: its cached entries go.
            main_cache = self.caches.main
            while not self.stop.is_set():
                await asyncio.sleep(self._rng.uniform(0.5, 1.5))
                try:
                    await ainvalidate_tags(f"user:{self._rng.randrange(40)}", cache=main_cache)
                except Exception as exc:  # keep editing; the summary reports it
                    self.stats.unexpected("profiles", exc)

        async def main() -> None:
            await asyncio.gather(*(fetch() for _ in range(3)), edit_profiles())

        asyncio.run(main())

    def start(self) -> None:
        """Start the workers, the coalescing bursts and the async fetchers."""
        targets = [self._worker] * self.workers + [self._burst, self._async_worker]
        for number, target in enumerate(targets):
            thread = threading.Thread(target=target, name=f"demo-{number}", daemon=True)
            thread.start()
            self._threads.append(thread)

    def join(self, timeout: float = 10.0) -> list[str]:
        """Stop every thread, waiting ``timeout`` s in all; returns the names still running."""
        self.stop.set()
        deadline = time.monotonic() + timeout
        for thread in self._threads:
            thread.join(max(0.0, deadline - time.monotonic()))
        return [thread.name for thread in self._threads if thread.is_alive()]
