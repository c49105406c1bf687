"""The public surface is explicit: ``__all__`` is sorted, complete and importable."""

from __future__ import annotations

import importlib
import types

import toolkit


def test_all_is_unique() -> None:
    # Its order is ruff's (RUF022), checked by `make lint`.
    assert len(toolkit.__all__) == len(set(toolkit.__all__))


def test_every_exported_name_resolves() -> None:
    for name in toolkit.__all__:
        assert getattr(toolkit, name) is not None, name


def test_every_public_attribute_is_exported() -> None:
    public = {
        name
        for name, value in vars(toolkit).items()
        if not name.startswith("_") and not isinstance(value, types.ModuleType)
    }
    assert public <= set(toolkit.__all__), public - set(toolkit.__all__)


def test_optional_exports_resolve_lazily() -> None:
    assert set(toolkit.OPTIONAL_EXPORTS).isdisjoint(toolkit.__all__)
    for name in toolkit.OPTIONAL_EXPORTS:
        assert getattr(toolkit, name).__name__ == name


def test_version_is_exported() -> None:
    assert isinstance(toolkit.__version__, str)
    assert importlib.import_module("toolkit").__version__ == toolkit.__version__
