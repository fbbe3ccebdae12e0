"""CR-MOGM: an exponential moving average of another method's task weights."""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp
import optax

from drgrad_jax._src.conflict_free import conflict_free_weights
from drgrad_jax._src.domains import REAL, UNIT, check_task_vector, with_domains
from drgrad_jax._src.dualproj import dualproj_weights
from drgrad_jax._src.gramian import gramian
from drgrad_jax._src.imtl import imtl_g_weights
from drgrad_jax._src.min_norm import min_norm_weights
from drgrad_jax._src.task_grads import (
    check_matches_params,
    check_task_grads,
    combine,
    require_num_tasks,
)
from drgrad_jax._src.upgrad import upgrad_weights

WEIGHTINGS: dict[str, Callable[[jax.Array], jax.Array]] = {
    "mgda": min_norm_weights,
    "upgrad": upgrad_weights,
    "imtl_g": imtl_g_weights,
    "dualproj": dualproj_weights,
    "conflict_free": conflict_free_weights,
}
"""Gramian weightings ``cr_mogm`` can smooth by name."""


class CRMOGMState(NamedTuple):
    """State of ``cr_mogm``.

    Attributes:
      count: int32 number of updates with finite gradients.
      weights: ``[K]`` the smoothed weights ``lambda`` of the last update.
    """

    count: jax.Array
    weights: jax.Array


def cr_mogm(
    weighting: str | Callable[[jax.Array], jax.Array] = "mgda",
    alpha: jax.typing.ArrayLike = 0.9,
    initial_weights: jax.typing.ArrayLike | None = None,
    *,
    num_tasks: int | None = None,
) -> optax.GradientTransformationExtraArgs:
    r"""CR-MOGM: smooth the task weights of a Gramian-based method across steps.

    Zhou et al. (2022), Algorithm 2: with ``hat lambda_t`` the weights another
    method computes from the current Gramian (MGDA's min-norm weights by
    default), the update uses

    .. math::
      \lambda_t = \alpha\, \lambda_{t-1} + (1 - \alpha)\, \hat\lambda_t,
      \qquad d = \sum_k \lambda_{t,k}\, g_k,

    with ``lambda_0 = hat lambda_1`` (or ``initial_weights``), which makes the
    stochastic multi-objective gradient consistent. The paper's Corollary 1
    grows ``alpha`` towards 1 as the learning rate decays: schedule it with
    ``optax.inject_hyperparams``. Same rule as TorchJD's ``CRMOGMWeighting``.

    Degenerate inputs: those of ``weighting``; non-finite gradients give a
    non-finite update and leave ``lambda`` unchanged; ``alpha = 0`` is the
    wrapped method itself.

    Args:
      weighting: the smoothed method, by name (``"mgda"``, ``"upgrad"``,
        ``"imtl_g"``, ``"dualproj"``, ``"conflict_free"``), or any callable
        mapping the ``[K, K]`` float32 Gramian to ``[K]`` weights (static; under
        ``optax.inject_hyperparams`` list a callable in ``static_args``, since
        optax treats callables as schedules).
      alpha: EMA coefficient in ``[0, 1]`` on the previous weights.
      initial_weights: ``[K]`` ``lambda_0`` (any finite values: the weights of
        ``imtl_g`` or ``conflict_free`` may be negative; MGDA's lie on the
        simplex), or ``None`` for ``hat lambda_1``. NaN, Inf or a vector of the
        wrong length is refused as numbers; as a JAX array a non-finite entry
        makes the update NaN (docs/drgrad.md, *Using the transformations*).
      num_tasks: ``K`` (static; sizes ``lambda``).

    Returns:
      An ``optax.GradientTransformationExtraArgs`` mapping per-task gradients
      (leaves ``[K, *param_shape]``) to a params-shaped update; extra keyword
      arguments are ignored.

    Example:
      >>> import jax.numpy as jnp
      >>> tx = cr_mogm(alpha=0.5, num_tasks=2)
      >>> s = tx.init(None)
      >>> _, s = tx.update({"w": jnp.array([[1.0, 0.0], [0.0, 1.0]])}, s)
      >>> _, s = tx.update({"w": jnp.array([[1.0, 0.0], [0.0, 3.0]])}, s)
      >>> [round(v, 4) for v in s.weights.tolist()]
      [0.7, 0.3]

    References:
      Zhou, Zhang, Jiang, Zhao, Zhang & Zhou, *On the Convergence of Stochastic
      Multi-Objective Gradient Manipulation and Beyond*, NeurIPS 2022,
      https://openreview.net/forum?id=ScwfQ7hdwyP.
    """
    require_num_tasks(num_tasks, "cr_mogm")
    if isinstance(weighting, str):
        if weighting not in WEIGHTINGS:
            raise ValueError(f"weighting={weighting!r} is not one of {sorted(WEIGHTINGS)}.")
        weights_of = WEIGHTINGS[weighting]
    elif callable(weighting):
        weights_of = weighting
    else:
        raise TypeError(f"weighting must be a name or a callable; got {weighting!r}.")
    check_task_vector("cr_mogm", "initial_weights", initial_weights, num_tasks)

    def init_fn(params):
        del params
        start = (
            jnp.zeros((num_tasks,), jnp.float32)
            if initial_weights is None
            else jnp.asarray(initial_weights, jnp.float32)
        )
        return CRMOGMState(count=jnp.zeros([], jnp.int32), weights=start)

    def update_fn(task_grads, state, params=None, **extra_args):
        del extra_args
        check_task_grads(task_grads, num_tasks)
        check_matches_params(task_grads, params)
        gram = gramian(task_grads)
        hat = jnp.asarray(weights_of(gram), jnp.float32)
        if initial_weights is None:
            prev = jnp.where(state.count > 0, state.weights, hat)
        else:
            prev = state.weights
        a = jnp.asarray(alpha, jnp.float32)
        lam = a * prev + (1.0 - a) * hat
        finite = jnp.all(jnp.isfinite(gram))
        new_state = CRMOGMState(
            count=jnp.where(finite, optax.safe_increment(state.count), state.count),
            weights=jnp.where(finite, lam, state.weights),
        )
        return combine(lam, task_grads), new_state

    tx = optax.GradientTransformationExtraArgs(init_fn, update_fn)
    return with_domains(tx, "cr_mogm", alpha=(alpha, UNIT), initial_weights=(initial_weights, REAL))
