"""DRGrad's Table 3 (Census columns) and Table 5 ablation: income / marital AUC of every method.

Census-Income (KDD), income (task 1, primary) and never-married (task 2).
Rows: SharedBottom, MMoE, Split-MMoE, PLE (parameter counts matched to the
Split-MMoE that DRGrad trains), the matched MMoE trained on income alone
(``ALONE``: its income AUC minus MMoE's measures the negative transfer a
router could undo), every multi-task method of the zoo on the
matched MMoE (the paper's baselines PCGrad, CAGrad, Nash-MTL, and MGDA, GradVac,
IMTL-G, Aligned-MTL, UPGrad, DWA, uncertainty weighting, linear scalarization,
then ``NEW_ZOO``: ConFIG, DualProj, FairGrad, ExcessMTL, MoDo, SDMGrad, CR-MOGM,
MoCo, GradDrop, random weighting, mean, FAMO, STCH, IMTL-L, GLS, RLW, DB-MTL,
GradNorm), a tuned equal-weighting row (a wider rate grid, ``TUNED_LRS``), and
DRGrad without the personalized gate: paper mode (Split-MMoE + router +
cumulative updater) and the authors' released-code mode (their rule on the
first dense kernel of each head of their PLE, with their setup:
``RELEASED_SETUP``). Ablation (Table 5 and docs/drgrad.md, *Ablations*):
Split-MMoE, + router (``updater="fixed"``), + updater alone (``router=False``),
both; DRGrad variants (activation space, with and without the updater; as-printed
pairing; mean / EMA updater).

Seeds and learning rates are one program per method (``sweep_learning_rates``);
the rate is chosen on validation task-1 AUC only, and the test AUC is read at the
epoch of best validation task-1 AUC (``select_by_validation(result, rule=0)``:
income is the primary task, as in the paper; the marital AUC reported is the
one at that epoch). DRGrad is compared with MMoE and with the
best baseline by a paired t-test over seeds (same seed keys: same data order).
The table with the split is written between the ``drgrad`` markers of
``benchmarks/RESULTS.md`` (full mode with every row only; ``--results PATH``
overrides).

``--from-json PATH`` re-renders that span from a saved full-run JSON. Rendering
also draws the figures the section links, as small PNGs in ``benchmarks/figures/``
(beside the RESULTS.md written): a forest plot of each method's paired income-AUC
difference from MMoE with its 95% interval over seeds. The per-step gradient
traces of MMoE and DRGrad are ``benchmarks.drgrad_traces``.

``--quick`` (the main job's form) trains five rows on the first 20,000 training rows
for 2 epochs at lr 3e-3 over 2 seeds: enough for MMoE to reach about 0.935 income AUC
on the real data, too little to separate methods, so it runs no paired tests.

Usage: ``python -m benchmarks.drgrad_census [--quick] [--json PATH] [--data DIR] [--from-json PATH]``
"""

from __future__ import annotations

import dataclasses
import functools
import json
import pathlib
import time

import numpy as np
import optax
from flax import nnx

import drgrad_jax
from benchmarks import _common
from benchmarks._rows import Method, num_params, paired, run_method
from benchmarks.mmoe_census import generated_census
from drgrad_jax import data, models

RESULTS_MD = _common.REPO_ROOT / "benchmarks" / "RESULTS.md"
BEGIN, END = "<!-- drgrad:begin -->", "<!-- drgrad:end -->"

PAPER_TABLE3 = {  # Census (income AUC, marital AUC)
    "MMoE": (0.9387, 0.9927),
    "Split-MMoE": (0.9393, 0.9928),
    "PLE": (0.9522, 0.9945),
    "PCGrad": (0.9506, 0.9931),
    "CAGrad": (0.9521, 0.9929),
    "Nash-MTL": (0.9534, 0.9946),
    "DRGrad (paper mode)": (0.9550, 0.9949),
}

# Gradient- and loss-level methods added to the zoo after the paper's baselines (the
# two-task ones: Krum and TrimmedMean need three or more tasks to discard any).
NEW_ZOO = {
    "ConFIG": lambda m: drgrad_jax.conflict_free(),
    "DualProj": lambda m: drgrad_jax.dualproj(),
    "FairGrad": lambda m: drgrad_jax.fairgrad(num_tasks=2),
    "ExcessMTL": lambda m: drgrad_jax.excess_mtl(num_tasks=2),
    "MoDo": lambda m: drgrad_jax.modo(num_tasks=2),
    "SDMGrad": lambda m: drgrad_jax.sdmgrad(num_tasks=2),
    "CR-MOGM": lambda m: drgrad_jax.cr_mogm(num_tasks=2),
    "MoCo": lambda m: drgrad_jax.moco(num_tasks=2),
    "GradDrop": lambda m: drgrad_jax.graddrop(num_tasks=2),
    "Random weighting": lambda m: drgrad_jax.random_weighting(num_tasks=2),
    "Mean": lambda m: drgrad_jax.mean(),
    "FAMO": lambda m: drgrad_jax.famo(num_tasks=2),
    "STCH": lambda m: drgrad_jax.stch(num_tasks=2),
    "IMTL-L": lambda m: drgrad_jax.imtl_l(num_tasks=2),
    "GLS (geometric mean)": lambda m: drgrad_jax.geometric_mean(num_tasks=2),
    "RLW": lambda m: drgrad_jax.rlw(num_tasks=2),
    "DB-MTL": lambda m: drgrad_jax.db_mtl(num_tasks=2),
    "GradNorm": lambda m: drgrad_jax.gradnorm(num_tasks=2, layer="experts"),
}
TUNED_LRS = (3e-4, 1e-3, 3e-3, 1e-2)  # equal weighting, tuned on a wider grid
# The released code routes the first dense kernel of each head, and trains with salary
# positives x3 and Adam(5e-4, beta2 = 0.9999) on batches of 32; here batches of 128 (to fit
# two CPU cores) and the same rate, with the number of epochs of every other row.
RELEASED_HEADS = {
    "head:0": "towers/0/mlp/layers/0/kernel",
    "head:1": "towers/1/mlp/layers/0/kernel",
}
RELEASED_SETUP = dict(
    optimizer=lambda lr: optax.adam(lr, b2=0.9999),
    lrs=(5e-4,),
    batch_size=128,
    pos_weights=(3.0, 1.0),
)

BASELINES = (
    "SharedBottom",
    "MMoE",
    "Split-MMoE",
    "PLE",
    "PCGrad",
    "CAGrad",
    "Nash-MTL",
    "MGDA",
    "GradVac",
    "IMTL-G",
    "Aligned-MTL",
    "UPGrad",
    "DWA",
    "Uncertainty weighting",
    "Linear scalarization",
    *NEW_ZOO,
    "Equal weighting (tuned)",
)
ALONE = "MMoE, income alone"  # the matched MMoE on the income loss only: negative transfer
QUICK = ("MMoE", "Split-MMoE", "PCGrad", "DRGrad (paper mode)", "+ router (fixed mu)")
ROWS = (  # the table's order (a JSON round trip sorts the keys)
    *BASELINES[:2],
    ALONE,
    *BASELINES[2:],
    "DRGrad (paper mode)",
    "DRGrad (released-code mode)",
    "+ router (fixed mu)",
    "+ updater (no router)",
    "DRGrad, activation space",
    "+ router (fixed mu), activation space",
    "DRGrad, as-printed pairing",
    "DRGrad, mean updater",
    "DRGrad, EMA updater",
)


def in_table_order(rows: dict, name=lambda key: key) -> dict:
    """``rows`` sorted as the table lists its methods (unknown names last, as given)."""
    rank = lambda key: ROWS.index(name(key)) if name(key) in ROWS else len(ROWS)
    return dict(sorted(rows.items(), key=lambda kv: rank(kv[0])))


def all_methods(d: data.MultiTaskData, sizes: dict) -> list[Method]:
    """Every row, with widths matched to the Split-MMoE's parameter count."""
    v, nd = d.vocab_sizes, d.num_dense
    e, t, emb = sizes["experts"], (sizes["tower"],), sizes["embed"]
    split = functools.partial(
        models.SplitMMoE, v, nd, 2, embed_dim=emb, num_experts=e,
        expert_hidden=(sizes["expert_width"],), tower=t,
    )  # fmt: skip
    target = num_params(split)

    def matched(build):
        width, _ = models.match_width(lambda w: build(w)(rngs=nnx.Rngs(0)), target)
        return build(width)

    mmoe = matched(
        lambda w: functools.partial(
            models.MMoE, v, nd, 2, embed_dim=emb, num_experts=e, expert_hidden=(w,), tower=t
        )
    )
    shared_bottom = matched(
        lambda w: functools.partial(
            models.SharedBottom, v, nd, 2, embed_dim=emb, bottom=(w,), tower=t
        )
    )
    ple = matched(
        lambda w: functools.partial(
            models.PLE, v, nd, 2, embed_dim=emb, num_levels=2, num_specific=1, num_shared=2,
            expert_hidden=(w,), tower=t,
        )
    )  # fmt: skip
    released = functools.partial(models.census_released, v, nd, 2)
    tower_drgrad = lambda **kw: lambda m: drgrad_jax.drgrad(m.drgrad_towers("params"), **kw)
    act_drgrad = lambda **kw: (
        lambda m: drgrad_jax.drgrad(
            m.drgrad_towers("activations"), space="activations", num_tasks=2, **kw
        )
    )
    zoo = {
        "PCGrad": lambda m: drgrad_jax.pcgrad(),
        "CAGrad": lambda m: drgrad_jax.cagrad(),
        "Nash-MTL": lambda m: drgrad_jax.nash_mtl(),
        "MGDA": lambda m: drgrad_jax.mgda(),
        "GradVac": lambda m: drgrad_jax.gradvac(num_tasks=2),
        "IMTL-G": lambda m: drgrad_jax.imtl_g(),
        "Aligned-MTL": lambda m: drgrad_jax.aligned_mtl(),
        "UPGrad": lambda m: drgrad_jax.upgrad(),
        "DWA": lambda m: drgrad_jax.dwa(num_tasks=2),
        "Uncertainty weighting": lambda m: drgrad_jax.uncertainty_weighting(num_tasks=2),
        "Linear scalarization": lambda m: drgrad_jax.linear_scalarization(),
        **NEW_ZOO,
    }
    rows = [
        Method("SharedBottom", shared_bottom),
        Method("MMoE", mmoe),
        Method(ALONE, mmoe, lambda m: drgrad_jax.linear_scalarization(np.array([1.0, 0.0]))),
        Method("Split-MMoE", split),
        Method("PLE", ple),
        *(Method(name, mmoe, tx) for name, tx in zoo.items()),
        Method("DRGrad (paper mode)", split, tower_drgrad(), shared_grads="summed"),
        Method("Equal weighting (tuned)", mmoe, lrs=TUNED_LRS),
        Method(
            "DRGrad (released-code mode)",
            released,
            lambda m: drgrad_jax.drgrad_released(RELEASED_HEADS),
            **RELEASED_SETUP,
        ),
        # Table 5 ablation: Split-MMoE (above), + router, + updater (= paper mode).
        Method("+ router (fixed mu)", split, tower_drgrad(updater="fixed"), shared_grads="summed"),
        Method("+ updater (no router)", split, tower_drgrad(router=False), shared_grads="summed"),
        # Variants, to see where DRGrad's result comes from.
        Method("DRGrad, activation space", split, act_drgrad(), space="activations"),
        Method(
            "+ router (fixed mu), activation space",
            split,
            act_drgrad(updater="fixed"),
            space="activations",
        ),
        Method("DRGrad, as-printed pairing", split, tower_drgrad(pairing="as_printed"), shared_grads="summed"),
        Method("DRGrad, mean updater", split, tower_drgrad(updater="mean"), shared_grads="summed"),
        Method("DRGrad, EMA updater", split, tower_drgrad(updater="ema"), shared_grads="summed"),
    ]  # fmt: skip
    return rows


def markdown(results: dict, tests: dict, header: str, figures: tuple[str, ...] = ()) -> str:
    """The RESULTS.md section: the AUC table with its reading, the paired tests, ``figures``.

    ``figures`` are markdown blocks (an image link and its reading line), from ``FIGURES``.
    """
    lines = [
        header,
        "",
        "| Method | params | income AUC | marital AUC | income − MMoE [95% CI] |"
        " marital − MMoE [95% CI] | paper (income / marital) |",
        "|---|---|---|---|---|---|---|",
    ]
    diffs = [{}, {}] if not tests or "MMoE" not in results else [
        {name: (m, lo, hi) for name, m, lo, hi in forest_rows(results, "MMoE", task)}
        for task in (0, 1)
    ]  # fmt: skip
    for name, r in results.items():
        paper = PAPER_TABLE3.get(name)
        pa = "–" if paper is None else f"{paper[0]:.4f} / {paper[1]:.4f}"
        dd = []
        for task in (0, 1):
            d = None if name == ALONE and task == 1 else diffs[task].get(name)
            dd.append("–" if d is None else f"{d[0]:+.4f} [{d[1]:+.4f}, {d[2]:+.4f}]")
        marital = (
            "not trained" if name == ALONE
            else f"{r['task2_auc_mean']:.4f} ± {r['task2_auc_std']:.4f}"
        )  # fmt: skip
        lines.append(
            f"| {name} | {r['num_params']} | {r['task1_auc_mean']:.4f} ± {r['task1_auc_std']:.4f}"
            f" | {marital} | {dd[0]} | {dd[1]} | {pa} |"
        )
    lines += ["", reading(results), ""]
    for name, t in tests.items():
        lines.append(
            f"- {name}: income AUC difference {t['mean_diff']:+.4f}, paired t = {t['t']:.2f}, "
            f"p = {t['p_value']:.3g} (n = {t['n']} seeds)"
        )
    for fig in figures:
        lines += ["", fig]
    return "\n".join(lines)


def reading(results: dict) -> str:
    """One line under the table: negative transfer, the spread of income AUC, the rates, DRGrad vs MMoE."""
    income = {n: r["task1_auc_mean"] for n, r in results.items() if n != ALONE}
    lo, hi = min(income, key=income.get), max(income, key=income.get)
    lrs = [r["lr"] for r in results.values()]
    common = max(set(lrs), key=lrs.count)
    others = [f"{n} {r['lr']:g}" for n, r in results.items() if r["lr"] != common]
    lr = f"lr {common:g} for every row" + (f" but {', '.join(others)}" if others else "")
    nt = ""
    if ALONE in results and "MMoE" in results and len(results["MMoE"]["test_auc_per_seed"]) > 1:
        t = paired(results[ALONE], results["MMoE"])
        nt = (
            f"income trained alone − beside marital status (negative transfer if > 0): "
            f"{t['mean_diff']:+.4f} [{t['ci95'][0]:+.4f}, {t['ci95'][1]:+.4f}], "
            f"p = {t['p_value']:.2g}; "
        )
    line = (
        f"*Reading:* {nt}every multi-task row lies within {income[hi] - income[lo]:.4f} income AUC "
        f"({lo} {income[lo]:.4f} to {hi} {income[hi]:.4f}); {lr}"
    )
    if "DRGrad (paper mode)" in income and "MMoE" in income:
        line += (
            f"; DRGrad (paper mode) − MMoE = {income['DRGrad (paper mode)'] - income['MMoE']:+.4f}"
        )
    return line + "."


FIGURES = {
    "forest": "![Paired income-AUC differences from {reference}, 95% CI over seeds]"
    "(figures/drgrad_census_forest.png)\n\n*Reading:* each row is a method's income AUC minus "
    "{reference}'s on the same seeds (mean, 95% t interval; DRGrad rows in red); an interval "
    "that crosses 0 is no measured difference.",
}


def forest_rows(
    results: dict, reference: str, task: int = 0
) -> list[tuple[str, float, float, float]]:
    """``(method, mean, low, high)`` of the paired difference from ``reference`` (income: task 0).

    The interval is the two-sided 95% Student t interval of the per-seed differences (the
    paired t-test's own interval); methods with another seed count are left out.
    """
    n = len(results[reference]["test_auc_per_seed"])
    out = []
    for name, r in results.items():
        if name == reference or len(r["test_auc_per_seed"]) != n or n < 2:
            continue
        t = paired(r, results[reference], task)
        out.append((name, t["mean_diff"], *t["ci95"]))
    return out


def plot_forest(results: dict, reference: str, path: pathlib.Path) -> pathlib.Path:
    """The forest plot of ``forest_rows``: one row per method, zero marked."""
    plt = _common.pyplot()
    rows = forest_rows(results, reference)
    n = len(next(iter(results.values()))["test_auc_per_seed"])
    fig, ax = plt.subplots(figsize=(6.4, 0.9 + 0.24 * len(rows)))
    y = np.arange(len(rows))[::-1]
    mean = np.array([r[1] for r in rows])
    err = np.array([[r[1] - r[2] for r in rows], [r[3] - r[1] for r in rows]])
    drgrad = np.array([r[0].startswith(("DRGrad", "+ router", "+ updater")) for r in rows])
    for pick, color in ((~drgrad, "tab:blue"), (drgrad, "tab:red")):  # DRGrad rows in red
        if pick.any():
            ax.errorbar(
                mean[pick], y[pick], xerr=err[:, pick], fmt="o", ms=3, lw=1, capsize=2, color=color
            )
    ax.axvline(0.0, color="k", lw=0.6)
    ax.set_yticks(y, [r[0] for r in rows], fontsize=7)
    ax.tick_params(axis="x", labelsize=7)
    ax.set_xlabel(f"income AUC − {reference} (paired, mean and 95% CI over {n} seeds)", fontsize=8)
    fig.tight_layout()
    return _common.save_figure(fig, path, dpi=90)


def reference_row(results: dict) -> str | None:
    """The forest plot's reference: MMoE when it ran, else the best baseline by income AUC."""
    if "MMoE" in results:
        return "MMoE"
    baselines = [k for k in results if k in BASELINES]
    return max(baselines, key=lambda k: results[k]["task1_auc_mean"]) if baselines else None


def render(payload: dict, results_md: pathlib.Path) -> str:
    """The section of a saved payload, with its figures written beside ``results_md``."""
    if "results" not in payload:  # a payload of the markdown alone
        return payload["markdown"]
    results = in_table_order(payload["results"])
    tests = in_table_order(payload.get("paired_tests", {}), name=lambda key: key.split(" vs ")[0])
    figures_dir = _common.figures_dir(results_md)
    figures = []
    ref = reference_row(results)
    if ref is not None and forest_rows(results, ref):
        plot_forest(results, ref, figures_dir / "drgrad_census_forest.png")
        figures.append(FIGURES["forest"].format(reference=ref))
    header = payload.get("header") or payload["markdown"].split("\n| ", 1)[0].rstrip()
    return markdown(results, tests, header, tuple(figures))


def write_results_md(section: str, path: pathlib.Path = RESULTS_MD) -> None:
    """Replaces only the span between the drgrad markers of ``path`` (created if absent)."""
    _common.write_results_span("drgrad", section, path)


def subsample(d: data.MultiTaskData, n_train: int, n_eval: int) -> data.MultiTaskData:
    cut = lambda s, n: data.Split(*(None if a is None else a[:n] for a in s))
    return dataclasses.replace(
        d,
        train=cut(d.train, n_train),
        val=cut(d.val, n_eval),
        test=cut(d.test, n_eval),
        description=f"{d.description}; first {n_train}/{n_eval}/{n_eval} rows of each split",
    )


def cached_run(method: Method, d: data.MultiTaskData, kw: dict, cache, split: str) -> dict:
    """``run_method``, reusing a row finished earlier with the same settings under ``cache``."""
    if cache is None:
        return run_method(method, d, **kw)
    key = {
        "method": method.name,
        "split": split,
        **{k: list(v) if isinstance(v, tuple) else v for k, v in kw.items()},
    }
    slug = "".join(c if c.isalnum() else "_" for c in method.name)
    path = cache / f"{slug}.json"
    if path.exists():
        saved = json.loads(path.read_text())
        if saved.get("key") == key:
            print(f"  {method.name:<28s} (cached in {path})")
            return saved["result"]
    result = run_method(method, d, **kw)
    cache.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"key": key, "result": result}))
    return result


def main(argv: list[str] | None = None) -> dict:
    p = _common.parser(__doc__.splitlines()[0])
    p.add_argument("--seeds", type=int, default=None, help="default 2 quick, 5 full")
    p.add_argument("--epochs", type=int, default=None, help="default 2 quick, 6 full")
    p.add_argument("--methods", default=None, help="';'-separated subset of rows")
    p.add_argument("--lrs", default=None, help="comma-separated learning-rate grid")
    p.add_argument("--results", default=None, help="RESULTS.md to update (full mode default)")
    p.add_argument(
        "--cache",
        default=None,
        help="directory keeping each finished row, so an interrupted run resumes",
    )
    p.add_argument(
        "--from-json",
        default=None,
        help="re-render RESULTS.md from a saved full-run JSON instead of training",
    )
    args = p.parse_args(argv)
    if args.from_json:
        payload = json.loads(pathlib.Path(args.from_json).read_text())
        if payload.get("quick"):
            raise ValueError(
                f"--from-json {args.from_json}: a quick-mode run; RESULTS.md holds full runs."
            )
        results_md = pathlib.Path(args.results or RESULTS_MD)
        write_results_md(render(payload, results_md), results_md)
        return payload
    q = args.quick
    seeds = args.seeds or (2 if q else 5)
    epochs = args.epochs or (2 if q else 6)
    lrs = (3e-3,) if q else (1e-3, 3e-3)  # quick: the rate the full run selects for MMoE
    if args.lrs:
        lrs = tuple(float(x) for x in args.lrs.split(","))
    sizes = {"experts": 8, "expert_width": 32, "tower": 16, "embed": 4}
    start_all = time.perf_counter()
    path = _common.data_dir("census-income-kdd", args.data)
    d = data.load_census_income(path) if path is not None else generated_census()
    if q:
        d = subsample(d, 20000, 4000)
    print(f"[data] {d.description}")
    rows = all_methods(d, sizes)
    wanted = args.methods.split(";") if args.methods else (QUICK if q else [m.name for m in rows])
    rows = [m for m in rows if m.name in wanted]
    kw = dict(seeds=seeds, epochs=epochs, batch_size=256 if q else 512, lrs=lrs)
    cache = pathlib.Path(args.cache) if args.cache else None
    results = {
        m.name: cached_run(m, d, kw, cache, d.description)
        for m in _common.rows(rows, "drgrad_census methods")
    }

    drg = None if q else results.get("DRGrad (paper mode)")  # quick: no paired tests
    tests = {}
    baselines = {k: v for k, v in results.items() if k in BASELINES}
    if drg is not None and baselines:
        best = max(baselines, key=lambda k: baselines[k]["task1_auc_mean"])
        if "MMoE" in results:
            tests["DRGrad (paper mode) vs MMoE"] = paired(drg, results["MMoE"])
        tests[f"DRGrad (paper mode) vs best baseline ({best})"] = paired(drg, baselines[best])
        for name in results:
            if name.startswith("DRGrad") and name != "DRGrad (paper mode)":
                tests[f"{name} vs {best}"] = paired(results[name], baselines[best])

    duration = time.perf_counter() - start_all
    header = (
        f"### DRGrad Table 3 (Census columns) and Table 5 ablation\n\n"
        f"`python -m benchmarks.drgrad_census` (regenerates this section). "
        f"Split: {d.description}. {len(d.train.labels)} train / {len(d.val.labels)} val / "
        f"{len(d.test.labels)} test rows; {seeds} seeds x {epochs} epochs "
        f"({'quick' if q else 'full'} mode{', rows subset' if args.methods else ''}), lr from {list(lrs)} on validation income AUC, "
        f"test AUC at the best-validation epoch; run took {duration / 60:.1f} min. "
        f"Paper numbers are on the official 200k/100k split and are not strictly comparable."
    )
    if q:
        header += (
            " Quick mode is a smoke run: it shows that every row trains (MMoE reaches about "
            "0.935 income AUC on the real data), not which method is better; it runs no paired "
            "tests, and differences between its rows are not measurements."
        )
    md = markdown(results, tests, header)
    print("\n" + md)
    print(f"full duration: {duration:.1f}s")
    payload = {
        "results": results,
        "paired_tests": tests,
        "split": d.description,
        "sizes": sizes,
        "seeds": seeds,
        "epochs": epochs,
        "lr_grid": list(lrs),
        "hyperparameter_selection": "lr by mean best-validation income AUC over seeds",
        "epoch_selection": "best validation income AUC (select_by_validation rule=0)",
        "duration_s": duration,
        "quick": q,
        "paper": PAPER_TABLE3,
        "header": header,
        "markdown": md,
    }
    _common.write_json(args.json, payload)
    if args.results or not (q or args.methods):  # only the full table goes to RESULTS.md
        results_md = pathlib.Path(args.results) if args.results else RESULTS_MD
        write_results_md(render(payload, results_md), results_md)
    return payload


if __name__ == "__main__":
    main()
