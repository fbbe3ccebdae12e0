"""Baselines: LR closed form, GRL sign, DML recovery, reweighting."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

from almmta_jax import ModelConfig, TrainConfig, fit_dml
from almmta_jax._src import baselines as bl
from almmta_jax.data import JourneyBatch
from almmta_jax.testing import random_journeys

CFG = bl.BaselineConfig(
    (6, 3), d_x=3, max_len=5, channel_field=1, hidden=8, embed_dim=4, batch_size=16, num_epochs=3
)


@pytest.fixture(scope="module")
def data():
    return random_journeys(jax.random.key(0), 48, ModelConfig((6, 3), d_x=3, max_len=5))


def test_lr_deletion_matches_closed_form(data):
    model = bl.LogisticMTA(CFG, rngs=nnx.Rngs(2))
    uplift, prob = bl.deletion_uplift(lambda b, k: model(b, k), data)
    w = np.asarray(model.linear.kernel[...])[:, 0]
    k = CFG.num_channels
    rho = np.exp(-np.expm1(np.asarray(data.tfeat[..., 0])) / CFG.decay_hours)
    logit = np.log(prob) - np.log1p(-prob)
    ch = np.asarray(data.touch_ids[..., 1])
    drop = w[3 + ch] + w[3 + k + ch] * rho
    expected = np.where(
        data.touch_mask, prob[:, None] - 1 / (1 + np.exp(-(logit[:, None] - drop))), 0
    )
    np.testing.assert_allclose(uplift, expected, atol=1e-5)


def test_causalmta_channel_classifier_gradient_is_reversed(data):
    model = bl.CausalMTAPredictor(dataclasses.replace(CFG, grl_weight=2.0), rngs=nnx.Rngs(3))
    graphdef, params = nnx.split(model)

    @jax.jit
    def aux(p):
        return nnx.merge(graphdef, p).aux_loss(data)

    @jax.jit
    def plain(p):  # the same loss without the reversal layer
        m = nnx.merge(graphdef, p)
        hf, _ = m._states(data, data.touch_mask)
        prev = jnp.concatenate([jnp.zeros_like(hf[:, :1]), hf[:, :-1]], axis=1)
        ce = optax.softmax_cross_entropy_with_integer_labels(
            m.channel(prev), data.touch_ids[..., 1]
        )
        mm = data.touch_mask.astype(jnp.float32)
        return 0.5 * jnp.sum(ce * mm) / jnp.sum(mm)

    np.testing.assert_allclose(aux(params), plain(params), rtol=1e-6)
    g_rev, g = jax.jit(jax.grad(aux))(params), jax.jit(jax.grad(plain))(params)
    np.testing.assert_allclose(
        g_rev["channel"]["kernel"][...], g["channel"]["kernel"][...], rtol=1e-5
    )
    np.testing.assert_allclose(
        g_rev["fwd"]["dense_h"]["kernel"][...],
        -2.0 * g["fwd"]["dense_h"]["kernel"][...],
        rtol=1e-4,
        atol=1e-7,
    )


def test_training_loop_lowers_the_loss_and_vmaps(data):
    cfg = dataclasses.replace(CFG, num_epochs=6, learning_rate=1e-2)
    train = bl.make_baseline_train(lambda r: bl.LogisticMTA(cfg, rngs=r), cfg, data)
    runs = jax.jit(jax.vmap(train))(jax.random.split(jax.random.key(0), 2))
    assert runs.losses.shape == (2, 6)
    assert np.all(np.isfinite(runs.losses))
    assert np.all(runs.losses[:, -1] < runs.losses[:, 0])
    assert not np.allclose(runs.losses[0], runs.losses[1])  # the key matters


def test_one_compiled_loop_trains_on_data_passed_as_an_argument(data):
    cfg = dataclasses.replace(CFG, num_epochs=2, learning_rate=1e-2)
    other = random_journeys(jax.random.key(7), 48, ModelConfig((6, 3), d_x=3, max_len=5))
    fn = lambda r: bl.LogisticMTA(cfg, rngs=r)
    shared = jax.jit(bl.make_baseline_train(fn, cfg, data))
    key = jax.random.key(3)
    own = jax.jit(bl.make_baseline_train(fn, cfg, other))(key)
    via_arg = shared(key, other)
    np.testing.assert_allclose(via_arg.losses, own.losses, rtol=1e-5)
    assert not np.allclose(shared(key).losses, own.losses)  # the argument is used


def test_checkpoint_of_another_baseline_config_is_refused(data, tmp_path):
    """Same network shapes, another learning rate: refused, naming the field."""
    fn = lambda c: lambda r: bl.LogisticMTA(c, rngs=r)
    trainer = bl.make_baseline_train(fn(CFG), CFG, data)
    trainer.save(tmp_path / "ckpt", trainer.init(jax.random.key(0)))
    other = dataclasses.replace(CFG, learning_rate=CFG.learning_rate * 2)
    with pytest.raises(ValueError, match="learning_rate"):
        bl.make_baseline_train(fn(other), other, data).restore(tmp_path / "ckpt")
    restored = trainer.restore(tmp_path / "ckpt")  # the same config restores
    assert int(restored.step) == 0


def test_attribute_baseline_compiles_once_per_structure(data):
    before = bl._attribute_module._cache_size()
    outs = []
    for seed in range(3):
        model = bl.LogisticMTA(CFG, rngs=nnx.Rngs(seed))
        outs.append(bl.attribute_baseline(model, data, chunk=20))
    assert bl._attribute_module._cache_size() - before <= 1
    assert not np.allclose(outs[0][0], outs[1][0])  # each call used its own parameters
    # Chunking (with a padded last chunk) gives the one-call result.
    whole = bl.attribute_baseline(bl.LogisticMTA(CFG, rngs=nnx.Rngs(0)), data, chunk=48)
    np.testing.assert_allclose(outs[0][0], whole[0], atol=1e-6)
    np.testing.assert_allclose(outs[0][1], whole[1], atol=1e-6)


def test_causalmta_trains_with_journey_weights(data):
    cfg = dataclasses.replace(CFG, num_epochs=2, learning_rate=1e-2)
    w = bl.journey_balancing_weights(
        data.x, bl.channel_bags(data, 1, 3), jax.random.key(0), steps=50
    )
    weighted = data._replace(ipw=jnp.asarray(w))
    run = jax.jit(
        bl.make_baseline_train(lambda r: bl.CausalMTAPredictor(cfg, rngs=r), cfg, weighted)
    )(jax.random.key(0))
    assert np.all(np.isfinite(run.losses)) and run.losses[-1] < run.losses[0]
    leaves = jax.tree.leaves(run.params)
    assert all(np.all(np.isfinite(v)) for v in leaves)


def test_causalmta_first_step_loss_is_the_weighted_bce_by_hand(data):
    # One batch of all 48 journeys: the first step sees every row (in some order,
    # which the sums below do not depend on).
    cfg = dataclasses.replace(CFG, batch_size=48, num_epochs=1)
    w = np.asarray(
        bl.journey_balancing_weights(
            data.x, bl.channel_bags(data, 1, 3), jax.random.key(0), steps=50
        )
    )
    assert w.min() > 0 and w.max() / w.min() > 1.5  # weights whose sizes matter
    weighted = data._replace(ipw=jnp.asarray(w))
    trainer = bl.make_baseline_train(lambda r: bl.CausalMTAPredictor(cfg, rngs=r), cfg, weighted)
    state = trainer.init(jax.random.key(0))
    model = trainer.model(state)
    z = np.asarray(model(weighted), np.float64)
    y = np.asarray(data.y, np.float64)
    bce = np.logaddexp(0.0, z) - y * z  # -y log σ(z) - (1 - y) log(1 - σ(z))
    outcome = np.sum(w * bce) / np.sum(w)  # self-normalized (docs/almmta.md)
    # The channel classifier's term is checked on its own above.
    want = float(model.outcome_weight()) * outcome + float(model.aux_loss(weighted))
    _, losses = trainer.run(state, 1)
    np.testing.assert_allclose(float(np.ravel(losses)[0]), want, rtol=1e-5)
    unweighted = float(model.outcome_weight()) * np.mean(bce) + float(model.aux_loss(weighted))
    assert abs(unweighted - want) > 1e-4  # the check sees the weights


def test_proxy_direct_reads_the_label_through_the_proxy(data):
    cfg = dataclasses.replace(CFG, num_epochs=20, learning_rate=2e-2)
    run = jax.jit(bl.make_baseline_train(lambda r: bl.ProxyDirect(cfg, rngs=r), cfg, data))(
        jax.random.key(0)
    )
    _, prob = bl.attribute_baseline(run.model(), data)
    from almmta_jax.metrics import auc

    assert float(auc(data.y, prob)) > 0.95  # y' > 0 only on uploaders: the leak


def test_dml_recovers_linear_effects():
    rng = np.random.default_rng(0)
    n, l, k = 6000, 6, 3
    x = rng.normal(size=(n, 2)).astype(np.float32)
    logits = x @ rng.normal(size=(2, k))
    p = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    cdf = np.cumsum(p, 1)
    ch = (rng.random((n, l, 1)) > cdf[:, None, :]).sum(-1).clip(0, k - 1)
    # Variable lengths: with a fixed length the counts sum to L and only contrasts
    # between channels would be identified.
    mask = np.arange(l)[None, :] < rng.integers(1, l + 1, n)[:, None]
    theta = np.array([[0.05, 0.0, -0.03], [0.02, 0.01, 0.0], [0.0, -0.02, 0.01]])  # [1+d, K]
    counts = ((ch[..., None] == np.arange(k)) & mask[..., None]).sum(1)
    eff = np.concatenate([np.ones((len(x), 1)), x], 1) @ theta
    y = 0.3 + 0.05 * x[:, 0] + (eff * counts).sum(1) + rng.normal(size=len(x)) * 0.05
    batch = JourneyBatch(
        x=x,
        user_id=np.zeros(len(x), np.int32),
        touch_ids=ch[..., None].astype(np.int32),
        tfeat=np.zeros((len(x), l, 3), np.float32),
        touch_mask=mask,
        y=y.astype(np.float32),
        yp=np.zeros((len(x), l, 1), np.float32),
        yp_mask=np.zeros((len(x), l), bool),
        ipw=np.ones(len(x), np.float32),
    )
    model = fit_dml(batch, 0, k, ridge=1e-3)
    got = np.asarray(model.effects(x))
    rmse = np.sqrt(np.mean((got - eff) ** 2))
    assert rmse < 0.2 * eff.std(), (rmse, eff.std())
    # A model fitted with the treatment ignored would have no effect at all.
    assert np.corrcoef(got.ravel(), eff.ravel())[0, 1] > 0.95


def test_journey_weights_balance_a_confounded_channel():
    rng = np.random.default_rng(0)
    n = 4000
    u = rng.normal(size=(n, 1)).astype(np.float32)
    ch = (rng.random(n) < 1 / (1 + np.exp(-2 * u[:, 0]))).astype(np.float32)
    bags = np.stack([ch, 1 - ch], 1)
    w = bl.journey_balancing_weights(u, bags, jax.random.key(0), steps=400)
    assert np.isclose(w.mean(), 1.0, atol=1e-5) and np.all(w > 0)
    naive = np.corrcoef(u[:, 0], ch)[0, 1]
    mu = np.average(u[:, 0], weights=w)
    mc = np.average(ch, weights=w)
    cov = np.average((u[:, 0] - mu) * (ch - mc), weights=w)
    sd = np.sqrt(np.average((u[:, 0] - mu) ** 2, weights=w) * np.average((ch - mc) ** 2, weights=w))
    assert abs(cov / sd) < 0.5 * abs(naive)


def test_alm_mta_variants_are_configs():
    base = TrainConfig(ModelConfig((5,), d_x=2, max_len=4))
    assert bl.alm_mta_variant(base, "full") is base
    assert bl.alm_mta_variant(base, "no_contrastive").beta == 0.0
    assert bl.alm_mta_variant(base, "lambda0").lambda_max == 0.0
    with pytest.raises(ValueError, match="variant"):
        bl.alm_mta_variant(base, "nope")


def test_bad_inputs(data):
    with pytest.raises(ValueError, match="channel_field"):
        bl.BaselineConfig((4,), d_x=1, max_len=3, channel_field=1)
    with pytest.raises(ValueError, match="touch_ids has shape"):
        bl.make_baseline_train(
            lambda r: bl.LogisticMTA(CFG, rngs=r), dataclasses.replace(CFG, max_len=7), data
        )
    with pytest.raises(ValueError, match="fewer than batch_size"):
        bl.make_baseline_train(
            lambda r: bl.LogisticMTA(CFG, rngs=r), dataclasses.replace(CFG, batch_size=100), data
        )
    with pytest.raises(ValueError, match="must share N"):
        bl.journey_balancing_weights(np.zeros((3, 1)), np.zeros((4, 2)), jax.random.key(0))


def test_criteo_benchmark_falls_back_without_data(tmp_path, capsys):
    from benchmarks import almmta_criteo

    out = almmta_criteo.main(["--quick", "--data", str(tmp_path), "--no-results"])
    assert out["results"] == {} and "absent" in capsys.readouterr().out


def test_criteo_user_table_scaling_touches_the_user_tables_only():
    """Full-mode Criteo scales the user-id tables' updates and nothing else (docs/almmta.md, *Criteo training*)."""
    from almmta_jax import ALMMTA
    from benchmarks import almmta_criteo

    tx = almmta_criteo._scale_user_table(10.0)
    alm = ALMMTA(ModelConfig((6, 3), d_x=3, max_len=5, num_users=4, d_model=8), rngs=nnx.Rngs(0))
    user_cfg = dataclasses.replace(CFG, num_users=4)
    for model in (alm, bl.DNAMTA(user_cfg, rngs=nnx.Rngs(0))):
        params = nnx.state(model, nnx.Param)
        ones = jax.tree.map(jnp.ones_like, params)
        out, _ = tx.update(ones, tx.init(params), params)
        scaled = [
            jax.tree_util.keystr(path)
            for path, leaf in jax.tree_util.tree_leaves_with_path(out)
            if float(jnp.max(leaf)) == 10.0
        ]
        assert len(scaled) == 1 and scaled[0].endswith("['embedding'].value"), scaled
        assert "user" in scaled[0]
        n_leaves = len(jax.tree_util.tree_leaves(out))
        assert (
            sum(float(jnp.max(leaf)) == 1.0 for leaf in jax.tree_util.tree_leaves(out))
            == n_leaves - 1
        )
