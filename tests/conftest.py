"""Fixtures shared by the whole suite: the conformance ``subject`` over every backend and stack."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, settings

from tests.harness import BACKENDS, STACKS, Ops, Subject, subject_params
from tests.otel_support import exporter, provider  # noqa: F401 - fixtures
from tests.postgres_support import pg_closer, pg_url, private_pg  # noqa: F401 - fixtures
from tests.redis_support import (  # noqa: F401 - fixtures
    private_redis_url,
    redis_closer,
    redis_cluster_url,
    redis_url,
)

# A busy CI machine must not fail a property test for being slow: no deadline, no speed checks.
settings.register_profile(
    "toolkit",
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
settings.load_profile("toolkit")


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "subject_spec" in metafunc.fixturenames:
        metafunc.parametrize("subject_spec", subject_params())
    if "mode" in metafunc.fixturenames:
        metafunc.parametrize("mode", ["sync", "async"])


@pytest.fixture
def subject(
    subject_spec: tuple[str, str], request: pytest.FixtureRequest, tmp_path: Path
) -> Iterator[Subject]:
    """A fresh cache of one backend inside one middleware stack."""
    backend_name, stack_name = subject_spec
    with BACKENDS[backend_name](request, tmp_path) as made:
        yield STACKS[stack_name](made)


@pytest.fixture
def ops(subject: Subject, mode: str) -> Ops:
    """The subject's cache driven through its sync or its async methods."""
    return Ops(subject.cache, mode)


@pytest.fixture
def cache(subject: Subject) -> Any:
    return subject.cache


@pytest.fixture
def observe_form() -> str:
    """``observe`` has one form: the composed ``wrap`` stack (kept for the tests naming it)."""
    return "layered"
