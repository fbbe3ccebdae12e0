"""Fixed weightings of the task gradients: linear scalarization, constant weights, the mean.

All three return ``sum_k w_k g_k`` with weights that do not depend on the
gradients; they differ only in where ``w`` comes from (given, all ones, ``1/K``).
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import optax

from drgrad_jax._src.domains import NON_NEGATIVE, check_task_vector, with_domains
from drgrad_jax._src.task_grads import (
    require_num_tasks,
    stateless_weighting,
)


class LinearScalarizationState(NamedTuple):
    """State of ``linear_scalarization``: only a step counter."""

    count: jax.Array


def linear_scalarization(
    weights: jax.typing.ArrayLike | None = None, *, num_tasks: int | None = None
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
      weights: ``[K]`` task weights, each ``>= 0`` (a float array, so
        ``optax.inject_hyperparams`` can schedule it), or ``None`` for all ones.
        A negative weight would ascend its task's loss; a zero one drops the
        task. Numbers outside, or a vector of the wrong length, are refused; a
        JAX array outside makes the update NaN (docs/drgrad.md, *Using the
        transformations*).
      num_tasks: optional ``K``, the length of the task axis; inferred from the
        gradients when ``None``, checked against them when given.

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
    return _weighted_sum("linear_scalarization", weights, num_tasks)


def _weighted_sum(
    factory: str, weights: jax.typing.ArrayLike | None, num_tasks: int | None
) -> optax.GradientTransformationExtraArgs:
    """``linear_scalarization`` and ``constant``: validated under ``factory``'s name."""
    if num_tasks is not None:
        require_num_tasks(num_tasks, factory)
    check_task_vector(factory, "weights", weights, num_tasks)

    def weights_for(k: int) -> jax.Array:
        if weights is None:
            return jnp.ones((k,), jnp.float32)
        check_task_vector(factory, "weights", weights, k, axis=True)
        return jnp.asarray(weights, jnp.float32)

    tx = fixed_weighting(weights_for, LinearScalarizationState, num_tasks=num_tasks)
    return with_domains(tx, factory, weights=(weights, NON_NEGATIVE))


def fixed_weighting(
    weights_for, state_cls, num_tasks: int | None = None
) -> optax.GradientTransformationExtraArgs:
    """The transformation ``d = sum_k w_k g_k`` with ``w = weights_for(K)`` (checked at trace time).

    Args:
      weights_for: maps the static task count ``K`` to ``[K]`` float32 weights.
      state_cls: a NamedTuple class with a single int32 ``count`` field.

    Returns:
      An ``optax.GradientTransformationExtraArgs``; extra arguments are ignored.
    """
    return stateless_weighting(lambda task_grads, k: weights_for(k), state_cls, num_tasks)


def constant(
    weights: jax.typing.ArrayLike, *, num_tasks: int | None = None
) -> optax.GradientTransformationExtraArgs:
    r"""A constant, pre-determined weighting of the task gradients.

    .. math::
      d = \sum_{k=1}^{K} w_k \, g_k

    The same rule as ``linear_scalarization`` with the weights required (the
    name TorchJD gives it, ``Constant``); kept as its own entry so that a method
    list can name it. Its state is a ``LinearScalarizationState``.

    Args:
      weights: ``[K]`` task weights, each ``>= 0`` (a float array, so
        ``optax.inject_hyperparams`` can schedule it); checked as in
        ``linear_scalarization``.
      num_tasks: optional ``K``, the length of the task axis; inferred from the
        gradients when ``None``, checked against them when given.

    Returns:
      An ``optax.GradientTransformationExtraArgs`` mapping per-task gradients
      (leaves ``[K, *param_shape]``) to a params-shaped update; extra keyword
      arguments are ignored.

    Raises:
      ValueError: ``weights`` is ``None``, not a vector, or (as numbers) outside
        its domain; its length differs from ``num_tasks`` or, at the first
        update, from the task axis.

    Example:
      >>> import jax.numpy as jnp
      >>> tx = constant(jnp.array([0.25, 2.0]))
      >>> g = {"w": jnp.array([[4.0, 0.0], [0.0, 1.0]])}
      >>> tx.update(g, tx.init(None))[0]["w"].tolist()
      [1.0, 2.0]

    References:
      Quinton & Rey, *Jacobian Descent for Multi-Objective Optimization*, 2024,
      https://arxiv.org/abs/2406.16232 (TorchJD's ``Constant`` aggregator).
    """
    if weights is None:
        raise ValueError("constant needs weights: a vector [num_tasks] of task weights.")
    return _weighted_sum("constant", weights, num_tasks)


class MeanState(NamedTuple):
    """State of ``mean``: only a step counter."""

    count: jax.Array


def mean(*, num_tasks: int | None = None) -> optax.GradientTransformationExtraArgs:
    r"""The mean of the task gradients: the gradient of the averaged loss.

    .. math::
      d = \frac{1}{K} \sum_{k=1}^{K} g_k

    The equal-weighting baseline at the scale of one task (``linear_scalarization``
    is the sum). Degenerate inputs need no care: the rule is linear.

    Args:
      num_tasks: optional ``K``, the length of the task axis; inferred from the
        gradients when ``None``, checked against them when given.

    Returns:
      An ``optax.GradientTransformationExtraArgs`` mapping per-task gradients
      (leaves ``[K, *param_shape]``) to a params-shaped update; extra keyword
      arguments are ignored.

    Example:
      >>> import jax.numpy as jnp
      >>> tx = mean()
      >>> g = {"w": jnp.array([[4.0, 0.0], [0.0, 2.0]])}
      >>> tx.update(g, tx.init(None))[0]["w"].tolist()
      [2.0, 1.0]

    References:
      Quinton & Rey, *Jacobian Descent for Multi-Objective Optimization*, 2024,
      https://arxiv.org/abs/2406.16232 (TorchJD's ``Mean`` aggregator).
    """
    if num_tasks is not None:
        require_num_tasks(num_tasks, "mean")
    return fixed_weighting(
        lambda k: jnp.full((k,), 1.0 / k, jnp.float32), MeanState, num_tasks=num_tasks
    )
