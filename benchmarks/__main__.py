"""Runs the registered benchmarks in quick mode: ``python -m benchmarks [--all] [--full] [NAME ...]``."""

from __future__ import annotations

import argparse
import importlib
import pathlib
import sys
import time

from benchmarks import BENCHMARKS, SLOW_BENCHMARKS


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__)
    parser.add_argument("names", nargs="*", help=f"subset to run (default: {BENCHMARKS})")
    parser.add_argument(
        "--all",
        action="store_true",
        help=f"also run the slow table reproductions {SLOW_BENCHMARKS}",
    )
    parser.add_argument("--full", action="store_true", help="full sizes instead of --quick")
    parser.add_argument("--out", default=str(pathlib.Path(__file__).parent / "out"))
    args = parser.parse_args(argv)
    known = BENCHMARKS + SLOW_BENCHMARKS
    names = args.names or (known if args.all else BENCHMARKS)
    unknown = sorted(set(names) - set(known))
    if unknown:
        parser.error(f"unknown benchmark(s) {unknown}; choose from {known}")
    out = pathlib.Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    failures = []
    for name in names:
        print(f"\n=== benchmarks.{name} ===", flush=True)
        start = time.perf_counter()
        module = importlib.import_module(f"benchmarks.{name}")
        bench_argv = ["--json", str(out / f"{name}.json")]
        if not args.full:
            bench_argv.append("--quick")
        try:
            module.main(bench_argv)
        except Exception as e:  # report every benchmark, then fail at the end
            failures.append(name)
            print(f"benchmarks.{name} FAILED: {type(e).__name__}: {e}", flush=True)
        print(f"=== {name} took {time.perf_counter() - start:.1f}s ===", flush=True)
    print(f"\nJSON results in {out}")
    if failures:
        print(f"failed: {failures}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
