"""What does DRGrad cost per step? Split-MMoE on Census-sized inputs, batch 1024.

Median step time (forward, backward, routing, Adam) of four jitted steps measured
in the same process, interleaved so machine drift hits them alike:

* ``plain``: the summed loss, one ``jax.grad``;
* ``drgrad``: parameter-space DRGrad fed by ``per_task_grads(..., shared="summed")``
  (one backward pass: towers are task-exclusive, the trunk is only summed);
* ``drgrad_activations``: DRGrad at (v1, v_s) via ``per_task_rep_grads`` and one
  trunk VJP;
* ``jacrev``: parameter-space DRGrad fed by a naive ``jax.jacrev`` of all
  parameters (K full backward passes), for reference.

Targets: drgrad_over_plain <= 1.10, drgrad_activations_over_plain <= 1.25.

Usage: ``python -m benchmarks.drgrad_speed [--quick] [--json PATH]``
"""

from __future__ import annotations

import time

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

import drgrad_jax
from benchmarks import _common
from drgrad_jax import models

# Census-Income (KDD): 32 categorical fields (vocabularies as in the shipped file,
# rounded), 7 continuous ones.
CENSUS_VOCABS = (
    9, 52, 47, 17, 3, 7, 24, 15, 5, 10, 2, 3, 6, 8, 6, 6, 51, 38, 8, 10, 9, 10, 3, 4, 7, 5,
    43, 43, 43, 5, 3, 3,
)  # fmt: skip
NUM_DENSE = 7
TARGETS = {"drgrad_over_plain": 1.10, "drgrad_activations_over_plain": 1.25}


def build(batch: int, seed: int = 0):
    """A Split-MMoE, a random Census-shaped batch, and the four step functions."""
    model = models.SplitMMoE(
        CENSUS_VOCABS,
        NUM_DENSE,
        num_tasks=2,
        embed_dim=8,
        num_experts=8,
        expert_hidden=(64,),
        tower=(32,),
        rngs=nnx.Rngs(seed),
    )
    graphdef, params = nnx.split(model, nnx.Param)
    rng = np.random.default_rng(seed)
    cat = jnp.asarray(rng.integers(0, np.array(CENSUS_VOCABS), (batch, len(CENSUS_VOCABS))))
    dense = jnp.asarray(rng.normal(size=(batch, NUM_DENSE)), jnp.float32)
    y = jnp.asarray(rng.integers(0, 2, (batch, 2)), jnp.float32)
    task_of = models.task_of(model)

    def task_losses(p, mu):
        logits = nnx.merge(graphdef, p)(cat, dense, mu=mu)
        return jnp.mean(optax.sigmoid_binary_cross_entropy(logits, y), axis=0)

    def trunk_fn(p):
        return nnx.merge(graphdef, p).drgrad_trunk(cat, dense)

    def heads_fn(p, reps, mu):
        logits = nnx.merge(graphdef, p).drgrad_heads(reps, mu=mu)
        return jnp.mean(optax.sigmoid_binary_cross_entropy(logits, y), axis=0)

    adam = optax.adam(1e-3)
    tx_params = optax.chain(drgrad_jax.drgrad(model.drgrad_towers("params")), adam)
    tx_rep = drgrad_jax.drgrad(model.drgrad_towers("activations"), space="activations", num_tasks=2)

    @jax.jit
    def plain_step(p, s):
        g = jax.grad(lambda p: jnp.sum(task_losses(p, None)))(p)
        u, s = adam.update(g, s, p)
        return optax.apply_updates(p, u), s

    @jax.jit
    def drgrad_step(p, s):
        mu = drgrad_jax.mixing_weights(s)
        _, tg = drgrad_jax.per_task_grads(task_losses, p, mu, task_of=task_of, shared="summed")
        u, s = tx_params.update(tg, s, p)
        return optax.apply_updates(p, u), s

    @jax.jit
    def jacrev_step(p, s):
        mu = drgrad_jax.mixing_weights(s)
        tg = jax.jacrev(task_losses)(p, mu)
        u, s = tx_params.update(tg, s, p)
        return optax.apply_updates(p, u), s

    @jax.jit
    def activations_step(p, s):
        rep_state, opt_state = s
        mu = drgrad_jax.mixing_weights(rep_state)
        rg = drgrad_jax.per_task_rep_grads(trunk_fn, lambda p, r: heads_fn(p, r, mu), p)
        routed, rep_state = tx_rep.update(rg.rep_task_grads, rep_state, rg.reps)
        g = rg.finish(routed)
        u, opt_state = adam.update(g, opt_state, p)
        return optax.apply_updates(p, u), (rep_state, opt_state)

    reps = jax.eval_shape(trunk_fn, params)
    steps = {
        "plain": (plain_step, (params, adam.init(params))),
        "drgrad": (drgrad_step, (params, tx_params.init(params))),
        "drgrad_activations": (activations_step, (params, (tx_rep.init(reps), adam.init(params)))),
        "jacrev": (jacrev_step, (params, tx_params.init(params))),
    }
    return model, steps


def main(argv: list[str] | None = None) -> dict:
    args = _common.parser(__doc__.splitlines()[0]).parse_args(argv)
    batch = 1024
    rounds, iters = (5, 8) if args.quick else (7, 15)
    print(
        f"[drgrad_speed] Split-MMoE, {len(CENSUS_VOCABS)} categorical + {NUM_DENSE} dense, "
        f"batch {batch}, backend {jax.default_backend()}, devices {jax.device_count()}"
    )
    model, steps = build(batch)
    print(f"[drgrad_speed] parameters: {models.param_count(model):,}")
    start = time.perf_counter()
    timing = _common.time_interleaved(
        {k: v[0] for k, v in steps.items()},
        {k: v[1] for k, v in steps.items()},
        rounds=rounds,
        iters=iters,
    )
    plain = timing["plain"]["median_s"]
    ratios = {
        "drgrad_over_plain": timing["drgrad"]["median_s"] / plain,
        "drgrad_activations_over_plain": timing["drgrad_activations"]["median_s"] / plain,
        "jacrev_over_plain": timing["jacrev"]["median_s"] / plain,
    }
    for name, rec in timing.items():
        print(
            f"  {name:20s} compile {rec['compile_s']:6.2f}s   median step "
            f"{rec['median_s'] * 1e3:7.2f} ms"
        )
    ok = True
    for name, value in ratios.items():
        target = TARGETS.get(name)
        verdict = (
            "" if target is None else ("  ok" if value <= target else f"  MISSED (<= {target})")
        )
        ok &= target is None or value <= target
        print(f"  {name:32s} {value:5.3f}{verdict}")
    payload = {
        "ratios": ratios,
        "targets": TARGETS,
        "targets_met": bool(ok),
        "median_step_s": {k: v["median_s"] for k, v in timing.items()},
        "compile_s": {k: v["compile_s"] for k, v in timing.items()},
        "compilation_cache": _common.CACHE_DIR,  # compile_s is load time when warm
        "batch": batch,
        "params": models.param_count(model),
        "backend": jax.default_backend(),
        "wall_s": time.perf_counter() - start,
    }
    _common.write_json(args.json, payload)
    return payload


if __name__ == "__main__":
    main()
