"""What do the jointly jitted min-max step and attribution cost? ALM-MTA at simulator sizes.

Median step times measured in the same process, interleaved so machine drift
hits them alike (default network sizes of the design notes, L = 20):

* ``joint``: one jitted two-player step (``mode="simultaneous"``, k = 1);
* ``separate``: the naive loop, two separately jitted calls per iteration (the
  adversary step with its own forward pass, then the generator step);
* ``grl``: the jitted ``mode="grl"`` step (the full min-max objective);
* ``outcome_only``: the same backbone trained on ``L_y`` alone;
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
from flax import nnx

import almmta_jax as am
from almmta_jax._src.train import make_step
from benchmarks import _common

TARGETS = {"separate_over_joint": 1.25, "minmax_over_outcome_only": 1.6}
# Simulator default vocabularies: items, clusters, music, templates.
VOCABS = (2000, 50, 200, 50)


def build(batch: int, max_len: int = 20, seed: int = 0):
    """The step functions (jitted once) and their arguments."""
    mc = am.ModelConfig(vocab_sizes=VOCABS, d_x=8, max_len=max_len)
    data = am.random_journeys(jax.random.key(seed), batch, mc, upload_rate=0.3)
    cfg = am.TrainConfig(mc, mode="simultaneous", batch_size=batch, lr_warmup_steps=1)
    graphdef, state = am.init_state(cfg, jax.random.key(seed + 1))
    state = state._replace(step=state.step + 10**6)  # past the warm-up: λ > 0
    sched = lambda step: am.adversary_weight(step, cfg.lambda_max, 0, 10**7)
    bind = lambda f: jax.jit(lambda s, b: f(s, b, schedule=sched))
    joint = bind(make_step(cfg, graphdef))
    adv = bind(make_step(cfg, graphdef, player="adversary"))
    gen = bind(make_step(cfg, graphdef, player="generator"))
    grl_cfg = am.TrainConfig(mc, mode="grl", batch_size=batch, lr_warmup_steps=1)
    grl = bind(make_step(grl_cfg, graphdef))
    outcome = bind(make_step(grl_cfg, graphdef, outcome_only=True))
    bal_cfg = am.TrainConfig(
        mc, mode="simultaneous", batch_size=batch, lr_warmup_steps=1, balancer="drgrad"
    )
    balanced = bind(make_step(bal_cfg, graphdef))
    bal_state = state._replace(balancer_state=am.head_balancer().init(state.params))

    def separate(s, b):
        s, _ = adv(s, b)
        return gen(s, b)

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
