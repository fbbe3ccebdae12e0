"""How well do ALM-MTA's deletion uplifts track the simulator's exact truth, and when does the adversary help?

Trains ALM-MTA and ablations on the CDP simulator and compares each model's
per-touch deletion uplift Δ̂ on the test split with the exact x-conditional
interventional truth ``delta_x`` (``metrics.effect_agreement``): Spearman
rank correlation per journey (averaged over journeys whose truth and estimate
both vary), Spearman over every touch pooled, RMSE and top-1 agreement. Three front-door readings are scored for every model: ``ipw_simple``,
``explicit`` with the top-K = 8 high-match set of a reference pool, and
``explicit`` over the whole pool (K = R, no contrastive restriction).
Prediction metrics (outcome, adversary and proxy AUC) come alongside.

Every setting is one lane of ONE compiled training program: the seeds, λ_max,
β and the proxy-on-negatives switch are traced (``make_step`` with a
``schedule`` over a traced λ_max and ``LossWeights``), so a whole sweep compiles
once per balancer. Figures are mean ± std over the training seeds on one
simulated world (``--seed``).

Settings (``--study`` adds the sweep rows):

* ``default``: the simulator's proxy y' exists only on uploaders, as docs/almmta.md
  prescribes (``proxy_on_negatives=False``);
* ``leak``: ``proxy_on_negatives=True`` also trains y' = 0 on every non-uploader,
  which teaches the mediator the label itself (the leak the adversary is meant to
  remove; docs/almmta.md, *Losses and objective*);
* ``full``: λ_max = 0.3, β = 0.1 (the defaults of docs/almmta.md); ``ablation``: the same
  network with λ_max = 0 and β = 0;
* sweep: λ_max ∈ {0, 0.05, 0.1, 0.3, 1}, β on/off separately, both proxy
  settings, and ``balancer="drgrad"``.

Findings (``--quick --study --seeds 3``, world seed 0, d = 32, one layer; mean ±
std over 3 training seeds; RESULTS.md between the almmta-truth markers holds the
last run's table):

* The full method is NOT better than the ablation, in either setting. Default:
  ipw_simple 0.652 ± 0.074 vs 0.687 ± 0.032, explicit 0.511 ± 0.103 vs
  0.588 ± 0.055. Leak: ipw_simple 0.655 ± 0.063 vs 0.688 ± 0.038, explicit
  0.531 ± 0.070 vs 0.640 ± 0.049. So the answer is not "the adversary only helps
  when there is a leak": it does not help here even with the leak.
* Why. The mediator is a deterministic function M̂ = φ(x, t), so no label
  information can reach it other than through (x, t). In this world Y depends on
  the touches only through the true mediator, so the (x, t) → Y signal the
  adversary strips from M̂ is the causal signal itself; the leak of
  ``proxy_on_negatives`` only teaches M̂ more of that same association. The
  adversary does what it is told (held-out adversary AUC 0.92 → 0.76 → 0.55 for
  λ_max = 0 → 0.1 → 0.3), and the outcome head keeps its AUC (0.95 → 0.94) by
  reading the treatment summary z(t) and s(x) instead of M̂.
* Why ``explicit`` suffers most: it holds z at the reference sequences', so a
  deletion acts only through M̂: its Spearman falls with λ_max (0.606, 0.551,
  0.511, 0.199 ± 0.349 at λ_max = 0, 0.1, 0.3, 1, β = 0.1), while
  ``ipw_simple``, where a deletion also moves z(t), stays at 0.65-0.69. At
  λ_max = 1 the adversary's held-out AUC drops to 0.39, below chance: the
  reversal overpowers the one-step adversary and M̂ keeps the label with its
  sign flipped.
* The contrastive term is not what hurts: λ_max = 0, β = 0.1 gives 0.689 /
  0.606 (ablation 0.687 / 0.588); the adversary alone (λ_max = 0.3, β = 0) gives
  0.610 / 0.392. The top-8 high-match set equals the whole pool to 0.001, so the
  K restriction is not the cause either; the GRL sign, detach and two-player
  equivalence are unit-tested (tests/test_almmta_train.py).
* ``balancer="drgrad"`` (same script, same world and seeds, an earlier run with
  ``--drgrad``): full 0.634 ± 0.071 / 0.480 ± 0.074, ablation 0.635 ± 0.066 /
  0.514 ± 0.066, leak full 0.660 ± 0.066 / 0.564 ± 0.067 (ipw_simple /
  explicit top-8): no gain over fixed weights.

``--stress-steps N`` instead trains one run for at least N steps on the
simulator and checks that no parameter or metric becomes NaN and that the
epoch function compiled once.

Usage: ``python -m benchmarks.almmta_truth [--quick] [--study [--drgrad]] [--seeds N]
[--json PATH] [--no-results] [--from-json PATH] [--stress-steps N]``
"""

from __future__ import annotations

import dataclasses
import json
import pathlib
import time
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

import almmta_jax as am
from benchmarks import _common
from benchmarks import almmta_simulator as sim_bench
from drgrad_jax import loop

RESULTS_MD = pathlib.Path(__file__).parent / "RESULTS.md"
BEGIN, END = "<!-- almmta-truth:begin -->", "<!-- almmta-truth:end -->"
CLUSTER_FIELD = 1  # column of touch_ids holding the item cluster (SIM_TOUCH_FIELDS)
TOP_K = 8


class Setting(NamedTuple):
    """One lane of the study: a training configuration on one world."""

    name: str
    lambda_max: float
    beta: float
    proxy_on_negatives: bool
    balancer: str = "none"
    # Whether to also score explicit over the whole pool (K = R, the costliest reading).
    score_all: bool = True


def base_settings(quick: bool = False) -> list[Setting]:
    """The side-by-side rows: full method and ablation, without and with the leak."""
    return [
        Setting("default / full", 0.3, 0.1, False),
        Setting("default / ablation", 0.0, 0.0, False),
        Setting("leak / full", 0.3, 0.1, True, score_all=not quick),
        Setting("leak / ablation", 0.0, 0.0, True, score_all=not quick),
    ]


def study_settings(drgrad: bool = False) -> list[Setting]:
    """The sweep rows added by ``--study`` (``drgrad``: the balancer rows too)."""
    rows = []
    for lam in (0.1, 1.0):
        rows.append(Setting(f"default / λ={lam:g}, β=0.1", lam, 0.1, False, score_all=False))
    rows.append(Setting("default / λ=0, β=0.1", 0.0, 0.1, False, score_all=False))
    rows.append(Setting("default / λ=0.3, β=0", 0.3, 0.0, False, score_all=False))
    if drgrad:
        rows.append(Setting("default / full + DRGrad", 0.3, 0.1, False, "drgrad"))
        rows.append(Setting("default / ablation + DRGrad", 0.0, 0.0, False, "drgrad"))
        rows.append(Setting("leak / full + DRGrad", 0.3, 0.1, True, "drgrad"))
    return rows


# --- scoring ------------------------------------------------------------------------


def _score(est, truth, mask):
    agree = am.metrics.effect_agreement(est, truth, mask)
    valid = mask.sum(1) > 0
    top_est = np.argmax(np.where(mask, est, -np.inf), axis=1)
    top_true = np.argmax(np.where(mask, truth, -np.inf), axis=1)
    return {
        "spearman": agree.journey_spearman,
        "journeys_scored": agree.journeys_scored,
        "pooled_spearman": agree.pooled_spearman,
        "rmse": agree.rmse,
        "mean_abs_uplift": float(np.mean(np.abs(est[mask]))),
        "top1_agreement": float(np.mean((top_est == top_true)[valid])),
    }


# --- data -----------------------------------------------------------------------------


def prepare(quick: bool, seed: int = 0, **sim_overrides):
    """Simulated world, IPW from a fitted propensity, and the train/val/test batches."""
    n_users = 6_000 if quick else 20_000
    world = {**sim_bench.JOURNEY_LENGTHS, **sim_overrides}
    sim_cfg = am.simulate.SimConfig.preset("default", n_users=n_users, n_rct=200, **world)
    sim = am.simulate.simulate_cdp(sim_cfg, seed=seed)
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
    train = am.simulate.sim_to_batch(sim, "train", ipw=np.asarray(ipw))
    val = am.simulate.sim_to_batch(sim, "val")
    test = am.simulate.sim_to_batch(sim, "test")
    strip = lambda b: jax.tree.map(jnp.asarray, b._replace(propensity=None))
    return sim, sim_cfg, prop, log_freq, strip(train), strip(val), strip(test)


def _model_config(sim_cfg, quick: bool):
    mc = am.ModelConfig(
        vocab_sizes=tuple(sim_cfg.vocab_sizes), d_x=sim_cfg.d_x, max_len=sim_cfg.max_len
    )
    if quick:
        # One Transformer layer of width 32: the study's many lanes fit a 2-core machine.
        mc = dataclasses.replace(mc, d_model=32, ffn_dim=64, num_layers=1)
    return mc


# --- one compiled program for every lane ------------------------------------------------


def make_sweep(cfg: am.TrainConfig, train: am.data.JourneyBatch):
    """``run(keys, lambda_max, weights, data) -> (states, step metrics)`` vmapped over lanes.

    Each lane is a whole ``cfg.num_epochs`` run of the shared training loop
    (epochs under ``lax.scan``, its batch order and non-finite guard) whose
    step is the jointly jitted min-max step with the lane's own seed, λ_max and
    ``LossWeights``. ``cfg`` must have ``beta > 0`` so the contrastive term
    exists (a lane's β scales it, 0 included). When progress shows
    (``loop.progress_enabled``), a bar counts the lanes' steps per epoch: the
    lanes run in step, so one bar stands for them all.
    """
    trainer = am.make_train(cfg, train)  # checks the journeys once
    spe, total = trainer.steps_per_epoch, trainer.total_steps
    warm = spe if cfg.warmup_steps is None else cfg.warmup_steps
    graphdef = am.split_model(nnx.eval_shape(lambda: am.ALMMTA(cfg.model, rngs=nnx.Rngs(0))))[0]
    raw_step = am.make_step(cfg, graphdef)
    bar = loop.ProgressBar(total, name="training lanes") if loop.progress_enabled() else None

    def run(key, lambda_max, weights, data):
        schedule = lambda step: am.adversary_weight(step, 1.0, warm, total) * lambda_max
        recipe = dataclasses.replace(
            trainer.recipe,
            step=lambda s, b: raw_step(s, b, schedule=schedule, weights=weights),
            evaluate=lambda s, e: (),
        )
        lane = loop.Trainer(
            recipe,
            data,
            None,
            config=cfg,
            batch_size=cfg.batch_size,
            num_epochs=cfg.num_epochs,
            progress=bar,
        )
        state, (steps, _) = lane(key)
        return state, steps

    return jax.jit(jax.vmap(run, in_axes=(0, 0, 0, None)))


def score_lane(trainer, state, world, pool_size: int, score_all: bool = True) -> dict:
    """Test-split prediction metrics and the three front-door readings' truth scores."""
    truth, prop, log_freq, train, test = world
    model = trainer.model(state)
    mask = np.asarray(test.touch_mask)
    ev = trainer.evaluate(state, test)
    out = {"test": {f: float(v) for f, v in zip(ev._fields, ev)}}
    simple = am.attribute(model, test, chunk_size=5)
    out["ipw_simple"] = _score(np.asarray(simple.uplift, np.float64), truth, mask)
    ref = jax.tree.map(lambda a: a[:pool_size], train)
    pool = am.build_reference_pool(model, ref, ref.touch_ids[..., CLUSTER_FIELD])
    log_e = prop(test.x)
    readings = (("explicit_top8", TOP_K),) + ((("explicit_all", pool_size),) if score_all else ())
    for name, k in readings:
        att = am.attribute(
            model,
            test,
            frontdoor="explicit",
            pool=pool,
            k=k,
            log_propensity=log_e,
            log_frequency=log_freq,
            chunk_size=5,
        )
        out[name] = _score(np.asarray(att.uplift, np.float64), truth, mask)
    leaves = jax.tree.leaves((state.params, state.adv_params))
    out["finite"] = bool(all(np.all(np.isfinite(np.asarray(x))) for x in leaves))
    return out


READINGS = ("ipw_simple", "explicit_top8", "explicit_all")


def summarize(per_seed: list[dict]) -> dict:
    """Mean and std over seeds of the headline numbers of one setting."""
    get = {
        **{f"{r}_spearman": (lambda d, r=r: d[r]["spearman"]) for r in READINGS},
        **{f"{r}_pooled_spearman": (lambda d, r=r: d[r]["pooled_spearman"]) for r in READINGS},
        **{f"{r}_rmse": (lambda d, r=r: d[r]["rmse"]) for r in READINGS},
        "ipw_simple_mean_abs_uplift": lambda d: d["ipw_simple"]["mean_abs_uplift"],
        "outcome_auc": lambda d: d["test"]["outcome_auc"],
        "adversary_auc": lambda d: d["test"]["adversary_auc"],
        "proxy_auc": lambda d: d["test"]["proxy_auc"],
    }
    out = {}
    for key, fn in get.items():
        if key.startswith("explicit_all") and "explicit_all" not in per_seed[0]:
            nan = float("nan")
            out[key] = {"mean": nan, "std": nan, "values": [nan] * len(per_seed)}
            continue
        vals = np.array([fn(d) for d in per_seed], np.float64)
        out[key] = {"mean": float(vals.mean()), "std": float(vals.std()), "values": vals.tolist()}
    out["finite"] = all(d["finite"] for d in per_seed)
    return out


def run_settings(settings, cfg, world, seeds: int, seed: int, pool_size: int) -> dict:
    """Trains every setting x seed as lanes of one program per balancer and scores them."""
    train, val = world[3], world[5]
    results = {}
    balancers = sorted({s.balancer for s in settings})
    for balancer in _common.rows(balancers, "balancers", unit="program"):
        group = [s for s in settings if s.balancer == balancer]
        bcfg = dataclasses.replace(cfg, balancer=balancer)
        trainer = am.make_train(bcfg, train, val)
        sweep = make_sweep(bcfg, train)
        lanes = [(s, r) for s in group for r in range(seeds)]
        keys = jnp.stack([jax.random.key(1000 * seed + r) for _, r in lanes])
        lam = jnp.asarray([s.lambda_max for s, _ in lanes], jnp.float32)
        weights = am.LossWeights(
            alpha=jnp.full((len(lanes),), bcfg.alpha, jnp.float32),
            beta=jnp.asarray([s.beta for s, _ in lanes], jnp.float32),
            proxy_on_negatives=jnp.asarray([s.proxy_on_negatives for s, _ in lanes]),
        )
        start = time.perf_counter()
        states, steps = sweep(keys, lam, weights, train)
        jax.block_until_ready(states)
        train_s = time.perf_counter() - start
        print(
            f"  balancer={balancer}: {len(lanes)} lanes x {trainer.total_steps} steps "
            f"in {train_s:.0f}s (compile included)",
            flush=True,
        )
        start = time.perf_counter()
        per = {s.name: [] for s in group}
        for i, (s, _) in _common.rows(enumerate(lanes), "scoring lanes", leave=False, unit="lane"):
            state = jax.tree.map(lambda a, i=i: a[i], states)
            per[s.name].append(score_lane(trainer, state, world[:5], pool_size, s.score_all))
        print(f"  scored {len(lanes)} lanes in {time.perf_counter() - start:.0f}s", flush=True)
        for s in group:
            summary = summarize(per[s.name])
            results[s.name] = {"setting": s._asdict(), "summary": summary, "per_seed": per[s.name]}
            print(_line(s.name, summary), flush=True)
    return results


def _pm(stat, digits=3):
    """``mean ± std``; "–" for a reading not scored (or not kept by an older run)."""
    if stat is None or not np.isfinite(stat["mean"]):
        return "–"
    return f"{stat['mean']:.{digits}f} ± {stat['std']:.{digits}f}"


def _cell(summary: dict, key: str) -> str:
    return _pm(summary.get(key), 4 if key.endswith("_rmse") else 3)


def _line(name, summary):
    return (
        f"  {name:>30}: Spearman ipw_simple {_pm(summary['ipw_simple_spearman'])}, "
        f"explicit top-8 {_pm(summary['explicit_top8_spearman'])}, "
        f"explicit all {_pm(summary['explicit_all_spearman'])}; ipw_simple pooled "
        f"{_cell(summary, 'ipw_simple_pooled_spearman')}, RMSE {_cell(summary, 'ipw_simple_rmse')}; "
        f"AUC {_pm(summary['outcome_auc'])}, adversary AUC {_pm(summary['adversary_auc'])}"
    )


# The main table's columns: what a reader compares across settings. Per-journey
# Spearman first (the reading line compares them), then the scores that see levels
# (docs/almmta.md, *Exact truth*).
MAIN_COLUMNS = (
    ("Spearman ipw_simple", "ipw_simple_spearman"),
    ("Spearman explicit top-8", "explicit_top8_spearman"),
    ("pooled Spearman ipw_simple", "ipw_simple_pooled_spearman"),
    ("RMSE ipw_simple", "ipw_simple_rmse"),
    ("outcome AUC", "outcome_auc"),
    ("adversary AUC", "adversary_auc"),
)
DETAIL_COLUMNS = (
    ("Spearman explicit all", "explicit_all_spearman"),
    ("pooled Spearman explicit top-8", "explicit_top8_pooled_spearman"),
    ("RMSE explicit top-8", "explicit_top8_rmse"),
)


def _table(header: list[str], body: list[list[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return lines + ["| " + " | ".join(cells) + " |" for cells in body]


def reading(results: dict) -> str:
    """The line under the main table: the leading setting per reading, full minus ablation."""
    leads = []
    for label, key in MAIN_COLUMNS[:2]:
        name = max(results, key=lambda n: results[n]["summary"][key]["mean"])
        leads.append(f"{name} leads on {label} ({results[name]['summary'][key]['mean']:.3f})")
    line = "*Reading:* among the settings, " + " and ".join(leads)
    full, abl = results.get("default / full"), results.get("default / ablation")
    if full is not None and abl is not None:
        diffs = ", ".join(
            f"{label.removeprefix('Spearman ')} "
            f"{full['summary'][key]['mean'] - abl['summary'][key]['mean']:+.3f}"
            for label, key in MAIN_COLUMNS[:2]
        )
        line += f"; in the default world the full method minus the ablation is {diffs}"
    return line + ". Differences smaller than the ± spread over seeds are not measured ones."


def results_section(payload: dict) -> str:
    """The RESULTS.md span: one row per setting, mean ± std over seeds.

    The main table holds the truth scores and prediction metrics; each
    setting's hyperparameters and the explicit reading over the whole pool
    follow in a ``<details>`` block.
    """
    results = payload["results"]
    main = [
        [name] + [_cell(r["summary"], key) for _, key in MAIN_COLUMNS]
        for name, r in results.items()
    ]
    detail = []
    for name, res in results.items():
        s, m = res["setting"], res["summary"]
        yes = "yes" if s["proxy_on_negatives"] else "no"
        cells = [f"{s['lambda_max']:g}", f"{s['beta']:g}", yes, s["balancer"]]
        detail.append([name, *cells, *(_cell(m, key) for _, key in DETAIL_COLUMNS)])
    rows = [
        "## ALM-MTA deletion uplifts vs the simulator's exact truth (`python -m benchmarks.almmta_truth`)",
        "",
        f"Mode: {'quick' if payload['quick'] else 'full'}{' + study sweep' if payload['study'] else ''}; "
        f"{payload['train_journeys']} training journeys of one simulated world (seed "
        f"{payload['seed']}; {sim_bench.journeys_phrase(payload)}), {payload['epochs']} epochs, batch {payload['batch_size']}, "
        f"model d={payload['d_model']} with {payload['num_layers']} layer(s); "
        f"mean ± std over {payload['seeds']} training seeds. Spearman is per journey against "
        f"`delta_x` on {payload.get('scored_journeys', 600)} test journeys, averaged; *pooled* "
        "Spearman ranks every touch of those journeys together and RMSE is per touch, so both "
        "see levels (docs/almmta.md, *Exact truth*); explicit uses a pool of "
        f"{payload['pool_size']} training sequences (top-8, or all of them).",
        "",
        *_table(["setting"] + [label for label, _ in MAIN_COLUMNS], main),
        "",
        reading(results),
        "",
        "<details><summary>Hyperparameters (λ_max, β, proxy on negatives, balancer), "
        "explicit over the whole pool and explicit top-8's pooled Spearman and RMSE</summary>",
        "",
        *_table(
            ["setting", "λ_max", "β", "proxy on negatives", "balancer"]
            + [label for label, _ in DETAIL_COLUMNS],
            detail,
        ),
        "",
        "</details>",
    ]
    rows += ["", "### Measured answers", ""] + [f"- {a}" for a in payload["answers"]]
    return "\n".join(rows)


def answers(results: dict) -> list[str]:
    """Full method minus ablation, per setting and reading (the question of the benchmark)."""
    out = []
    for world in ("default", "leak"):
        full, abl = results.get(f"{world} / full"), results.get(f"{world} / ablation")
        if full is None or abl is None:
            continue
        diffs = []
        for r in READINGS:
            a = np.array(full["summary"][f"{r}_spearman"]["values"])
            b = np.array(abl["summary"][f"{r}_spearman"]["values"])
            d = a - b
            if not np.all(np.isfinite(d)):
                continue  # a reading that was not scored for this setting
            diffs.append(f"{r} {d.mean():+.3f} ± {d.std():.3f}")
        out.append(f"{world}: full − ablation Spearman (same seeds): " + ", ".join(diffs) + ".")
    sweep = {0.0: "default / λ=0, β=0.1", 0.1: "default / λ=0.1, β=0.1"}
    sweep.update({0.3: "default / full", 1.0: "default / λ=1, β=0.1"})
    if all(v in results for v in sweep.values()):
        parts = []
        for lam, name in sweep.items():
            m = results[name]["summary"]
            parts.append(
                f"λ={lam:g}: ipw_simple {m['ipw_simple_spearman']['mean']:.3f}, explicit "
                f"{m['explicit_top8_spearman']['mean']:.3f}, adversary AUC "
                f"{m['adversary_auc']['mean']:.3f}"
            )
        out.append("default, β = 0.1, λ_max sweep: " + "; ".join(parts) + ".")
    gaps = [
        abs(
            r["summary"]["explicit_top8_spearman"]["mean"]
            - r["summary"]["explicit_all_spearman"]["mean"]
        )
        for r in results.values()
        if np.isfinite(r["summary"]["explicit_all_spearman"]["mean"])
    ]
    if gaps:
        out.append(
            f"top-8 high-match set vs the whole pool: largest Spearman gap {max(gaps):.3f} "
            "(the K restriction does not move the explicit reading)."
        )
    return out


def write_results_section(section: str, path: pathlib.Path = RESULTS_MD) -> None:
    """Replaces only the span between this benchmark's markers in RESULTS.md (appends it if absent)."""
    _common.write_results_span("almmta-truth", section, path)


def stress(steps: int, seed: int = 0) -> dict:
    sim, sim_cfg, _, _, train, val, _ = prepare(quick=True, seed=seed)
    mc = dataclasses.replace(_model_config(sim_cfg, False), d_model=32, ffn_dim=64, num_layers=1)
    batch = 128
    per_epoch = train.y.shape[0] // batch
    epochs = -(-steps // per_epoch)
    cfg = am.TrainConfig(mc, batch_size=batch, num_epochs=epochs, queue_size=1024, eval_size=512)
    trainer = am.make_train(cfg, train, val)
    state = trainer.init(jax.random.key(seed))
    chunk = 20  # epochs per call: one compiled epoch function for the whole run
    start = time.perf_counter()
    nan_at = None
    # epochs is the fewest that reach ``steps``, so every chunk is needed.
    sizes = [min(chunk, epochs - done) for done in range(0, epochs, chunk)]
    for n in _common.rows(sizes, "stress chunks", unit="chunk"):
        state, (m, e) = trainer.run_epochs(state, n)
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
        "epoch_fn_compilations": trainer.compilations()["run_epochs"],
        "wall_s": time.perf_counter() - start,
    }


def main(argv: list[str] | None = None) -> dict:
    p = _common.parser(__doc__.splitlines()[0])
    p.add_argument("--stress-steps", type=int, default=0, help="NaN/recompile check instead")
    p.add_argument("--seed", type=int, default=0, help="simulated world (and seed offset)")
    p.add_argument("--seeds", type=int, default=None, help="training seeds per setting")
    p.add_argument("--study", action="store_true", help="add the λ / β sweep rows")
    p.add_argument("--drgrad", action="store_true", help="with --study: the DRGrad balancer rows")
    p.add_argument("--epochs", type=int, default=None, help="override the epochs")
    p.add_argument("--no-results", action="store_true", help="do not rewrite RESULTS.md")
    p.add_argument("--from-json", default=None, help="rewrite RESULTS.md from a saved run's JSON")
    args = p.parse_args(argv)
    if args.from_json:
        payload = json.loads(pathlib.Path(args.from_json).read_text())
        payload["answers"] = answers(payload["results"])
        write_results_section(results_section(payload))
        return payload
    if args.stress_steps:
        res = stress(args.stress_steps, args.seed)
        print(f"[almmta_truth] stress: {res}")
        _common.write_json(args.json, {"stress": res})
        return {"stress": res}
    start = time.perf_counter()
    sim, sim_cfg, prop, log_freq, train, val, test = prepare(args.quick, args.seed)
    mc = _model_config(sim_cfg, args.quick)
    batch = 256 if args.quick else 512
    epochs = args.epochs or 10
    seeds = args.seeds or (2 if args.quick else 3)
    pool_size = 256 if args.quick else 2048
    # The 500-step learning-rate warm-up of docs/almmta.md would outlast a quick run.
    total = (train.y.shape[0] // batch) * epochs
    warm = min(500, max(1, total // 10))
    cfg = am.TrainConfig(
        mc, batch_size=batch, num_epochs=epochs, eval_size=2048, lr_warmup_steps=warm, beta=0.1
    )
    settings = base_settings(args.quick) + (study_settings(args.drgrad) if args.study else [])
    print(
        f"[almmta_truth] simulator: {train.y.shape[0]} train / {test.y.shape[0]} test journeys, "
        f"upload rate {float(train.y.mean()):.3f}; batch {batch}, {epochs} epochs, "
        f"{len(settings)} settings x {seeds} seeds",
        flush=True,
    )
    # Quick runs score the first 300 test journeys (attribution dominates their time).
    n_score = 300 if args.quick else int(test.y.shape[0])
    truth = sim.delta_x[np.flatnonzero(sim.split == 2)][:n_score]
    world = (truth, prop, log_freq, train, jax.tree.map(lambda a: a[:n_score], test), val)
    results = run_settings(settings, cfg, world, seeds, args.seed, pool_size)
    full = results["default / full"]["summary"]
    abl = results["default / ablation"]["summary"]
    payload = {
        # Headline figures: default world, full method vs ablation.
        "spearman": {
            "alm_mta": {r: full[f"{r}_spearman"]["mean"] for r in READINGS},
            "no_adversary_no_contrastive": {r: abl[f"{r}_spearman"]["mean"] for r in READINGS},
        },
        "results": results,
        "quick": args.quick,
        "study": args.study,
        "seed": args.seed,
        "seeds": seeds,
        "epochs": epochs,
        "batch_size": batch,
        "pool_size": pool_size,
        "train_journeys": int(train.y.shape[0]),
        "journey_lengths": sim_bench.journey_lengths(sim_cfg),
        "scored_journeys": n_score,
        "d_model": mc.d_model,
        "num_layers": mc.num_layers,
    }
    payload["answers"] = answers(results)
    payload["wall_s"] = time.perf_counter() - start
    for a in payload["answers"]:
        print(f"[almmta_truth] {a}")
    print(f"[almmta_truth] wall {payload['wall_s']:.0f}s")
    _common.write_json(args.json, payload)
    if not (args.no_results or args.quick):  # quick runs never replace the reported table
        write_results_section(results_section(payload))
    return payload


if __name__ == "__main__":
    main()
