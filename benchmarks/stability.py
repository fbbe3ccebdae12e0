"""Do long runs stay finite? 100k DRGrad steps and 50k ALM-MTA steps on synthetic data.

DRGrad: a small SplitMMoE with the paper-mode ``drgrad`` transform (cumulative
updater) and Adam, trained by ``drgrad_jax.make_train``'s step-wise API on
``drgrad_jax.data.drgrad_synthetic("conflict", ...)``; the steps run in chunks
under one compiled loop (``Trainer.run``). After every chunk: mean task losses
over the chunk, validation AUC, the largest ``|param|``, the updater's
``(mu', mu'')`` and accumulators, and the count of steps the trainer skipped as
non-finite.

ALM-MTA: a one-layer width-16 ``almmta_jax.ModelConfig`` trained with the
public ``almmta_jax.make_train`` on ``SimConfig.preset("unit_test")`` worlds,
in chunks of whole epochs (``Trainer.run_epochs``). After every chunk: outcome
and adversary losses, outcome and adversary AUC, λ_t, the largest ``|param|``.

A run "diverged" when a loss, metric or parameter became non-finite, or when the
largest ``|param|`` passed ``--param-limit`` (default 1e3). The script asserts
neither happened.

Usage: ``python -m benchmarks.stability [--quick] [--json PATH] [--drgrad-steps N]
[--almmta-steps N] [--only drgrad|almmta]`` (``--quick``: 2k and 1k steps, well under a minute of
training).
"""

from __future__ import annotations

import dataclasses
import functools
import math
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

import almmta_jax as am
import drgrad_jax
from benchmarks import _common
from drgrad_jax import data, models


def _max_abs(tree) -> float:
    leaves = [np.asarray(x) for x in jax.tree.leaves(tree)]
    leaves = [x for x in leaves if np.issubdtype(x.dtype, np.floating) and x.size]
    return float(max(np.max(np.abs(x)) for x in leaves))


def _rounded(x, digits: int) -> list[float]:
    return [float(f"{float(v):.{digits}g}") for v in np.asarray(x).reshape(-1)]


def _finite(tree) -> bool:
    leaves = [np.asarray(x) for x in jax.tree.leaves(tree)]
    return all(np.all(np.isfinite(x)) for x in leaves if np.issubdtype(x.dtype, np.floating))


def _log_chunk(name: str, chunks: list, rec: dict, line: str, param_limit: float) -> bool:
    """Records and prints one chunk; True when it went non-finite or past ``param_limit``."""
    chunks.append(rec)
    print(f"  [{name}] step {rec['step']:>6}: {line} ({rec['chunk_s']} s)", flush=True)
    return not rec["finite"] or rec["max_abs_param"] > param_limit


def drgrad_run(steps: int, chunk: int, param_limit: float, seed: int = 0) -> dict:
    """``steps`` DRGrad steps in chunks of ``chunk``; one record per chunk."""
    batch = 32
    # Noisy labels (noise_std=1) on 16k rows: the loss has a floor, so gradients stay
    # non-zero for the whole run and the cumulative updater keeps accumulating.
    d = data.drgrad_synthetic(
        "conflict", 16384, 2048, 2048, dim=16, num_sines=4, noise_std=1.0, seed=seed
    )
    model = functools.partial(
        models.SplitMMoE, d.vocab_sizes, d.num_dense, 2, num_experts=4, expert_hidden=(16,)
    )
    towers = model(rngs=nnx.Rngs(0)).drgrad_towers("params")
    epochs = math.ceil(steps / (d.train.num_examples // batch))
    config = drgrad_jax.TrainConfig(
        model,
        optax.adam(1e-3),
        drgrad_jax.drgrad(towers, num_tasks=2),
        batch_size=batch,
        num_epochs=epochs,
    )
    trainer = drgrad_jax.make_train(config, d)
    val = drgrad_jax.device_splits(d)[1]
    state = trainer.init(jax.random.key(seed))
    chunks, diverged_at = [], None
    start = time.perf_counter()
    sizes = [min(chunk, steps - done) for done in range(0, steps, chunk)]
    for n in _common.rows(sizes, "drgrad chunks", unit="chunk"):
        tick = time.perf_counter()
        state, losses = trainer.run(state, n)
        jax.block_until_ready(state)
        run_s = time.perf_counter() - tick
        auc, _ = trainer.evaluate(state, val)
        drg = drgrad_jax.find_drgrad_state(state.opt_state)
        rec = {
            "step": int(state.step),
            "loss": _rounded(losses, 5),
            "val_auc": _rounded(auc, 4),
            "max_abs_param": _max_abs(state.params),
            "mu": _rounded(drg.mu, 5),
            "accumulators": _rounded(drg.accumulators, 6),
            "skipped": int(state.skipped),
            "finite": _finite((state.params, state.opt_state, losses)),
            "chunk_s": round(run_s, 2),
        }
        line = f"loss {rec['loss']} val AUC {rec['val_auc']}"
        line += f" max|param| {rec['max_abs_param']:.3f} mu {rec['mu']} skipped {rec['skipped']}"
        if _log_chunk("drgrad", chunks, rec, line, param_limit):
            diverged_at = rec["step"]
            break
    return {
        "steps": int(state.step),
        "batch_size": batch,
        "model": "SplitMMoE(4 experts of 16, towers of 16), drgrad paper mode + adam(1e-3)",
        "data": d.description,
        "chunks": chunks,
        "diverged_at_step": diverged_at,
        "skipped_steps": int(state.skipped),
        "run_compilations": trainer.compilations()["run"],
        "wall_s": round(time.perf_counter() - start, 1),
    }


def almmta_run(steps: int, chunk_epochs: int, param_limit: float, seed: int = 0) -> dict:
    """At least ``steps`` ALM-MTA steps in chunks of ``chunk_epochs`` epochs."""
    sim_cfg = am.simulate.SimConfig.preset("unit_test")
    sim = am.simulate.simulate_cdp(sim_cfg, seed=seed)
    strip = lambda b: jax.tree.map(jnp.asarray, b._replace(propensity=None))
    train = strip(am.simulate.sim_to_batch(sim, "train"))
    val = strip(am.simulate.sim_to_batch(sim, "val"))
    mc = am.ModelConfig(
        vocab_sizes=tuple(sim_cfg.vocab_sizes),
        d_x=sim_cfg.d_x,
        max_len=sim_cfg.max_len,
        d_model=16,
        num_heads=2,
        ffn_dim=32,
        num_layers=1,
        d_mediator=8,
        d_contrast=8,
    )
    batch = 64
    per_epoch = int(train.y.shape[0]) // batch
    epochs = math.ceil(steps / per_epoch)
    epochs = chunk_epochs * math.ceil(epochs / chunk_epochs)
    cfg = am.TrainConfig(mc, batch_size=batch, num_epochs=epochs, queue_size=256, eval_size=256)
    trainer = am.make_train(cfg, train, val)
    state = trainer.init(jax.random.key(seed))
    chunks, diverged_at = [], None
    start = time.perf_counter()
    # epochs is a whole number of chunks, the fewest that reach ``steps``.
    for _ in _common.rows(range(epochs // chunk_epochs), "almmta chunks", unit="chunk"):
        tick = time.perf_counter()
        state, (m, e) = trainer.run_epochs(state, chunk_epochs)
        jax.block_until_ready(state)
        run_s = time.perf_counter() - tick
        rec = {
            "step": int(state.step),
            "outcome_loss": round(float(jnp.mean(m.outcome_loss)), 5),
            "adversary_loss": round(float(jnp.mean(m.adversary_loss)), 5),
            "outcome_auc": round(float(e.outcome_auc[-1]), 4),
            "adversary_auc": round(float(e.adversary_auc[-1]), 4),
            "lambda": round(float(m.adversary_weight[-1]), 4),
            "max_abs_param": _max_abs((state.params, state.adv_params)),
            "finite": _finite((state.params, state.adv_params, state.opt_state, m, e)),
            "chunk_s": round(run_s, 2),
        }
        line = f"outcome loss {rec['outcome_loss']} adv loss {rec['adversary_loss']}"
        line += f" AUC {rec['outcome_auc']} adv AUC {rec['adversary_auc']} λ {rec['lambda']}"
        line += f" max|param| {rec['max_abs_param']:.3f}"
        if _log_chunk("almmta", chunks, rec, line, param_limit):
            diverged_at = rec["step"]
            break
    return {
        "steps": int(state.step),
        "batch_size": batch,
        "steps_per_epoch": per_epoch,
        "model": dataclasses.asdict(mc) | {"vocab_sizes": list(mc.vocab_sizes)},
        "data": "almmta_jax.simulate.SimConfig.preset('unit_test'), train split",
        "chunks": chunks,
        "diverged_at_step": diverged_at,
        "epoch_fn_compilations": trainer.compilations()["run_epochs"],
        "wall_s": round(time.perf_counter() - start, 1),
    }


def main(argv: list[str] | None = None) -> dict:
    p = _common.parser(__doc__.splitlines()[0])
    p.add_argument("--drgrad-steps", type=int, default=None, help="default 100000 (quick 2000)")
    p.add_argument("--almmta-steps", type=int, default=None, help="default 50000 (quick 1000)")
    p.add_argument("--param-limit", type=float, default=1e3, help="max |param| counted as diverged")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--only", choices=("drgrad", "almmta"), default=None, help="run one trainer")
    args = p.parse_args(argv)
    dr_steps = args.drgrad_steps or (2_000 if args.quick else 100_000)
    am_steps = args.almmta_steps or (1_000 if args.quick else 50_000)
    print(f"[stability] {dr_steps} DRGrad steps, {am_steps} ALM-MTA steps on {jax.devices()[0]}")
    start = time.perf_counter()
    out = {"benchmark": "stability", "quick": bool(args.quick), "device": str(jax.devices()[0])}
    if args.only in (None, "drgrad"):
        chunk = max(dr_steps // 20, 100)
        out["drgrad"] = drgrad_run(dr_steps, chunk, args.param_limit, args.seed)
    if args.only in (None, "almmta"):
        chunk = 5 if args.quick else 100
        out["almmta"] = almmta_run(am_steps, chunk, args.param_limit, args.seed)
    out["wall_s"] = round(time.perf_counter() - start, 1)
    for name in ("drgrad", "almmta"):
        if name not in out:
            continue
        rec = out[name]
        last = rec["chunks"][-1]
        print(
            f"[stability] {name}: {rec['steps']} steps in {rec['wall_s']} s, diverged at "
            f"{rec['diverged_at_step']}, final max|param| {last['max_abs_param']:.3f}"
        )
    _common.write_json(args.json, out)
    for name in ("drgrad", "almmta"):
        if name in out:
            at = out[name]["diverged_at_step"]
            assert at is None, f"{name} diverged at step {at}"
    if "drgrad" in out:
        assert out["drgrad"]["run_compilations"] == 1, "Trainer.run compiled more than once"
    return out


if __name__ == "__main__":
    main()
