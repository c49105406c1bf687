"""Whether a span could record right now, from OpenTelemetry's public API, as one attribute read.

``trace.get_tracer_provider()`` costs about 2 µs (it probes the environment while no SDK
is installed), more than a whole cache hit, and every cache call asks up to three times
(``@cached``, the tracing layer, the metrics layer's exemplars). So the answer lives in a
:class:`TracingSwitch`: a hot path reads ``switch.live``. The switch that follows the global
provider is kept current by a daemon thread that looks every ``REFRESH_SECONDS`` until it
sees an SDK; then the answer stays yes and the thread ends, as OpenTelemetry lets the
global provider be set only once. A provider passed in explicitly gets a constant switch.
The tracing layer leaves spans out of its calls altogether while its switch is off, and
recomposes them (``TracingSwitch.when_live``) when it turns on.

Whether the caller suppressed instrumentation (as OpenTelemetry's exporters do around their
own calls, and ``opentelemetry.instrumentation.utils.suppress_instrumentation()`` does) is
asked of that package's public ``is_instrumentation_enabled()``; the API package keeps the
context key to itself, so without the instrumentation package nothing counts as suppressed.
"""

from __future__ import annotations

import os
import threading
import time
import weakref
from collections.abc import Callable

from opentelemetry import trace
from opentelemetry.trace import NoOpTracerProvider, ProxyTracerProvider, TracerProvider

from toolkit.middleware.base import logger

try:
    from opentelemetry.instrumentation.utils import is_instrumentation_enabled
except ImportError:  # not installed, or older than 0.44b0: nothing can suppress instrumentation

    def is_instrumentation_enabled() -> bool:
        """Without opentelemetry-instrumentation, instrumentation is always enabled."""
        return True


__all__ = [
    "ALWAYS",
    "NEVER",
    "REFRESH_SECONDS",
    "TracingSwitch",
    "global_tracing",
    "global_tracing_live",
    "instrumentation_suppressed",
    "refresh_global_tracing",
    "tracing_switch",
]

REFRESH_SECONDS = 0.5
"""How often the global provider is looked at while it is not an SDK."""

_NO_SDK = (ProxyTracerProvider, NoOpTracerProvider)


class TracingSwitch:
    """Whether spans (and exemplars) may record: ``live``, read on every cache call. It
    only ever turns live (OpenTelemetry sets the global provider once), never back."""

    __slots__ = ("_lock", "_pruned", "_waiting", "live")

    def __init__(self, live: bool) -> None:
        self.live = live
        self._lock = threading.Lock()
        self._waiting: list[weakref.WeakMethod[Callable[[], object]]] = []
        self._pruned = 0  # how many waited after the last pruning of dead ones

    def __repr__(self) -> str:
        return f"TracingSwitch(live={self.live})"

    def when_live(self, callback: Callable[[], object]) -> None:
        """Call the bound method ``callback`` once this switch turns live (now, if it is).

        Held weakly: a middleware layer built while nothing could record leaves spans out
        of its calls altogether, and recomposes them through this when an SDK arrives.
        """
        with self._lock:
            if not self.live:
                if len(self._waiting) >= 2 * self._pruned + 64:
                    self._waiting = [ref for ref in self._waiting if ref() is not None]
                    self._pruned = len(self._waiting)
                self._waiting.append(weakref.WeakMethod(callback))
                return
            _call_quietly(callback)

    def turn_live(self) -> None:
        """Turn live and run the waiting callbacks, oldest first.

        Under the lock: a callback that subscribes meanwhile runs after them, so a layer
        recomposes only over layers below it that already did.
        """
        with self._lock:
            if self.live:
                return
            self.live = True
            waiting, self._waiting = self._waiting, []
            for ref in waiting:
                callback = ref()
                if callback is not None:
                    _call_quietly(callback)


def _call_quietly(callback: Callable[[], object]) -> None:
    try:
        callback()
    except Exception:  # a layer failing to recompose keeps its calls as they were
        logger.debug("recomposing after a tracing SDK appeared failed", exc_info=True)


ALWAYS = TracingSwitch(True)
"""An explicit provider that may record: a span is started on every call."""
NEVER = TracingSwitch(False)
"""An explicit ``NoOpTracerProvider``: nothing can ever record."""

_GLOBAL = TracingSwitch(False)
_watch_lock = threading.Lock()
_watcher: threading.Thread | None = None


def global_tracing() -> TracingSwitch:
    """The switch that follows the global provider; its watcher starts on first use."""
    if _watcher is None and not _GLOBAL.live:
        _start_watching()
    return _GLOBAL


def tracing_switch(provider: TracerProvider | None) -> TracingSwitch:
    """The switch of a component built with ``provider`` (``None``: the global one)."""
    if provider is None:
        return global_tracing()
    if not callable(getattr(provider, "get_tracer", None)):
        raise TypeError(
            "tracer_provider must be an OpenTelemetry TracerProvider (or None for the global "
            f"one), got {type(provider).__name__}"
        )
    return NEVER if isinstance(provider, NoOpTracerProvider) else ALWAYS


def global_tracing_live() -> bool:
    """Whether the global tracer provider is a real SDK (its spans may record)."""
    return global_tracing().live


def instrumentation_suppressed() -> bool:
    """Whether the current context asks for no spans (OpenTelemetry's suppression)."""
    return not is_instrumentation_enabled()


def refresh_global_tracing() -> None:
    """Look at the global provider now (call it right after installing an SDK, to be
    followed at once rather than within ``REFRESH_SECONDS``)."""
    _look()


def _look() -> bool:
    if not _GLOBAL.live:
        try:
            if not isinstance(trace.get_tracer_provider(), _NO_SDK):
                _GLOBAL.turn_live()
        except Exception:  # a broken provider named in the environment: no SDK yet
            logger.debug("looking up the global tracer provider failed", exc_info=True)
    return _GLOBAL.live


def _watch() -> None:
    while not _look():
        time.sleep(REFRESH_SECONDS)


def _start_watching() -> None:
    global _watcher
    with _watch_lock:
        if _watcher is None and not _look():
            _watcher = threading.Thread(target=_watch, name="toolkit-otel-watch", daemon=True)
            _watcher.start()


def _after_fork_in_child() -> None:
    # Only the forking thread survives a fork: the child needs a watcher of its own.
    global _watch_lock, _watcher
    _watch_lock = threading.Lock()
    _GLOBAL._lock = threading.Lock()  # the watcher may have held it while recomposing
    if _watcher is not None:
        _watcher = None
        _start_watching()


os.register_at_fork(after_in_child=_after_fork_in_child)
