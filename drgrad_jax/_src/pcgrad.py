"""PCGrad: projecting conflicting gradients."""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import optax

from drgrad_jax._src.gramian import gramian
from drgrad_jax._src.task_grads import (
    check_matches_params,
    check_task_grads,
    combine,
    require_num_tasks,
)


class PCGradState(NamedTuple):
    """State of ``pcgrad``: a step counter and the key that draws the task orders."""

    count: jax.Array
    key: jax.Array


def random_task_orders(key: jax.Array, num_tasks: int) -> jax.Array:
    """``[K, K]`` int32: row ``i`` is a random permutation of the tasks (row ``i`` skips ``i``)."""
    # Sorting i.i.d. uniforms gives uniformly random permutations (ties have probability 0).
    noise = jax.random.uniform(key, (num_tasks, num_tasks))
    return jnp.argsort(noise, axis=1).astype(jnp.int32)


def pcgrad_weights(gram: jax.typing.ArrayLike, orders: jax.typing.ArrayLike) -> jax.Array:
    r"""PCGrad's task weights from the Gramian and the per-task projection orders.

    Every projected gradient is a combination of the original ones,
    ``g_i^PC = sum_l C_il g_l``, so the projections run on coefficient rows:
    ``<g_i^PC, g_j> = (C M)_ij``. The update is ``d = sum_l (sum_i C_il) g_l``.

    Args:
      gram: ``[K, K]`` Gramian of the task gradients.
      orders: ``[K, K]`` ints; row ``i`` lists the tasks in the order task ``i``
        is projected against them (entries equal to ``i`` are skipped).

    Returns:
      ``[K]`` float32 weights.
    """
    gram = jnp.asarray(gram, jnp.float32)
    orders = jnp.asarray(orders, jnp.int32)
    k = gram.shape[0]
    if orders.shape != (k, k):
        raise ValueError(f"orders has shape {orders.shape}; expected [{k}, {k}].")
    rows = jnp.arange(k)
    sq_norms = jnp.diagonal(gram)

    def body(pos, coef):
        j = orders[:, pos]
        dots = (coef @ gram)[rows, j]
        nj = sq_norms[j]
        conflict = (dots < 0) & (j != rows) & (nj > 0)
        step = jnp.where(conflict, dots / jnp.where(nj > 0, nj, 1.0), 0.0)
        return coef.at[rows, j].add(-step)

    coef = jax.lax.fori_loop(0, k, body, jnp.eye(k, dtype=jnp.float32))
    return jnp.sum(coef, axis=0)


def pcgrad(seed: int = 0, *, num_tasks: int | None = None) -> optax.GradientTransformationExtraArgs:
    r"""Projecting conflicting gradients (PCGrad, "gradient surgery").

    Yu et al. (2020), Algorithm 1: for each task ``i``, starting from
    ``g_i^PC = g_i``, visit the other tasks ``j`` in random order and, when they
    conflict, remove the component along the ORIGINAL ``g_j``:

    .. math::
      \text{if } \langle g_i^{PC}, g_j\rangle < 0:\quad
      g_i^{PC} \leftarrow g_i^{PC} - \frac{\langle g_i^{PC}, g_j\rangle}{\|g_j\|^2} g_j,
      \qquad d = \sum_i g_i^{PC}.

    The projections run on the K x K Gramian (``pcgrad_weights``); the random
    orders come from a key carried in the state, split every step, so a run is
    reproducible from ``seed``.

    Degenerate inputs: zero task gradients are never projected against (and
    contribute zero); identical gradients never conflict (``d = K g``); two
    exactly opposite gradients both project to zero (``d = 0``); ``K = 1``
    gives ``g_1``. The scale is that of the summed gradient.

    Args:
      seed: seeds the key in the state that draws each step's task orders.
      num_tasks: optional ``K``, the length of the task axis; inferred from the
        gradients when ``None``, checked against them when given.

    Returns:
      An ``optax.GradientTransformationExtraArgs`` mapping per-task gradients
      (leaves ``[K, *param_shape]``) to a params-shaped update; extra keyword
      arguments are ignored.

    Example:
      >>> import jax.numpy as jnp
      >>> tx = pcgrad()
      >>> g = {"w": jnp.array([[1.0, 0.0], [-1.0, 1.0]])}
      >>> tx.update(g, tx.init(None))[0]["w"].tolist()
      [0.5, 1.5]

    References:
      Yu, Kumar, Gupta, Levine, Hausman & Finn, *Gradient Surgery for Multi-Task
      Learning*, NeurIPS 2020, https://arxiv.org/abs/2001.06782.
    """
    if num_tasks is not None:
        require_num_tasks(num_tasks, "pcgrad")

    def init_fn(params):
        del params
        return PCGradState(count=jnp.zeros([], jnp.int32), key=jax.random.key(seed))

    def update_fn(task_grads, state, params=None, **extra_args):
        del extra_args
        k = check_task_grads(task_grads, num_tasks)
        check_matches_params(task_grads, params)
        key, sub = jax.random.split(state.key)
        weights = pcgrad_weights(gramian(task_grads), random_task_orders(sub, k))
        return combine(weights, task_grads), PCGradState(
            count=optax.safe_increment(state.count), key=key
        )

    return optax.GradientTransformationExtraArgs(init_fn, update_fn)
