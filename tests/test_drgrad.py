"""DRGrad transformation: NumPy oracle, sign cases, updater, spaces, bad inputs."""

import itertools

import hypothesis.strategies as st
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx
from hypothesis import given, settings

import drgrad_jax
from drgrad_jax import drgrad, drgrad_released, mixing_weights, released_code_route, route
from tests import conformance

# ----------------------------------------------------------------------------
# Slow, obvious NumPy references.
# ----------------------------------------------------------------------------


def np_cos(a, b):
    na, nb = np.linalg.norm(a), np.linalg.norm(b)
    if na == 0 or nb == 0:
        return 0.0
    return float(a @ b / (na * nb))


def np_lam(n1p, nb, gamma):
    if nb == 0:
        return 0.0
    return float(min(max(n1p / nb, 0.0), 1.0) ** gamma)


def np_route(g1p, g1pp, g2s, gamma=1.0, pairing="consistent"):
    """R1/R2 written term by term with Python branches (flat float64 vectors)."""
    n1p = np.linalg.norm(g1p)
    if pairing == "consistent":
        xi1, l1 = np_cos(g1p, g1pp), np_lam(n1p, np.linalg.norm(g1pp), gamma)
        g_rp = (1 - (xi1 if xi1 < 0 else 0.0)) * l1 * g1pp
        g_rpp = np.zeros_like(g1pp)
        for g2 in g2s:
            xi2, l2 = np_cos(g1p, g2), np_lam(n1p, np.linalg.norm(g2), gamma)
            if xi2 >= 0:
                g_rp = g_rp + l2 * g2
            if xi1 * xi2 < 0:
                g_rpp = g_rpp - xi1 * xi2 * g1pp
        return g_rp, g_rpp
    (g2,) = g2s
    xi1, l1 = np_cos(g1p, g2), np_lam(n1p, np.linalg.norm(g2), gamma)
    xi2, l2 = np_cos(g1p, g1pp), np_lam(n1p, np.linalg.norm(g1pp), gamma)
    g_rp = (1 - (xi1 if xi1 < 0 else 0.0)) * l1 * g1pp + (l2 * g2 if xi2 >= 0 else 0.0)
    g_rpp = -(xi1 * xi2) * g1pp if xi1 * xi2 < 0 else np.zeros_like(g1pp)
    return g_rp, g_rpp


def table1_dedicated_and_shared(g1p, g1pp, g2, gamma=1.0):
    """The paper's Table 1 (consistent pairing), one row per sign case."""
    xi1, xi2 = np_cos(g1p, g1pp), np_cos(g1p, g2)
    n1p = np.linalg.norm(g1p)
    l1, l2 = np_lam(n1p, np.linalg.norm(g1pp), gamma), np_lam(n1p, np.linalg.norm(g2), gamma)
    if xi1 >= 0 and xi2 >= 0:
        return g1p + l1 * g1pp + l2 * g2, g2 + g1pp
    if xi1 >= 0 and xi2 < 0:
        return g1p + l1 * g1pp, g2 + (1 - xi1 * xi2) * g1pp
    if xi1 < 0 and xi2 >= 0:
        return g1p + l1 * (1 - xi1) * g1pp + l2 * g2, g2 + (1 - xi1 * xi2) * g1pp
    return g1p + l1 * (1 - xi1) * g1pp, g2 + g1pp


def np_released(ga, gb):
    c = np_cos(ga, gb)
    f = 1.0 if c > 0 else 0.0

    def unit_sum(g):
        n = np.linalg.norm(g)
        return float(np.sum(g / n)) if n > 0 else 0.0

    sa, sb = unit_sum(ga), unit_sum(gb)
    w_ab = float(np.clip(sa / sb if sb != 0 else 0.0, 0.1, 5.0))
    w_ba = float(np.clip(sb / sa if sa != 0 else 0.0, 0.1, 5.0))
    return ga + w_ab * (gb - (1 - f) * c * gb), gb + w_ba * (ga - (1 - f) * c * ga)


def softmax2(a, b):
    m = max(a, b)
    ea, eb = np.exp(a - m), np.exp(b - m)
    return ea / (ea + eb), eb / (ea + eb)


# ----------------------------------------------------------------------------
# Fixtures: a Split-MMoE-shaped params tree with towers of two leaves each.
# ----------------------------------------------------------------------------

SHAPES = {"kernel": (4, 3), "bias": (3,)}
TOWERS = {"dedicated": "t1a", "shared": "t1b", "aux:1": "t2"}


def make_params():
    tower = {k: jnp.zeros(s, jnp.float32) for k, s in SHAPES.items()}
    return {"trunk": {"w": jnp.zeros((5, 4), jnp.float32)}, "t1a": tower, "t1b": tower, "t2": tower}


def with_sign_case(rng, case):
    """Random per-task grads whose (cos(g1',g1''), cos(g1',g2)) signs match a Table 1 row."""
    s1, s2 = [(1, 1), (1, -1), (-1, 1), (-1, -1)][case]
    params = make_params()
    tg = jax.tree.map(lambda p: rng.normal(size=(2,) + p.shape).astype(np.float32), params)
    # Towers are task-exclusive: zero the rows of the task that does not read them.
    for name, row in (("t1a", 1), ("t1b", 1), ("t2", 0)):
        for leaf in tg[name].values():
            leaf[row] = 0.0
    flat = lambda name, row: np.concatenate([tg[name][k][row].ravel() for k in SHAPES])
    g1p = flat("t1a", 0)
    if np.sign(g1p @ flat("t1b", 0)) != s1:
        for leaf in tg["t1b"].values():
            leaf[0] *= -1
    if np.sign(g1p @ flat("t2", 1)) != s2:
        for leaf in tg["t2"].values():
            leaf[1] *= -1
    return params, tg


def flat_row(tg, name, row):
    return np.concatenate([np.asarray(tg[name][k][row], np.float64).ravel() for k in SHAPES])


def unflat(vec):
    out, i = {}, 0
    for k, s in SHAPES.items():
        n = int(np.prod(s))
        out[k] = vec[i : i + n].reshape(s)
        i += n
    return out


@pytest.fixture(scope="module")
def rng():
    return np.random.default_rng(0)


# ----------------------------------------------------------------------------
# Oracle tests.
# ----------------------------------------------------------------------------


@pytest.mark.parametrize("case", range(4))
@pytest.mark.parametrize("pairing", ["consistent", "as_printed"])
def test_matches_numpy_oracle_in_every_sign_case(rng, case, pairing):
    params, tg = with_sign_case(rng, case)
    tx = drgrad(TOWERS, pairing=pairing, gamma=1.5)
    out, state = jax.jit(tx.update)(tg, tx.init(params), params)
    g1p, g1pp, g2 = flat_row(tg, "t1a", 0), flat_row(tg, "t1b", 0), flat_row(tg, "t2", 1)
    g_rp, g_rpp = np_route(g1p, g1pp, [g2], gamma=1.5, pairing=pairing)
    np.testing.assert_allclose(flat_row_sum(out, "t1a"), g1p + g_rp, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(flat_row_sum(out, "t1b"), g1pp + g_rpp, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(flat_row_sum(out, "t2"), g2, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(out["trunk"]["w"], tg["trunk"]["w"].sum(0), rtol=1e-6, atol=1e-6)
    assert int(state.diagnostics.case[0, 0]) == case
    np.testing.assert_allclose(state.diagnostics.xi_shared[0], np_cos(g1p, g1pp), atol=1e-6)
    np.testing.assert_allclose(state.diagnostics.xi_aux[0, 0], np_cos(g1p, g2), atol=1e-6)
    # Updater: one cumulative step from sigma = 0.
    mu = softmax2(np.linalg.norm(g1p + g_rp), np.linalg.norm(g1pp + g_rpp))
    np.testing.assert_allclose(mixing_weights(state), mu, rtol=1e-5)


def flat_row_sum(out, name):
    return np.concatenate([np.asarray(out[name][k], np.float64).ravel() for k in SHAPES])


@pytest.mark.parametrize("case", range(4))
def test_reproduces_paper_table1(rng, case):
    """Activation space with gamma = 1 gives exactly the paper's Table 1 rows."""
    params, tg = with_sign_case(rng, case)
    g1p, g1pp, g2 = flat_row(tg, "t1a", 0), flat_row(tg, "t1b", 0), flat_row(tg, "t2", 1)
    reps_grads = {
        "v1": jnp.stack([jnp.asarray(g1p, jnp.float32), jnp.zeros(g1p.shape)]),
        "vs": jnp.stack([jnp.asarray(g1pp, jnp.float32), jnp.asarray(g2, jnp.float32)]),
    }
    tx = drgrad({"dedicated": "v1", "shared": "vs"}, space="activations", num_tasks=2)
    out, _ = tx.update(reps_grads, tx.init(None))
    ded, sh = table1_dedicated_and_shared(g1p, g1pp, g2)
    np.testing.assert_allclose(out["v1"], ded, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(out["vs"], sh, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("updater", ["cumulative", "mean", "ema", "fixed"])
def test_updater_over_several_steps(rng, updater):
    params = make_params()
    tx = drgrad(TOWERS, updater=updater, ema_decay=0.9, temperature=0.5)
    state = tx.init(params)
    step = jax.jit(tx.update)
    acc = np.zeros(2)
    for t in range(1, 5):
        _, tg = with_sign_case(rng, t % 4)
        tg = jax.tree.map(lambda x, t=t: x * t, tg)  # growing norms
        out, state = step(tg, state, params)
        norms = np.array(
            [
                np.linalg.norm(flat_row_sum(out, "t1a")),
                np.linalg.norm(flat_row_sum(out, "t1b")),
            ]
        )
        if updater in ("cumulative", "mean"):
            acc = acc + norms
        elif updater == "ema":
            acc = 0.9 * acc + 0.1 * norms
        logits = {"cumulative": acc, "mean": acc / t, "ema": acc / 0.5, "fixed": np.zeros(2)}
        want = softmax2(*logits[updater])
        np.testing.assert_allclose(mixing_weights(state), want, rtol=1e-4, atol=1e-6)
        assert int(state.count) == t


@pytest.mark.parametrize("case", range(4))
def test_updater_only_ablation_routes_nothing(rng, case):
    """router=False: the plain task sum on every leaf, mu from the UNROUTED norms."""
    params = make_params()
    tx = drgrad(TOWERS, router=False)
    state = tx.init(params)
    acc = np.zeros(2)
    for t in range(1, 4):
        _, tg = with_sign_case(rng, (case + t) % 4)
        out, state = tx.update(tg, state, params)
        for name in ("trunk", "t1a", "t1b", "t2"):
            for k, leaf in tg[name].items():
                np.testing.assert_allclose(out[name][k], np.sum(leaf, 0), rtol=1e-6, atol=1e-7)
        acc += [np.linalg.norm(flat_row(tg, "t1a", 0)), np.linalg.norm(flat_row(tg, "t1b", 0))]
        np.testing.assert_allclose(mixing_weights(state), softmax2(*acc), rtol=1e-4, atol=1e-6)
    g1p, g2 = flat_row(tg, "t1a", 0), flat_row(tg, "t2", 1)
    cos = g1p @ g2 / np.linalg.norm(g1p) / np.linalg.norm(g2)
    np.testing.assert_allclose(state.diagnostics.xi_aux[0, 0], cos, rtol=1e-5)
    with pytest.raises(TypeError, match="router must be a bool"):
        drgrad(TOWERS, router="off")


def test_several_auxiliary_tasks(rng):
    shapes = {"a": (6,)}
    params = {name: {"a": jnp.zeros(6)} for name in ("trunk", "d", "s", "x1", "x2", "x3")}
    tg = jax.tree.map(lambda p: jnp.asarray(rng.normal(size=(4,) + p.shape), jnp.float32), params)
    towers = {"dedicated": "d", "shared": "s", "aux:1": "x1", "aux:2": "x2", "aux:3": "x3"}
    out, state = drgrad(towers, gamma=0.7).update(tg, drgrad(towers).init(params), params)
    row = lambda name, r: np.asarray(tg[name]["a"][r], np.float64)
    g1p, g1pp = row("d", 0), row("s", 0)
    g2s = [row("x1", 1), row("x2", 2), row("x3", 3)]
    g_rp, g_rpp = np_route(g1p, g1pp, g2s, gamma=0.7)
    total = lambda name: np.asarray(tg[name]["a"], np.float64).sum(0)
    np.testing.assert_allclose(out["d"]["a"], total("d") + g_rp, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(out["s"]["a"], total("s") + g_rpp, rtol=1e-5, atol=1e-6)
    for name in ("x1", "x2", "x3", "trunk"):
        np.testing.assert_allclose(out[name]["a"], total(name), rtol=1e-5, atol=1e-6)
    assert state.diagnostics.xi_aux.shape == (1, 3)
    del shapes


def test_several_primary_tasks(rng):
    params = {name: jnp.zeros(5) for name in ("d0", "s0", "d1", "s1", "x2")}
    tg = jax.tree.map(lambda p: jnp.asarray(rng.normal(size=(3,) + p.shape), jnp.float32), params)
    towers = {"dedicated:0": "d0", "shared:0": "s0", "dedicated:1": "d1", "shared:1": "s1"}
    towers["aux:2"] = "x2"
    tx = drgrad(towers)
    out, state = tx.update(tg, tx.init(params), params)
    for k in (0, 1):
        g1p, g1pp = np.asarray(tg[f"d{k}"][k]), np.asarray(tg[f"s{k}"][k])
        g_rp, g_rpp = np_route(g1p, g1pp, [np.asarray(tg["x2"][2])])
        np.testing.assert_allclose(out[f"d{k}"], np.sum(tg[f"d{k}"], 0) + g_rp, atol=1e-5)
        np.testing.assert_allclose(out[f"s{k}"], np.sum(tg[f"s{k}"], 0) + g_rpp, atol=1e-5)
    assert mixing_weights(state).shape == (2, 2)


def test_released_rule_matches_oracle(rng):
    params = {"h0": {"k": jnp.zeros((8, 4))}, "h1": {"k": jnp.zeros((8, 4))}, "z": jnp.zeros(3)}
    tx = drgrad_released({"head:0": "h0/k", "head:1": "h1/k"})
    for sign in (1.0, -1.0):  # cooperate and conflict
        tg = jax.tree.map(lambda p: rng.normal(size=(2,) + p.shape).astype(np.float32), params)
        tg["h0"]["k"][1] = 0.0
        tg["h1"]["k"][0] = 0.0
        ga, gb = tg["h0"]["k"][0].ravel(), tg["h1"]["k"][1].ravel()
        if np.sign(ga @ gb) != sign:
            tg["h1"]["k"][1] *= -1  # gb is a view of this row: it flips with it
        out, state = tx.update(tg, tx.init(params), params)
        want_a, want_b = np_released(ga.astype(np.float64), gb.astype(np.float64))
        np.testing.assert_allclose(out["h0"]["k"].ravel(), want_a, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(out["h1"]["k"].ravel(), want_b, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(out["z"], tg["z"].sum(0), rtol=1e-6)
        np.testing.assert_allclose(mixing_weights(state), [0.5, 0.5])


@pytest.mark.parametrize(
    "ga, gb, w_ab, w_ba",
    [
        # Entries of g_b sum to 0: the ratio with a zero denominator is 0, clipped to 0.1.
        ([3.0, 0.0, 4.0], [1.0, -1.0, 0.0], 0.1, 0.1),
        # g_b / ||g_b|| sums to exactly 1; s_a = 7/5.
        ([3.0, 0.0, 4.0], [0.0, 2.0, 0.0], 1.4, 1 / 1.4),
        # Both sums negative: the ratios are positive and are kept.
        ([-3.0, 0.0, -4.0], [0.0, -2.0, 0.0], 1.4, 1 / 1.4),
        # Opposite signs: negative ratios clip to 0.1.
        ([3.0, 0.0, 4.0], [0.0, -2.0, 0.0], 0.1, 0.1),
    ],
)
def test_released_code_weights_by_hand(ga, gb, w_ab, w_ba):
    """The released rule's head weights w = clip(s_a / s_b, 0.1, 5) on hand-picked sums."""
    added_a, added_b, diag = released_code_route([jnp.asarray(ga)], [jnp.asarray(gb)])
    np.testing.assert_allclose(diag.lam_shared, w_ab, rtol=1e-6)
    np.testing.assert_allclose(diag.lam_aux, [w_ba], rtol=1e-6)
    ga, gb = np.asarray(ga), np.asarray(gb)
    c = ga @ gb / np.linalg.norm(ga) / np.linalg.norm(gb)
    keep = 1.0 if c > 0 else 1.0 - c
    np.testing.assert_allclose(added_a[0], w_ab * keep * gb, rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(added_b[0], w_ba * keep * ga, rtol=1e-6, atol=1e-7)


def test_as_printed_pairing_needs_exactly_one_auxiliary_task():
    g = [jnp.ones(3)]
    for g_aux in ([], [jnp.ones((2, 3))]):
        with pytest.raises(ValueError, match="exactly one auxiliary task"):
            route(g, g, g_aux, pairing="as_printed")


# ----------------------------------------------------------------------------
# Properties.
# ----------------------------------------------------------------------------


@settings(max_examples=40, deadline=None)
@given(
    seed=st.integers(0, 2**31 - 1),
    scales=st.tuples(*[st.sampled_from([0.0, 1e-8, 1.0, 1e4]) for _ in range(3)]),
    gamma=st.floats(1.0, 3.0),
)
def test_router_invariants(seed, scales, gamma):
    """No NaN; auxiliary gradient reaches T1' only when it cooperates, never above ||g1'||."""
    r = np.random.default_rng(seed)
    g1p, g1pp, g2 = (r.normal(size=7).astype(np.float32) * s for s in scales)
    r_ded, r_sh, diag = _jit_route([jnp.asarray(g1p)], [jnp.asarray(g1pp)], [jnp.asarray(g2)[None]])
    assert np.all(np.isfinite(r_ded[0])) and np.all(np.isfinite(r_sh[0]))
    lam2 = float(diag.lam_aux[0])
    assert 0.0 <= lam2 <= 1.0
    assert lam2 * np.linalg.norm(g2) <= np.linalg.norm(g1p) * (1 + 1e-5) + 1e-30
    if np.linalg.norm(g2) == 0:
        assert lam2 == 0.0
    # g_R'' only ever rescales g1'' by a non-negative amount (it adds, never removes).
    coef = np.vdot(r_sh[0], g1pp) / max(np.vdot(g1pp, g1pp), 1e-30)
    assert coef >= -1e-6


_jit_route = jax.jit(drgrad_jax.route, static_argnames=("pairing",))


def test_zero_gradient_gives_zero_scale_and_no_nan():
    params = make_params()
    tg = jax.tree.map(lambda p: jnp.zeros((2,) + p.shape), params)
    tx = drgrad(TOWERS)
    out, state = tx.update(tg, tx.init(params), params)
    assert all(np.all(np.isfinite(x)) for x in jax.tree.leaves(state))
    # Nothing to route: the summed update of all-zero task gradients is exactly zero.
    assert all(np.all(np.asarray(x) == 0) for x in jax.tree.leaves(out))
    assert float(state.diagnostics.lam_aux[0, 0]) == 0.0
    assert float(state.diagnostics.lam_shared[0]) == 0.0


def test_nan_gradient_never_reaches_params(rng):
    params, tg = with_sign_case(rng, 0)
    params = jax.tree.map(lambda p: p + 1.0, params)
    tg["t2"]["bias"][1, 0] = np.nan
    tx = optax.chain(drgrad(TOWERS), optax.apply_if_finite(optax.adam(1e-2), 3))
    state = tx.init(params)
    updates, state = jax.jit(tx.update)(tg, state, params)
    new = optax.apply_updates(params, updates)
    assert all(np.all(np.isfinite(x)) for x in jax.tree.leaves(new))
    np.testing.assert_array_equal(new["t1a"]["kernel"], params["t1a"]["kernel"])
    assert int(state[1].notfinite_count) == 1
    # The updater ignored the bad step: mu and count unchanged and finite.
    assert int(state[0].count) == 0
    assert mixing_weights(state).tolist() == [0.5, 0.5]


# ----------------------------------------------------------------------------
# Composition and state access.
# ----------------------------------------------------------------------------


def test_mixing_weights_found_anywhere_in_a_chain(rng):
    params, tg = with_sign_case(rng, 2)
    inner = optax.inject_hyperparams(drgrad, static_args=("towers",))(towers=TOWERS, gamma=2.0)
    tx = optax.chain(optax.clip_by_global_norm(10.0), inner, optax.adam(1e-3))
    state = tx.init(params)
    assert mixing_weights(state).tolist() == [0.5, 0.5]
    _, state = jax.jit(tx.update)(tg, state, params)
    mu = mixing_weights(state)
    assert mu.shape == (2,) and abs(float(mu.sum()) - 1) < 1e-6 and float(mu[0]) != 0.5
    assert mixing_weights(optax.adam(1e-3).init(params)) is None


def test_gamma_can_be_scheduled(rng):
    params, tg = with_sign_case(rng, 0)
    tx = optax.inject_hyperparams(drgrad, static_args=("towers",))(towers=TOWERS, gamma=1.0)
    state = tx.init(params)
    out1, _ = tx.update(tg, state, params)
    state.hyperparams["gamma"] = jnp.asarray(3.0)
    out3, _ = tx.update(tg, state, params)
    g1p, g1pp, g2 = flat_row(tg, "t1a", 0), flat_row(tg, "t1b", 0), flat_row(tg, "t2", 1)
    for out, gamma in ((out1, 1.0), (out3, 3.0)):
        g_rp, _ = np_route(g1p, g1pp, [g2], gamma=gamma)
        np.testing.assert_allclose(flat_row_sum(out, "t1a"), g1p + g_rp, rtol=1e-5, atol=1e-6)


# ----------------------------------------------------------------------------
# Bad input.
# ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"space": "weights"}, "space"),
        ({"pairing": "printed"}, "pairing"),
        ({"updater": "sum"}, "updater"),
        ({"gamma": 0.0}, "gamma"),
        ({"ema_decay": 1.0}, "ema_decay"),
        ({"space": "activations"}, "remove the 'aux"),
    ],
)
def test_bad_hyperparameters(kwargs, match):
    with pytest.raises(ValueError, match=match):
        drgrad(TOWERS, **kwargs)
    with pytest.raises(ValueError, match="needs num_tasks"):
        drgrad({"dedicated": "v1", "shared": "vs"}, space="activations")


@pytest.mark.parametrize(
    "towers, match",
    [
        ({"shared": "t1b", "aux:1": "t2"}, "dedicated"),
        ({"dedicated": "t1a", "aux:1": "t2"}, "shared"),
        ({"dedicated": "t1a", "shared": "t1b", "aux": "t2"}, "task index"),
        ({"dedicated": "t1a", "shared": "t1b", "tower:1": "t2"}, "unknown role"),
        ({}, "non-empty"),
    ],
)
def test_bad_tower_roles(towers, match):
    with pytest.raises(ValueError, match=match):
        drgrad(towers)


@pytest.mark.parametrize(
    "towers, match",
    [
        ({"head:0": "h0"}, "exactly two"),
        ({"head:0": "h0", "head:1": "h1", "head:2": "h2"}, "exactly two"),
        ({"head:0": "h0", "dedicated": "h1"}, "unknown role"),
        ({"head": "h0", "head:1": "h1"}, "task index"),
        ({}, "non-empty"),
    ],
)
def test_released_rule_bad_roles(towers, match):
    with pytest.raises(ValueError, match=match):
        drgrad_released(towers)


def test_paper_rule_refuses_released_roles():
    """The two rules are separate factories: drgrad has no 'head' role."""
    with pytest.raises(ValueError, match="unknown role 'head:0'"):
        drgrad({"head:0": "h0", "head:1": "h1"})


def test_released_rule_trace_time_errors(rng):
    params = {"h0": jnp.zeros((4, 3)), "h1": jnp.zeros((4, 2))}
    tg = jax.tree.map(lambda p: rng.normal(size=(2,) + p.shape).astype(np.float32), params)
    tx = drgrad_released({"head:0": "h0", "head:1": "h1"})
    with pytest.raises(ValueError, match=r"identical shapes.*\(4, 3\).*\(4, 2\)"):
        tx.update(tg, tx.init(params), params)
    tx = drgrad_released({"head:0": "h0", "head:3": "h1"})
    with pytest.raises(ValueError, match="refers to task 3"):
        tx.update(tg, tx.init(params), params)
    with pytest.raises(ValueError, match="task-axis length 2 but num_tasks=3"):
        tx = drgrad_released({"head:0": "h0", "head:1": "h0"}, num_tasks=3)
        tx.update(tg, tx.init(params), params)


def test_trace_time_errors(rng):
    params, tg = with_sign_case(rng, 0)
    tx = drgrad(TOWERS, num_tasks=3)
    with pytest.raises(ValueError, match=r"task-axis length 2 but num_tasks=3"):
        jax.jit(tx.update)(tg, tx.init(params), params)
    tx = drgrad({"dedicated": "t1a", "shared": "t1b", "aux:1": "missing"})
    with pytest.raises(ValueError, match="matches no leaf"):
        tx.update(tg, tx.init(params), params)
    bad = dict(tg, t2={"kernel": np.zeros((2, 4, 2), np.float32), "bias": tg["t2"]["bias"]})
    bad_params = dict(params, t2={"kernel": jnp.zeros((4, 2)), "bias": params["t2"]["bias"]})
    with pytest.raises(ValueError, match=r"identical shapes.*\(4, 3\).*\(4, 2\)"):
        drgrad(TOWERS).update(bad, drgrad(TOWERS).init(bad_params), bad_params)
    ints = jax.tree.map(lambda x: x.astype(np.int32), tg)
    with pytest.raises(ValueError, match="int32.*must be floating"):
        drgrad(TOWERS).update(ints, drgrad(TOWERS).init(params), params)
    with pytest.raises(ValueError, match="refers to task 5"):
        t = {"dedicated": "t1a", "shared": "t1b", "aux:5": "t2"}
        drgrad(t).update(tg, drgrad(t).init(params), params)
    ragged = dict(tg, trunk={"w": np.zeros((3, 5, 4), np.float32)})
    with pytest.raises(ValueError, match="task-axis length 3"):
        drgrad(TOWERS).update(ragged, drgrad(TOWERS).init(params), params)


def test_dtype_preserved_for_bfloat16(rng):
    params, tg = with_sign_case(rng, 3)
    params = jax.tree.map(lambda x: x.astype(jnp.bfloat16), params)
    tg = jax.tree.map(lambda x: jnp.asarray(x, jnp.bfloat16), tg)
    tx = drgrad(TOWERS)
    out, state = jax.jit(tx.update)(tg, tx.init(params), params)
    assert all(x.dtype == jnp.bfloat16 for x in jax.tree.leaves(out))
    assert state.mu.dtype == jnp.float32


def test_all_sign_cases_reachable_on_both_pairings():
    """Each pairing's diagnostics report Table 1 rows in the paper's (xi1, xi2) convention."""
    for pairing, (a, b) in itertools.product(["consistent", "as_printed"], [(1, 1), (-1, -1)]):
        g1p = [jnp.array([1.0, 0.0])]
        g1pp = [jnp.array([a * 1.0, 1.0])]
        g2 = [jnp.array([[b * 1.0, -1.0]])]
        _, _, diag = drgrad_jax.route(g1p, g1pp, g2, pairing=pairing)
        assert int(diag.case[0]) == {(1, 1): 0, (-1, -1): 3}[(a, b)]


# ----------------------------------------------------------------------------
# Conformance battery and flax.nnx.Optimizer.
# ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def conformance_inputs():
    params, tg = with_sign_case(np.random.default_rng(7), 1)
    return params, jax.tree.map(jnp.asarray, tg)


@pytest.mark.parametrize("check", sorted(set(conformance.CHECKS) - {"nnx_optimizer"}))
def test_conformance(check, conformance_inputs):
    params, tg = conformance_inputs
    conformance.run_check(
        check, drgrad, params, tg, kwargs={"towers": TOWERS, "gamma": 1.0}, hyperparam="gamma"
    )


@pytest.mark.parametrize("check", sorted(set(conformance.CHECKS) - {"nnx_optimizer"}))
def test_released_rule_conformance(check, conformance_inputs):
    params, tg = conformance_inputs
    towers = {"head:0": "t1a", "head:1": "t1b"}
    conformance.run_check(check, drgrad_released, params, tg, kwargs={"towers": towers})


class _SplitModel(nnx.Module):
    """A tiny split-tower model: trunk, T1', T1'', T2."""

    def __init__(self, *, rngs):
        self.trunk = nnx.Linear(3, 4, rngs=rngs)
        self.t1a = nnx.Linear(4, 1, rngs=rngs)
        self.t1b = nnx.Linear(4, 1, rngs=rngs)
        self.t2 = nnx.Linear(4, 1, rngs=rngs)

    def __call__(self, x, mu):
        h = jnp.tanh(self.trunk(x))
        z1 = mu[0] * self.t1a(h)[:, 0] + mu[1] * self.t1b(h)[:, 0]
        return jnp.stack([z1, self.t2(h)[:, 0]], axis=-1)


def test_composes_with_nnx_optimizer():
    model = _SplitModel(rngs=nnx.Rngs(0))
    tx = optax.chain(drgrad(TOWERS), optax.adam(1e-2))
    optimizer = nnx.Optimizer(model, tx, wrt=nnx.Param)
    x = jax.random.normal(jax.random.key(1), (16, 3))
    y = (jax.random.normal(jax.random.key(2), (16, 2)) > 0).astype(jnp.float32)
    graphdef, state = nnx.split(model, nnx.Param)
    before = jax.tree.map(np.asarray, nnx.to_pure_dict(state))
    for _ in range(3):
        state = nnx.state(model, nnx.Param)
        mu = mixing_weights(optimizer.opt_state)

        def task_losses(s, mu=mu):
            logits = nnx.merge(graphdef, s)(x, mu)
            return jnp.mean(optax.sigmoid_binary_cross_entropy(logits, y), axis=0)

        task_of = {"t1a": 0, "t1b": 0, "t2": 1}
        _, tg = drgrad_jax.per_task_grads(task_losses, state, task_of=task_of)
        optimizer.update(model, tg)
    after = nnx.to_pure_dict(nnx.state(model, nnx.Param))
    assert not np.allclose(after["t1a"]["kernel"], before["t1a"]["kernel"])
    mu = mixing_weights(optimizer.opt_state)
    assert abs(float(mu.sum()) - 1.0) < 1e-6 and float(mu[0]) != 0.5
    # The same three steps with plain optax on the pure params give the same result.
    params = jax.tree.map(jnp.asarray, before)
    opt_state = tx.init(params)
    for _ in range(3):
        mu_f = mixing_weights(opt_state)

        def pure_losses(p, mu=mu_f):
            logits = nnx.merge(graphdef, nnx.State(p))(x, mu)
            return jnp.mean(optax.sigmoid_binary_cross_entropy(logits, y), axis=0)

        _, tg = drgrad_jax.per_task_grads(pure_losses, params, task_of=task_of)
        updates, opt_state = tx.update(tg, opt_state, params)
        params = optax.apply_updates(params, updates)
    for got, want in zip(jax.tree.leaves(after), jax.tree.leaves(params), strict=True):
        np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(mu, mixing_weights(opt_state), rtol=1e-6)


def test_activations_space_routes_each_primary_through_its_own_shared_representation(rng):
    # Two primaries with their own shared representations (of different sizes)
    # and one auxiliary task: primary 1's part of the update is what drgrad gives
    # for primary 1 alone on the rows it reads (its own, and the auxiliary's).
    def rows(n):
        return [jnp.asarray(rng.normal(size=n), jnp.float32) for _ in range(3)]

    v0, s0, v1, s1 = rows(4), rows(4), rows(3), rows(3)
    zero = jnp.zeros(3)
    reps = {
        "v0": jnp.stack(v0),
        "s0": jnp.stack(s0),
        "v1": jnp.stack([zero, v1[1], zero]),
        "s1": jnp.stack([zero, s1[1], s1[2]]),
    }
    towers = {"dedicated:0": "v0", "shared:0": "s0", "dedicated:1": "v1", "shared:1": "s1"}
    tx = drgrad(towers, space="activations", num_tasks=3)
    out, _ = tx.update(reps, tx.init(None))
    alone = drgrad({"dedicated": "v1", "shared": "s1"}, space="activations", num_tasks=2)
    want, _ = alone.update(
        {"v1": jnp.stack([v1[1], zero]), "s1": jnp.stack([s1[1], s1[2]])}, alone.init(None)
    )
    np.testing.assert_allclose(out["v1"], want["v1"], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(out["s1"], want["s1"], rtol=1e-5, atol=1e-6)
