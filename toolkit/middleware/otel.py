"""Whether a span could record right now, from OpenTelemetry's public API, cheap on a hot path.

``trace.get_tracer_provider()`` costs about 2 µs (it probes the environment while no SDK
is installed), more than a whole cache hit. So the answer is cached and refreshed at most
every ``REFRESH_SECONDS``: an SDK installed after the caches were built is seen within that
time. Once an SDK is seen the answer stays yes without looking again: OpenTelemetry lets
the global provider be set only once. A provider passed in explicitly never goes through here.
"""

from __future__ import annotations

import time

from opentelemetry import trace
from opentelemetry.trace import NoOpTracerProvider, ProxyTracerProvider

__all__ = ["REFRESH_SECONDS", "global_tracing_live", "refresh_global_tracing"]

REFRESH_SECONDS = 0.5
"""How long the answer of :func:`global_tracing_live` is reused."""

_NO_SDK = (ProxyTracerProvider, NoOpTracerProvider)
_clock = time.monotonic
# Module globals, not a dict or an object: each read is the cheapest lookup Python has,
# and this runs two or three times per cache call.
_live = False
_until = 0.0


def global_tracing_live() -> bool:
    """Whether the global tracer provider is a real SDK (its spans may record)."""
    if _live or _clock() < _until:
        return _live
    return _look()


def _look() -> bool:
    global _live, _until
    _live = not isinstance(trace.get_tracer_provider(), _NO_SDK)
    _until = _clock() + REFRESH_SECONDS
    return _live


def refresh_global_tracing() -> None:
    """Look at the global provider again now (call it right after installing an SDK).

    Spans follow at once; the metrics layer's exemplars within ``REFRESH_SECONDS`` (it
    reuses its own clock readings to ask again)."""
    global _until
    _until = 0.0
