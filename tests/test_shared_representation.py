"""Representation-level methods act at the layer the tasks share (MGDA-UB).

For every model, on inputs whose two tasks conflict (the second label is the
first one flipped): the per-task cotangents at the model's declared shared
representation (``trunk``) conflict and are not orthogonal by construction; the
trainer's representation-level PCGrad step differs from the plain summed step;
and its MGDA step equals a NumPy reference: the min-norm point of the convex
hull of the per-task gradients, solved by active-set enumeration, at a cut this
file writes out by hand from each model's submodules.
"""

import functools
import itertools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

import drgrad_jax
from drgrad_jax import data, models
from drgrad_jax._src.representation import task_heads_name

VOCABS, NUM_DENSE, N, USERS = (5, 4), 3, 32, 6


@pytest.fixture(scope="module")
def conflict():
    """Two tasks with opposite labels on the same rows: they conflict wherever they share."""
    rng = np.random.default_rng(0)
    y0 = rng.integers(0, 2, N).astype(np.float32)
    y0[:2] = (0.0, 1.0)

    def split():
        return data.Split(
            rng.integers(0, np.array(VOCABS), (N, len(VOCABS))).astype(np.int32),
            rng.normal(size=(N, NUM_DENSE)).astype(np.float32),
            np.stack([y0, 1.0 - y0], axis=1),
            rng.integers(0, USERS, N).astype(np.int32),
        )

    return data.MultiTaskData(
        split(), split(), split(), VOCABS, NUM_DENSE, ("a", "b"), num_users=USERS
    )


# --- each model's shared layer, written out from its submodules ------------------------


def _bottom_cut(m, cat, dense, user):
    return {"bottom": m.bottom(m.encoder(cat, dense))}


def _bottom_heads(m, reps):
    return jnp.stack([t(reps["bottom"]) for t in m.towers], axis=1)


def _mmoe_cut(m, cat, dense, user):
    h = m.encoder(cat, dense)
    return {"inputs": h, "experts": m.experts(h)}


def _mmoe_heads(m, reps):
    h, e = reps["inputs"], reps["experts"]
    return jnp.stack([t(g(h, e)) for g, t in zip(m.gates, m.towers)], axis=1)


def _ple_cut(m, cat, dense, user):
    """Every level below the last, and the last level's shared experts."""
    h = m.encoder(cat, dense)
    task_in, shared_in = [h] * m.num_tasks, h
    for level in range(m.num_levels - 1):
        own = [m.specific_experts[level][k](x) for k, x in enumerate(task_in)]
        common = m.shared_experts[level](shared_in)
        new = [
            m.task_gates[level][k](x, jnp.concatenate([own[k], common], axis=1))
            for k, x in enumerate(task_in)
        ]
        shared_in = m.shared_gates[level](shared_in, jnp.concatenate(own + [common], axis=1))
        task_in = new
    common = m.shared_experts[m.num_levels - 1](shared_in)
    if m.num_levels == 1:  # every task reads the encoder output
        return {"inputs": h, "shared_experts": common}
    return {"task_inputs": task_in, "shared_experts": common}


def _ple_heads(m, reps):
    last = m.num_levels - 1
    xs = reps["task_inputs"] if "task_inputs" in reps else [reps["inputs"]] * m.num_tasks
    out = []
    for k, x in enumerate(xs):
        e = jnp.concatenate([m.specific_experts[last][k](x), reps["shared_experts"]], axis=1)
        out.append(m.towers[k](m.task_gates[last][k](x, e)))
    return jnp.stack(out, axis=1)


def _split_cut(m, cat, dense, user):
    h = m.encoder(cat, dense)
    e = m.experts(h)
    vs = m.gate_shared(h, e) * m.personalized_gate(m.user_embed(user))
    return {"h": h, "experts": e, "vs": vs}


def _split_heads(m, reps):
    v1 = m.gate_dedicated(reps["h"], reps["experts"])
    z1 = models.mix_logits(m.tower_dedicated(v1), m.tower_shared(reps["vs"]), None, m.mix)
    return jnp.stack([z1, m.aux_towers["1"](reps["vs"])], axis=1)


def _tied(builder, task_parts):
    """``builder`` with task 1's own modules set to copies of task 0's.

    With the same head and flipped labels, the two tasks pull the layer they
    share in opposite directions (their cotangents there conflict).
    """

    def build(*, rngs):
        m = builder(rngs=rngs)
        for own_1, own_0 in task_parts(m):
            nnx.update(own_1, nnx.state(own_0))
        return m

    return build


def _ple_parts(m):
    parts = [(m.towers[1], m.towers[0])]
    for level in range(m.num_levels):
        parts.append((m.specific_experts[level][1], m.specific_experts[level][0]))
        parts.append((m.task_gates[level][1], m.task_gates[level][0]))
    return parts


_SB = functools.partial(models.SharedBottom, VOCABS, NUM_DENSE, 2, bottom=(6,), tower=(4,))
_MMOE = functools.partial(
    models.MMoE, VOCABS, NUM_DENSE, 2, num_experts=3, expert_hidden=(5,), tower=(4,)
)
_PLE = functools.partial(models.PLE, VOCABS, NUM_DENSE, 2, expert_hidden=(5,))
_SPLIT = functools.partial(
    models.SplitMMoE, VOCABS, NUM_DENSE, 2, num_experts=3, expert_hidden=(5,), tower=(4,),
    ppnet="single", num_users=USERS,
)  # fmt: skip

MODELS = {
    "shared_bottom": (
        _tied(_SB, lambda m: [(m.towers[1], m.towers[0])]),
        _bottom_cut,
        _bottom_heads,
    ),
    "mmoe": (
        _tied(_MMOE, lambda m: [(m.towers[1], m.towers[0]), (m.gates[1], m.gates[0])]),
        _mmoe_cut,
        _mmoe_heads,
    ),
    "ple": (_tied(functools.partial(_PLE, num_levels=2), _ple_parts), _ple_cut, _ple_heads),
    "ple_one_level": (
        _tied(functools.partial(_PLE, num_levels=1), _ple_parts),
        _ple_cut,
        _ple_heads,
    ),
    "split_mmoe": (
        _tied(_SPLIT, lambda m: [(m.aux_towers["1"], m.tower_shared)]),
        _split_cut,
        _split_heads,
    ),
}


def _task_losses(logits, labels):
    return jnp.mean(optax.sigmoid_binary_cross_entropy(logits, labels), axis=0)


def _recorder() -> optax.GradientTransformation:
    """An 'optimizer' that leaves the params alone and keeps the gradient it was given."""
    return optax.GradientTransformation(
        lambda p: jax.tree.map(jnp.zeros_like, p),
        lambda g, s, p=None: (jax.tree.map(jnp.zeros_like, g), g),
    )


def _one_step(builder, d, transform, space="activations"):
    """``(params, gradient)`` of the trainer's first step on the whole training split."""
    config = drgrad_jax.TrainConfig(
        builder, _recorder(), transform, space=space, batch_size=N, num_epochs=1
    )
    trainer = drgrad_jax.make_train(config, d)
    state = trainer.init(jax.random.key(0))
    batch = drgrad_jax.device_splits(d)[0]
    after, _ = trainer.step(state, batch)
    return state.params, after.opt_state[1]


def _flat(tree) -> np.ndarray:
    return np.concatenate([np.asarray(x, np.float64).ravel() for x in jax.tree.leaves(tree)])


def _rows(task_tree) -> np.ndarray:
    """``[K, n]``: a pytree of ``[K, ...]`` leaves, one flattened row per task."""
    leaves = [np.asarray(x, np.float64) for x in jax.tree.leaves(task_tree)]
    return np.concatenate([x.reshape(x.shape[0], -1) for x in leaves], axis=1)


def _rep_task_grads(model, d, trunk, heads):
    """``[K, n]`` per-task cotangents at ``trunk``'s output (jacrev, no library helper)."""
    s = d.train
    reps = trunk(model, jnp.asarray(s.cat), jnp.asarray(s.dense), jnp.asarray(s.user))
    jac = jax.jacrev(lambda r: _task_losses(heads(model, r), jnp.asarray(s.labels)))(reps)
    return reps, _rows(jac)


def numpy_min_norm(grads: np.ndarray) -> np.ndarray:
    """argmin over the simplex of ||w @ grads||^2, by trying every active set."""
    gram = grads @ grads.T
    k = gram.shape[0]
    best, best_value = None, np.inf
    for size in range(1, k + 1):
        for active in itertools.combinations(range(k), size):
            idx = list(active)
            # KKT of min w^T M w s.t. sum w = 1 on the active set: [2M 1; 1^T 0].
            kkt = np.zeros((size + 1, size + 1))
            kkt[:size, :size] = 2 * gram[np.ix_(idx, idx)]
            kkt[:size, size] = kkt[size, :size] = 1.0
            rhs = np.zeros(size + 1)
            rhs[size] = 1.0
            sol = np.linalg.lstsq(kkt, rhs, rcond=None)[0][:size]
            if np.any(sol < -1e-12):
                continue
            w = np.zeros(k)
            w[idx] = sol
            value = w @ gram @ w
            if value < best_value:
                best, best_value = w, value
    return best


# --- the tests --------------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(MODELS))
def test_declared_trunk_is_the_hand_written_shared_layer(conflict, name):
    builder, trunk, heads = MODELS[name]
    model = builder(rngs=nnx.Rngs(0))
    s = conflict.train
    cat, dense, user = jnp.asarray(s.cat), jnp.asarray(s.dense), jnp.asarray(s.user)
    np.testing.assert_allclose(
        _flat(model.trunk(cat, dense, user)), _flat(trunk(model, cat, dense, user)), rtol=1e-6
    )
    np.testing.assert_allclose(
        model.heads(model.trunk(cat, dense, user)), model(cat, dense, user), rtol=1e-6
    )


def _rep_grads_on(conflict, name):
    """``(model, per_task_rep_grads at model.trunk)`` on the conflict world's training rows."""
    builder, _, _ = MODELS[name]
    model = builder(rngs=nnx.Rngs(0))
    graphdef, params = models.params_of(model)
    s = conflict.train
    batch = (jnp.asarray(s.cat), jnp.asarray(s.dense), jnp.asarray(s.user))
    rg = drgrad_jax.per_task_rep_grads(
        lambda p: nnx.merge(graphdef, p).trunk(*batch),
        lambda p, r: _task_losses(nnx.merge(graphdef, p).heads(r), jnp.asarray(s.labels)),
        params,
    )
    return model, rg


@pytest.mark.parametrize("name", sorted(MODELS))
def test_tasks_conflict_at_the_declared_shared_representation(conflict, name):
    """The per-task cotangents at ``model.trunk`` overlap and point apart."""
    _, rg = _rep_grads_on(conflict, name)
    g = _rows(rg.rep_task_grads)
    overlap = np.abs(g[0]) @ np.abs(g[1]) / (np.linalg.norm(g[0]) * np.linalg.norm(g[1]))
    cos = g[0] @ g[1] / (np.linalg.norm(g[0]) * np.linalg.norm(g[1]))
    assert overlap > 0.1, f"{name}: the tasks barely share the representation ({overlap:.3g})"
    assert cos < -0.05, f"{name}: no conflict at the shared representation (cos {cos:.3g})"


@pytest.mark.parametrize("name", sorted(MODELS))
def test_heads_read_no_shared_parameter(conflict, name):
    """Every parameter labelled SHARED reaches the losses only through ``trunk``."""
    model, rg = _rep_grads_on(conflict, name)
    labels = jax.tree.leaves(models.task_of(model))
    shared = [g for g, lab in zip(jax.tree.leaves(rg.head_grads), labels) if lab < 0]
    assert shared and all(np.all(np.asarray(g) == 0) for g in shared)


@pytest.mark.parametrize("name", sorted(MODELS))
def test_representation_level_pcgrad_differs_from_the_sum(conflict, name):
    builder, _, _ = MODELS[name]
    _, pcgrad = _one_step(builder, conflict, drgrad_jax.pcgrad(seed=0))
    _, plain = _one_step(builder, conflict, None, space="params")
    labels = jax.tree.leaves(models.task_of(builder(rngs=nnx.Rngs(0))))
    a = np.concatenate([np.ravel(x) for x, lab in zip(jax.tree.leaves(pcgrad), labels) if lab < 0])
    b = np.concatenate([np.ravel(x) for x, lab in zip(jax.tree.leaves(plain), labels) if lab < 0])
    assert np.max(np.abs(a - b)) > 1e-2 * np.max(np.abs(b)), name


@pytest.mark.parametrize("name", sorted(MODELS))
def test_representation_level_mgda_is_the_min_norm_point_at_the_shared_layer(conflict, name):
    builder, trunk, heads = MODELS[name]
    params, got = _one_step(builder, conflict, drgrad_jax.mgda())
    graphdef, _ = nnx.split(builder(rngs=nnx.Rngs(0)))
    model = nnx.merge(graphdef, params)
    reps, g = _rep_task_grads(model, conflict, trunk, heads)
    w = numpy_min_norm(g)
    direction = w @ g
    leaves, treedef = jax.tree.flatten(reps)
    sizes = np.cumsum([0] + [x.size for x in leaves])
    cotangent = jax.tree.unflatten(
        treedef,
        [
            jnp.asarray(direction[a:b].reshape(x.shape), jnp.float32)
            for a, b, x in zip(sizes[:-1], sizes[1:], leaves)
        ],
    )
    s = conflict.train
    cat, dense, user = jnp.asarray(s.cat), jnp.asarray(s.dense), jnp.asarray(s.user)
    _, pull = jax.vjp(lambda p: trunk(nnx.merge(graphdef, p), cat, dense, user), params)
    through_trunk = pull(cotangent)[0]
    in_heads = jax.grad(
        lambda p: jnp.sum(_task_losses(heads(nnx.merge(graphdef, p), reps), s.labels))
    )(params)
    want = jax.tree.map(jnp.add, through_trunk, in_heads)
    scale = np.max(np.abs(_flat(want)))
    np.testing.assert_allclose(_flat(got), _flat(want), rtol=1e-4, atol=1e-5 * scale)


class PerTaskMixtures(models.MMoE):
    """An MMoE cut at its per-task gate mixtures: no tensor is read by two tasks."""

    def trunk(self, cat, dense, user=None):
        h = self.encoder(cat, dense)
        e = self.experts(h)
        return {f"task_{k}": g(h, e) for k, g in enumerate(self.gates)}

    def heads(self, reps, *, mu=None):
        return jnp.stack([t(reps[f"task_{k}"]) for k, t in enumerate(self.towers)], axis=1)


class NoTrunk(nnx.Module):
    def __init__(self, *, rngs):
        self.mmoe = models.MMoE(VOCABS, NUM_DENSE, 2, num_experts=2, rngs=rngs)

    def __call__(self, cat, dense, user=None, *, mu=None):
        return self.mmoe(cat, dense)


def test_a_representation_no_two_tasks_read_is_refused(conflict):
    per_task = functools.partial(PerTaskMixtures, VOCABS, NUM_DENSE, 2, num_experts=2)
    config = drgrad_jax.TrainConfig(
        per_task, mtl_transform=drgrad_jax.pcgrad(), space="activations", batch_size=N
    )
    with pytest.raises(ValueError, match="orthogonal by construction"):
        drgrad_jax.make_train(config, conflict)
    # The same model in parameter space is fine.
    drgrad_jax.make_train(drgrad_jax.TrainConfig(per_task, batch_size=N), conflict)
    no_trunk = drgrad_jax.TrainConfig(
        NoTrunk, mtl_transform=drgrad_jax.mgda(), space="activations", batch_size=N
    )
    with pytest.raises(ValueError, match="declares its shared representation"):
        drgrad_jax.make_train(no_trunk, conflict)


class SwappedCopies(models.MMoE):
    """An MMoE whose ``task_heads`` lets task k read the other task's copy."""

    def task_heads(self, reps, *, mu=None):
        return super().task_heads(jax.tree.map(lambda r: r[::-1], reps), mu=mu)


def test_task_heads_that_disagree_with_heads_are_refused_or_ignored(conflict):
    """Wrong copies are refused at ``make_train``; a subclass overriding ``heads`` alone keeps it."""
    swapped = functools.partial(SwappedCopies, VOCABS, NUM_DENSE, 2, num_experts=2)
    config = drgrad_jax.TrainConfig(
        swapped, mtl_transform=drgrad_jax.mgda(), space="activations", batch_size=N
    )
    with pytest.raises(ValueError, match="task k must read copy k"):
        drgrad_jax.make_train(config, conflict)
    mixtures = PerTaskMixtures(VOCABS, NUM_DENSE, 2, num_experts=2, rngs=nnx.Rngs(0))
    assert task_heads_name(mixtures, "heads") is None
    mmoe = models.MMoE(VOCABS, NUM_DENSE, 2, rngs=nnx.Rngs(0))
    assert task_heads_name(mmoe, "heads") == "task_heads"


@pytest.mark.parametrize("name", sorted(MODELS))
def test_task_heads_give_the_hand_written_cotangents(conflict, name):
    """``per_task_rep_grads(num_tasks=K)`` on ``task_heads``: the cut's jacrev, and what ``heads`` gives."""
    builder, trunk, heads = MODELS[name]
    model, joint = _rep_grads_on(conflict, name)
    graphdef, params = models.params_of(model)
    s = conflict.train
    batch = (jnp.asarray(s.cat), jnp.asarray(s.dense), jnp.asarray(s.user))
    fast = drgrad_jax.per_task_rep_grads(
        lambda p: nnx.merge(graphdef, p).trunk(*batch),
        lambda p, c: _task_losses(nnx.merge(graphdef, p).task_heads(c), jnp.asarray(s.labels)),
        params,
        num_tasks=2,
    )
    _, want = _rep_task_grads(model, conflict, trunk, heads)
    np.testing.assert_allclose(_rows(fast.rep_task_grads), want, rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(fast.losses, joint.losses, rtol=1e-6)
    np.testing.assert_allclose(
        _flat(fast.head_grads), _flat(joint.head_grads), rtol=1e-5, atol=1e-7
    )


def test_drgrad_at_activations_still_routes_at_v1_and_vs(conflict):
    """A drgrad transform cuts Split-MMoE at ``drgrad_trunk``, not at the shared layer."""
    builder = MODELS["split_mmoe"][0]
    model = builder(rngs=nnx.Rngs(0))
    tx = drgrad_jax.drgrad(model.drgrad_towers("activations"), space="activations", num_tasks=2)
    params, got = _one_step(builder, conflict, tx)
    graphdef, _ = nnx.split(model)
    s = drgrad_jax.device_splits(conflict)[0]
    rg = drgrad_jax.per_task_rep_grads(
        lambda p: nnx.merge(graphdef, p).drgrad_trunk(s.cat, s.dense, s.user),
        lambda p, r: _task_losses(nnx.merge(graphdef, p).drgrad_heads(r), s.labels),
        params,
    )
    assert set(rg.reps) == {"v1", "vs"}
    routed, _ = tx.update(rg.rep_task_grads, tx.init(rg.reps), rg.reps)
    np.testing.assert_allclose(_flat(got), _flat(rg.finish(routed)), rtol=1e-5, atol=1e-7)
