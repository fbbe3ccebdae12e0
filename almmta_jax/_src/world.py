"""The simulated CDP world: items, users, confounded exposure, the mediator and the proxy.

Helpers of ``simulate_cdp`` (see docs/almmta.md, *CDP simulator* and *Simulator
proxy*); everything is NumPy float64 drawn from the seed's generator, except the
draws of the leak and alignment switches, which come from child streams of their own.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, NamedTuple

import numpy as np

from almmta_jax._src.truth import sigmoid

if TYPE_CHECKING:
    from almmta_jax._src.simulate import SimConfig


class World(NamedTuple):
    item_e: np.ndarray
    item_cluster: np.ndarray
    item_music: np.ndarray
    item_template: np.ndarray
    item_b: np.ndarray
    item_s: np.ndarray
    item_d: np.ndarray
    item_ce: np.ndarray  # c^T e per item
    item_sw: np.ndarray  # the confounder's exposure loading, standardized c_w^T e
    c: np.ndarray
    c_w: np.ndarray
    A: np.ndarray  # [d_e, d_x]
    D: np.ndarray  # [d_x, d_e]
    theta_x: np.ndarray


def _standardize(v):
    return (v - v.mean()) / v.std()


def confounder_direction(e, c, rho: float, rng: np.random.Generator) -> np.ndarray:
    """``c_w = rho c^ + sqrt(1 - rho^2) c^perp`` in the catalog's own geometry.

    Hats and orthogonality are taken in the inner product ``<u, v> = u^T Sigma v``
    with ``Sigma`` the covariance of the item embeddings ``e``, so ``c_w^T e`` has
    unit variance over the catalog and correlation exactly ``rho`` with ``c^T e``
    (docs/almmta.md, *CDP simulator*). ``c^perp`` is the part of a standard normal
    draw from ``rng`` orthogonal to ``c``; ``rng`` is a stream of its own, so no
    other draw of the world depends on it. ``rho = 1`` returns ``c`` itself.
    """
    if rho == 1.0:
        return c
    sigma = np.cov(e, rowvar=False, bias=True)
    norm = lambda v: np.sqrt(v @ sigma @ v)
    c_hat = c / norm(c)
    g = rng.standard_normal(c.shape[0])
    g -= (g @ sigma @ c_hat) * c_hat
    return rho * c_hat + np.sqrt(1.0 - rho**2) * g / norm(g)


def make_world(cfg: SimConfig, rng: np.random.Generator, align_rng: np.random.Generator) -> World:
    """Items and the world's weights; ``align_rng`` draws only the confounder's off-axis direction."""
    n, k, de, dx = cfg.n_items, cfg.n_clusters, cfg.d_e, cfg.d_x
    cluster = rng.integers(0, k, size=n)
    centroids = rng.standard_normal((k, de))
    e = (centroids[cluster] + 0.5 * rng.standard_normal((n, de))) / np.sqrt(1.25)
    # Model inputs are stored in float32; round them first so the truths are exact for them.
    e = e.astype(np.float32).astype(np.float64)
    pal_m = np.stack(
        [rng.choice(cfg.n_music, cfg.music_per_cluster, replace=False) for _ in range(k)]
    )
    pal_t = np.stack(
        [rng.choice(cfg.n_template, cfg.template_per_cluster, replace=False) for _ in range(k)]
    )
    from_pal = rng.random(n) < cfg.palette_prob
    music = np.where(
        from_pal,
        pal_m[cluster, rng.integers(0, cfg.music_per_cluster, size=n)],
        rng.integers(0, cfg.n_music, size=n),
    )
    from_pal = rng.random(n) < cfg.palette_prob
    template = np.where(
        from_pal,
        pal_t[cluster, rng.integers(0, cfg.template_per_cluster, size=n)],
        rng.integers(0, cfg.n_template, size=n),
    )
    b = 0.5 * rng.standard_normal(n)
    d = rng.standard_normal(n)
    c = rng.standard_normal(de) * np.sqrt(2.25 / de)
    D = rng.standard_normal((dx, de)) * np.sqrt(0.25 / (de * dx))
    A = rng.standard_normal((de, dx)) * np.sqrt(1.0 / (de * dx))
    theta_x = rng.standard_normal(dx) * cfg.theta_x_sd
    ce = e @ c
    c_w = confounder_direction(e, c, float(cfg.confounder_alignment), align_rng)
    return World(
        item_e=e,
        item_cluster=cluster.astype(np.int32),
        item_music=music.astype(np.int32),
        item_template=template.astype(np.int32),
        item_b=b,
        item_s=_standardize(ce),
        item_d=d,
        item_ce=ce,
        item_sw=_standardize(e @ c_w),
        c=c,
        c_w=c_w,
        A=A,
        D=D,
        theta_x=theta_x,
    )


def _softplus(v):
    return np.logaddexp(0.0, v)


def draw_arm(cfg: SimConfig, world: World, n: int, randomized: bool, rng: np.random.Generator):
    """Users, exposures, times and mediator pieces for one arm (chunked over users)."""
    L, ni = cfg.max_len, cfg.n_items
    x = rng.standard_normal((n, cfg.d_x)).astype(np.float32).astype(np.float64)
    w = rng.standard_normal(n)
    items = np.empty((n, L), dtype=np.int64)
    serve = np.empty((n, L))
    # Bound the [chunk, n_items] logit block to ~2e7 float64s at scale.
    chunk = max(1, min(cfg.chunk_users, 20_000_000 // ni))
    item_sw32 = world.item_sw.astype(np.float32)
    item_e32 = world.item_e.astype(np.float32)
    item_b32 = world.item_b.astype(np.float32)
    for lo in range(0, n, chunk):
        hi = min(n, lo + chunk)
        m = hi - lo
        if randomized or cfg.kappa == 0.0:
            logits = np.zeros((m, ni), np.float32)
        else:
            xa = x[lo:hi] @ world.A.T  # [m, d_e]
            logits = xa.astype(np.float32) @ item_e32.T
            logits += (cfg.gamma_w * w[lo:hi, None]).astype(np.float32) * item_sw32[None, :]
            logits += item_b32[None, :]
            logits *= np.float32(cfg.kappa)
        # Gumbel-top-L: L distinct items, softmax sampling without replacement. The
        # exponential race log(E) - logit (E ~ Exp(1)) is the negated Gumbel-max
        # key; float32 suffices for sampling.
        g = rng.standard_exponential(size=(m, ni), dtype=np.float32)
        np.log(np.maximum(g, np.float32(1e-30), out=g), out=g)
        g -= logits
        top = np.argpartition(g, L - 1, axis=1)[:, :L]
        # Random order inside the window: which item comes when is independent of the draw.
        order = np.argsort(rng.random((m, L)), axis=1)
        items[lo:hi] = np.take_along_axis(top, order, axis=1)
        # The serving policy's single-draw probability of each shown item (a logged propensity).
        peak = logits.max(axis=1, keepdims=True)
        g = np.subtract(logits, peak, out=g)
        lse = np.log(np.exp(g, out=g).sum(axis=1, dtype=np.float64)) + peak[:, 0]
        chosen = np.take_along_axis(logits, items[lo:hi], axis=1).astype(np.float64)
        serve[lo:hi] = np.exp(chosen - lse[:, None])
    if cfg.variable_length:
        lengths = rng.integers(cfg.min_len, L + 1, size=n)
    else:
        lengths = np.full(n, L)
    mask = np.arange(L)[None, :] < lengths[:, None]
    t = np.where(mask, rng.uniform(0.0, cfg.horizon_days, size=(n, L)), np.inf)
    t = np.sort(t, axis=1)
    dt = np.where(mask, cfg.horizon_days - t, 0.0).astype(np.float32).astype(np.float64)
    items = np.where(mask, items, 0)
    rho = np.where(mask, np.exp(-dt / cfg.decay_days), 0.0)
    e_t = world.item_e[items]  # [n, L, d_e]
    xde = np.einsum("nk,nlk->nl", x @ world.D, e_t)
    h = _softplus(world.item_ce[items] + xde - 1.0)
    r = np.where(mask, rho * h, 0.0)
    direct = np.where(mask, rho * world.item_d[items], 0.0)
    serve = np.where(mask, serve, 0.0)
    return x, w, items, mask, dt, r, direct, serve


def solve_theta0(base, s, target, num_nodes):
    """theta_0 with mean_u Psi(base_u + theta_0, s) = target (safeguarded Newton)."""
    nodes, weights = np.polynomial.hermite.hermgauss(int(num_nodes))
    z = np.sqrt(2.0) * s * nodes
    wts = weights / np.sqrt(np.pi)
    lo, hi = -60.0, 60.0
    t0 = float(np.log(target / (1.0 - target)) - np.median(base))
    for _ in range(100):
        p = sigmoid(base[:, None] + t0 + z[None, :])
        f = float((p @ wts).mean()) - target
        if f < 0:
            lo = t0
        else:
            hi = t0
        if abs(f) < 1e-13 or hi - lo < 1e-12:
            break
        slope = float(((p * (1.0 - p)) @ wts).mean())
        step = t0 - f / slope if slope > 0 else 0.5 * (lo + hi)
        t0 = step if lo < step < hi else 0.5 * (lo + hi)
    return t0


def draw_proxy(cfg, world, items, mask, r, y, rng):
    """Upload content and per-touch proxy y' (docs/almmta.md, *Simulator proxy*)."""
    n, L = items.shape
    src = np.full(n, -1, dtype=np.int64)
    up_item = np.full(n, -1, dtype=np.int64)
    # j* ~ r_uj over valid touches (r > 0 since softplus > 0 and rho > 0).
    cum = np.cumsum(r, axis=1)
    u = rng.random(n) * cum[:, -1]
    jstar = np.minimum((cum < u[:, None]).sum(axis=1), L - 1)
    jstar = np.minimum(jstar, mask.sum(axis=1) - 1)
    replace = rng.random(n) < cfg.eta_p
    rand_item = rng.integers(0, cfg.n_items, size=n)
    chosen = np.where(replace, rand_item, items[np.arange(n), jstar])
    xi = rng.standard_normal((n, cfg.d_e))
    up = y == 1
    src[up & ~replace] = jstar[up & ~replace]
    up_item[up] = chosen[up]
    e_up = world.item_e[chosen] + 0.5 * xi
    e_up /= np.linalg.norm(e_up, axis=1, keepdims=True)
    m_up = world.item_music[chosen]
    tp_up = world.item_template[chosen]
    e_t = world.item_e[items]
    cos = np.einsum("nk,nlk->nl", e_up, e_t) / np.linalg.norm(e_t, axis=2)
    valid = mask & up[:, None]
    comp_m = np.where(valid, (world.item_music[items] == m_up[:, None]).astype(float), 0.0)
    comp_t = np.where(valid, (world.item_template[items] == tp_up[:, None]).astype(float), 0.0)
    comp_c = np.where(valid, np.maximum(cos, 0.0), 0.0)
    yp = np.clip(0.5 * comp_m + 0.3 * comp_t + 0.2 * comp_c, 0.0, 1.0)
    up_music = np.where(up, m_up, -1)
    up_template = np.where(up, tp_up, -1)
    up_e = np.where(up[:, None], e_up, 0.0)
    return yp, comp_m, comp_t, comp_c, src, up_item, up_music, up_template, up_e


def draw_leak(cfg: SimConfig, yp: np.ndarray, y: np.ndarray, rng: np.random.Generator):
    """The post-outcome log field ``v_uj = Y_u B_u y'_uj`` (docs/almmta.md, *CDP simulator*).

    ``B_u ~ Bern(outcome_leak)`` once per journey: the log is joined to all of a
    journey's touches or to none. ``rng`` is a stream of its own and is not drawn
    from when ``outcome_leak = 0``, so the leak never moves another draw.

    Returns:
      ``(logged [n] bool, leak [n, L])``: ``B`` and ``v`` (0 at padding, since y' is).
    """
    n = y.shape[0]
    if cfg.outcome_leak == 0.0:
        logged = np.zeros(n, bool)
    else:
        logged = rng.random(n) < cfg.outcome_leak
    return logged, np.where((logged & (y == 1))[:, None], yp, 0.0)
