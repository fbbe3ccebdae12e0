"""UPGrad: average of the task gradients projected onto the dual cone."""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import optax

from drgrad_jax._src.gramian import gramian_weighting
from drgrad_jax._src.min_norm import box_qp_weights
from drgrad_jax._src.task_grads import require_num_tasks


class UPGradState(NamedTuple):
    """State of ``upgrad``: only a step counter."""

    count: jax.Array


def upgrad_weights(gram: jax.typing.ArrayLike) -> jax.Array:
    r"""UPGrad's task weights from the Gramian: ``sum_i argmin_{w >= e_i / K} w^T M w``.

    Args:
      gram: ``[K, K]`` Gramian of the task gradients.

    Returns:
      ``[K]`` float32 weights ``c`` with update ``d = sum_k c_k g_k``.
    """
    gram = jnp.asarray(gram, jnp.float32)
    k = gram.shape[0]
    lowers = jnp.eye(k, dtype=jnp.float32) / k
    return jnp.sum(jax.vmap(lambda u: box_qp_weights(gram, u))(lowers), axis=0)


def upgrad(*, num_tasks: int | None = None) -> optax.GradientTransformationExtraArgs:
    r"""Unconflicting projection of gradients (UPGrad, Jacobian descent).

    Quinton & Rey (2024), Eq. (5) and Prop. 1: each task gradient is projected
    onto the dual cone of the task gradients, ``C = {v : <g_j, v> >= 0 for all j}``,
    and the projections are averaged:

    .. math::
      d = \frac{1}{K} \sum_{i=1}^K \pi_C(g_i), \qquad
      \pi_C(g_i) = G^\top w^{(i)}, \quad
      w^{(i)} = \arg\min_{w \ge e_i} w^\top G G^\top w

    so ``d`` lies in ``C``: ``<g_j, d> >= 0`` for every task (no task's loss
    increases to first order), and ``d`` equals the mean gradient when the tasks
    do not conflict. The K box-constrained QPs are solved exactly from the
    Gramian (``box_qp_weights``). No regularisation of the Gramian is added
    (TorchJD adds ``1e-4 I`` after trace-normalising for its iterative solver).

    Degenerate inputs: ``K = 1`` gives ``g_1``; identical gradients give that
    gradient; exactly opposite gradients (the cone is the orthogonal complement)
    give a zero update; zero task gradients impose no constraint and contribute
    zero. The scale is that of the mean gradient.

    Args:
      num_tasks: optional ``K``, the length of the task axis; inferred from the
        gradients when ``None``, checked against them when given.

    Returns:
      An ``optax.GradientTransformationExtraArgs`` mapping per-task gradients
      (leaves ``[K, *param_shape]``) to a params-shaped update; extra keyword
      arguments are ignored.

    Example:
      >>> import jax.numpy as jnp
      >>> tx = upgrad()
      >>> g = {"w": jnp.array([[1.0, 0.0], [-1.0, 1.0]])}
      >>> [round(v, 3) for v in tx.update(g, tx.init(None))[0]["w"].tolist()]
      [0.25, 0.75]

    References:
      Quinton & Rey, *Jacobian Descent for Multi-Objective Optimization*, 2024,
      https://arxiv.org/abs/2406.16232 (TorchJD).
    """
    if num_tasks is not None:
        require_num_tasks(num_tasks, "upgrad")

    return gramian_weighting(upgrad_weights, UPGradState, num_tasks=num_tasks)
