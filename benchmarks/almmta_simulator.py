"""ALM-MTA vs baselines on the CDP simulator: prediction, grouped AUUC and exact-truth recovery.

``python -m benchmarks.almmta_simulator [--quick | --medium] [--seeds N] [--json PATH]
[--no-results] [--no-switches]``

For every method (docs/almmta.md, *Baselines*) on the simulator (docs/almmta.md, *CDP simulator*): AUC, log-loss, gAUC
(k-means segments of x), the bucketed grouped AUUC of docs/almmta.md, *Grouped AUUC protocol*, per
propensity bucket and averaged (oracle-normalized: random 0.5, oracle 1), and
against the exact x-conditional truth ``delta_x`` (``metrics.effect_agreement``):
the mean per-journey Spearman of deletion uplifts, the Spearman over every
touch pooled and the per-touch RMSE (the two that see levels), top-1
agreement, and the RMSE / Spearman of cluster-level effects against the exact
cluster-removal truth. Per propensity bucket, every method's grouped AUUC is
averaged over seeds and ALM-MTA's gain over the best baseline gets a 95 % t
interval and a paired t-test (``bucket_gains``; JSON key ``bucket_gains``).
The default world is then repeated with each front-door switch turned on
(``gamma_TY``: direct T→Y; ``gamma_WM``: W→M) for a subset of methods.

Every number is a mean ± std over ``--seeds`` seeds; seed s simulates its own
world and trains every method from key s, so the spread covers both the data
and the training. ALM-MTA is compared with the better backdoor baseline
(CausalMTA-style or DML) by a paired t-test over seeds.

The protocol itself is validated against the simulator's randomized arm: the
observational IPW cell uplifts ``U_bc`` are compared with the cells measured
directly on the randomized users (same observational buckets, difference in
means), with their noise-free version (outcome ``p_x``) and with the exact
removal effects; a deliberately naive propensity (no x) is scored the same
way; and each method's grouped AUUC is recomputed on the randomized arm to
check that it ranks the methods as the observational protocol does.

Modes: ``--quick`` (4k users, six methods, ~15 min on the busy shared 2-core
machine, most of it compiling the first seed) is a smoke run whose seed spread
is as large as the differences between methods; ``--medium`` (8k users, every
method) is what ``RESULTS.md`` reports; the default is the full world of the
notes. ``--render a.json b.json`` rewrites the table from saved runs.

Writing RESULTS.md also draws its figures as small PNGs in ``benchmarks/figures/``:
each method's per-seed avg grouped AUUC and truth Spearman, and the per-bucket gain
curves of seed 0's default world (kept in the payload as ``uplift_curves``; runs
saved before it was kept render without that figure).

Attribution of every method is single-touch deletion on the probability
scale; ALM-MTA uses the ``ipw_simple`` front-door reading (the explicit
K-of-R sum is not used here, so "no contrastive" differs from the full model
only by β = 0 in training). Each method's training program is compiled once
and reused for every seed and world (same shapes).
"""

from __future__ import annotations

import dataclasses
import json
import pathlib
import time

import jax
import jax.numpy as jnp
import numpy as np
from scipy.stats import spearmanr, ttest_rel
from scipy.stats import t as student_t

import almmta_jax
from almmta_jax import (
    ModelConfig,
    TrainConfig,
    attribute,
    cluster_log_frequency,
    fit_dml,
    fit_propensity,
    ipw_weights,
    make_train,
    metrics,
)
from almmta_jax.metrics import cell_agreement
from almmta_jax.simulate import SimConfig, sim_to_batch, simulate_cdp
from benchmarks import _common

CLUSTER_FIELD = 1
ALL_METHODS = (
    "alm_mta",
    "alm_mta_no_contrastive",
    "alm_mta_lambda0",
    "proxy_direct",
    "lr",
    "dnamta",
    "causalmta",
    "dml",
)
QUICK_METHODS = ("alm_mta", "proxy_direct", "lr", "dnamta", "causalmta", "dml")
SWITCH_METHODS = ("alm_mta", "causalmta", "dml")
BACKDOOR = ("causalmta", "dml")
# The paper's baselines: the per-bucket comparison takes the best of those that ran.
BASELINES = ("lr", "dnamta", "causalmta", "dml")
TRUTH = "truth_delta_x"
RESULTS_MD = pathlib.Path(__file__).parent / "RESULTS.md"
BEGIN, END = "<!-- almmta:begin -->", "<!-- almmta:end -->"


@dataclasses.dataclass(frozen=True)
class Sizes:
    n_users: int
    n_items: int
    n_clusters: int
    max_len: int
    alm_epochs: int
    baseline_epochs: int
    batch_size: int
    d_model: int
    num_layers: int
    num_buckets: int
    n_min: int
    segments: int


QUICK = Sizes(4_000, 300, 10, 8, 5, 5, 256, 32, 1, 3, 30, 20)
MEDIUM = Sizes(8_000, 400, 10, 8, 6, 6, 256, 32, 1, 3, 30, 20)
FULL = Sizes(20_000, 2_000, 50, 20, 10, 10, 512, 64, 2, 5, 30, 50)
MODES = {"quick": QUICK, "medium": MEDIUM, "full": FULL}


def _rows(batch, idx):
    return jax.tree.map(lambda a: np.asarray(a)[idx], batch)


# Journeys need 3 valid touches to enter the per-journey Spearman mean here (the
# truth study keeps the library's 2), so the reported figures stay comparable.
JOURNEY_MIN_TOUCHES = 3


def _truth_metrics(uplift, sim, rows, mask, clusters, k):
    delta = sim.delta_x[rows]
    top1 = []
    for p, t, m in zip(uplift, delta, mask, strict=True):
        if m.sum() >= 2:
            top1.append(np.argmax(np.where(m, p, -np.inf)) == np.argmax(np.where(m, t, -np.inf)))
    # Cluster-level effect: mean over exposed users of the summed credit of the
    # cluster's touches vs the exact removal of all of them (removal_x).
    exposure, _ = metrics.cluster_exposure_scores(uplift, clusters, mask, k)
    model_sum = np.zeros(exposure.shape)
    for c in range(k):
        model_sum[:, c] = np.where(mask & (clusters == c), uplift, 0).sum(1)
    truth_rm = _removal_per_cluster(sim, rows, clusters, mask, k)
    n_exp = exposure.sum(0)
    ok = n_exp > 0
    model_c = np.where(ok, (model_sum * exposure).sum(0) / np.maximum(n_exp, 1), np.nan)
    truth_c = np.where(
        ok, np.nansum(np.where(exposure, truth_rm, 0), 0) / np.maximum(n_exp, 1), np.nan
    )
    agree = metrics.effect_agreement(uplift, delta, mask, min_touches=JOURNEY_MIN_TOUCHES)
    return {
        "truth_spearman": agree.journey_spearman,
        "truth_pooled_spearman": agree.pooled_spearman,
        "truth_rmse": agree.rmse,
        "truth_top1": float(np.mean(top1)),
        "cluster_effect_rmse": float(np.sqrt(np.nanmean((model_c - truth_c) ** 2))),
        "cluster_effect_spearman": float(spearmanr(model_c[ok], truth_c[ok])[0]),
    }


def _removal_per_cluster(sim, rows, clusters, mask, k):
    """``[U, K]`` exact effect of removing all of the user's touches of c (NaN if unexposed)."""
    out = np.full((len(rows), k), np.nan)
    for c in range(k):
        at = mask & (clusters == c)
        first = np.argmax(at, axis=1)
        out[:, c] = np.where(at.any(1), sim.removal_x[rows][np.arange(len(rows)), first], np.nan)
    return out


class _World:
    """One simulated world with its evaluation protocol pieces (observational and randomized)."""

    def __init__(self, sim_cfg: SimConfig, sizes: Sizes, seed: int):
        self.sim = simulate_cdp(sim_cfg, seed=seed)
        self.sim_cfg = sim_cfg
        self.sim_vocab = sim_cfg.vocab_sizes
        self.k = sim_cfg.n_clusters
        self.sizes = sizes
        full = sim_to_batch(self.sim, "all")
        split = self.sim.split
        self.train_rows = np.flatnonzero(split == 0)
        self.eval_rows = np.flatnonzero((split == 1) | (split == 2))
        self.rct_rows = np.flatnonzero(split == 3)
        train = _rows(full, self.train_rows)
        self.eval = _rows(full, self.eval_rows)
        self.rct = _rows(full, self.rct_rows)
        clusters = jnp.asarray(train.touch_ids[..., CLUSTER_FIELD])
        prop = fit_propensity(
            jnp.asarray(train.x),
            clusters,
            jnp.asarray(train.touch_mask),
            self.k,
            key=jax.random.key(seed),
        )
        ipw = ipw_weights(
            prop(jnp.asarray(train.x)),
            clusters,
            jnp.asarray(train.touch_mask),
            cluster_log_frequency(clusters, jnp.asarray(train.touch_mask), self.k),
        )
        self.train = train._replace(ipw=np.asarray(ipw))
        # Evaluation protocol: exposure propensity fitted on the training users.
        zeros = np.zeros_like(train.touch_ids[..., 0], np.float64)
        e_train, _ = metrics.cluster_exposure_scores(
            zeros, train.touch_ids[..., CLUSTER_FIELD], train.touch_mask, self.k
        )
        self.eval_clusters = np.asarray(self.eval.touch_ids[..., CLUSTER_FIELD])
        self.eval_mask = np.asarray(self.eval.touch_mask)
        both = metrics.exposure_propensity(
            train.x, e_train, np.concatenate([self.eval.x, self.rct.x])
        )
        n_ev = len(self.eval_rows)
        self.exposure_prop, rct_prop_x = both[:n_ev], both[n_ev:]
        # A deliberately naive propensity: the marginal exposure rate, no x.
        rate = np.clip(e_train.mean(0), 0.01, 0.99)
        self.naive_prop = np.broadcast_to(rate[None, :], self.exposure_prop.shape)
        # Randomized arm: bucketed by the observational ê_c(x) with the
        # observational users' edges, weighted by its design propensity (the
        # arm's exposure rate: IPW reduces to a difference in means).
        self.rct_clusters = np.asarray(self.rct.touch_ids[..., CLUSTER_FIELD])
        self.rct_mask = np.asarray(self.rct.touch_mask)
        self.rct_exposure, _ = metrics.cluster_exposure_scores(
            np.zeros(self.rct_mask.shape), self.rct_clusters, self.rct_mask, self.k
        )
        rct_rate = np.clip(self.rct_exposure.mean(0), 0.01, 0.99)
        self.rct_prop = np.broadcast_to(rct_rate[None, :], self.rct_exposure.shape)
        self.rct_buckets = metrics.propensity_buckets(
            rct_prop_x, sizes.num_buckets, reference=self.exposure_prop
        )
        self.buckets = metrics.propensity_buckets(self.exposure_prop, sizes.num_buckets)
        _, seg, _ = metrics.kmeans(jax.random.key(seed + 1), self.eval.x, sizes.segments)
        self.segments = np.asarray(seg)

    def _grouped(self, uplift, clusters, mask, outcome, prop, buckets=None):
        exposure, score = metrics.cluster_exposure_scores(uplift, clusters, mask, self.k)
        return metrics.grouped_auuc(
            score,
            exposure,
            outcome,
            prop,
            num_buckets=self.sizes.num_buckets,
            n_min=self.sizes.n_min,
            buckets=buckets,
        )

    def grouped(self, uplift, outcome=None, prop=None):
        y = self.eval.y if outcome is None else outcome
        p = self.exposure_prop if prop is None else prop
        # Cells stay those of the fitted ê_c(x) when another propensity weights them.
        buckets = None if prop is None else self.buckets
        return self._grouped(uplift, self.eval_clusters, self.eval_mask, y, p, buckets)

    def grouped_rct(self, uplift, outcome=None):
        y = self.rct.y if outcome is None else outcome
        return self._grouped(
            uplift, self.rct_clusters, self.rct_mask, y, self.rct_prop, self.rct_buckets
        )

    def score(self, uplift, prob, rct_uplift) -> tuple[dict, metrics.GroupedAUUC]:
        y = self.eval.y
        uplift = np.asarray(uplift, np.float64)
        g = self.grouped(uplift)
        g_rct = self.grouped_rct(np.asarray(rct_uplift, np.float64))
        g_rct_exact = self.grouped_rct(
            np.asarray(rct_uplift, np.float64), self.sim.p_x[self.rct_rows]
        )
        out = {
            "auc": float(metrics.auc(y, prob)),
            "log_loss": float(metrics.log_loss(y, np.clip(prob, 1e-7, 1 - 1e-7))),
            "gauc": float(metrics.gauc(y, prob, self.segments)),
            "avg_grouped_auuc": g.average,
            "rct_avg_grouped_auuc": g_rct.average,
            "rct_exact_avg_grouped_auuc": g_rct_exact.average,
            "grouped_auuc_per_bucket": [None if np.isnan(v) else float(v) for v in g.per_bucket],
            "grouped_auuc_causalml_per_bucket": [
                None if np.isnan(v) else float(v) for v in g.per_bucket_causalml
            ],
            "buckets_scored": int(g.valid.sum()),
            "bucket_reasons": list(g.reason),
            "cells_dropped_fraction": g.dropped_fraction,
        }
        out.update(
            _truth_metrics(
                uplift, self.sim, self.eval_rows, self.eval_mask, self.eval_clusters, self.k
            )
        )
        return out, g

    def protocol_validation(self) -> dict:
        """Observational IPW cell uplifts vs the randomized arm and the exact effects."""
        zeros = np.zeros(self.eval_mask.shape)
        p_eval = self.sim.p_x[self.eval_rows]
        obs = self.grouped(zeros).cell_uplift
        obs_px = self.grouped(zeros, outcome=p_eval).cell_uplift
        naive = self.grouped(zeros, prop=self.naive_prop).cell_uplift
        naive_px = self.grouped(zeros, outcome=p_eval, prop=self.naive_prop).cell_uplift
        rct_zeros = np.zeros(self.rct_mask.shape)
        rct = self.grouped_rct(rct_zeros).cell_uplift
        rct_px = self.grouped_rct(rct_zeros, self.sim.p_x[self.rct_rows]).cell_uplift
        # Exact: mean removal effect over the cell's exposed observational users.
        rem = _removal_per_cluster(
            self.sim, self.eval_rows, self.eval_clusters, self.eval_mask, self.k
        )
        exact = np.full(obs.shape, np.nan)
        for b in range(self.sizes.num_buckets):
            cell = (self.buckets == b) & np.isfinite(rem)
            with np.errstate(invalid="ignore"):
                exact[b] = np.where(cell, rem, 0).sum(0) / cell.sum(0)
        exact = np.where(np.isfinite(obs), exact, np.nan)
        pairs = {
            "obs_ipw_vs_rct": (rct, obs),
            "obs_ipw_vs_rct_exact": (rct_px, obs),
            "obs_ipw_exact_vs_rct_exact": (rct_px, obs_px),
            "naive_vs_rct_exact": (rct_px, naive),
            "naive_exact_vs_rct_exact": (rct_px, naive_px),
            "rct_vs_rct_exact": (rct_px, rct),
            "obs_ipw_vs_exact_removal": (exact, obs),
            "rct_exact_vs_exact_removal": (exact, rct_px),
        }
        return {k: cell_agreement(r, e)._asdict() for k, (r, e) in pairs.items()}


def _alm_config(world: _World, sizes: Sizes, post_outcome_fields=()) -> TrainConfig:
    mc = ModelConfig(
        post_outcome_fields=tuple(post_outcome_fields),
        vocab_sizes=world.sim_vocab,
        d_x=world.train.x.shape[1],
        max_len=sizes.max_len,
        d_model=sizes.d_model,
        num_heads=2,
        ffn_dim=2 * sizes.d_model,
        d_mediator=8,
        d_contrast=16,
        num_layers=sizes.num_layers,
    )
    return TrainConfig(
        mc,
        batch_size=sizes.batch_size,
        num_epochs=sizes.alm_epochs,
        queue_size=1024,
        lr_warmup_steps=50,
    )


class _Methods:
    """Each method's compiled training program, built on the first world and reused.

    Every world of a run has the same shapes, so one program per method serves
    every seed and every front-door switch (data are arguments, not constants).
    """

    def __init__(self, sizes: Sizes, post_outcome_fields=()):
        self.sizes = sizes
        # touch_ids columns ALM-MTA treats as post-outcome logs (mediator branch only).
        self.post_outcome_fields = tuple(post_outcome_fields)
        self._alm, self._base = {}, {}

    def _bcfg(self, world: _World) -> almmta_jax.BaselineConfig:
        s = self.sizes
        return almmta_jax.BaselineConfig(
            world.sim_vocab,
            d_x=world.train.x.shape[1],
            max_len=s.max_len,
            channel_field=CLUSTER_FIELD,
            hidden=s.d_model,
            batch_size=s.batch_size,
            num_epochs=s.baseline_epochs,
            lr_warmup_steps=50,
        )

    def run(self, name: str, world: _World, seed: int):
        """``(uplift_eval, prob_eval, uplift_rct, extra)`` of one method on one world."""
        key = jax.random.key(seed)
        tr = world.train
        both = jax.tree.map(lambda a, b: np.concatenate([a, b]), world.eval, world.rct)
        n_ev = len(world.eval_rows)
        if name.startswith("alm_mta"):
            if name not in self._alm:
                variant = {
                    "alm_mta": "full",
                    "alm_mta_no_contrastive": "no_contrastive",
                    "alm_mta_lambda0": "lambda0",
                }[name]
                cfg = _alm_config(world, self.sizes, self.post_outcome_fields)
                cfg = almmta_jax.alm_mta_variant(cfg, variant)
                trainer = make_train(cfg, tr, world.eval)
                train = jax.jit(lambda k, d, t=trainer: t(k, d)[0])
                self._alm[name] = (trainer, train)
            trainer, train = self._alm[name]
            state = train(key, jax.tree.map(jnp.asarray, tr))
            ev = trainer.evaluate(state, jax.tree.map(jnp.asarray, world.eval))
            att = attribute(trainer.model(state), jax.tree.map(jnp.asarray, both))
            u, p = np.asarray(att.uplift), np.asarray(att.prob)
            return u[:n_ev], p[:n_ev], u[n_ev:], {"adversary_auc": float(ev.adversary_auc)}
        if name == "dml":
            model = fit_dml(tr, CLUSTER_FIELD, world.k, seed=seed)
            u, p = almmta_jax.attribute_baseline(model, both)
            return u[:n_ev], p[:n_ev], u[n_ev:], {}
        data = tr._replace(ipw=np.ones_like(tr.ipw))
        if name == "causalmta":
            w = almmta_jax.journey_balancing_weights(
                tr.x, almmta_jax.channel_bags(tr, CLUSTER_FIELD, world.k), key, steps=300
            )
            data = tr._replace(ipw=w)
        if name not in self._base:
            bcfg = self._bcfg(world)
            if name == "lr":
                bcfg = dataclasses.replace(bcfg, learning_rate=1e-2, weight_decay=1e-4)
                fn = lambda r, c=bcfg: almmta_jax.LogisticMTA(c, rngs=r)
            elif name == "dnamta":
                fn = lambda r, c=bcfg: almmta_jax.DNAMTA(c, rngs=r)
            elif name == "proxy_direct":
                fn = lambda r, c=bcfg: almmta_jax.ProxyDirect(c, rngs=r)
            elif name == "causalmta":
                fn = lambda r, c=bcfg: almmta_jax.CausalMTAPredictor(c, rngs=r)
            else:
                raise ValueError(f"unknown method {name!r}")
            self._base[name] = jax.jit(almmta_jax.make_baseline_train(fn, bcfg, data))
        run = self._base[name](key, jax.tree.map(jnp.asarray, data))
        u, p = almmta_jax.attribute_baseline(run.model(), both)
        extra = {"final_train_loss": float(run.losses[-1])}
        return u[:n_ev], p[:n_ev], u[n_ev:], extra


def run_world(
    sim_cfg: SimConfig,
    sizes: Sizes,
    methods,
    runner: _Methods,
    seed: int = 0,
    label: str = "default",
    world_cls=None,
):
    """Every method on the world of ``seed``: ``(results, curves, protocol_validation)``."""
    start = time.perf_counter()
    world = (world_cls or _World)(sim_cfg, sizes, seed)
    print(
        f"[{label} s{seed}] simulated {sim_cfg.n_users} users, upload rate "
        f"{world.sim.y[world.sim.arm == 0].mean():.3f}, eval users {len(world.eval_rows)}, "
        f"randomized {len(world.rct_rows)} ({time.perf_counter() - start:.1f}s)",
        flush=True,
    )
    results, curves = {}, {}
    # Protocol check: the same cells scored by the exact deletion truth.
    truth, g = world.score(
        world.sim.delta_x[world.eval_rows],
        world.sim.p_x[world.eval_rows],
        world.sim.delta_x[world.rct_rows],
    )
    results[TRUTH], curves[TRUTH] = truth, g
    for name in _common.rows(methods, f"[{label} s{seed}] methods", leave=False):
        t0 = time.perf_counter()
        u, p, u_rct, extra = runner.run(name, world, seed)
        res, g = world.score(u, p, u_rct)
        res.update(extra)
        res["seconds"] = time.perf_counter() - t0
        results[name], curves[name] = res, g
        print(
            f"[{label} s{seed}] {name:24s} AUC {res['auc']:.4f} avgAUUC "
            f"{res['avg_grouped_auuc']:.4f} (RCT {res['rct_avg_grouped_auuc']:.4f}) truth rho "
            f"{res['truth_spearman']:.3f} (pooled {res['truth_pooled_spearman']:.3f}, rmse "
            f"{res['truth_rmse']:.4f}) cluster rmse {res['cluster_effect_rmse']:.4f} "
            f"({res['seconds']:.0f}s)",
            flush=True,
        )
    return results, curves, world.protocol_validation()


# ------------------------------------------------------------ seeds and summary

SCALARS = (
    "auc",
    "log_loss",
    "gauc",
    "avg_grouped_auuc",
    "rct_avg_grouped_auuc",
    "rct_exact_avg_grouped_auuc",
    "truth_spearman",
    "truth_pooled_spearman",
    "truth_rmse",
    "truth_top1",
    "cluster_effect_rmse",
    "cluster_effect_spearman",
    "adversary_auc",
    "seconds",
)


def aggregate(per_seed: list[dict]) -> dict:
    """``{method: {metric: mean, metric_std: std, "per_seed": {metric: [...]}}}``."""
    out = {}
    for name in per_seed[0]:
        rec, seeds = {}, {}
        for m in SCALARS:
            vals = [r[name].get(m) for r in per_seed if name in r]
            if any(v is None for v in vals) or not vals:
                continue
            v = np.asarray(vals, np.float64)
            rec[m] = float(np.nanmean(v)) if np.isfinite(v).any() else float("nan")
            rec[f"{m}_std"] = float(np.nanstd(v, ddof=1)) if np.isfinite(v).sum() > 1 else 0.0
            seeds[m] = [float(x) for x in v]
        rec["buckets_scored"] = int(min(r[name]["buckets_scored"] for r in per_seed))
        seeds["grouped_auuc_per_bucket"] = [
            r[name]["grouped_auuc_per_bucket"] for r in per_seed if name in r
        ]
        rec["per_seed"] = seeds
        out[name] = rec
    return out


def _paired(per_seed: list[dict], a: str, b: str, metric: str) -> dict:
    x = np.asarray([r[a][metric] for r in per_seed], np.float64)
    y = np.asarray([r[b][metric] for r in per_seed], np.float64)
    d = x - y
    p = float(ttest_rel(x, y).pvalue) if len(d) > 1 and np.ptp(d) > 0 else float("nan")
    return {
        "metric": metric,
        "a": a,
        "b": b,
        "mean_diff": float(d.mean()),
        "std_diff": float(d.std(ddof=1)) if len(d) > 1 else 0.0,
        "a_greater": int((d > 0).sum()),
        "n": int(len(d)),
        "p_value": p,
    }


def _bucket_values(rec: dict, b: int) -> np.ndarray:
    """One method's grouped AUUC of bucket ``b`` per seed (NaN where the bucket was skipped)."""
    rows = rec["per_seed"]["grouped_auuc_per_bucket"]
    return np.asarray([np.nan if r[b] is None else r[b] for r in rows], np.float64)


def _gain(x: np.ndarray, y: np.ndarray) -> dict:
    """Mean of the paired differences x − y with a 95 % t interval and the paired t-test."""
    ok = np.isfinite(x) & np.isfinite(y)
    d = x[ok] - y[ok]
    n = int(d.size)
    nan = float("nan")
    out = {"gain": float(d.mean()) if n else nan, "ci_low": nan, "ci_high": nan}
    out |= {"p_value": nan, "n": n, "higher": int((d > 0).sum())}
    if n > 1:
        half = float(student_t.ppf(0.975, n - 1) * d.std(ddof=1) / np.sqrt(n))
        out["ci_low"], out["ci_high"] = out["gain"] - half, out["gain"] + half
        if np.ptp(d) > 0:
            out["p_value"] = float(ttest_rel(x[ok], y[ok]).pvalue)
    return out


def bucket_gains(res: dict, method: str = "alm_mta") -> dict | None:
    """Per propensity bucket: every method's grouped AUUC over seeds and ``method``'s gain.

    The best baseline of a bucket is the one of ``BASELINES`` with the highest
    mean AUUC there, picked on the same seeds (which favors it); the gain is
    the mean over seeds of ``method`` minus it, with a 95 % t interval and a
    paired t-test p-value over the seeds where both scored the bucket
    (docs/almmta.md, *Grouped AUUC protocol*, step 8). None when ``method`` or
    every baseline is absent, or the records predate the per-bucket values.
    """
    baselines = [b for b in BASELINES if b in res]
    if method not in res or not baselines:
        return None
    if any("grouped_auuc_per_bucket" not in rec["per_seed"] for rec in res.values()):
        return None
    buckets = []
    for b in range(len(res[method]["per_seed"]["grouped_auuc_per_bucket"][0])):
        vals = {name: _bucket_values(rec, b) for name, rec in res.items()}
        means = {
            k: float(np.nanmean(v)) if np.isfinite(v).any() else float("nan")
            for k, v in vals.items()
        }
        scored = [k for k in baselines if np.isfinite(means[k])]
        best = max(scored, key=means.get) if scored else None
        rec = {"bucket": b, "auuc": means, "best_baseline": best}
        rec |= _gain(vals[method], vals[best] if best else np.full_like(vals[method], np.nan))
        buckets.append(rec)
    gains = np.asarray([r["gain"] for r in buckets], np.float64)
    return {
        "method": method,
        "baselines": baselines,
        "buckets": buckets,
        "compared": int(np.isfinite(gains).sum()),
        "higher_in": int((gains > 0).sum()),
        "ci_above_zero_in": int(sum(r["ci_low"] > 0 for r in buckets)),
        "largest_gain": float(np.nanmax(gains)) if np.isfinite(gains).any() else float("nan"),
    }


def _ranking_agreement(per_seed: list[dict], methods) -> dict:
    """Spearman over methods of observational vs randomized-arm grouped AUUC, per seed."""
    vals = {"rct": [], "rct_exact": []}
    for r in per_seed:
        obs = [r[m]["avg_grouped_auuc"] for m in methods]
        for key, col in (
            ("rct", "rct_avg_grouped_auuc"),
            ("rct_exact", "rct_exact_avg_grouped_auuc"),
        ):
            vals[key].append(float(spearmanr(obs, [r[m][col] for m in methods])[0]))
    return {f"obs_vs_{k}_spearman": float(np.nanmean(v)) for k, v in vals.items()} | {
        f"obs_vs_{k}_spearman_per_seed": v for k, v in vals.items()
    }


def _validation_mean(per_seed: list[dict]) -> dict:
    out = {}
    for pair in per_seed[0]:
        rec = {}
        for field in ("n_cells", "correlation", "rmse", "mean_error"):
            v = np.asarray([r[pair][field] for r in per_seed], np.float64)
            rec[field] = float(np.nanmean(v))
            rec[f"{field}_std"] = float(np.nanstd(v, ddof=1)) if len(v) > 1 else 0.0
        out[pair] = rec
    return out


def _pm(r: dict, m: str, digits: int = 4) -> str:
    if m not in r:
        return "–"
    return f"{_fmt(r[m], digits)} ± {_fmt(r.get(f'{m}_std', 0.0), digits)}"


def _fmt(v, digits=4):
    return "–" if v is None or (isinstance(v, float) and np.isnan(v)) else f"{v:.{digits}f}"


def _invocations(payload: dict) -> str:
    n = payload.get("invocations", 1)
    return "" if n == 1 else f", summed over {n} invocations run side by side"


MAIN_COLUMNS = (  # what a reader needs: prediction, the paper's score, the truth
    ("AUC", "auc", 4),
    ("avg grouped AUUC", "avg_grouped_auuc", 4),
    ("truth Spearman", "truth_spearman", 3),
    ("pooled truth Spearman", "truth_pooled_spearman", 3),
    ("truth RMSE", "truth_rmse", 4),
    ("cluster-effect Spearman", "cluster_effect_spearman", 3),
)
DETAIL_COLUMNS = (
    ("gAUC", "gauc", 4),
    ("RCT grouped AUUC", "rct_avg_grouped_auuc", 4),
    ("RCT exact", "rct_exact_avg_grouped_auuc", 4),
    ("top-1", "truth_top1", 3),
    ("cluster-effect RMSE", "cluster_effect_rmse", 4),
)
FIGURES = {
    "curves": "![Cumulative gain over clusters per propensity bucket: the exact truth, ALM-MTA, "
    "the backdoor baselines, LR and the oracle](figures/almmta_uplift_curves.png)\n\n"
    "*Reading:* per propensity bucket, the gain collected by ranking clusters by each method's "
    "uplift (seed 0, default world); the closer to the dashed oracle, the higher the bucket's "
    "grouped AUUC (in the legend).",
    "seeds": "![Avg grouped AUUC and truth Spearman per method and seed, default world]"
    "(figures/almmta_simulator_seeds.png)\n\n*Reading:* each dot is one seed's world, the bar "
    "the mean: how far apart the methods are next to how far one method moves between seeds.",
}


def _table(res: dict, columns, label: str = "method") -> list[str]:
    order = [TRUTH, *ALL_METHODS]  # a JSON round trip sorts the keys
    lines = [
        f"| {label} | " + " | ".join(c[0] for c in columns) + " |",
        "|---|" + "---|" * len(columns),
    ]
    for name in sorted(res, key=lambda m: order.index(m) if m in order else len(order)):
        cells = " | ".join(_pm(res[name], key, digits) for _, key, digits in columns)
        lines.append(f"| {name} | {cells} |")
    return lines


def _reading(res: dict) -> str:
    """One line under a world's table: who leads on the paper's score and on the truth."""
    trained = {k: v for k, v in res.items() if k != TRUTH}
    parts = []
    for label, key, digits in (
        ("avg grouped AUUC", "avg_grouped_auuc", 4),
        ("truth Spearman", "truth_spearman", 3),
    ):
        scored = {k: v[key] for k, v in trained.items() if np.isfinite(v.get(key, np.nan))}
        if scored:
            best = max(scored, key=scored.get)
            parts.append(f"{best} leads on {label} ({scored[best]:.{digits}f})")
    line = "*Reading:* among the trained methods, " + " and ".join(parts)
    if TRUTH in res:
        line += (
            f"; the `{TRUTH}` row scores the simulator's exact effects "
            f"(avg grouped AUUC {_fmt(res[TRUTH].get('avg_grouped_auuc'))})"
        )
    return line + ". Differences smaller than the ± spread over seeds are not measured ones."


def _ci(rec: dict) -> str:
    if not np.isfinite(rec["gain"]):
        return "–"
    return f"{rec['gain']:+.4f} [{_fmt(rec['ci_low'])}, {_fmt(rec['ci_high'])}]"


def bucket_table(gains: dict, n_seeds: int) -> list[str]:
    """The per-bucket comparison of ``bucket_gains`` results, one row per world and bucket."""
    lines = [
        "### Per-bucket grouped AUUC: ALM-MTA vs the best baseline",
        "",
        "| world | bucket | ALM-MTA | best baseline | gain [95% CI] | paired t p | higher in |",
        "|---|---|---|---|---|---|---|",
    ]
    for world, g in gains.items():
        for r in g["buckets"]:
            best = r["best_baseline"]
            base = f"{best} {_fmt(r['auuc'][best])}" if best else "–"
            lines.append(
                f"| {world} | {r['bucket']} | {_fmt(r['auuc'][g['method']])} | {base} | "
                f"{_ci(r)} | {_fmt(r['p_value'], 3)} | {r['higher']}/{r['n']} |"
            )
    lines.append("")
    d = gains.get("default")
    if d:
        lines.append(
            f"*Reading:* in the default world ALM-MTA's mean AUUC is above the best baseline's in "
            f"{d['higher_in']} of {d['compared']} buckets, with a 95% interval above 0 in "
            f"{d['ci_above_zero_in']}; largest gain {_fmt(d['largest_gain'])} (the paper: higher "
            "in every bucket, largest gain 0.070). Means over "
            f"{n_seeds} seeds; the best baseline (of {', '.join(d['baselines'])}) is picked per "
            "bucket on the same seeds, which favors it. Every method's per-bucket AUUC is in the "
            "JSON under `bucket_gains`."
        )
        lines.append("")
    return lines


def _sizes(payload: dict) -> dict:
    """The sizes in ``Sizes`` field order (a JSON round trip sorts the keys)."""
    fields = [f.name for f in dataclasses.fields(Sizes)]
    return dict(sorted(payload["sizes"].items(), key=lambda kv: fields.index(kv[0])))


def markdown(payload: dict, figures: tuple[str, ...] = ()) -> str:
    n = payload["seeds"]
    lines = [
        "## ALM-MTA on the CDP simulator (`python -m benchmarks.almmta_simulator`)",
        "",
        f"Mode: {payload['mode']} ({payload['wall_seconds'] / 60:.1f} min wall on the shared "
        f"2-core machine{_invocations(payload)}); world: {_sizes(payload)}; {journeys_phrase(payload)}. Mean ± std over {n} seeds (seed s: its "
        "own simulated world and training key). Grouped AUUC is the oracle-normalized score of "
        "docs/almmta.md, *Grouped AUUC protocol* (random 0.5, oracle 1; not causalml's); *RCT* recomputes it on the "
        "randomized arm (same observational buckets, difference in means; *exact*: outcome "
        "`p_x`, free of outcome noise). Truth columns compare deletion uplifts with the "
        "simulator's exact `delta_x` (per-journey Spearman; pooled Spearman over every touch and "
        "per-touch RMSE, which see levels: docs/almmta.md, *Exact truth*) and cluster-level "
        "effects with the exact cluster removal.",
        "",
    ]
    for world, res in payload["worlds"].items():
        lines += [f"### World `{world}`", "", *_table(res, MAIN_COLUMNS), "", _reading(res), ""]
        lines += [
            "<details><summary>Every column (gAUC, randomized-arm AUUC, top-1, cluster-effect "
            "RMSE)</summary>",
            "",
            *_table(res, DETAIL_COLUMNS),
            "",
            "</details>",
            "",
        ]
        for fig in ("curves", "seeds") if world == "default" else ():
            if fig in figures:
                lines += [FIGURES[fig], ""]
    if payload.get("bucket_gains"):
        lines += bucket_table(payload["bucket_gains"], n)
    v = payload.get("protocol_validation", {}).get("default")
    if v:
        lines += [
            "### Protocol check against the randomized arm (default world, cell uplifts U_bc)",
            "",
            "| comparison (reference ← estimate) | cells | Pearson r | RMSE | mean error |",
            "|---|---|---|---|---|",
        ]
        for pair, rec in v.items():
            lines.append(
                f"| {pair} | {rec['n_cells']:.0f} | {_pm(rec, 'correlation', 3)} | "
                f"{_pm(rec, 'rmse')} | {_pm(rec, 'mean_error')} |"
            )
        lines.append("")
        if "obs_ipw_vs_rct_exact" in v and "rct_vs_rct_exact" in v:
            lines += [
                "*Reading:* the observational IPW cells follow the randomized arm's exact cells "
                f"with r {v['obs_ipw_vs_rct_exact']['correlation']:.3f} (RMSE "
                f"{v['obs_ipw_vs_rct_exact']['rmse']:.4f}), against the randomized arm's own "
                f"noise floor of RMSE {v['rct_vs_rct_exact']['rmse']:.4f}.",
                "",
            ]
    if "summary" in payload:
        lines += ["### Measured answers", ""] + [f"- {s}" for s in payload["summary"]] + [""]
    lines += [
        "Published (Kuaishou, paper Table 2; not comparable with simulator numbers): avg grouped "
        "AUUC ALM-MTA 0.8686, CausalMTA 0.8493, DML 0.8421, LR 0.4725; AUC 0.9070 / 0.8167 / "
        "0.6498 / 0.5102.",
        "",
    ]
    return "\n".join(lines)


def render(payload: dict, results_md: pathlib.Path = RESULTS_MD) -> str:
    """The section of a payload, with the figures it links written beside ``results_md``."""
    figures_dir = _common.figures_dir(results_md)
    figures = []
    if payload.get("uplift_curves"):
        plot_uplift_curves(payload["uplift_curves"], figures_dir / "almmta_uplift_curves.png")
        figures.append("curves")
    if payload["seeds"] > 1:
        plot_seed_spread(payload["worlds"]["default"], figures_dir / "almmta_simulator_seeds.png")
        figures.append("seeds")
    return markdown(payload, tuple(figures))


def write_results_section(section: str, path: pathlib.Path = RESULTS_MD, tag: str = "") -> None:
    """Replaces only the span between this benchmark's markers in RESULTS.md."""
    _common.write_results_span("almmta" if not tag else f"almmta-{tag}", section, path)


def curve_points(curves: dict, methods) -> dict:
    """Per-bucket cluster gain curves of ``GroupedAUUC`` results, JSON-ready.

    ``{method: [{"auuc", "x", "gain", "oracle"} or None per bucket]}``: tie-averaged
    cumulative gain over the fraction of clusters ranked, and the oracle's curve.
    """
    out = {}
    for name in methods:
        g, buckets = curves[name], []
        for b in range(len(g.per_bucket)):
            c = np.flatnonzero(g.kept[b])
            if c.size < 2:
                buckets.append(None)
                continue
            gain = g.cell_uplift[b, c] * g.n_exposed[b, c]
            buckets.append(
                {
                    "auuc": float(g.per_bucket[b]),
                    "x": (np.arange(c.size + 1) / c.size).tolist(),
                    "gain": np.asarray(metrics.gain_curve(g.cell_score[b, c], gain)).tolist(),
                    "oracle": np.asarray(metrics.gain_curve(gain, gain)).tolist(),
                }
            )
        out[name] = buckets
    return out


# Drawn in the curve figure, with their colours: the exact truth, ALM-MTA, the two backdoor
# baselines and the non-causal one (the table keeps every method).
CURVE_METHODS = {
    TRUTH: "tab:green",
    "alm_mta": "tab:red",
    "causalmta": "tab:blue",
    "dml": "tab:purple",
    "lr": "tab:gray",
}


def plot_uplift_curves(points: dict, path: pathlib.Path, dpi: int = 72) -> pathlib.Path:
    """The gain curves of ``curve_points``, one panel per propensity bucket.

    Only ``CURVE_METHODS`` are drawn (when present), so each panel stays legible.
    """
    plt = _common.pyplot()
    points = {m: points[m] for m in CURVE_METHODS if m in points} or points
    nb = max(len(b) for b in points.values())
    fig, axes = plt.subplots(1, nb, figsize=(3.6 * nb, 3.0), squeeze=False)
    for b in range(nb):
        ax, first = axes[0, b], True
        for name, buckets in points.items():
            p = buckets[b] if b < len(buckets) else None
            if p is None:
                continue
            ax.plot(
                p["x"],
                p["gain"],
                lw=1.6 if name == "alm_mta" else 1.0,
                color=CURVE_METHODS.get(name),
                label=f"{name} ({_fmt(p['auuc'], 2)})",
            )
            if first:
                ax.plot(p["x"], p["oracle"], "k--", lw=0.8, label="oracle")
                ax.plot([0, 1], [0, p["gain"][-1]], "k:", lw=0.8, label="random")
                first = False
        ax.set_title(f"propensity bucket {b}", fontsize=8)
        ax.set_xlabel("fraction of clusters", fontsize=7)
        ax.tick_params(labelsize=7)
        if not first:
            ax.legend(fontsize=6, loc="lower left")
        else:
            ax.text(0.5, 0.5, "too few clusters", ha="center", fontsize=7)
    axes[0, 0].set_ylabel("cumulative gain", fontsize=7)
    fig.tight_layout()
    return _common.save_figure(fig, path, dpi=dpi)


def plot_seed_spread(res: dict, path: pathlib.Path) -> pathlib.Path:
    """Per-seed avg grouped AUUC and truth Spearman of each method (dots) and their mean."""
    plt = _common.pyplot()
    order = [TRUTH, *ALL_METHODS]
    names = sorted(res, key=lambda m: order.index(m) if m in order else len(order))
    fig, axes = plt.subplots(1, 2, figsize=(8, 0.8 + 0.26 * len(names)), sharey=True)
    y = np.arange(len(names))[::-1]
    for ax, (label, key) in zip(
        axes, (("avg grouped AUUC", "avg_grouped_auuc"), ("truth Spearman", "truth_spearman"))
    ):
        for yi, name in zip(y, names):
            vals = np.asarray(res[name]["per_seed"].get(key, []), np.float64)
            ax.plot(vals, np.full(vals.shape, yi), "o", ms=3, alpha=0.6, color="tab:blue")
            if np.isfinite(vals).any():
                ax.plot([np.nanmean(vals)] * 2, [yi - 0.3, yi + 0.3], color="k", lw=1.5)
        ax.set_title(label, fontsize=8)
        ax.tick_params(labelsize=7)
        ax.grid(axis="x", lw=0.3)
    axes[0].set_yticks(y, names, fontsize=7)
    fig.tight_layout()
    return _common.save_figure(fig, path, dpi=80)


def _summary(worlds: dict, per_seed: dict, payload: dict) -> list[str]:
    out = []
    d = worlds["default"]
    seeds = per_seed["default"]
    alm = d.get("alm_mta")
    n = len(seeds)
    if alm is not None:
        for b in BACKDOOR:
            if b not in d:
                continue
            parts = []
            for m, digits in (("avg_grouped_auuc", 4), ("truth_spearman", 3)):
                t = _paired(seeds, "alm_mta", b, m)
                parts.append(
                    f"{m} {t['mean_diff']:+.{digits}f} ± {t['std_diff']:.{digits}f} "
                    f"(ALM-MTA higher in {t['a_greater']}/{t['n']} seeds, paired t p = "
                    f"{_fmt(t['p_value'], 3)})"
                )
            out.append(f"default world, ALM-MTA − {b} over {n} seeds: " + "; ".join(parts) + ".")
        present = [b for b in BACKDOOR if b in d]
        if present:
            best = max(present, key=lambda b: d[b]["avg_grouped_auuc"])
            payload["paired_vs_best_backdoor"] = {
                m: _paired(seeds, "alm_mta", best, m)
                for m in ("avg_grouped_auuc", "truth_spearman", "cluster_effect_rmse", "auc")
            }
            out.append(
                f"best backdoor baseline by avg grouped AUUC: {best} "
                f"(paired tests in the JSON under `paired_vs_best_backdoor`)."
            )
    bg = payload.get("bucket_gains", {}).get("default")
    if bg:
        per = ", ".join(
            f"bucket {r['bucket']} {_ci(r)} vs {r['best_baseline']} (p {_fmt(r['p_value'], 3)})"
            for r in bg["buckets"]
        )
        out.append(
            f"per-bucket grouped AUUC, ALM-MTA − best baseline: {per}; higher in "
            f"{bg['higher_in']}/{bg['compared']} buckets (paper: every bucket, largest gain 0.070)."
        )
    if "proxy_direct" in d and alm is not None:
        p = d["proxy_direct"]
        out.append(
            f"leaky proxy-direct: AUC {_pm(p, 'auc')} vs ALM-MTA {_pm(alm, 'auc')}; truth "
            f"Spearman {_pm(p, 'truth_spearman', 3)} vs {_pm(alm, 'truth_spearman', 3)}; avg "
            f"grouped AUUC {_pm(p, 'avg_grouped_auuc')} vs {_pm(alm, 'avg_grouped_auuc')}."
        )
    ra = payload.get("ranking_agreement", {}).get("default")
    if ra:
        out.append(
            "method ranking by grouped AUUC, observational vs randomized arm: Spearman "
            f"{_fmt(ra['obs_vs_rct_spearman'], 3)} (measured y), "
            f"{_fmt(ra['obs_vs_rct_exact_spearman'], 3)} (exact p_x), mean over seeds."
        )
    v = payload.get("protocol_validation", {}).get("default")
    if v:
        a, b = v["obs_ipw_vs_rct_exact"], v["naive_vs_rct_exact"]
        out.append(
            f"observational IPW cells vs randomized-arm exact cells: r {a['correlation']:.3f}, "
            f"RMSE {a['rmse']:.4f} (naive no-x propensity: r {b['correlation']:.3f}, RMSE "
            f"{b['rmse']:.4f}); randomized arm's own noise floor (y vs p_x): RMSE "
            f"{v['rct_vs_rct_exact']['rmse']:.4f}."
        )
    for w, res in worlds.items():
        if w == "default" or "alm_mta" not in res or alm is None:
            continue
        out.append(
            f"switch `{w}`: ALM-MTA truth Spearman {_pm(res['alm_mta'], 'truth_spearman', 3)} "
            f"(default {_pm(alm, 'truth_spearman', 3)}), avg grouped AUUC "
            f"{_pm(res['alm_mta'], 'avg_grouped_auuc')}"
            + "".join(
                f"; {b} {_pm(res[b], 'truth_spearman', 3)} / {_pm(res[b], 'avg_grouped_auuc')}"
                for b in BACKDOOR
                if b in res
            )
            + "."
        )
    return out


def merge_payloads(payloads: list[dict]) -> dict:
    """The first payload with the methods that only later ones ran added to its worlds."""
    first = payloads[0]
    for other in payloads[1:]:
        if (other["mode"], other["seeds"], other["sizes"]) != (
            first["mode"],
            first["seeds"],
            first["sizes"],
        ):
            raise ValueError("payloads to merge must share mode, seeds and sizes")
        for world, res in other["worlds"].items():
            target = first["worlds"].setdefault(world, {})
            for name, rec in res.items():
                target.setdefault(name, rec)
        first["wall_seconds"] += other["wall_seconds"]
        first["invocations"] = first.get("invocations", 1) + 1
    first["results"] = first["worlds"]["default"]
    first["bucket_gains"] = _all_bucket_gains(first["worlds"])
    return first


def _all_bucket_gains(worlds: dict) -> dict:
    return {w: g for w, res in worlds.items() if (g := bucket_gains(res)) is not None}


# Every benchmark world draws journey lengths uniformly from 2..L, so the journey a single
# deletion leaves (1..L-1 touches) is one training holds (docs/almmta.md, *Deleted journeys*).
JOURNEY_LENGTHS = dict(variable_length=True, min_len=2)


def journey_lengths(cfg: SimConfig) -> str:
    """The journey lengths of a world, as its benchmark payloads record them."""
    return f"{cfg.min_len}..{cfg.max_len}" if cfg.variable_length else f"{cfg.max_len}"


def journeys_phrase(payload: dict) -> str:
    """What a results header says about journey lengths and deletions (old payloads included)."""
    lengths = payload.get("journey_lengths")
    if lengths is None:
        return (
            "every journey has L touches and a deletion kept the other touches' observed time "
            "features (a run from before docs/almmta.md, *Deleted journeys*)"
        )
    return (
        f"journey lengths uniform on {lengths}; a deletion is the journey logged without the "
        "touch (docs/almmta.md, *Deleted journeys*)"
    )


def base_config(sizes) -> SimConfig:
    """The default world at a benchmark size (half as many RCT users as observational ones).

    Journey lengths are uniform on 2..L (``JOURNEY_LENGTHS``).
    """
    return SimConfig.preset(
        "default",
        n_users=sizes.n_users,
        n_items=sizes.n_items,
        n_clusters=sizes.n_clusters,
        max_len=sizes.max_len,
        n_rct=sizes.n_users // 2,
        **JOURNEY_LENGTHS,
    )


def main(argv: list[str] | None = None) -> dict:
    p = _common.parser(__doc__.splitlines()[0])
    p.add_argument("--medium", action="store_true", help="between quick and full sizes")
    p.add_argument("--no-results", action="store_true", help="do not rewrite RESULTS.md")
    p.add_argument("--results", default=None, help="the RESULTS.md to rewrite (default: ours)")
    p.add_argument("--no-switches", action="store_true", help="default world only")
    p.add_argument("--methods", default=None, help="comma-separated (default: by mode)")
    p.add_argument(
        "--seeds", type=int, default=None, help="seeds (worlds and training keys; 3, study 5)"
    )
    p.add_argument("--seed", type=int, default=0, help="first seed")
    p.add_argument(
        "--render",
        nargs="+",
        default=None,
        metavar="JSON",
        help="only rewrite RESULTS.md from saved payloads of runs with the same mode and seeds "
        "(rows of later files fill in methods the first lacks)",
    )
    p.add_argument(
        "--study",
        choices=("leak",),
        default=None,
        help="leak: the {no leak, leak} x {rho 1, 0} ablation study (benchmarks/almmta_leakstudy.py)",
    )
    args = p.parse_args(argv)
    if args.study:
        return _leak_study(args)
    args.seeds = 3 if args.seeds is None else args.seeds
    if args.render:
        payload = merge_payloads([json.loads(pathlib.Path(f).read_text()) for f in args.render])
        if not args.no_results:
            results_md = pathlib.Path(args.results or RESULTS_MD)
            write_results_section(render(payload, results_md), results_md)
        _common.write_json(args.json, payload)
        return payload
    mode = "quick" if args.quick else "medium" if args.medium else "full"
    sizes = MODES[mode]
    if args.methods is None:
        methods = list(QUICK_METHODS if mode == "quick" else ALL_METHODS)
    else:
        methods = [m for m in args.methods.split(",") if m]
    unknown = sorted(set(methods) - set(ALL_METHODS))
    if unknown:
        p.error(f"unknown method(s) {unknown}; choose from {ALL_METHODS}")
    seeds = list(range(args.seed, args.seed + args.seeds))
    start = time.perf_counter()
    base = base_config(sizes)
    configs = {"default": (base, methods)}
    if not args.no_switches:
        switch_methods = [m for m in methods if m in SWITCH_METHODS]
        for label, override in (
            ("gamma_TY=1", {"gamma_TY": 1.0}),
            ("gamma_WM=1", {"gamma_WM": 1.0}),
        ):
            configs[label] = (dataclasses.replace(base, **override), switch_methods)
    runner = _Methods(sizes)
    per_seed, validation, curves = {}, {}, None
    for label, (cfg, ms) in configs.items():
        per_seed[label], validation[label] = [], []
        for seed in _common.rows(seeds, f"[{label}] seeds"):
            res, c, val = run_world(cfg, sizes, ms, runner, seed, label)
            per_seed[label].append(res)
            validation[label].append(val)
            if args.json:  # long runs keep what they have measured so far
                _common.write_json(f"{args.json}.partial", {"per_seed": per_seed})
            if curves is None:
                curves = c
    worlds = {label: aggregate(rs) for label, rs in per_seed.items()}
    scored = [TRUTH] + methods
    payload = {
        "mode": mode,
        "sizes": dataclasses.asdict(sizes),
        "journey_lengths": journey_lengths(base_config(sizes)),
        "seeds": len(seeds),
        "worlds": worlds,
        "results": worlds["default"],
        "protocol_validation": {k: _validation_mean(v) for k, v in validation.items()},
        "protocol_validation_per_seed": validation,
        "ranking_agreement": {
            label: _ranking_agreement(rs, [m for m in scored if m in rs[0]])
            for label, rs in per_seed.items()
        },
    }
    payload["bucket_gains"] = _all_bucket_gains(worlds)
    payload["wall_seconds"] = time.perf_counter() - start
    payload["summary"] = _summary(worlds, per_seed, payload)
    for line in payload["summary"]:
        print("[summary]", line)
    print(f"[time] {payload['wall_seconds']:.0f}s wall", flush=True)
    payload["uplift_curves"] = curve_points(curves, [TRUTH] + methods)  # seed 0, default world
    plot_uplift_curves(
        payload["uplift_curves"],
        pathlib.Path(__file__).parent / "out" / "almmta_uplift_curves.png",
        dpi=110,
    )
    if not (args.no_results or args.quick):  # quick runs never replace the reported table
        results_md = pathlib.Path(args.results or RESULTS_MD)
        write_results_section(render(payload, results_md), results_md)
    _common.write_json(args.json, payload)
    return payload


def _leak_study(args) -> dict:
    from benchmarks import almmta_leakstudy

    seeds = range(args.seed, args.seed + (5 if args.seeds is None else args.seeds))
    payload = almmta_leakstudy.run_study(seeds=seeds, json_path=args.json)
    print(f"[time] {payload['wall_seconds']:.0f}s wall", flush=True)
    if not args.no_results:
        results_md = pathlib.Path(args.results or RESULTS_MD)
        write_results_section(almmta_leakstudy.markdown(payload), results_md, tag="leakstudy")
    _common.write_json(args.json, payload)
    return payload


if __name__ == "__main__":
    main()
