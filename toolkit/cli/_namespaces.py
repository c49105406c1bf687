"""The command line's namespace syntax: ``a/b`` paths, or a JSON array for any namespace.

``llm`` is ``("llm",)`` and ``app.svc/answer`` is ``("app.svc", "answer")``; inside a part,
``%2F`` is a literal ``/`` and ``%25`` a literal ``%``. A JSON array names any namespace
exactly: ``[]`` is the root namespace ``()``, ``[""]`` is ``("",)``. Listings print each
namespace in the form that reads back to it.
"""

from __future__ import annotations

import json
import re

from toolkit._types import Namespace

__all__ = ["SYNTAX", "format_namespace", "parse_namespace"]

SYNTAX = (
    "Namespaces are written a/b for ('a', 'b'); inside a part %2F is a literal / and "
    "%25 a literal %. A JSON array names any namespace exactly: [] is the root ()."
)
_UNESCAPES = {"%2F": "/", "%25": "%"}
_ESCAPE = re.compile(r"%(2F|25)", re.IGNORECASE)


def parse_namespace(text: str) -> Namespace:
    """The namespace ``text`` names; ``ValueError`` with the syntax when it names none."""
    if text.startswith("["):
        try:
            parts = json.loads(text)
        except ValueError:
            parts = None
        if not isinstance(parts, list) or not all(isinstance(part, str) for part in parts):
            raise ValueError(f"namespace {text!r} is not a JSON array of strings")
        return tuple(parts)
    if not text:
        raise ValueError("empty namespace: write [] for the root namespace ()")
    parts = text.split("/")
    if "" in parts:
        raise ValueError(
            f"namespace {text!r} has an empty part: write it as a JSON array, like "
            f"{json.dumps(parts)}"
        )
    return tuple(_ESCAPE.sub(lambda m: _UNESCAPES[m.group(0).upper()], part) for part in parts)


def format_namespace(ns: Namespace) -> str:
    """``ns`` in the syntax ``parse_namespace`` reads back exactly."""
    if not ns or any(not part for part in ns) or ns[0].startswith("["):
        return json.dumps(list(ns), ensure_ascii=False)
    return "/".join(part.replace("%", "%25").replace("/", "%2F") for part in ns)
