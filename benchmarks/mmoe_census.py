"""Does our MMoE reach published quality on Census-Income (KDD)? Income and marital AUC.

MMoE (8 experts, summed loss, Adam) trained on the income / never-married task
pair, several seeds in ONE vmapped program (``jax.jit(jax.vmap(train))``). The
test AUC is read at the epoch with the best mean validation AUC of the two
tasks, per seed (``select_by_validation``'s multi-task default, ``rule="mean"``:
neither task is the primary one here); mean and standard deviation over seeds
are printed next to the split.

Targets: income test AUC >= 0.93 and marital test AUC >= 0.98 (published MMoE,
Ma et al. 2018: 0.9410 / 0.9926 on the official split; DRGrad's table: 0.9387 /
0.9927). With only the shipped test partition the split is a seeded 60/20/20
re-split, so numbers are not strictly comparable with the published ones.
Without the real data a generated stand-in of the same shape is used (the
quality targets are then not asserted).

Usage: ``python -m benchmarks.mmoe_census [--quick] [--json PATH] [--data DIR]``
"""

from __future__ import annotations

import functools
import time

import jax
import numpy as np
import optax
from flax import nnx

import drgrad_jax
from benchmarks import _common
from drgrad_jax import data, models

TARGETS = {"income_auc": 0.93, "marital_auc": 0.98}


def generated_census(seed: int = 0, num_rows: int = 20_000) -> data.MultiTaskData:
    """A Census-shaped stand-in (32 categorical fields, 7 dense, 2 tasks) when the data is absent."""
    rng = np.random.default_rng(seed)
    vocab = rng.integers(3, 50, 32)
    cat = rng.integers(0, vocab, (num_rows, 32)).astype(np.int32)
    dense = rng.normal(size=(num_rows, 7)).astype(np.float32)
    w = rng.normal(size=(32, 60))
    score = w[np.arange(32), cat % 60].sum(1) + dense @ rng.normal(size=7)
    income = (score > np.quantile(score, 0.94)).astype(np.float32)
    marital = (0.7 * score + rng.normal(size=num_rows) * score.std() > 0).astype(np.float32)
    labels = np.stack([income, marital], 1)
    n_tr, n_va = int(0.6 * num_rows), int(0.2 * num_rows)
    parts = [slice(0, n_tr), slice(n_tr, n_tr + n_va), slice(n_tr + n_va, None)]
    splits = [data.Split(cat[p], dense[p], labels[p]) for p in parts]
    return data.MultiTaskData(
        *splits,
        vocab_sizes=tuple(int(v) for v in vocab),
        num_dense=7,
        task_names=("income", "never_married"),
        description=f"generated Census-shaped data (seed {seed}), 60/20/20 of {num_rows} rows",
    )


def main(argv: list[str] | None = None) -> dict:
    p = _common.parser(__doc__.splitlines()[0])
    p.add_argument("--seeds", type=int, default=None, help="number of seeds (default 2 quick, 5)")
    p.add_argument("--epochs", type=int, default=None, help="epochs (default 3 quick, 8)")
    args = p.parse_args(argv)
    seeds = args.seeds or (2 if args.quick else 5)
    epochs = args.epochs or (3 if args.quick else 8)

    start = time.perf_counter()
    path = _common.data_dir("census-income-kdd", args.data)
    real = path is not None
    d = data.load_census_income(path) if real else generated_census()
    load_s = time.perf_counter() - start
    print(f"[data] {d.description} (loaded in {load_s:.1f}s)")

    model = functools.partial(
        models.MMoE,
        d.vocab_sizes,
        d.num_dense,
        d.num_tasks,
        embed_dim=8,
        num_experts=8,
        expert_hidden=(64,),
        tower=(32,),
    )
    config = drgrad_jax.TrainConfig(
        model=model,
        optimizer=optax.adam(1e-3),
        batch_size=512,
        num_epochs=epochs,
        log_every=1,
        name="mmoe_census",
    )
    train = drgrad_jax.make_train(config, d)
    splits = drgrad_jax.device_splits(d)
    keys = jax.random.split(jax.random.key(0), seeds)
    run = jax.jit(jax.vmap(train, in_axes=(0, None)))
    start = time.perf_counter()
    compiled = run.lower(keys, splits).compile()
    compile_s = time.perf_counter() - start
    start = time.perf_counter()
    result = jax.block_until_ready(compiled(keys, splits))
    run_s = time.perf_counter() - start

    epoch, test_auc = drgrad_jax.select_by_validation(result, rule="mean")
    test_auc = np.asarray(test_auc)
    mean, std = test_auc.mean(0), test_auc.std(0)
    num_params = models.param_count(nnx.eval_shape(lambda: model(rngs=nnx.Rngs(0))))
    print(f"\nMMoE on {d.description}")
    print(f"  {seeds} seeds x {epochs} epochs in one vmapped program, {num_params} parameters")
    print(f"  compile {compile_s:.1f}s, run {run_s:.1f}s")
    print(f"  best-validation epochs: {np.asarray(epoch).tolist()}")
    for k, name in enumerate(d.task_names):
        print(f"  {name:>14s} test AUC {mean[k]:.4f} +- {std[k]:.4f}  (per seed {test_auc[:, k]})")
    payload = {
        "split": d.description,
        "real_data": real,
        "seeds": seeds,
        "epochs": epochs,
        "num_params": num_params,
        "compile_s": compile_s,
        "run_s": run_s,
        "best_epoch": np.asarray(epoch).tolist(),
        "epoch_selection": "best mean validation AUC of the two tasks",
        "income_auc": float(mean[0]),
        "income_auc_std": float(std[0]),
        "marital_auc": float(mean[1]),
        "marital_auc_std": float(std[1]),
        "test_auc_per_seed": test_auc.tolist(),
        "val_auc_history": np.asarray(result.val_auc).tolist(),
        "targets": TARGETS,
    }
    _common.write_json(args.json, payload)
    if real:
        failed = [k for k, v in TARGETS.items() if payload[k] < v]
        if failed:
            raise AssertionError(
                f"MMoE below target on {d.description}: "
                + ", ".join(f"{k}={payload[k]:.4f} < {TARGETS[k]}" for k in failed)
            )
        print("  targets met: " + ", ".join(f"{k} >= {v}" for k, v in TARGETS.items()))
    else:
        print("  (generated data: quality targets not asserted)")
    return payload


if __name__ == "__main__":
    main()
