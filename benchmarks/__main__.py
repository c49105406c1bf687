"""Run every ``benchmarks/bench_*.py`` suite (or those named) and print one table."""

from __future__ import annotations

import argparse
import importlib
import pkgutil
import sys

import benchmarks
from benchmarks._harness import Comparison, ratio, report, run


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="make bench",
        description=__doc__,
        epilog="Throughput and tails under concurrency: make load (python -m benchmarks.load).",
    )
    parser.add_argument("areas", nargs="*", help="suites to run, e.g. memory sqlite (default: all)")
    parser.add_argument("--strict", action="store_true", help="exit 1 when a target is missed")
    args = parser.parse_args(argv)
    names = sorted(
        m.name for m in pkgutil.iter_modules(benchmarks.__path__) if m.name.startswith("bench_")
    )
    if args.areas:
        names = [n for n in names if n.removeprefix("bench_") in args.areas]
    done: list[Comparison] = []
    for name in names:
        module = importlib.import_module(f"benchmarks.{name}")
        print(f"# {name} ...", file=sys.stderr, flush=True)
        for comparison in module.suite():
            done.append(run(comparison))
            print(f"  {comparison.name}: {ratio(comparison):.3f}", file=sys.stderr, flush=True)
    print(report(done))
    missed = [c for c in done if c.target is not None and ratio(c) > c.target]
    return 1 if (args.strict and missed) else 0


if __name__ == "__main__":
    raise SystemExit(main())
