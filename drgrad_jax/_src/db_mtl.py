"""DB-MTL: dual balancing of loss scales (log losses) and gradient magnitudes."""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from drgrad_jax._src.domains import NON_NEGATIVE, UNIT_RIGHT_OPEN, with_domains
from drgrad_jax._src.loss_weighting import _losses_arg
from drgrad_jax._src.task_grads import (
    check_matches_params,
    check_task_grads,
    combine,
    require_num_tasks,
)

EPSILON = 1e-8
"""Added to the losses before their logarithm and to the norms before dividing."""


class DBMTLState(NamedTuple):
    """State of ``db_mtl``.

    Attributes:
      count: int32 number of updates seen with finite inputs.
      grad_ema: per-task EMA of the log-loss gradients, leaves ``[K, *param_shape]``
        (float32, zeros at the start).
    """

    count: jax.Array
    grad_ema: Any


def db_mtl(
    beta: jax.typing.ArrayLike = 0.9,
    beta_sigma: jax.typing.ArrayLike = 0.5,
    *,
    num_tasks: int | None = None,
) -> optax.GradientTransformationExtraArgs:
    r"""DB-MTL: balance the loss scales with log losses, then the gradient magnitudes.

    Lin et al. (2023), Sec. 3 (Algorithm 1): loss-scale balancing replaces each
    loss by its logarithm, whose gradient is ``g_k / L_k``; these are smoothed
    over steps with a decaying rate ``beta_t = beta / t^{beta_sigma}``,

    .. math::
      \hat g_k^{(t)} = \beta_t\, \hat g_k^{(t-1)} + (1 - \beta_t)\,
        \frac{g_k^{(t)}}{L_k^{(t)} + \epsilon}, \qquad \hat g_k^{(0)} = 0,

    and gradient-magnitude balancing scales every task to the largest norm,

    .. math::
      d = \sum_k \frac{\max_j \|\hat g_j\|}{\|\hat g_k\| + \epsilon}\, \hat g_k .

    Follows LibMTL's ``DB_MTL`` (the authors' code; not in TorchJD), including
    ``eps = 1e-8``. The EMA costs a per-task copy of the gradients in the
    state (``K`` times the parameters). ``beta``'s defaults are a reasonable
    choice, not the paper's per-benchmark tuned values.

    Degenerate inputs: a zero task gradient keeps weight 0 (its EMA stays 0);
    ``K = 1`` gives ``g_hat_1``; identical gradients with equal losses give
    ``K g_hat``. Non-finite gradients or losses give a non-finite update and
    leave the state unchanged.

    Args:
      beta: EMA coefficient ``beta`` in ``[0, 1)``.
      beta_sigma: decay exponent of the EMA coefficient (``0``: constant).
      num_tasks: ``K`` (static; sizes the EMA).

    Returns:
      An ``optax.GradientTransformationExtraArgs``; ``init`` needs the params
      (to size the EMA); ``update`` requires the extra argument ``losses``
      (shape ``[K]``) and ignores other extra args.

    Example:
      >>> import jax.numpy as jnp
      >>> tx = db_mtl(beta=0.0, num_tasks=2)
      >>> g = {"w": jnp.array([[2.0, 0.0], [0.0, 1.0]])}
      >>> d, _ = tx.update(g, tx.init({"w": jnp.zeros(2)}), losses=jnp.array([1.0, 4.0]))
      >>> [round(v, 4) for v in d["w"].tolist()]
      [2.0, 2.0]

    References:
      Lin, Ye, Xu, Shi & Zhang, *Dual-Balancing for Multi-Task Learning*, 2023,
      https://arxiv.org/abs/2308.12029.
    """
    require_num_tasks(num_tasks, "db_mtl")

    def init_fn(params):
        if params is None:
            raise ValueError("db_mtl keeps a per-task gradient EMA: call tx.init(params).")
        return DBMTLState(
            count=jnp.zeros([], jnp.int32),
            grad_ema=jax.tree.map(
                lambda p: jnp.zeros((num_tasks,) + jnp.shape(p), jnp.float32), params
            ),
        )

    def update_fn(task_grads, state, params=None, **extra_args):
        check_task_grads(task_grads, num_tasks)
        check_matches_params(task_grads, params)
        losses = _losses_arg(extra_args, num_tasks, "db_mtl")
        t = optax.safe_increment(state.count)
        rate = jnp.asarray(beta, jnp.float32) / t.astype(jnp.float32) ** jnp.asarray(
            beta_sigma, jnp.float32
        )
        inv_losses = 1.0 / (losses + EPSILON)

        def smooth(ema, g):
            log_grad = g.astype(jnp.float32) * inv_losses.reshape((-1,) + (1,) * (g.ndim - 1))
            return log_grad + rate * (ema - log_grad)

        ema = jax.tree.map(smooth, state.grad_ema, task_grads)
        sq = sum(
            jnp.sum(e.reshape(num_tasks, -1) ** 2, axis=1) for e in jax.tree_util.tree_leaves(ema)
        )
        norms = jnp.sqrt(sq)
        scales = jnp.max(norms) / (norms + EPSILON)
        updates = jax.tree.map(lambda u, g: u.astype(g.dtype), combine(scales, ema), task_grads)
        finite = jnp.all(jnp.isfinite(norms)) & jnp.all(jnp.isfinite(losses))
        new_state = optax.tree.where(finite, DBMTLState(count=t, grad_ema=ema), state)
        return updates, new_state

    tx = optax.GradientTransformationExtraArgs(init_fn, update_fn)
    return with_domains(
        tx, "db_mtl", beta=(beta, UNIT_RIGHT_OPEN), beta_sigma=(beta_sigma, NON_NEGATIVE)
    )
