"""How well do ALM-MTA's deletion uplifts track the simulator's exact truth?

Trains ALM-MTA (default settings: GRL adversary, contrastive module, IPW) and the
same network without the adversary and contrastive terms (λ_max = 0, β = 0) on
the CDP simulator, then compares each model's per-touch deletion uplift Δ̂ on the
test split with the exact x-conditional interventional truth ``delta_x``:
Spearman rank correlation per journey (averaged over journeys whose truth and
estimate both vary), RMSE and top-1 agreement. Both front-door readings are
scored: ``ipw_simple`` and ``explicit`` (top-K of a reference pool; the ablation
uses the whole pool, K = R). Prediction metrics (outcome AUC, adversary AUC,
proxy AUC, contrastive accuracy) are reported alongside.

``--stress-steps N`` instead trains one run for at least N steps on the
simulator and checks that no parameter or metric becomes NaN and that the
epoch function compiled once.

Usage: ``python -m benchmarks.almmta_truth [--quick] [--json PATH] [--stress-steps N]``
"""

from __future__ import annotations

import dataclasses
import time

import jax
import jax.numpy as jnp
import numpy as np
from scipy import stats

import almmta_jax as am
from benchmarks import _common


def _spearman_per_journey(est, truth, mask):
    rhos = []
    for e, t, m in zip(est, truth, mask):
        e, t = e[m], t[m]
        if len(e) < 2 or np.ptp(e) == 0 or np.ptp(t) == 0:
            continue
        rhos.append(stats.spearmanr(e, t).statistic)
    return float(np.mean(rhos)), len(rhos)


def _score(est, truth, mask):
    rho, n = _spearman_per_journey(est, truth, mask)
    err = (est - truth)[mask]
    valid = mask.sum(1) > 0
    top_est = np.argmax(np.where(mask, est, -np.inf), axis=1)
    top_true = np.argmax(np.where(mask, truth, -np.inf), axis=1)
    return {
        "spearman": rho,
        "journeys_scored": n,
        "rmse": float(np.sqrt(np.mean(err**2))),
        "top1_agreement": float(np.mean((top_est == top_true)[valid])),
    }


def prepare(quick: bool, seed: int = 0):
    """Simulated world, IPW from a fitted propensity, and the train/val/test batches."""
    n_users = 6_000 if quick else 20_000
    sim_cfg = am.SimConfig.preset("default", n_users=n_users, n_rct=200)
    sim = am.simulate_cdp(sim_cfg, seed=seed)
    train_rows = sim.split == 0
    k = sim_cfg.n_clusters
    prop = am.fit_propensity(
        jnp.asarray(sim.x[train_rows]),
        jnp.asarray(sim.cluster[train_rows]),
        jnp.asarray(sim.mask[train_rows]),
        k,
        key=jax.random.key(seed),
        steps=300,
    )
    log_freq = am.cluster_log_frequency(
        jnp.asarray(sim.cluster[train_rows]), jnp.asarray(sim.mask[train_rows]), k
    )
    log_e = prop(jnp.asarray(sim.x[train_rows]))
    ipw = am.ipw_weights(
        log_e, jnp.asarray(sim.cluster[train_rows]), jnp.asarray(sim.mask[train_rows]), log_freq
    )
    train = am.sim_to_batch(sim, "train", ipw=np.asarray(ipw))
    val = am.sim_to_batch(sim, "val")
    test = am.sim_to_batch(sim, "test")
    strip = lambda b: jax.tree.map(jnp.asarray, b._replace(propensity=None))
    return sim, sim_cfg, prop, log_freq, strip(train), strip(val), strip(test)


def _model_config(sim_cfg):
    return am.ModelConfig(
        vocab_sizes=tuple(sim_cfg.vocab_sizes), d_x=sim_cfg.d_x, max_len=sim_cfg.max_len
    )


def run_variant(name, cfg, train, val, test, sim, prop, log_freq, pool_size, k_top, seed):
    start = time.perf_counter()
    trainer = am.make_trainer(cfg, train, val)
    state, (steps, evals) = trainer.run_epochs(
        trainer.init(jax.random.key(seed)), train, cfg.epochs
    )
    jax.block_until_ready(state)
    train_s = time.perf_counter() - start
    model = trainer.model(state)
    test_rows = np.flatnonzero(sim.split == 2)
    truth = sim.delta_x[test_rows]
    mask = np.asarray(test.touch_mask)
    out = {"train_s": train_s, "steps": int(state.step)}
    ev = trainer.evaluate(state, test)
    out["test"] = {f: float(v) for f, v in zip(ev._fields, ev)}
    out["last_epoch_val"] = {f: float(v[-1]) for f, v in zip(evals._fields, evals)}
    out["adversary_auc_by_epoch"] = [float(v) for v in evals.adversary_auc]
    simple = am.attribute(model, test, chunk_size=5)
    out["ipw_simple"] = _score(np.asarray(simple.uplift, np.float64), truth, mask)
    ref = jax.tree.map(lambda a: a[:pool_size], train)
    pool = am.build_reference_pool(model, ref, ref.touch_ids[..., 1])
    explicit = am.attribute(
        model,
        test,
        frontdoor="explicit",
        pool=pool,
        k=k_top,
        log_propensity=prop(test.x),
        log_frequency=log_freq,
        chunk_size=5,
    )
    out["explicit"] = _score(np.asarray(explicit.uplift, np.float64), truth, mask)
    out["finite"] = bool(
        all(np.all(np.isfinite(np.asarray(x))) for x in jax.tree.leaves(state.params))
    )
    print(
        f"  {name:>22}: spearman ipw_simple {out['ipw_simple']['spearman']:.3f}, "
        f"explicit {out['explicit']['spearman']:.3f}; test AUC {out['test']['outcome_auc']:.3f}, "
        f"adversary AUC {out['test']['adversary_auc']:.3f}, proxy AUC {out['test']['proxy_auc']:.3f}"
        f" ({train_s:.0f}s)",
        flush=True,
    )
    return out


def stress(steps: int, seed: int = 0) -> dict:
    sim, sim_cfg, _, _, train, val, _ = prepare(quick=True, seed=seed)
    mc = dataclasses.replace(_model_config(sim_cfg), d_model=32, ffn_dim=64, num_layers=1)
    batch = 128
    per_epoch = train.y.shape[0] // batch
    epochs = -(-steps // per_epoch)
    cfg = am.TrainConfig(mc, batch_size=batch, epochs=epochs, queue_size=1024, eval_size=512)
    trainer = am.make_trainer(cfg, train, val)
    state = trainer.init(jax.random.key(seed))
    chunk = 20  # epochs per call: one compiled epoch function for the whole run
    start = time.perf_counter()
    nan_at = None
    while int(state.step) < steps:
        state, (m, e) = trainer.run_epochs(state, train, chunk)
        leaves = jax.tree.leaves((state.params, state.adv_params, m, e))
        if not all(np.all(np.isfinite(np.asarray(x))) for x in leaves):
            nan_at = int(state.step)
            break
        print(
            f"  step {int(state.step)}: outcome loss {float(m.outcome_loss[-1]):.4f}, "
            f"adversary AUC {float(e.adversary_auc[-1]):.3f}, λ {float(m.adversary_weight[-1]):.3f}",
            flush=True,
        )
    return {
        "steps": int(state.step),
        "nan_at_step": nan_at,
        "epoch_fn_compilations": trainer.run_epochs._cache_size(),
        "wall_s": time.perf_counter() - start,
    }


def main(argv: list[str] | None = None) -> dict:
    p = _common.parser(__doc__.splitlines()[0])
    p.add_argument("--stress-steps", type=int, default=0, help="NaN/recompile check instead")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    if args.stress_steps:
        res = stress(args.stress_steps, args.seed)
        print(f"[almmta_truth] stress: {res}")
        _common.write_json(args.json, {"stress": res})
        return {"stress": res}
    start = time.perf_counter()
    sim, sim_cfg, prop, log_freq, train, val, test = prepare(args.quick, args.seed)
    mc = _model_config(sim_cfg)
    batch, epochs = (256, 10) if args.quick else (512, 10)
    pool_size = 512 if args.quick else 2048
    # The 500-step learning-rate warm-up of the notes would outlast a quick run.
    total = (train.y.shape[0] // batch) * epochs
    warm = min(500, max(1, total // 10))
    full = am.TrainConfig(mc, batch_size=batch, epochs=epochs, eval_size=2048, lr_warmup_steps=warm)
    ablation = dataclasses.replace(full, lambda_max=0.0, beta=0.0)
    print(
        f"[almmta_truth] simulator: {train.y.shape[0]} train / {test.y.shape[0]} test journeys, "
        f"upload rate {float(train.y.mean()):.3f}; batch {batch}, {epochs} epochs",
        flush=True,
    )
    results = {
        "alm_mta": run_variant(
            "ALM-MTA", full, train, val, test, sim, prop, log_freq, pool_size, 8, args.seed
        ),
        "no_adversary_no_contrastive": run_variant(
            "no adversary/contrastive",
            ablation,
            train,
            val,
            test,
            sim,
            prop,
            log_freq,
            pool_size,
            pool_size,
            args.seed,
        ),
    }
    payload = {
        "spearman": {
            k: {"ipw_simple": v["ipw_simple"]["spearman"], "explicit": v["explicit"]["spearman"]}
            for k, v in results.items()
        },
        "results": results,
        "quick": args.quick,
        "wall_s": time.perf_counter() - start,
    }
    _common.write_json(args.json, payload)
    return payload


if __name__ == "__main__":
    main()
