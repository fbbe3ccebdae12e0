"""What does each multi-task gradient method cost per step? MMoE, batch 2048, K in {2, 4}.

For every method of the zoo, its step time (per-task gradients, the method,
Adam) over a plain summed-loss step, all measured in the same process, each
step paired with a plain step run right next to it, at two levels:

* ``<method>_K<k>_params``: parameter level. ``per_task_grads`` with the
  model's task labels: one forward pass, one backward pass for the towers and
  gates (task-exclusive) and K backward passes for the shared experts (one
  after another, ``tasks_at_once=1``); the method then combines the per-task
  gradients of all leaves.
* ``<method>_K<k>_rep``: representation level (MGDA-UB), at the model's
  declared shared representation, the one ``TrainConfig(space="activations")``
  uses: ``MMoE.trunk``, the gates' input and the expert outputs ``[B, E, d]``
  (docs/drgrad.md, *Shared representation*). ``per_task_rep_grads`` gives the
  K cotangents there (``MMoE.task_heads`` on one copy of the representation per
  task: one backward pass through the gates and towers, each task's gate and
  tower once), the method combines them, and ONE VJP pulls the result back
  through the experts.
* ``floor_K<k>``: the cost any parameter-level method must pay on this model:
  the same per-task gradients, simply summed, then Adam.

Model: ``drgrad_jax.models.MMoE`` with 512 dense inputs, 8 experts
512 -> 256 -> 128, towers with one hidden layer of 64.

A ratio is the median, over ``--rounds`` pairs, of a step's time over the
plain step's time measured right next to it (alternating which runs first):
the speed of a shared machine drifts by tens of percent within a minute, and
pairing cancels it. Ratios of minimum step times are in ``ratios_of_minima``.

Targets: every ``*_rep`` ratio <= 1.2, and every ``*_params`` ratio within 10%
of ``floor_K<k>``.

A full run of every method at K = 2 and 4 rewrites its table in
``benchmarks/RESULTS.md``; ``--from-json PATH`` re-renders it from a saved run.

``--quick`` times three representative methods (PCGrad, MGDA, UPGrad) with six
pairs each, to stay near two minutes; the full run times every method with
twelve.

Usage: ``python -m benchmarks.mtl_speed [--quick] [--json PATH] [--methods ...] [--tasks ...] [--rounds N]
[--from-json PATH]``
"""

from __future__ import annotations

import dataclasses
import json
import pathlib
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

import drgrad_jax
from benchmarks import _common
from drgrad_jax import models

NUM_DENSE = 512
QUICK_METHODS = ("pcgrad", "mgda", "upgrad")
REP_TARGET = 1.2
PARAMS_OVER_FLOOR_TARGET = 1.10


def methods(k: int) -> dict:
    """Every zoo method with its default hyperparameters for ``k`` tasks."""
    return {
        "linear_scalarization": drgrad_jax.linear_scalarization(),
        "pcgrad": drgrad_jax.pcgrad(),
        "gradvac": drgrad_jax.gradvac(num_tasks=k),
        "cagrad": drgrad_jax.cagrad(),
        "mgda": drgrad_jax.mgda(),
        "nash_mtl": drgrad_jax.nash_mtl(),
        "imtl_g": drgrad_jax.imtl_g(),
        "aligned_mtl": drgrad_jax.aligned_mtl(),
        "upgrad": drgrad_jax.upgrad(),
        "dwa": drgrad_jax.dwa(num_tasks=k),
        "uncertainty_weighting": drgrad_jax.uncertainty_weighting(num_tasks=k),
        "mean": drgrad_jax.mean(),
        "random_weighting": drgrad_jax.random_weighting(),
        "dualproj": drgrad_jax.dualproj(),
        "conflict_free": drgrad_jax.conflict_free(),
        "trimmed_mean": drgrad_jax.trimmed_mean(0 if k < 3 else 1),
        "graddrop": drgrad_jax.graddrop(),
        "fairgrad": drgrad_jax.fairgrad(eps=1e-6),
        "imtl_l": drgrad_jax.imtl_l(num_tasks=k),
        "geometric_mean": drgrad_jax.geometric_mean(),
        "rlw": drgrad_jax.rlw(),
        "famo": drgrad_jax.famo(num_tasks=k),
        "stch": drgrad_jax.stch(),
        "db_mtl": drgrad_jax.db_mtl(num_tasks=k),
        "gradnorm": drgrad_jax.gradnorm(num_tasks=k),
        "moco": drgrad_jax.moco(num_tasks=k),
        "modo": drgrad_jax.modo(num_tasks=k),
        "sdmgrad": drgrad_jax.sdmgrad(num_tasks=k),
        "excess_mtl": drgrad_jax.excess_mtl(num_tasks=k),
        "cr_mogm": drgrad_jax.cr_mogm(num_tasks=k),
    }


@dataclasses.dataclass(frozen=True)
class Size:
    """The widths of the benchmark's MMoE; the defaults are the timed model."""

    num_dense: int = NUM_DENSE
    num_experts: int = 8
    expert_hidden: tuple[int, ...] = (256, 128)
    tower: tuple[int, ...] = (64,)


def make_model(k: int, size: Size = Size(), seed: int = 0) -> models.MMoE:
    """The benchmark's MMoE for ``k`` tasks."""
    return models.MMoE(
        (),
        size.num_dense,
        num_tasks=k,
        num_experts=size.num_experts,
        expert_hidden=size.expert_hidden,
        tower=size.tower,
        rngs=nnx.Rngs(seed),
    )


def make_batch(k: int, batch: int, size: Size = Size(), seed: int = 0):
    """``(dense [batch, num_dense], y [batch, k])``: Gaussian features, random binary labels."""
    rng = np.random.default_rng(seed)
    dense = jnp.asarray(rng.normal(size=(batch, size.num_dense)), jnp.float32)
    y = jnp.asarray(rng.integers(0, 2, (batch, k)), jnp.float32)
    return dense, y


def build(k: int, batch: int, only: list[str] | None = None, seed: int = 0, size: Size = Size()):
    """The MMoE, a random batch, and every step function for ``k`` tasks."""
    model = make_model(k, size, seed)
    graphdef, params = models.params_of(model)
    task_of = models.task_of(model)
    dense, y = make_batch(k, batch, size, seed)

    def bce(logits):
        return jnp.mean(optax.sigmoid_binary_cross_entropy(logits, y), axis=0)

    def task_losses(p):
        return bce(nnx.merge(graphdef, p)(None, dense))

    # Representation level: the model's own shared representation (trunk) and
    # the task parts that read it, on one copy per task (task_heads), as the
    # trainer cuts it.
    def trunk_fn(p):
        return nnx.merge(graphdef, p).trunk(None, dense)

    def heads_fn(p, copies):
        return bce(nnx.merge(graphdef, p).task_heads(copies))

    adam = optax.adam(1e-3)

    @jax.jit
    def plain_step(p, s):
        g = jax.grad(lambda p: jnp.sum(task_losses(p)))(p)
        u, s = adam.update(g, s, p)
        return optax.apply_updates(p, u), s

    @jax.jit
    def floor_step(p, s):
        _, tg = drgrad_jax.per_task_grads(task_losses, p, task_of=task_of)
        u, s = adam.update(drgrad_jax.sum_tasks(tg), s, p)
        return optax.apply_updates(p, u), s

    def params_step(tx):
        chained = optax.chain(tx, adam)

        @jax.jit
        def step(p, s):
            losses, tg = drgrad_jax.per_task_grads(task_losses, p, task_of=task_of)
            u, s = chained.update(tg, s, p, losses=losses)
            return optax.apply_updates(p, u), s

        return step, (params, chained.init(params))

    def rep_step(tx):
        @jax.jit
        def step(p, s):
            tx_state, opt_state = s
            rg = drgrad_jax.per_task_rep_grads(trunk_fn, heads_fn, p, num_tasks=k)
            rep_update, tx_state = tx.update(rg.rep_task_grads, tx_state, rg.reps, losses=rg.losses)
            u, opt_state = adam.update(rg.finish(rep_update), opt_state, p)
            return optax.apply_updates(p, u), (tx_state, opt_state)

        reps = jax.eval_shape(trunk_fn, params)
        return step, (params, (tx.init(reps), adam.init(params)))

    steps = {
        "plain": (plain_step, (params, adam.init(params))),
        "floor": (floor_step, (params, adam.init(params))),
    }
    for name, tx in methods(k).items():
        if only and name not in only:
            continue
        steps[f"{name}_params"] = params_step(tx)
        steps[f"{name}_rep"] = rep_step(tx)
    return model, steps


def results_table(payload: dict) -> str:
    """The RESULTS.md section of a full run: one row per method, its ratios at both levels."""
    ratios, tasks = payload["ratios"], payload["tasks"]
    names = sorted({key.split("_K")[0] for key in ratios if not key.startswith("floor_")})
    head = " | ".join(f"K={k} params | K={k} rep" for k in tasks)
    lines = [
        "## Multi-task method cost (`python -m benchmarks.mtl_speed`)",
        "",
        f"MMoE {NUM_DENSE} inputs, 8 experts 256->128, towers 64, batch {payload['batch']}, "
        f"{payload['backend']}; each ratio is the median over {payload['pairs_per_step']} pairs of a "
        "step's time over a plain summed-loss step run next to it. Targets: representation level "
        f"<= {REP_TARGET}; parameter level <= {PARAMS_OVER_FLOOR_TARGET} x the floor (one forward, "
        "K backward passes through the experts, summed). Plain step median: "
        + ", ".join(f"K={k} {payload['median_step_s'][f'plain_K{k}'] * 1e3:.0f} ms" for k in tasks)
        + ".",
        "",
        f"| method | {head} |",
        "|---" * (1 + 2 * len(tasks)) + "|",
        "| floor | " + " | ".join(f"{ratios[f'floor_K{k}']:.2f} | –" for k in tasks) + " |",
    ]
    for name in names:
        cells = []
        for k in tasks:
            cells += [f"{ratios[f'{name}_K{k}_params']:.2f}", f"{ratios[f'{name}_K{k}_rep']:.2f}"]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    lines += ["", f"All targets met: {'yes' if payload['targets_met'] else 'NO'}."]
    misses = missed(payload)
    if misses:
        lines.append("Missed: " + ", ".join(f"{key} {value:.2f}" for key, value in misses) + ".")
    if payload.get("merged_from"):
        lines.append(f"Rows measured in a second run: {payload['merged_from']['rows']}.")
    return "\n".join(lines)


def meets(level: str, ratio: float, floor: float) -> bool:
    """Whether a step's ratio meets its level's target (``floor``: the floor ratio at its K)."""
    return ratio <= (REP_TARGET if level == "rep" else PARAMS_OVER_FLOOR_TARGET * floor)


def missed(payload: dict) -> list[tuple[str, float]]:
    """The ``(step, ratio)`` pairs of a payload that miss their target."""
    ratios = payload["ratios"]
    return [
        (key, value)
        for key, value in sorted(ratios.items())
        if not key.startswith("floor_")
        and not meets(key.rsplit("_", 1)[1], value, ratios[f"floor_{key.split('_')[-2]}"])
    ]


def main(argv: list[str] | None = None) -> dict:
    p = _common.parser(__doc__.splitlines()[0])
    p.add_argument("--methods", nargs="*", default=None, help="subset of methods")
    p.add_argument("--tasks", nargs="*", type=int, default=[2, 4], help="task counts K")
    p.add_argument("--from-json", default=None, help="re-render RESULTS.md from a full run's JSON")
    p.add_argument(
        "--rounds", type=int, default=None, help="timed pairs per step (6 quick, 12 full)"
    )
    args = p.parse_args(argv)
    if args.from_json:
        payload = json.loads(pathlib.Path(args.from_json).read_text())
        _common.write_results_span("mtl-speed", results_table(payload))
        return payload
    batch = 2048
    rounds = args.rounds or (6 if args.quick else 12)
    only = args.methods or (list(QUICK_METHODS) if args.quick else None)
    print(
        f"[mtl_speed] MMoE {NUM_DENSE} -> 8 experts 256->128 -> towers 64, batch {batch}, "
        f"backend {jax.default_backend()}, devices {jax.device_count()}, {rounds} pairs per step"
    )
    start = time.perf_counter()
    ratios, ratios_of_minima, medians, minima, compiles = {}, {}, {}, {}, {}
    ok = True
    for k in _common.rows(args.tasks, "mtl_speed task counts"):
        model, steps = build(k, batch, only)
        print(f"[mtl_speed] K={k}: {models.param_count(model):,} parameters, {len(steps)} steps")
        paired = _common.time_paired(steps, rounds=rounds)
        timing = {name: _common.summarize_paired(rec) for name, rec in paired.items()}
        plain = timing["plain"]
        floor = timing["floor"]["ratio"]
        ratios[f"floor_K{k}"] = floor
        ratios_of_minima[f"floor_K{k}"] = timing["floor"]["min_s"] / plain["min_s"]
        for name, rec in timing.items():
            medians[f"{name}_K{k}"] = rec["median_s"]
            minima[f"{name}_K{k}"] = rec["min_s"]
            compiles[f"{name}_K{k}"] = rec["compile_s"]
            if name in ("plain", "floor"):
                continue
            method, level = name.rsplit("_", 1)
            key = f"{method}_K{k}_{level}"
            ratios[key] = ratio = rec["ratio"]
            ratios_of_minima[key] = rec["min_s"] / plain["min_s"]
            met = meets(level, ratio, floor)
            if level == "rep":
                note = f"<= {REP_TARGET}"
            else:
                note = f"<= {PARAMS_OVER_FLOOR_TARGET} x floor = {PARAMS_OVER_FLOOR_TARGET * floor:.2f}"
            ok &= met
            print(
                f"  K={k} {name:30s} median {rec['median_s'] * 1e3:7.1f} ms  ratio {ratio:5.2f}  "
                f"{'ok' if met else 'MISSED'} ({note})  ratio of minima "
                f"{ratios_of_minima[key]:5.2f}  compile {rec['compile_s']:.1f}s"
            )
        print(
            f"  K={k} plain median {plain['median_s'] * 1e3:.1f} ms (min {plain['min_s'] * 1e3:.1f}); "
            f"floor {floor:.2f} x plain"
        )
    payload = {
        "ratios": ratios,
        "targets": {"rep": REP_TARGET, "params_over_floor": PARAMS_OVER_FLOOR_TARGET},
        "targets_met": bool(ok),
        "ratios_of_minima": ratios_of_minima,
        "min_step_s": minima,
        "median_step_s": medians,
        "compile_s": compiles,
        "compilation_cache": _common.CACHE_DIR,  # compile_s is load time when warm
        "pairs_per_step": rounds,
        "tasks": list(args.tasks),
        "batch": batch,
        "backend": jax.default_backend(),
        "quick": bool(args.quick),
        "wall_s": time.perf_counter() - start,
    }
    _common.write_json(args.json, payload)
    if not args.quick and not args.methods and sorted(args.tasks) == [2, 4]:
        _common.write_results_span("mtl-speed", results_table(payload))
    return payload


if __name__ == "__main__":
    main()
