"""Spies that prove stored bytes imported or called nothing: an audit hook, a canary module,
and recorders in place of ``os.system``/``eval``/``exec``."""

from __future__ import annotations

import builtins
import os
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

CANARY = "reliability_canary"
"""A module no code imports; hostile payloads name it, and importing it leaves a mark."""
MARKER = "PWNED-by-stored-bytes"
"""Code text inside payloads; a spied ``eval``/``exec`` that sees it was reached."""

_WATCHED_EVENTS = {
    "os.system",
    "os.exec",
    "os.posix_spawn",
    "os.spawn",
    "subprocess.Popen",
    "pickle.find_class",
    "ctypes.dlopen",
    "marshal.loads",
}
_WATCHED_MODULES = {CANARY, "pickle", "_pickle", "marshal", "subprocess", "ctypes"}
_armed: list[list[str]] = []


def _audit(event: str, args: tuple[Any, ...]) -> None:
    if not _armed:
        return
    if event in _WATCHED_EVENTS:
        _armed[-1].append(f"{event}{args[:2]!r}")
    elif event == "import" and args and str(args[0]).split(".")[0] in _WATCHED_MODULES:
        _armed[-1].append(f"import {args[0]}")


sys.addaudithook(_audit)  # audit hooks cannot be removed: it stays idle unless armed


class Spy:
    """What hostile payloads reached while the spy watched (empty means nothing ran)."""

    def __init__(self, canary_mark: Path) -> None:
        self.seen: list[str] = []
        self._canary_mark = canary_mark

    @property
    def reached(self) -> list[str]:
        """Every import, call or event a payload caused, plus the canary's mark if it ran."""
        marks = [f"canary module ran: {self._canary_mark}"] if self._canary_mark.exists() else []
        return [*self.seen, *marks]


@contextmanager
def spying(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[Spy]:
    """Watch for imports and calls made on behalf of stored bytes."""
    mark = tmp_path / "canary-ran"
    canary_dir = tmp_path / "canary"
    canary_dir.mkdir()
    (canary_dir / f"{CANARY}.py").write_text(
        f"open({str(mark)!r}, 'w').close()\n"
        "def boom(*args, **kwargs):\n"
        f"    open({str(mark)!r}, 'w').close()\n"
        "Boom = boom\n"
    )
    monkeypatch.syspath_prepend(str(canary_dir))
    monkeypatch.delitem(sys.modules, CANARY, raising=False)
    spy = Spy(mark)
    real_eval, real_exec = builtins.eval, builtins.exec

    def fake_system(command: Any) -> int:
        spy.seen.append(f"os.system({command!r})")
        return 0

    def fake_popen(*args: Any, **kwargs: Any) -> Any:
        spy.seen.append(f"subprocess.Popen{args!r}")
        raise OSError("spied")

    def spy_eval(source: Any, *args: Any, **kwargs: Any) -> Any:
        if MARKER in str(source):
            spy.seen.append(f"eval({source!r})")
            return None
        return real_eval(source, *args, **kwargs)

    def spy_exec(source: Any, *args: Any, **kwargs: Any) -> Any:
        if MARKER in str(source):
            spy.seen.append(f"exec({source!r})")
            return None
        return real_exec(source, *args, **kwargs)

    monkeypatch.setattr(os, "system", fake_system)
    monkeypatch.setattr(subprocess, "Popen", fake_popen)
    monkeypatch.setattr(builtins, "eval", spy_eval)
    monkeypatch.setattr(builtins, "exec", spy_exec)
    _armed.append(spy.seen)
    try:
        yield spy
    finally:
        _armed.remove(spy.seen)
