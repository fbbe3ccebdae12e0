"""Shared pieces of the benchmark scripts: arguments, timing, data location, JSON."""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import statistics
import time
from collections.abc import Callable

import jax

REPO_ROOT = pathlib.Path(__file__).resolve().parent.parent
DEFAULT_DATA = REPO_ROOT.parent / "shared" / "data"


def parser(description: str) -> argparse.ArgumentParser:
    """An argument parser with the flags every benchmark takes."""
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--quick", action="store_true", help="small sizes, a few minutes on 2 CPUs")
    p.add_argument("--json", default=None, help="write the results as JSON to this path")
    p.add_argument(
        "--data", default=None, help="data root (default: $DRGRAD_DATA or ../shared/data)"
    )
    return p


def data_dir(name: str, given: str | None = None) -> pathlib.Path | None:
    """The directory of a real data set, or None when it is absent (says which)."""
    root = pathlib.Path(given or os.environ.get("DRGRAD_DATA", DEFAULT_DATA))
    path = root / name
    if path.exists():
        print(f"[data] using real data at {path}")
        return path
    print(f"[data] {path} not found: using generated data")
    return None


def time_fn(fn: Callable, *args, iters: int = 20, warmup: int = 2) -> dict:
    """Compile time and steady-state step times of ``fn(*args)`` (blocks on results).

    Returns a dict with ``compile_s`` (first call), ``median_s`` and ``times_s``.
    """
    start = time.perf_counter()
    jax.block_until_ready(fn(*args))
    compile_s = time.perf_counter() - start
    for _ in range(warmup):
        jax.block_until_ready(fn(*args))
    times = []
    for _ in range(iters):
        start = time.perf_counter()
        jax.block_until_ready(fn(*args))
        times.append(time.perf_counter() - start)
    return {"compile_s": compile_s, "median_s": statistics.median(times), "times_s": times}


def time_interleaved(
    fns: dict[str, Callable], args: dict[str, tuple], *, rounds: int = 5, iters: int = 10
) -> dict[str, dict]:
    """Times several functions in interleaved rounds so drift hits all alike.

    Returns per name: ``compile_s`` and ``median_s`` over all rounds' steps.
    """
    out = {}
    for name, fn in fns.items():
        start = time.perf_counter()
        jax.block_until_ready(fn(*args[name]))
        out[name] = {"compile_s": time.perf_counter() - start, "times_s": []}
        jax.block_until_ready(fn(*args[name]))
    for _ in range(rounds):
        for name, fn in fns.items():
            for _ in range(iters):
                start = time.perf_counter()
                jax.block_until_ready(fn(*args[name]))
                out[name]["times_s"].append(time.perf_counter() - start)
    for rec in out.values():
        rec["median_s"] = statistics.median(rec["times_s"])
        del rec["times_s"]
    return out


def write_json(path: str | None, payload: dict) -> None:
    """Writes ``payload`` as indented JSON when a path is given."""
    if path:
        pathlib.Path(path).parent.mkdir(parents=True, exist_ok=True)
        pathlib.Path(path).write_text(json.dumps(payload, indent=2, sort_keys=True))
        print(f"[json] wrote {path}")
