"""Aligned-MTL: align the principal components of the task gradients."""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import optax

from drgrad_jax._src.gramian import gramian_weighting
from drgrad_jax._src.task_grads import require_num_tasks


class AlignedMTLState(NamedTuple):
    """State of ``aligned_mtl``: only a step counter."""

    count: jax.Array


def aligned_mtl_weights(gram: jax.typing.ArrayLike) -> jax.Array:
    r"""Aligned-MTL's task weights ``B 1`` from the Gramian's eigendecomposition.

    Args:
      gram: ``[K, K]`` Gramian of the task gradients.

    Returns:
      ``[K]`` float32 weights.
    """
    gram = jnp.asarray(gram, jnp.float32)
    k = gram.shape[0]
    lam, v = jnp.linalg.eigh(gram)
    tol = jnp.max(lam) * k * jnp.finfo(jnp.float32).eps
    keep = lam > tol
    safe = jnp.where(keep, lam, 1.0)
    sigma_min = jnp.sqrt(jnp.min(jnp.where(keep, lam, jnp.inf)))
    sigma_min = jnp.where(jnp.any(keep), sigma_min, 0.0)
    inv_sqrt = jnp.where(keep, 1.0 / jnp.sqrt(safe), 0.0)
    b = sigma_min * (v * inv_sqrt[None, :]) @ v.T
    return jnp.sum(b, axis=1)


def aligned_mtl(*, num_tasks: int | None = None) -> optax.GradientTransformationExtraArgs:
    r"""Aligned-MTL: make the task gradients an orthogonal, equally scaled system.

    Senushkin et al. (2023), Eq. (9)-(10) and Algorithm 1: with the Gramian
    ``M = G G^T = V Lambda V^T`` (rank ``R``, eigenvalues above a relative
    tolerance ``max(Lambda) K eps``) and ``sigma_min = sqrt(lambda_R)``,

    .. math::
      B = \sigma_{\min}\, V \Lambda^{-1/2} V^\top, \qquad
      \hat G = B G, \qquad d = \hat G^\top \mathbf{1} = \sum_k (B\mathbf{1})_k\, g_k,

    so the aligned gradients have condition number 1 and the scale of the
    smallest singular value. Computed from the Gramian (``aligned_mtl_weights``),
    as in LibMTL. Task weights ``w`` of the paper are all ones.

    Degenerate inputs: ``K = 1`` gives ``g_1``; K identical gradients (rank 1)
    give ``K g`` (the sum); two exactly opposite gradients (rank 1, ``B 1`` = 0) give
    ``d = 0``; all-zero gradients give ``d = 0``; zero task gradients are
    dropped with the null space.

    Args:
      num_tasks: optional ``K``, the length of the task axis; inferred from the
        gradients when ``None``, checked against them when given.

    Returns:
      An ``optax.GradientTransformationExtraArgs`` mapping per-task gradients
      (leaves ``[K, *param_shape]``) to a params-shaped update; extra keyword
      arguments are ignored.

    Example:
      >>> import jax.numpy as jnp
      >>> tx = aligned_mtl()
      >>> g = {"w": jnp.array([[1.0, 0.0], [0.0, 3.0]])}
      >>> [round(v, 3) for v in tx.update(g, tx.init(None))[0]["w"].tolist()]
      [1.0, 1.0]

    References:
      Senushkin, Patakin, Kuznetsov & Konushin, *Independent Component Alignment
      for Multi-Task Learning*, CVPR 2023, https://arxiv.org/abs/2305.19000.
    """
    if num_tasks is not None:
        require_num_tasks(num_tasks, "aligned_mtl")

    return gramian_weighting(aligned_mtl_weights, AlignedMTLState, num_tasks=num_tasks)
