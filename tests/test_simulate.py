"""Tests of the CDP simulator (docs/almmta.md, *CDP simulator*) and the FD-CATE oracle (docs/almmta.md, *Front-door oracle*)."""

import dataclasses
import itertools
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import integrate, special

from almmta_jax._src.data import time_features, validate_journeys
from almmta_jax._src.deletion import deleted_time_features
from almmta_jax._src.frontdoor_oracle import (
    fd_fitted_nuisances,
    fd_oracle_nuisances,
    fd_oracle_sample,
    fd_plugin,
)
from almmta_jax.simulate import (
    SIM_TOUCH_FIELDS,
    SPLIT_CODES,
    SimConfig,
    SimData,
    gauss_hermite_psi,
    shapley_truth,
    sim_to_batch,
    simulate_cdp,
)

UNIT = SimConfig.preset("unit_test")
# The exact truths hold whatever the exposure policy: every world-level test runs on
# today's world and on one whose confounder loads exposure off the inspiration axis.
ALIGNMENTS = pytest.mark.parametrize("rho", [1.0, 0.3], ids=["aligned", "rho0.3"])


@pytest.fixture(scope="module", params=[1.0, 0.3], ids=["aligned", "rho0.3"])
def sim_cfg(request) -> SimConfig:
    return dataclasses.replace(UNIT, confounder_alignment=request.param)


@pytest.fixture(scope="module")
def sim(sim_cfg) -> SimData:
    return simulate_cdp(sim_cfg, seed=3)


def _sigmoid(a):
    return 1.0 / (1.0 + np.exp(-a))


# ---------------------------------------------------------------------- Psi


@pytest.mark.parametrize("a,s", [(0.3, 1.0), (-4.0, 1.2), (2.5, 0.4), (-8.0, 2.0)])
def test_psi_matches_monte_carlo(a, s):
    # Stratified Monte Carlo: 10^6 normal draws, one per equal-probability stratum.
    rng = np.random.default_rng(int(1000 * (a + s)) % 2**32)
    n = 1_000_000
    z = special.ndtri((np.arange(n) + rng.random(n)) / n)
    mc = _sigmoid(a + s * z).mean()
    assert abs(float(gauss_hermite_psi(a, s)) - mc) < 1e-4


@pytest.mark.parametrize("s_max,atol", [(2.0, 1e-6), (3.0, 1e-4)])
def test_psi_64_vs_32_nodes(s_max, atol):
    # The simulator's noise sds are 0.4 (unit) and about 1.1 (x-truth, defaults).
    a, s = np.meshgrid(np.linspace(-12, 6, 37), np.linspace(0.0, s_max, 13))
    np.testing.assert_allclose(
        gauss_hermite_psi(a, s, 32), gauss_hermite_psi(a, s, 64), rtol=0, atol=atol
    )


@given(
    a=st.floats(-20, 20, allow_nan=False),
    s=st.floats(0.0, 4.0, allow_nan=False),
)
@settings(max_examples=60, deadline=None)
def test_psi_properties(a, s):
    p = float(gauss_hermite_psi(a, s))
    assert 0.0 <= p <= 1.0
    # Symmetry of the logistic-normal integral.
    assert abs(p + float(gauss_hermite_psi(-a, s)) - 1.0) < 1e-12
    if s == 0.0:
        assert abs(p - _sigmoid(a)) < 1e-12


@pytest.mark.parametrize("a,s", [(-6.5, 1.08), (0.0, 0.4), (1.5, 1.5)])
def test_psi_against_scipy_quad(a, s):
    ref, _ = integrate.quad(lambda z: _sigmoid(a + s * z) * np.exp(-0.5 * z * z), -12, 12)
    assert abs(float(gauss_hermite_psi(a, s)) - ref / np.sqrt(2 * np.pi)) < 1e-8


def test_psi_rejects_negative_sd():
    with pytest.raises(ValueError, match="s"):
        gauss_hermite_psi(0.0, -1.0)


def test_psi_with_one_node_is_the_sigmoid_of_the_mean():
    # The one-point Gauss-Hermite rule has its node at 0 and weight sqrt(pi).
    a = np.linspace(-3.0, 3.0, 7)
    np.testing.assert_allclose(gauss_hermite_psi(a, 2.0, num_nodes=1), special.expit(a))
    with pytest.raises(ValueError, match="num_nodes"):
        gauss_hermite_psi(0.0, 1.0, num_nodes=0)


# ----------------------------------------------------------- configuration


def test_presets_and_validation():
    assert (UNIT.n_users, UNIT.n_items, UNIT.max_len, UNIT.num_rct) == (2000, 200, 8, 2000)
    default = SimConfig.preset("default")
    assert (default.n_users, default.n_items, default.n_clusters, default.max_len) == (
        20_000,
        2_000,
        50,
        20,
    )
    scale = SimConfig.preset("scale")
    assert (scale.n_users, scale.n_items, scale.n_clusters) == (1_000_000, 100_000, 1_000)
    assert default.vocab_sizes == (2000, 50, 200, 50)
    assert (default.gamma_TY, default.gamma_WM, default.eta_p, default.kappa) == (0, 0, 0.2, 1)
    assert default.gamma_w == 1.0
    with pytest.raises(ValueError, match="preset"):
        SimConfig.preset("huge")
    with pytest.raises(ValueError, match="max_len"):
        SimConfig(n_items=5, max_len=8)
    with pytest.raises(ValueError, match="eta_p"):
        SimConfig(eta_p=1.5)
    with pytest.raises(ValueError, match="base_rate"):
        SimConfig(base_rate=0.0)
    with pytest.raises(dataclasses.FrozenInstanceError):
        UNIT.kappa = 3.0
    with pytest.raises(TypeError, match="config"):
        simulate_cdp({"n_users": 10})


# ---------------------------------------------------------- generated data


def test_shapes_dtypes_and_determinism(sim, sim_cfg):
    n, L = UNIT.n_users + UNIT.num_rct, UNIT.max_len
    for name in ("item", "cluster", "music", "template"):
        assert getattr(sim, name).shape == (n, L) and getattr(sim, name).dtype == np.int32
    assert sim.x.dtype == np.float32 and sim.x.shape == (n, UNIT.d_x)
    assert sim.delta_x.dtype == np.float64 and sim.delta_unit.shape == (n, L)
    again = simulate_cdp(sim_cfg, seed=3)
    for a, b in zip(sim, again):
        np.testing.assert_array_equal(a, b)
    other = simulate_cdp(sim_cfg, seed=4)
    assert not np.array_equal(sim.item, other.item)


def test_journey_structure(sim):
    mask = sim.mask
    assert mask.all()  # fixed length by default
    srt = np.sort(sim.item, axis=1)
    assert (srt[:, 1:] != srt[:, :-1]).all(), "items within a journey must be distinct"
    assert (np.diff(sim.dt, axis=1) <= 0).all(), "touches must be in time order"
    assert ((sim.dt >= 0) & (sim.dt <= UNIT.horizon_days)).all()
    np.testing.assert_array_equal(sim.cluster, sim.item_cluster[sim.item])
    np.testing.assert_array_equal(sim.music, sim.item_music[sim.item])
    var = simulate_cdp(dataclasses.replace(UNIT, variable_length=True, n_rct=100), seed=0)
    lengths = var.mask.sum(axis=1)
    assert lengths.min() >= UNIT.min_len and lengths.max() <= UNIT.max_len
    # Valid touches form a prefix; padding holds zeros and zero truths.
    np.testing.assert_array_equal(var.mask, np.arange(UNIT.max_len) < lengths[:, None])
    assert (var.item[~var.mask] == 0).all() and (var.delta_x[~var.mask] == 0).all()


def test_mediator_matches_its_definition(sim):
    """r = rho(dt) softplus(c^T e + x^T D e - 1), recomputed from the stored parameters."""
    e = sim.item_e[sim.item].astype(np.float64)
    x = sim.x.astype(np.float64)
    h = np.logaddexp(0.0, e @ sim.c_vec + np.einsum("nk,kd,nld->nl", x, sim.D, e) - 1.0)
    r = np.exp(-sim.dt.astype(np.float64) / UNIT.decay_days) * h
    np.testing.assert_allclose(sim.r, r, rtol=1e-12, atol=0)
    resid = sim.mediator - sim.r.sum(axis=1)
    assert abs(resid.std() - UNIT.sigma_M) < 0.03
    assert abs(np.corrcoef(resid, sim.w)[0, 1]) < 0.06  # no W -> M by default
    wm = simulate_cdp(dataclasses.replace(UNIT, gamma_WM=1.0, n_rct=0), seed=3)
    assert np.corrcoef(wm.mediator - wm.r.sum(axis=1), wm.w)[0, 1] > 0.8


def test_serving_propensity(sim):
    """serve_prob is the softmax of the exposure logits (w loading on s_w) at the shown item."""
    for u in (0, 17, 1234):
        x = sim.x[u].astype(np.float64)
        logit = UNIT.kappa * (
            sim.item_e.astype(np.float64) @ (sim.A @ x)
            + UNIT.gamma_w * sim.w[u] * sim.item_sw
            + sim.item_b
        )
        p = np.exp(logit - logit.max())
        p /= p.sum()
        np.testing.assert_allclose(sim.serve_prob[u], p[sim.item[u]], rtol=1e-5)
    rct = sim.arm == 1
    np.testing.assert_allclose(sim.serve_prob[rct], 1.0 / UNIT.n_items, rtol=1e-6)
    b = sim_to_batch(sim, "test", logged_propensity=True)
    rows = np.flatnonzero(sim.split == SPLIT_CODES["test"])
    np.testing.assert_allclose(b.propensity, sim.serve_prob[rows], rtol=1e-6)
    assert sim_to_batch(sim, "test").propensity is None


def test_base_rate_and_outcome_draws(sim):
    obs = sim.arm == 0
    assert abs(sim.p_unit[obs].mean() - UNIT.base_rate) < 1e-9
    # Y is drawn from the model whose exact probability is p_unit.
    for arm in (obs, ~obs):
        se = np.sqrt((sim.p_unit[arm] * (1 - sim.p_unit[arm])).sum()) / arm.sum()
        assert abs(sim.y[arm].mean() - sim.p_unit[arm].mean()) < 4 * se
    # Confounded exposure concentrates inspiring items on high-w users (when aligned).
    if np.array_equal(sim.item_sw, sim.item_s):
        assert sim.y[~obs].mean() < sim.y[obs].mean()


def _p_unit_quad(sim, u, keep, cfg=UNIT):
    """P(Y=1 | do(T=S), x, w) by adaptive quadrature over epsilon."""
    a = (
        sim.theta_0
        + cfg.theta_M * (sim.r[u, keep].sum() + cfg.gamma_WM * sim.w[u])
        + sim.x[u].astype(np.float64) @ sim.theta_x
        + cfg.theta_w * sim.w[u]
    )
    s = cfg.theta_M * cfg.sigma_M
    f = lambda z: _sigmoid(a + s * z) * np.exp(-0.5 * z * z) / np.sqrt(2 * np.pi)
    return integrate.quad(f, -12, 12, epsabs=1e-12)[0]


def _p_x_quad(sim, u, keep):
    """P(Y=1 | do(T=S), x): a 2-D integral over w ~ N(0,1) and epsilon."""
    a = (
        sim.theta_0
        + UNIT.theta_M * sim.r[u, keep].sum()
        + sim.x[u].astype(np.float64) @ sim.theta_x
    )
    s = UNIT.theta_M * UNIT.sigma_M
    f = lambda z, w: (
        _sigmoid(a + UNIT.theta_w * w + s * z) * np.exp(-0.5 * (z * z + w * w)) / (2 * np.pi)
    )
    return integrate.dblquad(f, -9, 9, -9, 9, epsabs=1e-11)[0]


def test_deletion_truths_match_quadrature(sim):
    rng = np.random.default_rng(0)
    L = UNIT.max_len
    for u in rng.choice(sim.y.shape[0], size=3, replace=False):
        full = np.ones(L, bool)
        assert abs(_p_unit_quad(sim, u, full) - sim.p_unit[u]) < 1e-9
        assert abs(_p_x_quad(sim, u, full) - sim.p_x[u]) < 1e-8
        for j in rng.choice(L, size=2, replace=False):
            keep = full.copy()
            keep[j] = False
            ref_unit = sim.p_unit[u] - _p_unit_quad(sim, u, keep)
            assert abs(ref_unit - sim.delta_unit[u, j]) < 1e-9
            ref_x = sim.p_x[u] - _p_x_quad(sim, u, keep)
            assert abs(ref_x - sim.delta_x[u, j]) < 1e-8
            same = sim.cluster[u] == sim.cluster[u, j]
            ref_rem = sim.p_x[u] - _p_x_quad(sim, u, ~same)
            assert abs(ref_rem - sim.removal_x[u, j]) < 1e-8
    # Deleting a touch always lowers the upload probability (r > 0, no direct edge).
    assert (sim.delta_unit[sim.mask] > 0).all() and (sim.delta_x[sim.mask] > 0).all()


@ALIGNMENTS
def test_w_to_mediator_edge_enters_the_unit_truth_through_the_mediator(rho):
    # With gamma_WM != 0, w reaches Y directly (theta_w) and through the mediator
    # (theta_M gamma_WM); the default gamma_WM = 0 hides the second path.
    cfg = dataclasses.replace(UNIT, gamma_WM=1.5, confounder_alignment=rho)
    sim = simulate_cdp(cfg, seed=1)
    full = np.ones(cfg.max_len, bool)
    for u in (0, 7, 19):
        assert abs(_p_unit_quad(sim, u, full, cfg) - sim.p_unit[u]) < 1e-9


@ALIGNMENTS
def test_direct_edge_switch(rho):
    cfg = dataclasses.replace(UNIT, n_rct=0, confounder_alignment=rho)
    base = simulate_cdp(cfg, seed=1)
    ty = simulate_cdp(dataclasses.replace(cfg, gamma_TY=1.0), seed=1)
    np.testing.assert_array_equal(base.item, ty.item)
    # The direct score d enters the deletion truth: negative-d touches can now hurt.
    assert (ty.delta_unit[ty.mask] < 0).any() and not (base.delta_unit[base.mask] < 0).any()
    rho = np.exp(-ty.dt.astype(np.float64) / UNIT.decay_days)
    u, j = 5, 2
    a_full = (
        ty.theta_0
        + UNIT.theta_M * ty.r[u].sum()
        + ty.x[u].astype(np.float64) @ ty.theta_x
        + UNIT.theta_w * ty.w[u]
        + (rho[u] * ty.item_d[ty.item[u]]).sum()
    )
    a_del = a_full - UNIT.theta_M * ty.r[u, j] - rho[u, j] * ty.item_d[ty.item[u, j]]
    s = UNIT.theta_M * UNIT.sigma_M
    ref = gauss_hermite_psi(a_full, s, 64) - gauss_hermite_psi(a_del, s, 64)
    assert abs(float(ref) - ty.delta_unit[u, j]) < 1e-9


def test_confounding_knobs():
    def corr(cfg):
        s = simulate_cdp(dataclasses.replace(UNIT, n_rct=500, **cfg), seed=2)
        pot = s.item_s[s.item].mean(axis=1)
        obs = s.arm == 0
        return np.corrcoef(s.w[obs], pot[obs])[0, 1], np.corrcoef(s.w[~obs], pot[~obs])[0, 1]

    c_obs, c_rct = corr({})
    assert c_obs > 0.7 and abs(c_rct) < 0.15
    assert abs(corr({"gamma_w": 0.0})[0]) < 0.1
    assert corr({"gamma_w": -1.0})[0] < -0.7

    def exposure_spread(kappa):
        s = simulate_cdp(dataclasses.replace(UNIT, n_rct=0, kappa=kappa), seed=2)
        counts = np.bincount(s.item.ravel(), minlength=UNIT.n_items)
        return counts.std() / counts.mean()

    assert exposure_spread(3.0) > 1.5 * exposure_spread(1.0)


def test_proxy(sim):
    up = sim.y == 1
    assert ((sim.yp >= 0) & (sim.yp <= 1)).all()
    assert (sim.yp[~up] == 0).all() and (sim.up_item[~up] == -1).all()
    ref = np.clip(0.5 * sim.yp_music + 0.3 * sim.yp_template + 0.2 * sim.yp_cos, 0, 1)
    np.testing.assert_allclose(sim.yp, ref, atol=1e-6)
    np.testing.assert_array_equal(
        sim.yp_music[up], (sim.music[up] == sim.up_music[up][:, None]).astype(np.float32)
    )
    clean = simulate_cdp(dataclasses.replace(UNIT, eta_p=0.0, n_rct=0), seed=5)
    cu = np.flatnonzero(clean.y == 1)
    assert (clean.src[cu] >= 0).all()
    # The source touch shares music and template with the upload: y' >= 0.8 there.
    assert (clean.yp[cu, clean.src[cu]] >= 0.8 - 1e-6).all()
    noisy = simulate_cdp(dataclasses.replace(UNIT, eta_p=1.0, n_rct=0), seed=5)
    assert (noisy.src == -1).all()
    # Sources follow the mediator contributions: mean r at the source beats the journey mean.
    assert clean.r[cu, clean.src[cu]].mean() > 1.3 * clean.r[cu].mean()


def test_splits_and_cluster_truths(sim):
    obs = sim.arm == 0
    counts = np.bincount(sim.split[obs], minlength=3)
    np.testing.assert_array_equal(counts, [1600, 200, 200])
    assert (sim.split[~obs] == SPLIT_CODES["rct"]).all()
    K, n_obs = UNIT.n_clusters, UNIT.n_users
    for c in range(0, K, 7):
        exposed = (sim.cluster == c).any(axis=1)
        e_r, p_r = exposed[~obs], sim.p_x[~obs]
        if e_r.any() and (~e_r).any():
            ref = p_r[e_r].mean() - p_r[~e_r].mean()
            assert abs(ref - sim.rct_cluster_uplift[c]) < 1e-12
        e_o = exposed[:n_obs]
        if e_o.any():
            rem = [sim.removal_x[u][sim.cluster[u] == c][0] for u in np.flatnonzero(e_o)]
            assert abs(np.mean(rem) - sim.obs_cluster_removal[c]) < 1e-12


def test_sim_to_batch(sim):
    b = validate_journeys(sim_to_batch(sim, "train"))
    rows = np.flatnonzero(sim.split == SPLIT_CODES["train"])
    assert b.touch_ids.shape == (rows.size, UNIT.max_len, len(SIM_TOUCH_FIELDS))
    np.testing.assert_array_equal(b.touch_ids[..., 0], sim.item[rows])
    np.testing.assert_array_equal(b.touch_ids[..., 1], sim.cluster[rows])
    np.testing.assert_array_equal(b.touch_ids[..., 3], sim.template[rows])
    np.testing.assert_allclose(b.tfeat[..., 0], np.log1p(24.0 * sim.dt[rows]), rtol=1e-5)
    np.testing.assert_allclose(b.tfeat[:, 0, 1], 0.0)
    gap = 24.0 * (sim.dt[rows][:, :-1] - sim.dt[rows][:, 1:])
    np.testing.assert_allclose(b.tfeat[:, 1:, 1], np.log1p(gap), rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(b.tfeat[:, -1, 2], 0.0)
    assert b.yp.shape == (rows.size, UNIT.max_len, 1)
    assert sim_to_batch(sim, "rct").y.shape == (UNIT.num_rct,)
    with pytest.raises(ValueError, match="split"):
        sim_to_batch(sim, "holdout")
    with pytest.raises(ValueError, match="ipw"):
        sim_to_batch(sim, "val", ipw=np.ones(3))


def test_deletion_time_features_against_a_journey_generated_without_the_touch(sim):
    """A model's deletion of touch j sees the journey generated without it (docs/almmta.md, *Deleted journeys*).

    A journey generated without touch j has the other touches at the same times,
    so the same hours to the window end, which is all the outcome and the
    deletion truths read; its touch j + 1 has the gap back to touch j - 1 and
    its touches before j sit one position closer to the end. The features a
    model's ``keep`` deletion reads (``deleted_time_features``) must be exactly those.
    """
    b = sim_to_batch(sim, "test")
    L = UNIT.max_len
    for i in range(0, 40, 3):
        u, n_u = b.user_id[i], int(b.touch_mask[i].sum())
        seconds = -24.0 * 3600.0 * sim.dt[u].astype(np.float64)
        for j in {0, n_u // 2, n_u - 1}:
            keep = b.touch_mask[i] & (np.arange(L) != j)
            kept = np.flatnonzero(keep)
            # The journey generated without j: the kept touches, packed, at their times.
            short = np.zeros(L)
            short[: kept.size] = seconds[kept]
            regenerated = time_features(
                short[None], (np.arange(L) < kept.size)[None], end_time=np.zeros(1)
            )[0, : kept.size]
            deleted = np.asarray(
                deleted_time_features(b.tfeat[i : i + 1], b.touch_mask[i : i + 1], keep[None])
            )[0, kept]
            np.testing.assert_array_equal(deleted[:, 0], regenerated[:, 0])
            np.testing.assert_allclose(deleted, regenerated, rtol=1e-5, atol=1e-6)
            if 0 < j < n_u - 1:  # the successor's gap spans back to touch j - 1
                k = int(np.flatnonzero(kept == j + 1)[0])
                hours = 24.0 * (sim.dt[u, j - 1].astype(np.float64) - sim.dt[u, j + 1])
                np.testing.assert_allclose(deleted[k, 1], np.log1p(hours), rtol=1e-5)
                assert deleted[k, 1] > b.tfeat[i, j + 1, 1]
        # The truth's side: the deletion removes touch j's r alone (r reads only dt).
        j = n_u // 2
        tm = UNIT.theta_M
        s_x = np.sqrt((tm * UNIT.sigma_M) ** 2 + UNIT.theta_w**2)
        a_full = sim.theta_0 + tm * sim.r[u].sum() + sim.x[u].astype(np.float64) @ sim.theta_x
        ref = sim.p_x[u] - gauss_hermite_psi(a_full - tm * sim.r[u, j], s_x)
        assert abs(ref - sim.delta_x[u, j]) < 1e-12


# ------------------------------------------------------------------ Shapley


def _shapley_loop(value, L):
    """Textbook subset-enumeration Shapley values of a set function on range(L)."""
    phi = np.zeros(L)
    for j in range(L):
        others = [k for k in range(L) if k != j]
        for size in range(L):
            w = math.factorial(size) * math.factorial(L - size - 1) / math.factorial(L)
            for S in itertools.combinations(others, size):
                phi[j] += w * (value(set(S) | {j}) - value(set(S)))
    return phi


@ALIGNMENTS
@pytest.mark.parametrize("kind", ["x", "unit"])
def test_shapley_truth_exact_and_permutation(kind, rho):
    cfg = dataclasses.replace(
        UNIT, n_users=40, n_rct=0, variable_length=True, gamma_TY=0.5, confounder_alignment=rho
    )
    s = simulate_cdp(cfg, seed=7)
    exact = shapley_truth(s, cfg, kind=kind)
    u = 3
    x = s.x[u].astype(np.float64)
    base = s.theta_0 + x @ s.theta_x
    sd = cfg.theta_M * cfg.sigma_M
    if kind == "x":
        sd = np.sqrt(sd**2 + cfg.theta_w**2)
    else:
        base += cfg.theta_w * s.w[u]
    inc = cfg.theta_M * s.r[u] + cfg.gamma_TY * s.direct[u]
    value = lambda S: float(gauss_hermite_psi(base + sum(inc[k] for k in S), sd, 64))
    L = int(s.mask[u].sum())
    np.testing.assert_allclose(exact[u, :L], _shapley_loop(value, L), rtol=1e-6, atol=1e-9)
    assert (exact[~s.mask] == 0).all()
    # Efficiency: the values add up to P(full) - P(empty).
    p_full = s.p_x if kind == "x" else s.p_unit
    empty = [
        float(
            gauss_hermite_psi(
                s.theta_0
                + s.x[i].astype(np.float64) @ s.theta_x
                + (0.0 if kind == "x" else cfg.theta_w * s.w[i]),
                sd,
            )
        )
        for i in range(40)
    ]
    np.testing.assert_allclose(exact.sum(axis=1), p_full - np.array(empty), atol=1e-12)
    mc = shapley_truth(s, cfg, np.arange(20), kind=kind, exact_max_len=0, num_permutations=300)
    np.testing.assert_allclose(mc.sum(axis=1), exact[:20].sum(axis=1), atol=1e-12)
    assert np.abs(mc - exact[:20]).max() < 0.1 * np.abs(exact).max()


# ------------------------------------------------ front-door identification


def _logistic_fit(X, y, iters=60):
    b = np.zeros(X.shape[1])
    for _ in range(iters):
        p = _sigmoid(X @ b)
        step = np.linalg.solve(X.T @ (X * (p * (1 - p))[:, None]), X.T @ (y - p))
        b += step
        if np.abs(step).max() < 1e-10:
            break
    return b


def _frontdoor_vs_naive(s: SimData):
    """Per-touch deletion effects from observational data: front-door plug-in and naive.

    Front door with the true (observed) mediator M and the known additive
    first-stage structure mu(S, x) = sum_{j in S} r_j:
      stage 1  M - mu(T, x) ~ N(l0 + l_x x + l_z z(T), s1^2)      (least squares)
      stage 2  P(Y | M, T, x) = sigmoid(b0 + b_M M + b_x x + b_z z(T))
               (back-door over T through z = sum of potencies, the statistic
               that carries the hidden confounder)
      stage 3  z | x ~ N(a0 + a_x x, sz^2)                        (least squares)
      g(x, S) = E_{m | S, x} E_{z' | x} P(Y | m, z', x)
              = Psi(b0 + b_M E[m | S, x] + b_x x + b_z E[z | x], sqrt(b_M^2 s1^2 + b_z^2 sz^2)).
    Naive: a logistic regression of Y on (x, mu(T, x)), deletion by recomputing it.
    """
    obs = s.arm == 0
    x = s.x[obs].astype(np.float64)
    y = s.y[obs].astype(np.float64)
    r, mask, M = s.r[obs], s.mask[obs], s.mediator[obs]
    pot = np.where(mask, s.item_s[s.item[obs]], 0.0)
    z, mu = pot.sum(axis=1), r.sum(axis=1)
    one = np.ones((y.size, 1))
    X1 = np.hstack([one, x, z[:, None]])
    lam = np.linalg.lstsq(X1, M - mu, rcond=None)[0]
    s1 = np.std(M - mu - X1 @ lam)
    beta = _logistic_fit(np.hstack([one, M[:, None], x, z[:, None]]), y)
    X3 = np.hstack([one, x])
    alpha = np.linalg.lstsq(X3, z, rcond=None)[0]
    sz = np.std(z - X3 @ alpha)
    sd = np.sqrt(beta[1] ** 2 * s1**2 + beta[-1] ** 2 * sz**2)

    def g(mu_s, z_s):
        m_mean = mu_s + (X1[:, :-1] @ lam[:-1])[:, None] + lam[-1] * z_s
        a = beta[0] + beta[1] * m_mean + (x @ beta[2:-1] + beta[-1] * (X3 @ alpha))[:, None]
        return gauss_hermite_psi(a, sd)

    d_fd = g(mu[:, None], z[:, None]) - g(mu[:, None] - r, z[:, None] - pot)
    bn = _logistic_fit(np.hstack([one, x, mu[:, None]]), y)
    lin = (bn[0] + x @ bn[1:-1])[:, None]
    d_naive = _sigmoid(lin + bn[-1] * mu[:, None]) - _sigmoid(lin + bn[-1] * (mu[:, None] - r))
    truth = s.delta_x[obs]

    def summary(d):
        err = (d - truth)[mask]
        rel_rmse = np.sqrt((err**2).mean() / (truth[mask] ** 2).mean())
        return rel_rmse, d[mask].mean() / truth[mask].mean()

    return summary(d_fd), summary(d_naive)


def test_frontdoor_plugin_recovers_truth_and_wm_switch_breaks_it():
    cfg = SimConfig.preset("unit_test", n_users=20_000, n_rct=0)
    (fd_rmse, fd_ratio), (nv_rmse, nv_ratio) = _frontdoor_vs_naive(simulate_cdp(cfg, seed=0))
    # All switches off: the front-door plug-in matches the exact truth ...
    assert fd_rmse < 0.3 and abs(fd_ratio - 1.0) < 0.2
    # ... while the naive contrast is biased (upward, gamma_w > 0).
    assert nv_ratio > 1.4 and nv_rmse > 0.6
    # W -> M breaks front-door conditions 2-3: the same plug-in is visibly off.
    broken = dataclasses.replace(cfg, gamma_WM=1.0)
    (wm_rmse, wm_ratio), _ = _frontdoor_vs_naive(simulate_cdp(broken, seed=0))
    assert wm_rmse > 0.6 and wm_rmse > 3 * fd_rmse and wm_ratio > 1.3


# ------------------------------------------------------ FD-CATE unit oracle


def test_fd_cate_oracle_exact_and_fitted():
    data = fd_oracle_sample(20_000, 4, seed=0)
    naive = data.Y[data.A == 1].mean() - data.Y[data.A == 0].mean()
    assert naive < 0 < data.tau.mean()
    # Oracle nuisances: the U terms cancel and the plug-in is tau exactly.
    exact = fd_plugin(*fd_oracle_nuisances(data.C, data.params))
    np.testing.assert_allclose(exact, data.tau, rtol=0, atol=1e-12)
    # Fitted NumPy nuisances at n = 20,000: within sampling error (golden threshold).
    fitted = fd_plugin(*fd_fitted_nuisances(data))
    rmse = np.sqrt(np.mean((fitted - data.tau) ** 2))
    assert rmse < 0.05, rmse
    # Fresh covariates too (out-of-sample evaluation of the fitted nuisances).
    fresh = fd_oracle_sample(2_000, 4, seed=0).C + 0.1
    fitted_fresh = fd_plugin(*fd_fitted_nuisances(data, fresh))
    truth_fresh = fd_plugin(*fd_oracle_nuisances(fresh, data.params))
    assert np.sqrt(np.mean((fitted_fresh - truth_fresh) ** 2)) < 0.05


def test_fd_cate_plugin_rejects_bad_shapes():
    with pytest.raises(ValueError, match="expected"):
        fd_plugin(np.zeros((3, 2)), np.zeros(3), np.zeros((3, 2)))


def test_fd_cate_weak_overlap_flips_naive():
    data = fd_oracle_sample(5_000, 3, seed=1, kappa_e=3.0)
    assert data.Y[data.A == 1].mean() - data.Y[data.A == 0].mean() < 0 < data.tau.mean()
    np.testing.assert_allclose(
        fd_plugin(*fd_oracle_nuisances(data.C, data.params)), data.tau, atol=1e-12
    )
