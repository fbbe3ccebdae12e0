"""IMTL-G: impartial multi-task learning, the gradient-balancing part."""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import optax

from drgrad_jax._src.gramian import gramian_weighting
from drgrad_jax._src.task_grads import require_num_tasks


class IMTLGState(NamedTuple):
    """State of ``imtl_g``: only a step counter."""

    count: jax.Array


def imtl_g_weights(gram: jax.typing.ArrayLike) -> jax.Array:
    r"""IMTL-G's task weights ``alpha`` (summing to 1) from the Gramian.

    Solves ``<sum_j alpha_j g_j, u_a - u_i> = 0`` for every non-zero task ``i``
    (``u = g / ||g||``, ``a`` the first non-zero task) and ``sum alpha = 1``;
    zero tasks get ``alpha_i = 0``. Equivalent to the closed form
    ``alpha_{2:K} = g_1 U^T (D U^T)^{-1}`` when that inverse exists; solved by
    least squares so singular cases (identical gradients) stay finite.

    Args:
      gram: ``[K, K]`` Gramian of the task gradients.

    Returns:
      ``[K]`` float32 weights.
    """
    gram = jnp.asarray(gram, jnp.float32)
    k = gram.shape[0]
    norms = jnp.sqrt(jnp.maximum(jnp.diagonal(gram), 0.0))
    scale = jnp.max(norms)
    norms = norms / jnp.where(scale > 0, scale, 1.0)
    gram = gram / jnp.where(scale > 0, scale * scale, 1.0)
    valid = norms > 0
    # gu[j, b] = <g_j, u_b>
    gu = gram / jnp.where(valid, norms, 1.0)[None, :] * valid[None, :]
    anchor = jnp.argmax(valid)
    rows = gu[:, anchor][None, :] - gu.T  # row i: <g_., u_anchor - u_i>
    eye = jnp.eye(k, dtype=jnp.float32)
    rows = jnp.where(valid[:, None], rows, eye)
    is_anchor = jnp.arange(k) == anchor
    system = jnp.where(is_anchor[:, None], jnp.ones((1, k), jnp.float32), rows)
    rhs = is_anchor.astype(jnp.float32)
    alpha = jnp.linalg.lstsq(system, rhs)[0]
    return jnp.where(jnp.isfinite(alpha), alpha, 0.0)


def imtl_g(*, num_tasks: int | None = None) -> optax.GradientTransformationExtraArgs:
    r"""IMTL-G: the update whose projections onto every task direction are equal.

    Liu et al. (2021), Section 3.2 / Eq. (6)-(7): with unit task gradients
    ``u_i = g_i / ||g_i||``, seek ``d = sum_i alpha_i g_i`` with
    ``sum_i alpha_i = 1`` and ``<d, u_1> = <d, u_i>`` for all ``i``; with
    ``D = [g_1 - g_2, ..., g_1 - g_K]`` and ``U = [u_1 - u_2, ..., u_1 - u_K]``,

    .. math::
      \alpha_{2:K} = g_1 U^\top (D U^\top)^{-1}, \qquad
      \alpha_1 = 1 - \sum_{i \ge 2} \alpha_i.

    Computed from the Gramian (``imtl_g_weights``). Only the gradient part
    (IMTL-G) is implemented; the loss-scaling part IMTL-L is not.

    Degenerate inputs: ``K = 1`` gives ``g_1``; identical gradients give that
    gradient (minimum-norm least-squares ``alpha = 1/K``); two exactly opposite
    gradients give ``d = 0``; zero task gradients get weight 0 and the rest is
    solved among the non-zero ones. The scale is that of a weighted mean.

    Args:
      num_tasks: optional ``K``, the length of the task axis; inferred from the
        gradients when ``None``, checked against them when given.

    Returns:
      An ``optax.GradientTransformationExtraArgs`` mapping per-task gradients
      (leaves ``[K, *param_shape]``) to a params-shaped update; extra keyword
      arguments are ignored.

    Example:
      >>> import jax.numpy as jnp
      >>> tx = imtl_g()
      >>> g = {"w": jnp.array([[1.0, 0.0], [0.0, 3.0]])}
      >>> [round(v, 3) for v in tx.update(g, tx.init(None))[0]["w"].tolist()]
      [0.75, 0.75]

    References:
      Liu, Li, Kuang, Xue, Chen, Yang, Liao & Zhang, *Towards Impartial Multi-task
      Learning*, ICLR 2021, https://openreview.net/forum?id=IMPnRXEWpvr.
    """
    if num_tasks is not None:
        require_num_tasks(num_tasks, "imtl_g")

    return gramian_weighting(imtl_g_weights, IMTLGState, num_tasks=num_tasks)
