"""The newer zoo methods' properties, degenerate inputs and errors.

Their comparisons with the NumPy references and TorchJD's recorded outputs are
in ``test_zoo_oracles.py`` (one test per method, reference and K).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import drgrad_jax as dj
from drgrad_jax._src.graddrop import UNROLL_MAX_TASKS
from drgrad_jax._src.random_weighting import random_weights
from drgrad_jax._src.trimmed_mean import sorted_rows
from tests import mtl_references as ref
from tests.test_mtl_methods import KS, TRIALS, _apply, _close, _flat, _random_g, _tree

# --- mean, constant, random weighting ------------------------------------------------


def test_random_weighting_draws_change_and_reproduce():
    g = _random_g(np.random.default_rng(1), 3)
    a = [_apply("random_weighting", g, seed=2)[0] for _ in range(2)]
    np.testing.assert_array_equal(a[0], a[1])
    d1, s = _apply("random_weighting", g, seed=2)
    d2, _ = _apply("random_weighting", g, s, seed=2)
    assert not np.allclose(d1, d2)
    w = np.asarray(random_weights(jax.random.key(0), 4))
    assert np.all(w > 0) and abs(w.sum() - 1) < 1e-6


# --- dual-cone projection, ConFIG, FairGrad -------------------------------------------


@pytest.mark.parametrize("k", KS)
def test_dualproj_lands_in_the_dual_cone(k):
    """Every task gradient has a non-negative inner product with the update."""
    rng = np.random.default_rng(2200 + k)
    for _ in range(TRIALS):
        g = _random_g(rng, k)
        d, _ = _apply("dualproj", g)
        assert np.all(g @ d >= -1e-5 * np.max(np.abs(g)) ** 2)


@pytest.mark.parametrize("k", KS)
def test_conflict_free_has_equal_cosine_with_every_task(k):
    rng = np.random.default_rng(2300 + k)
    for _ in range(TRIALS):
        g = _random_g(rng, k)
        d, _ = _apply("conflict_free", g)
        cos = g @ d / (np.linalg.norm(g, axis=1) * np.linalg.norm(d))
        np.testing.assert_allclose(cos, cos[0], rtol=1e-4)


def test_fairgrad_at_alpha_one_is_nash_mtl():
    g = _random_g(np.random.default_rng(3), 3)
    _close(_apply("fairgrad", g, alpha=1.0)[0], _apply("nash_mtl", g, eps=0.0)[0])


# --- degenerate and bad inputs -----------------------------------------------------------

_v = np.array([1.0, -2.0, 0.5, 3.0, 0.0, 1.0, -1.0])
_w = np.array([0.5, 1.0, -1.0, 0.0, 2.0, 0.0, 1.0])
DEGENERATE = {
    "single_task": np.stack([_v]),
    "identical": np.stack([_v, _v, _v]),
    "opposite": np.stack([_v, -_v]),
    "zero_task": np.stack([_v, np.zeros(7), _w]),
    "all_zero": np.zeros((3, 7)),
}
ZOO_KWARGS = {
    "mean": {},
    "random_weighting": {"seed": 0},
    "dualproj": {},
    "conflict_free": {},
    "trimmed_mean": {"trim_number": 0},
    "krum": {"n_byzantine": 0},
    "graddrop": {"seed": 0},
    "fairgrad": {"alpha": 1.0, "eps": 1e-6},
    # None: the task count of the case.
    "modo": {"num_tasks": None},
    "moco": {"num_tasks": None},
    "sdmgrad": {"num_tasks": None},
    "excess_mtl": {"num_tasks": None},
    "cr_mogm": {"num_tasks": None},
}
# Documented results, as multiples of _v (None: only finiteness is promised).
EXPECTED = {
    ("mean", "single_task"): 1.0,
    ("mean", "identical"): 1.0,
    ("mean", "opposite"): 0.0,
    ("random_weighting", "single_task"): 1.0,
    ("random_weighting", "identical"): 1.0,
    ("dualproj", "single_task"): 1.0,
    ("dualproj", "identical"): 1.0,
    ("dualproj", "opposite"): 0.0,
    ("conflict_free", "single_task"): 1.0,
    ("conflict_free", "identical"): 3.0,
    ("conflict_free", "opposite"): 0.0,
    ("trimmed_mean", "single_task"): 1.0,
    ("trimmed_mean", "identical"): 1.0,
    ("trimmed_mean", "opposite"): 0.0,
    ("krum", "identical"): 1.0,
    ("graddrop", "single_task"): 1.0,
    ("graddrop", "identical"): 3.0,
    ("fairgrad", "single_task"): 1.0 / np.linalg.norm(_v),
    ("modo", "single_task"): 1.0,
    ("moco", "single_task"): 0.5,  # y = beta g after one step
    ("sdmgrad", "single_task"): 1.0,
    ("excess_mtl", "single_task"): 1.0,
    ("cr_mogm", "single_task"): 1.0,
    ("cr_mogm", "identical"): 1.0,
    ("cr_mogm", "opposite"): 0.0,
}


@pytest.mark.parametrize("case", sorted(DEGENERATE))
@pytest.mark.parametrize("name", sorted(ZOO_KWARGS))
def test_degenerate_inputs_are_finite_and_documented(name, case):
    g = DEGENERATE[case]
    if name == "krum" and g.shape[0] < 3:
        pytest.skip("krum needs n_byzantine + 3 tasks")
    kwargs = {a: g.shape[0] if v is None else v for a, v in ZOO_KWARGS[name].items()}
    d, _ = _apply(name, g, **kwargs)
    assert np.all(np.isfinite(d)), f"{name} on {case}: {d}"
    if case == "all_zero":
        np.testing.assert_allclose(d, 0.0, atol=1e-6)
    if (name, case) in EXPECTED:
        np.testing.assert_allclose(d, EXPECTED[(name, case)] * _v, rtol=1e-4, atol=1e-4)


def test_bad_inputs_raise_clear_errors():
    g = _tree(np.ones((3, 7)))
    with pytest.raises(ValueError, match="constant needs weights"):
        dj.constant(None)
    with pytest.raises(ValueError, match="trim_number must be a non-negative int"):
        dj.trimmed_mean(-1)
    with pytest.raises(ValueError, match=r"needs at least 5 tasks \(2 \* trim_number \+ 1\)"):
        tx = dj.trimmed_mean(2)
        tx.update(g, tx.init(None))
    with pytest.raises(ValueError, match="n_byzantine must be an int >= 0"):
        dj.krum(-1)
    with pytest.raises(ValueError, match="n_selected must be an int >= 1"):
        dj.krum(0, 0)
    with pytest.raises(ValueError, match=r"needs at least 4 tasks \(n_byzantine \+ 3\)"):
        tx = dj.krum(1)
        tx.update(g, tx.init(None))
    with pytest.raises(ValueError, match=r"pref_vector has shape \(2,\)"):
        tx = dj.dualproj(jnp.ones(2))
        tx.update(g, tx.init(None))
    with pytest.raises(ValueError, match="pref_vector must be a vector"):
        dj.conflict_free(jnp.ones((3, 3)))
    with pytest.raises(ValueError, match=r"leak has shape \(2,\)"):
        tx = dj.graddrop(jnp.zeros(2))
        tx.update(g, tx.init(None))
    with pytest.raises(ValueError, match="alpha must be >= 0"):
        dj.fairgrad(-1.0)


# --- loss-level methods: IMTL-L, GLS, STCH, FAMO ------------------------------------------


def test_loss_level_bad_inputs_raise_clear_errors():
    g = _tree(np.ones((3, 7)))
    for tx in (dj.imtl_l(num_tasks=3), dj.geometric_mean(), dj.stch(), dj.famo(num_tasks=3)):
        with pytest.raises(ValueError, match="losses="):
            tx.update(g, tx.init(None))
        with pytest.raises(ValueError, match=r"losses has shape \(2,\)"):
            tx.update(g, tx.init(None), losses=jnp.ones(2))
    with pytest.raises(ValueError, match="mu must be > 0"):
        dj.stch(0.0)
    with pytest.raises(ValueError, match=r"preference has shape \(2,\)"):
        tx = dj.stch(preference=jnp.ones(2))
        tx.update(g, tx.init(None), losses=jnp.ones(3))
    with pytest.raises(ValueError, match=r"min_losses has shape \(2,\)"):
        dj.famo(min_losses=jnp.zeros(2), num_tasks=3)
    with pytest.raises(ValueError, match="num_tasks must be a positive int"):
        dj.imtl_l(num_tasks=0)
    with pytest.raises(ValueError, match="num_tasks=2 was declared"):
        tx = dj.geometric_mean(num_tasks=2)
        tx.update(g, tx.init(None), losses=jnp.ones(3))


def test_loss_level_non_finite_losses_leave_state_unchanged():
    g = {"w": jnp.eye(2)}
    for tx in (dj.imtl_l(0.1, num_tasks=2), dj.famo(num_tasks=2)):
        state = tx.init(None)
        _, state = tx.update(g, state, losses=jnp.array([1.0, 2.0]))
        _, state = tx.update(g, state, losses=jnp.array([0.5, 1.5]))
        _, after = tx.update(g, state, losses=jnp.array([jnp.nan, 1.0]))
        # Everything but the step counter.
        for a, b in zip(jax.tree.leaves(after[1:]), jax.tree.leaves(state[1:])):
            np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    tx = dj.geometric_mean()
    d, _ = tx.update(g, tx.init(None), losses=jnp.array([0.0, 1.0]))
    assert not np.all(np.isfinite(np.asarray(d["w"])))


# --- DB-MTL and GradNorm ---------------------------------------------------------------


def test_db_mtl_and_gradnorm_bad_inputs():
    g = _tree(np.ones((3, 7)))
    with pytest.raises(ValueError, match=r"call tx.init\(params\)"):
        dj.db_mtl(num_tasks=3).init(None)
    with pytest.raises(ValueError, match="layer='nope' matches no leaf"):
        tx = dj.gradnorm(num_tasks=3, layer="nope")
        tx.update(g, tx.init(None), losses=jnp.ones(3))
    with pytest.raises(ValueError, match="losses="):
        tx = dj.gradnorm(num_tasks=3)
        tx.update(g, tx.init(None))


def test_gradnorm_reads_the_shared_layer_from_per_task_grads():
    """The layer norms come from the per-task rows per_task_grads already computed."""
    k1, k2, k3, k4 = jax.random.split(jax.random.key(0), 4)
    params = {
        "trunk": jax.random.normal(k1, (5, 4)),
        "h0": jax.random.normal(k2, (4,)),
        "h1": jax.random.normal(k3, (4,)),
    }
    x = jax.random.normal(k4, (6, 5))

    def loss_fn(p, x):
        h = jnp.tanh(x @ p["trunk"])
        return jnp.stack([jnp.mean((h @ p["h0"]) ** 2), jnp.mean(jnp.sin(h @ p["h1"]))])

    losses, g = dj.per_task_grads(loss_fn, params, x, task_of={"h0": 0, "h1": 1})
    tx = dj.gradnorm(alpha=1.0, learning_rate=0.1, num_tasks=2, layer="trunk")
    _, state = tx.update(g, tx.init(params), params, losses=losses)
    full = jax.jacrev(loss_fn)(params, x)["trunk"].reshape(2, -1)
    want = ref.gradnorm([np.asarray(full, np.float64)] * 2, [np.asarray(losses)] * 2, 1.0, 0.1)
    _close(np.asarray(state.weights), want[1])


# --- stochastic multi-objective methods: MoDo, MoCo, SDMGrad, ExcessMTL, CR-MOGM -------------


def test_stochastic_methods_bad_inputs():
    with pytest.raises(ValueError, match=r"call tx.init\(params\)"):
        dj.moco(num_tasks=2).init(None)
    with pytest.raises(ValueError, match=r"call tx.init\(params\)"):
        dj.excess_mtl(num_tasks=2).init(None)
    with pytest.raises(ValueError, match="gamma must be > 0"):
        dj.modo(0.0, num_tasks=2)
    with pytest.raises(ValueError, match="n_iter must be a positive int"):
        dj.sdmgrad(num_tasks=2, n_iter=0)
    with pytest.raises(ValueError, match=r"pref_vector has shape \(3,\)"):
        dj.sdmgrad(pref_vector=jnp.ones(3), num_tasks=2)
    with pytest.raises(ValueError, match="alpha must be in"):
        dj.cr_mogm(alpha=1.5, num_tasks=2)
    with pytest.raises(ValueError, match="weighting='nope' is not one of"):
        dj.cr_mogm("nope", num_tasks=2)
    with pytest.raises(ValueError, match=r"initial_weights has shape \(3,\)"):
        dj.cr_mogm(initial_weights=jnp.ones(3), num_tasks=2)
    with pytest.raises(ValueError, match="num_tasks=2 was declared"):
        tx = dj.modo(num_tasks=2)
        tx.update(_tree(np.ones((3, 7))), tx.init(None))


# --- the sorting network under trimmed_mean ----------------------------------------------


@pytest.mark.parametrize("k", [1, 2, 3, 4, 7, 16, 17])
def test_sorted_rows_equals_a_full_sort(k):
    """Odd-even transposition over the task axis sorts like jnp.sort, ties and signed zeros too."""
    rng = np.random.default_rng(k)
    x = rng.normal(size=(k, 5, 3)).astype(np.float32)
    x[:, 0] = np.round(x[:, 0])  # ties
    x[0, 1, 0], x[-1, 1, 0] = 0.0, -0.0
    got = np.asarray(sorted_rows(jnp.asarray(x)))
    np.testing.assert_array_equal(got, np.sort(x, axis=0))


@pytest.mark.parametrize("k", [3, UNROLL_MAX_TASKS + 1])
def test_graddrop_row_by_row_and_reduced_paths_match_the_reference(k):
    """K <= UNROLL_MAX_TASKS combines task rows one by one, larger K by reductions."""
    rng = np.random.default_rng(5 + k)
    g = _random_g(rng, k)
    u = rng.uniform(size=7).astype(np.float32)
    leak = rng.uniform(0.0, 0.5, size=k).astype(np.float32)
    uniforms = {"a": jnp.asarray(u[:3]), "b": jnp.asarray(u[3:]).reshape(2, 2)}
    for lk in (None, leak):
        d = dj.graddrop_combine(_tree(g), uniforms, None if lk is None else jnp.asarray(lk))
        want = ref.graddrop(g, u.astype(np.float64), np.zeros(k) if lk is None else lk)
        _close(_flat(d), want)
    # A NaN in one task's coordinate makes that coordinate NaN on both paths, nothing else.
    bad = g.copy()
    bad[k - 1, 2] = np.nan
    d = _flat(jax.jit(dj.graddrop_combine)(_tree(bad), uniforms))  # jitted: XLA's rewrites apply
    assert np.isnan(d[2]) and np.all(np.isfinite(np.delete(d, 2)))
