"""MGDA: the min-norm point of the convex hull of the task gradients."""

from __future__ import annotations

from typing import NamedTuple

import jax
import optax

from drgrad_jax._src.gramian import gramian_weighting
from drgrad_jax._src.min_norm import min_norm_weights
from drgrad_jax._src.task_grads import require_num_tasks


class MGDAState(NamedTuple):
    """State of ``mgda``: only a step counter."""

    count: jax.Array


def mgda(*, num_tasks: int | None = None) -> optax.GradientTransformationExtraArgs:
    r"""The multiple-gradient descent algorithm: the min-norm convex combination.

    Sener & Koltun (2018), Eq. (3) / Algorithm 2 (Désidéri's MGDA):

    .. math::
      w^\star = \arg\min_{w \in \Delta^K} \Big\|\sum_k w_k g_k\Big\|^2, \qquad
      d = \sum_k w^\star_k g_k

    ``d`` is the min-norm point of the convex hull of the task gradients; when
    it is non-zero, ``-d`` decreases every task loss (``<g_k, d> >= ||d||^2``).
    The small QP over ``w`` is solved exactly from the Gramian (active-set
    enumeration, see ``min_norm_weights``) instead of Frank-Wolfe.

    Applied at a shared representation (``per_task_rep_grads`` then
    ``RepGrads.finish``) this is MGDA-UB, the paper's efficient upper bound.

    Degenerate inputs: ``K = 1`` gives ``g_1``; identical gradients give that
    gradient; exactly opposite gradients (0 lies in the hull) give a zero update;
    a zero task gradient makes the update zero (0 is a vertex of the hull).
    ``d`` has the scale of a convex combination (like the mean, not the sum).

    Args:
      num_tasks: optional ``K``, the length of the task axis; inferred from the
        gradients when ``None``, checked against them when given.

    Returns:
      An ``optax.GradientTransformationExtraArgs`` mapping per-task gradients
      (leaves ``[K, *param_shape]``) to a params-shaped update; extra keyword
      arguments are ignored.

    Example:
      >>> import jax.numpy as jnp
      >>> tx = mgda()
      >>> g = {"w": jnp.array([[1.0, 0.0], [0.0, 2.0]])}
      >>> [round(v, 3) for v in tx.update(g, tx.init(None))[0]["w"].tolist()]
      [0.8, 0.4]

    References:
      Sener & Koltun, *Multi-Task Learning as Multi-Objective Optimization*,
      NeurIPS 2018, https://arxiv.org/abs/1810.04650.
      Désidéri, *Multiple-gradient descent algorithm (MGDA) for multiobjective
      optimization*, Comptes Rendus Mathématique 350, 2012.
    """
    if num_tasks is not None:
        require_num_tasks(num_tasks, "mgda")

    return gramian_weighting(min_norm_weights, MGDAState, num_tasks=num_tasks)
