"""Numerics at the edges: Gramian weightings at extreme gradient scales."""

import jax.numpy as jnp
import numpy as np
import pytest

from drgrad_jax._src import (
    aligned_mtl,
    cagrad,
    conflict_free,
    dualproj,
    fairgrad,
    imtl,
    mgda,
    nash_mtl,
    upgrad,
)

# (transformation, degree d of the update in the gradients: update(c g) = c**d update(g)),
# from each method's definition: scale-free weights give d = 1; Nash-MTL's
# G G^T alpha = 1 / alpha gives d = 0; FairGrad's alpha-fair weights d = (1 - a) / (1 + a).
METHODS = {
    "mgda": (mgda.mgda(), 1.0),
    "upgrad": (upgrad.upgrad(), 1.0),
    "imtl_g": (imtl.imtl_g(), 1.0),
    "cagrad": (cagrad.cagrad(), 1.0),
    "dualproj": (dualproj.dualproj(), 1.0),
    "conflict_free": (conflict_free.conflict_free(), 1.0),
    "aligned_mtl": (aligned_mtl.aligned_mtl(), 1.0),
    "nash_mtl": (nash_mtl.nash_mtl(), 0.0),
    "nash_mtl_normalized": (nash_mtl.nash_mtl(normalize_gramian=True), 1.0),
    "fairgrad": (fairgrad.fairgrad(1.0), 0.0),
    "fairgrad_a2": (fairgrad.fairgrad(2.0), -1.0 / 3.0),
}
G = np.random.default_rng(0).normal(size=(3, 6)).astype(np.float32)


def _update(tx, g):
    params = {"w": jnp.zeros(g.shape[1])}
    return np.asarray(tx.update({"w": jnp.asarray(g)}, tx.init(params), params)[0]["w"])


@pytest.mark.parametrize("name", sorted(METHODS))
def test_task_gradient_norms_1e_minus20_and_1e20_give_a_finite_update(name):
    tx, _ = METHODS[name]
    g = G * np.array([1e-20, 1e20, 1.0], np.float32)[:, None]
    assert np.all(np.isfinite(_update(tx, g)))


@pytest.mark.parametrize("name", sorted(METHODS))
@pytest.mark.parametrize("log2c", [-70, 70])
def test_uniform_rescaling_follows_the_definition(name, log2c):
    # 2**70 gradients have a Gramian of 2**140, beyond float32; the update must still be
    # c**d times the update at scale 1 (exact in binary for a power-of-two c).
    tx, d = METHODS[name]
    c = 2.0**log2c
    got = _update(tx, (G * np.float32(c)).astype(np.float32))
    want = _update(tx, G) * c**d
    np.testing.assert_allclose(got, want, rtol=2e-4, atol=0)


def _reference_auc(y, s, w):
    """Mann-Whitney AUC from its definition, in float64 (slow, pairwise)."""
    num = den = 0.0
    for i in np.flatnonzero(y == 1):
        for j in np.flatnonzero(y == 0):
            num += w[i] * w[j] * ((s[i] > s[j]) + 0.5 * (s[i] == s[j]))
            den += w[i] * w[j]
    return num / den


def test_auc_refuses_negative_weights():
    from drgrad_jax import metrics

    with pytest.raises(ValueError, match=r"weights must be >= 0; weights\[2\] = -1\.0"):
        metrics.auc(np.array([0, 1, 0, 1]), np.array([0.1, 0.2, 0.3, 0.4]), [1.0, 1.0, -1.0, 1.0])


def test_auc_keeps_float64_precision():
    from drgrad_jax import metrics

    y = np.array([0, 1, 0, 1, 1, 0])
    s = 0.5 + np.array([1, 2, 3, 4, -1, 5]) * 1e-9  # distinct in float64, one value in float32
    w = np.array([1.0, 2.0, 1.0, 0.5, 1.0, 3.0])
    assert float(metrics.auc(y, s, w)) == pytest.approx(_reference_auc(y, s, w), abs=1e-6)
    assert _reference_auc(y, s, w) != 0.5
    s_nan = s.copy()
    s_nan[0] = np.nan
    assert np.isnan(float(metrics.auc(y, s_nan)))
