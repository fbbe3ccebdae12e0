"""Nash-MTL: the Nash bargaining solution over task gradients."""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import optax

from drgrad_jax._src.domains import NON_NEGATIVE, with_domains
from drgrad_jax._src.fairgrad import alpha_fair_solve
from drgrad_jax._src.gramian import gramian_weighting
from drgrad_jax._src.task_grads import require_num_tasks


class NashMTLState(NamedTuple):
    """State of ``nash_mtl``: only a step counter."""

    count: jax.Array


def nash_mtl_weights(
    gram: jax.typing.ArrayLike,
    *,
    eps: jax.typing.ArrayLike = 1e-6,
    max_iters: int = 100,
    normalize_gramian: bool = False,
) -> jax.Array:
    r"""Solves ``M alpha = 1 / alpha`` (``alpha > 0``) by damped Newton.

    The solution is the unique minimiser of the strictly convex, self-concordant
    function ``f(alpha) = alpha^T M alpha / 2 - sum_i log alpha_i``, whose
    gradient is ``M alpha - 1/alpha``. Damped Newton steps
    ``alpha - Delta / (1 + lambda)`` (``lambda`` the Newton decrement) stay
    inside ``alpha > 0`` and converge globally, then quadratically; the solver
    is FairGrad's ``alpha_fair_solve`` at ``alpha = 1``.

    Args:
      gram: ``[K, K]`` Gramian.
      eps: ridge ``eps * mean(diag M)`` added to the diagonal, so a solution
        exists when tasks cancel (no bargaining point) or a gradient is zero.
      max_iters: Newton iterations at most (stops early once converged).
      normalize_gramian: solve on ``M / ||M||_F`` as the authors' code does.

    Returns:
      ``[K]`` positive float32 weights.
    """
    gram = jnp.asarray(gram, jnp.float32)
    k = gram.shape[0]
    mean_diag = jnp.trace(gram) / k
    scale = jnp.where(mean_diag > 0, mean_diag, 1.0)
    # Newton runs on the trace-normalised system; alpha for M is alpha_n / sqrt(scale).
    m = gram / scale + jnp.asarray(eps, jnp.float32) * jnp.eye(k, dtype=jnp.float32)
    if normalize_gramian:
        frob = jnp.sqrt(jnp.sum(gram * gram))
        factor = jnp.sqrt(jnp.where(frob > 0, frob, 1.0) / scale)
    else:
        factor = 1.0 / jnp.sqrt(scale)
    alpha = alpha_fair_solve(m, jnp.ones((), jnp.float32), max_iters)
    # c * A alpha = 1/alpha is solved by alpha_A / sqrt(c); here M = scale * m.
    return alpha * factor


def nash_mtl(
    eps: jax.typing.ArrayLike = 1e-6,
    *,
    max_iters: int = 100,
    normalize_gramian: bool = False,
    num_tasks: int | None = None,
) -> optax.GradientTransformationExtraArgs:
    r"""Nash-MTL: the Nash bargaining solution among the tasks.

    Navon et al. (2022), Theorem 5.1 / Eq. (4): the bargaining update
    ``d = sum_i alpha_i g_i`` is given by ``alpha > 0`` solving

    .. math::
      G G^\top \alpha = 1 / \alpha \quad\text{(element-wise)}, \qquad
      \text{i.e. } \alpha_i \langle g_i, d\rangle = 1 \ \ \forall i.

    The paper approximates ``alpha`` by a sequence of convex programs (cvxpy);
    here it is solved exactly in JAX by damped Newton on the equivalent convex
    problem (``nash_mtl_weights``). Since ``||d||^2 = alpha^T M alpha = K``, the
    update has norm ``sqrt(K)`` whatever the gradients' scale (it is invariant to
    rescaling the gradients); with ``normalize_gramian=True`` the system is
    solved on ``M / ||M||_F`` as in the authors' code, so ``||d||`` grows like
    the gradients' norm. The authors clip the update's norm at 1 (chain
    ``optax.clip_by_global_norm``) and may refresh ``alpha`` every few steps
    (not implemented: ``alpha`` is solved every step).

    Degenerate inputs: a small ridge ``eps`` keeps a solution: ``K = 1`` gives
    ``g_1 / ||g_1||`` (times ``sqrt`` of the ridge factor); identical gradients
    give ``sqrt(K) g / ||g||``; exactly opposite gradients (no bargaining point)
    give ``d = 0``; a zero task gradient gets a large finite weight times zero.

    Args:
      eps: relative ridge on the Gramian's diagonal (``eps * mean(diag M)``).
      max_iters: Newton iterations at most.
      normalize_gramian: solve on the Frobenius-normalised Gramian (authors' code).
      num_tasks: optional ``K``, the length of the task axis; inferred from the
        gradients when ``None``, checked against them when given.

    Returns:
      An ``optax.GradientTransformationExtraArgs`` mapping per-task gradients
      (leaves ``[K, *param_shape]``) to a params-shaped update; extra keyword
      arguments are ignored.

    Example:
      >>> import jax.numpy as jnp
      >>> tx = nash_mtl(eps=0.0)
      >>> g = {"w": jnp.array([[2.0, 0.0], [0.0, 4.0]])}
      >>> [round(v, 4) for v in tx.update(g, tx.init(None))[0]["w"].tolist()]
      [1.0, 1.0]

    References:
      Navon, Shamsian, Achituve, Maron, Kawaguchi, Chechik & Fetaya, *Multi-Task
      Learning as a Bargaining Game*, ICML 2022, https://arxiv.org/abs/2202.01017.
    """
    if num_tasks is not None:
        require_num_tasks(num_tasks, "nash_mtl")

    def weights_fn(gram):
        return nash_mtl_weights(
            gram, eps=eps, max_iters=max_iters, normalize_gramian=normalize_gramian
        )

    # alpha for c M is alpha / sqrt(c) (the normalised variant is scale free).
    power = 0.0 if normalize_gramian else -0.5
    tx = gramian_weighting(weights_fn, NashMTLState, num_tasks=num_tasks, scale_power=power)
    return with_domains(tx, "nash_mtl", eps=(eps, NON_NEGATIVE))
