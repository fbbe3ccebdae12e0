"""DRGrad configurations that cannot be right: overlapping tower roles, gamma out of domain,
no auxiliary task."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from drgrad_jax._src import routing
from drgrad_jax._src.released import drgrad_released
from drgrad_jax._src.transform import drgrad


@pytest.mark.parametrize(
    "towers,a,b",
    [
        (
            {"dedicated": "tower", "shared": "tower/inner", "aux:1": "aux"},
            "dedicated:0",
            "shared:0",
        ),
        ({"dedicated": "t1", "shared": "t1", "aux:1": "aux"}, "dedicated:0", "shared:0"),
        ({"dedicated": "t1", "shared": "s", "aux:1": "s/x"}, "shared:0", "aux:1"),
    ],
)
def test_overlapping_roles_are_refused_naming_both(towers, a, b):
    with pytest.raises(ValueError, match=rf"towers roles {a} .* and {b} .* overlapping"):
        drgrad(towers)


def test_sibling_prefixes_are_not_overlapping():
    drgrad({"dedicated": "tower", "shared": "tower2", "aux:1": "tower_aux"})


def _route(gamma):
    rng = np.random.default_rng(0)
    g1p, g1pp = [jnp.asarray(rng.normal(size=5))], [jnp.asarray(rng.normal(size=5) * 30)]
    g2 = [jnp.asarray(rng.normal(size=(1, 5)) * 30)]
    f = jax.jit(lambda gm: routing.route(g1p, g1pp, g2, gamma=gm))
    return f(jnp.float32(gamma))


@pytest.mark.parametrize("gamma", [0.0, -1.0, float("nan")])
def test_gamma_out_of_domain_at_run_time_makes_the_step_non_finite(gamma):
    r_ded, _, diag = _route(gamma)
    assert not np.all(np.isfinite(np.asarray(r_ded[0])))
    assert np.isnan(float(diag.lam_shared))


def test_gamma_in_domain_matches_the_definition():
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=5), rng.normal(size=5) * 30
    _, _, diag = _route(1.5)
    want = min(np.linalg.norm(a) / np.linalg.norm(b), 1.0) ** 1.5
    np.testing.assert_allclose(float(diag.lam_shared), want, rtol=1e-5)


NO_AUX = "routes between a primary task and at least one auxiliary task"


@pytest.mark.parametrize(
    "towers,kwargs",
    [
        ({"dedicated": "t1a", "shared": "t1b"}, {"space": "params"}),
        ({"dedicated": "t1a", "shared": "t1b"}, {"space": "params", "num_tasks": 1}),
        (
            {"dedicated": "t1a", "shared": "t1b"},
            {"space": "params", "num_tasks": 2, "pairing": "as_printed"},
        ),
        ({"dedicated": "v1", "shared": "vs"}, {"num_tasks": 1}),
        ({"dedicated": "v1", "shared": "vs"}, {"space": "activations", "num_tasks": 1}),
    ],
)
def test_drgrad_without_an_auxiliary_task_is_refused_at_construction(towers, kwargs):
    with pytest.raises(ValueError, match=NO_AUX):
        drgrad(towers, **kwargs)


def test_towers_without_aux_roles_are_representations_and_need_num_tasks():
    """``space=None`` reads the space from the towers (docs/drgrad.md, *Ablations*)."""
    with pytest.raises(ValueError, match=r"no 'aux:<j>' roles name representations.*num_tasks"):
        drgrad({"dedicated": "v1", "shared": "vs"})


def test_drgrad_aux_role_beyond_declared_num_tasks_is_refused_at_construction():
    with pytest.raises(ValueError, match="towers role aux:1 refers to task 1 .* length 1"):
        drgrad({"dedicated": "t1a", "shared": "t1b", "aux:1": "t2"}, num_tasks=1)


def test_drgrad_with_one_auxiliary_task_still_steps():
    """The smallest accepted configuration runs (the refusal is not too broad)."""
    params = {"t1a": jnp.ones(2), "t1b": jnp.ones(2), "t2": jnp.ones(2)}
    grads = jax.tree.map(lambda p: jnp.stack([p, -p]), params)
    for towers, kw in [
        ({"dedicated": "t1a", "shared": "t1b", "aux:1": "t2"}, {}),
        ({"dedicated": "t1a", "shared": "t1b"}, {"space": "activations", "num_tasks": 2}),
    ]:
        tx = drgrad(towers, **kw)
        g = {n: grads[n] for n in ("t1a", "t1b")} if kw.get("space") else grads
        updates, _ = tx.update(g, tx.init(params))
        assert all(np.all(np.isfinite(u)) for u in jax.tree.leaves(updates))


def test_drgrad_released_with_one_task_is_refused_at_construction():
    with pytest.raises(ValueError, match=r"two task heads; towers names 'head:1' but num_tasks=1"):
        drgrad_released({"head:0": "a", "head:1": "b"}, num_tasks=1)
    with pytest.raises(ValueError, match="exactly two roles"):
        drgrad_released({"head:0": "a"})
    drgrad_released({"head:0": "a", "head:1": "b"}, num_tasks=2)


CASES = {"n": 0}


@settings(max_examples=50, deadline=None)
@given(
    names=st.lists(st.sampled_from(["a", "a/b", "a/b/c", "b", "ab", "c"]), min_size=3, max_size=3)
)
def test_generated_tower_configs_are_refused_iff_two_roles_nest(names):
    CASES["n"] += 1
    towers = dict(zip(("dedicated", "shared", "aux:1"), names))

    def nested(p, q):
        return p == q or p.startswith(q + "/") or q.startswith(p + "/")

    overlap = any(nested(names[i], names[j]) for i in range(3) for j in range(i + 1, 3))
    if overlap:
        with pytest.raises(ValueError, match="overlapping leaves"):
            drgrad(towers)
    else:
        drgrad(towers)
