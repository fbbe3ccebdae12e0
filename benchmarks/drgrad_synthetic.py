"""DRGrad's synthetic Table 2: MMoE, Split-MMoE and DRGrad under cooperating and conflicting tasks.

Data: ``data.drgrad_synthetic`` (MMoE's generator with task correlation
p = +0.5, "cooperate", and p = -0.5, "conflict"). For each setting MMoE,
Split-MMoE (the same network DRGrad trains, summed loss, mu = 0.5/0.5) and
DRGrad (Split-MMoE + router + cumulative updater, no personalized gate) are
trained for several seeds in ONE vmapped program each; the test AUC is read at
the epoch of best validation task-1 AUC (``select_by_validation(result,
rule=0)``: DRGrad serves a primary task and the paper reports it; the test
AUCs of every task at that epoch are kept, so a seesaw on task 2 shows), and
the learning rate is chosen from a small grid on validation task-1 AUC only
(recorded in the JSON). Also: a sweep
over p (MMoE vs DRGrad), and the personalized setting (DRGrad with and without
the personalized gate).

Plots (``benchmarks/out/drgrad_synthetic_*.png``): the per-step cosine between
the two tasks' gradients on the shared parameters and their norm ratio, for
MMoE vs DRGrad (the paper's Fig. 4-7), and mu' over training.

Usage: ``python -m benchmarks.drgrad_synthetic [--quick] [--json PATH]``
"""

from __future__ import annotations

import dataclasses
import functools
import pathlib
import time
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

import drgrad_jax
from benchmarks import _common
from drgrad_jax import data, models

OUT_DIR = _common.REPO_ROOT / "benchmarks" / "out"

PAPER_TABLE2 = {  # (label-1 AUC, label-2 AUC)
    "cooperate": {
        "MMoE": (0.9521, 0.9473),
        "Split-MMoE": (0.9568, 0.9544),
        "DRGrad": (0.9710, 0.9596),
    },
    "conflict": {
        "MMoE": (0.8735, 0.8712),
        "Split-MMoE": (0.8807, 0.8828),
        "DRGrad": (0.9212, 0.9140),
    },
}


@dataclasses.dataclass(frozen=True)
class Method:
    """One row of a table: a model, a multi-task transform and where it acts."""

    name: str
    model: Callable[..., nnx.Module]
    transform: Callable[[nnx.Module], optax.GradientTransformation | None] = lambda m: None
    space: str = "params"
    shared_grads: str = "per_task"


def num_params(model) -> int:
    return models.param_count(nnx.eval_shape(lambda: model(rngs=nnx.Rngs(0))))


def run_method(
    method: Method,
    d: data.MultiTaskData,
    *,
    seeds: int,
    epochs: int,
    batch_size: int,
    lrs: tuple[float, ...],
    pos_weights=None,
) -> dict:
    """Trains ``method`` on ``seeds`` seeds per learning rate; picks the rate on validation.

    Returns a JSON-ready dict with per-seed test AUCs at the best-validation
    epoch, their mean and std per task, the chosen rate and the grid's scores.
    """
    abstract = nnx.eval_shape(lambda: method.model(rngs=nnx.Rngs(0)))
    transform = method.transform(abstract)
    splits = drgrad_jax.device_splits(d)
    keys = jax.random.split(jax.random.key(0), seeds)
    best, grid = None, {}
    for lr in lrs:
        config = drgrad_jax.TrainConfig(
            model=method.model,
            optimizer=optax.adam(lr),
            mtl_transform=transform,
            space=method.space,
            batch_size=batch_size,
            num_epochs=epochs,
            pos_weights=pos_weights,
            shared_grads=method.shared_grads,
            name=method.name,
        )
        train = drgrad_jax.make_train(config, d)
        start = time.perf_counter()
        result = jax.block_until_ready(jax.jit(jax.vmap(train, in_axes=(0, None)))(keys, splits))
        seconds = time.perf_counter() - start
        epoch, test = drgrad_jax.select_by_validation(result, rule=0)
        val = np.take_along_axis(
            np.asarray(result.val_auc), np.asarray(epoch)[:, None, None], axis=1
        )[:, 0, :]
        score = float(np.nanmean(val[:, 0]))
        grid[str(lr)] = score
        if best is None or score > best[0]:
            best = (score, lr, np.asarray(test), np.asarray(epoch), result, seconds)
    score, lr, test, epoch, result, seconds = best
    mu = np.asarray(result.mu)  # [S, E, 2]
    out = {
        "lr": lr,
        "val_task1_auc": score,
        "lr_grid_val_task1_auc": grid,
        "best_epoch": epoch.tolist(),
        "num_params": num_params(method.model),
        "seconds": seconds,
        "test_auc_per_seed": test.tolist(),
        "mu_history": None if np.isnan(mu).all() else mu.mean(0).tolist(),
    }
    for k in range(test.shape[1]):
        out[f"task{k + 1}_auc_mean"] = float(test[:, k].mean())
        out[f"task{k + 1}_auc_std"] = float(test[:, k].std())
    print(
        f"  {method.name:<28s} task1 {out['task1_auc_mean']:.4f}+-{out['task1_auc_std']:.4f} "
        f"task2 {out['task2_auc_mean']:.4f}+-{out['task2_auc_std']:.4f} "
        f"(lr {lr:g}, {out['num_params']} params, {seconds:.1f}s)",
        flush=True,
    )
    return out


# --- per-step diagnostics (Fig. 4-7) -----------------------------------------------


def gradient_trace(
    method: Method, d: data.MultiTaskData, *, steps: int, batch_size: int, lr: float, seed=0
) -> dict[str, np.ndarray]:
    """Per-step cosine / norm ratio of the task gradients on shared parameters, and mu.

    A jitted ``lax.scan`` over ``steps`` Adam steps of ``method`` (its transform
    or the summed loss), recording before each update: ``cos`` = cos(g1, g2)
    and ``ratio`` = ||g1|| / ||g2|| over the shared leaves (those read by both
    tasks), mu' of the DRGrad updater (0.5 without one), and the router's own
    ``xi_aux`` / ``ratio_aux`` (NaN without DRGrad).
    """
    abstract = nnx.eval_shape(lambda: method.model(rngs=nnx.Rngs(0)))
    graphdef, _ = nnx.split(abstract)
    labels = models.task_of(abstract)
    transform = method.transform(abstract) or drgrad_jax.linear_scalarization()
    tx = optax.with_extra_args_support(optax.chain(transform, optax.adam(lr)))
    if method.space != "params":
        raise ValueError("gradient_trace supports space='params' methods only.")
    train = drgrad_jax.device_splits(d)[0]
    n = train.labels.shape[0]

    def loss_fn(params, batch, mu):
        logits = nnx.merge(graphdef, params)(batch.cat, batch.dense, batch.user, mu=mu)
        return jnp.mean(optax.sigmoid_binary_cross_entropy(logits, batch.labels), axis=0)

    def shared_rows(g):
        leaves = [
            x.reshape(x.shape[0], -1)
            for x, lab in zip(jax.tree.leaves(g), jax.tree.leaves(labels))
            if lab == drgrad_jax.SHARED
        ]
        return jnp.concatenate(leaves, axis=1)

    def step(carry, key):
        params, state = carry
        idx = jax.random.randint(key, (batch_size,), 0, n)
        batch = jax.tree.map(lambda a: None if a is None else a[idx], train)
        mu = drgrad_jax.mixing_weights(state)
        losses, g = drgrad_jax.per_task_grads(loss_fn, params, batch, mu, task_of=labels)
        rows = shared_rows(g)
        norms = jnp.linalg.norm(rows, axis=1)
        cos = jnp.vdot(rows[0], rows[1]) / jnp.maximum(norms[0] * norms[1], 1e-12)
        updates, state = tx.update(g, state, params, losses=losses)
        params = optax.apply_updates(params, updates)
        ds = drgrad_jax.find_drgrad_state(state)
        nan = jnp.full((), jnp.nan)
        rec = {
            "cos": cos,
            "ratio": norms[0] / jnp.maximum(norms[1], 1e-12),
            "mu1": jnp.asarray(0.5) if mu is None else jnp.asarray(mu).reshape(-1)[0],
            "xi_aux": nan if ds is None else ds.diagnostics.xi_aux.reshape(-1)[0],
            "ratio_aux": nan if ds is None else ds.diagnostics.ratio_aux.reshape(-1)[0],
            "loss1": losses[0],
        }
        return (params, state), rec

    @jax.jit
    def run(key):
        init_key, data_key = jax.random.split(key)
        params = nnx.to_pure_dict(nnx.state(method.model(rngs=nnx.Rngs(init_key))))
        _, recs = jax.lax.scan(step, (params, tx.init(params)), jax.random.split(data_key, steps))
        return recs

    return {k: np.asarray(v) for k, v in run(jax.random.key(seed)).items()}


def plot_trace_series(series: dict, path: pathlib.Path, title: str | None = None) -> pathlib.Path:
    """Thinned per-step traces (``thin``) per method as cosine / norm-ratio / mu' panels."""
    plt = _common.pyplot()
    fig, axes = plt.subplots(1, 3, figsize=(10, 2.6))
    for name, tr in series.items():
        axes[0].plot(tr["step"], tr["cos"], lw=0.7, label=name)
        axes[1].semilogy(tr["step"], tr["ratio"], lw=0.7, label=name)
        if np.ptp(tr["mu1"]) > 0:  # a model without a split tower has no mu' to draw
            axes[2].plot(tr["step"], tr["mu1"], lw=1.0, label=name)
    axes[0].axhline(0.0, color="k", lw=0.5)
    for ax, name in zip(axes, ("cos(g1, g2), shared", "||g1|| / ||g2||, shared", "mu'")):
        ax.set_title(name, fontsize=8)
        ax.set_xlabel("step", fontsize=7)
        ax.tick_params(labelsize=7)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=6)
    if title:
        fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    return _common.save_figure(fig, path)


def trace_summary(tr: dict[str, np.ndarray]) -> dict:
    """Means over the second half of a trace (JSON-ready)."""
    half = {k: v[len(v) // 2 :] for k, v in tr.items()}
    return {
        "mean_cos": float(np.mean(half["cos"])),
        "mean_abs_cos": float(np.mean(np.abs(half["cos"]))),
        "sign_changes": int(np.sum(np.diff(np.sign(tr["cos"])) != 0)),
        "median_ratio": float(np.median(half["ratio"])),
        "final_mu1": float(tr["mu1"][-1]),
    }


def thin(tr: dict[str, np.ndarray], points: int = 200) -> dict:
    """A per-step trace kept at about ``points`` evenly spaced steps (JSON-ready)."""
    idx = np.unique(np.linspace(0, len(tr["cos"]) - 1, points).astype(int))
    return {"step": idx.tolist()} | {
        k: np.asarray(tr[k])[idx].astype(float).tolist() for k in ("cos", "ratio", "mu1")
    }


# --- the table -----------------------------------------------------------------------


def methods(d: data.MultiTaskData, sizes: dict, *, ppnet: str | None = None) -> list[Method]:
    """MMoE, Split-MMoE, DRGrad (and DRGrad + personalized gate when ``ppnet``)."""
    common = dict(
        embed_dim=4,
        num_experts=sizes["experts"],
        expert_hidden=(sizes["expert_width"],),
        tower=(sizes["tower"],),
    )
    split = functools.partial(models.SplitMMoE, d.vocab_sizes, d.num_dense, 2, **common)
    split_width, _ = models.match_width(
        lambda w: models.MMoE(
            d.vocab_sizes,
            d.num_dense,
            2,
            **{**common, "expert_hidden": (w,)},
            rngs=nnx.Rngs(0),
        ),
        num_params(split),
    )
    mmoe = functools.partial(
        models.MMoE, d.vocab_sizes, d.num_dense, 2, **{**common, "expert_hidden": (split_width,)}
    )
    drgrad_tx = lambda m: drgrad_jax.drgrad(m.drgrad_towers())
    out = [
        Method("MMoE", mmoe),
        Method("Split-MMoE", split),
        Method("DRGrad", split, drgrad_tx, shared_grads="summed"),
    ]
    if ppnet:
        pp = functools.partial(split, ppnet=ppnet, num_users=d.num_users)
        out.append(Method("DRGrad + personalized gate", pp, drgrad_tx, shared_grads="summed"))
    return out


def markdown_table2(results: dict) -> str:
    lines = [
        "| Setting | Method | label-1 AUC (ours) | label-2 AUC (ours) | label-1 [paper] |"
        " label-2 [paper] |",
        "|---|---|---|---|---|---|",
    ]
    for setting, rows in results.items():
        for name, r in rows.items():
            paper = PAPER_TABLE2.get(setting, {}).get(name)
            pa = ("-", "-") if paper is None else (f"{paper[0]:.4f}", f"{paper[1]:.4f}")
            lines.append(
                f"| {setting} | {name} | {r['task1_auc_mean']:.4f} +- {r['task1_auc_std']:.4f}"
                f" | {r['task2_auc_mean']:.4f} +- {r['task2_auc_std']:.4f} | {pa[0]} | {pa[1]} |"
            )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict:
    p = _common.parser(__doc__.splitlines()[0])
    p.add_argument("--seeds", type=int, default=None)
    p.add_argument("--epochs", type=int, default=None)
    args = p.parse_args(argv)
    q = args.quick
    seeds = args.seeds or (2 if q else 5)
    epochs = args.epochs or (1 if q else 10)
    n_train, n_eval = (2000, 1000) if q else (100_000, 10_000)
    dim = 16 if q else 100
    sizes = {"experts": 4 if q else 8, "expert_width": 16 if q else 32, "tower": 8}
    lrs = (3e-3,) if q else (1e-3, 3e-3)
    batch = 128 if q else 512
    start_all = time.perf_counter()
    kw = dict(seeds=seeds, epochs=epochs, batch_size=batch, lrs=lrs)

    table, traces_json, trace_series = {}, {}, {}
    for setting in ("cooperate", "conflict"):
        d = data.drgrad_synthetic(setting, n_train, n_eval, n_eval, dim=dim, num_users=20)
        print(f"\n[{setting}] {d.description}")
        ms = methods(d, sizes)
        table[setting] = {m.name: run_method(m, d, **kw) for m in _common.rows(ms, setting)}
        traces = {
            m.name: gradient_trace(m, d, steps=100 if q else 1500, batch_size=batch, lr=lrs[0])
            for m in ms
            if m.name in ("MMoE", "DRGrad")
        }
        traces_json[setting] = {k: trace_summary(v) for k, v in traces.items()}
        trace_series[setting] = {k: thin(v) for k, v in traces.items()}
        plot_trace_series(
            trace_series[setting],
            OUT_DIR / f"drgrad_synthetic_{setting}.png",
            f"{setting} (p={0.5 if setting == 'cooperate' else -0.5:+.1f})",
        )

    # p = -0.5 / +0.5 are the table's conflict / cooperate runs; quick mode adds no others.
    sweep = {
        "-0.5": {k: table["conflict"][k] for k in ("MMoE", "DRGrad")},
        "0.5": {k: table["cooperate"][k] for k in ("MMoE", "DRGrad")},
    }
    for corr in () if q else (-0.9, -0.2, 0.0, 0.2, 0.9):
        d = data.drgrad_synthetic("cooperate", n_train, n_eval, n_eval, dim=dim, correlation=corr)
        print(f"\n[sweep p={corr}]")
        ms = [m for m in methods(d, sizes) if m.name in ("MMoE", "DRGrad")]
        sweep[str(corr)] = {m.name: run_method(m, d, **kw) for m in _common.rows(ms, f"p={corr}")}

    d = data.drgrad_synthetic("personalized", n_train, n_eval, n_eval, dim=dim, num_users=20)
    print(f"\n[personalized] {d.description}")
    ms = [m for m in methods(d, sizes, ppnet="single") if m.name != "Split-MMoE"]
    table["personalized"] = {
        m.name: run_method(m, d, **kw) for m in _common.rows(ms, "personalized")
    }

    duration = time.perf_counter() - start_all
    md = markdown_table2(table)
    sweep_md = "\n".join(
        [
            "| p | MMoE label-1 | DRGrad label-1 | MMoE label-2 | DRGrad label-2 |",
            "|---|---|---|---|---|",
        ]
        + [
            f"| {c} | {r['MMoE']['task1_auc_mean']:.4f} | {r['DRGrad']['task1_auc_mean']:.4f} "
            f"| {r['MMoE']['task2_auc_mean']:.4f} | {r['DRGrad']['task2_auc_mean']:.4f} |"
            for c, r in sorted(sweep.items(), key=lambda kv: float(kv[0]))
        ]
    )
    print(
        f"\nDRGrad Table 2 (synthetic, {n_train} train / {n_eval} val / {n_eval} test, "
        f"{seeds} seeds x {epochs} epochs, {'quick' if q else 'full'} mode):\n{md}"
    )
    print(f"\nSweep over p:\n{sweep_md}")
    print(f"\nGradient traces (second half of training): {traces_json}")
    print(f"\nfull duration: {duration:.1f}s")
    results = {f"{s}/{m}": r for s, rows in table.items() for m, r in rows.items()}
    payload = {
        "results": results,
        "sweep": sweep,
        "traces": traces_json,
        "trace_series": trace_series,
        "split": f"{n_train}/{n_eval}/{n_eval} generated",
        "seeds": seeds,
        "epochs": epochs,
        "sizes": sizes,
        "lr_grid": list(lrs),
        "hyperparameter_selection": "lr by mean best-validation task-1 AUC over seeds",
        "epoch_selection": "best validation task-1 AUC (select_by_validation rule=0)",
        "duration_s": duration,
        "quick": q,
        "paper": PAPER_TABLE2,
        "markdown": md,
    }
    _common.write_json(args.json, payload)
    return payload


if __name__ == "__main__":
    main()
