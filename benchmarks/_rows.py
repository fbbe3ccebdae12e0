"""One row of a multi-task table: a method, trained over a learning-rate grid and seeds.

Shared by ``drgrad_synthetic`` and ``drgrad_census``: every row is one call of
``drgrad_jax.sweep_learning_rates`` (rates x seeds in one compiled program),
the rate is chosen on mean validation task-1 AUC over seeds, and the test AUCs
are read at each seed's best-validation epoch (``select_by_validation(rule=0)``).
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable

import jax
import numpy as np
import optax
from flax import nnx
from scipy import stats

import drgrad_jax
from drgrad_jax import data, models


@dataclasses.dataclass(frozen=True)
class Method:
    """One row of a table: a model, a multi-task transform, where it acts, and its setup.

    ``optimizer`` maps a learning rate to the optimizer (Adam by default);
    ``lrs``, ``batch_size`` and ``pos_weights`` override the benchmark's
    defaults for this row only (a row with its own published setup, or a row
    tuned over a wider grid).
    """

    name: str
    model: Callable[..., nnx.Module]
    transform: Callable[[nnx.Module], optax.GradientTransformation | None] = lambda m: None
    space: str = "params"
    shared_grads: str = "per_task"
    optimizer: Callable[[jax.Array], optax.GradientTransformation] = optax.adam
    lrs: tuple[float, ...] | None = None
    batch_size: int | None = None
    pos_weights: tuple[float, ...] | None = None


def num_params(model) -> int:
    """The parameter count of ``model(rngs=...)``, without allocating it."""
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
    """Trains ``method`` on ``seeds`` seeds for every rate of the grid; picks the rate on validation.

    The row's own ``lrs`` / ``batch_size`` / ``pos_weights`` replace the
    arguments when set. Returns a JSON-ready dict with per-seed test AUCs at the
    best-validation epoch, their mean and std per task, the chosen rate, the
    grid's scores, the mu history of the chosen rate and the wall time
    (compilation included: one program per row).
    """
    lrs = tuple(method.lrs or lrs)
    batch_size = method.batch_size or batch_size
    pos_weights = method.pos_weights or pos_weights
    abstract = nnx.eval_shape(lambda: method.model(rngs=nnx.Rngs(0)))
    config = drgrad_jax.TrainConfig(
        model=method.model,
        optimizer=method.optimizer(lrs[0]),
        mtl_transform=method.transform(abstract),
        space=method.space,
        batch_size=batch_size,
        num_epochs=epochs,
        pos_weights=pos_weights,
        shared_grads=method.shared_grads,
        name=method.name,
    )
    keys = jax.random.split(jax.random.key(0), seeds)
    start = time.perf_counter()
    result = jax.block_until_ready(
        drgrad_jax.sweep_learning_rates(config, d, lrs, keys, optimizer=method.optimizer)
    )
    seconds = time.perf_counter() - start
    epoch, test = drgrad_jax.select_by_validation(result, rule=0)  # [L, S], [L, S, K]
    val = np.take_along_axis(np.asarray(result.val_auc)[..., 0], np.asarray(epoch)[..., None], -1)
    scores = np.nanmean(val[..., 0], axis=1)  # [L]
    best = int(np.nanargmax(scores))
    test = np.asarray(test[best])
    mu = np.asarray(result.mu[best])  # [S, E, 2]
    out = {
        "lr": lrs[best],
        "val_task1_auc": float(scores[best]),
        "lr_grid_val_task1_auc": {str(lr): float(s) for lr, s in zip(lrs, scores)},
        "best_epoch": np.asarray(epoch[best]).tolist(),
        "num_params": num_params(method.model),
        "batch_size": batch_size,
        "seconds": seconds,
        "test_auc_per_seed": test.tolist(),
        "mu_history": None if np.isnan(mu).all() else mu.mean(0).tolist(),
    }
    for k in range(test.shape[1]):
        out[f"task{k + 1}_auc_mean"] = float(test[:, k].mean())
        out[f"task{k + 1}_auc_std"] = float(test[:, k].std())
    print(
        f"  {method.name:<30s} task1 {out['task1_auc_mean']:.4f}+-{out['task1_auc_std']:.4f} "
        f"task2 {out['task2_auc_mean']:.4f}+-{out['task2_auc_std']:.4f} "
        f"(lr {out['lr']:g} of {len(lrs)}, {out['num_params']} params, {seconds:.1f}s)",
        flush=True,
    )
    return out


def paired(a: dict, b: dict, task: int = 0) -> dict:
    """Paired comparison over seeds of one task's test AUC, row ``a`` minus row ``b``.

    Both rows ran on the same seed keys (same initial data order), so seed s of
    ``a`` is paired with seed s of ``b``. Returns the mean difference, its 95%
    t interval, the paired t statistic and the two-sided p-value.
    """
    x = np.asarray(a["test_auc_per_seed"])[:, task]
    y = np.asarray(b["test_auc_per_seed"])[:, task]
    if x.shape != y.shape or len(x) < 2:
        raise ValueError(
            f"paired: need the same number (>= 2) of seeds; got {len(x)} and {len(y)}."
        )
    diff = x - y
    half = stats.t.ppf(0.975, len(diff) - 1) * diff.std(ddof=1) / np.sqrt(len(diff))
    res = stats.ttest_rel(x, y)
    return {
        "mean_diff": float(diff.mean()),
        "ci95": [float(diff.mean() - half), float(diff.mean() + half)],
        "t": float(res.statistic),
        "p_value": float(res.pvalue),
        "n": int(len(x)),
    }
