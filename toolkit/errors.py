"""Exceptions raised by caches; every backend failure is a ``CacheError``."""

from __future__ import annotations


class CacheError(Exception):
    """Base class of every error a cache raises on purpose."""


class BackendError(CacheError):
    """The storage behind a cache failed; the original exception is the ``__cause__``."""


class CacheTimeoutError(BackendError):
    """The storage did not answer within the deadline."""


class CacheClosedError(CacheError):
    """The cache was used after ``close()``."""


class NotCacheableError(CacheError, TypeError):
    """A serializer refused a value: its type cannot be stored safely (never a backend failure)."""


class SerializationError(CacheError):
    """A value could not be decoded from stored bytes (corrupt, foreign or hostile)."""


class EventLoopMismatchError(CacheError, ValueError):
    """An async client bound to one event loop was used from another."""
