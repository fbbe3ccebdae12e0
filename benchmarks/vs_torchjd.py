"""Is this library faster than PyTorch + TorchJD on the same model? MMoE, batch 2048, K in {2, 4}.

The ``mtl_speed`` model (``drgrad_jax.models.MMoE``, 512 dense inputs, 8
experts 512 -> 256 -> 128, towers with one hidden layer of 64, float32,
per-task binary cross-entropy) is built once in JAX by ``mtl_speed.build`` and
once in PyTorch with the same weights copied across (``benchmarks/_torch_mmoe.py``),
and the same training steps are timed in pairs, ours next to theirs, in one
process:

* ``plain``: the summed-loss step with Adam (lr 1e-3). Ours: ``jax.grad`` of
  the summed losses, ``optax.adam``. Theirs: ``loss.backward()``,
  ``torch.optim.Adam``.
* ``<method>_params``: parameter level. Ours: ``per_task_grads`` with the
  model's task labels, then ``drgrad_jax.<method>()`` chained with Adam.
  Theirs: TorchJD's multi-task step, ``torchjd.autojac.mtl_backward`` with
  the expert outputs as features, then ``jac_to_grad`` with TorchJD's
  aggregator on every shared (expert) parameter, then Adam.
* ``<method>_rep``: our representation level against that same TorchJD
  step, which is what a TorchJD user runs for the method (its multi-task API
  aggregates at the shared parameters). Ours: at the model's shared
  representation (``MMoE.trunk``: the gates' input and the expert outputs),
  ``per_task_rep_grads``, the method on the K cotangents there, ONE VJP back
  through the experts (as ``mtl_speed``'s ``*_rep`` rows).
* ``<method>_rep_vs_rep``: our representation level against TorchJD made to
  aggregate at the same representation (``mtl_backward`` with the
  representation as the features and as the shared "parameters",
  ``jac_to_grad`` there, one ``backward`` of the result through the experts):
  the same maths on both sides, so it has no target; it tells whether a gap
  comes from the machinery of a step or from the level it works at.

Methods: UPGrad, PCGrad and MGDA (TorchJD's ``UPGrad()``, ``PCGrad()``,
``MGDA()`` with their defaults; ours ``upgrad()``, ``pcgrad()``, ``mgda()``).
PyTorch runs eagerly (TorchJD's ``mtl_backward`` does not work on compiled
functions) with ``torch.set_num_threads`` set to this machine's cores, the
threads XLA's CPU client uses for ours (``--torch-threads`` changes it); the
first line says how many. On a machine busy with other work PyTorch's
OpenMP threads lose far more time than XLA's, which tilts every ratio
towards ours: the run times PyTorch's plain step with its threads and with
one (``env["torch_plain_s_by_threads"]``, next to the load average) and warns
when more threads are slower.

A ratio is our time over theirs: the median, over ``--rounds`` pairs, of our
step's time over theirs timed right next to it (alternating which runs first),
so the drift of a shared machine cancels. ``compile_s`` is the first call:
tracing and compiling (or loading from the persistent cache) for ours, the
first eager step for theirs.

Targets, reported and not asserted: plain ratio <= 1; parameter level <= 1;
representation level <= 1 / 1.5 (ours at least 1.5x faster than TorchJD's
step), at K = 2 and 4.

Without PyTorch and TorchJD it prints how to install them (the ``compare``
extra, ``pip install -e ".[compare]"``) and exits 0.

Usage: ``python -m benchmarks.vs_torchjd [--quick] [--json PATH] [--methods ...] [--tasks ...]
[--rounds N] [--tiny] [--torch-threads N]``
"""

from __future__ import annotations

import importlib.metadata
import os
import platform
import statistics
import time

import jax

from benchmarks import _common, mtl_speed
from drgrad_jax import models

METHODS = ("upgrad", "pcgrad", "mgda")
# Pair name suffix: (our step, TorchJD's step, target for our time over theirs).
LEVELS = {
    "params": ("params", "params", 1.0),
    "rep": ("rep", "params", 1 / 1.5),
    "rep_vs_rep": ("rep", "rep", None),
}
FULL = mtl_speed.Size()
TINY = mtl_speed.Size(num_dense=12, num_experts=3, expert_hidden=(10, 6), tower=(4,))
MISSING = (
    "[vs_torchjd] skipped: PyTorch and TorchJD are not installed ({error}). They come with "
    'the compare extra: pip install -e ".[compare]"'
)


def load_torch():
    """``(torch, _torch_mmoe)``, or ``None`` with the reason when the compare extra is absent."""
    try:
        import torch
        import torchjd  # noqa: F401

        from benchmarks import _torch_mmoe
    except ImportError as e:
        return None, str(e)
    return (torch, _torch_mmoe), None


def build(k: int, batch: int, methods=METHODS, size=FULL, seed: int = 0) -> dict:
    """``{name: {"ours": (fn, args), "theirs": (fn, args)}}`` for ``plain`` and every method x level."""
    loaded, error = load_torch()
    if error:
        raise ImportError(error)
    torch_side = loaded[1]
    model, ours = mtl_speed.build(k, batch, list(methods), seed, size)
    dense, y = mtl_speed.make_batch(k, batch, size, seed)
    params = jax.device_get(models.params_of(model)[1])
    theirs = torch_side.steps(params, jax.device_get(dense), jax.device_get(y), methods)
    pairs = {"plain": {"ours": ours["plain"], "theirs": theirs["plain"]}}
    for method in methods:
        for suffix, (mine, other, _) in LEVELS.items():
            pairs[f"{method}_{suffix}"] = {
                "ours": ours[f"{method}_{mine}"],
                "theirs": theirs[f"{method}_{other}"],
            }
    return pairs


def target_of(name: str) -> float | None:
    """The most our time over theirs may be for pair ``name``; ``None``: no target."""
    return 1.0 if name == "plain" else LEVELS[name.split("_", 1)[1]][2]


def _verdict(name: str, ratio: float) -> tuple[bool | None, str]:
    target = target_of(name)
    if target is None:
        return None, "no target: the same maths on both sides"
    met = ratio <= target
    return met, f"<= {target:.2f}: {'ok' if met else 'MISSED'}"


def contention(torch, plain_step, calls: int = 3) -> dict:
    """PyTorch's plain step time (median of ``calls``) with its threads and with one thread.

    On a quiet machine more threads are faster. When other work holds a core,
    PyTorch's OpenMP threads wait at every parallel region for the one that
    lost its core, and the step can become several times slower than with one
    thread, while XLA's work-stealing pool loses far less: every ratio then
    tilts towards ours. The run warns when that is measured.
    """
    threads = torch.get_num_threads()
    out = {}
    for n in (threads, 1):
        torch.set_num_threads(n)
        plain_step()
        out[str(n)] = statistics.median(_timed(plain_step) for _ in range(calls))
    torch.set_num_threads(threads)
    if threads > 1 and out[str(threads)] > out["1"]:
        print(
            f"[vs_torchjd] warning: PyTorch's plain step takes {out[str(threads)] * 1e3:.0f} ms "
            f"with {threads} threads and {out['1'] * 1e3:.0f} ms with one: other work on this "
            "machine stalls its OpenMP threads, so the ratios favour ours. Compare on a quiet "
            "machine."
        )
    return out


def _timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def env(torch, threads: int) -> dict:
    """Versions, threads and the machine's load, to read the times against."""
    version = importlib.metadata.version
    return {
        "python": platform.python_version(),
        "jax": jax.__version__,
        "flax": version("flax"),
        "optax": version("optax"),
        "torch": torch.__version__,
        "torchjd": version("torchjd"),
        "backend": jax.default_backend(),
        "cores": threads,
        "torch_threads": torch.get_num_threads(),
        "load_average_1min": os.getloadavg()[0],
        "compilation_cache": _common.CACHE_DIR,
    }


def main(argv: list[str] | None = None) -> dict:
    p = _common.parser(__doc__.splitlines()[0])
    p.add_argument("--methods", nargs="*", default=list(METHODS), choices=METHODS)
    p.add_argument("--tasks", nargs="*", type=int, default=[2, 4], help="task counts K")
    p.add_argument(
        "--rounds", type=int, default=None, help="timed pairs per step (4 quick, 12 full)"
    )
    p.add_argument(
        "--tiny", action="store_true", help="tiny widths: a smoke run, times meaningless"
    )
    p.add_argument(
        "--torch-threads", type=int, default=None, help="PyTorch's threads (default: the cores)"
    )
    args = p.parse_args(argv)
    loaded, error = load_torch()
    if error:
        print(MISSING.format(error=error))
        payload = {"skipped": MISSING.format(error=error)}
        _common.write_json(args.json, payload)
        return payload
    torch = loaded[0]
    threads = len(os.sched_getaffinity(0))
    torch.set_num_threads(args.torch_threads or threads)
    batch, size = (32, TINY) if args.tiny else (2048, FULL)
    rounds = args.rounds or (4 if args.quick else 12)
    print(
        f"[vs_torchjd] MMoE {size.num_dense} -> {size.num_experts} experts "
        f"{'->'.join(map(str, size.expert_hidden))} -> towers {size.tower}, batch {batch}; "
        f"torch {torch.__version__} eager with {torch.get_num_threads()} threads (XLA uses "
        f"the {threads} cores), jax {jax.__version__} on {jax.default_backend()}; "
        f"{rounds} pairs per step"
    )
    start = time.perf_counter()
    info = env(torch, threads)
    ratios, times, compiles, minima = {}, {}, {}, {}
    met = {}
    for k in args.tasks:
        pairs = build(k, batch, tuple(args.methods), size)
        if "torch_plain_s_by_threads" not in info:
            info["torch_plain_s_by_threads"] = contention(torch, pairs["plain"]["theirs"][0])
        first = {}
        for name in _common.rows(pairs, f"K={k} pairs (ours vs theirs)", unit="pair"):
            rec = _common.time_paired(pairs[name], rounds=rounds, baseline="theirs")
            ours, theirs = (_common.summarize_paired(rec[side]) for side in ("ours", "theirs"))
            key = f"{name}_K{k}"
            ratios[key] = ours["ratio"]
            minima[key] = ours["min_s"] / theirs["min_s"]
            times[key] = {"ours_s": ours["median_s"], "theirs_s": theirs["median_s"]}
            # A step in two pairs compiles (or warms up) once: keep its first call's time.
            compiles[key] = {
                f"{side}_s": first.setdefault(id(pairs[name][side][0]), rec[side]["compile_s"])
                for side in ("ours", "theirs")
            }
            verdict, note = _verdict(name, ours["ratio"])
            if verdict is not None:
                met[key] = verdict
            print(
                f"  {key:22s} ours {ours['median_s'] * 1e3:7.1f} ms  theirs "
                f"{theirs['median_s'] * 1e3:7.1f} ms  ratio {ours['ratio']:5.2f} ({note})  "
                f"ratio of minima {minima[key]:5.2f}  compile {compiles[key]['ours_s']:.1f}s "
                f"(theirs' first step {compiles[key]['theirs_s']:.2f}s)"
            )
    info["load_average_1min_end"] = os.getloadavg()[0]
    payload = {
        "ratios": ratios,
        "times": times,
        "compile_s": compiles,
        "env": info,
        "ratios_of_minima": minima,
        "targets": {"plain": 1.0, **{sfx: t for sfx, (*_, t) in LEVELS.items() if t}},
        "targets_met": met,
        "all_targets_met": all(met.values()),
        "pairs_per_step": rounds,
        "tasks": list(args.tasks),
        "batch": batch,
        "quick": bool(args.quick),
        "tiny": bool(args.tiny),
        "wall_s": time.perf_counter() - start,
    }
    print(table(payload))
    _common.write_json(args.json, payload)
    return payload


def table(payload: dict) -> str:
    """Markdown: one row per step, our time over theirs at each K (and whether its target holds)."""
    tasks, ratios, met = payload["tasks"], payload["ratios"], payload["targets_met"]
    names = list(dict.fromkeys(key.rsplit("_K", 1)[0] for key in ratios))
    lines = [
        "| step | target | " + " | ".join(f"K={k} ours / theirs" for k in tasks) + " |",
        "|---" * (2 + len(tasks)) + "|",
    ]
    for name in names:
        cells = []
        for k in tasks:
            key, t = f"{name}_K{k}", payload["times"][f"{name}_K{k}"]
            cells.append(
                f"{ratios[key]:.2f} ({t['ours_s'] * 1e3:.0f} / {t['theirs_s'] * 1e3:.0f} ms)"
                + ("" if met.get(key, True) else " MISSED")
            )
        target = target_of(name)
        bound = "–" if target is None else f"<= {target:.2f}"
        lines.append(f"| {name} | {bound} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
