"""Forward oracles: each network's logits against a NumPy forward written from its paper.

The references live in ``tests/model_references.py``. Every parameter is first
redrawn at random (biases included, which start at zero), so a term the model
drops or a bias it ignores changes the logits. MMoE's oracle is in
``test_networks.py``.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from drgrad_jax import models
from tests import model_references as ref

VOCABS = (5, 3)
NUM_DENSE = 2
NUM_USERS = 4
B = 7


def inputs(seed=0):
    rng = np.random.default_rng(seed)
    cat = rng.integers(0, np.array(VOCABS), (B, len(VOCABS))).astype(np.int32)
    dense = rng.normal(size=(B, NUM_DENSE)).astype(np.float32)
    user = rng.integers(0, NUM_USERS, B).astype(np.int32)
    return cat, dense, user


def randomized(build, seed=0):
    """``(call, params)``: ``build(rngs=...)``'s parameters drawn from N(0, 0.7^2), and a runner.

    The model is built abstractly (no initializer runs) and every parameter,
    biases included, drawn here. ``call(fn, *args)`` runs ``fn(model, *args)``
    with them as one jitted program (compiling once beats dispatching op by
    op); ``params`` is the float64 copy the reference reads.
    """
    graphdef, params = models.params_of(nnx.eval_shape(lambda: build(rngs=nnx.Rngs(0))))
    leaves, treedef = jax.tree.flatten(params)
    rng = np.random.default_rng(seed)
    new = [jnp.asarray(0.7 * rng.normal(size=x.shape), jnp.float32) for x in leaves]
    params = jax.tree.unflatten(treedef, new)

    def call(fn, *args):
        return jax.jit(lambda p, a: fn(nnx.merge(graphdef, p), *a))(params, args)

    return call, ref.as_float64(params)


def assert_logits_close(got, want):
    assert np.asarray(got).shape == want.shape
    np.testing.assert_allclose(np.asarray(got, np.float64), want, rtol=2e-5, atol=2e-5)


def test_shared_bottom_matches_numpy_oracle():
    build = functools.partial(
        models.SharedBottom, VOCABS, NUM_DENSE, 3, embed_dim=3, bottom=(6, 5), tower=(4,),
        activation="tanh",
    )  # fmt: skip
    call, p = randomized(build, 1)
    cat, dense, _ = inputs(1)
    want = ref.shared_bottom(p, cat, dense, VOCABS, "tanh")
    assert_logits_close(call(lambda m, c, d: m(c, d), cat, dense), want)


@pytest.mark.parametrize(
    "num_levels, num_specific, num_shared, gate_hidden", [(1, 2, 1, ()), (3, 1, 2, (3,))]
)
def test_ple_matches_numpy_oracle(num_levels, num_specific, num_shared, gate_hidden):
    build = functools.partial(
        models.PLE, VOCABS, NUM_DENSE, 3, num_levels=num_levels, num_specific=num_specific,
        num_shared=num_shared, embed_dim=2, expert_hidden=(4, 3), tower=(3,),
        gate_hidden=gate_hidden,
    )  # fmt: skip
    call, p = randomized(build, 2)
    cat, dense, _ = inputs(2)
    got = call(lambda m, c, d: m(c, d), cat, dense)
    assert_logits_close(got, ref.ple(p, cat, dense, VOCABS))


@pytest.mark.parametrize(
    "mix, ppnet", [("logits", None), ("probs", "single"), ("logits", "gatenu")]
)
def test_split_mmoe_matches_numpy_oracle(mix, ppnet):
    build = functools.partial(
        models.SplitMMoE, VOCABS, NUM_DENSE, 3, embed_dim=2, num_experts=3,
        expert_hidden=(5, 4), tower=(3,), gate_hidden=(3,), mix=mix, ppnet=ppnet,
        num_users=NUM_USERS, user_embed_dim=3, ppnet_hidden=4,
    )  # fmt: skip
    call, p = randomized(build, 3)
    cat, dense, user = inputs(3)
    user = None if ppnet is None else user
    mu = np.array([0.8, 0.2])
    want = ref.split_mmoe(p, cat, dense, user, VOCABS, mu, mix, ppnet)
    both = lambda m, c, d, u, mu: (m(c, d, u, mu=mu), m.drgrad_trunk(c, d, u))
    logits, reps = call(both, cat, dense, user, np.float32(mu))
    assert_logits_close(logits, want)
    # DRGrad's own cut hands the towers the same v1 and (gated) v_s.
    v1, vs = ref.split_mmoe_reps(p, cat, dense, user, VOCABS, ppnet)
    assert_logits_close(reps["v1"], v1)
    assert_logits_close(reps["vs"], vs)
    # mu' weighs T1'(v1): the reference with the weights swapped is far from the model.
    swapped = ref.split_mmoe(p, cat, dense, user, VOCABS, mu[::-1], mix, ppnet)
    assert np.max(np.abs(swapped[:, 0] - want[:, 0])) > 1e-2


@pytest.mark.parametrize("kind", ["single", "gatenu"])
def test_personalized_gate_matches_numpy_oracle(kind):
    build = functools.partial(models.PersonalizedGate, 3, 5, kind=kind, hidden=4)
    call, p = randomized(build, 4)
    v_pp = 1.5 * np.random.default_rng(4).normal(size=(B, 3)).astype(np.float32)
    want = ref.personalized_gate(p, v_pp.astype(np.float64), kind)
    assert_logits_close(call(lambda gate, v: gate(v), v_pp), want)
    # The values span both sides of 1: the gate amplifies some coordinates and damps others.
    assert want.min() < 0.7 and want.max() > 1.3 and np.all((want > 0) & (want < 2))
