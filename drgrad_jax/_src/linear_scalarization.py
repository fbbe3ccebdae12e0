"""Linear scalarization: a fixed weighted sum of the task gradients."""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import optax

from drgrad_jax._src.task_grads import check_matches_params, check_task_grads, combine


class LinearScalarizationState(NamedTuple):
    """State of ``linear_scalarization``: only a step counter."""

    count: jax.Array


def linear_scalarization(
    weights: jax.typing.ArrayLike | None = None,
) -> optax.GradientTransformationExtraArgs:
    r"""The weighted sum of per-task gradients: the gradient of :math:`\sum_k w_k L_k`.

    .. math::
      d = \sum_{k=1}^{K} w_k \, g_k

    This is the plain multi-task baseline every other method is compared with;
    with ``weights=None`` (all ones) it is the summed-loss gradient.

    Degenerate inputs: the rule is linear, so zero, identical and opposite task
    gradients and ``K = 1`` need no special care (opposite gradients with equal
    weights cancel to a zero update).

    Args:
      weights: ``[K]`` task weights (a float array, so ``optax.inject_hyperparams``
        can schedule it), or ``None`` for all ones.

    Returns:
      An ``optax.GradientTransformationExtraArgs`` whose ``update`` takes per-task
      gradients (leaves ``[K, *param_shape]``) and returns a params-shaped update.
      Extra keyword arguments (e.g. ``losses``) are accepted and ignored.

    Example:
      >>> import jax.numpy as jnp
      >>> tx = linear_scalarization(jnp.array([1.0, 0.5]))
      >>> g = {"w": jnp.array([[2.0, 0.0], [0.0, 2.0]])}
      >>> tx.update(g, tx.init({"w": jnp.zeros(2)}))[0]["w"].tolist()
      [2.0, 1.0]

    References:
      Caruana, *Multitask Learning*, Machine Learning 28, 1997.
    """
    if weights is not None and jnp.ndim(weights) != 1:
        raise ValueError(f"weights must be a vector [num_tasks]; got shape {jnp.shape(weights)}.")

    def init_fn(params):
        del params
        return LinearScalarizationState(count=jnp.zeros([], jnp.int32))

    def update_fn(task_grads, state, params=None, **extra_args):
        del extra_args
        k = check_task_grads(task_grads)
        check_matches_params(task_grads, params)
        if weights is None:
            w = jnp.ones((k,), jnp.float32)
        else:
            w = jnp.asarray(weights, jnp.float32)
            if w.shape != (k,):
                raise ValueError(
                    f"weights has shape {w.shape}; expected [{k}] to match the task axis of "
                    "task_grads."
                )
        return combine(w, task_grads), LinearScalarizationState(
            count=optax.safe_increment(state.count)
        )

    return optax.GradientTransformationExtraArgs(init_fn, update_fn)
