"""The default cache of ``@cached``: ``configure()``, cache URLs and ``TOOLKIT_CACHE_URL``."""

from __future__ import annotations

import os
import re
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit, urlunsplit

from toolkit._fork import ForkSafeLock
from toolkit.base import BaseCache
from toolkit.switches import set_enabled

__all__ = [
    "ENV_VAR",
    "cache_from_url",
    "configure",
    "default_cache",
    "is_cache_like",
    "not_a_cache",
    "observed_from_url",
    "redacted_url",
    "sqlite_url_path",
]

ENV_VAR = "TOOLKIT_CACHE_URL"


class _State:
    cache: BaseCache[Any] | None = None


_state = _State()
_lock = ForkSafeLock()  # a forked child finds it free (see toolkit._fork)


def cache_from_url(url: str) -> BaseCache[Any]:
    """Build a backend from a URL: ``memory://``, ``sqlite:///path``, ``redis://``, ``postgresql://``.

    ``memory://?max_entries=N`` bounds the in-memory cache. The result is a bare backend:
    wrap it in ``observe(...)`` for metrics, traces and fail-open behaviour.
    """
    if not isinstance(url, str):
        raise TypeError(f"cache URL must be a str, got {type(url).__name__}")
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    if scheme == "memory":
        from toolkit.backends.memory import InMemoryCache

        # Blank values kept: "?max_entries=" (an unset variable) is an error, not the default.
        query = parse_qs(parts.query, keep_blank_values=True)
        unknown = set(query) - {"max_entries"}
        if unknown or parts.netloc or parts.path or parts.fragment:
            raise ValueError(f"memory:// takes only ?max_entries=N, got {url!r}")
        if "max_entries" in query:
            return InMemoryCache(max_entries=_positive_int(query["max_entries"][-1], url))
        return InMemoryCache()
    if scheme == "sqlite":
        path = _sqlite_path(parts.netloc, parts.path, url)
        from toolkit.backends.sqlite import SqliteCache

        return SqliteCache(path=path)
    if scheme in ("redis", "rediss", "unix"):
        from toolkit.backends.redis import RedisCache

        return RedisCache.from_url(url)
    if scheme in ("postgresql", "postgres"):
        from toolkit.backends.postgres import PostgresCache

        return PostgresCache.from_url(url)
    raise ValueError(
        f"unsupported cache URL {url!r}: expected memory://, sqlite:///path, "
        "sqlite://:memory:, redis://host:port/db, rediss://... or postgresql://..."
    )


def _sqlite_path(netloc: str, path: str, url: str) -> str:
    # urlsplit ends the path at "?" or "#": "sqlite:///run#3.db" would open "run", and
    # "?table=x" would be ignored for the default table; another file, or another cache.
    if "?" in url or "#" in url:
        raise ValueError(
            "sqlite URLs take no ?query or #fragment (write ? as %3F and # as %23 in a "
            f"file name), got {url!r}"
        )
    if netloc == ":memory:" and path in ("", "/"):
        return ":memory:"
    if netloc:
        raise ValueError(
            "sqlite URLs take a path, not a host: sqlite:///relative.db or "
            f"sqlite:////abs.db, got {url!r}"
        )
    # SQLAlchemy convention: three slashes then the path; a fourth makes it absolute.
    path = unquote(path[1:]) if path.startswith("/") else unquote(path)
    if not path:
        raise ValueError(f"sqlite URL has no file path: {url!r}")
    return path


def sqlite_url_path(url: str) -> str:
    """The file path a ``sqlite:///path`` URL names (``":memory:"`` for ``sqlite://:memory:``)."""
    parts = urlsplit(url)
    if parts.scheme.lower() != "sqlite":
        raise ValueError(f"not a sqlite:// URL: {url!r}")
    return _sqlite_path(parts.netloc, parts.path, url)


def _positive_int(text: str, url: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise ValueError(f"max_entries must be an integer in {url!r}") from None
    if value < 1:
        raise ValueError(f"max_entries must be >= 1 in {url!r}")
    return value


def configure(
    *, cache: BaseCache[Any] | str | None = None, enabled: bool | None = None
) -> BaseCache[Any] | None:
    """Set the default cache of ``@cached``: a cache, a URL (wrapped in ``observe``) or ``None``.

    ``enabled=False`` turns caching off for the whole process (every ``@cached`` call runs
    its function; see ``toolkit.disabled()`` for a block), ``enabled=True`` back on; left
    out, it is unchanged. Returns the default cache now in effect (``None`` after a reset:
    it is rebuilt on next use).
    """
    if enabled is not None:
        set_enabled(enabled)
        if cache is None:
            return _state.cache
    if isinstance(cache, str):
        cache = _observed(cache_from_url(cache))
    elif cache is not None and not is_cache_like(cache):
        raise not_a_cache(cache, "a cache (get/aget/set/aset/clear/aclear), a URL or None")
    with _lock:
        _state.cache = cache
    return cache


def default_cache() -> BaseCache[Any]:
    """The configured cache, else ``TOOLKIT_CACHE_URL``'s, else ``observe(InMemoryCache())``."""
    cache = _state.cache
    if cache is not None:
        return cache
    with _lock:
        if _state.cache is None:
            url = os.environ.get(ENV_VAR, "").strip()
            if url:
                _state.cache = _observed(cache_from_url(url))
            else:
                from toolkit.backends.memory import InMemoryCache

                _state.cache = _observed(InMemoryCache())
        return _state.cache


def observed_from_url(url: str) -> BaseCache[Any]:
    """``observe(cache_from_url(url))``: what ``configure`` and ``@cached`` make of a URL."""
    return _observed(cache_from_url(url))


def _observed(cache: BaseCache[Any]) -> BaseCache[Any]:
    from toolkit.middleware import observe

    observed: BaseCache[Any] = observe(cache)
    return observed


def is_cache_like(obj: object) -> bool:
    """Whether ``obj`` has the six methods of the cache API (any ``BaseCache``, ours or not)."""
    # A class has them too, unbound: every call would fail on a missing argument.
    return not isinstance(obj, type) and all(
        callable(getattr(obj, name, None))
        for name in ("get", "aget", "set", "aset", "clear", "aclear")
    )


def not_a_cache(obj: object, expected: str) -> TypeError:
    """The error for ``obj`` given where ``expected`` belongs; a cache class is told apart."""
    if isinstance(obj, type):
        return TypeError(
            f"{obj.__name__} is a class, not a cache: pass an instance, like {obj.__name__}(...)"
        )
    return TypeError(f"cache must be {expected}, got {type(obj).__name__}")


# libpq and redis-py read a password from the query string too (libpq: sslpassword).
_PASSWORD_OPTION = re.compile(r"((?:^|&)(?:ssl)?password=)[^&]*", re.IGNORECASE)


def redacted_url(url: str) -> str:
    """``url`` without its password (``user:password@`` or ``?password=``), for printing."""
    parts = urlsplit(url)
    if parts.password is not None:
        host = parts.netloc.rsplit("@", 1)[1]
        user = f"{parts.username}:***@" if parts.username else ":***@"
        parts = parts._replace(netloc=user + host)
    if parts.query:
        parts = parts._replace(query=_PASSWORD_OPTION.sub(r"\1***", parts.query))
    return urlunsplit(parts)
