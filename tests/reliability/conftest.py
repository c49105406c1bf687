"""The reliability report: tests tally what they tried, ``--reliability-report`` prints it.

Each test asks the ``tally`` fixture for one row per fault or hostile input and drives its
operations through ``Tally.call``/``Tally.acall`` (timed, exceptions counted, not raised)
and ``Tally.check`` (wrong values counted). Rows are kept even when a test fails, so the
table shows what went wrong.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Generator, Iterator
from dataclasses import dataclass, field
from typing import Any, TypeVar

import pytest

from tests.reliability.faults import BlackHoleServer, RefusingPort

T = TypeVar("T")

FAILED: Any = type("Failed", (), {"__repr__": lambda self: "<FAILED>"})()
"""What ``Tally.call`` returns when the operation raised."""


@dataclass
class Tally:
    """One row of the report: a fault or hostile input and what callers saw under it."""

    scenario: str
    layer: str = "observe"
    """Which stack callers went through: ``observe`` (errors must be 0) or ``bare``."""
    operations: int = 0
    errors: int = 0
    wrong: int = 0
    worst: float = 0.0
    outcome: str = "?"
    note: str = ""
    """Shown after the test outcome, e.g. how a faulty file was refused."""
    error_types: dict[str, int] = field(default_factory=dict)

    def call(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """Run one operation; time it, count it, and count (not raise) its exception."""
        start = time.perf_counter()
        try:
            return fn(*args, **kwargs)
        except Exception as exc:
            self.error(exc)
            return FAILED  # type: ignore[no-any-return]
        finally:
            self.timed(time.perf_counter() - start)

    async def acall(self, fn: Callable[..., Awaitable[T]], *args: Any, **kwargs: Any) -> T:
        """The async twin of ``call``."""
        start = time.perf_counter()
        try:
            return await fn(*args, **kwargs)
        except Exception as exc:
            self.error(exc)
            return FAILED  # type: ignore[no-any-return]
        finally:
            self.timed(time.perf_counter() - start)

    def timed(self, seconds: float, count: int = 1) -> None:
        """Record ``count`` operations whose slowest took ``seconds``."""
        self.operations += count
        self.worst = max(self.worst, seconds)

    def error(self, exc: BaseException) -> None:
        """Record an exception that reached the caller."""
        self.errors += 1
        name = type(exc).__name__
        self.error_types[name] = self.error_types.get(name, 0) + 1

    def check(self, ok: bool) -> bool:
        """Count a wrong value unless ``ok``; returns ``ok``."""
        if not ok:
            self.wrong += 1
        return ok

    def merge(self, other: dict[str, Any]) -> None:
        """Add counts reported by another process (a dict of this row's numeric fields)."""
        self.operations += int(other["operations"])
        self.errors += int(other["errors"])
        self.wrong += int(other["wrong"])
        self.worst = max(self.worst, float(other["worst"]))
        for name, count in other.get("error_types", {}).items():
            self.error_types[name] = self.error_types.get(name, 0) + int(count)

    def counts(self) -> dict[str, Any]:
        """This row's numbers, for sending from another process to ``merge``."""
        return {
            "operations": self.operations,
            "errors": self.errors,
            "wrong": self.wrong,
            "worst": self.worst,
            "error_types": dict(self.error_types),
        }


_ROWS = pytest.StashKey[list[Tally]]()
_CALL_REPORT = pytest.StashKey[pytest.TestReport]()


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--reliability-report",
        action="store_true",
        default=False,
        help="print the table of faults and hostile inputs tried by tests/reliability",
    )


def pytest_configure(config: pytest.Config) -> None:
    config.stash[_ROWS] = []


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    report = yield
    if report.when == "call" or (report.when == "setup" and report.outcome != "passed"):
        item.stash[_CALL_REPORT] = report
    return report


def _outcome(item: pytest.Item) -> str:
    report = item.stash.get(_CALL_REPORT, None)
    if report is None:
        return "?"
    if hasattr(report, "wasxfail"):
        return "xfail" if report.skipped else "XPASS"
    return report.outcome


@pytest.fixture
def tally(request: pytest.FixtureRequest) -> Iterator[Callable[..., Tally]]:
    """A factory of report rows: ``tally("redis refuses connections", layer="observe")``."""
    made: list[Tally] = []

    def new(scenario: str, layer: str = "observe") -> Tally:
        row = Tally(scenario, layer)
        made.append(row)
        return row

    yield new
    outcome = _outcome(request.node)
    rows = request.config.stash.get(_ROWS, [])
    for row in made:
        row.outcome = f"{outcome}: {row.note}" if row.note else outcome
        rows.append(row)


def _format_latency(seconds: float, operations: int) -> str:
    if not operations:
        return "-"
    if seconds < 1.0:
        return f"{seconds * 1000:.1f} ms"
    return f"{seconds:.2f} s"


def render_table(rows: list[Tally]) -> list[str]:
    """The report as text lines, one row per tally."""
    header = ("fault or hostile input", "via", "ops", "errors", "wrong", "worst", "test")
    body = [
        (
            row.scenario,
            row.layer,
            str(row.operations),
            str(row.errors)
            + (
                " (" + ", ".join(f"{n}x{k}" for k, n in sorted(row.error_types.items())) + ")"
                if row.error_types and row.layer != "observe"
                else ""
            ),
            str(row.wrong),
            _format_latency(row.worst, row.operations),
            row.outcome,
        )
        for row in rows
    ]
    widths = [max(len(cells[i]) for cells in [header, *body]) for i in range(len(header))]
    right = {2, 3, 4, 5}

    def line(cells: tuple[str, ...]) -> str:
        return "  ".join(
            cell.rjust(widths[i]) if i in right else cell.ljust(widths[i])
            for i, cell in enumerate(cells)
        ).rstrip()

    rule = "  ".join("-" * w for w in widths)
    return [line(header), rule, *(line(cells) for cells in body)]


def pytest_terminal_summary(terminalreporter: Any, config: pytest.Config) -> None:
    if not config.getoption("reliability_report", default=False):
        return
    ran = config.stash.get(_ROWS, [])
    rows = [row for row in ran if row.outcome != "skipped"]
    terminalreporter.section("reliability report")
    if not rows:
        terminalreporter.write_line("no reliability scenarios ran")
        return
    for text in render_table(rows):
        terminalreporter.write_line(text)
    observe = [r for r in rows if r.layer == "observe"]
    terminalreporter.write_line(
        f"{len(rows)} scenarios, {sum(r.operations for r in rows)} operations; "
        f"through observe: {sum(r.errors for r in observe)} errors surfaced; "
        f"wrong values: {sum(r.wrong for r in rows if r.outcome != 'xfail')} "
        f"(+{sum(r.wrong for r in rows if r.outcome == 'xfail')} in xfail rows: known bugs); "
        f"{len(ran) - len(rows)} skipped"
    )


@pytest.fixture
def black_hole() -> Iterator[BlackHoleServer]:
    """A loopback TCP server that accepts connections and never answers."""
    with BlackHoleServer() as server:
        yield server


@pytest.fixture
def refusing_port() -> Iterator[RefusingPort]:
    """A loopback port that refuses every connection (bound, never listening)."""
    with RefusingPort() as port:
        yield port
