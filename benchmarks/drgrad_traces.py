"""What DRGrad's router and updater see on Census: cos(g1, g2), norm ratio and mu' per step.

Census-Income (KDD), income (task 1) and never-married (task 2), the matched
MMoE and DRGrad in paper mode (Split-MMoE + router + cumulative updater) of
``benchmarks.drgrad_census``. For each, ``--steps`` Adam steps at batch 256 and
``--lr`` are traced (``drgrad_synthetic.gradient_trace``), recording before each
update:

* ``cos``: the cosine of the two tasks' gradients on the shared parameters (the
  experts), the conflict the router acts on;
* ``ratio``: their norm ratio ||g1|| / ||g2||;
* ``mu1``: the updater's mixing weight mu' of the split primary tower (0.5 for
  a model without one);
* ``xi_aux``: DRGrad's own routing cosine cos(g1', g2), whose sign decides
  whether task 2's gradient enters T1' (docs/drgrad.md, *The router*).

The table gives, per method, mean ± std over ``--seeds`` training seeds: the
share of steps with ``cos >= 0`` and with ``xi_aux >= 0``, mean |cos|, the
median norm ratio over the second half, and mu' after 1, 10, 20 and 200 steps
and at the end; the figure draws seed 0's traces. A full run (not ``--quick``)
writes both between the ``drgrad-traces`` markers of ``benchmarks/RESULTS.md``
(``--results PATH`` overrides); ``--from-json PATH`` re-renders them.

Usage: ``python -m benchmarks.drgrad_traces [--quick] [--json PATH] [--data DIR]
[--steps N] [--seeds N] [--lr LR] [--from-json PATH]``
"""

from __future__ import annotations

import json
import pathlib
import time

import numpy as np

from benchmarks import _common
from benchmarks.drgrad_census import all_methods, subsample
from benchmarks.drgrad_synthetic import (
    TRACE_MU_STEPS,
    gradient_trace,
    plot_trace_series,
    thin,
    trace_summary,
)
from benchmarks.mmoe_census import generated_census
from drgrad_jax import data

MARKER = "drgrad-traces"
METHODS = ("MMoE", "DRGrad (paper mode)")
MU_STEPS = TRACE_MU_STEPS
FIGURE = "drgrad_census_traces.png"


def _cell(seeds: list[dict], key: str, fmt: str) -> str:
    """``key`` over the seeds' summaries as ``mean ± std`` (``–`` where it is undefined)."""
    v = np.asarray([x.get(key, np.nan) for x in seeds], dtype=float)
    if np.all(np.isnan(v)):
        return "–"
    return f"{v.mean():{fmt}} ± {v.std():{fmt}}" if len(v) > 1 else f"{v[0]:{fmt}}"


def markdown(payload: dict) -> str:
    """The section: header, table, figure and a reading computed from the numbers."""
    s = payload["summaries"]
    head = (
        f"## What DRGrad's router and updater see on Census (`python -m benchmarks.drgrad_traces`)"
        f"\n\nData: {payload['data']}. {payload['steps']} Adam steps, batch 256, lr "
        f"{payload['lr']:g}; mean ± std over {payload['seeds']} training seeds (figure: seed 0). "
        f"cos is cos(g1, g2) on the shared experts; xi_aux is DRGrad's routing cosine "
        f"cos(g1', g2), whose sign routes task 2's gradient into T1'.\n"
    )
    mu_cols = [f"mu' after {k}" for k in MU_STEPS if k < payload["steps"]]
    cols = ["method", "steps with cos ≥ 0", "mean abs cos", "steps with xi_aux ≥ 0", *mu_cols]
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for name, seeds in s.items():
        mus = [_cell(seeds, f"mu1_after_{k}", ".4f") for k in MU_STEPS if k < payload["steps"]]
        if name == "MMoE":  # no split tower: mu' is a constant 0.5, not a measurement
            mus = ["–"] * len(mus)
        row = [name, *(_cell(seeds, k, ".3f") for k in ("cos_nonneg", "mean_abs_cos"))]
        lines.append("| " + " | ".join(row + [_cell(seeds, "xi_aux_nonneg", ".3f"), *mus]) + " |")
    drg = s.get("DRGrad (paper mode)", [])
    reading = ""
    if drg:
        flip = np.mean([x["xi_aux_nonneg"] for x in drg])
        sat = [k for k in MU_STEPS if k < payload["steps"]]
        at = {k: np.mean([x[f"mu1_after_{k}"] for x in drg]) for k in sat}
        first = next((k for k in sat if at[k] > 0.99), None)
        reading = (
            f"\n*Reading:* DRGrad routes task 2 into T1' on {flip:.1%} of steps (xi_aux ≥ 0); "
            + (
                f"mu' exceeds 0.99 after {first} steps: the split tower is then T1' alone "
                f"(T1'' enters with weight 1 − mu')."
                if first is not None
                else f"mu' stays at or below {max(at.values()):.3f} over the traced steps."
            )
        )
    figure = (
        f"\n\n![cos(g1, g2), norm ratio and mu' per step, MMoE vs DRGrad on Census]"
        f"(figures/{FIGURE})\n\n*Reading:* the two tasks' gradient cosine and norm ratio on the "
        f"shared experts, and DRGrad's mixing weight mu', step by step (seed 0)."
    )
    return head + "\n" + "\n".join(lines) + "\n" + reading + figure


def render(payload: dict, results_md: pathlib.Path) -> None:
    """Writes the section and its figure beside ``results_md``."""
    plot_trace_series(payload["series"], _common.figures_dir(results_md) / FIGURE)
    _common.write_results_span(MARKER, markdown(payload), results_md)


def main(argv: list[str] | None = None) -> dict:
    p = _common.parser(__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=None, help="default 200 quick, 1000 full")
    p.add_argument("--seeds", type=int, default=None, help="default 1 quick, 3 full")
    p.add_argument("--lr", type=float, default=3e-3, help="Adam learning rate")
    p.add_argument("--results", default=None, help="RESULTS.md to update (full mode default)")
    p.add_argument("--from-json", default=None, help="re-render RESULTS.md from a saved run")
    args = p.parse_args(argv)
    results_md = pathlib.Path(args.results or _common.RESULTS_MD)
    if args.from_json:
        payload = json.loads(pathlib.Path(args.from_json).read_text())
        if payload.get("quick"):
            raise ValueError(
                f"--from-json {args.from_json}: a quick run; RESULTS.md holds full runs."
            )
        render(payload, results_md)
        return payload
    steps = args.steps or (200 if args.quick else 1000)
    seeds = args.seeds or (1 if args.quick else 3)
    start = time.perf_counter()
    path = _common.data_dir("census-income-kdd", args.data)
    d = data.load_census_income(path) if path is not None else generated_census()
    if args.quick:
        d = subsample(d, 8000, 4000)
    print(f"[data] {d.description}")
    sizes = {"experts": 8, "expert_width": 32, "tower": 16, "embed": 4}
    by_name = {m.name: m for m in all_methods(d, sizes)}
    summaries, series = {}, {}
    for name in _common.rows(METHODS, "drgrad_traces methods"):
        runs = [
            gradient_trace(by_name[name], d, steps=steps, batch_size=256, lr=args.lr, seed=s)
            for s in range(seeds)
        ]
        summaries[name] = [trace_summary(tr) for tr in runs]
        series[name] = thin(runs[0])
    payload = {
        "data": d.description,
        "steps": steps,
        "seeds": seeds,
        "lr": args.lr,
        "quick": args.quick,
        "summaries": summaries,
        "series": series,
        "duration_s": time.perf_counter() - start,
    }
    print("\n" + markdown(payload))
    print(f"duration: {payload['duration_s']:.1f}s")
    _common.write_json(args.json, payload)
    if args.results or not args.quick:
        render(payload, results_md)
    return payload


if __name__ == "__main__":
    main()
