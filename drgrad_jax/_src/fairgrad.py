"""FairGrad: alpha-fair allocation of the update among the tasks."""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import optax

from drgrad_jax._src.domains import NON_NEGATIVE, check, with_domains
from drgrad_jax._src.gramian import gramian_weighting
from drgrad_jax._src.task_grads import require_num_tasks


class FairGradState(NamedTuple):
    """State of ``fairgrad``: only a step counter."""

    count: jax.Array


def alpha_fair_solve(m: jax.Array, alpha: jax.Array, max_iters: int) -> jax.Array:
    r"""Solves ``m y = y^(-1/alpha)`` (element-wise power, ``y > 0``) by damped Newton.

    For ``alpha > 0`` the solution is the unique minimiser of the strictly
    convex ``f(y) = y^T m y / 2 - sum_i h(y_i)`` with ``h' = y^(-1/alpha)``
    (``h = log`` at ``alpha = 1``: Nash-MTL's system). Newton steps are damped
    by ``1 / (1 + lambda)`` (``lambda`` the Newton decrement) while far from the
    solution, and any coordinate a step would make non-positive is halved
    instead. Stops once ``lambda < 1e-6`` or after ``max_iters`` steps.

    Args:
      m: ``[K, K]`` positive definite matrix (a ridged, normalised Gramian).
      alpha: ``alpha > 0``.
      max_iters: Newton iterations at most.

    Returns:
      ``[K]`` positive float32 solution.
    """
    inv_alpha = 1.0 / alpha
    y0 = jnp.maximum(jnp.diagonal(m), 1e-30) ** (-alpha / (1.0 + alpha))

    def newton(carry):
        i, y, _ = carry
        grad = m @ y - y**-inv_alpha
        hess = m + jnp.diag(inv_alpha * y ** (-inv_alpha - 1.0))
        delta = jax.scipy.linalg.cho_solve(jax.scipy.linalg.cho_factor(hess, lower=True), grad)
        dec = jnp.sqrt(jnp.maximum(grad @ delta, 0.0))
        step = jnp.where(dec > 0.25, 1.0 / (1.0 + dec), 1.0)
        new = y - step * delta
        new = jnp.where(new > 0, new, y * 0.5)
        return i + 1, new, dec

    def more(carry):
        i, y, dec = carry
        return (i < max_iters) & (dec > 1e-6) & jnp.all(jnp.isfinite(y))

    return jax.lax.while_loop(more, newton, (0, y0, jnp.ones((), jnp.float32)))[1]


def fairgrad_weights(
    gram: jax.typing.ArrayLike,
    alpha: jax.typing.ArrayLike,
    *,
    eps: jax.typing.ArrayLike = 0.0,
    max_iters: int = 100,
) -> jax.Array:
    r"""FairGrad's task weights: ``w > 0`` with ``M w = w^(-1/alpha)``; ``1/K`` at ``alpha = 0``.

    The system is solved on ``M / s + eps I`` (``s`` the mean diagonal) and
    scaled back: if ``(M / s) y = y^(-1/alpha)`` then ``w = s^(-alpha / (1 + alpha)) y``.

    Args:
      gram: ``[K, K]`` Gramian of the task gradients.
      alpha: fairness ``alpha >= 0``.
      eps: relative ridge on the diagonal (keeps a solution for singular Gramians).
      max_iters: Newton iterations at most.

    Returns:
      ``[K]`` float32 weights.
    """
    gram = jnp.asarray(gram, jnp.float32)
    alpha = jnp.asarray(alpha, jnp.float32)
    k = gram.shape[0]
    mean_diag = jnp.trace(gram) / k
    scale = jnp.where(mean_diag > 0, mean_diag, 1.0)
    m = gram / scale + jnp.asarray(eps, jnp.float32) * jnp.eye(k, dtype=jnp.float32)
    positive = alpha > 0
    safe_alpha = jnp.where(positive, alpha, 1.0)
    y = alpha_fair_solve(m, safe_alpha, max_iters)
    w = y * scale ** (-safe_alpha / (1.0 + safe_alpha))
    return jnp.where(positive, w, jnp.full((k,), 1.0 / k, jnp.float32))


def fairgrad(
    alpha: jax.typing.ArrayLike = 1.0,
    *,
    eps: jax.typing.ArrayLike = 0.0,
    max_iters: int = 100,
    num_tasks: int | None = None,
) -> optax.GradientTransformationExtraArgs:
    r"""FairGrad: the update that allocates loss decrease alpha-fairly among the tasks.

    Ban & Ji (2024), Eq. (4) and Algorithm 1: treating ``<g_k, d>`` as task
    ``k``'s utility, the alpha-fair update ``d = G^T w`` has weights ``w > 0``
    solving

    .. math::
      G G^\top w = w^{-1/\alpha} \quad\text{(element-wise)},

    i.e. ``<g_k, d> = w_k^{-1/alpha}``. ``alpha = 1`` is proportional fairness
    (Nash-MTL's bargaining system), large ``alpha`` approaches max-min fairness,
    and ``alpha = 0`` (utilitarian) is the mean gradient, as in TorchJD. The
    system is solved by damped Newton on an equivalent convex problem
    (``alpha_fair_solve``, shared with ``nash_mtl``), to a Newton decrement of
    ``1e-6``; TorchJD runs SciPy's ``least_squares`` from ``1/K`` with its
    default tolerances (``1e-8`` on the cost), so the two agree to those
    tolerances.

    Degenerate inputs: with ``eps = 0`` a singular Gramian (identical, opposite
    or zero task gradients, ``K`` above the rank) has no solution and gives
    non-finite or very large weights; pass ``eps > 0`` (e.g. ``1e-6``) to keep
    a solution: ``K = 1`` then gives ``||g||^{-2/(1+alpha)} g``.

    Args:
      alpha: fairness ``alpha >= 0`` (a float, so ``optax.inject_hyperparams``
        can schedule it).
      eps: relative ridge ``eps * mean(diag M)`` on the Gramian's diagonal.
      max_iters: Newton iterations at most.
      num_tasks: optional ``K``, the length of the task axis; inferred from the
        gradients when ``None``, checked against them when given.

    Returns:
      An ``optax.GradientTransformationExtraArgs`` mapping per-task gradients
      (leaves ``[K, *param_shape]``) to a params-shaped update; extra keyword
      arguments are ignored.

    Example:
      >>> import jax.numpy as jnp
      >>> tx = fairgrad(alpha=2.0)
      >>> g = {"w": jnp.array([[1.0, 0.0], [0.0, 1.0]])}
      >>> [round(v, 4) for v in tx.update(g, tx.init(None))[0]["w"].tolist()]
      [1.0, 1.0]

    References:
      Ban & Ji, *Fair Resource Allocation in Multi-Task Learning*, ICML 2024,
      https://arxiv.org/abs/2402.15638.
    """
    if num_tasks is not None:
        require_num_tasks(num_tasks, "fairgrad")
    if isinstance(max_iters, int) and max_iters < 1:
        raise ValueError(f"max_iters must be a positive int; got {max_iters!r}.")
    domains = {"alpha": (alpha, NON_NEGATIVE), "eps": (eps, NON_NEGATIVE)}
    for name, (value, domain) in domains.items():  # before alpha is cast below
        check("fairgrad", name, value, domain)
    # M w = w ** (-1 / alpha) gives w(c M) = c ** (-alpha / (1 + alpha)) w(M).
    power = -jnp.asarray(alpha, jnp.float32) / (1.0 + jnp.asarray(alpha, jnp.float32))
    tx = gramian_weighting(
        lambda gram: fairgrad_weights(gram, alpha, eps=eps, max_iters=max_iters),
        FairGradState,
        num_tasks=num_tasks,
        scale_power=power,
    )
    return with_domains(tx, "fairgrad", **domains)
