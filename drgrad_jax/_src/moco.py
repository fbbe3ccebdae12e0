"""MoCo: multi-objective gradient correction with tracked task gradients."""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax
from optax.projections import projection_simplex

from drgrad_jax._src.domains import NON_NEGATIVE, POSITIVE, UNIT, with_domains
from drgrad_jax._src.gramian import gramian
from drgrad_jax._src.task_grads import (
    check_matches_params,
    check_task_grads,
    combine,
    require_num_tasks,
)


class MoCoState(NamedTuple):
    """State of ``moco``.

    Attributes:
      count: int32 number of updates with finite gradients.
      tracked: per-task tracking estimates ``y_k`` of the gradients, leaves
        ``[K, *param_shape]`` (float32, zeros at the start).
      weights: ``[K]`` task weights ``lambda`` on the simplex (start at ``1/K``).
    """

    count: jax.Array
    tracked: Any
    weights: jax.Array


def moco(
    beta: jax.typing.ArrayLike = 0.5,
    gamma: jax.typing.ArrayLike = 0.1,
    rho: jax.typing.ArrayLike = 0.0,
    *,
    num_tasks: int | None = None,
    beta_sigma: float = 0.5,
    gamma_sigma: float = 0.5,
) -> optax.GradientTransformationExtraArgs:
    r"""MoCo: MGDA on tracked gradients, which removes the bias of stochastic MGDA.

    Fernando et al. (2023), Algorithm 1: the task gradients are tracked,
    ``y_k <- y_k - beta_t (y_k - g_k)``, and the weights take one projected
    step on ``||Y^T lambda||^2 / 2 + rho ||lambda||^2 / 2``,

    .. math::
      \lambda \leftarrow \Pi_\Delta\big(\lambda - \gamma_t (Y Y^\top + \rho I)\lambda\big),
      \qquad d = Y^\top \lambda,

    with decaying rates ``beta_t = beta / t^{beta_sigma}`` and
    ``gamma_t = gamma / t^{gamma_sigma}`` (``t`` counts updates from 1) and
    ``y`` starting at 0. Follows the paper; LibMTL's ``MoCo`` (the authors'
    shared code) also rescales each gradient to norm ``L_k`` before tracking and
    replaces the projection by a softmax, not done here. The tracked
    gradients cost ``K`` times the parameters in the state.

    Degenerate inputs: ``K = 1`` gives ``y_1``; zero gradients shrink ``y``
    towards 0; non-finite gradients give a non-finite update and leave the
    state unchanged.

    Args:
      beta: tracking rate (a float, so ``optax.inject_hyperparams`` can
        schedule it).
      gamma: step size of ``lambda``.
      rho: L2 regularisation of ``lambda``.
      num_tasks: ``K`` (static; sizes the state).
      beta_sigma: decay exponent of the tracking rate.
      gamma_sigma: decay exponent of the weights' step size.

    Returns:
      An ``optax.GradientTransformationExtraArgs``; ``init`` needs the params (to
      size ``y``); extra keyword arguments are ignored.

    Example:
      >>> import jax.numpy as jnp
      >>> tx = moco(beta=1.0, gamma=0.5, num_tasks=2)
      >>> g = {"w": jnp.array([[1.0, 0.0], [0.0, 2.0]])}
      >>> d, s = tx.update(g, tx.init({"w": jnp.zeros(2)}))
      >>> s.weights.tolist(), d["w"].tolist()
      ([0.875, 0.125], [0.875, 0.25])

    References:
      Fernando, Shen, Liu, Chaudhury, Murugesan & Chen, *Mitigating Gradient
      Bias in Multi-objective Learning: A Provably Convergent Approach*, ICLR
      2023, https://openreview.net/forum?id=dLAYGdKTi2.
    """
    require_num_tasks(num_tasks, "moco")

    def init_fn(params):
        if params is None:
            raise ValueError("moco tracks per-task gradients: call tx.init(params).")
        return MoCoState(
            count=jnp.zeros([], jnp.int32),
            tracked=jax.tree.map(
                lambda p: jnp.zeros((num_tasks,) + jnp.shape(p), jnp.float32), params
            ),
            weights=jnp.full((num_tasks,), 1.0 / num_tasks, jnp.float32),
        )

    def update_fn(task_grads, state, params=None, **extra_args):
        del extra_args
        check_task_grads(task_grads, num_tasks)
        check_matches_params(task_grads, params)
        t = optax.safe_increment(state.count).astype(jnp.float32)
        beta_t = jnp.asarray(beta, jnp.float32) / t ** jnp.float32(beta_sigma)
        gamma_t = jnp.asarray(gamma, jnp.float32) / t ** jnp.float32(gamma_sigma)
        tracked = jax.tree.map(
            lambda y, g: y - beta_t * (y - g.astype(jnp.float32)), state.tracked, task_grads
        )
        gram = gramian(tracked)
        lam = state.weights
        lam = projection_simplex(lam - gamma_t * (gram @ lam + jnp.asarray(rho, jnp.float32) * lam))
        updates = jax.tree.map(lambda u, g: u.astype(g.dtype), combine(lam, tracked), task_grads)
        new_state = MoCoState(count=optax.safe_increment(state.count), tracked=tracked, weights=lam)
        return updates, optax.tree.where(jnp.all(jnp.isfinite(gram)), new_state, state)

    tx = optax.GradientTransformationExtraArgs(init_fn, update_fn)
    return with_domains(
        tx,
        "moco",
        beta=(beta, UNIT),
        gamma=(gamma, POSITIVE),
        rho=(rho, NON_NEGATIVE),
        beta_sigma=(beta_sigma, NON_NEGATIVE),
        gamma_sigma=(gamma_sigma, NON_NEGATIVE),
    )
