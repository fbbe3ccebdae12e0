"""Random weighting: task weights drawn afresh at every step (RLW)."""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import optax

from drgrad_jax._src.task_grads import (
    check_matches_params,
    check_task_grads,
    combine,
    require_num_tasks,
)


class RandomWeightingState(NamedTuple):
    """State of ``random_weighting`` and ``rlw``: a step counter and the key of the draws."""

    count: jax.Array
    key: jax.Array


def random_weights(key: jax.Array, num_tasks: int) -> jax.Array:
    """``[K]`` positive weights summing to one: the softmax of a standard normal draw."""
    return jax.nn.softmax(jax.random.normal(key, (num_tasks,), jnp.float32))


def random_weighting(
    seed: int = 0, *, num_tasks: int | None = None
) -> optax.GradientTransformationExtraArgs:
    r"""Random weighting of the task gradients (gradient-level Random / RLW).

    Lin et al. (2022), Algorithm 2: at every step draw ``z ~ N(0, I_K)`` and
    combine the task gradients with ``w = softmax(z)``,

    .. math::
      d = \sum_{k=1}^{K} w_k \, g_k, \qquad w = \mathrm{softmax}(z), \quad z \sim \mathcal N(0, I_K),

    a random point of the convex hull of the gradients (its mean is near the mean
    gradient). The draws come from a key carried in the state and split every
    step, so a run is reproducible from ``seed``; the weights are the same as
    TorchJD's ``Random`` and LibMTL's ``RLW`` (normal draws), not their random
    numbers.

    Degenerate inputs: the rule is linear in the gradients; ``K = 1`` gives
    ``g_1``.

    Args:
      seed: seeds the key in the state that draws each step's weights.
      num_tasks: optional ``K``, the length of the task axis; inferred from the
        gradients when ``None``, checked against them when given.

    Returns:
      An ``optax.GradientTransformationExtraArgs`` mapping per-task gradients
      (leaves ``[K, *param_shape]``) to a params-shaped update; extra keyword
      arguments are ignored.

    Example:
      >>> import jax.numpy as jnp
      >>> tx = random_weighting(seed=0)
      >>> g = {"w": jnp.ones((3, 2))}
      >>> [round(v, 5) for v in tx.update(g, tx.init(None))[0]["w"].tolist()]
      [1.0, 1.0]

    References:
      Lin, Ye, Xu, Shi & Zhang, *Reasonable Effectiveness of Random Weighting: A
      Litmus Test for Multi-Task Learning*, TMLR 2022,
      https://arxiv.org/abs/2111.10603.
    """
    if num_tasks is not None:
        require_num_tasks(num_tasks, "random_weighting")

    def init_fn(params):
        del params
        return RandomWeightingState(count=jnp.zeros([], jnp.int32), key=jax.random.key(seed))

    def update_fn(task_grads, state, params=None, **extra_args):
        del extra_args
        k = check_task_grads(task_grads, num_tasks)
        check_matches_params(task_grads, params)
        key, sub = jax.random.split(state.key)
        return combine(random_weights(sub, k), task_grads), RandomWeightingState(
            count=optax.safe_increment(state.count), key=key
        )

    return optax.GradientTransformationExtraArgs(init_fn, update_fn)


def rlw(seed: int = 0, *, num_tasks: int | None = None) -> optax.GradientTransformationExtraArgs:
    r"""Random loss weighting (RLW): the loss-level statement of ``random_weighting``.

    Lin et al. (2022) weight the task LOSSES with ``w = softmax(z)``,
    ``z ~ N(0, I_K)`` drawn every step, and back-propagate ``sum_k w_k L_k``;
    its gradient is ``sum_k w_k g_k``, so this is ``random_weighting`` under the
    name LibMTL uses (its state is a ``RandomWeightingState``). The paper also
    tries other draws (uniform, Dirichlet, Bernoulli); the normal draw is the
    one it recommends and the one implemented.

    Args:
      seed: seeds the key in the state that draws each step's weights.
      num_tasks: optional ``K``, the length of the task axis; inferred from the
        gradients when ``None``, checked against them when given.

    Returns:
      An ``optax.GradientTransformationExtraArgs``, as ``random_weighting``.

    Example:
      >>> import jax.numpy as jnp
      >>> tx = rlw(seed=1)
      >>> d, _ = tx.update({"w": jnp.eye(2)}, tx.init(None))
      >>> round(float(d["w"].sum()), 5)
      1.0

    References:
      Lin, Ye, Xu, Shi & Zhang, *Reasonable Effectiveness of Random Weighting: A
      Litmus Test for Multi-Task Learning*, TMLR 2022,
      https://arxiv.org/abs/2111.10603.
    """
    if num_tasks is not None:
        require_num_tasks(num_tasks, "rlw")
    return random_weighting(seed, num_tasks=num_tasks)
