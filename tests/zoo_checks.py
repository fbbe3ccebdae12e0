"""Every zoo method's oracle checks: the NumPy ones of ``tests.zoo_cases`` and TorchJD's recorded outputs.

``CHECKS`` lists one ``Check`` per (method, reference), with the reference each
method's docstring names and the tolerance its test asserts; ``METHODS`` is
every public multi-task method of ``drgrad_jax``.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

import drgrad_jax as dj
from tests import mtl_references as ref
from tests import zoo_cases as zc
from tests.zoo_cases import TORCHJD, Check
from tests.zoo_inputs import FIXTURE, flat, once, params, tree
from tests.zoo_inputs import torchjd_cases as tjd


def _recorded(method, make, **extra):
    """One update per recorded case of a TorchJD aggregator: ``(ours, TorchJD's)``."""
    return [(once(make(f), f["g"], **extra), f["d"]) for f in tjd(method).values()]


def _tjd_aggregators(method):
    makes = {
        "mean": lambda f: dj.mean(),
        "constant": lambda f: dj.constant(jnp.asarray(f["weights"], jnp.float32)),
        "dualproj": lambda f: dj.dualproj(),
        "dualproj_pref": lambda f: dj.dualproj(jnp.asarray(f["pref"], jnp.float32)),
        "conflict_free": lambda f: dj.conflict_free(),
        "conflict_free_pref": lambda f: dj.conflict_free(jnp.asarray(f["pref"], jnp.float32)),
        "fairgrad": lambda f: dj.fairgrad(float(f["alpha"])),
        "trimmed_mean": lambda f: dj.trimmed_mean(int(f["trim"])),
        "krum": lambda f: dj.krum(int(f["n_byzantine"]), int(f["n_selected"]), squared=False),
    }
    out = []
    for name in (method, f"{method}_pref"):
        if name in makes:
            out += _recorded(name, makes[name])
    return out


def _tjd_dualproj_ridged():
    """Our box-QP solver on TorchJD's own problem: ``M / trace(M) + 1e-4 I``."""
    out = []
    for method in ("dualproj", "dualproj_pref"):
        for f in tjd(method).values():
            m = f["g"] @ f["g"].T
            ridged = m / np.trace(m) + 1e-4 * np.eye(len(m))
            pref = f.get("pref", np.full(len(m), 1.0 / len(m)))
            w = dj.dualproj_weights(
                jnp.asarray(ridged, jnp.float32), jnp.asarray(pref, jnp.float32)
            )
            out.append((np.asarray(w, np.float64) @ f["g"], f["d"]))
    return out


def _tjd_random_weighting():
    """TorchJD's ``Random``: softmax of its recorded normal draw, applied as constant weights."""
    out = []
    for f in tjd("random_weighting").values():
        z = f["z"]
        w = np.exp(z - z.max()) / np.exp(z - z.max()).sum()
        out.append((once(dj.constant(jnp.asarray(w, jnp.float32)), f["g"]), f["d"]))
    return out


def _tjd_graddrop():
    out = []
    for f in tjd("graddrop").values():
        u = f["u"].astype(np.float32)
        uniforms = {"a": jnp.asarray(u[:3]), "b": jnp.asarray(u[3:]).reshape(2, 2)}
        d = dj.graddrop_combine(tree(f["g"]), uniforms, jnp.asarray(f["leak"], jnp.float32))
        out.append((flat(d), f["d"]))
    return out


def _eye(k):
    """Task gradients e_k padded to the two-leaf tree: the update then IS the weight vector."""
    return np.eye(k, 7)


def _tjd_loss_scalarizer(name):
    out = []
    for f in tjd(name).values():
        k = len(f["losses"]) if f["losses"].ndim == 1 else f["losses"].shape[1]
        losses = jnp.asarray(f["losses"])
        if name == "geometric_mean":
            out.append((once(dj.geometric_mean(), _eye(k), losses=losses)[:k], f["w"]))
        elif name == "stch":
            tx = dj.stch(float(f["mu"]), jnp.asarray(f["pref"]), jnp.asarray(f["ideal"]))
            out.append((once(tx, _eye(k), losses=losses)[:k], f["w"]))
        elif name == "imtl_l":
            state = dj.IMTLLState(
                jnp.zeros([], jnp.int32), jnp.asarray(f["log_scale"], jnp.float32)
            )
            d, new = dj.imtl_l(1.0, num_tasks=k).update(tree(_eye(k)), state, losses=losses)
            out.append((flat(d)[:k], f["w"]))
            out.append((np.asarray(new.log_scales), f["log_scale"] - f["log_scale_grad"]))
        else:
            tx = dj.famo(float(f["lr"]), float(f["wd"]), num_tasks=k)
            state = tx.init(None)
            for t in range(len(f["w"])):
                d, state = tx.update({"w": jnp.eye(k)}, state, losses=losses[t])
                out.append((np.asarray(d["w"]), f["w"][t]))
                if t > 0:
                    out.append((np.asarray(state.logits), f["logits"][t - 1]))
    return out


def _tjd_stateful(name):
    makes = {
        "modo": lambda f, k: dj.modo(float(f["gamma"]), float(f["rho"]), num_tasks=k),
        "sdmgrad": lambda f, k: dj.sdmgrad(learning_rate=float(f["lr"]), num_tasks=k),
        "excess_mtl": lambda f, k: dj.excess_mtl(
            float(f["eta"]), num_tasks=k, n_warmup_steps=int(f["warmup"])
        ),
        "cr_mogm": lambda f, k: dj.cr_mogm(
            lambda m: dj.krum_weights(m, 0, 2, squared=False), float(f["alpha"]), num_tasks=k
        ),
    }
    out = []
    for f in tjd(name).values():
        k = f["g"].shape[1]
        tx = makes[name](f, k)
        step = jax.jit(lambda t, s, tx=tx: tx.update(t, s, params()))
        state = tx.init(params())
        for g, w in zip(f["g"], f["w"], strict=True):
            d, state = step(tree(g), state)
            out.append((flat(d), w @ g))
    return out


def _numpy(method, reference, tol, run, ks=zc.KS):
    return Check(method, f"NumPy, {reference}", tol, run, ks)


def _recorded_ks(method):
    """The task counts of TorchJD's recorded cases for ``method`` (case names ``k<K>...``)."""
    keys = [key.split("/") for key in np.load(FIXTURE).files]
    cases = {p[1] for p in keys if len(p) == 3 and p[0] in (method, f"{method}_pref")}
    return tuple(sorted({int(c[1:].split("_")[0]) for c in cases}))


def _torchjd(method, aggregator, tol, run):
    return Check(
        method, f"{TORCHJD} {aggregator}", tol, lambda k: run(), _recorded_ks(method), True
    )


def _simple(name, seed, reference, **kwargs):
    return zc.stateless(name, seed, reference, **kwargs)  # noqa: SLF001


CHECKS = [
    _numpy(
        "linear_scalarization",
        "sum of the task gradients",
        1e-5,
        _simple(
            "linear_scalarization",
            100,
            lambda g: ref.linear_scalarization(g, np.ones(len(g))),
            weights=None,
        ),
    ),
    _numpy(
        "pcgrad", "Yu et al. 2020, Alg. 1", 1e-5, lambda k: zc.ordered("pcgrad", 200, k, seed=3)
    ),
    _numpy(
        "gradvac",
        "Wang et al. 2021, Eq. 3 / Alg. 1",
        1e-5,
        lambda k: zc.ordered("gradvac", 300, k, beta=0.3, num_tasks=k, seed=1),
    ),
    _numpy("cagrad", "Liu et al. 2021, Eq. 2 (primal, SLSQP)", 1e-5, zc.cagrad),
    _numpy("mgda", "Sener & Koltun 2018, Eq. 3 (SLSQP)", 1e-5, _simple("mgda", 500, ref.mgda)),
    _numpy(
        "nash_mtl",
        "Navon et al. 2022, Eq. 4",
        1e-5,
        _simple("nash_mtl", 600, ref.nash_mtl, eps=0.0),
    ),
    _numpy(
        "imtl_g", "Liu et al. 2021, Eq. 6-7 (closed form)", 1e-5, _simple("imtl_g", 700, ref.imtl_g)
    ),
    _numpy(
        "aligned_mtl",
        "Senushkin et al. 2023, Eq. 9-10",
        1e-5,
        _simple("aligned_mtl", 800, ref.aligned_mtl),
    ),
    _numpy("upgrad", "Quinton & Rey 2024, Eq. 5 (SLSQP)", 1e-5, _simple("upgrad", 900, ref.upgrad)),
    _numpy(
        "dwa",
        "Liu, Johns & Davison 2019, Eq. 7",
        1e-5,
        lambda k: zc.loss_sequence(
            "dwa", 1000, k, lambda g, h: ref.dwa(g, h, 1.5), temperature=1.5
        ),
    ),
    _numpy(
        "uncertainty_weighting",
        "Kendall et al. 2018, Eq. 7 (LibMTL form)",
        1e-5,
        lambda k: zc.loss_sequence(
            "uncertainty_weighting", 1100, k, zc.uw_reference, learning_rate=0.1
        ),
    ),
    _numpy("mean", "1/K sum of the task gradients", 1e-5, lambda k: zc.mean_or_constant("mean", k)),
    _torchjd("mean", "Mean", 1e-5, lambda: _tjd_aggregators("mean")),
    _numpy("constant", "sum w_k g_k", 1e-5, lambda k: zc.mean_or_constant("constant", k)),
    _torchjd("constant", "Constant", 1e-5, lambda: _tjd_aggregators("constant")),
    _numpy(
        "random_weighting",
        "Lin et al. 2022, Alg. 2",
        1e-5,
        lambda k: zc.random("random_weighting", k),
    ),
    _torchjd("random_weighting", "Random", 1e-5, _tjd_random_weighting),
    _numpy("rlw", "Lin et al. 2022, Alg. 2", 1e-5, lambda k: zc.random("rlw", k)),
    _numpy(
        "dualproj",
        "Lopez-Paz & Ranzato 2017, Eq. 11 on the mean (SLSQP)",
        1e-5,
        lambda k: zc.with_pref("dualproj", 2200, k),
    ),
    _torchjd("dualproj", "DualProj (its 1e-4 ridge)", 3e-3, lambda: _tjd_aggregators("dualproj")),
    _torchjd(
        "dualproj", "DualProj, dualproj_weights on its ridged Gramian", 2e-5, _tjd_dualproj_ridged
    ),
    _numpy(
        "conflict_free",
        "Liu, Chu & Thuerey 2025, Eq. 2",
        2e-5,
        lambda k: zc.with_pref("conflict_free", 2300, k),
    ),
    _torchjd("conflict_free", "ConFIG", 2e-5, lambda: _tjd_aggregators("conflict_free")),
    _numpy("fairgrad", "Ban & Ji 2024, Eq. 4 (least squares)", 2e-5, zc.fairgrad),
    _torchjd("fairgrad", "FairGrad", 1e-4, lambda: _tjd_aggregators("fairgrad")),
    _numpy("trimmed_mean", "Yin et al. 2018, Def. 2", 1e-5, zc.trimmed_mean),
    _torchjd("trimmed_mean", "TrimmedMean", 1e-5, lambda: _tjd_aggregators("trimmed_mean")),
    _numpy("krum", "Blanchard et al. 2017, Sec. 4", 1e-5, zc.krum, (3, 4)),
    _torchjd("krum", "Krum", 1e-5, lambda: _tjd_aggregators("krum")),
    _numpy("graddrop", "Chen et al. 2020, Alg. 1", 1e-5, zc.graddrop),
    _torchjd("graddrop", "GradDrop", 1e-5, _tjd_graddrop),
    _numpy("imtl_l", "Liu et al. 2021, Eq. 8 (finite differences)", 1e-5, zc.imtl_l),
    _torchjd("imtl_l", "IMTLL", 1e-5, lambda: _tjd_loss_scalarizer("imtl_l")),
    _numpy(
        "geometric_mean",
        "Chennupati et al. 2019, Eq. 3 (finite differences)",
        1e-5,
        lambda k: zc.loss_scalarizer("geometric_mean", k),
    ),
    _torchjd(
        "geometric_mean", "GeometricMean", 1e-5, lambda: _tjd_loss_scalarizer("geometric_mean")
    ),
    _numpy(
        "stch",
        "Lin et al. 2024, Eq. 7 (finite differences)",
        1e-5,
        lambda k: zc.loss_scalarizer("stch", k),
    ),
    _torchjd("stch", "STCH", 1e-5, lambda: _tjd_loss_scalarizer("stch")),
    _numpy("famo", "Liu et al. 2023, Alg. 1", 1e-5, zc.famo),
    _torchjd("famo", "FAMO", 1e-5, lambda: _tjd_loss_scalarizer("famo")),
    _numpy("db_mtl", "Lin et al. 2023, Alg. 1 (LibMTL DB_MTL)", 2e-5, zc.db_mtl),
    _numpy("gradnorm", "Chen et al. 2018, Eq. 1-2", 1e-5, zc.gradnorm),
    _numpy("modo", "Chen et al. 2024, Alg. 1", 1e-5, lambda k: zc.stochastic("modo", 3300, k)),
    _torchjd("modo", "MoDoWeighting", 2e-5, lambda: _tjd_stateful("modo")),
    _numpy("moco", "Fernando et al. 2023, Alg. 1", 1e-5, lambda k: zc.stochastic("moco", 3400, k)),
    _numpy(
        "sdmgrad", "Xiao, Ban & Ji 2023, Alg. 1", 2e-5, lambda k: zc.stochastic("sdmgrad", 3500, k)
    ),
    _torchjd("sdmgrad", "SDMGradWeighting", 2e-5, lambda: _tjd_stateful("sdmgrad")),
    _numpy(
        "excess_mtl",
        "He et al. 2024, Eq. 6-9",
        1e-5,
        lambda k: zc.stochastic("excess_mtl", 3600, k),
    ),
    _torchjd("excess_mtl", "ExcessMTLWeighting", 2e-5, lambda: _tjd_stateful("excess_mtl")),
    _numpy(
        "cr_mogm",
        "Zhou et al. 2022, Alg. 2 over MGDA (SLSQP)",
        1e-4,
        lambda k: zc.stochastic("cr_mogm", 3700, k),
    ),
    _numpy("cr_mogm", "Zhou et al. 2022, Alg. 2, alpha=0 over DualProj", 1e-5, zc.cr_mogm_dualproj),
    _torchjd("cr_mogm", "CRMOGMWeighting(Krum)", 2e-5, lambda: _tjd_stateful("cr_mogm")),
]

METHODS = tuple(dict.fromkeys(c.method for c in CHECKS))
