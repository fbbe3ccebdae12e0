"""Each zoo method's oracle comparisons as data: the pairs (ours, reference) and the tolerance.

One ``Check`` per (method, reference): ``run(k)`` builds seeded inputs and
returns ``[(ours, reference), ...]``; ``tol`` is the tolerance
``tests/test_zoo_oracles.py`` asserts on every pair through ``tests.zoo_inputs.close``.
Checks against TorchJD's recorded outputs (``recorded``) take no K: they run
over every recorded case, at the task counts ``ks`` it holds. ``benchmarks.zoo_agreement`` tabulates them.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np

import drgrad_jax as dj
from drgrad_jax._src.graddrop import graddrop_uniforms
from drgrad_jax._src.pcgrad import random_task_orders
from tests import mtl_references as ref
from tests.zoo_inputs import apply, flat, jitted, once, params, random_g, sequence, tree

TRIALS = 4
KS = (2, 3, 4)
TORCHJD = "TorchJD 0.18"


@dataclasses.dataclass(frozen=True)
class Check:
    """One method's comparison with one reference."""

    method: str
    reference: str
    tol: float
    run: Callable[[int | None], list[tuple[np.ndarray, np.ndarray]]]
    ks: tuple[int, ...] = KS
    recorded: bool = False  # TorchJD's recorded cases: ``run(None)`` once, ks as recorded


def _each(base, k, fn, trials=TRIALS):
    rng = np.random.default_rng(base + k)
    return [fn(rng, random_g(rng, k)) for _ in range(trials)]


def stateless(name, base, reference, **kwargs):
    return lambda k: _each(base, k, lambda rng, g: (apply(name, g, **kwargs)[0], reference(g)))


def ordered(name, base, k, **kwargs):
    """PCGrad / GradVac: the transform's own task orders, replayed into the reference."""
    rng = np.random.default_rng(base + k)
    tx, _ = jitted(name, **kwargs)
    state, targets, out = tx.init(params()), np.zeros((k, k)), []
    for _ in range(TRIALS):
        g = random_g(rng, k)
        orders = np.asarray(random_task_orders(jax.random.split(state.key)[1], k))
        d, state = apply(name, g, state, **kwargs)
        if name == "pcgrad":
            out.append((d, ref.pcgrad(g, orders)))
        else:
            want, targets = ref.gradvac(g, orders, targets, kwargs["beta"])
            out += [(d, want), (np.asarray(state.targets), targets)]
    return out


def cagrad(k):
    rng = np.random.default_rng(400 + k)
    return [
        (apply("cagrad", g, c=c)[0], ref.cagrad(g, c))
        for c in (0.0, 0.2, 0.5, 1.3)
        for g in [random_g(rng, k)]
    ]


def loss_sequence(name, base, k, want_of, **kwargs):
    """DWA / uncertainty weighting: updates on random losses against the reference weights."""
    rng = np.random.default_rng(base + k)
    state, history, out = None, [], []
    for _ in range(TRIALS):
        g = random_g(rng, k)
        losses = rng.uniform(0.2, 2.0, size=k).astype(np.float32)
        d, state = apply(name, g, state, {"losses": jnp.asarray(losses)}, num_tasks=k, **kwargs)
        out.append((d, want_of(g, history)))
        history.append(losses.astype(np.float64))
    return out


def uw_reference(g, history, lr=0.1):
    s = np.zeros(g.shape[0])
    for losses in history:
        s = s - lr * 0.5 * (1 - np.exp(-s) * losses)
    return ref.uncertainty_weighting(g, s)


def mean_or_constant(which, k):
    rng = np.random.default_rng(2000 + k)
    out = []
    for _ in range(TRIALS):
        g = random_g(rng, k)
        w = rng.uniform(0.1, 2.0, size=k).astype(np.float32)
        if which == "mean":
            out.append((apply("mean", g)[0], ref.mean(g)))
        else:
            out.append((once(dj.constant(jnp.asarray(w)), g), ref.linear_scalarization(g, w)))
    return out


def random(name, k):
    rng = np.random.default_rng(2100 + k)
    state, out = None, []
    for _ in range(TRIALS):
        g = random_g(rng, k)
        key = dj.random_weighting(seed=5).init(None).key if state is None else state.key
        z = np.asarray(jax.random.normal(jax.random.split(key)[1], (k,)), np.float64)
        d, state = apply(name, g, state, seed=5)
        out.append((d, ref.random_weighting(g, z)))
    return out


def with_pref(name, base, k):
    """DualProj / ConFIG with the default and with a random preference vector."""
    rng = np.random.default_rng(base + k)
    reference = getattr(ref, name)
    out = []
    for _ in range(TRIALS):
        g = random_g(rng, k)
        default = np.full(k, 1.0 / k) if name == "dualproj" else np.ones(k)
        out.append((apply(name, g)[0], reference(g, default)))
        pref = rng.uniform(0.1, 1.0, size=k).astype(np.float32)
        out.append((once(getattr(dj, name)(jnp.asarray(pref)), g), reference(g, pref)))
    return out


def fairgrad(k):
    out = []
    for alpha in (0.0, 0.5, 1.0, 2.0, 5.0):
        rng = np.random.default_rng(2400 + k)
        for _ in range(TRIALS):
            g = random_g(rng, k)
            out.append((apply("fairgrad", g, alpha=alpha)[0], ref.fairgrad(g, alpha)))
    return out


def trimmed_mean(k):
    rng = np.random.default_rng(2500 + k)
    out = []
    for b in range(0, (k - 1) // 2 + 1):
        g = random_g(rng, k)
        out.append((apply("trimmed_mean", g, trim_number=b)[0], ref.trimmed_mean(g, b)))
    return out


def krum(k):
    out = []
    for squared in (True, False):
        rng = np.random.default_rng(2600 + k)
        for _ in range(TRIALS):
            g = random_g(rng, k)
            g[-1] *= 20.0  # one outlier
            for f in range(0, k - 2):
                for m in (1, 2):
                    kw = {"n_byzantine": f, "n_selected": m, "squared": squared}
                    out.append((apply("krum", g, **kw)[0], ref.krum(g, f, m, squared)))
    return out


def graddrop(k):
    rng = np.random.default_rng(2700 + k)
    leak = rng.uniform(0.0, 0.5, size=k).astype(np.float32)
    out = []
    for use_leak in (False, True):
        tx = dj.graddrop(jnp.asarray(leak) if use_leak else None, seed=4)
        step = jax.jit(lambda t, s, tx=tx: tx.update(t, s, params()))
        state = tx.init(None)
        for _ in range(TRIALS):
            g = random_g(rng, k)
            u = flat(graddrop_uniforms(jax.random.split(state.key)[1], tree(g)))
            d, state = step(tree(g), state)
            want = ref.graddrop(g, u.astype(np.float64), leak if use_leak else np.zeros(k))
            out.append((flat(d), want))
    return out


def imtl_l(k, lr=0.1):
    rng = np.random.default_rng(2800 + k)
    state, s, out = None, np.zeros(k), []
    for _ in range(TRIALS):
        g = random_g(rng, k)
        losses = rng.uniform(0.2, 2.0, size=k).astype(np.float32)
        extra = {"losses": jnp.asarray(losses)}
        d, state = apply("imtl_l", g, state, extra, learning_rate=lr, num_tasks=k)
        out.append((d, ref.loss_weights(lambda L, s=s: ref.imtl_l_loss(L, s), losses) @ g))
        s = s - lr * ref.loss_weights(lambda s_, L=losses: ref.imtl_l_loss(L, s_), s)
        out.append((np.asarray(state.log_scales), s))
    return out


def loss_scalarizer(name, k):
    """GLS and STCH (default, and three mu with random preference and ideal point)."""
    rng = np.random.default_rng(2900 + k)
    out = []
    for _ in range(TRIALS):
        g = random_g(rng, k)
        losses = rng.uniform(0.2, 2.0, size=k).astype(np.float32)
        extra = {"losses": jnp.asarray(losses)}
        if name == "geometric_mean":
            d, _ = apply("geometric_mean", g, None, extra)
            out.append((d, ref.loss_weights(ref.geometric_mean_loss, losses) @ g))
        for mu in (0.05, 0.5, 2.0):
            pref = rng.uniform(0.1, 1.0, size=k).astype(np.float32)
            ideal = rng.uniform(0.0, 0.1, size=k).astype(np.float32)
            if name == "stch":
                tx = dj.stch(mu, jnp.asarray(pref), jnp.asarray(ideal))
                w = ref.loss_weights(
                    lambda L, mu=mu, p=pref, z=ideal: ref.stch_loss(L, mu, p, z), losses
                )
                out.append((once(tx, g, losses=extra["losses"]), w @ g))
        if name == "stch":
            d, _ = apply("stch", g, None, extra, mu=0.3)
            w = ref.loss_weights(lambda L: ref.stch_loss(L, 0.3, np.full(k, 1 / k), 0.0), losses)
            out.append((d, w @ g))
    return out


def famo(k):
    rng = np.random.default_rng(3000 + k)
    seq = rng.uniform(0.2, 2.0, size=(6, k)).astype(np.float32)
    b = rng.uniform(0.0, 0.1, size=k).astype(np.float32)
    want_w, want_logits = ref.famo(seq, lr=0.1, weight_decay=1e-2, b=b.astype(np.float64))
    tx = dj.famo(0.1, 1e-2, jnp.asarray(b), num_tasks=k)
    step = jax.jit(lambda s, L: tx.update({"w": jnp.eye(k)}, s, losses=L))
    state, out = tx.init(None), []
    for t in range(len(seq)):
        d, state = step(state, jnp.asarray(seq[t]))
        out += [(np.asarray(d["w"]), want_w[t]), (np.asarray(state.logits), want_logits[t])]
    return out


def db_mtl(k):
    rng = np.random.default_rng(3100 + k)
    grads = [random_g(rng, k) for _ in range(TRIALS)]
    losses = [rng.uniform(0.2, 2.0, size=k).astype(np.float32) for _ in range(TRIALS)]
    want = ref.db_mtl(grads, [x.astype(np.float64) for x in losses], beta=0.7, beta_sigma=0.5)
    state, out = dj.db_mtl(0.7, 0.5, num_tasks=k).init(params()), []
    for g, L, expected in zip(grads, losses, want, strict=True):
        extra = {"losses": jnp.asarray(L)}
        d, state = apply("db_mtl", g, state, extra, beta=0.7, beta_sigma=0.5, num_tasks=k)
        out.append((d, expected))
    return out


def gradnorm(k):
    out = []
    for layer in (None, "b"):
        rng = np.random.default_rng(3200 + k)
        grads = [random_g(rng, k) for _ in range(6)]
        losses = [rng.uniform(0.2, 2.0, size=k).astype(np.float32) for _ in range(6)]
        layer_grads = [g if layer is None else g[:, 3:] for g in grads]
        want = ref.gradnorm(layer_grads, [x.astype(np.float64) for x in losses], 1.5, 0.05)
        state = None
        kw = {"alpha": 1.5, "learning_rate": 0.05, "num_tasks": k, "layer": layer}
        for g, L, w in zip(grads, losses, want, strict=True):
            d, state = apply("gradnorm", g, state, {"losses": jnp.asarray(L)}, **kw)
            out.append((d, w @ g))
    return out


def stochastic(name, base, k):
    """MoDo, MoCo, SDMGrad, ExcessMTL, CR-MOGM over a sequence of random task gradients."""
    rng = np.random.default_rng(base + k)
    n = 5 if name == "excess_mtl" else TRIALS
    g_seq = [random_g(rng, k) for _ in range(n)]
    if name == "modo":
        got, _ = sequence("modo", g_seq, gamma=0.2, rho=0.1, num_tasks=k)
        want = [lam @ g for lam, g in zip(ref.modo(g_seq, 0.2, 0.1), g_seq, strict=True)]
    elif name == "moco":
        got, _ = sequence("moco", g_seq, beta=0.6, gamma=0.2, rho=0.05, num_tasks=k)
        want = ref.moco(g_seq, 0.6, 0.2, 0.05, 0.5, 0.5)
    elif name == "sdmgrad":
        pref = rng.uniform(0.1, 1.0, size=k).astype(np.float32)
        kw = {"lam": 0.4, "learning_rate": 1.0, "num_tasks": k, "pref_vector": jnp.asarray(pref)}
        got, _ = sequence("sdmgrad", g_seq, **kw)
        c = ref.sdmgrad(g_seq, 0.4, 1.0, 0.5, 20, pref.astype(np.float64))
        want = [ci @ g for ci, g in zip(c, g_seq, strict=True)]
    elif name == "excess_mtl":
        got, want = [], []
        for warmup in (0, 2):
            kw = {"robust_step_size": 0.5, "num_tasks": k, "n_warmup_steps": warmup}
            got += sequence("excess_mtl", g_seq, **kw)[0]
            w = ref.excess_mtl(g_seq, 0.5, warmup)
            want += [wi @ g for wi, g in zip(w, g_seq, strict=True)]
    else:
        got, _ = sequence("cr_mogm", g_seq, alpha=0.7, num_tasks=k)
        lam = ref.cr_mogm(g_seq, 0.7, ref.mgda_weights)
        want = [li @ g for li, g in zip(lam, g_seq, strict=True)]
    return list(zip(got, want, strict=True))


def cr_mogm_dualproj(k):
    rng = np.random.default_rng(3700 + k)
    g_seq = [random_g(rng, k) for _ in range(TRIALS)]
    got, _ = sequence("cr_mogm", g_seq, weighting="dualproj", alpha=0.0, num_tasks=k)
    return [(d, ref.dualproj(g, np.full(k, 1.0 / k))) for d, g in zip(got, g_seq, strict=True)]
