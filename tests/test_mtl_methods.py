"""Oracle, property, degenerate-input and bad-input tests of the multi-task method zoo."""

from __future__ import annotations

import functools
import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.stats as sst
from hypothesis import given, settings
from hypothesis import strategies as st

import drgrad_jax as dj
from drgrad_jax._src.pcgrad import random_task_orders
from tests import mtl_references as ref
from tests.zoo_inputs import DIM
from tests.zoo_inputs import apply as _apply
from tests.zoo_inputs import close as _close
from tests.zoo_inputs import flat as _flat
from tests.zoo_inputs import jitted as _jitted
from tests.zoo_inputs import params as _params
from tests.zoo_inputs import random_g as _random_g
from tests.zoo_inputs import tree as _tree

KS = (2, 3, 5)
TRIALS = 4


# --- oracle tests beyond tests/zoo_checks.CHECKS (test_zoo_oracles.py runs those) ---


@pytest.mark.parametrize("k", KS)
def test_linear_scalarization_matches_reference(k):
    rng = np.random.default_rng(100 + k)
    for _ in range(TRIALS):
        g = _random_g(rng, k)
        w = rng.uniform(0.1, 2.0, size=k).astype(np.float32)
        d, _ = _apply("linear_scalarization", g, weights=None)
        _close(d, ref.linear_scalarization(g, np.ones(k)))
        tx = dj.linear_scalarization(jnp.asarray(w))
        d = _flat(tx.update(_tree(g), tx.init(_params()), _params())[0])
        _close(d, ref.linear_scalarization(g, w.astype(np.float64)))


def test_pcgrad_is_reproducible_and_orders_change():
    g = _random_g(np.random.default_rng(0), 5)
    tx = dj.pcgrad(seed=7)
    s1, s2 = tx.init(_params()), tx.init(_params())
    step = jax.jit(tx.update)
    outs = []
    for _ in range(4):
        d1, s1 = step(_tree(g), s1)
        d2, s2 = step(_tree(g), s2)
        np.testing.assert_array_equal(_flat(d1), _flat(d2))
        outs.append(s1.key)
    orders = [np.asarray(random_task_orders(jax.random.split(k)[1], 5)) for k in outs]
    assert any(not np.array_equal(orders[0], o) for o in orders[1:])


def test_random_task_orders_are_independent_uniform_permutations():
    # Orders are checked against their definition here, so the oracle tests above may
    # take the orders from the same helper.
    k, n = 3, 6000
    keys = jax.random.split(jax.random.key(0), n)
    orders = np.asarray(jax.vmap(lambda key: random_task_orders(key, k))(keys))
    assert orders.shape == (n, k, k)
    np.testing.assert_array_equal(
        np.sort(orders, axis=-1), np.broadcast_to(np.arange(k), orders.shape)
    )
    perms = {p: i for i, p in enumerate(itertools.permutations(range(k)))}
    ids = np.array([[perms[tuple(row)] for row in o] for o in orders])  # [n, K] in [0, 6)
    for i in range(k):  # each row uniform over the 6 permutations
        assert sst.chisquare(np.bincount(ids[:, i], minlength=6)).pvalue > 1e-3
    for i, j in itertools.combinations(range(k), 2):  # pairs of rows jointly uniform over 36
        assert sst.chisquare(np.bincount(6 * ids[:, i] + ids[:, j], minlength=36)).pvalue > 1e-3
    # A new key each step: consecutive states' orders are not the same draw.
    assert (ids[1:] != ids[:-1]).any(axis=1).mean() > 0.9


# Three pairwise conflicting tasks: every relative order of a task's two partners
# gives a different PCGrad / GradVac update, so an update reveals the orders used.
_CONFLICT = np.array(
    [
        [1.0, 0.0, 0.0, 0.1, 0.0, 0.0, 0.0],
        [-0.78, 1.04, 0.0, 0.0, 0.1, 0.0, 0.0],
        [-0.35, -0.49, 0.21, 0.0, 0.0, 0.1, 0.0],
    ]
)
_ORDER_SETS = [
    np.array(
        [
            [i, *(others if flip else others[::-1])]
            for i, others, flip in zip(range(3), ([1, 2], [0, 2], [0, 1]), flips, strict=True)
        ]
    )
    for flips in itertools.product((0, 1), repeat=3)
]


def _which_orders(d, candidates):
    dist = [np.abs(d - c).max() for c in candidates]
    best = int(np.argmin(dist))
    assert dist[best] < 1e-5, f"the update matches no set of task orders: {dist}"
    gap = sorted(dist)[1]
    assert gap > 1e-3, "two order sets give the same update; the test cannot tell them apart"
    return best


@pytest.mark.parametrize("name", ["pcgrad", "gradvac"])
def test_task_orders_are_uniform_over_steps_without_the_helper(name):
    """The update of every step equals the reference under one of the 8 order sets.

    Over 400 steps each set occurs about equally often (a chi-square test): each task's
    order is drawn anew, independently of the other tasks' and of the last step's.
    """
    g = _CONFLICT.astype(np.float32).astype(np.float64)
    kwargs = {"seed": 5} if name == "pcgrad" else {"seed": 5, "num_tasks": 3, "beta": 0.3}
    tx, _ = _jitted(name, **kwargs)
    state = tx.init(_params())
    seen = []
    for _ in range(400):
        d, state = _apply(name, g, state, **kwargs)
        if name == "pcgrad":
            seen.append(_which_orders(d, [ref.pcgrad(g, o) for o in _ORDER_SETS]))
        else:
            outs = [ref.gradvac(g, o, np.zeros((3, 3)), 0.3) for o in _ORDER_SETS]
            seen.append(_which_orders(d, [o[0] for o in outs]))
            _close(np.asarray(state.targets), outs[seen[-1]][1])
            # Learned targets make some orders agree; restart them, keep the key chain.
            state = state._replace(targets=jnp.zeros((3, 3), jnp.float32))
    counts = np.bincount(seen, minlength=8)
    assert sst.chisquare(counts).pvalue > 1e-3, counts
    seen = np.array(seen)
    assert sst.chisquare(np.bincount(8 * seen[:-1] + seen[1:], minlength=64)).pvalue > 1e-3


@functools.cache
def _cagrad_with_traced_c():
    def run(task_grads, c):
        tx = dj.cagrad(c)
        return tx.update(task_grads, tx.init(_params()), _params())[0]

    return jax.jit(run)


@pytest.mark.parametrize("k", KS)
def test_cagrad_matches_reference(k):
    rng = np.random.default_rng(400 + k)
    for c in (0.0, 0.2, 0.5, 1.3):
        g = _random_g(rng, k)
        d = _flat(_cagrad_with_traced_c()(_tree(g), jnp.float32(c)))
        _close(d, ref.cagrad(g, c))


def test_cagrad_rescale_divides_by_one_plus_c_squared():
    g = _random_g(np.random.default_rng(1), 3)
    d, _ = _apply("cagrad", g, c=0.5)
    d_rescaled, _ = _apply("cagrad", g, c=0.5, rescale=True)
    _close(d_rescaled, d / 1.25)


def test_nash_mtl_normalized_gramian_scales_like_authors_code():
    g = _random_g(np.random.default_rng(2), 3)
    m = g @ g.T
    frob = np.sqrt(np.sum(m * m))
    d, _ = _apply("nash_mtl", g, eps=0.0, normalize_gramian=True)
    # alpha solves (M / ||M||_F) alpha = 1 / alpha, i.e. alpha = sqrt(||M||_F) alpha_exact.
    _close(d, np.sqrt(frob) * ref.nash_mtl(g), tol=2e-5)


@pytest.mark.parametrize("k", KS)
def test_uncertainty_weighting_matches_reference(k):
    rng = np.random.default_rng(1100 + k)
    lr = 0.1
    tx, _ = _jitted("uncertainty_weighting", learning_rate=lr, num_tasks=k)
    state = tx.init(_params())
    s = np.zeros(k)
    for _ in range(TRIALS):
        g = _random_g(rng, k)
        losses = rng.uniform(0.2, 2.0, size=k).astype(np.float32)
        d, state = _apply(
            "uncertainty_weighting",
            g,
            state,
            {"losses": jnp.asarray(losses)},
            learning_rate=lr,
            num_tasks=k,
        )
        _close(d, ref.uncertainty_weighting(g, s))
        s = s - lr * 0.5 * (1 - np.exp(-s) * losses)
        _close(np.asarray(state.log_vars), s)


def test_uncertainty_weighting_log_vars_reach_log_losses():
    losses = jnp.array([0.5, 2.0])
    tx = dj.uncertainty_weighting(0.5, num_tasks=2)
    state = tx.init(None)
    step = jax.jit(lambda s: tx.update({"w": jnp.eye(2)}, s, losses=losses)[1])
    for _ in range(200):
        state = step(state)
    np.testing.assert_allclose(state.log_vars, np.log(losses), atol=1e-4)


def test_min_norm_solvers_beyond_exact_enumeration():
    """Above EXACT_MAX_TASKS the iterative solvers (with polishing) still solve the QPs."""
    k = dj._src.min_norm.EXACT_MAX_TASKS + 2  # noqa: SLF001
    g = np.random.default_rng(3).normal(size=(k, 20))
    m = jnp.asarray(g @ g.T, jnp.float32)
    solve = jax.jit(
        lambda m: (dj.min_norm_weights(m), dj.upgrad_weights(m), dj.cagrad_weights(m, 0.5))
    )
    w_mgda, w_upgrad, w_cagrad = (np.asarray(w, np.float64) for w in solve(m))
    _close(w_mgda @ g, ref.mgda(g), tol=1e-4)
    _close(w_upgrad @ g, ref.upgrad(g), tol=1e-4)
    _close(w_cagrad @ g, ref.cagrad(g, 0.5), tol=1e-4)


# --- defining properties (hypothesis) ------------------------------------------

_entries = st.floats(-3.0, 3.0, allow_nan=False, width=32)


def _grads(k):
    return st.lists(_entries, min_size=k * DIM, max_size=k * DIM).map(
        lambda xs: np.asarray(xs, np.float64).reshape(k, DIM)
    )


def _nondegenerate(g):
    return np.linalg.matrix_rank(g, tol=1e-2) == g.shape[0]


@settings(max_examples=40, deadline=None)
@given(_grads(2))
def test_pcgrad_two_tasks_never_conflicts_with_either(g):
    d, _ = _apply("pcgrad", g, seed=0)
    scale = np.max(np.abs(g)) ** 2 + 1e-12
    assert np.all(g @ d >= -1e-5 * scale * DIM)


@settings(max_examples=40, deadline=None)
@given(_grads(3))
def test_mgda_is_min_norm_point_of_hull(g):
    d, _ = _apply("mgda", g)
    # Optimality of the min-norm point over the hull: <d, g_j - d> >= 0 for every vertex.
    scale = np.max(np.abs(g)) ** 2 + 1e-12
    assert np.all((g - d[None, :]) @ d >= -1e-4 * scale * DIM)


@settings(max_examples=40, deadline=None)
@given(_grads(3))
def test_upgrad_has_nonnegative_inner_product_with_every_task(g):
    d, _ = _apply("upgrad", g)
    scale = np.max(np.abs(g)) ** 2 + 1e-12
    assert np.all(g @ d >= -1e-4 * scale * DIM)


@settings(max_examples=40, deadline=None)
@given(_grads(3))
def test_cagrad_stays_in_ball_and_improves_worst_task(g):
    d, _ = _apply("cagrad", g, c=0.5)
    g0 = g.mean(0)
    scale = np.max(np.abs(g)) + 1e-12
    assert np.linalg.norm(d - g0) <= 0.5 * np.linalg.norm(g0) + 1e-4 * scale
    assert (g @ d).min() >= (g @ g0).min() - 1e-4 * scale**2 * DIM


@settings(max_examples=30, deadline=None)
@given(_grads(3))
def test_nash_mtl_bargaining_condition(g):
    if not _nondegenerate(g):
        return
    d, _ = _apply("nash_mtl", g, eps=0.0)
    # alpha_i <g_i, d> = 1 for all i, so every task improves, and ||d||^2 = K.
    assert np.all(g @ d > 0)
    np.testing.assert_allclose(np.linalg.norm(d), np.sqrt(3.0), rtol=1e-3)


@settings(max_examples=30, deadline=None)
@given(_grads(3))
def test_imtl_g_equal_projections_on_unit_gradients(g):
    if not _nondegenerate(g):
        return
    d, _ = _apply("imtl_g", g)
    u = g / np.linalg.norm(g, axis=1, keepdims=True)
    proj = u @ d
    np.testing.assert_allclose(proj, proj[0], atol=1e-3 * max(1.0, np.abs(proj).max()))


@settings(max_examples=30, deadline=None)
@given(_grads(3))
def test_aligned_mtl_norm_is_sqrt_k_sigma_min(g):
    if not _nondegenerate(g):
        return
    d, _ = _apply("aligned_mtl", g)
    sigma_min = np.linalg.svd(g, compute_uv=False).min()
    np.testing.assert_allclose(np.linalg.norm(d), np.sqrt(3.0) * sigma_min, rtol=1e-3)


@settings(max_examples=30, deadline=None)
@given(_grads(3))
def test_gradvac_with_zero_targets_is_pcgrad(g):
    d_vac, _ = _apply("gradvac", g, beta=0.5, num_tasks=3, seed=4)
    d_pc, _ = _apply("pcgrad", g, seed=4)
    scale = max(1.0, np.max(np.abs(d_pc)))
    np.testing.assert_allclose(d_vac, d_pc, atol=1e-4 * scale)


@settings(max_examples=30, deadline=None)
@given(st.lists(st.floats(0.01, 10.0), min_size=9, max_size=9))
def test_dwa_weights_are_nonnegative_and_sum_to_k(losses):
    tx = dj.dwa(2.0, num_tasks=3)
    state = tx.init(None)
    eye = {"w": jnp.eye(3)}
    for t in range(3):
        w, state = tx.update(eye, state, losses=jnp.asarray(losses[3 * t : 3 * t + 3]))
    w = np.asarray(w["w"])
    assert np.all(w >= 0)  # a ratio far above the others can underflow the rest to 0
    np.testing.assert_allclose(w.sum(), 3.0, rtol=1e-5)


# --- degenerate inputs ----------------------------------------------------------

METHOD_KWARGS = {
    "linear_scalarization": {},
    "pcgrad": {},
    "gradvac": {"num_tasks": None},
    "cagrad": {"c": 0.5},
    "mgda": {},
    "nash_mtl": {},
    "imtl_g": {},
    "aligned_mtl": {},
    "upgrad": {},
    "dwa": {"num_tasks": None},
    "uncertainty_weighting": {"num_tasks": None},
}


def _run_any(name, g):
    k = g.shape[0]
    kwargs = {a: (k if v is None else v) for a, v in METHOD_KWARGS[name].items()}
    extra = {"losses": jnp.ones(k)} if name in ("dwa", "uncertainty_weighting") else {}
    return _apply(name, g, None, extra, **kwargs)[0]


_v = np.array([1.0, -2.0, 0.5, 3.0, 0.0, 1.0, -1.0])
_w = np.array([0.5, 1.0, -1.0, 0.0, 2.0, 0.0, 1.0])
DEGENERATE = {
    "single_task": np.stack([_v]),
    "identical": np.stack([_v, _v, _v]),
    "opposite": np.stack([_v, -_v]),
    "zero_task": np.stack([_v, np.zeros(7), _w]),
    "all_zero": np.zeros((2, 7)),
}

# What each method returns in the degenerate cases (as documented), as multiples of _v.
EXPECTED = {
    ("linear_scalarization", "single_task"): 1.0,
    ("linear_scalarization", "identical"): 3.0,
    ("linear_scalarization", "opposite"): 0.0,
    ("pcgrad", "single_task"): 1.0,
    ("pcgrad", "identical"): 3.0,
    ("pcgrad", "opposite"): 0.0,
    ("gradvac", "single_task"): 1.0,
    ("gradvac", "identical"): 3.0,
    ("gradvac", "opposite"): 0.0,
    ("cagrad", "single_task"): 1.5,
    ("cagrad", "identical"): 1.5,
    ("cagrad", "opposite"): 0.0,
    ("mgda", "single_task"): 1.0,
    ("mgda", "identical"): 1.0,
    ("mgda", "opposite"): 0.0,
    ("imtl_g", "single_task"): 1.0,
    ("imtl_g", "identical"): 1.0,
    ("imtl_g", "opposite"): 0.0,
    ("aligned_mtl", "single_task"): 1.0,
    ("aligned_mtl", "identical"): 3.0,
    ("aligned_mtl", "opposite"): 0.0,
    ("upgrad", "single_task"): 1.0,
    ("upgrad", "identical"): 1.0,
    ("upgrad", "opposite"): 0.0,
    ("nash_mtl", "single_task"): 1.0 / np.linalg.norm(_v),
    ("nash_mtl", "identical"): np.sqrt(3.0) / np.linalg.norm(_v),
    ("nash_mtl", "opposite"): 0.0,
    ("mgda", "zero_task"): 0.0,
    # First update: DWA weights are all ones, uncertainty weights e^0 / 2.
    ("dwa", "single_task"): 1.0,
    ("dwa", "identical"): 3.0,
    ("dwa", "opposite"): 0.0,
    ("uncertainty_weighting", "single_task"): 0.5,
    ("uncertainty_weighting", "identical"): 1.5,
    ("uncertainty_weighting", "opposite"): 0.0,
}


def _zero_task_expected(name):
    """Each method's update on [v, 0, w] from the NumPy references and the documented rule."""
    g = DEGENERATE["zero_task"]
    vw = np.stack([_v, _w])  # the non-zero tasks
    no_conflict = np.array([[0, 1, 2], [1, 0, 2], [2, 0, 1]])  # a zero partner never projects
    return {
        "linear_scalarization": _v + _w,
        "dwa": _v + _w,
        "uncertainty_weighting": 0.5 * (_v + _w),
        "pcgrad": ref.pcgrad(g, no_conflict),
        # Zero targets: GradVac's rule is PCGrad's projection; pairs with 0 are skipped.
        "gradvac": ref.pcgrad(g, no_conflict),
        "cagrad": ref.cagrad(g, 0.5),
        "mgda": np.zeros(DIM),
        "upgrad": ref.upgrad(g),  # the zero task adds nothing to a mean over K = 3
        "imtl_g": ref.imtl_g(vw),  # weight 0, solved among the non-zero tasks
        "aligned_mtl": ref.aligned_mtl(vw),  # dropped with the Gramian's null space
        "nash_mtl": ref.nash_mtl(vw),  # its large weight multiplies a zero gradient
    }[name]


@pytest.mark.parametrize("case", sorted(DEGENERATE))
@pytest.mark.parametrize("name", sorted(METHOD_KWARGS))
def test_degenerate_inputs_are_finite_and_documented(name, case):
    g = DEGENERATE[case]
    d = _run_any(name, g)
    assert np.all(np.isfinite(d)), f"{name} on {case}: {d}"
    if case == "all_zero":
        np.testing.assert_allclose(d, 0.0, atol=1e-6)
    if (name, case) in EXPECTED:
        np.testing.assert_allclose(d, EXPECTED[(name, case)] * _v, rtol=1e-4, atol=1e-4)
    elif case == "zero_task":
        np.testing.assert_allclose(d, _zero_task_expected(name), rtol=1e-3, atol=1e-3)
    else:
        assert case == "all_zero", f"no documented value for {name} on {case}"


# --- bad inputs -----------------------------------------------------------------


def test_bad_inputs_raise_clear_errors():
    g = _tree(np.ones((3, DIM)))
    with pytest.raises(ValueError, match="num_tasks"):
        dj.gradvac(num_tasks=2).update(g, dj.gradvac(num_tasks=2).init(None))
    with pytest.raises(ValueError, match="num_tasks must be a positive int"):
        dj.dwa(num_tasks=0)
    with pytest.raises(ValueError, match="weights has shape"):
        tx = dj.linear_scalarization(jnp.ones(2))
        tx.update(g, tx.init(None))
    with pytest.raises(ValueError, match="weights must be a vector"):
        dj.linear_scalarization(jnp.ones((2, 2)))
    with pytest.raises(ValueError, match="losses="):
        tx = dj.dwa(num_tasks=3)
        tx.update(g, tx.init(None))
    with pytest.raises(ValueError, match=r"losses has shape \(2,\)"):
        tx = dj.uncertainty_weighting(num_tasks=3)
        tx.update(g, tx.init(None), losses=jnp.ones(2))
    with pytest.raises(ValueError, match="c must be >= 0"):
        dj.cagrad(-1.0)
    with pytest.raises(ValueError, match="orders has shape"):
        dj.pcgrad_weights(jnp.eye(3), jnp.zeros((2, 3), jnp.int32))
    with pytest.raises(ValueError, match="lower has shape"):
        dj.box_qp_weights(jnp.eye(3), jnp.zeros(2))
    with pytest.raises(ValueError, match="different tree structures"):
        tx = dj.mgda()
        tx.update(g, tx.init(None), {"a": jnp.zeros(3)})
    with pytest.raises(ValueError, match="expected"):
        tx = dj.upgrad()
        tx.update(g, tx.init(None), {"a": jnp.zeros(4), "b": jnp.zeros((2, 2))})
    with pytest.raises((TypeError, ValueError), match="floating"):
        tx = dj.pcgrad()
        tx.update({"a": jnp.ones((2, 3), jnp.int32)}, tx.init(None))


# --- the representation level (MGDA-UB) -------------------------------------------


def _rep_model():
    """A trunk read by two heads: reps [B, 4]; task losses of each head."""
    key = jax.random.key(0)
    k1, k2, k3, k4 = jax.random.split(key, 4)
    params = {
        "trunk": jax.random.normal(k1, (5, 4)),
        "head0": jax.random.normal(k2, (4,)),
        "head1": jax.random.normal(k3, (4,)),
    }
    x = jax.random.normal(k4, (6, 5))

    def trunk_fn(p, x):
        return jnp.tanh(x @ p["trunk"])

    def heads_fn(p, reps, x):
        del x
        return jnp.stack([jnp.mean((reps @ p["head0"]) ** 2), jnp.mean(jnp.sin(reps @ p["head1"]))])

    return params, x, trunk_fn, heads_fn


@pytest.mark.parametrize("name", sorted(METHOD_KWARGS))
def test_representation_level_through_rep_grads(name):
    params, x, trunk_fn, heads_fn = _rep_model()
    kwargs = {a: (2 if v is None else v) for a, v in METHOD_KWARGS[name].items()}
    tx = getattr(dj, name)(**kwargs)

    @jax.jit
    def step(params):
        rep = dj.per_task_rep_grads(trunk_fn, heads_fn, params, x)
        update, _ = tx.update(rep.rep_task_grads, tx.init(rep.reps), rep.reps, losses=rep.losses)
        return rep.finish(update), update, rep.rep_task_grads

    grads, update, rep_grads = step(params)
    assert jax.tree.structure(grads) == jax.tree.structure(params)
    assert all(np.all(np.isfinite(g)) for g in jax.tree.leaves(grads))
    # The representation update is the method applied to the flattened cotangents.
    flat = np.asarray(rep_grads).reshape(2, -1).astype(np.float64)
    if name == "mgda":
        _close(np.asarray(update).ravel(), ref.mgda(flat), tol=1e-4)
    if name == "upgrad":
        _close(np.asarray(update).ravel(), ref.upgrad(flat), tol=1e-4)
    # The trunk receives that update pulled back by one VJP; heads their summed grads.
    _, vjp = jax.vjp(lambda p: trunk_fn(p, x), params)
    expected_trunk = vjp(update)[0]["trunk"]
    np.testing.assert_allclose(grads["trunk"], expected_trunk, rtol=1e-5, atol=1e-6)
    summed = jax.grad(lambda p: jnp.sum(heads_fn(p, trunk_fn(params, x), x)))(params)
    np.testing.assert_allclose(grads["head0"], summed["head0"], rtol=1e-5, atol=1e-6)
    if name == "linear_scalarization":
        full = jax.grad(lambda p: jnp.sum(heads_fn(p, trunk_fn(p, x), x)))(params)
        np.testing.assert_allclose(grads["trunk"], full["trunk"], rtol=1e-5, atol=1e-6)
