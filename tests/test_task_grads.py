"""The per-task-gradient contract: per_task_grads, per_task_rep_grads, gramian, checks."""

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

import drgrad_jax
from drgrad_jax import SHARED, gramian, per_task_grads, per_task_rep_grads
from drgrad_jax._src import gramian as gramian_module
from drgrad_jax._src import task_grads


def make_model(key, d_in=5, d_h=4, k=3):
    ks = jax.random.split(key, 2 + k)
    params = {
        "trunk": {"w": jax.random.normal(ks[0], (d_in, d_h)), "b": jnp.zeros(d_h)},
        "towers": [{"w": jax.random.normal(ks[2 + t], (d_h,))} for t in range(k)],
    }
    return params


def trunk_fn(p, x):
    return {"h": jnp.tanh(x @ p["trunk"]["w"] + p["trunk"]["b"][None, :])}


def heads_fn(p, reps, x):
    del x
    return jnp.stack([jnp.mean((reps["h"] @ t["w"]) ** 2) for t in p["towers"]])


def loss_fn(p, x):
    return heads_fn(p, trunk_fn(p, x), x)


@pytest.fixture(scope="module")
def setup():
    params = make_model(jax.random.key(0))
    x = jax.random.normal(jax.random.key(1), (6, 5))
    return params, x


def test_per_task_grads_equals_jacrev_with_and_without_labels(setup):
    params, x = setup
    want = jax.jacrev(loss_fn)(params, x)
    losses, got = jax.jit(per_task_grads, static_argnums=0)(loss_fn, params, x)
    np.testing.assert_allclose(losses, loss_fn(params, x), rtol=1e-6)
    for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(want)):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    task_of = {"towers/0": 0, "towers/1": 1, "towers/2": 2}
    _, labelled = per_task_grads(loss_fn, params, x, task_of=task_of)
    for a, b in zip(jax.tree.leaves(labelled), jax.tree.leaves(want)):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    # The same labels as a pytree prefix.
    prefix = {"trunk": SHARED, "towers": [0, 1, 2]}
    _, labelled2 = per_task_grads(loss_fn, params, x, task_of=prefix)
    for a, b in zip(jax.tree.leaves(labelled2), jax.tree.leaves(want)):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("at_once", [1, 2, 5, None])
def test_per_task_grads_equal_jacrev_however_many_tasks_run_at_once(setup, at_once):
    # K = 3: groups of 2 leave a remainder of 1; 5 is more than K.
    params, x = setup
    want = jax.jacrev(loss_fn)(params, x)
    _, got = per_task_grads(loss_fn, params, x, task_of={"towers/1": 1}, tasks_at_once=at_once)
    for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(want)):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    # Under a vmap over batches (seeds of a vmapped trainer), each batch's own gradients.
    xs = jnp.stack([x, 2.0 * x])
    batched = jax.vmap(lambda x: per_task_grads(loss_fn, params, x, tasks_at_once=at_once)[1])(xs)
    for i in range(2):
        want_i = jax.jacrev(loss_fn)(params, xs[i])
        for a, b in zip(jax.tree.leaves(batched), jax.tree.leaves(want_i)):
            np.testing.assert_allclose(a[i], b, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("bad", [0, -1, 1.5, True, "all"])
def test_per_task_grads_refuses_a_bad_tasks_at_once(setup, bad):
    params, x = setup
    with pytest.raises(ValueError, match="tasks_at_once must be a positive int"):
        per_task_grads(loss_fn, params, x, tasks_at_once=bad)


def test_per_task_grads_has_aux_and_bad_input(setup):
    params, x = setup
    losses, g, aux = per_task_grads(lambda p, x: (loss_fn(p, x), {"n": 3}), params, x, has_aux=True)
    assert aux == {"n": 3} and losses.shape == (3,)
    with pytest.raises(ValueError, match="vector of task losses"):
        per_task_grads(lambda p, x: jnp.sum(loss_fn(p, x)), params, x)
    with pytest.raises(ValueError, match="out of range"):
        per_task_grads(loss_fn, params, x, task_of={"towers/0": 7})
    with pytest.raises(ValueError, match="matches no params leaf"):
        per_task_grads(loss_fn, params, x, task_of={"tower": 0})
    with pytest.raises(ValueError, match="int task index"):
        per_task_grads(loss_fn, params, x, task_of={"trunk": "shared"})


def test_rep_grads_finish_equals_summed_gradient(setup):
    params, x = setup
    r = per_task_rep_grads(trunk_fn, heads_fn, params, x)
    assert r.rep_task_grads["h"].shape == (3, 6, 4)
    full = jax.grad(lambda p: jnp.sum(loss_fn(p, x)))(params)
    got = r.finish(drgrad_jax.sum_tasks(r.rep_task_grads))
    for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(full)):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    # Row k is task k's cotangent at the representation.
    for k in range(3):
        want = jax.grad(lambda h, k=k: heads_fn(params, {"h": h}, x)[k])(r.reps["h"])
        np.testing.assert_allclose(r.rep_task_grads["h"][k], want, rtol=1e-5, atol=1e-6)


def _task_heads(k_tasks=3, aux=False):
    def head(k):
        def f(p, reps, x):
            loss = heads_fn(p, reps, x)[k]
            return (loss, {"task": k}) if aux else loss

        return f

    return [head(k) for k in range(k_tasks)]


def test_rep_grads_from_separate_heads_equal_joint_heads(setup):
    """One callable per task gives the same losses, cotangents, head grads and finish."""
    params, x = setup
    joint = per_task_rep_grads(trunk_fn, heads_fn, params, x)
    sep = per_task_rep_grads(trunk_fn, _task_heads(), params, x)
    np.testing.assert_allclose(sep.losses, joint.losses, rtol=1e-6)
    np.testing.assert_allclose(
        sep.rep_task_grads["h"], joint.rep_task_grads["h"], rtol=1e-5, atol=1e-7
    )
    for a, b in zip(jax.tree.leaves(sep.head_grads), jax.tree.leaves(joint.head_grads)):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7)
    w = jnp.asarray([0.2, -1.0, 3.0])
    combo = lambda r: jnp.tensordot(w, r.rep_task_grads["h"], axes=1)
    for a, b in zip(
        jax.tree.leaves(sep.finish({"h": combo(sep)})),
        jax.tree.leaves(joint.finish({"h": combo(joint)})),
    ):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    with_aux = per_task_rep_grads(trunk_fn, _task_heads(aux=True), params, x, has_aux=True)
    assert with_aux.aux == ({"task": 0}, {"task": 1}, {"task": 2})


def copies_heads_fn(p, copies, x):
    """``heads_fn`` on one copy of the representation per task: task k reads copy k."""
    del x
    return jnp.stack([jnp.mean((copies["h"][k] @ t["w"]) ** 2) for k, t in enumerate(p["towers"])])


def test_rep_grads_from_per_task_copies_equal_joint_heads(setup):
    """``num_tasks``: one backward pass at the copies gives what K one-hot VJPs give."""
    params, x = setup
    joint = per_task_rep_grads(trunk_fn, heads_fn, params, x)
    fast = per_task_rep_grads(trunk_fn, copies_heads_fn, params, x, num_tasks=3)
    assert fast.reps["h"].shape == joint.reps["h"].shape == (6, 4)
    np.testing.assert_allclose(fast.losses, joint.losses, rtol=1e-6)
    np.testing.assert_allclose(
        fast.rep_task_grads["h"], joint.rep_task_grads["h"], rtol=1e-5, atol=1e-7
    )
    for a, b in zip(jax.tree.leaves(fast.head_grads), jax.tree.leaves(joint.head_grads)):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7)
    w = jnp.asarray([0.2, -1.0, 3.0])
    combo = lambda r: r.finish({"h": jnp.tensordot(w, r.rep_task_grads["h"], axes=1)})
    for a, b in zip(jax.tree.leaves(combo(fast)), jax.tree.leaves(combo(joint))):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    with_aux = per_task_rep_grads(
        trunk_fn, lambda p, c, x: (copies_heads_fn(p, c, x), "aux"), params, x,
        has_aux=True, num_tasks=3,
    )  # fmt: skip
    assert with_aux.aux == "aux"
    with pytest.raises(ValueError, match="the 2 task losses"):
        per_task_rep_grads(trunk_fn, copies_heads_fn, params, x, num_tasks=2)
    with pytest.raises(ValueError, match="num_tasks must be a positive int"):
        per_task_rep_grads(trunk_fn, copies_heads_fn, params, x, num_tasks=0)
    with pytest.raises(TypeError, match="num_tasks goes with one heads_fn"):
        per_task_rep_grads(trunk_fn, _task_heads(), params, x, num_tasks=3)


def test_separate_heads_bad_input(setup):
    params, x = setup
    with pytest.raises(ValueError, match="empty sequence"):
        per_task_rep_grads(trunk_fn, [], params, x)
    with pytest.raises(TypeError, match=r"heads_fn\[1\] must be callable"):
        per_task_rep_grads(trunk_fn, [_task_heads()[0], "tower"], params, x)
    with pytest.raises(ValueError, match=r"heads_fn\[0\] must return a scalar"):
        per_task_rep_grads(trunk_fn, [lambda p, r, x: heads_fn(p, r, x)], params, x)


def test_gramian_is_sum_over_leaves(setup):
    params, x = setup
    _, g = per_task_grads(loss_fn, params, x)
    flat = np.concatenate([np.asarray(v).reshape(3, -1) for v in jax.tree.leaves(g)], axis=1)
    np.testing.assert_allclose(gramian(g), flat @ flat.T, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("k", [1, 2, 5])
def test_gramian_one_pass_matches_float64(k):
    """Large leaves take the one-pass reduction: it agrees with a float64 product and is symmetric.

    One leaf is a multiple of the row width, one leaves a remainder (a prime
    size), one is small and takes the matrix product, and one is bfloat16.
    """
    rng = np.random.default_rng(k)
    sizes = {"even": (k, 64, 1024), "prime": (k, 65537), "small": (k, 7, 3)}
    g = {name: rng.normal(size=shape).astype(np.float32) for name, shape in sizes.items()}
    g["half"] = rng.normal(size=(k, 70000)).astype(jnp.bfloat16)
    assert 64 * 1024 >= gramian_module.ONE_PASS_MIN_SIZE > 7 * 3
    flat = np.concatenate([np.asarray(v, np.float64).reshape(k, -1) for v in g.values()], axis=1)
    got = np.asarray(jax.jit(gramian)(jax.tree.map(jnp.asarray, g)))
    assert got.dtype == np.float32
    np.testing.assert_array_equal(got, got.T)
    want = flat @ flat.T
    np.testing.assert_allclose(got, want, rtol=0, atol=2e-6 * np.abs(want).max())


def test_per_task_grads_on_nnx_state():
    class M(nnx.Module):
        def __init__(self, rngs):
            self.trunk = nnx.Linear(3, 4, rngs=rngs)
            self.heads = nnx.List([nnx.Linear(4, 1, rngs=rngs) for _ in range(2)])

    graphdef, state = nnx.split(M(nnx.Rngs(0)), nnx.Param)
    x = jnp.ones((2, 3))

    def losses(s):
        m = nnx.merge(graphdef, s)
        h = m.trunk(x)
        return jnp.stack([jnp.sum(head(h)) for head in m.heads])

    _, g = per_task_grads(losses, state, task_of={"heads/0": 0, "heads/1": 1})
    want = jax.jacrev(losses)(state)
    for a, b in zip(jax.tree.leaves(g), jax.tree.leaves(want)):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


def test_drgrad_activation_space_end_to_end():
    """Routing at (v1, v_s) then one trunk VJP equals routing the cotangents by hand."""
    key = jax.random.key(3)
    ks = jax.random.split(key, 6)
    params = {
        "g1": jax.random.normal(ks[0], (5, 4)),
        "gs": jax.random.normal(ks[1], (5, 4)),
        "t1a": jax.random.normal(ks[2], (4,)),
        "t1b": jax.random.normal(ks[3], (4,)),
        "t2": jax.random.normal(ks[4], (4,)),
    }
    x = jax.random.normal(ks[5], (8, 5))
    y = (x[:, 0] > 0).astype(jnp.float32)

    def trunk(p, x):
        return {"v1": jnp.tanh(x @ p["g1"]), "vs": jnp.tanh(x @ p["gs"])}

    def heads(p, r, x):
        z1 = 0.5 * r["v1"] @ p["t1a"] + 0.5 * r["vs"] @ p["t1b"]
        z2 = r["vs"] @ p["t2"]
        bce = lambda z: jnp.mean(jax.nn.softplus(z) - y * z)
        return jnp.stack([bce(z1), bce(z2)])

    rg = per_task_rep_grads(trunk, heads, params, x)
    tx = drgrad_jax.drgrad({"dedicated": "v1", "shared": "vs"}, space="activations", num_tasks=2)
    routed, state = tx.update(rg.rep_task_grads, tx.init(rg.reps), rg.reps)
    grads = rg.finish(routed)
    # By hand: route the flattened cotangents, pull back through the trunk.
    g1p, g1pp = rg.rep_task_grads["v1"][0], rg.rep_task_grads["vs"][0]
    g2 = rg.rep_task_grads["vs"][1]
    r_ded, r_sh, _ = drgrad_jax.route([g1p], [g1pp], [g2[None]])
    _, vjp = jax.vjp(lambda p: trunk(p, x), params)
    manual = vjp({"v1": g1p + r_ded[0], "vs": g1pp + g2 + r_sh[0]})[0]
    head_grads = jax.grad(lambda p: jnp.sum(heads(p, rg.reps, x)))(params)
    for name in ("g1", "gs"):
        np.testing.assert_allclose(grads[name], manual[name], rtol=1e-5, atol=1e-6)
    for name in ("t1a", "t1b", "t2"):
        np.testing.assert_allclose(grads[name], head_grads[name], rtol=1e-5, atol=1e-6)
    assert state.diagnostics.xi_aux.shape == (1, 1)


def test_summed_shared_layout_gives_drgrad_the_same_update(setup):
    """shared='summed' keeps the task sum of shared leaves; DRGrad's update is unchanged."""
    params, x = setup
    towers = {"dedicated": "towers/0", "shared": "towers/1", "aux:2": "towers/2"}
    task_of = {"towers/0": 0, "towers/1": 0, "towers/2": 2}
    _, full = per_task_grads(loss_fn, params, x, task_of=task_of)
    _, summed = per_task_grads(loss_fn, params, x, task_of=task_of, shared="summed")
    np.testing.assert_allclose(summed["trunk"]["w"][1], 0.0)
    np.testing.assert_allclose(
        summed["trunk"]["w"][0], full["trunk"]["w"].sum(0), rtol=1e-5, atol=1e-6
    )
    tx = drgrad_jax.drgrad(towers)
    a, _ = tx.update(full, tx.init(params), params)
    b, _ = tx.update(summed, tx.init(params), params)
    for u, v in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
        np.testing.assert_allclose(u, v, rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="shared must be"):
        per_task_grads(loss_fn, params, x, shared="sum")


class _CountState(NamedTuple):
    count: jax.Array


def _grads_and_gramian(seed, shapes, magnitude):
    """Float64 Gaussian task gradients (leaves of ``shapes``) times ``magnitude``, and their Gramian."""
    rng = np.random.default_rng(seed)
    g64 = {name: rng.normal(size=shape) * magnitude for name, shape in shapes.items()}
    flat = np.concatenate([g.reshape(g.shape[0], -1) for g in jax.tree.leaves(g64)], axis=1)
    return g64, flat @ flat.T


@pytest.mark.parametrize("magnitude", [1e-25, 1.0, 1e20])
def test_gramian_weighting_combines_the_weights_of_the_unscaled_gramian(magnitude):
    # weights_fn(G) = G 1 / trace(G) is scale-free (scale_power 0), so the update
    # is sum_k w_k g_k with w from the float64 Gramian of the gradients as given,
    # whether they are tiny, unit or huge (float32 G G^T alone under/overflows).
    g64, gram = _grads_and_gramian(3, {"a": (3, 4), "b": (3, 2, 3)}, magnitude)
    w = gram.sum(1) / np.trace(gram)
    grads = jax.tree.map(lambda g: jnp.asarray(g, jnp.float32), g64)
    tx = gramian_module.gramian_weighting(lambda G: G.sum(1) / jnp.trace(G), _CountState)
    update, state = tx.update(grads, tx.init(None))
    for got, g in zip(jax.tree.leaves(update), jax.tree.leaves(g64)):
        np.testing.assert_allclose(got, np.tensordot(w, g, axes=1), rtol=1e-5)
    assert int(state.count) == 1


@pytest.mark.parametrize(
    "k, magnitude",
    [(3, 1e-28), (3, 1e-12), (3, 1.0), (3, 1e16), (3, 1e30), (10, 1e-28), (10, 1e30)],
)
def test_scaled_gramian_is_the_float64_gramian_over_a_power_of_two(k, magnitude):
    # One large leaf (the one-pass reduction with a remainder at K = 3; matrix
    # products at K = 10) and one small leaf (a matrix product); magnitudes where
    # float32 G G^T alone would underflow (1e-28), overflow (1e30), or be fine.
    g64, want = _grads_and_gramian(7, {"big": (k, 70001), "small": (k, 5, 4)}, magnitude)
    gram, s = jax.jit(gramian_module.scaled_gramian)(jax.tree.map(jnp.asarray, g64))
    s = float(s)
    assert s > 0 and np.log2(s) == np.round(np.log2(s))
    np.testing.assert_allclose(np.asarray(gram, np.float64), want / s**2, rtol=1e-5)
    # s is the power of two nearest the largest task-gradient norm.
    assert 0.5 <= np.max(np.diag(want)) / s**2 <= 2.0
    np.testing.assert_array_equal(gram, np.asarray(gram).T)


def test_scaled_gramian_of_zero_or_wildly_different_norms():
    gram, s = gramian_module.scaled_gramian({"w": jnp.zeros((2, 70000))})
    assert float(s) == 1.0 and not np.any(np.asarray(gram))
    # Norms 1e-20 and 1e20 together: the large one sets the scale, the small one
    # vanishes next to it, and nothing is infinite.
    g = np.random.default_rng(0).normal(size=(2, 70000)) * np.array([[1e-20], [1e20]])
    gram, s = gramian_module.scaled_gramian({"w": jnp.asarray(g, jnp.float32)})
    assert np.all(np.isfinite(gram))
    np.testing.assert_allclose(float(gram[1, 1]) * float(s) ** 2, np.sum(g[1] ** 2), rtol=1e-5)
    assert abs(float(gram[0, 0])) < 1e-30
    # A squared norm of 2**127 is finite in float32, but dividing it by s**2 =
    # 2**128 would leave float32's normal range: the next scale is used.
    g = np.zeros((2, 70000), np.float32)
    g[0, 0], g[1, 1] = 2.0**63.5, 2.0**40
    gram, s = gramian_module.scaled_gramian({"w": jnp.asarray(g)})
    want = np.diag([2.0**127, 2.0**80]) / float(s) ** 2
    np.testing.assert_allclose(np.asarray(gram, np.float64), want, rtol=1e-6)


def test_longest_task_of_prefix_wins_whichever_comes_first(setup):
    params, _ = setup
    paths = task_grads.leaf_paths(params)
    # Dicts flatten in sorted key order, which puts a prefix before its
    # extensions; a leading "/" (stripped) sorts the longer prefix first.
    for task_of in (
        {"towers": 0, "towers/1/w": 2},
        {"/towers/1/w": 2, "towers": 0},
    ):
        labels = task_grads.leaf_task_labels(task_of, params)
        want = [2 if p == "towers/1/w" else 0 if p.startswith("towers/") else SHARED for p in paths]
        assert labels == want, (task_of, paths)


def test_task_dots_are_the_inner_products_with_one_tree():
    rng = np.random.default_rng(4)
    g = {"a": rng.normal(size=(3, 4)), "b": rng.normal(size=(3, 2, 3))}
    other = {"a": rng.normal(size=(4,)), "b": rng.normal(size=(2, 3))}
    want = sum(g[n].reshape(3, -1) @ other[n].reshape(-1) for n in g)
    got = task_grads.task_dots(
        jax.tree.map(jnp.asarray, g), jax.tree.map(lambda o: jnp.asarray(o, jnp.float32), other)
    )
    np.testing.assert_allclose(got, want, rtol=1e-5)


@pytest.mark.parametrize("k", [3, 17])
def test_sum_tasks_is_the_sum_over_the_task_axis(k):
    # Up to 16 tasks the rows are added one by one; above, one reduction.
    g = {"w": jnp.asarray(np.random.default_rng(k).normal(size=(k, 3, 2)), jnp.float32)}
    np.testing.assert_allclose(drgrad_jax.sum_tasks(g)["w"], np.sum(g["w"], axis=0), rtol=1e-5)


def test_rep_grads_from_one_task_copy_are_the_gradient_at_the_representation(setup):
    params, x = setup
    one = lambda p, reps, x: heads_fn(p, {"h": reps["h"]}, x)[:1]
    copies = lambda p, c, x: one(p, {"h": c["h"][0]}, x)
    got = per_task_rep_grads(trunk_fn, copies, params, x, num_tasks=1)
    reps = trunk_fn(params, x)
    want = jax.grad(lambda r: one(params, r, x)[0])(reps)
    np.testing.assert_allclose(got.rep_task_grads["h"][0], want["h"], rtol=1e-5, atol=1e-7)


def test_disagreeing_task_axes_are_named_leaf_by_leaf():
    g = {"a": jnp.zeros((2, 3)), "b": jnp.zeros((3, 3))}
    with pytest.raises(
        ValueError,
        match=r"task_grads\['b'\] has task-axis length 3 but "
        r"task_grads\['a'\] has 2",
    ):
        drgrad_jax.check_task_grads(g)
