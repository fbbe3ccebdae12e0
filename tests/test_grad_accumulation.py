"""Gradient accumulation over micro-batches with a multi-task transformation.

The documented recipe (docs/drgrad.md, *Using the transformations*): average the
task-axis gradients of equal micro-batches, then apply the transformation once.
The result must equal the transformation applied to the full batch's gradients,
which a plain sum over the rows (no task axis) would not.
"""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import drgrad_jax as dj


def _loss_fn(params, x, y):
    # Two tasks sharing a trunk: mean squared error of each head over the batch.
    h = jnp.tanh(x @ params["trunk"])
    preds = jnp.stack([h @ params["head0"], h @ params["head1"]])  # [K, B]
    return jnp.mean((preds - y.T) ** 2, axis=1)  # [K]


def _setup(seed=0, batch=32, dim=5, hidden=4):
    ks = jax.random.split(jax.random.key(seed), 5)
    params = {
        "trunk": jax.random.normal(ks[0], (dim, hidden)),
        "head0": jax.random.normal(ks[1], (hidden,)),
        "head1": jax.random.normal(ks[2], (hidden,)),
    }
    x = jax.random.normal(ks[3], (batch, dim))
    y = jax.random.normal(ks[4], (batch, 2))
    return params, x, y


def _accumulated(params, x, y, micro):
    """The recipe: mean of the micro-batches' task-axis gradients, in a scan."""
    xs = x.reshape(micro, -1, x.shape[-1])
    ys = y.reshape(micro, -1, y.shape[-1])

    def body(acc, batch):
        _, g = dj.per_task_grads(_loss_fn, params, *batch)
        return jax.tree.map(jnp.add, acc, g), None

    zeros = jax.tree.map(lambda p: jnp.zeros((2, *p.shape), p.dtype), params)
    total, _ = jax.lax.scan(body, zeros, (xs, ys))
    return jax.tree.map(lambda g: g / micro, total)


@pytest.mark.parametrize("method", [dj.pcgrad, dj.mgda, lambda: dj.cagrad(0.4)])
def test_accumulated_task_grads_give_the_full_batch_update(method):
    params, x, y = _setup()
    _, full = dj.per_task_grads(_loss_fn, params, x, y)
    acc = _accumulated(params, x, y, micro=4)
    for a, f in zip(jax.tree.leaves(acc), jax.tree.leaves(full)):
        np.testing.assert_allclose(a, f, rtol=1e-5, atol=1e-6)
    tx = optax.chain(method(), optax.sgd(0.1))
    state = tx.init(params)
    u_acc, _ = tx.update(acc, state, params)
    u_full, _ = tx.update(full, state, params)
    for a, f in zip(jax.tree.leaves(u_acc), jax.tree.leaves(u_full)):
        np.testing.assert_allclose(a, f, rtol=1e-5, atol=1e-6)


def test_combining_each_micro_batch_first_is_not_the_full_batch_update():
    # Why the recipe accumulates before the transformation: PCGrad is not linear,
    # so the mean of per-micro-batch PCGrad updates differs from the full batch's.
    params, x, y = _setup(seed=1)
    tx = dj.pcgrad()
    state = tx.init(params)
    _, full = dj.per_task_grads(_loss_fn, params, x, y)
    u_full, _ = tx.update(full, state, params)
    parts = []
    for xs, ys in zip(jnp.split(x, 4), jnp.split(y, 4)):
        _, g = dj.per_task_grads(_loss_fn, params, xs, ys)
        parts.append(tx.update(g, state, params)[0])
    u_each = jax.tree.map(lambda *u: sum(u) / len(u), *parts)
    gap = max(
        float(jnp.max(jnp.abs(a - b)))
        for a, b in zip(jax.tree.leaves(u_each), jax.tree.leaves(u_full))
    )
    assert gap > 1e-3


def test_multisteps_around_a_transformation_points_to_the_recipe():
    params, _, _ = _setup()
    with pytest.raises(ValueError, match="MultiSteps cannot wrap it"):
        tx = optax.MultiSteps(dj.pcgrad(), 2)
        tx.update(jax.tree.map(lambda p: jnp.stack([p, -p]), params), tx.init(params), params)
