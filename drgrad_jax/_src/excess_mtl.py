"""ExcessMTL: robust task weights driven by estimated excess risks."""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from drgrad_jax._src.domains import POSITIVE, with_domains
from drgrad_jax._src.task_grads import (
    check_matches_params,
    check_task_grads,
    combine,
    require_num_tasks,
)

EPSILON = 1e-7
"""Added under the square root of the accumulated squares and to the baseline risk."""


class ExcessMTLState(NamedTuple):
    """State of ``excess_mtl``.

    Attributes:
      count: int32 number of updates with finite gradients.
      weights: ``[K]`` task weights on the simplex (start at ``1/K``).
      sq_grad_sum: per-task running sums of squared gradients, leaves
        ``[K, *param_shape]`` (float32).
      baseline: ``[K]`` the excess-risk estimates that later ones are divided by.
      warmup_sum: ``[K]`` the sum of the estimates seen during warm-up.
    """

    count: jax.Array
    weights: jax.Array
    sq_grad_sum: Any
    baseline: jax.Array
    warmup_sum: jax.Array


def excess_mtl(
    robust_step_size: jax.typing.ArrayLike = 1.0,
    *,
    num_tasks: int | None = None,
    n_warmup_steps: int = 0,
) -> optax.GradientTransformationExtraArgs:
    r"""ExcessMTL: up-weight the tasks whose excess risk (distance to convergence) is largest.

    He, Chen, Ding & Tong (2024), Eqs. (6)-(9): each task's excess risk is
    estimated by a second-order Taylor expansion with a diagonal
    (AdaGrad-style) curvature ``H_k = sqrt(sum_{s <= t} g_k^2 + 1e-7)``,

    .. math::
      e_k = \sum_j \frac{g_{k,j}^2}{H_{k,j}}, \qquad
      w \leftarrow \mathrm{softmax}\big(\log w + \eta\, e / e^{(0)}\big),
      \qquad d = \sum_k w_k g_k,

    an exponentiated-gradient step with ``eta = robust_step_size``, the
    estimates divided by a baseline ``e^(0)`` (Sec. 3.2's scale processing):
    the first update's estimates (which are then used unscaled), or the mean
    over ``n_warmup_steps`` warm-up updates, during which the weights stay at
    ``1/K``. Follows TorchJD's ``ExcessMTLWeighting`` (weights start at
    ``1/K`` as in the paper; the authors' code and LibMTL start at 1). The
    running squares cost ``K`` times the parameters in the state.

    Degenerate inputs: ``K = 1`` gives ``g_1``; zero gradients add nothing;
    non-finite gradients give a non-finite update and leave the state
    unchanged.

    Args:
      robust_step_size: ``eta > 0`` (a float, so ``optax.inject_hyperparams`` can
        schedule it).
      num_tasks: ``K`` (static; sizes the state).
      n_warmup_steps: updates with uniform weights that collect the baseline
        (static; the paper suggests three epochs).

    Returns:
      An ``optax.GradientTransformationExtraArgs``; ``init`` needs the params (to
      size the running squares); extra keyword arguments are ignored.

    Example:
      >>> import jax.numpy as jnp
      >>> tx = excess_mtl(num_tasks=2)
      >>> g = {"w": jnp.array([[1.0, 0.0], [0.0, 2.0]])}
      >>> d, s = tx.update(g, tx.init({"w": jnp.zeros(2)}))
      >>> [round(v, 3) for v in s.weights.tolist()]
      [0.269, 0.731]

    References:
      He, Chen, Ding & Tong, *Robust Multi-Task Learning with Excess Risks*,
      ICML 2024, https://arxiv.org/abs/2402.02009.
    """
    require_num_tasks(num_tasks, "excess_mtl")
    if isinstance(n_warmup_steps, int) and n_warmup_steps < 0:
        raise ValueError(f"n_warmup_steps must be a non-negative int; got {n_warmup_steps!r}.")

    def init_fn(params):
        if params is None:
            raise ValueError("excess_mtl keeps per-task squared gradients: call tx.init(params).")
        zeros = jnp.zeros((num_tasks,), jnp.float32)
        return ExcessMTLState(
            count=jnp.zeros([], jnp.int32),
            weights=jnp.full((num_tasks,), 1.0 / num_tasks, jnp.float32),
            sq_grad_sum=jax.tree.map(
                lambda p: jnp.zeros((num_tasks,) + jnp.shape(p), jnp.float32), params
            ),
            baseline=zeros,
            warmup_sum=zeros,
        )

    def update_fn(task_grads, state, params=None, **extra_args):
        del extra_args
        check_task_grads(task_grads, num_tasks)
        check_matches_params(task_grads, params)
        squares = jax.tree.map(lambda g: g.astype(jnp.float32) ** 2, task_grads)
        sq_sum = jax.tree.map(jnp.add, state.sq_grad_sum, squares)
        risk = sum(
            jnp.sum((s / jnp.sqrt(h + EPSILON)).reshape(num_tasks, -1), axis=1)
            for s, h in zip(jax.tree_util.tree_leaves(squares), jax.tree_util.tree_leaves(sq_sum))
        )
        n_warmup = jnp.asarray(n_warmup_steps, jnp.int32)
        warming = state.count < n_warmup
        first = state.count == n_warmup
        # After a warm-up the baseline is its mean estimate; without one, the first
        # update's estimates are the baseline and are used unscaled.
        warmed = n_warmup > 0
        first_baseline = jnp.where(
            warmed, state.warmup_sum / jnp.maximum(n_warmup, 1).astype(jnp.float32), risk
        )
        first_scaled = jnp.where(warmed, risk / (first_baseline + EPSILON), risk)
        baseline = jnp.where(first, first_baseline, state.baseline)
        scaled = jnp.where(first, first_scaled, risk / (state.baseline + EPSILON))
        stepped = jax.nn.softmax(
            jnp.log(state.weights) + jnp.asarray(robust_step_size, jnp.float32) * scaled
        )
        weights = jnp.where(warming, state.weights, stepped)
        new_state = ExcessMTLState(
            count=optax.safe_increment(state.count),
            weights=weights,
            sq_grad_sum=sq_sum,
            baseline=jnp.where(warming, state.baseline, baseline),
            warmup_sum=jnp.where(warming, state.warmup_sum + risk, state.warmup_sum),
        )
        finite = jnp.all(jnp.isfinite(risk))
        return combine(weights, task_grads), optax.tree.where(finite, new_state, state)

    tx = optax.GradientTransformationExtraArgs(init_fn, update_fn)
    return with_domains(tx, "excess_mtl", robust_step_size=(robust_step_size, POSITIVE))
