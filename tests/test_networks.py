"""Tests for drgrad_jax.models: shapes, NumPy oracles, task labels, parameter counts."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

import drgrad_jax
from drgrad_jax import models

VOCABS = (5, 3, 7)
NUM_DENSE = 4
B = 6


def batch(seed=0, users=10):
    rng = np.random.default_rng(seed)
    cat = jnp.asarray(rng.integers(0, np.array(VOCABS), (B, len(VOCABS))), jnp.int32)
    dense = jnp.asarray(rng.normal(size=(B, NUM_DENSE)), jnp.float32)
    user = jnp.asarray(rng.integers(0, users, B), jnp.int32)
    return cat, dense, user


BUILDERS = {
    "shared_bottom": functools.partial(models.SharedBottom, VOCABS, NUM_DENSE, 3, bottom=(8,)),
    "mmoe": functools.partial(models.MMoE, VOCABS, NUM_DENSE, 3, num_experts=3, gate_hidden=(4,)),
    "ple": functools.partial(models.PLE, VOCABS, NUM_DENSE, 3, num_levels=2, num_shared=2),
    "split_mmoe_ppnet": functools.partial(
        models.SplitMMoE, VOCABS, NUM_DENSE, 3, num_experts=3, ppnet="gatenu", num_users=10
    ),
}


@pytest.fixture(scope="module", params=sorted(BUILDERS))
def built(request):
    return request.param, BUILDERS[request.param](rngs=nnx.Rngs(0))


def test_forward_is_heads_of_trunk_and_finite(built):
    name, model = built
    cat, dense, user = batch()
    logits = model(cat, dense, user)
    composed = model.heads(model.trunk(cat, dense, user))
    assert logits.shape == (B, 3)
    assert np.all(np.isfinite(logits))
    np.testing.assert_allclose(composed, logits, rtol=1e-6)


def test_task_of_labels_are_exact(built):
    """A leaf labelled task k must get zero gradient from every other task's output."""
    name, model = built
    cat, dense, user = batch(1)
    graphdef, params = models.params_of(model)
    labels = models.task_of(model)

    def outputs(p):
        return jnp.sum(nnx.merge(graphdef, p)(cat, dense, user), axis=0)

    jac = jax.jit(jax.jacrev(outputs))(params)
    flat_labels = jax.tree.leaves(labels)
    flat_jac = jax.tree.leaves(jac)
    assert len(flat_labels) == len(flat_jac)
    exclusive = 0
    for lab, j in zip(flat_labels, flat_jac):
        if lab == drgrad_jax.SHARED:
            continue
        exclusive += 1
        others = [k for k in range(3) if k != lab]
        assert np.all(np.asarray(j)[others] == 0), name
    assert exclusive > 0
    # Every tower is labelled by its task.
    assert set(flat_labels) >= {0, 1, 2}


def numpy_experts(pool, h, act=lambda x: np.maximum(x, 0)):
    """Slow expert pool ``[B, E, d]``: each expert's own MLP, one expert at a time."""
    layers = sorted(pool["kernels"])  # the pure dict keys an nnx.List by position
    out = []
    for e in range(pool["kernels"][0].shape[0]):
        x = h
        for w, b in ((pool["kernels"][i], pool["biases"][i]) for i in layers):
            x = act(x @ w[e] + b[e])
        out.append(x)
    return np.stack(out, axis=1)


def numpy_mmoe(params, cat, dense, offsets):
    """Slow MMoE forward from the parameter dict (relu experts, linear gates)."""
    p = jax.tree.map(np.asarray, params)
    table = p["encoder"]["table"]["embedding"]
    emb = [table[np.asarray(cat)[:, f] + offsets[f]] for f in range(len(offsets))]
    h = np.concatenate(emb + [np.asarray(dense)], axis=1)
    experts = numpy_experts(p["experts"], h)
    out = []
    for k in range(len(p["towers"])):
        g = p["gates"][k]["mlp"]["layers"][0]
        a = h @ g["kernel"] + g["bias"]
        a = np.exp(a - a.max(1, keepdims=True))
        a /= a.sum(1, keepdims=True)
        mix = np.einsum("be,bed->bd", a, experts)
        t = p["towers"][k]["mlp"]["layers"]
        hid = np.maximum(mix @ t[0]["kernel"] + t[0]["bias"], 0)
        out.append((hid @ t[1]["kernel"] + t[1]["bias"])[:, 0])
    return np.stack(out, axis=1)


@pytest.mark.parametrize("expert_hidden", [(5,), (6, 5, 3)])
def test_mmoe_matches_numpy_oracle(expert_hidden):
    model = models.MMoE(
        VOCABS, NUM_DENSE, 2, num_experts=4, expert_hidden=expert_hidden, rngs=nnx.Rngs(3)
    )
    cat, dense, _ = batch(4)
    _, params = models.params_of(model)
    offsets = np.cumsum((0,) + VOCABS[:-1])
    np.testing.assert_allclose(
        model(cat, dense), numpy_mmoe(params, cat, dense, offsets), rtol=1e-5, atol=1e-6
    )


def test_expert_pool_matches_per_expert_numpy_oracle():
    """The one-GEMM first layer and expert-major later layers: each expert's own MLP."""
    pool = models.ExpertPool(7, 5, (6, 4), activation="mish", rngs=nnx.Rngs(2))
    # Nonzero biases, so a bias given to the wrong expert shows.
    for b in pool.biases:
        b[...] = jnp.asarray(np.random.default_rng(1).normal(size=b.shape), jnp.float32)
    x = np.random.default_rng(0).normal(size=(9, 7)).astype(np.float32)
    p = jax.tree.map(np.asarray, models.params_of(pool)[1])
    mish = lambda z: z * np.tanh(np.log1p(np.exp(z)))
    np.testing.assert_allclose(pool(x), numpy_experts(p, x, mish), rtol=1e-5, atol=1e-6)


def _copies(reps, k):
    return jax.tree.map(lambda r: jnp.broadcast_to(r, (k,) + r.shape), reps)


SPLITS = [(name, ("trunk", "heads", "task_heads")) for name in sorted(BUILDERS)] + [
    ("split_mmoe_ppnet", ("drgrad_trunk", "drgrad_heads", "drgrad_task_heads"))
]


@pytest.mark.parametrize(("name", "split"), SPLITS)
def test_task_heads_give_the_logits_and_per_task_cotangents_of_heads(name, split):
    """On per-task copies: the same logits, and d(sum logits)/d(copy k) = row k of heads' Jacobian."""
    model = BUILDERS[name](rngs=nnx.Rngs(0))
    trunk, heads, task_heads = (getattr(model, method) for method in split)
    cat, dense, user = batch(2)
    reps = trunk(cat, dense, user)
    copies = jax.tree.map(lambda r: jnp.broadcast_to(r, (3,) + r.shape), reps)
    np.testing.assert_allclose(task_heads(copies), heads(reps), rtol=1e-6)
    jac = jax.jacrev(lambda r: jnp.sum(heads(r), axis=0))(reps)
    got = jax.grad(lambda c: jnp.sum(task_heads(c)))(copies)
    assert jax.tree.structure(got) == jax.tree.structure(jac)
    for g, j in zip(jax.tree.leaves(got), jax.tree.leaves(jac)):
        np.testing.assert_allclose(g, j, rtol=1e-5, atol=1e-7, err_msg=name)


def test_mix_logits_oracle_and_stability():
    rng = np.random.default_rng(0)
    z1 = rng.normal(size=20).astype(np.float32) * 3
    z2 = rng.normal(size=20).astype(np.float32) * 3
    mu = np.array([0.3, 0.7], np.float32)
    np.testing.assert_allclose(models.mix_logits(z1, z2, mu), 0.3 * z1 + 0.7 * z2, rtol=1e-6)
    sig = lambda z: 1 / (1 + np.exp(-z.astype(np.float64)))
    got = models.mix_logits(z1, z2, mu, "probs")
    np.testing.assert_allclose(sig(np.asarray(got)), 0.3 * sig(z1) + 0.7 * sig(z2), rtol=1e-5)
    extreme = models.mix_logits(jnp.array([80.0, -80.0]), jnp.array([-80.0, -80.0]), mu, "probs")
    assert np.all(np.isfinite(extreme))
    # mu is the updater's constant: no gradient flows into it.
    g = jax.grad(lambda m: models.mix_logits(jnp.ones(1), jnp.zeros(1), m).sum())(mu)
    assert np.all(g == 0)
    with pytest.raises(ValueError, match="mu has shape"):
        models.mix_logits(z1, z2, jnp.ones(3))
    with pytest.raises(ValueError, match="mix must be"):
        models.mix_logits(z1, z2, mu, "average")


@pytest.mark.parametrize("mix", ["logits", "probs"])
def test_split_mmoe_mu_moves_task_one_only(mix):
    model = models.SplitMMoE(VOCABS, NUM_DENSE, 3, num_experts=3, mix=mix, rngs=nnx.Rngs(0))
    cat, dense, _ = batch()
    a = model(cat, dense, mu=jnp.array([0.9, 0.1]))
    b = model(cat, dense, mu=jnp.array([0.2, 0.8]))
    default = model(cat, dense)
    np.testing.assert_allclose(default, model(cat, dense, mu=jnp.array([0.5, 0.5])), rtol=1e-6)
    assert not np.allclose(a[:, 0], b[:, 0])
    np.testing.assert_allclose(a[:, 1:], b[:, 1:], rtol=1e-6)
    reps = model.drgrad_trunk(cat, dense)
    expect = models.mix_logits(
        model.tower_dedicated(reps["v1"]),
        model.tower_shared(reps["vs"]),
        jnp.array([0.9, 0.1]),
        mix,
    )
    np.testing.assert_allclose(a[:, 0], expect, rtol=1e-6)


def test_split_mmoe_towers_identical_and_found_by_drgrad_paths():
    model = models.SplitMMoE(VOCABS, NUM_DENSE, 3, rngs=nnx.Rngs(0))
    _, params = models.params_of(model)
    shapes = lambda t: [x.shape for x in jax.tree.leaves(t)]
    assert shapes(params["tower_dedicated"]) == shapes(params["tower_shared"])
    assert shapes(params["tower_dedicated"]) == shapes(params["aux_towers"]["2"])
    towers = model.drgrad_towers("params")
    assert towers == {
        "dedicated": "tower_dedicated",
        "shared": "tower_shared",
        "aux:1": "aux_towers/1",
        "aux:2": "aux_towers/2",
    }
    paths = [
        "/".join(str(getattr(k, "key", k)) for k in path)
        for path, _ in jax.tree_util.tree_flatten_with_path(params)[0]
    ]
    for prefix in towers.values():
        assert any(p.startswith(prefix + "/") for p in paths), prefix
    assert set(model.drgrad_trunk(*batch()[:2])) == {"v1", "vs"}
    cat, dense, _ = batch()
    np.testing.assert_allclose(
        model.drgrad_heads(model.drgrad_trunk(cat, dense)), model(cat, dense), rtol=1e-6
    )


def test_personalized_gate_range_and_effect():
    gate = models.PersonalizedGate(4, 6, rngs=nnx.Rngs(0))
    np.testing.assert_allclose(gate(jnp.zeros((2, 4))), np.ones((2, 6)))
    out = gate(jnp.asarray(np.random.default_rng(0).normal(size=(50, 4)) * 10, jnp.float32))
    assert np.all((out >= 0) & (out <= 2)) and out.std() > 0.1
    nu = models.PersonalizedGate(4, 6, kind="gatenu", hidden=5, rngs=nnx.Rngs(0))
    assert len(nu.mlp.layers) == 2 and len(gate.mlp.layers) == 1
    with pytest.raises(ValueError, match="kind"):
        models.PersonalizedGate(4, 6, kind="ppnet", rngs=nnx.Rngs(0))
    # Split-MMoE with the gate: v_s depends on the user, v1 does not.
    m = models.SplitMMoE(VOCABS, NUM_DENSE, 2, ppnet="single", num_users=10, rngs=nnx.Rngs(1))
    cat, dense, user = batch()
    r1 = m.drgrad_trunk(cat, dense, user)
    r2 = m.drgrad_trunk(cat, dense, (user + 1) % 10)
    np.testing.assert_allclose(r1["v1"], r2["v1"])
    assert not np.allclose(r1["vs"], r2["vs"])
    with pytest.raises(ValueError, match="pass user ids"):
        m(cat, dense)


def test_census_released_structure():
    vocabs = tuple(range(3, 35))
    # Abstract build: the structure without running 32 fields' initializers.
    m = nnx.eval_shape(lambda: models.census_released(vocabs, 7, rngs=nnx.Rngs(0)))
    assert len(m.encoder.field_embed) == 32
    assert [e.embedding.shape for e in m.encoder.field_embed[:2]] == [(3, 1), (4, 2)]
    assert m.encoder.out_features == 128 and m.num_levels == 2
    assert [layer.out_features for layer in m.towers[0].mlp.layers] == [64, 1]
    assert m.specific_experts[0][0].out_features == 128
    assert m.task_gates[1][0].mlp.layers[0].out_features == 128
    assert m.encoder.activation == "mish" and m.towers[0].mlp.activation == "relu"
    rng = np.random.default_rng(0)
    cat = jnp.asarray(rng.integers(0, np.array(vocabs), (3, 32)), jnp.int32)
    out = jax.eval_shape(
        lambda: models.census_released(vocabs, 7, rngs=nnx.Rngs(0))(cat, jnp.ones((3, 7)))
    )
    assert out.shape == (3, 2)


def test_param_count_and_match_width():
    assert models.param_count(models.MLP(3, (4, 2), rngs=nnx.Rngs(0))) == 3 * 4 + 4 + 4 * 2 + 2
    mmoe = nnx.eval_shape(
        lambda: models.MMoE(
            (), 100, 2, num_experts=8, expert_hidden=(16,), tower=(8,), rngs=nnx.Rngs(0)
        )
    )
    manual = 100 * 16 * 8 + 16 * 8 + 2 * (100 * 8 + 8) + 2 * (16 * 8 + 8 + 8 + 1)
    assert models.param_count(mmoe) == manual
    build = lambda w: models.SharedBottom((), 100, 2, bottom=(w,), tower=(8,), rngs=nnx.Rngs(0))
    width, count = models.match_width(build, mmoe, high=512)
    abstract = lambda w: nnx.eval_shape(lambda: build(w))
    assert count == models.param_count(abstract(width))
    # The closest width: its neighbours are no closer.
    for other in (width - 1, width + 1):
        assert abs(models.param_count(abstract(other)) - manual) >= abs(count - manual)
    with pytest.raises(ValueError, match="low"):
        models.match_width(build, 10, low=5, high=2)


def test_bad_inputs_name_the_argument():
    m = models.MMoE(VOCABS, NUM_DENSE, 2, rngs=nnx.Rngs(0))
    cat, dense, _ = batch()
    with pytest.raises(ValueError, match=r"cat has shape"):
        m(cat[:, :2], dense)
    with pytest.raises(TypeError, match="integer ids"):
        m(cat.astype(jnp.float32), dense)
    with pytest.raises(ValueError, match=r"dense has shape"):
        m(cat, dense[:, :1])
    with pytest.raises(ValueError, match="activation"):
        models.MMoE(VOCABS, NUM_DENSE, 2, activation="swishy", rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match="num_tasks"):
        models.SplitMMoE(VOCABS, NUM_DENSE, 1, rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match="ppnet"):
        models.SplitMMoE(VOCABS, NUM_DENSE, 2, ppnet="pepnet", rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match="num_users"):
        models.SplitMMoE(VOCABS, NUM_DENSE, 2, ppnet="single", rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match="num_experts"):
        models.MMoE(VOCABS, NUM_DENSE, 2, num_experts=0, rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match="encoder"):
        models.PLE(VOCABS, NUM_DENSE, 2, encoder="onehot", rngs=nnx.Rngs(0))
