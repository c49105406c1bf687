"""Fail-open: a broken, slow or dead backend degrades to misses instead of failing the caller."""

from __future__ import annotations

import asyncio
import contextvars
import queue
import threading
import time
import weakref
from collections.abc import Awaitable, Callable, Iterator
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout
from contextlib import contextmanager
from typing import Any, TypeVar

from toolkit._fork import ForkSafeLock, start_afresh_in_children
from toolkit._loops import is_gone
from toolkit._types import Namespace, ValueT
from toolkit.base import (
    check_keys,
    check_namespaces,
    is_refusal,
    key_sequence,
    validate_pairs,
    warn_uncacheable,
)
from toolkit.errors import (
    BackendError,
    CacheClosedError,
    CacheError,
    CacheTimeoutError,
    NotCacheableError,
)
from toolkit.lease import check_lease
from toolkit.middleware.base import (
    CIRCUIT_CLOSED,
    CIRCUIT_HALF_OPEN,
    CIRCUIT_OPEN,
    READ_ONCE,
    CacheMiddleware,
    backend_name,
    innermost,
    logger,
    read_once,
    reads_never_fail,
    runs_in_process,
)

__all__ = [
    "ADMITTED",
    "PROBE",
    "REFUSED",
    "CircuitBreaker",
    "CircuitOpenError",
    "DeadlineExceededError",
    "FailOpen",
    "failures_raise",
]

R = TypeVar("R")


class CircuitOpenError(BackendError):
    """The circuit breaker is open: the backend failed repeatedly and is not being called."""


class DeadlineExceededError(CacheTimeoutError):
    """The backend did not answer within ``FailOpen``'s per-operation deadline."""


def _is_caller_bug(exc: BaseException) -> bool:
    """Bad input (``TypeError``/``ValueError`` that is no ``CacheError``) is never swallowed."""
    return isinstance(exc, (TypeError, ValueError)) and not isinstance(exc, CacheError)


_RAISING: contextvars.ContextVar[bool] = contextvars.ContextVar("toolkit_failures_raise")


@contextmanager
def failures_raise() -> Iterator[None]:
    """Within the block, every ``FailOpen`` layer re-raises a failure as ``strict=True`` does.

    For a call whose loss must not pass unnoticed: ``@cached``'s ``invalidate`` and
    ``cache_clear`` use it, as a dropped delete would leave the forgotten result to be
    served once the backend answers again. A context variable: it holds for the current
    thread or task and what it starts.
    """
    token = _RAISING.set(True)
    try:
        yield
    finally:
        _RAISING.reset(token)


def _seconds(value: object, name: str) -> float:
    """A duration option as a number of seconds; anything else (a str, a bool) is refused
    by name rather than by a comparison failing inside."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name} must be seconds (an int or float), got {value!r}")
    return float(value)


REFUSED, ADMITTED, PROBE = 0, 1, 2
"""What ``CircuitBreaker.admit`` answers: not now; go ahead; go ahead as the half-open probe."""


class CircuitBreaker:
    """Opens after ``failure_threshold`` consecutive failures; after ``reset_timeout`` seconds
    lets one probe through (half-open) and closes on its success."""

    def __init__(
        self,
        *,
        failure_threshold: int = 5,
        reset_timeout: float = 10.0,
        clock: Callable[[], float] = time.monotonic,
        on_change: Callable[[int], None] = lambda state: None,
    ) -> None:
        """Create a closed breaker; ``on_change(state)`` hears every transition."""
        if (
            isinstance(failure_threshold, bool)
            or not isinstance(failure_threshold, int)
            or failure_threshold < 1
        ):
            raise ValueError(f"failure_threshold must be a positive int, got {failure_threshold!r}")
        if not _seconds(reset_timeout, "reset_timeout") > 0:
            raise ValueError(f"reset_timeout must be > 0 seconds, got {reset_timeout!r}")
        if reset_timeout == float("inf"):  # an open circuit would never let a probe through
            raise ValueError("reset_timeout must be finite: an open circuit would never close")
        self.failure_threshold = failure_threshold
        self.reset_timeout = reset_timeout
        self._clock = clock
        self._on_change = on_change
        self._lock = threading.Lock()
        self.state = CIRCUIT_CLOSED
        self.failures = 0
        self._opened_at = 0.0
        self._probing = False
        self._probe_loop: weakref.ref[asyncio.AbstractEventLoop] | None = None
        """The loop of an async probe: closed by hand, it never ends the probe."""
        start_afresh_in_children(self, CircuitBreaker._after_fork)

    def _after_fork(self) -> None:
        """In a forked child only the forking thread lives: a half-open probe another thread
        had in flight never ends there (no call would be let through again), and a lock it
        held is never released."""
        self._lock = threading.Lock()
        self._probing = False
        self._probe_loop = None

    def allow(self) -> bool:
        """Whether a call may go to the backend now."""
        return self.admit() != REFUSED

    def admit(self, loop: asyncio.AbstractEventLoop | None = None) -> int:
        """Whether a call may go to the backend now: ``REFUSED``, ``ADMITTED``, or ``PROBE``
        (the one half-open call; only it may end with :meth:`abandoned`). ``loop``: the
        running loop of an async call."""
        if self.state == CIRCUIT_CLOSED:
            return ADMITTED
        with self._lock:
            # A clock that stepped back below the opening time says nothing of how long the
            # circuit was open: probe rather than wait for it to come back.
            if self.state == CIRCUIT_OPEN and not (
                0 <= self._clock() - self._opened_at < self.reset_timeout
            ):
                self._move(CIRCUIT_HALF_OPEN)
            if self.state == CIRCUIT_HALF_OPEN and self._probing and is_gone(self._probe_loop):
                self._probing = False  # its loop was closed by hand: it never ends
            if self.state == CIRCUIT_HALF_OPEN and not self._probing:
                self._probing = True
                self._probe_loop = None if loop is None else weakref.ref(loop)
                return PROBE
            return ADMITTED if self.state == CIRCUIT_CLOSED else REFUSED

    def succeeded(self) -> None:
        """Record a call the backend answered."""
        if self.state == CIRCUIT_CLOSED and not self.failures:
            return
        with self._lock:
            self.failures = 0
            self._probing = False
            self._move(CIRCUIT_CLOSED)

    def abandoned(self, loop: asyncio.AbstractEventLoop | None = None) -> None:
        """Record that the probe ended without a verdict (cancelled): frees its slot. Not for
        other calls: one admitted before the circuit opened would free a probe in flight.
        ``loop``: an async probe's; one left in a closed loop, replaced meanwhile and ending
        when collected, must not free its successor's slot."""
        with self._lock:
            if loop is None or self._probe_loop is None or self._probe_loop() is loop:
                self._probing = False

    def failed(self) -> None:
        """Record a call the backend failed or did not answer in time."""
        with self._lock:
            self.failures += 1
            self._probing = False
            if self.state == CIRCUIT_HALF_OPEN or self.failures >= self.failure_threshold:
                self._opened_at = self._clock()
                self._move(CIRCUIT_OPEN)

    def _move(self, state: int) -> None:
        if state != self.state:
            self.state = state
            self._on_change(state)


class _Workers:
    """Daemon threads that run sync backend calls so the caller can stop waiting.

    Daemon threads, not ``ThreadPoolExecutor``: a call stuck on a hung backend must not
    block interpreter exit. A thread starts only when no idle one can take the call and
    exits after ``idle_exit`` seconds without work. When all are busy, a caller waits for
    one within its own deadline: a deadline fires only when the caller really waited that
    long. After ``fork`` the child starts with no threads and a fresh state.

    A set cut at the deadline still runs in its thread and lands when the backend answers:
    a later set, delete or clear waits for it (within the later call's own deadline), so an
    older value never lands over a newer write or an invalidation reported done.
    """

    def __init__(self, size: int, idle_exit: float = 30.0) -> None:
        if isinstance(size, bool) or not isinstance(size, int) or size < 1:
            raise ValueError(f"max_workers must be a positive int, got {size!r}")
        self._size = size
        self._idle_exit = idle_exit
        self._reset()
        start_afresh_in_children(self, _Workers._reset)  # no worker thread exists there

    def _reset(self) -> None:
        self._free = threading.BoundedSemaphore(self._size)
        self._jobs: queue.SimpleQueue[tuple[Callable[[], Any], Future[Any]]] = queue.SimpleQueue()
        self._idle = 0  # threads waiting for a job and not yet claimed by a caller
        self._lock = threading.Lock()
        self._landed = threading.Condition(self._lock)
        self._late: set[Future[Any]] = set()  # sets cut at the deadline, still running

    def run(self, fn: Callable[[Any], R], arg: Any, deadline: float, operation: str) -> R:
        start = time.monotonic()
        if operation in _ORDERED and self._late:
            with self._landed:
                if not self._landed.wait_for(lambda: not self._late, timeout=deadline):
                    raise DeadlineExceededError(
                        f"no answer within {deadline:g}s: an earlier write cut at its deadline "
                        "was still running on the backend"
                    )
        if not self._free.acquire(timeout=max(0.0, deadline - (time.monotonic() - start))):
            raise DeadlineExceededError(
                f"no answer within {deadline:g}s: every fail-open worker was waiting on the backend"
            )
        future: Future[R] = Future()
        call = contextvars.copy_context().run  # spans started in the worker nest under the caller's
        with self._lock:
            if self._idle:
                self._idle -= 1
            else:
                try:
                    threading.Thread(
                        target=self._work, name="toolkit-failopen", daemon=True
                    ).start()
                except BaseException:  # at the thread limit: the slot must not be lost
                    self._free.release()
                    raise
            self._jobs.put((lambda: call(fn, arg), future))
        try:
            return future.result(timeout=max(0.0, deadline - (time.monotonic() - start)))
        except FutureTimeout as exc:
            if future.done() and future.exception() is exc:
                raise  # the backend's own TimeoutError (one class with FutureTimeout), not ours
            if operation == "set" and not future.cancel():  # cancelled: it never starts
                self._running_late(future)
            raise DeadlineExceededError(f"no answer within {deadline:g}s") from None

    def _running_late(self, future: Future[Any]) -> None:
        """Hold later writes back until ``future``, a set its caller stopped waiting for, ends."""
        late, landed = self._late, self._landed  # a fork replaces them

        def ended(_: Future[Any]) -> None:
            with landed:
                late.discard(future)
                landed.notify_all()

        with landed:
            late.add(future)
        future.add_done_callback(ended)  # at once if it already ended

    def _work(self) -> None:
        jobs, free = self._jobs, self._free  # a fork replaces them; this thread keeps its own
        while True:
            try:
                job, future = jobs.get(timeout=self._idle_exit)
            except queue.Empty:
                with self._lock:
                    if jobs.empty() and self._idle and jobs is self._jobs:
                        self._idle -= 1
                        return
                if jobs is not self._jobs:
                    return
                continue
            try:
                if future.set_running_or_notify_cancel():  # False: its caller gave up first
                    future.set_result(job())
            except BaseException as exc:
                future.set_exception(exc)
            finally:
                with self._lock:
                    if jobs is self._jobs:
                        self._idle += 1
                free.release()  # after idling, so the next caller reuses this thread


class _RateLimitedLog:
    """At most one warning per ``interval`` seconds per (backend, operation, error type)."""

    def __init__(self, interval: float, clock: Callable[[], float]) -> None:
        self._interval = interval
        self._clock = clock
        self._next: dict[tuple[str, str, str], float] = {}
        self._suppressed: dict[tuple[str, str, str], int] = {}
        self._lock = ForkSafeLock()  # threads failing together must each be counted

    def warn(
        self, backend: str, operation: str, exc: BaseException, endpoint: str | None = None
    ) -> None:
        error_type = type(exc).__name__
        slot = (backend, operation, error_type)
        now = self._clock()
        with self._lock:
            # Quiet only within one interval before the next due time: a clock that stepped
            # back would otherwise silence the slot until it came back.
            if 0 < self._next.get(slot, float("-inf")) - now <= self._interval:
                self._suppressed[slot] = self._suppressed.get(slot, 0) + 1
                return
            self._next[slot] = now + self._interval
            suppressed = self._suppressed.pop(slot, 0)
        logger.warning(
            "cache %s%s %s failed with %s; served as %s (%d similar failures not logged)",
            backend,
            f" ({endpoint})" if endpoint else "",
            operation,
            _describe(exc),
            _SERVED_AS.get(operation, "a no-op"),
            suppressed,
        )


def _describe(exc: BaseException) -> str:
    """The error's class and its cause's; the message only for errors whose messages are
    ours and carry no data (timeouts, deadlines, a closed cache, an open circuit): a
    driver's or a foreign cache's message can quote keys or values."""
    text = type(exc).__name__
    if exc.__cause__ is not None:
        text += f" (from {type(exc.__cause__).__name__})"
    if isinstance(exc, _PLAIN_MESSAGES):
        message = str(exc).strip()
        if message:
            text += f": {message[:300]}"
    return text


_PLAIN_MESSAGES = (CacheTimeoutError, CacheClosedError, DeadlineExceededError, CircuitOpenError)


_VALIDATORS: dict[str, Callable[[Any], object]] = {
    "get": check_keys,
    "set": validate_pairs,
    "clear": check_namespaces,
    "delete": check_keys,
    "lease": check_lease,
}


def _namespaces(operation: str, arg: Any) -> list[Namespace] | None:
    if operation == "lease":
        return [arg.key[0]]
    if operation == "clear":
        return None if arg is None else list(arg)
    return list(dict.fromkeys(full_key[0] for full_key in arg))


class FailOpen(CacheMiddleware[ValueT]):
    """A failed or timed-out get is a miss; a failed set or clear is dropped (DESIGN.md "Failure").

    Each failure is counted by the ``Metrics`` layer inside (put ``FailOpen`` outermost),
    recorded on the span and logged at most once per ``log_interval`` per kind. ``deadline``
    bounds every call: async calls via ``asyncio.wait_for``, sync calls on ``max_workers``
    daemon threads (skipped for in-process backends, which cannot hang on I/O, and for
    backends whose declared ``max_call_seconds`` fits within the deadline). After
    ``failure_threshold`` consecutive failures the circuit opens and calls are not made
    for ``reset_timeout`` seconds. ``strict=True`` (or a ``failures_raise()`` block)
    re-raises instead. Caller bugs
    (``TypeError``/``ValueError``) always propagate. Gets from a stack whose reads cannot
    fail (``reads_never_fail``: an in-process backend under recording layers) pass straight
    through: there is no failure to turn into a miss.
    """

    adds_io = False  # deadline threads exist only over a cache that does I/O itself

    def __init__(
        self,
        inner: Any = None,
        *,
        deadline: float | None = 0.5,
        strict: bool = False,
        failure_threshold: int = 5,
        reset_timeout: float = 10.0,
        max_workers: int = 8,
        log_interval: float = 60.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        """Fail open around ``inner`` with the given deadline (seconds, ``None`` = no deadline)."""
        if deadline is not None and not _seconds(deadline, "deadline") > 0:
            raise ValueError(f"deadline must be > 0 seconds or None, got {deadline!r}")
        if deadline is not None and deadline > threading.TIMEOUT_MAX:  # no thread waits longer
            raise ValueError(
                f"deadline must be at most {threading.TIMEOUT_MAX:g} seconds (None for no "
                f"deadline), got {deadline!r}"
            )
        if _seconds(log_interval, "log_interval") < 0:
            raise ValueError(f"log_interval must be >= 0 seconds, got {log_interval!r}")
        self.deadline = deadline
        self.strict = strict
        self._breaker = CircuitBreaker(
            failure_threshold=failure_threshold,
            reset_timeout=reset_timeout,
            clock=clock,
            on_change=self._circuit_changed,
        )
        self._max_workers = max_workers
        self._workers: _Workers | None = None
        self.async_deadline: float | None = None
        """The deadline async calls run under: ``None`` for in-process backends."""
        self._log = _RateLimitedLog(log_interval, clock)
        super().__init__(inner)

    @property
    def breaker(self) -> CircuitBreaker:
        """The circuit breaker this layer consults."""
        return self._breaker

    @property
    def uses_threads(self) -> bool:
        """Whether sync calls run on deadline threads (an unbounded out-of-process backend)."""
        return self._workers is not None

    def verdict(
        self,
        operation: str,
        arg: Any,
        exc: BaseException,
        *,
        probe: bool = True,
        loop: asyncio.AbstractEventLoop | None = None,
    ) -> bool:
        """Judge a failure of an admitted call as this layer would: ``True`` if swallowed
        (``probe``: whether the call was the half-open probe; ``loop``: an async call's)."""
        breaker = self._breaker
        refused = is_refusal(operation, exc, arg)
        if refused or _is_caller_bug(exc) or not isinstance(exc, Exception):
            # A value refused, a caller bug, a cancellation: no verdict on the backend. A
            # half-open probe ending so must free its slot, or no call would reach the
            # backend again and the circuit would stay open for good.
            if probe:
                breaker.abandoned(loop)
            if refused and not self.strict:
                warn_uncacheable(NotCacheableError(str(exc)))
                return True  # dropped like any unstorable write
            return False
        breaker.failed()
        self._failed(operation, arg, exc, own=isinstance(exc, DeadlineExceededError))
        return True

    @property
    def circuit_state(self) -> int:
        """The breaker's state: 0 closed, 1 half-open, 2 open."""
        return self._breaker.state

    def _on_bind(self) -> None:
        self.backend = backend_name(self.inner)
        bottom = innermost(self.inner)
        endpoint = getattr(bottom, "endpoint", None)
        self.endpoint: str | None = endpoint if isinstance(endpoint, str) else None
        if self.deadline is not None and _needs_thread(bottom, self.deadline):
            self._workers = _Workers(self._max_workers)
            # The same backends get a timer on the loop for async calls (no thread needed);
            # a self-bounded one (max_call_seconds) keeps its own bound there too.
            self.async_deadline = self.deadline
        self.record_circuit_state(self._breaker.state)

    def _circuit_changed(self, state: int) -> None:
        self.record_circuit_state(state)

    def _failed(self, operation: str, arg: Any, exc: Exception, *, own: bool) -> None:
        """Count (when no inner layer saw it), log, and re-raise under ``strict``."""
        error_type = type(exc).__name__
        if own:
            self.record_error(operation, _namespaces(operation, arg), error_type)
        if self.strict or _RAISING.get(False):
            raise exc
        self._log.warn(self.backend, operation, exc, self.endpoint)

    def _admitted(
        self, operation: str, arg: Any, loop: asyncio.AbstractEventLoop | None = None
    ) -> int:
        """How the breaker lets a call through (``CircuitBreaker.admit``); if it does not,
        report it (a caller bug raises)."""
        admission = self._breaker.admit(loop)
        if admission != REFUSED:
            return admission
        _VALIDATORS[operation](arg)  # a caller bug raises even while the circuit is open
        self._failed(operation, arg, CircuitOpenError("circuit open"), own=True)
        return REFUSED

    def _passes_through(self, operation: str) -> bool:
        """Whether this layer has nothing to do for ``operation``: a get from a cache whose
        reads cannot fail (an in-process backend) has no failure to turn into a miss, and
        an open circuit (opened by failing writes) need not hide the entries it holds."""
        return operation == "get" and reads_never_fail(self.inner)

    def wrap_sync(self, operation: str, call: Callable[..., Any]) -> Callable[..., Any]:
        """Fail open around one sync operation: a failure is a miss or a no-op, never raised."""
        if self._passes_through(operation):
            return call
        breaker, workers, deadline = self._breaker, self._workers, self.deadline
        fallback = _FALLBACKS[operation]
        # Keys and namespaces are read once: a one-shot iterable must reach the cache whole.
        reader = _reader(operation)
        admitted, verdict = self._admitted, self.verdict

        def fail_open(arg: Any = None) -> Any:
            if reader is not None and type(arg) is not list:
                arg = reader(arg)
            admission = admitted(operation, arg) if breaker.state else ADMITTED
            if admission == REFUSED:
                return fallback()
            try:
                if workers is None or deadline is None:
                    result = call(arg)
                else:
                    result = workers.run(call, arg, deadline, operation)
            except BaseException as exc:
                if verdict(operation, arg, exc, probe=admission == PROBE):
                    return fallback()
                raise
            if breaker.failures or breaker.state:
                breaker.succeeded()
            return result

        return fail_open

    def wrap_async(
        self, operation: str, call: Callable[..., Awaitable[Any]]
    ) -> Callable[..., Awaitable[Any]]:
        """The async twin of :meth:`wrap_sync`; the deadline is a timer on the loop."""
        if self._passes_through(operation):
            return call
        breaker, deadline = self._breaker, self.async_deadline
        fallback = _FALLBACKS[operation]
        # Keys and namespaces are read once: a one-shot iterable must reach the cache whole.
        reader = _reader(operation)
        admitted, verdict = self._admitted, self.verdict

        async def fail_open(arg: Any = None) -> Any:
            if reader is not None and type(arg) is not list:
                arg = reader(arg)
            loop = None
            admission = ADMITTED
            if breaker.state:
                loop = asyncio.get_running_loop()
                admission = admitted(operation, arg, loop)
            if admission == REFUSED:
                return fallback()
            try:
                if deadline is None:
                    result = await call(arg)
                else:
                    result = await _within(deadline, call(arg))
            except BaseException as exc:
                if verdict(operation, arg, exc, probe=admission == PROBE, loop=loop):
                    return fallback()
                raise
            if breaker.failures or breaker.state:
                breaker.succeeded()
            return result

        return fail_open


async def _within(deadline: float, call: Awaitable[Any]) -> Any:
    scope = asyncio.timeout(deadline)
    try:
        async with scope:
            return await call
    except TimeoutError:
        if not scope.expired():
            raise  # the backend's own TimeoutError: the deadline did not fire
        # One loop turn lets the cancelled call's cleanup (closing its socket) run before
        # the caller moves on, as wait_for's separate task used to allow.
        await asyncio.sleep(0)
        raise DeadlineExceededError(f"no answer within {deadline:g}s") from None


_FALLBACKS: dict[str, Callable[[], Any]] = {
    "get": dict,  # a miss
    "set": lambda: None,  # a dropped write
    "clear": lambda: None,
    "delete": lambda: None,
    "lease": lambda: None,  # unknown: the caller goes on without the lease
}
_SERVED_AS = {"get": "a miss", "lease": "no lease (the caller computes itself)"}
_KEYED = frozenset({"get", "delete"})
_ORDERED = frozenset({"set", "delete", "clear"})  # writes that wait for a late set to land


def _reader(operation: str) -> Callable[[Any], Any] | None:
    """How ``operation`` reads its argument once: keys strictly (a str is a caller bug),
    namespaces leniently (the cache's own check judges them), anything else not at all."""
    if operation in _KEYED:
        return key_sequence
    return read_once if operation in READ_ONCE else None


def _needs_thread(cache: object, deadline: float) -> bool:
    """Whether sync calls need a deadline thread: not when the backend does no I/O, nor when
    it declares ``max_call_seconds``, a bound its own timeouts keep, within ``deadline``."""
    if runs_in_process(cache):
        return False
    bound = getattr(cache, "max_call_seconds", None)
    if isinstance(bound, bool) or not isinstance(bound, (int, float)):
        return True
    return not 0 < bound <= deadline
