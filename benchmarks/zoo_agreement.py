"""How closely does each zoo method follow its reference? One row per (method, reference).

For every public multi-task method of ``drgrad_jax`` this runs the comparisons
of the oracle tests (``tests/zoo_checks.py``, which ``tests/test_zoo_oracles.py``
runs one check and K at a time: same inputs, seeds, hyperparameters, tolerance)
and reports, over all of a check's inputs:

* ``max_abs``: the largest ``|ours - reference|`` of any entry;
* ``max_rel``: the largest ``max |ours - reference| / max |reference|`` of any input;
* ``max_scaled``: the largest ``max |ours - reference| / max(1, max |reference|)``,
  the quantity the tests' tolerance ``tol`` bounds;
* ``within_tol``: every entry meets the tests' criterion
  ``|ours - reference| <= tol * (max(1, max |reference|) + |reference|)``.

NumPy checks run at K = 2, 3 and 4 (Krum at 3 and 4: it needs
``n_byzantine + 3`` tasks); TorchJD checks (TorchJD 0.18, recorded in
``tests/fixtures/torchjd_outputs.npz``) run over every recorded case, at the
task counts recorded (2, 3, 5 for most; marked "rec." in the table).
``--speed-json PATH`` adds the step-cost ratios of a ``benchmarks.mtl_speed``
run (K = 2 and 4, parameter and representation level) as columns; methods that
run did not time show a dash. The table is the one in
(docs/drgrad.md, *Method table*).

Usage: ``python -m benchmarks.zoo_agreement [--json PATH] [--speed-json PATH] [--methods ...]``
"""

from __future__ import annotations

import argparse
import json
import pathlib
import time

import numpy as np

from benchmarks import _common
from tests import zoo_checks

COST_COLUMNS = (("K=2 params", 2, "params"), ("K=2 rep", 2, "rep"))
COST_COLUMNS += (("K=4 params", 4, "params"), ("K=4 rep", 4, "rep"))


def measure(check: zoo_checks.Check) -> dict:
    """Runs one check over its task counts; its deviations, tolerance and pass flag."""
    max_abs = max_rel = max_scaled = 0.0
    within, n = True, 0
    for k in (None,) if check.recorded else check.ks:
        for actual, expected in check.run(k):
            a = np.asarray(actual, np.float64).ravel()
            e = np.asarray(expected, np.float64).ravel()
            if a.shape != e.shape:
                raise ValueError(f"{check.method}: shape {a.shape} vs reference {e.shape}")
            err = np.abs(a - e)
            top = float(np.max(np.abs(e)))
            max_abs = max(max_abs, float(err.max()))
            max_rel = max(max_rel, float(err.max()) / top if top > 0 else float(err.max()))
            max_scaled = max(max_scaled, float(err.max()) / max(1.0, top))
            within &= bool(np.all(err <= check.tol * (max(1.0, top) + np.abs(e))))
            n += 1
    return {
        "method": check.method,
        "reference": check.reference,
        "ks": list(check.ks),
        "recorded": check.recorded,
        "inputs": n,
        "max_abs": max_abs,
        "max_rel": max_rel,
        "max_scaled": max_scaled,
        "tol": check.tol,
        "within_tol": within,
    }


def costs(speed: dict | None, method: str) -> dict:
    """``{column: ratio}`` of one method from a ``benchmarks.mtl_speed`` payload (None: absent)."""
    ratios = (speed or {}).get("ratios", {})
    return {col: ratios.get(f"{method}_K{k}_{level}") for col, k, level in COST_COLUMNS}


def table(rows: list[dict], speed: dict | None = None) -> str:
    """The markdown table: one row per check, the costs on each method's first row."""
    head = ["method", "reference", "K", "max abs dev", "max rel dev", "test tol", "ok"]
    if speed is not None:
        head += [c for c, _, _ in COST_COLUMNS]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    seen = set()
    for r in rows:
        ks = ", ".join(map(str, r["ks"])) + (" (rec.)" if r["recorded"] else "")
        cells = [r["method"] if r["method"] not in seen else "", r["reference"], ks]
        cells += [f"{r['max_abs']:.1e}", f"{r['max_rel']:.1e}", f"{r['tol']:.0e}"]
        cells.append("yes" if r["within_tol"] else "NO")
        if speed is not None:
            first = r["method"] not in seen
            cells += [
                f"{v:.2f}" if first and v is not None else ("–" if first else "")
                for v in r["costs"].values()
            ]
        seen.add(r["method"])
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--json", default=None, help="write the rows as JSON to this path")
    p.add_argument("--speed-json", default=None, help="a benchmarks.mtl_speed --json output")
    p.add_argument("--methods", nargs="*", default=None, help="subset of methods")
    args = p.parse_args(argv)
    unknown = sorted(set(args.methods or ()) - set(zoo_checks.METHODS))
    if unknown:
        p.error(f"--methods: unknown {unknown}; choose from {list(zoo_checks.METHODS)}")
    speed = json.loads(pathlib.Path(args.speed_json).read_text()) if args.speed_json else None
    start = time.perf_counter()
    rows = []
    for check in zoo_checks.CHECKS:
        if args.methods and check.method not in args.methods:
            continue
        row = measure(check)
        row["costs"] = costs(speed, check.method)
        rows.append(row)
        print(
            f"[zoo_agreement] {row['method']:22s} {row['reference'][:48]:48s} "
            f"abs {row['max_abs']:.1e} rel {row['max_rel']:.1e} tol {row['tol']:.0e}",
            flush=True,
        )
    text = table(rows, speed)
    print(text)
    payload = {
        "rows": rows,
        "markdown": text,
        "methods": sorted({r["method"] for r in rows}),
        "all_within_tol": all(r["within_tol"] for r in rows),
        "speed_json": args.speed_json,
        "speed_quick": None if speed is None else speed.get("quick"),
        "wall_s": time.perf_counter() - start,
    }
    _common.write_json(args.json, payload)
    return payload


if __name__ == "__main__":
    main()
