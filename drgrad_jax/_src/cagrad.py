"""CAGrad: conflict-averse gradient descent."""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import optax
from optax.projections import projection_simplex

from drgrad_jax._src.domains import NON_NEGATIVE, with_domains
from drgrad_jax._src.gramian import gramian_weighting
from drgrad_jax._src.min_norm import (
    EXACT_MAX_TASKS,
    PGD_ITERS,
    _accelerated_pgd,
    _pick,
    _supports,
    _to_simplex,
    min_norm_weights,
    support_solve,
)
from drgrad_jax._src.task_grads import require_num_tasks


class CAGradState(NamedTuple):
    """State of ``cagrad``: only a step counter."""

    count: jax.Array


def _support_candidate(gram, a, r, mask):
    """Stationary point of ``a^T w + r ||G^T w||`` on the simplex restricted to ``mask``.

    On a support S with ``g_w != 0`` stationarity reads ``M_SS w_S = (t / r)(nu 1 - a_S)``
    with ``t = ||g_w||``; with ``p = M_SS^{-1} 1`` and ``q = M_SS^{-1} a_S`` the
    constraints ``1^T w = 1`` and ``w^T M w = t^2`` give
    ``s1 nu^2 - 2 s2 nu + s3 - r^2 = 0`` (``s1 = 1^T p``, ``s2 = 1^T q``,
    ``s3 = a_S^T q``) and ``w_S = (nu p - q) / sqrt(disc)``.
    """
    pq = support_solve(gram, mask, jnp.stack([jnp.ones_like(a), a], axis=1))
    p, q = pq[:, 0], pq[:, 1]
    s1, s2, s3 = jnp.sum(p), jnp.sum(q), jnp.sum(a * q)
    disc = s2 * s2 - s1 * (s3 - r * r)
    root = jnp.sqrt(jnp.maximum(disc, 0.0))
    nu = (s2 + root) / jnp.where(s1 != 0, s1, 1.0)
    w = (nu * p - q) / jnp.where(root > 0, root, jnp.nan)
    size = jnp.sum(mask)
    return _to_simplex(w, mask / jnp.where(size > 0, size, 1.0))


def cagrad_weights(gram: jax.typing.ArrayLike, c: jax.typing.ArrayLike) -> jax.Array:
    r"""CAGrad's task weights ``c_k`` (update ``d = sum_k c_k g_k``) from the Gramian.

    Solves the dual ``min_{w in simplex} w^T M 1/K + c ||g_0|| sqrt(w^T M w)``
    exactly (active-set enumeration of stationary points, plus the vertices and
    the min-norm point) for ``K <= EXACT_MAX_TASKS``, by accelerated projected
    gradient above, then returns ``1/K + c ||g_0|| w* / ||g_w*||``.

    Args:
      gram: ``[K, K]`` Gramian.
      c: the conflict-aversion radius ``c >= 0``.

    Returns:
      ``[K]`` float32 weights.
    """
    gram = jnp.asarray(gram, jnp.float32)
    k = gram.shape[0]
    scale = jnp.trace(gram) / k
    scale = jnp.where(scale > 0, scale, 1.0)
    mn = gram / scale  # argmins are invariant to this, so solve on the normalised Gramian
    a = jnp.mean(mn, axis=1)  # <g_k, g_0>
    g0_norm = jnp.sqrt(jnp.maximum(jnp.mean(mn), 0.0))  # ||g_0||
    r = jnp.asarray(c, jnp.float32) * g0_norm

    def objective(w):
        quad = jnp.einsum("...i,ij,...j->...", w, mn, w)
        return w @ a + r * jnp.sqrt(jnp.maximum(quad, 0.0))

    eye = jnp.eye(k, dtype=jnp.float32)
    base = jnp.concatenate([eye, min_norm_weights(mn)[None, :]], axis=0)
    if k > EXACT_MAX_TASKS:
        # r ||g_w|| = min_tau (r / 2)(||g_w||^2 / tau + tau): alternate a simplex QP in w
        # (accelerated projected gradient) with tau = ||g_w||, then polish on the support.
        lam_max = jnp.max(jnp.linalg.eigvalsh(mn))

        def outer(_, w):
            tau = jnp.maximum(jnp.sqrt(jnp.maximum(w @ mn @ w, 0.0)), 1e-6)
            h = (0.5 * r / tau) * mn
            return _accelerated_pgd(
                h, a, projection_simplex, w, PGD_ITERS // 10, 0.5 * lam_max * r / tau
            )

        w = jax.lax.fori_loop(0, 20, outer, base[-1])
        polished = _support_candidate(mn, a, r, (w > 1e-6).astype(jnp.float32))
        candidates = jnp.concatenate([base, w[None, :], polished[None, :]], axis=0)
    else:
        masks = jnp.asarray(_supports(k))
        stationary = jax.vmap(lambda m: _support_candidate(mn, a, r, m))(masks)
        candidates = jnp.concatenate([base, stationary], axis=0)
    w = _pick(objective(candidates), candidates)
    gw_norm = jnp.sqrt(jnp.maximum(w @ mn @ w, 0.0))
    coef = jnp.where(gw_norm > 0, r / jnp.where(gw_norm > 0, gw_norm, 1.0), 0.0)
    return jnp.full((k,), 1.0 / k, jnp.float32) + coef * w


def cagrad(
    c: jax.typing.ArrayLike = 0.5, *, rescale: bool = False, num_tasks: int | None = None
) -> optax.GradientTransformationExtraArgs:
    r"""Conflict-averse gradient descent (CAGrad).

    Liu et al. (2021), Eq. (2)-(3): with the average gradient ``g_0 = (1/K) sum g_k``,
    find the update within a ball around ``g_0`` that maximises the worst task
    improvement,

    .. math::
      \max_d \min_k \langle g_k, d\rangle \ \text{s.t.}\ \|d - g_0\| \le c\|g_0\|,

    solved through its dual over the simplex (``g_w = sum_k w_k g_k``):

    .. math::
      w^\star = \arg\min_{w \in \Delta^K} g_w^\top g_0 + c\|g_0\|\,\|g_w\|, \qquad
      d = g_0 + \frac{c\|g_0\|}{\|g_{w^\star}\|}\, g_{w^\star}.

    The dual is solved exactly from the Gramian (``cagrad_weights``) rather than
    by LibMTL's gradient steps on softmax weights. ``c = 0`` is the mean gradient.

    Degenerate inputs: ``K = 1`` gives ``(1 + c) g_1``; identical gradients give
    ``(1 + c) g``; when ``g_0 = 0`` (e.g. two exactly opposite gradients) or the
    optimal ``g_w = 0``, ``d = g_0``; zero task gradients need no special case.

    Args:
      c: the radius of the ball around ``g_0``, ``c >= 0`` (0.5 in LibMTL and the
        paper's multi-task experiments).
      rescale: divide ``d`` by ``1 + c^2``, as the authors' code (``rescale=1``)
        and LibMTL do; off by default to follow the paper's equation.
      num_tasks: optional ``K``, the length of the task axis; inferred from the
        gradients when ``None``, checked against them when given.

    Returns:
      An ``optax.GradientTransformationExtraArgs`` mapping per-task gradients
      (leaves ``[K, *param_shape]``) to a params-shaped update (the scale of the
      mean gradient); extra keyword arguments are ignored.

    Example:
      >>> import jax.numpy as jnp
      >>> tx = cagrad(c=0.0)
      >>> g = {"w": jnp.array([[1.0, 0.0], [0.0, 2.0]])}
      >>> tx.update(g, tx.init(None))[0]["w"].tolist()
      [0.5, 1.0]

    References:
      Liu, Liu, Jin, Stone & Liu, *Conflict-Averse Gradient Descent for
      Multi-task Learning*, NeurIPS 2021, https://arxiv.org/abs/2110.14048.
    """
    if num_tasks is not None:
        require_num_tasks(num_tasks, "cagrad")

    def weights_fn(gram):
        weights = cagrad_weights(gram, c)
        if rescale:
            cc = jnp.asarray(c, jnp.float32)
            weights = weights / (1.0 + cc * cc)
        return weights

    tx = gramian_weighting(weights_fn, CAGradState, num_tasks=num_tasks)
    return with_domains(tx, "cagrad", c=(c, NON_NEGATIVE))
