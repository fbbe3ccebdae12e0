"""ALM-MTA vs baselines on the CDP simulator: prediction, grouped AUUC and exact-truth recovery.

``python -m benchmarks.almmta_simulator [--quick] [--json PATH] [--no-results]``

For every method (notes §8) on the simulator (notes §7b): AUC, log-loss, gAUC
(k-means segments of x), the bucketed grouped AUUC of notes §5.3 per
propensity bucket and averaged (oracle-normalized: random 0.5, oracle 1), and
against the exact x-conditional truth ``delta_x``: the mean per-journey
Spearman of deletion uplifts, their RMSE, top-1 agreement, and the RMSE /
Spearman of cluster-level effects against the exact cluster-removal truth.
The protocol is validated by scoring the same cells with the exact truths.
The default world is then repeated with each front-door switch turned on
(``gamma_TY``: direct T→Y; ``gamma_WM``: W→M) for a subset of methods.

Attribution of every method is single-touch deletion on the probability
scale; ALM-MTA uses the ``ipw_simple`` front-door reading (the explicit
K-of-R sum is not used here, so "no contrastive" differs from the full model
only by β = 0 in training). Numbers are one seed; they move by a few points
between seeds at quick size.
"""

from __future__ import annotations

import dataclasses
import pathlib
import time

import jax
import jax.numpy as jnp
import numpy as np
from scipy.stats import spearmanr

from almmta_jax import (
    ModelConfig,
    SimConfig,
    TrainConfig,
    attribute,
    cluster_log_frequency,
    fit_propensity,
    ipw_weights,
    make_trainer,
    metrics,
    sim_to_batch,
    simulate_cdp,
)
from almmta_jax._src import baselines as bl
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
SWITCH_METHODS = ("alm_mta", "causalmta", "dml")
BACKDOOR = ("causalmta", "dml")
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


QUICK = Sizes(8_000, 400, 10, 8, 6, 6, 256, 32, 1, 3, 30, 20)
FULL = Sizes(20_000, 2_000, 50, 20, 10, 10, 512, 64, 2, 5, 30, 50)


def _rows(batch, idx):
    return jax.tree.map(lambda a: np.asarray(a)[idx], batch)


def _spearman_per_journey(pred, truth, mask):
    vals = []
    for p, t, m in zip(pred, truth, mask, strict=True):
        if m.sum() < 3 or np.ptp(t[m]) == 0 or np.ptp(p[m]) == 0:
            continue
        vals.append(spearmanr(p[m], t[m])[0])
    return float(np.mean(vals)) if vals else float("nan")


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
    truth_rm = np.full(exposure.shape, np.nan)
    for c in range(k):
        at = mask & (clusters == c)
        model_sum[:, c] = np.where(at, uplift, 0).sum(1)
        first = np.argmax(at, axis=1)
        truth_rm[:, c] = np.where(
            at.any(1), sim.removal_x[rows][np.arange(len(rows)), first], np.nan
        )
    n_exp = exposure.sum(0)
    ok = n_exp > 0
    model_c = np.where(ok, (model_sum * exposure).sum(0) / np.maximum(n_exp, 1), np.nan)
    truth_c = np.where(
        ok, np.nansum(np.where(exposure, truth_rm, 0), 0) / np.maximum(n_exp, 1), np.nan
    )
    return {
        "truth_spearman": _spearman_per_journey(uplift, delta, mask),
        "truth_rmse": float(np.sqrt(np.mean((uplift - delta)[mask] ** 2))),
        "truth_top1": float(np.mean(top1)),
        "cluster_effect_rmse": float(np.sqrt(np.nanmean((model_c - truth_c) ** 2))),
        "cluster_effect_spearman": float(spearmanr(model_c[ok], truth_c[ok])[0]),
    }


class _World:
    """One simulated world with its evaluation protocol pieces."""

    def __init__(self, sim_cfg: SimConfig, sizes: Sizes, seed: int):
        self.sim = simulate_cdp(sim_cfg, seed=seed)
        self.k = sim_cfg.n_clusters
        self.sizes = sizes
        full = sim_to_batch(self.sim, "all")
        split = self.sim.split
        self.train_rows = np.flatnonzero(split == 0)
        self.eval_rows = np.flatnonzero((split == 1) | (split == 2))
        train = _rows(full, self.train_rows)
        self.eval = _rows(full, self.eval_rows)
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
        ones = np.zeros_like(train.touch_ids[..., 0], np.float64)
        e_train, _ = metrics.cluster_exposure_scores(
            ones, train.touch_ids[..., CLUSTER_FIELD], train.touch_mask, self.k
        )
        self.eval_clusters = np.asarray(self.eval.touch_ids[..., CLUSTER_FIELD])
        self.eval_mask = np.asarray(self.eval.touch_mask)
        self.exposure_prop = metrics.exposure_propensity(train.x, e_train, self.eval.x)
        _, seg, _ = metrics.kmeans(jax.random.key(seed + 1), self.eval.x, sizes.segments)
        self.segments = np.asarray(seg)

    def grouped(self, uplift):
        exposure, score = metrics.cluster_exposure_scores(
            uplift, self.eval_clusters, self.eval_mask, self.k
        )
        return metrics.grouped_auuc(
            score,
            exposure,
            self.eval.y,
            self.exposure_prop,
            num_buckets=self.sizes.num_buckets,
            n_min=self.sizes.n_min,
        )

    def score(self, uplift, prob) -> dict:
        y = self.eval.y
        g = self.grouped(np.asarray(uplift, np.float64))
        out = {
            "auc": float(metrics.auc(y, prob)),
            "log_loss": float(metrics.log_loss(y, np.clip(prob, 1e-7, 1 - 1e-7))),
            "gauc": float(metrics.gauc(y, prob, self.segments)),
            "avg_grouped_auuc": g.average,
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
                np.asarray(uplift, np.float64),
                self.sim,
                self.eval_rows,
                self.eval_mask,
                self.eval_clusters,
                self.k,
            )
        )
        return out, g


def _alm_config(world: _World, sizes: Sizes) -> TrainConfig:
    mc = ModelConfig(
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
        epochs=sizes.alm_epochs,
        queue_size=1024,
        lr_warmup_steps=50,
    )


def _run_method(name: str, world: _World, sizes: Sizes, seed: int):
    key = jax.random.key(seed)
    tr, ev = world.train, world.eval
    if name.startswith("alm_mta"):
        variant = {
            "alm_mta": "full",
            "alm_mta_no_contrastive": "no_contrastive",
            "alm_mta_lambda0": "lambda0",
        }[name]
        cfg = bl.alm_mta_variant(_alm_config(world, sizes), variant)
        trainer = make_trainer(cfg, tr, ev)
        state = trainer.init(key)
        state, (_, evals) = trainer.run_epochs(state, jax.tree.map(jnp.asarray, tr), cfg.epochs)
        att = attribute(trainer.model(state), jax.tree.map(jnp.asarray, ev))
        extra = {"adversary_auc": float(evals.adversary_auc[-1])}
        return np.asarray(att.uplift), np.asarray(att.prob), extra
    bcfg = bl.BaselineConfig(
        world.sim_vocab,
        d_x=tr.x.shape[1],
        max_len=sizes.max_len,
        channel_field=CLUSTER_FIELD,
        hidden=sizes.d_model,
        batch_size=sizes.batch_size,
        epochs=sizes.baseline_epochs,
        lr_warmup_steps=50,
    )
    if name == "dml":
        model = bl.fit_dml(tr, CLUSTER_FIELD, world.k)
        u, p = bl.attribute_baseline(model, ev)
        return u, p, {}
    unweighted = tr._replace(ipw=np.ones_like(tr.ipw))
    if name == "lr":
        bcfg = dataclasses.replace(bcfg, learning_rate=1e-2, weight_decay=1e-4)
        fn, data = (lambda r: bl.LogisticMTA(bcfg, rngs=r)), unweighted
    elif name == "dnamta":
        fn, data = (lambda r: bl.DNAMTA(bcfg, rngs=r)), unweighted
    elif name == "proxy_direct":
        fn, data = (lambda r: bl.ProxyDirect(bcfg, rngs=r)), unweighted
    elif name == "causalmta":
        w = bl.journey_balancing_weights(
            tr.x, bl.channel_bags(tr, CLUSTER_FIELD, world.k), key, steps=300
        )
        fn, data = (lambda r: bl.CausalMTAPredictor(bcfg, rngs=r)), tr._replace(ipw=w)
    else:
        raise ValueError(f"unknown method {name!r}")
    run = jax.jit(bl.make_baseline_train(fn, bcfg, data))(key)
    u, p = bl.attribute_baseline(run.model(), ev)
    return u, p, {"final_train_loss": float(run.losses[-1])}


def run_world(sim_cfg: SimConfig, sizes: Sizes, methods, seed: int = 0, label: str = "default"):
    start = time.perf_counter()
    world = _World(sim_cfg, sizes, seed)
    world.sim_vocab = sim_cfg.vocab_sizes
    print(
        f"[{label}] simulated {sim_cfg.n_users} users, upload rate "
        f"{world.sim.y[world.sim.arm == 0].mean():.3f}, eval users {len(world.eval_rows)} "
        f"({time.perf_counter() - start:.1f}s)",
        flush=True,
    )
    results, per_bucket_curves = {}, {}
    # Protocol validation: the same cells scored by the exact deletion truth.
    truth_res, g = world.score(world.sim.delta_x[world.eval_rows], world.sim.p_x[world.eval_rows])
    results["truth_delta_x"] = truth_res
    per_bucket_curves["truth_delta_x"] = g
    for name in methods:
        t0 = time.perf_counter()
        u, p, extra = _run_method(name, world, sizes, seed)
        res, g = world.score(u, p)
        res.update(extra)
        res["seconds"] = time.perf_counter() - t0
        results[name] = res
        per_bucket_curves[name] = g
        print(
            f"[{label}] {name:24s} AUC {res['auc']:.4f} gAUC {res['gauc']:.4f} "
            f"avgAUUC {res['avg_grouped_auuc']:.4f} ({res['buckets_scored']} buckets) "
            f"truth rho {res['truth_spearman']:.3f} cluster rmse {res['cluster_effect_rmse']:.4f} "
            f"({res['seconds']:.0f}s)",
            flush=True,
        )
    return results, per_bucket_curves


def _fmt(v, digits=4):
    return "–" if v is None or (isinstance(v, float) and np.isnan(v)) else f"{v:.{digits}f}"


def markdown(payload: dict) -> str:
    lines = [
        "## ALM-MTA on the CDP simulator (`python -m benchmarks.almmta_simulator`)",
        "",
        f"Mode: {payload['mode']}; world: {payload['sizes']}. One seed. Grouped AUUC is the "
        "oracle-normalized score of notes §5.3 (random 0.5, oracle 1; not causalml's). Truth "
        "columns compare deletion uplifts with the simulator's exact `delta_x` (per-journey "
        "Spearman, RMSE) and cluster-level effects with the exact cluster removal.",
        "",
    ]
    for world, res in payload["worlds"].items():
        lines += [
            f"### World `{world}`",
            "",
            "| method | AUC | log-loss | gAUC | avg grouped AUUC | buckets | truth Spearman | "
            "truth RMSE | top-1 | cluster-effect RMSE | cluster-effect Spearman |",
            "|---|---|---|---|---|---|---|---|---|---|---|",
        ]
        for name, r in res.items():
            lines.append(
                f"| {name} | {_fmt(r['auc'])} | {_fmt(r['log_loss'])} | {_fmt(r['gauc'])} | "
                f"{_fmt(r['avg_grouped_auuc'])} | {r['buckets_scored']} | "
                f"{_fmt(r['truth_spearman'], 3)} | {_fmt(r['truth_rmse'])} | "
                f"{_fmt(r['truth_top1'], 3)} | {_fmt(r['cluster_effect_rmse'])} | "
                f"{_fmt(r['cluster_effect_spearman'], 3)} |"
            )
        lines.append("")
    if "summary" in payload:
        lines += ["### Measured answers", ""] + [f"- {s}" for s in payload["summary"]] + [""]
    lines += [
        "Published (Kuaishou, paper Table 2; not comparable with simulator numbers): avg grouped "
        "AUUC ALM-MTA 0.8686, CausalMTA 0.8493, DML 0.8421, LR 0.4725; AUC 0.9070 / 0.8167 / "
        "0.6498 / 0.5102.",
        "",
    ]
    return "\n".join(lines)


def write_results_section(section: str, path: pathlib.Path = RESULTS_MD, tag: str = "") -> None:
    """Replaces only the span between this benchmark's markers in RESULTS.md."""
    begin, end = (
        (BEGIN, END) if not tag else (f"<!-- almmta-{tag}:begin -->", f"<!-- almmta-{tag}:end -->")
    )
    block = f"{begin}\n{section}\n{end}"
    text = path.read_text() if path.exists() else "# Benchmark results\n"
    if begin in text and end in text:
        head, rest = text.split(begin, 1)
        _, tail = rest.split(end, 1)
        text = head + block + tail
    else:
        text = text.rstrip("\n") + "\n\n" + block + "\n"
    path.write_text(text)
    print(f"[md] updated {path} ({begin})")


def plot_uplift_curves(curves: dict, path: pathlib.Path, methods) -> None:
    """Per-bucket cluster gain curves (tie-averaged, normalized by the oracle's end point)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    nb = len(next(iter(curves.values())).per_bucket)
    fig, axes = plt.subplots(1, nb, figsize=(4 * nb, 3.2), squeeze=False)
    for b in range(nb):
        ax = axes[0, b]
        for name in methods:
            g = curves[name]
            c = np.flatnonzero(g.kept[b])
            if c.size < 2:
                continue
            gain = g.cell_uplift[b, c] * g.n_exposed[b, c]
            curve = np.asarray(metrics.gain_curve(g.cell_score[b, c], gain))
            x = np.arange(c.size + 1) / c.size
            ax.plot(x, curve, label=f"{name} ({_fmt(g.per_bucket[b], 2)})")
            if name == methods[0]:
                oracle = np.asarray(metrics.gain_curve(gain, gain))
                ax.plot(x, oracle, "k--", lw=0.8, label="oracle")
                ax.plot([0, 1], [0, curve[-1]], "k:", lw=0.8, label="random")
        ax.set_title(f"propensity bucket {b}")
        ax.set_xlabel("fraction of clusters")
        if b == 0:
            ax.set_ylabel("cumulative gain")
        ax.legend(fontsize=6)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    print(f"[plot] wrote {path}")


def _summary(worlds: dict) -> list[str]:
    out = []
    d = worlds["default"]
    alm = d.get("alm_mta")
    if alm is not None:
        for b in BACKDOOR:
            if b in d:
                out.append(
                    f"default world: ALM-MTA - {b}: avg grouped AUUC "
                    f"{alm['avg_grouped_auuc'] - d[b]['avg_grouped_auuc']:+.4f}, truth Spearman "
                    f"{alm['truth_spearman'] - d[b]['truth_spearman']:+.3f}, cluster-effect RMSE "
                    f"{alm['cluster_effect_rmse'] - d[b]['cluster_effect_rmse']:+.4f} (negative is "
                    "better for RMSE)."
                )
    if "proxy_direct" in d and alm is not None:
        p = d["proxy_direct"]
        out.append(
            f"leaky proxy-direct: AUC {p['auc']:.4f} vs ALM-MTA {alm['auc']:.4f}; truth Spearman "
            f"{p['truth_spearman']:.3f} vs {alm['truth_spearman']:.3f}; avg grouped AUUC "
            f"{p['avg_grouped_auuc']:.4f} vs {alm['avg_grouped_auuc']:.4f}."
        )
    for w, res in worlds.items():
        if w == "default" or "alm_mta" not in res:
            continue
        out.append(
            f"switch `{w}`: ALM-MTA truth Spearman {res['alm_mta']['truth_spearman']:.3f} (default "
            f"{alm['truth_spearman']:.3f}), avg grouped AUUC {res['alm_mta']['avg_grouped_auuc']:.4f}"
            + "".join(
                f"; {b} {res[b]['truth_spearman']:.3f} / {res[b]['avg_grouped_auuc']:.4f}"
                for b in BACKDOOR
                if b in res
            )
            + "."
        )
    return out


def main(argv: list[str] | None = None) -> dict:
    p = _common.parser(__doc__.splitlines()[0])
    p.add_argument("--no-results", action="store_true", help="do not rewrite RESULTS.md")
    p.add_argument("--methods", default=",".join(ALL_METHODS))
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    sizes = QUICK if args.quick else FULL
    methods = [m for m in args.methods.split(",") if m]
    base = SimConfig.preset(
        "default",
        n_users=sizes.n_users,
        n_items=sizes.n_items,
        n_clusters=sizes.n_clusters,
        max_len=sizes.max_len,
        n_rct=sizes.n_users // 4,
    )
    worlds, curves = {}, {}
    worlds["default"], curves["default"] = run_world(base, sizes, methods, args.seed)
    switch_methods = [m for m in methods if m in SWITCH_METHODS]
    for label, override in (("gamma_TY=1", {"gamma_TY": 1.0}), ("gamma_WM=1", {"gamma_WM": 1.0})):
        cfg = dataclasses.replace(base, **override)
        worlds[label], _ = run_world(cfg, sizes, switch_methods, args.seed, label)
    payload = {
        "mode": "quick" if args.quick else "full",
        "sizes": dataclasses.asdict(sizes),
        "worlds": worlds,
        "results": worlds["default"],
    }
    payload["summary"] = _summary(worlds)
    for line in payload["summary"]:
        print("[summary]", line)
    plot_uplift_curves(
        curves["default"],
        pathlib.Path(__file__).parent / "out" / "almmta_uplift_curves.png",
        ["truth_delta_x"] + methods,
    )
    if not args.no_results:
        write_results_section(markdown(payload))
    _common.write_json(args.json, payload)
    return payload


if __name__ == "__main__":
    main()
