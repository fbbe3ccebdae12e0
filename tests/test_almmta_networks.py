"""ALM-MTA networks, losses, propensity/IPW and front-door maths against NumPy oracles."""

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


def _cfg(encoder="attention", **kw):
    return tiny_model(encoder=encoder, **kw)


@pytest.fixture(scope="module", params=["attention", "gru"])
def model_and_batch(request):
    cfg = _cfg(request.param)
    model = am.ALMMTA(cfg, rngs=nnx.Rngs(0))
    batch = random_journeys(jax.random.key(1), 6, cfg)
    return model, batch


def _sigmoid(v):
    return 1.0 / (1.0 + np.exp(-v))


def _bce(logit, t):
    p = _sigmoid(np.asarray(logit, np.float64))
    return -(t * np.log(p) + (1 - t) * np.log(1 - p))


# --- networks --------------------------------------------------------------------


def test_forward_shapes_and_finite(model_and_batch):
    model, batch = model_and_batch
    enc = model.encode(batch)
    b, l = batch.touch_mask.shape
    cfg = model.config
    assert enc.mediators.shape == (b, l, cfg.d_mediator)
    assert enc.mediator.shape == (b, cfg.d_mediator)
    assert enc.treatment.shape == (b, cfg.d_model)
    assert model.proxy_logits(enc.mediators).shape == (b, l, cfg.num_proxy)
    assert model.discriminate(enc.mediator).shape == (b,)
    q = model.query(enc.mediator, enc.s)
    k = model.touch_keys(enc.e)
    np.testing.assert_allclose(jnp.linalg.norm(q, axis=-1), 1.0, atol=1e-4)
    np.testing.assert_allclose(jnp.linalg.norm(k, axis=-1), 1.0, atol=1e-4)
    assert np.all(np.isfinite(model(batch)))


def test_pooling_matches_definition(model_and_batch):
    """M = L_max^{-1/2} Σ mask a m and z = L_max^{-1/2} Σ mask a' e, recomputed in NumPy."""
    model, batch = model_and_batch
    enc = model.encode(batch)
    mask = np.asarray(batch.touch_mask, np.float64)
    scale = 1 / np.sqrt(model.config.max_len)
    # a_j = sigmoid(MLP_a([h_j; s])) and m_j = MLP_m(h_j), rebuilt from the encoder output.
    s_rep = jnp.broadcast_to(enc.s[:, None, :], enc.h.shape)
    gate_logits = model.mediator_gate(jnp.concatenate([enc.h, s_rep], axis=-1))[..., 0]
    a = _sigmoid(np.asarray(gate_logits, np.float64))
    m = np.asarray(model.mediator_mlp(enc.h), np.float64)
    m_ref = scale * np.einsum("bl,bl,bld->bd", mask, a, m)
    np.testing.assert_allclose(enc.mediator, m_ref, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(enc.gates, mask * a, rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(enc.mediators, m, rtol=1e-5, atol=1e-6)
    gates = _sigmoid(np.asarray(model.treatment_gate(enc.e)[..., 0], np.float64))
    z_ref = scale * np.einsum("bl,bl,bld->bd", mask, gates, enc.e)
    np.testing.assert_allclose(enc.treatment, z_ref, rtol=1e-5, atol=1e-6)
    assert np.all(np.asarray(enc.gates)[~np.asarray(batch.touch_mask)] == 0)


def test_padding_content_is_ignored(model_and_batch):
    model, batch = model_and_batch
    pad = ~batch.touch_mask
    noisy = batch._replace(
        touch_ids=jnp.where(pad[..., None], 2, batch.touch_ids),
        tfeat=jnp.where(pad[..., None], 9.0, batch.tfeat),
    )
    np.testing.assert_allclose(model(noisy), model(batch), rtol=1e-5, atol=1e-6)


def test_deleting_a_touch_changes_the_prediction(model_and_batch):
    """Un-normalized gates: removing a real touch moves the logit; removing padding does not."""
    model, batch = model_and_batch
    full = np.asarray(model(batch))
    mask = np.asarray(batch.touch_mask)
    for j in range(mask.shape[1]):
        keep = jnp.asarray(np.arange(mask.shape[1]) != j)[None, :].repeat(mask.shape[0], 0)
        out = np.asarray(model(batch, keep=keep))
        assert np.all(np.abs(out - full)[mask[:, j]] > 1e-7)
        np.testing.assert_allclose(out[~mask[:, j]], full[~mask[:, j]], rtol=1e-6, atol=1e-7)


def test_empty_journey_stays_finite(model_and_batch):
    model, batch = model_and_batch
    out = model(batch, keep=jnp.zeros_like(batch.touch_mask))
    assert np.all(np.isfinite(out))


def test_dropout_only_with_a_key(model_and_batch):
    model, batch = model_and_batch
    a = model.encode(batch).mediator
    np.testing.assert_array_equal(a, model.encode(batch).mediator)
    b = model.encode(batch, dropout_key=jax.random.key(3)).mediator
    assert not np.allclose(a, b)


def test_bad_batches_raise():
    cfg = _cfg()
    model = am.ALMMTA(cfg, rngs=nnx.Rngs(0))
    batch = random_journeys(jax.random.key(1), 6, cfg)
    with pytest.raises(ValueError, match="id fields"):
        model(batch._replace(touch_ids=batch.touch_ids[..., :1]))
    with pytest.raises(TypeError, match="touch_ids must be integer"):
        model(batch._replace(touch_ids=batch.touch_ids.astype(jnp.float32)))
    with pytest.raises(ValueError, match=r"batch.x has shape \(6, 2\)"):
        model(batch._replace(x=batch.x[:, :2]))
    with pytest.raises(TypeError, match="touch_mask must be bool"):
        model(batch._replace(touch_mask=batch.touch_mask.astype(jnp.int32)))
    with pytest.raises(TypeError, match="JourneyBatch"):
        model(tuple(batch))
    with pytest.raises(ValueError, match="encoder"):
        _cfg(encoder="lstm")
    with pytest.raises(ValueError, match="divisible"):
        _cfg(d_model=9)
    with pytest.raises(ValueError, match="vocab_sizes"):
        _cfg(vocab_sizes=())


# --- losses ----------------------------------------------------------------------


def test_outcome_proxy_adversary_losses_match_numpy():
    rng = np.random.default_rng(0)
    b, l, p = 7, 4, 2
    logits = rng.normal(size=b).astype(np.float32)
    y = rng.integers(0, 2, b).astype(np.float32)
    ipw = rng.uniform(0.2, 3, b).astype(np.float32)
    ref = np.sum(ipw * _bce(logits, y)) / ipw.sum()
    np.testing.assert_allclose(am.outcome_loss(logits, y, ipw), ref, rtol=1e-5)
    np.testing.assert_allclose(am.adversary_loss(logits, y), _bce(logits, y).mean(), rtol=1e-5)
    np.testing.assert_allclose(am.confusion_loss(logits), _bce(logits, 0.5).mean(), rtol=1e-5)
    pl = rng.normal(size=(b, l, p)).astype(np.float32)
    yp = rng.uniform(size=(b, l, p)).astype(np.float32)
    m = rng.uniform(size=(b, l)) < 0.4
    ref = _bce(pl, yp).mean(-1)[m].mean()
    np.testing.assert_allclose(am.proxy_loss(pl, yp, m), ref, rtol=1e-5)
    assert float(am.proxy_loss(pl, yp, np.zeros((b, l), bool))) == 0.0
    with pytest.raises(ValueError, match="ipw"):
        am.outcome_loss(logits, y, ipw[:3])
    with pytest.raises(ValueError, match="yp_mask"):
        am.proxy_loss(pl, yp, m[:, :2])


def _info_nce_numpy(q, k, pos, valid, queue, qvalid, t):
    b, l, _ = k.shape
    losses, hits = [], []
    for i in range(b):
        if pos[i].any():
            own = [q[i] @ k[i, j] if valid[i, j] else -np.inf for j in range(l)]
            hits.append(float(pos[i, int(np.argmax(own))]))
        negs = [q[i] @ k[c, j] / t for c in range(b) if c != i for j in range(l) if valid[c, j]]
        negs += [q[i] @ queue[n] / t for n in range(len(queue)) if qvalid[n]]
        negs = np.array(negs, np.float64)
        for j in range(l):
            if pos[i, j]:
                s = q[i] @ k[i, j] / t
                losses.append(-(s - np.log(np.exp(s) + np.exp(negs).sum())))
    if not losses:
        return 0.0, 0.0
    return np.mean(losses), np.mean(hits)


@settings(max_examples=15, deadline=None)
@given(seed=st.integers(0, 10_000), qfill=st.integers(0, 6))
def test_info_nce_matches_numpy(seed, qfill):
    rng = np.random.default_rng(seed)
    b, l, d, qn = 4, 3, 5, 6

    def unit(*shape):
        v = rng.normal(size=(*shape, d))
        return (v / np.linalg.norm(v, axis=-1, keepdims=True)).astype(np.float32)

    q, k, queue = unit(b), unit(b, l), unit(qn)
    valid = rng.uniform(size=(b, l)) < 0.8
    pos = valid & (rng.uniform(size=(b, l)) < 0.4)
    qvalid = np.arange(qn) < qfill
    loss, acc = am.info_nce_loss(q, k, pos, valid, queue, qvalid, 0.1)
    ref_loss, ref_acc = _info_nce_numpy(q, k, pos, valid, queue, qvalid, 0.1)
    np.testing.assert_allclose(loss, ref_loss, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(acc, ref_acc, atol=1e-6)


def test_info_nce_bad_shapes():
    q = jnp.ones((2, 3))
    with pytest.raises(ValueError, match="query"):
        am.info_nce_loss(
            q,
            jnp.ones((2, 4, 5)),
            jnp.ones((2, 4), bool),
            jnp.ones((2, 4), bool),
            jnp.ones((3, 5)),
            jnp.ones(3, bool),
        )
    with pytest.raises(ValueError, match="queue"):
        am.info_nce_loss(
            q,
            jnp.ones((2, 4, 3)),
            jnp.ones((2, 4), bool),
            jnp.ones((2, 4), bool),
            jnp.ones((3, 5)),
            jnp.ones(3, bool),
        )


# --- propensity and IPW ------------------------------------------------------------


def test_ipw_weights_match_numpy():
    rng = np.random.default_rng(1)
    n, l, c = 50, 4, 3
    logits = rng.normal(size=(n, c))
    log_e = logits - np.log(np.exp(logits).sum(1, keepdims=True))
    clusters = rng.integers(0, c, (n, l))
    mask = rng.uniform(size=(n, l)) < 0.8
    mask[0] = False
    freq = np.log(np.array([0.2, 0.3, 0.5]))
    w = am.ipw_weights(
        jnp.asarray(log_e, jnp.float32),
        clusters,
        mask,
        jnp.asarray(freq, jnp.float32),
        clip_percentiles=(5.0, 95.0),
    )
    ref = np.ones(n)
    for i in range(n):
        js = np.nonzero(mask[i])[0]
        if len(js):
            ref[i] = np.exp(np.mean([freq[clusters[i, j]] - log_e[i, clusters[i, j]] for j in js]))
    ref = np.clip(ref, np.percentile(ref, 5), np.percentile(ref, 95))
    ref /= ref.mean()
    np.testing.assert_allclose(w, ref, rtol=2e-4)
    assert abs(float(w.mean()) - 1) < 1e-5
    with pytest.raises(ValueError, match="clip_percentiles"):
        am.ipw_weights(log_e, clusters, mask, freq, clip_percentiles=(50.0, 10.0))
    with pytest.raises(TypeError, match="integer"):
        am.ipw_weights(log_e, clusters.astype(np.float32), mask, freq)


def test_fit_propensity_recovers_exposure_policy():
    """Cluster exposure depends on the sign of x_0; the fitted ê(c|x) must follow it."""
    rng = np.random.default_rng(2)
    n, l = 400, 6
    x = rng.normal(size=(n, 2)).astype(np.float32)
    p_c0 = np.where(x[:, 0] > 0, 0.8, 0.2)
    clusters = (rng.uniform(size=(n, l)) > p_c0[:, None]).astype(np.int32)
    mask = np.ones((n, l), bool)
    model = am.fit_propensity(x, clusters, mask, 2, key=jax.random.key(0), steps=300)
    probs = np.exp(np.asarray(model(jnp.asarray(x))))[:, 0]
    assert abs(probs[x[:, 0] > 0.5].mean() - 0.8) < 0.08
    assert abs(probs[x[:, 0] < -0.5].mean() - 0.2) < 0.08
    freq = np.exp(am.cluster_log_frequency(clusters, mask, 2))
    np.testing.assert_allclose(freq, [np.mean(clusters == 0), np.mean(clusters == 1)], rtol=1e-5)


# --- front door ------------------------------------------------------------------


def _discrete_scm(rng, nt=3, nm=2):
    """U -> T, U -> Y, T -> M -> Y with a hidden binary U (front-door world)."""
    pu = np.array([0.4, 0.6])
    pt_u = rng.dirichlet(np.ones(nt), size=2)  # [u, t]
    pm_t = rng.dirichlet(np.ones(nm), size=nt)  # [t, m]
    py_mu = rng.uniform(0.05, 0.95, size=(nm, 2))  # P(y=1 | m, u)
    return pu, pt_u, pm_t, py_mu


def test_frontdoor_sum_identifies_the_interventional_effect():
    """Pearl's front-door sum over observational P(t), P(m|t), P(y|m,t') equals P(y|do(t))."""
    rng = np.random.default_rng(3)
    pu, pt_u, pm_t, py_mu = _discrete_scm(rng)
    nt, nm = pm_t.shape
    joint_tu = pu[:, None] * pt_u  # [u, t]
    pt = joint_tu.sum(0)
    pu_t = joint_tu / pt[None, :]  # P(u | t)
    py_mt = np.einsum("mu,ut->mt", py_mu, pu_t)  # observational P(y | m, t)
    for t in range(nt):
        truth = sum(pu[u] * pm_t[t, m] * py_mu[m, u] for u in range(2) for m in range(nm))
        got = am.frontdoor_sum(
            jnp.asarray(py_mt, jnp.float32),
            jnp.asarray(pt, jnp.float32),
            jnp.asarray(pm_t[t], jnp.float32),
        )
        np.testing.assert_allclose(got, truth, rtol=1e-5)
    # The naive conditional differs (confounding is real in this world).
    naive = np.einsum("tm,mt->t", pm_t, py_mt)
    assert not np.allclose(
        naive, [sum(pu[u] * pm_t[t] @ py_mu[:, u] for u in range(2)) for t in range(nt)]
    )


def test_frontdoor_sum_bad_shapes():
    with pytest.raises(ValueError, match="treatment_weights"):
        am.frontdoor_sum(jnp.ones(3), jnp.ones(2))
    with pytest.raises(ValueError, match="mediator_weights"):
        am.frontdoor_sum(jnp.ones((2, 3)), jnp.ones(3) / 3, jnp.ones(3))
    # [K] outcome probabilities with [S = K] mediator weights: the mediator axis is missing.
    with pytest.raises(ValueError, match=r"outcome_probs must be \[S, K\]"):
        am.frontdoor_sum(jnp.ones(3), jnp.ones(3) / 3, jnp.ones(3) / 3)


def test_high_match_set_matches_numpy():
    rng = np.random.default_rng(4)
    r, l, d, c, k = 9, 3, 4, 5, 4
    keys = rng.normal(size=(r, l, d)).astype(np.float32)
    mask = rng.uniform(size=(r, l)) < 0.7
    mask[:, 0] = True
    clusters = rng.integers(0, c, (r, l)).astype(np.int32)
    pool = am.ReferencePool(jnp.zeros((r, 2)), keys, mask, clusters)
    q = rng.normal(size=d).astype(np.float32)
    lp = np.log(rng.dirichlet(np.ones(c))).astype(np.float32)
    lf = np.log(rng.dirichlet(np.ones(c))).astype(np.float32)
    scores = np.array([max(q @ keys[b, j] / 0.1 for j in range(l) if mask[b, j]) for b in range(r)])
    idx, pi = am.high_match_set(q, pool, k, log_propensity=lp, log_frequency=lf)
    np.testing.assert_array_equal(np.sort(idx), np.sort(np.argsort(-scores)[:k]))
    ratio = np.array(
        [
            np.mean([lp[clusters[b, j]] - lf[clusters[b, j]] for j in range(l) if mask[b, j]])
            for b in idx
        ]
    )
    np.testing.assert_allclose(pi, np.exp(ratio) / np.exp(ratio).sum(), rtol=1e-5)
    _, uni = am.high_match_set(q, pool, k)
    np.testing.assert_allclose(uni, np.full(k, 1 / k))
    with pytest.raises(ValueError, match="k must be"):
        am.high_match_set(q, pool, r + 1)
    # match_scores' own default temperature is 0.1 as well.
    np.testing.assert_allclose(am.match_scores(q, pool), scores, rtol=1e-5)
    # log_frequency must have exactly the clusters of log_propensity (longer too).
    for bad_lf in (lf[:-1], np.concatenate([lf, lf[:1]])):
        with pytest.raises(ValueError, match="log_frequency"):
            am.high_match_set(q, pool, k, log_propensity=lp, log_frequency=bad_lf)


def test_reference_pool_and_explicit_sum_over_whole_pool_is_mean(model_and_batch):
    """K = R with uniform π: the explicit mode averages the outcome head over the pool."""
    model, batch = model_and_batch
    ref = random_journeys(jax.random.key(5), 6, model.config)
    pool = am.build_reference_pool(model, ref, ref.touch_ids[..., 1])
    clusters = ref.touch_ids[..., 1]
    for bad in (clusters[:, :-1], jnp.concatenate([clusters, clusters[:, :1]], axis=1)):
        with pytest.raises(ValueError, match="clusters has shape"):
            am.build_reference_pool(model, ref, bad)
    enc = model.encode(ref)
    np.testing.assert_allclose(pool.treatment, enc.treatment, rtol=1e-6)
    u = model.encode(batch)
    probs = jax.nn.sigmoid(
        model.outcome_logit(
            jnp.repeat(u.mediator[:1], 6, 0), pool.treatment, jnp.repeat(u.s[:1], 6, 0)
        )
    )
    idx, pi = am.high_match_set(model.query(u.mediator, u.s)[0], pool, 6)
    got = am.frontdoor_sum(probs[idx], pi)
    np.testing.assert_allclose(got, probs.mean(), rtol=1e-5)
