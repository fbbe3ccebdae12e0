"""Synthetic worlds with a known task relation, and the measurement that names it.

The measurement (``representation_cosine``) is checked against a NumPy oracle
on a hand-built model whose representation gradients are known; each world's
relation is checked from its construction (least-squares readings of the
observed factor, the shared cause in the residuals) and from converged linear
heads, where the sign must survive a flip of task 2's label; the personalized
world is checked to hand the user id to the personalized gate only.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from benchmarks import drgrad_synthetic as bench
from drgrad_jax import data, models

WORLDS = {
    "cooperate": data.cooperate_world,
    "conflict": data.conflict_world,
    "personalized": functools.partial(data.personalized_world, num_users=6),
    "paper": functools.partial(data.paper_world, cos_theta=-0.5),
    "compete": functools.partial(data.compete_world, directions=2),
}


def _flip_task2(d: data.MultiTaskData) -> data.MultiTaskData:
    def flip(s):
        return s._replace(labels=np.stack([s.labels[:, 0], 1.0 - s.labels[:, 1]], axis=1))

    return data.MultiTaskData(
        flip(d.train), flip(d.val), flip(d.test), d.vocab_sizes, d.num_dense, d.task_names
    )


def _readings(d: data.MultiTaskData):
    """Least-squares weights of each target on x, and the residuals' correlation."""
    x, t = d.train.dense.astype(np.float64), d.train.targets.astype(np.float64)
    x1 = np.concatenate([x, np.ones((len(x), 1))], axis=1)
    w = np.linalg.lstsq(x1, t, rcond=None)[0]
    res = t - x1 @ w
    cos = w[:-1, 0] @ w[:-1, 1] / np.linalg.norm(w[:-1, 0]) / np.linalg.norm(w[:-1, 1])
    return cos, np.corrcoef(res.T)[0, 1], w[:-1]


# --- every world: a function of its seed, with the documented shapes and rates -------


@pytest.mark.parametrize("name", sorted(WORLDS))
def test_world_is_a_function_of_its_seed_with_documented_shapes(name):
    make = WORLDS[name]
    kw = {} if name == "paper" else {"dim": 6}
    d = make(400, 100, 50, seed=3, **kw)
    again, other = make(400, 100, 50, seed=3, **kw), make(400, 100, 50, seed=4, **kw)
    splits = lambda w: jax.tree.leaves((w.train, w.val, w.test))  # noqa: E731
    for a, b in zip(splits(d), splits(again), strict=True):
        np.testing.assert_array_equal(a, b)
    assert d.description == again.description
    assert not np.array_equal(d.train.dense, other.train.dense)
    dim = 32 if name == "paper" else 6
    assert d.task_names == ("task1", "task2") and d.num_dense == dim
    assert [s.num_examples for s in (d.train, d.val, d.test)] == [400, 100, 50]
    assert d.train.dense.shape == (400, dim) and d.train.dense.dtype == np.float32
    assert d.train.cat.shape == (400, 0) and d.vocab_sizes == ()
    assert set(np.unique(d.train.labels)) <= {0.0, 1.0}
    np.testing.assert_array_equal(d.train.labels.mean(0), [0.5, 0.5])  # the training median
    median = np.median(d.train.targets, axis=0)
    np.testing.assert_array_equal(d.val.labels, (d.val.targets > median).astype(np.float32))
    assert (d.train.user is None) == (name != "personalized")


def test_bad_world_arguments_are_named():
    with pytest.raises(ValueError, match="relation"):
        data.relation_world(1.5, 10, 10, 10)
    with pytest.raises(ValueError, match="cause_scale"):
        data.conflict_world(10, 10, 10, cause_scale=-1.0)
    with pytest.raises(ValueError, match="num_val"):
        data.cooperate_world(10, 0, 10)
    with pytest.raises(ValueError, match="group_relations"):
        data.personalized_world(10, 10, 10, group_relations=(2.0,))
    with pytest.raises(ValueError, match="groups need"):
        data.personalized_world(10, 10, 10, num_users=1)
    with pytest.raises(ValueError, match="cos_theta"):
        data.paper_world(10, 10, 10, cos_theta=-2.0)
    with pytest.raises(ValueError, match="directions"):
        data.compete_world(10, 10, 10, directions=5, dim=8)
    with pytest.raises(ValueError, match="frequency"):
        data.compete_world(10, 10, 10, frequency=0.0)


# --- the construction ------------------------------------------------------------------


def test_cooperate_and_conflict_differ_only_in_the_sign_of_task_2s_reading():
    coop = data.cooperate_world(20_000, 10, 10, dim=8, seed=1)
    conf = data.conflict_world(20_000, 10, 10, dim=8, seed=1)
    np.testing.assert_array_equal(coop.train.dense, conf.train.dense)
    np.testing.assert_array_equal(coop.train.targets[:, 0], conf.train.targets[:, 0])
    cos_coop, res_coop, _ = _readings(coop)
    cos_conf, res_conf, _ = _readings(conf)
    assert cos_coop > 0.99 and cos_conf < -0.99  # task 2 reads the factor with sign rho
    # The hidden cause leaves errors of the same sign in both tasks, in both worlds.
    assert res_coop > 0.6 and res_conf > 0.6


def test_paper_world_as_printed_is_a_label_flip():
    agree = data.paper_world(20_000, 10, 10, cos_theta=0.5, seed=0).train.labels
    flip = data.paper_world(20_000, 10, 10, cos_theta=-0.5, seed=0)
    assert np.mean(agree[:, 0] == agree[:, 1]) > 0.99
    assert np.mean(flip.train.labels[:, 0] != flip.train.labels[:, 1]) > 0.99
    np.testing.assert_allclose(flip.train.dense.mean(0), 0.0, atol=1e-4)  # standardized inputs
    np.testing.assert_allclose(flip.train.dense.std(0), 1.0, atol=1e-3)


def test_compete_world_matches_the_moments_of_its_definition():
    """Moments of t_k = sum_j sin(w q_j^T x) / sqrt(m) + e_k, x ~ N(0, I), q_j orthonormal.

    For s ~ N(0, 1): E[sin(w s) s] = w exp(-w^2 / 2) (Stein), Var sin(w s) =
    (1 - exp(-2 w^2)) / 2. So the least-squares reading of t_k on x has norm
    w exp(-w^2 / 2) and the two tasks' readings are orthogonal (disjoint
    directions); Var t_k = (1 - exp(-2 w^2)) / 2 + noise^2; the tasks are
    independent, so t1 and t2 are uncorrelated, and so are their squares.
    """
    w, noise = 1.0, 0.3
    d = data.compete_world(200_000, 10, 10, directions=3, frequency=w, dim=8, noise_std=noise)
    x, t = d.train.dense.astype(np.float64), d.train.targets.astype(np.float64)
    read = np.linalg.lstsq(x, t, rcond=None)[0]  # [d, 2]
    np.testing.assert_allclose(np.linalg.norm(read, axis=0), w * np.exp(-w * w / 2), rtol=0.03)
    cos = read[:, 0] @ read[:, 1] / np.prod(np.linalg.norm(read, axis=0))
    assert abs(cos) < 0.03, cos
    np.testing.assert_allclose(t.var(0), (1 - np.exp(-2 * w * w)) / 2 + noise**2, rtol=0.02)
    assert abs(np.corrcoef(t.T)[0, 1]) < 0.01
    assert abs(np.corrcoef((t**2).T)[0, 1]) < 0.01
    # Each task reads exactly 3 directions: the rest of x is noise to it (an 8-dim
    # input, 6 directions used): the readings together span 2 dimensions of x, and
    # the squared targets' Stein matrix E[(t_k^2 - E t_k^2)(x x^T - I)] has rank 3.
    for k in (0, 1):
        c = (
            (t[:, k] ** 2 - (t[:, k] ** 2).mean())[:, None, None]
            * (x[:, :, None] * x[:, None, :] - np.eye(8))
        ).mean(0)
        ev = np.sort(np.abs(np.linalg.eigvalsh(c)))[::-1]
        assert ev[2] > 10 * ev[3], (k, ev)


# --- the measurement ---------------------------------------------------------------------


class _LinearOnInputs(nnx.Module):
    """trunk = the dense inputs; task k's logit = <a_k, x>: dL_k/dx_b = (sigmoid(z_kb) - y_kb) a_k / B."""

    def __init__(self, a):
        self.a = nnx.Param(jnp.asarray(a, jnp.float32))

    def trunk(self, cat, dense, user=None):
        return {"inputs": dense}

    def heads(self, reps, *, mu=None):
        return reps["inputs"] @ self.a[...].T


def _measure(a, dense, labels):
    graphdef, params = nnx.split(_LinearOnInputs(a))
    n = len(dense)
    batch = data.Split(np.zeros((n, 0), np.int32), dense, labels)
    return float(bench.representation_cosine(graphdef, params, batch))


def test_representation_cosine_matches_a_numpy_oracle():
    rng = np.random.default_rng(0)
    a = rng.normal(size=(2, 3))
    dense = rng.normal(size=(16, 3)).astype(np.float32)
    labels = rng.integers(0, 2, (16, 2)).astype(np.float32)
    r = 1.0 / (1.0 + np.exp(-dense @ a.T)) - labels  # [B, K] errors
    g1, g2 = np.outer(r[:, 0], a[0]).ravel(), np.outer(r[:, 1], a[1]).ravel()
    want = g1 @ g2 / np.linalg.norm(g1) / np.linalg.norm(g2)
    np.testing.assert_allclose(_measure(a, dense, labels), want, rtol=1e-5, atol=1e-6)
    # A flip of task 2's label and of its head leaves the cosine as it was.
    flipped = np.stack([labels[:, 0], 1.0 - labels[:, 1]], axis=1)
    np.testing.assert_allclose(_measure(a * [[1.0], [-1.0]], dense, flipped), want, rtol=1e-5)


def test_representation_cosine_known_signs():
    """Logits 0 (inputs orthogonal to the heads): the errors are 0.5 - y, the heads fixed."""
    dense = np.zeros((8, 2), np.float32)
    dense[:, 1] = np.arange(8)
    y = (np.arange(8) % 2).astype(np.float32)
    a = np.array([[1.0, 0.0], [1.0, 0.0]])
    assert _measure(a, dense, np.stack([y, y], 1)) == pytest.approx(1.0)
    assert _measure(a, dense, np.stack([y, 1 - y], 1)) == pytest.approx(-1.0)
    # Opposite heads and opposite labels: the same push on x, cooperation.
    assert _measure(a * [[1.0], [-1.0]], dense, np.stack([y, 1 - y], 1)) == pytest.approx(1.0)


def test_linear_heads_cannot_undo_the_conflict():
    """Converged logistic regressions on x: the sign is the world's, and survives the flip."""
    kw = dict(dim=4, seed=0)
    coop = bench.linear_head_cosine(data.cooperate_world(2000, 10, 10, **kw))
    conf_world = data.conflict_world(2000, 10, 10, **kw)
    conf = bench.linear_head_cosine(conf_world)
    assert coop > 0.3 and conf < -0.3, (coop, conf)
    assert bench.linear_head_cosine(_flip_task2(conf_world)) == pytest.approx(conf, abs=0.02)
    # MMoE's p = -0.5 is no conflict for a linear head, and the paper's is a label flip.
    mmoe = data.drgrad_synthetic("conflict", 2000, 10, 10, dim=4, num_sines=0, noise_std=0.5)
    assert bench.linear_head_cosine(mmoe) > -0.1
    assert bench.linear_head_cosine(data.paper_world(2000, 10, 10, cos_theta=-0.5)) > 0.9


# --- the personalized world --------------------------------------------------------------


def test_personalized_relation_is_set_by_the_group():
    d = data.personalized_world(30_000, 10, 10, num_users=8, dim=8, seed=2)
    group = d.train.user % 2
    sub = lambda g: data.MultiTaskData(  # noqa: E731
        d.train._replace(dense=d.train.dense[group == g], targets=d.train.targets[group == g]),
        d.val,
        d.test,
        (),
        8,
        d.task_names,
    )
    assert _readings(sub(0))[0] > 0.99 and _readings(sub(1))[0] < -0.99
    # Pooled over the groups, task 2 barely reads x at all.
    w = _readings(d)[2]
    assert np.linalg.norm(w[:, 1]) < 0.1 * np.linalg.norm(w[:, 0])


def test_personalized_group_reaches_only_the_gate():
    d = data.personalized_world(64, 16, 16, num_users=6, dim=5, seed=0)
    assert d.train.cat.shape == (64, 0) and d.vocab_sizes == () and d.num_users == 6
    s = jax.tree.map(jnp.asarray, d.train)
    other = (s.user + 1) % 6  # every row moves to the other group
    common = dict(num_experts=2, expert_hidden=(4,), tower=(3,))
    blind = {
        "MMoE": models.MMoE((), 5, 2, **common, rngs=nnx.Rngs(0)),
        "SharedBottom": models.SharedBottom((), 5, 2, bottom=(4,), tower=(3,), rngs=nnx.Rngs(0)),
        "PLE": models.PLE((), 5, 2, expert_hidden=(4,), rngs=nnx.Rngs(0)),
        "SplitMMoE": models.SplitMMoE((), 5, 2, **common, rngs=nnx.Rngs(0)),
    }
    for name, m in blind.items():
        np.testing.assert_array_equal(m(s.cat, s.dense, s.user), m(s.cat, s.dense, other), name)
    gated = models.SplitMMoE((), 5, 2, **common, ppnet="single", num_users=6, rngs=nnx.Rngs(0))
    assert not np.allclose(gated(s.cat, s.dense, s.user), gated(s.cat, s.dense, other))


@pytest.mark.slow
def test_a_plain_mmoe_measures_the_worlds_sign():
    """``task_cosine`` at a tiny size: > 0 when cooperating, < 0 when conflicting."""
    model = functools.partial(models.MMoE, (), 4, 2, num_experts=2, expert_hidden=(8,), tower=(4,))
    signs = {}
    for make in (data.cooperate_world, data.conflict_world):
        d = make(1000, 10, 10, dim=4, seed=0)
        r, _ = bench.task_cosine(
            bench.Method("MMoE", model), d, steps=150, batch_size=64, lr=1e-2, seeds=1
        )
        signs[make.__name__] = r["mean_task_cos"]
    assert signs["cooperate_world"] > 0.2 and signs["conflict_world"] < -0.1, signs
