"""MoDo: multi-objective gradient descent with a stochastically updated weighting."""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import optax
from optax.projections import projection_simplex

from drgrad_jax._src.domains import NON_NEGATIVE, POSITIVE, with_domains
from drgrad_jax._src.gramian import gramian
from drgrad_jax._src.task_grads import (
    check_matches_params,
    check_task_grads,
    combine,
    require_num_tasks,
)


class MoDoState(NamedTuple):
    """State of ``modo``.

    Attributes:
      count: int32 step counter.
      weights: ``[K]`` task weights ``lambda`` on the simplex (start at ``1/K``).
    """

    count: jax.Array
    weights: jax.Array


def modo_weights(
    weights: jax.typing.ArrayLike,
    matrix: jax.typing.ArrayLike,
    gamma: jax.typing.ArrayLike,
    rho: jax.typing.ArrayLike = 0.0,
) -> jax.Array:
    r"""One MoDo step on the weights: ``Pi_simplex(lambda - gamma (A lambda + rho lambda))``.

    Args:
      weights: ``[K]`` current ``lambda``.
      matrix: ``[K, K]`` ``A``: the Gramian ``G G^T``, or ``G_1 G_2^T`` of two
        independent batches as in the paper.
      gamma: step size.
      rho: L2 regularisation of ``lambda``.

    Returns:
      ``[K]`` float32 new weights on the simplex.
    """
    lam = jnp.asarray(weights, jnp.float32)
    matrix = jnp.asarray(matrix, jnp.float32)
    grad = matrix @ lam + jnp.asarray(rho, jnp.float32) * lam
    return projection_simplex(lam - jnp.asarray(gamma, jnp.float32) * grad)


def modo(
    gamma: jax.typing.ArrayLike = 0.1,
    rho: jax.typing.ArrayLike = 0.1,
    *,
    num_tasks: int | None = None,
) -> optax.GradientTransformationExtraArgs:
    r"""MoDo: MGDA's weighting tracked by one projected stochastic step per update.

    Chen, Fernando, Ying & Chen (2024), Algorithm 1: the weights ``lambda`` (on
    the simplex, initially ``1/K``) take one projected gradient step on
    ``||G^T lambda||^2 / 2 + rho ||lambda||^2 / 2``,

    .. math::
      \lambda \leftarrow \Pi_\Delta\big(\lambda - \gamma (G G^\top + \rho I)\lambda\big),
      \qquad d = G^\top \lambda,

    with the new weights. The paper forms ``G_1 G_2^T`` from two independent
    mini-batches so the step is unbiased; the per-task-gradient contract has
    one batch, so ``G G^T`` is used (as TorchJD's ``MoDoWeighting`` does when
    handed a one-batch Gramian). For the two-batch form, call ``modo_weights``
    with ``G_1 G_2^T`` yourself. Same step as TorchJD's ``MoDoWeighting``.

    Degenerate inputs: ``K = 1`` gives ``g_1``; zero gradients leave
    ``lambda`` at its projection; non-finite gradients give a non-finite update
    and leave ``lambda`` unchanged.

    Args:
      gamma: step size of ``lambda`` (a float, so ``optax.inject_hyperparams``
        can schedule it).
      rho: L2 regularisation of ``lambda``.
      num_tasks: ``K`` (static; sizes ``lambda``).

    Returns:
      An ``optax.GradientTransformationExtraArgs`` mapping per-task gradients
      (leaves ``[K, *param_shape]``) to a params-shaped update; extra keyword
      arguments are ignored.

    Example:
      >>> import jax.numpy as jnp
      >>> tx = modo(gamma=0.5, rho=0.0, num_tasks=2)
      >>> g = {"w": jnp.array([[1.0, 0.0], [0.0, 2.0]])}
      >>> d, s = tx.update(g, tx.init(None))
      >>> s.weights.tolist(), d["w"].tolist()
      ([0.875, 0.125], [0.875, 0.25])

    References:
      Chen, Fernando, Ying & Chen, *Three-Way Trade-Off in Multi-Objective
      Learning: Optimization, Generalization and Conflict-Avoidance*, JMLR 2024,
      https://arxiv.org/abs/2305.20057.
    """
    require_num_tasks(num_tasks, "modo")

    def init_fn(params):
        del params
        return MoDoState(
            count=jnp.zeros([], jnp.int32),
            weights=jnp.full((num_tasks,), 1.0 / num_tasks, jnp.float32),
        )

    def update_fn(task_grads, state, params=None, **extra_args):
        del extra_args
        check_task_grads(task_grads, num_tasks)
        check_matches_params(task_grads, params)
        gram = gramian(task_grads)
        lam = modo_weights(state.weights, gram, gamma, rho)
        kept = jnp.where(jnp.all(jnp.isfinite(gram)), lam, state.weights)
        return combine(lam, task_grads), MoDoState(
            count=optax.safe_increment(state.count), weights=kept
        )

    tx = optax.GradientTransformationExtraArgs(init_fn, update_fn)
    return with_domains(tx, "modo", gamma=(gamma, POSITIVE), rho=(rho, NON_NEGATIVE))
