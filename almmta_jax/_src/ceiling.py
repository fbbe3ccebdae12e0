"""The confounded regression E[Y | x, t] of the CDP simulator and its deletion drops.

The simulator knows the exposure law p(t | x, w), so the observational
regression function ``E[Y | x, t]`` (w integrated out against its posterior
given the journey) is computable exactly; scored like a model, it is the
ceiling of any method that fits ``E[Y | x, t]`` without deconfounding
(docs/almmta.md, *Confounded ceiling*).
"""

from __future__ import annotations

import numpy as np

from almmta_jax._src.truth import gauss_hermite_psi


def _logsumexp(a, axis):
    peak = np.max(a, axis=axis, keepdims=True)
    peak = np.where(np.isfinite(peak), peak, 0.0)
    return np.log(np.sum(np.exp(a - peak), axis=axis)) + np.squeeze(peak, axis)


def _set_log_prob(log_lam_set, log_rest, valid, s_nodes, log_w_nodes):
    """``log P(top-k = S)`` of a Gumbel-top-k draw by the exponential race.

    ``P = R ∫ Π_{i∈S} (1 − e^{−λ_i t}) e^{−R t} dt`` with ``R`` the total weight outside
    ``S``; ``t = s / R`` makes it a Gauss–Laguerre integral. ``log_lam_set [..., k]``,
    ``log_rest [...]``, ``valid [..., k]`` (padding contributes a factor 1).
    """
    c = np.exp(log_lam_set - log_rest[..., None])  # λ_i / R
    terms = np.log(-np.expm1(-c[..., None] * s_nodes))  # [..., k, Q]
    log_f = np.sum(np.where(valid[..., None], terms, 0.0), axis=-2)  # [..., Q]
    return _logsumexp(log_f + log_w_nodes, axis=-1)


def confounded_regression(
    sim,
    config,
    rows=None,
    *,
    w_grid: int = 81,
    w_max: float = 6.0,
    laguerre_nodes: int = 64,
    chunk: int = 64,
) -> tuple[np.ndarray, np.ndarray]:
    r"""Exact ``E[Y | x, t]`` of the observational arm and its drop when a touch is deleted.

    See docs/almmta.md, *Confounded ceiling*. With ``S`` the journey's item set,

    .. math:: E[Y \mid x, S] = \int p(w \mid x, S)\,
      \Psi(a^x(S) + (\theta_w + \theta_M\gamma_{WM}) w,\ \theta_M\sigma_M)\, dw,
      \quad p(w \mid x, S) \propto \phi(w)\, P(\text{top-}|S| = S \mid x, w),

    where ``P(top-k = S | x, w)`` is the Gumbel-top-k law of the observational
    exposure logits ``κ(e^T A x + γ_w w s^w + b)`` (the times are independent of
    ``w`` and cancel). The deletion drop of touch ``j`` is
    ``E[Y | x, S] − E[Y | x, S ∖ j]``, the second term with the posterior of ``w``
    given the shorter journey ``S ∖ j`` (the same exposure law stopped one draw
    earlier): unlike ``delta_x``, the hidden confounder is *not* cut off, so the
    drop mixes the touch's effect with what the touch says about ``w``. The
    observational law is used for every row, randomized-arm rows included (it is
    the function a back-door model fits, evaluated on their journeys).

    Args:
      sim: a ``SimData`` from ``simulate_cdp(config, ...)``.
      config: the ``SimConfig`` that generated ``sim``.
      rows: user rows to evaluate (all when None).
      w_grid: points of the trapezoid grid over ``w`` on ``[-w_max, w_max]``.
      w_max: half-width of the ``w`` grid (standard deviations of the prior).
      laguerre_nodes: Gauss–Laguerre nodes of the set-probability integral (the
        integrand is near-polynomial when the journey is a small part of the
        catalog: 16 nodes are accurate to 1e-7 on 300 items; a 7-item catalog
        needs ~128 for that).
      chunk: users per block (bounds the ``[chunk, w_grid, L, L, nodes]`` scratch).

    Returns:
      ``(prob [n], delta [n, L])`` float64: ``E[Y | x, t]`` and the deletion drops
      (0 at padding).

    Raises:
      ValueError: ``w_grid``, ``laguerre_nodes`` or ``chunk`` below 1 or 2, or
        ``w_max`` not positive.
    """
    if int(w_grid) < 2 or int(laguerre_nodes) < 1 or int(chunk) < 1 or not w_max > 0:
        raise ValueError(
            "confounded_regression: w_grid must be >= 2, laguerre_nodes and chunk >= 1 and "
            f"w_max > 0; got w_grid={w_grid}, laguerre_nodes={laguerre_nodes}, chunk={chunk}, "
            f"w_max={w_max}."
        )
    cfg = config
    rows = np.arange(sim.y.shape[0]) if rows is None else np.asarray(rows)
    w = np.linspace(-w_max, w_max, int(w_grid))
    log_prior = -0.5 * w**2 + np.log(np.where((w == w[0]) | (w == w[-1]), 0.5, 1.0))
    s_nodes, w_nodes = np.polynomial.laguerre.laggauss(int(laguerre_nodes))
    log_w_nodes = np.log(w_nodes)
    tm, s_unit = cfg.theta_M, cfg.theta_M * cfg.sigma_M
    w_load = cfg.theta_w + cfg.theta_M * cfg.gamma_WM
    e, sw, b = sim.item_e.astype(np.float64), sim.item_sw, sim.item_b
    n, L = len(rows), sim.mask.shape[1]
    prob, delta = np.zeros(n), np.zeros((n, L))
    for lo in range(0, n, int(chunk)):
        r = rows[lo : lo + int(chunk)]
        items, mask = sim.item[r], sim.mask[r]
        x = sim.x[r].astype(np.float64)
        # Exposure logits of every catalog item for every w on the grid: [c, G, N].
        base = (x @ sim.A.T) @ e.T + b
        logits = cfg.kappa * (base[:, None, :] + cfg.gamma_w * w[None, :, None] * sw)
        in_set = np.zeros(base.shape, bool)
        in_set[np.nonzero(mask)[0], items[mask]] = True
        log_rest = _logsumexp(np.where(in_set[:, None, :], -np.inf, logits), axis=-1)  # [c, G]
        idx = np.broadcast_to(items[:, None, :], (len(r), w.size, L))
        log_lam = np.take_along_axis(logits, idx, axis=-1)  # [c, G, L]
        ll_full = _set_log_prob(log_lam, log_rest, mask[:, None, :], s_nodes, log_w_nodes)
        # S minus j: j joins the rest; the others keep their weights.
        rest_del = np.logaddexp(log_rest[..., None], log_lam)  # [c, G, L(j)]
        keep_del = mask[:, None, None, :] & ~np.eye(L, dtype=bool)  # [c, 1, L(j), L(i)]
        ll_del = _set_log_prob(
            np.broadcast_to(log_lam[:, :, None, :], (*rest_del.shape, L)),
            rest_del,
            keep_del,
            s_nodes,
            log_w_nodes,
        )  # [c, G, L]
        # Outcome given w: logit a^x(S) + w_load w, noise theta_M sigma_M.
        inc = np.where(mask, tm * sim.r[r] + cfg.gamma_TY * sim.direct[r], 0.0)
        a_full = sim.theta_0 + x @ sim.theta_x + inc.sum(1)
        py_full = gauss_hermite_psi(a_full[:, None] + w_load * w, s_unit, cfg.gh_nodes)
        a_del = a_full[:, None] - inc
        py_del = gauss_hermite_psi(
            a_del[:, None, :] + w_load * w[None, :, None], s_unit, cfg.gh_nodes
        )
        post = ll_full + log_prior
        post = np.exp(post - post.max(1, keepdims=True))
        p_full = (post * py_full).sum(1) / post.sum(1)
        post_d = ll_del + log_prior[:, None]
        post_d = np.exp(post_d - post_d.max(1, keepdims=True))
        p_del = (post_d * py_del).sum(1) / post_d.sum(1)
        prob[lo : lo + len(r)] = p_full
        delta[lo : lo + len(r)] = np.where(mask, p_full[:, None] - p_del, 0.0)
    return prob, delta
