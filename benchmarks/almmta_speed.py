"""What do the jointly jitted min-max step and attribution cost? ALM-MTA at simulator sizes.

Median step times measured in the same process, interleaved so machine drift
hits them alike (default network sizes of the design notes, L = 20):

* ``joint``: one jitted two-player step (``mode="simultaneous"``, k = 1);
* ``separate``: the naive loop, two separately jitted calls per iteration (the
  adversary step with its own forward pass, then the generator step), built
  here from the public model and losses (``split_player_steps``);
* ``grl``: the jitted ``mode="grl"`` step (the full min-max objective);
* ``outcome_only``: the same backbone trained on ``L_y`` alone, built here
  (``outcome_only_step``);
* ``joint_drgrad``: the joint step with ``balancer="drgrad"`` (three backward
  passes, one per loss term, then the routing), reported as
  ``drgrad_over_joint`` without a target.

Targets: separate_over_joint >= 1.25 and minmax_over_outcome_only <= 1.6.
Attribution throughput: journeys per second of ``attribute`` (deletion, every
touch of every journey in one call).

Usage: ``python -m benchmarks.almmta_speed [--quick] [--json PATH]``
"""

from __future__ import annotations

import time

import jax
import jax.numpy as jnp
import optax
from flax import nnx

import almmta_jax as am
from almmta_jax.testing import random_journeys
from benchmarks import _common

TARGETS = {"separate_over_joint": 1.25, "minmax_over_outcome_only": 1.6}
# Simulator default vocabularies: items, clusters, music, templates.
VOCABS = (2000, 50, 200, 50)


def _dropout_key(state):
    return jax.random.fold_in(jax.random.fold_in(state.rng, 2), state.step)


def _generator_terms(cfg, model, state, batch, lam, dropout_key):
    """``L_y + α L_p + β L_cl − λ L_adv`` of the mediator branch against the current adversary."""
    enc = model.encode(batch, dropout_key=dropout_key)
    l_y = am.outcome_loss(
        model.outcome_logit(enc.mediator, enc.treatment, enc.s), batch.y, batch.ipw
    )
    l_p = am.proxy_loss(model.proxy_logits(enc.mediators), batch.yp, batch.yp_mask)
    positives = batch.yp_mask & (jnp.max(batch.yp, axis=-1) >= 0.5)
    l_cl, _ = am.info_nce_loss(
        model.query(enc.mediator, enc.s),
        model.touch_keys(enc.e),
        positives,
        enc.keep,
        state.queue,
        state.queue_valid,
        cfg.temperature,
    )
    l_adv = am.adversary_loss(model.discriminate(enc.mediator), batch.y)
    return l_y + cfg.alpha * l_p + cfg.beta * l_cl - lam * l_adv


def split_player_steps(cfg, graphdef, tx, schedule):
    """The naive alternating loop's two calls: ``(adversary_step, generator_step)``.

    The adversary call runs its own forward pass to get ``M̂`` and takes one
    optimizer step of θ_D; the generator call takes one step of θ_G against the
    adversary as it stands. Each is meant to be jitted on its own.
    """

    def adversary_step(state, batch):
        model = nnx.merge(graphdef, state.adv_params, state.params)
        mediator = jax.lax.stop_gradient(
            model.encode(batch, dropout_key=_dropout_key(state)).mediator
        )
        loss = lambda a: am.adversary_loss(
            nnx.merge(graphdef, a, state.params).discriminate(mediator), batch.y
        )
        u, o = tx.update(jax.grad(loss)(state.adv_params), state.adv_opt_state, state.adv_params)
        return state._replace(adv_params=optax.apply_updates(state.adv_params, u), adv_opt_state=o)

    def generator_step(state, batch):
        lam = schedule(state.step)
        loss = lambda p: _generator_terms(
            cfg, nnx.merge(graphdef, state.adv_params, p), state, batch, lam, _dropout_key(state)
        )
        u, o = tx.update(jax.grad(loss)(state.params), state.opt_state, state.params)
        params = optax.apply_updates(state.params, u)
        return state._replace(step=state.step + 1, params=params, opt_state=o)

    return adversary_step, generator_step


def outcome_only_step(graphdef, tx):
    """The same backbone trained on ``L_y`` alone (no proxy, contrastive or adversary work)."""

    def step(state, batch):
        def loss(params):
            model = nnx.merge(graphdef, state.adv_params, params)
            enc = model.encode(batch, dropout_key=_dropout_key(state))
            logit = model.outcome_logit(enc.mediator, enc.treatment, enc.s)
            return am.outcome_loss(logit, batch.y, batch.ipw)

        u, o = tx.update(jax.grad(loss)(state.params), state.opt_state, state.params)
        params = optax.apply_updates(state.params, u)
        return state._replace(step=state.step + 1, params=params, opt_state=o)

    return step


def build(batch: int, max_len: int = 20, seed: int = 0):
    """The step functions (jitted once) and their arguments."""
    mc = am.ModelConfig(vocab_sizes=VOCABS, d_x=8, max_len=max_len)
    data = random_journeys(jax.random.key(seed), batch, mc, upload_rate=0.3)
    cfg = am.TrainConfig(mc, mode="simultaneous", batch_size=batch, lr_warmup_steps=1)
    trainer = am.make_train(cfg, data)
    state = trainer.init(jax.random.key(seed + 1))
    graphdef = nnx.graphdef(trainer.model(state))
    state = state._replace(step=state.step + 10**6)  # past the warm-up: λ > 0
    sched = lambda step: am.adversary_weight(step, cfg.lambda_max, 0, 10**7)
    bind = lambda f: jax.jit(lambda s, b: f(s, b, schedule=sched))
    tx = cfg.resolved_optimizer()
    joint = bind(am.make_step(cfg, graphdef))
    adv_step, gen_step = split_player_steps(cfg, graphdef, tx, sched)
    adv, gen = jax.jit(adv_step), jax.jit(gen_step)
    grl_cfg = am.TrainConfig(mc, mode="grl", batch_size=batch, lr_warmup_steps=1)
    grl = bind(am.make_step(grl_cfg, graphdef))
    outcome = jax.jit(outcome_only_step(graphdef, tx))
    bal_cfg = am.TrainConfig(
        mc, mode="simultaneous", batch_size=batch, lr_warmup_steps=1, balancer="drgrad"
    )
    balanced = bind(am.make_step(bal_cfg, graphdef))
    bal_state = state._replace(balancer_state=am.head_balancer().init(state.params))

    def separate(s, b):
        return gen(adv(s, b), b)

    fns = {
        "joint": joint,
        "separate": separate,
        "grl": grl,
        "outcome_only": outcome,
        "joint_drgrad": balanced,
    }
    args = {k: (state, data) for k in fns}
    args["joint_drgrad"] = (bal_state, data)
    return fns, args, graphdef, data


def main(argv: list[str] | None = None) -> dict:
    args = _common.parser(__doc__.splitlines()[0]).parse_args(argv)
    batch = 128 if args.quick else 512
    rounds, iters = (3, 5) if args.quick else (7, 15)
    fns, fargs, graphdef, data = build(batch)
    print(f"[almmta_speed] batch {batch}, L 20, d 64, backend {jax.default_backend()}")
    start = time.perf_counter()
    res = _common.time_interleaved(fns, fargs, rounds=rounds, iters=iters)
    for name, rec in res.items():
        print(f"  {name:>13}: compile {rec['compile_s']:.2f}s  step {1e3 * rec['median_s']:.2f} ms")
    ratios = {
        "separate_over_joint": res["separate"]["median_s"] / res["joint"]["median_s"],
        "minmax_over_outcome_only": res["grl"]["median_s"] / res["outcome_only"]["median_s"],
    }
    drgrad_over_joint = res["joint_drgrad"]["median_s"] / res["joint"]["median_s"]
    print(f"  drgrad_over_joint = {drgrad_over_joint:.3f} (balancer cost, no target)")
    # Attribution: deletion uplift of every touch of every journey of one batch.
    state = fargs["joint"][0]
    model = nnx.merge(graphdef, state.adv_params, state.params)
    attr = _common.time_fn(lambda: am.attribute(model, data).uplift, iters=iters)
    journeys_per_s = batch / attr["median_s"]
    print(
        f"  attribution: compile {attr['compile_s']:.2f}s, {1e3 * attr['median_s']:.2f} ms "
        f"per {batch} journeys = {journeys_per_s:.0f} journeys/s"
    )
    for k, v in ratios.items():
        ok = v >= TARGETS[k] if k == "separate_over_joint" else v <= TARGETS[k]
        print(
            f"  {k} = {v:.3f} (target {'>=' if k == 'separate_over_joint' else '<='} "
            f"{TARGETS[k]}) {'ok' if ok else 'MISSED'}"
        )
    payload = {
        "ratios": ratios,
        "attribution_journeys_per_s": journeys_per_s,
        "drgrad_over_joint": drgrad_over_joint,
        "step_ms": {k: 1e3 * v["median_s"] for k, v in res.items()},
        "compile_s": {k: v["compile_s"] for k, v in res.items()},
        "batch": batch,
        "backend": jax.default_backend(),
        "wall_s": time.perf_counter() - start,
    }
    _common.write_json(args.json, payload)
    return payload


if __name__ == "__main__":
    main()
