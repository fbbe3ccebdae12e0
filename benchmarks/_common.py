"""Shared pieces of the benchmark scripts: arguments, timing, data location, JSON."""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import statistics
import time
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import jax

from drgrad_jax import loop

REPO_ROOT = pathlib.Path(__file__).resolve().parent.parent
DEFAULT_DATA = REPO_ROOT.parent / "shared" / "data"
COMPILATION_CACHE = REPO_ROOT / "benchmarks" / "out" / "jax-cache"


def use_compilation_cache() -> str | None:
    """Turns on JAX's persistent compilation cache for the benchmarks; returns its directory.

    A second run of a benchmark loads its programs instead of compiling them.
    The directory is ``$JAX_COMPILATION_CACHE_DIR`` when set, else
    ``benchmarks/out/jax-cache``; ``DRGRAD_COMPILATION_CACHE=0`` turns it off.
    A cache already configured (e.g. by the test suite) is left as it is. The
    speed benchmarks report ``compile_s`` per step function next to whether the
    cache was on, since a warm cache turns compile time into load time.
    """
    if os.environ.get("DRGRAD_COMPILATION_CACHE", "1").lower() in ("0", "off", "false", "no"):
        return None
    if jax.config.jax_compilation_cache_dir:
        return jax.config.jax_compilation_cache_dir
    path = os.environ.get("JAX_COMPILATION_CACHE_DIR") or str(COMPILATION_CACHE)
    jax.config.update("jax_compilation_cache_dir", path)
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.5)
    return path


CACHE_DIR = use_compilation_cache()


def rows(
    items: Iterable[Any], desc: str, *, leave: bool = True, unit: str = "row"
) -> Iterator[Any]:
    """``items`` with an ``i/N`` bar and ETA on standard error (``loop.progress_rows``).

    Shown in an interactive session, hidden under pytest or with
    ``DRGRAD_PROGRESS=0``; lines printed meanwhile pass above the bar, so the
    tables on standard output stay clean.
    """
    items = list(items)
    return loop.progress_rows(items, desc=desc, total=len(items), leave=leave, unit=unit)


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


def _compile_all(steps: dict[str, tuple[Callable, tuple]]) -> dict[str, dict]:
    """Calls each ``fn(*args)`` twice (compile, then warm up); records ``compile_s``, empty ``times_s``.

    An ``i/N`` bar counts the functions compiled (``rows``): on a CPU each can take minutes.
    """
    out = {}
    for name, (fn, args) in rows(steps.items(), "compiling", leave=False, unit="fn"):
        start = time.perf_counter()
        jax.block_until_ready(fn(*args))
        out[name] = {"compile_s": time.perf_counter() - start, "times_s": []}
        jax.block_until_ready(fn(*args))
    return out


def time_interleaved(
    fns: dict[str, Callable], args: dict[str, tuple], *, rounds: int = 5, iters: int = 10
) -> dict[str, dict]:
    """Times several functions in interleaved rounds so drift hits all alike.

    A bar counts the rounds (``rows``), erased when the timing ends.

    Returns per name: ``compile_s`` and ``median_s`` over all rounds' steps.
    """
    out = _compile_all({name: (fn, args[name]) for name, fn in fns.items()})
    for _ in rows(range(rounds), "timing rounds", leave=False, unit="round"):
        for name, fn in fns.items():
            for _ in range(iters):
                start = time.perf_counter()
                jax.block_until_ready(fn(*args[name]))
                out[name]["times_s"].append(time.perf_counter() - start)
    for rec in out.values():
        rec["median_s"] = statistics.median(rec["times_s"])
        del rec["times_s"]
    return out


def time_paired(steps: dict, *, rounds: int, baseline: str = "plain") -> dict[str, dict]:
    """Times every step back to back with the baseline step, in alternating order.

    ``steps`` maps a name to ``(fn, args)``; ``fn(*args)`` is one step.

    Each round times, for every step, one call of it and one call of the
    baseline right next to each other (baseline first in even rounds, second in
    odd ones), so the pair sees the same machine state: on a shared machine
    its overall speed drifts by tens of percent within a minute, which a
    ratio of separately gathered statistics would fold into the result.

    Returns, per step: ``compile_s``, ``times_s`` (its calls) and ``pair_ratios``
    (its time over the baseline's time in the same pair; absent for the baseline).
    """
    out = _compile_all(steps)

    def once(name):
        fn, args = steps[name]
        start = time.perf_counter()
        jax.block_until_ready(fn(*args))
        elapsed = time.perf_counter() - start
        out[name]["times_s"].append(elapsed)
        return elapsed

    for r in rows(range(rounds), "timing rounds", leave=False, unit="round"):
        for name in steps:
            if name == baseline:
                continue
            if r % 2 == 0:
                base, mine = once(baseline), once(name)
            else:
                mine, base = once(name), once(baseline)
            out[name].setdefault("pair_ratios", []).append(mine / base)
    return out


def summarize_paired(rec: dict) -> dict:
    """Median and minimum of a step's times, and the median of its paired ratios."""
    summary = {
        "median_s": statistics.median(rec["times_s"]),
        "min_s": min(rec["times_s"]),
        "compile_s": rec["compile_s"],
    }
    if "pair_ratios" in rec:
        summary["ratio"] = statistics.median(rec["pair_ratios"])
    return summary


def write_json(path: str | None, payload: dict) -> None:
    """Writes ``payload`` as indented JSON when a path is given."""
    if path:
        pathlib.Path(path).parent.mkdir(parents=True, exist_ok=True)
        pathlib.Path(path).write_text(json.dumps(payload, indent=2, sort_keys=True))
        print(f"[json] wrote {path}")


RESULTS_MD = REPO_ROOT / "benchmarks" / "RESULTS.md"


def write_results_span(marker: str, section: str, path: pathlib.Path | None = None) -> None:
    """Replaces only the span ``<!-- marker:begin -->`` .. ``<!-- marker:end -->`` of ``path``.

    ``path`` defaults to ``benchmarks/RESULTS.md``.

    The span is appended when absent, and the file created when missing; the
    rest of the file is left untouched, so each benchmark owns its own span.
    """
    begin, end = f"<!-- {marker}:begin -->", f"<!-- {marker}:end -->"
    block = f"{begin}\n{section}\n{end}"
    path = pathlib.Path(path or RESULTS_MD)
    text = (
        path.read_text()
        if path.exists()
        else "# Benchmark results\n\nRegenerated by the benchmark scripts; do not edit by hand.\n"
    )
    if begin in text and end in text:
        head, rest = text.split(begin, 1)
        text = head + block + rest.split(end, 1)[1]
    else:
        text = text.rstrip("\n") + "\n\n" + block + "\n"
    path.write_text(text)
    print(f"[results] wrote the {marker} span of {path}")


FIGURES_DIR = REPO_ROOT / "benchmarks" / "figures"


def pyplot():
    """matplotlib's pyplot on the file-only Agg backend (benchmarks draw to PNG files)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_figure(fig, path: pathlib.Path, dpi: int = 72) -> pathlib.Path:
    """Writes ``fig`` as a small PNG: low resolution, 64-colour palette (tens of kB).

    Line plots use few colours, so the palette keeps them legible while noisy
    per-step traces compress several times better than in full RGBA.
    """
    from PIL import Image

    path = pathlib.Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=dpi, metadata={"Software": None})
    pyplot().close(fig)
    with Image.open(path) as im:
        small = im.convert("RGB").quantize(colors=64)
    small.save(path, optimize=True)
    print(f"[plot] wrote {path} ({path.stat().st_size / 1024:.0f} kB)")
    return path


def figures_dir(results: pathlib.Path | None) -> pathlib.Path:
    """Where the figures linked from ``results`` (a RESULTS.md) live: ``figures/`` beside it."""
    return FIGURES_DIR if results is None else pathlib.Path(results).parent / "figures"
