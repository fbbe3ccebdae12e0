"""Tests for drgrad_jax.metrics against slow pairwise NumPy oracles."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from drgrad_jax import metrics


def pairwise_auc(labels, scores, weights=None):
    """Slow, obvious oracle: every positive-negative pair, ties one half."""
    labels = np.asarray(labels)
    scores = np.asarray(scores, np.float64)
    w = np.ones(len(labels)) if weights is None else np.asarray(weights, np.float64)
    num = den = 0.0
    for i in np.flatnonzero(labels == 1):
        for j in np.flatnonzero(labels == 0):
            pair = w[i] * w[j]
            den += pair
            if scores[i] > scores[j]:
                num += pair
            elif scores[i] == scores[j]:
                num += 0.5 * pair
    return num / den if den > 0 else np.nan


def pairwise_gauc(labels, scores, groups, weights=None):
    labels, scores, groups = map(np.asarray, (labels, scores, groups))
    w = np.ones(len(labels)) if weights is None else np.asarray(weights, np.float64)
    num = den = 0.0
    for g in np.unique(groups):
        m = groups == g
        a = pairwise_auc(labels[m], scores[m], w[m])
        if np.isnan(a):
            continue
        num += w[m].sum() * a
        den += w[m].sum()
    return num / den if den > 0 else np.nan


@pytest.mark.parametrize("seed", range(4))
def test_auc_matches_pairwise_oracle_with_ties_and_weights(seed):
    rng = np.random.default_rng(seed)
    n = int(rng.integers(20, 120))
    labels = rng.integers(0, 2, n)
    labels[:2] = [0, 1]
    # Few distinct values so ties are frequent.
    scores = rng.integers(0, 6, n).astype(np.float32)
    weights = rng.uniform(0.1, 3.0, n).astype(np.float32)
    np.testing.assert_allclose(metrics.auc(labels, scores), pairwise_auc(labels, scores), rtol=1e-5)
    np.testing.assert_allclose(
        metrics.auc(labels, scores, weights), pairwise_auc(labels, scores, weights), rtol=1e-5
    )


def test_auc_continuous_scores_and_jit_vmap():
    rng = np.random.default_rng(7)
    labels = rng.integers(0, 2, (5, 80))
    labels[:, 0], labels[:, 1] = 0, 1
    scores = rng.normal(size=(5, 80)).astype(np.float32) + labels
    got = jax.jit(jax.vmap(metrics.auc))(jnp.asarray(labels), jnp.asarray(scores))
    want = [pairwise_auc(y, s) for y, s in zip(labels, scores)]
    np.testing.assert_allclose(got, want, rtol=1e-5)


def test_auc_large_n_is_accurate():
    rng = np.random.default_rng(0)
    n = 100_000
    labels = rng.integers(0, 2, n)
    scores = rng.normal(size=n).astype(np.float32) + 0.5 * labels
    scores = np.round(scores, 2)  # ties
    # Rank formula in float64 (midranks) as the reference at this size.
    from scipy.stats import rankdata

    r = rankdata(scores)
    npos = labels.sum()
    nneg = n - npos
    want = (r[labels == 1].sum() - npos * (npos + 1) / 2) / (npos * nneg)
    np.testing.assert_allclose(metrics.auc(labels, scores), want, atol=2e-6)


def test_auc_single_class_is_nan():
    assert np.isnan(metrics.auc(jnp.ones(5), jnp.arange(5.0)))
    assert np.isnan(metrics.auc(jnp.zeros(5), jnp.arange(5.0)))
    # Zero total weight on the positives is the same case.
    assert np.isnan(metrics.auc(jnp.array([0, 1, 0]), jnp.arange(3.0), jnp.array([1.0, 0.0, 1.0])))
    # Also under jit, where the labels are not known.
    assert np.isnan(jax.jit(metrics.auc)(jnp.zeros(4), jnp.arange(4.0)))


def test_auc_nan_score_is_nan():
    assert np.isnan(metrics.auc(jnp.array([0, 1, 0, 1]), jnp.array([0.1, jnp.nan, 0.3, 0.2])))


def test_auc_bad_inputs():
    with pytest.raises(ValueError, match="labels must be a vector"):
        metrics.auc(jnp.zeros((2, 2)), jnp.zeros((2, 2)))
    with pytest.raises(ValueError, match="scores has shape"):
        metrics.auc(jnp.array([0, 1]), jnp.zeros(3))
    with pytest.raises(ValueError, match="binary"):
        metrics.auc(jnp.array([0, 2]), jnp.zeros(2))
    with pytest.raises(ValueError, match="empty"):
        metrics.auc(jnp.zeros(0), jnp.zeros(0))
    with pytest.raises(ValueError, match="weights has shape"):
        metrics.auc(jnp.array([0, 1]), jnp.zeros(2), jnp.ones(3))


@settings(max_examples=30, deadline=None)
@given(
    st.lists(st.tuples(st.integers(0, 1), st.integers(-3, 3)), min_size=2, max_size=30),
)
def test_auc_properties(pairs):
    labels = np.array([p[0] for p in pairs])
    scores = np.array([p[1] for p in pairs], np.float32)
    a = float(metrics.auc(labels, scores))
    if labels.min() == labels.max():
        assert np.isnan(a)
        return
    # Reversing the ranking gives 1 - AUC; a strictly increasing map changes nothing.
    np.testing.assert_allclose(a + float(metrics.auc(labels, -scores)), 1.0, atol=1e-6)
    np.testing.assert_allclose(a, float(metrics.auc(labels, np.exp(scores))), atol=1e-6)
    np.testing.assert_allclose(a, pairwise_auc(labels, scores), atol=1e-6)


@pytest.mark.parametrize("seed", range(3))
def test_gauc_matches_oracle(seed):
    rng = np.random.default_rng(seed)
    n = 150
    labels = rng.integers(0, 2, n)
    scores = rng.integers(0, 5, n).astype(np.float32)
    groups = rng.choice([3, 10, 11, 42, 99, 1000], n)  # sparse ids, some single-class maybe
    weights = rng.uniform(0.5, 2.0, n).astype(np.float32)
    np.testing.assert_allclose(
        metrics.gauc(labels, scores, groups), pairwise_gauc(labels, scores, groups), rtol=1e-5
    )
    np.testing.assert_allclose(
        metrics.gauc(labels, scores, groups, weights),
        pairwise_gauc(labels, scores, groups, weights),
        rtol=1e-5,
    )


def test_gauc_skips_single_class_groups_and_one_group_equals_auc():
    y = jnp.array([0, 1, 0, 1, 1, 1])
    s = jnp.array([0.1, 0.9, 0.8, 0.2, 0.5, 0.7])
    u = jnp.array([0, 0, 1, 1, 2, 2])
    np.testing.assert_allclose(metrics.gauc(y, s, u), 0.5)
    np.testing.assert_allclose(metrics.gauc(y, s, jnp.zeros(6, jnp.int32)), metrics.auc(y, s))
    assert np.isnan(metrics.gauc(y, s, jnp.arange(6)))
    got = jax.jit(metrics.gauc)(y, s, u)
    np.testing.assert_allclose(got, 0.5)
    with pytest.raises(TypeError, match="group_ids must be integers"):
        metrics.gauc(y, s, jnp.zeros(6))


def test_log_loss_matches_numpy_and_logits_agree():
    rng = np.random.default_rng(1)
    y = rng.integers(0, 2, 50).astype(np.float32)
    z = rng.normal(size=50).astype(np.float32)
    w = rng.uniform(0.1, 2, 50).astype(np.float32)
    p = 1 / (1 + np.exp(-z.astype(np.float64)))
    want = -np.sum(w * (y * np.log(p) + (1 - y) * np.log(1 - p))) / w.sum()
    np.testing.assert_allclose(metrics.log_loss(y, p.astype(np.float32), w), want, rtol=1e-5)
    np.testing.assert_allclose(metrics.log_loss(y, z, w, from_logits=True), want, rtol=1e-5)
    # Clipping keeps a confident wrong prediction finite.
    assert np.isfinite(metrics.log_loss(jnp.array([1.0]), jnp.array([0.0])))
    with pytest.raises(ValueError, match="scores has shape"):
        metrics.log_loss(jnp.ones(2), jnp.ones(3))
