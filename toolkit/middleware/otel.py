"""Whether a span could record right now, from OpenTelemetry's public API, cheap on a hot path.

``trace.get_tracer_provider()`` costs about 2 µs (it probes the environment while no SDK
is installed), more than a whole cache hit. So the answer is cached and refreshed at most
every ``REFRESH_SECONDS``: an SDK installed after the caches were built is seen within that
time. A provider passed in explicitly never goes through here.
"""

from __future__ import annotations

import time

from opentelemetry import trace
from opentelemetry.trace import NoOpTracerProvider, ProxyTracerProvider

__all__ = ["REFRESH_SECONDS", "global_tracing_live", "refresh_global_tracing"]

REFRESH_SECONDS = 0.5
"""How long the answer of :func:`global_tracing_live` is reused."""

_NO_SDK = (ProxyTracerProvider, NoOpTracerProvider)
_state = {"live": False, "until": 0.0}
_clock = time.monotonic


def global_tracing_live() -> bool:
    """Whether the global tracer provider is a real SDK (its spans may record)."""
    state = _state
    now = _clock()
    if now >= state["until"]:
        state["live"] = not isinstance(trace.get_tracer_provider(), _NO_SDK)
        state["until"] = now + REFRESH_SECONDS
    return bool(state["live"])


def refresh_global_tracing() -> None:
    """Look at the global provider again now (call it right after installing an SDK)."""
    _state["until"] = 0.0
