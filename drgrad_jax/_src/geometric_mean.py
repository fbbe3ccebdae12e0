"""GLS: the geometric mean of the task losses."""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import optax

from drgrad_jax._src.loss_weighting import _losses_arg
from drgrad_jax._src.task_grads import check_matches_params, check_task_grads, combine


class GeometricMeanState(NamedTuple):
    """State of ``geometric_mean``: only a step counter."""

    count: jax.Array


def geometric_mean_weights(losses: jax.typing.ArrayLike) -> jax.Array:
    r"""``d/dL (prod_k L_k)^{1/K} = (prod_k L_k)^{1/K} / (K L)``, for positive losses."""
    losses = jnp.asarray(losses, jnp.float32)
    log_losses = jnp.log(losses)
    return jnp.exp(jnp.mean(log_losses) - log_losses) / losses.shape[0]


def geometric_mean(*, num_tasks: int | None = None) -> optax.GradientTransformationExtraArgs:
    r"""Geometric loss strategy (GLS): descend the geometric mean of the task losses.

    Chennupati et al. (2019), Eq. (3): the total loss is
    ``L = (prod_k L_k)^{1/K}``, whose gradient weights each task gradient by

    .. math::
      d = \sum_k w_k g_k, \qquad w_k = \frac{1}{K} \frac{(\prod_j L_j)^{1/K}}{L_k},

    so a task with a small loss (relative to the others) gets a large weight:
    the rule is invariant to rescaling any one loss. The weights are computed in
    log space. Same gradient as TorchJD's ``GeometricMean`` scalarizer and
    LibMTL's ``GLS``.

    Degenerate inputs: losses must be positive; a zero or negative loss gives a
    non-finite update (``optax.apply_if_finite`` then skips the step); ``K = 1``
    gives ``g_1``.

    Args:
      num_tasks: ``K``, optional; when given, the task axis and the losses are
        checked against it.

    Returns:
      An ``optax.GradientTransformationExtraArgs``; ``update`` requires the
      extra argument ``losses`` (shape ``[K]``) and ignores other extra args.

    Example:
      >>> import jax.numpy as jnp
      >>> tx = geometric_mean()
      >>> d, _ = tx.update({"w": jnp.eye(2)}, tx.init(None), losses=jnp.array([4.0, 1.0]))
      >>> d["w"].tolist()
      [0.25, 1.0]

    References:
      Chennupati, Sistu, Yogamani & Rawashdeh, *MultiNet++: Multi-Stream Feature
      Aggregation and Geometric Loss Strategy for Multi-Task Learning*, CVPR
      Workshops 2019, https://arxiv.org/abs/1904.08492.
    """
    if num_tasks is not None and (not isinstance(num_tasks, int) or num_tasks < 1):
        raise ValueError(f"num_tasks must be a positive int; got {num_tasks!r}.")

    def init_fn(params):
        del params
        return GeometricMeanState(count=jnp.zeros([], jnp.int32))

    def update_fn(task_grads, state, params=None, **extra_args):
        k = check_task_grads(task_grads, num_tasks)
        check_matches_params(task_grads, params)
        losses = _losses_arg(extra_args, k, "geometric_mean")
        weights = geometric_mean_weights(losses)
        weights = jnp.where(losses > 0, weights, jnp.nan)
        return combine(weights, task_grads), GeometricMeanState(
            count=optax.safe_increment(state.count)
        )

    return optax.GradientTransformationExtraArgs(init_fn, update_fn)
