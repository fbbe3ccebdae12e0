"""Deletion uplift and MC-Shapley attribution against slow per-touch and subset-enumeration oracles."""

import itertools
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from hypothesis import given, settings
from hypothesis import strategies as st

import almmta_jax as am
from almmta_jax.testing import random_journeys
from tests.almmta_tiny import tiny_model

MODEL = tiny_model()
B = 6


@pytest.fixture(scope="module")
def model():
    return am.ALMMTA(MODEL, rngs=nnx.Rngs(11))


@pytest.fixture(scope="module")
def batch():
    b = random_journeys(jax.random.key(12), B, MODEL)
    # Lengths 1, 2, 3, 4, 5, 2: every case including a single touch.
    lengths = np.array([1, 2, 3, 4, 5, 2])
    mask = np.arange(MODEL.max_len)[None, :] < lengths[:, None]
    return b._replace(touch_mask=jnp.asarray(mask))


@pytest.fixture(scope="module")
def prob_of(model):
    """``g(keep)`` computed the slow, obvious way: the model on a masked batch."""
    graphdef, state = nnx.split(model)
    f = jax.jit(lambda st, b, keep: jax.nn.sigmoid(nnx.merge(graphdef, st)(b, keep)))
    return lambda b, keep: np.asarray(f(state, b, jnp.asarray(keep)), np.float64)


def test_deletion_matches_per_touch_loop(model, batch, prob_of):
    out = am.attribute(model, batch)
    mask = np.asarray(batch.touch_mask)
    full = prob_of(batch, mask)
    np.testing.assert_allclose(out.prob, full, rtol=1e-5)
    for j in range(MODEL.max_len):
        keep = mask & (np.arange(MODEL.max_len)[None, :] != j)
        ref = np.where(mask[:, j], full - prob_of(batch, keep), 0.0)
        np.testing.assert_allclose(out.uplift[:, j], ref, rtol=1e-4, atol=1e-6)
    assert np.all(np.asarray(out.uplift)[~mask] == 0)
    assert np.all(np.abs(np.asarray(out.uplift)[mask]) > 0)
    lg = lambda p: np.log(p) - np.log1p(-p)
    j0 = lg(full) - lg(prob_of(batch, mask & (np.arange(MODEL.max_len)[None, :] != 0)))
    np.testing.assert_allclose(out.logit_uplift[:, 0], j0, rtol=1e-3, atol=1e-5)


def test_chunked_deletion_equals_vmapped(model, batch):
    a = am.attribute(model, batch)
    b = am.attribute(model, batch, chunk_size=2)
    np.testing.assert_allclose(a.uplift, b.uplift, rtol=1e-5, atol=1e-7)


def _exact_shapley(g, n):
    """Subset-enumeration Shapley values of ``g`` (a dict from frozenset to value)."""
    phi = np.zeros(n)
    for j in range(n):
        others = [i for i in range(n) if i != j]
        for r in range(n):
            for sub in itertools.combinations(others, r):
                w = math.factorial(r) * math.factorial(n - r - 1) / math.factorial(n)
                phi[j] += w * (g[frozenset(sub) | {j}] - g[frozenset(sub)])
    return phi


def _antithetic_standard_error(g, n, num_pairs):
    """Exact standard error of the mean over ``num_pairs`` uniform antithetic order pairs.

    Each pair averages a touch's marginal contribution over an order and its
    reverse; the variance of that average over all ``n!`` equally likely orders
    is exact, so the Monte-Carlo error needs no sampling to bound.
    """
    pair_values = []
    for order in itertools.permutations(range(n)):
        contrib = np.zeros((2, n))
        for side, seq in enumerate((order, order[::-1])):
            for pos, j in enumerate(seq):
                before = frozenset(seq[:pos])
                contrib[side, j] = g[before | {j}] - g[before]
        pair_values.append(contrib.mean(0))
    return np.std(np.array(pair_values), axis=0) / np.sqrt(num_pairs)


def test_shapley_matches_subset_enumeration(model, batch, prob_of):
    mask = np.asarray(batch.touch_mask)
    lengths = mask.sum(1)
    out = am.attribute(model, batch, method="shapley", num_permutations=512, key=jax.random.key(0))
    subsets = [
        frozenset(s) for r in range(MODEL.max_len + 1) for s in itertools.combinations(range(5), r)
    ]
    keeps = np.zeros((len(subsets), B, MODEL.max_len), bool)
    for k, s in enumerate(subsets):
        keeps[k][:, list(s)] = True
    values = np.stack([prob_of(batch, keeps[k] & mask) for k in range(len(subsets))])
    for i in range(B):
        n = lengths[i]
        g = {s: values[k, i] for k, s in enumerate(subsets) if max(s, default=-1) < n}
        exact = _exact_shapley(g, n)
        got = np.asarray(out.uplift[i, :n], np.float64)
        # n <= 2: an antithetic pair enumerates every order, so MC is exact (the
        # standard error is 0). Otherwise 4 exact standard errors of the estimator.
        se = _antithetic_standard_error(g, n, 256)
        assert n > 2 or np.all(se < 1e-7)
        np.testing.assert_array_less(np.abs(got - exact), 4 * se + 2e-6)
        # Efficiency: credits sum to g(full) - g(empty).
        np.testing.assert_allclose(got.sum(), g[frozenset(range(n))] - g[frozenset()], atol=1e-5)
    assert np.all(np.asarray(out.uplift)[~mask] == 0)


def test_shapley_efficiency_holds_for_few_permutations(model, batch, prob_of):
    out = am.attribute(model, batch, method="shapley", num_permutations=2, key=jax.random.key(5))
    empty = prob_of(batch, np.zeros((B, MODEL.max_len), bool))
    np.testing.assert_allclose(out.uplift.sum(1), out.prob - empty, rtol=1e-4, atol=1e-6)


def test_explicit_frontdoor_deletion_matches_manual_sum(model, batch):
    ref = random_journeys(jax.random.key(13), B, MODEL)
    pool = am.build_reference_pool(model, ref, ref.touch_ids[..., 1])
    log_e = jax.nn.log_softmax(jax.random.normal(jax.random.key(14), (B, 3)))
    log_f = jnp.log(jnp.array([0.2, 0.3, 0.5]))
    out = am.attribute(
        model,
        batch,
        frontdoor="explicit",
        pool=pool,
        k=3,
        log_propensity=log_e,
        log_frequency=log_f,
        normalize=True,
    )
    full = model.encode(batch)
    q = model.query(full.mediator, full.s)
    mask = np.asarray(batch.touch_mask)

    def g(keep):
        enc = model.encode(batch, jnp.asarray(keep))
        vals = []
        for i in range(B):
            idx, pi = am.high_match_set(q[i], pool, 3, log_propensity=log_e[i], log_frequency=log_f)
            p = jax.nn.sigmoid(
                model.outcome_logit(
                    jnp.repeat(enc.mediator[i : i + 1], 3, 0),
                    pool.treatment[idx],
                    jnp.repeat(enc.s[i : i + 1], 3, 0),
                )
            )
            vals.append(float(jnp.sum(pi * p)))
        return np.array(vals)

    g_full = g(mask)
    np.testing.assert_allclose(out.prob, g_full, rtol=1e-5)
    for j in (0, 2):
        keep = mask & (np.arange(MODEL.max_len)[None, :] != j)
        np.testing.assert_allclose(
            out.uplift[:, j], np.where(mask[:, j], g_full - g(keep), 0), rtol=1e-4, atol=1e-6
        )
    shares = np.asarray(out.share)
    has = (np.asarray(out.uplift) > 0).any(1)
    np.testing.assert_allclose(shares.sum(1)[has], 1.0, rtol=1e-5)


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 10_000))
def test_positive_shares_properties(seed):
    rng = np.random.default_rng(seed)
    up = rng.normal(size=(4, 6)).astype(np.float32)
    mask = rng.uniform(size=(4, 6)) < 0.7
    s = np.asarray(am.positive_shares(up, mask))
    assert np.all(s >= 0) and np.all(s[~mask] == 0) and np.all(s[up <= 0] == 0)
    pos = np.where(mask, np.maximum(up, 0), 0)
    for i in range(4):
        if pos[i].sum() > 0:
            np.testing.assert_allclose(s[i], pos[i] / pos[i].sum(), rtol=1e-5)
        else:
            assert s[i].sum() == 0


def test_bad_arguments_raise(model, batch):
    with pytest.raises(ValueError, match="method"):
        am.attribute(model, batch, method="lime")
    with pytest.raises(ValueError, match="frontdoor"):
        am.attribute(model, batch, frontdoor="backdoor")
    with pytest.raises(ValueError, match="pool"):
        am.attribute(model, batch, frontdoor="explicit")
    with pytest.raises(ValueError, match="key"):
        am.attribute(model, batch, method="shapley")
    with pytest.raises(ValueError, match="even"):
        am.attribute(model, batch, method="shapley", num_permutations=3, key=jax.random.key(0))
    with pytest.raises(ValueError, match="chunk_size must be >= 1"):
        am.attribute(model, batch, chunk_size=0)
    with pytest.raises(ValueError, match="touch_ids"):
        am.attribute(model, batch._replace(touch_ids=batch.touch_ids[:, :, :1]))
