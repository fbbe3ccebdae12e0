"""The confounded regression E[Y | x, t] of the simulator (docs/almmta.md, *Confounded ceiling*).

The reference is written from the definition, by other means than the library:
the exposure law of a set is the sum over its orderings of sequential softmax
draws without replacement (Plackett-Luce), and ``w`` is integrated by adaptive
quadrature (``scipy.integrate.quad``) against its N(0, 1) prior.
"""

import dataclasses
import itertools

import numpy as np
import pytest
from scipy.integrate import quad

from almmta_jax.simulate import SimConfig, confounded_regression, gauss_hermite_psi, simulate_cdp

TINY = SimConfig.preset(
    "unit_test", n_users=40, n_rct=6, n_items=7, n_clusters=3, max_len=3, d_e=4, d_x=2
)


def _set_prob(logits, chosen):
    """P(the first len(chosen) softmax draws without replacement are ``chosen``, any order)."""
    lam = np.exp(logits - logits.max())
    total = 0.0
    for order in itertools.permutations(chosen):
        left, p = lam.sum(), 1.0
        for i in order:
            p *= lam[i] / left
            left -= lam[i]
        total += p
    return total


def _reference(sim, cfg, u):
    x, items = sim.x[u].astype(np.float64), list(sim.item[u][sim.mask[u]])
    base = (x @ sim.A.T) @ sim.item_e.astype(np.float64).T + sim.item_b
    inc = cfg.theta_M * sim.r[u] + cfg.gamma_TY * sim.direct[u]
    a0 = sim.theta_0 + x @ sim.theta_x
    load = cfg.theta_w + cfg.theta_M * cfg.gamma_WM

    def e_y(keep):
        chosen = [it for it, k in zip(items, keep) if k]
        a = a0 + inc[: len(items)][np.asarray(keep)].sum()

        def lik(w):
            logits = cfg.kappa * (base + cfg.gamma_w * w * sim.item_sw)
            return np.exp(-0.5 * w * w) * _set_prob(logits, chosen)

        def num(w):
            return lik(w) * float(gauss_hermite_psi(a + load * w, cfg.theta_M * cfg.sigma_M))

        lim = dict(a=-8.0, b=8.0, epsabs=0.0, epsrel=1e-10, limit=200)
        return quad(num, **lim)[0] / quad(lik, **lim)[0]

    full = e_y([True] * len(items))
    drops = [full - e_y([i != j for i in range(len(items))]) for j in range(len(items))]
    return full, np.asarray(drops)


@pytest.mark.parametrize(
    "overrides", [{}, {"confounder_alignment": 0.0, "gamma_WM": 0.7, "gamma_TY": 0.5}]
)
def test_confounded_regression_matches_a_slow_reference(overrides):
    cfg = dataclasses.replace(TINY, **overrides)
    sim = simulate_cdp(cfg, seed=3)
    rows = np.array([0, 5, 17, 41, 45])  # observational and randomized-arm users
    # A 7-item catalog makes the race integrand far from polynomial: more nodes than
    # the default's ~3e-7 (a 300-item catalog is at 1e-7 with 16 nodes).
    prob, delta = confounded_regression(sim, cfg, rows, chunk=2, laguerre_nodes=160)
    for k, u in enumerate(rows):
        ref_p, ref_d = _reference(sim, cfg, u)
        np.testing.assert_allclose(prob[k], ref_p, rtol=0, atol=1e-7)
        np.testing.assert_allclose(delta[k], ref_d, rtol=0, atol=1e-7)


def test_confounded_drops_differ_from_the_deconfounded_truth_and_agree_without_confounding():
    sim = simulate_cdp(TINY, seed=3)
    _, delta = confounded_regression(sim, TINY, np.arange(20))
    assert np.abs(delta - sim.delta_x[:20]).max() > 1e-3  # w is not cut off
    free = dataclasses.replace(TINY, gamma_w=0.0)  # exposure ignores w: nothing to deconfound
    sim = simulate_cdp(free, seed=3)
    prob, delta = confounded_regression(sim, free, np.arange(20))
    np.testing.assert_allclose(prob, sim.p_x[:20], atol=1e-9)
    np.testing.assert_allclose(delta, sim.delta_x[:20], atol=1e-9)


def test_confounded_regression_refuses_bad_grids():
    sim = simulate_cdp(TINY, seed=0)
    with pytest.raises(ValueError, match="w_grid"):
        confounded_regression(sim, TINY, [0], w_grid=1)
