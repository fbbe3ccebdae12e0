"""Loss-weighting methods in the per-task-gradient contract: DWA, uncertainty weighting, IMTL-L.

These methods choose task weights from the task LOSSES, not from the gradients.
They fit the contract as transformations that take per-task gradients (leaves
``[K, *param_shape]``) and the current task losses as an extra argument,
``tx.update(task_grads, state, params, losses=losses)``, keep what they learn
about the losses in their state, and return ``sum_k w_k g_k`` -- exactly the
gradient of ``sum_k w_k L_k`` with the weights held constant, as in the papers.
"""

from __future__ import annotations

from typing import NamedTuple

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


def _losses_arg(extra_args: dict, num_tasks: int, method: str) -> jax.Array:
    if "losses" not in extra_args or extra_args["losses"] is None:
        raise ValueError(
            f"{method} weights tasks by their losses: call "
            "tx.update(task_grads, state, params, losses=losses) with losses of shape "
            f"[{num_tasks}]."
        )
    losses = jnp.asarray(extra_args["losses"])
    if losses.shape != (num_tasks,):
        raise ValueError(
            f"losses has shape {losses.shape}; expected [{num_tasks}] (one loss per task)."
        )
    return losses.astype(jnp.float32)


class DWAState(NamedTuple):
    """State of ``dwa``.

    Attributes:
      count: int32 number of updates seen.
      prev_losses: ``[2, K]``: the losses of the previous two updates
        (row 0 is ``L(t-1)``, row 1 is ``L(t-2)``).
    """

    count: jax.Array
    prev_losses: jax.Array


def dwa(
    temperature: jax.typing.ArrayLike = 2.0, *, num_tasks: int | None = None
) -> optax.GradientTransformationExtraArgs:
    r"""Dynamic weight average (DWA): weight tasks by how slowly their loss falls.

    Liu, Johns & Davison (2019), Eq. (7):

    .. math::
      w_k(t) = \frac{K \exp(r_k(t-1)/T)}{\sum_i \exp(r_i(t-1)/T)}, \qquad
      r_k(t-1) = \frac{L_k(t-1)}{L_k(t-2)},

    with ``w_k = 1`` for the first two updates, and the update
    ``d = sum_k w_k(t) g_k``. The paper uses epoch-averaged losses; here
    ``L(t)`` is whatever ``losses`` is passed to each update (pass running or
    epoch means to follow the paper exactly). The losses of the current call
    are stored for the next ones.

    Degenerate inputs: a previous loss of 0 gives ratio 1; non-finite losses
    are not stored (the state keeps the last finite ones); ``K = 1`` gives
    ``g_1``. Task gradients only enter linearly.

    Args:
      temperature: ``T > 0``; large ``T`` flattens the weights towards 1.
      num_tasks: ``K`` (static; sizes the stored losses).

    Returns:
      An ``optax.GradientTransformationExtraArgs``; ``update`` requires the
      extra argument ``losses`` (shape ``[K]``) and ignores other extra args.

    Example:
      >>> import jax.numpy as jnp
      >>> tx = dwa(num_tasks=2)
      >>> g = {"w": jnp.eye(2)}
      >>> s = tx.init(None)
      >>> for l in ([1.0, 1.0], [0.5, 1.0]):
      ...   _, s = tx.update(g, s, losses=jnp.array(l))
      >>> [round(v, 3) for v in tx.update(g, s, losses=jnp.array([0.4, 1.0]))[0]["w"].tolist()]
      [0.876, 1.124]

    References:
      Liu, Johns & Davison, *End-to-End Multi-Task Learning with Attention*,
      CVPR 2019, https://arxiv.org/abs/1803.10704.
    """
    require_num_tasks(num_tasks, "dwa")

    def init_fn(params):
        del params
        return DWAState(
            count=jnp.zeros([], jnp.int32),
            prev_losses=jnp.ones((2, num_tasks), jnp.float32),
        )

    def update_fn(task_grads, state, params=None, **extra_args):
        check_task_grads(task_grads, num_tasks)
        check_matches_params(task_grads, params)
        losses = _losses_arg(extra_args, num_tasks, "dwa")
        last, before = state.prev_losses[0], state.prev_losses[1]
        ratio = jnp.where(before != 0, last / jnp.where(before != 0, before, 1.0), 1.0)
        t = jnp.asarray(temperature, jnp.float32)
        weights = num_tasks * jax.nn.softmax(ratio / t)
        weights = jnp.where(state.count >= 2, weights, jnp.ones_like(weights))
        finite = jnp.all(jnp.isfinite(losses))
        prev = jnp.where(finite, jnp.stack([losses, last]), state.prev_losses)
        count = jnp.where(finite, optax.safe_increment(state.count), state.count)
        return combine(weights, task_grads), DWAState(count=count, prev_losses=prev)

    tx = optax.GradientTransformationExtraArgs(init_fn, update_fn)
    return with_domains(tx, "dwa", temperature=(temperature, POSITIVE))


class UncertaintyWeightingState(NamedTuple):
    """State of ``uncertainty_weighting``.

    Attributes:
      count: int32 step counter.
      log_vars: ``[K]`` learned log-variances ``s_k = log sigma_k^2`` (start at 0).
    """

    count: jax.Array
    log_vars: jax.Array


def uncertainty_weighting(
    learning_rate: jax.typing.ArrayLike = 1e-2, *, num_tasks: int | None = None
) -> optax.GradientTransformationExtraArgs:
    r"""Homoscedastic uncertainty weighting with learned task log-variances.

    Kendall, Gal & Cipolla (2018), Eq. (7) in the form of LibMTL
    (``s_k = log sigma_k^2``):

    .. math::
      \mathcal L(\theta, s) = \sum_k \tfrac12 e^{-s_k} L_k(\theta) + \tfrac12 s_k,
      \qquad d = \sum_k \tfrac12 e^{-s_k} g_k.

    The log-variances are learned parameters in the paper; here they live in the
    transformation's state and take one SGD step per update on the same
    objective, ``s_k <- s_k - lr (1 - e^{-s_k} L_k) / 2`` (their fixed point is
    ``s_k = log L_k``). ``d`` uses ``s`` before the step.

    Degenerate inputs: non-finite losses leave ``s`` unchanged; ``K = 1`` gives
    ``e^{-s} g_1 / 2``; task gradients only enter linearly.

    Args:
      learning_rate: SGD step size for the log-variances.
      num_tasks: ``K`` (static; sizes the log-variances).

    Returns:
      An ``optax.GradientTransformationExtraArgs``; ``update`` requires the
      extra argument ``losses`` (shape ``[K]``) and ignores other extra args.

    Example:
      >>> import jax.numpy as jnp
      >>> tx = uncertainty_weighting(num_tasks=2)
      >>> g = {"w": jnp.eye(2)}
      >>> d, s = tx.update(g, tx.init(None), losses=jnp.array([3.0, 1.0]))
      >>> d["w"].tolist(), [round(v, 3) for v in s.log_vars.tolist()]
      ([0.5, 0.5], [0.01, 0.0])

    References:
      Kendall, Gal & Cipolla, *Multi-Task Learning Using Uncertainty to Weigh
      Losses for Scene Geometry and Semantics*, CVPR 2018,
      https://arxiv.org/abs/1705.07115.
    """
    require_num_tasks(num_tasks, "uncertainty_weighting")

    def weights_and_grad(log_vars, losses):
        precision = jnp.exp(-log_vars)
        return 0.5 * precision, 0.5 * (1.0 - precision * losses)

    return _learned_log_scales(
        learning_rate,
        num_tasks,
        weights_and_grad,
        UncertaintyWeightingState,
        "uncertainty_weighting",
    )


def _learned_log_scales(learning_rate, num_tasks, weights_and_grad, state_cls, method):
    """Per-task log-scales in the state, one SGD step per update on a loss-level objective.

    ``weights_and_grad(s, losses) -> (w, dJ/ds)``; the update is ``sum_k w_k g_k``
    with ``w`` at ``s`` before the step. Non-finite losses leave ``s`` unchanged.
    ``state_cls(count, s)`` is the method's state.
    """

    def init_fn(params):
        del params
        return state_cls(jnp.zeros([], jnp.int32), jnp.zeros((num_tasks,), jnp.float32))

    def update_fn(task_grads, state, params=None, **extra_args):
        check_task_grads(task_grads, num_tasks)
        check_matches_params(task_grads, params)
        losses = _losses_arg(extra_args, num_tasks, method)
        count, log_scales = state
        weights, grad = weights_and_grad(log_scales, losses)
        new = log_scales - jnp.asarray(learning_rate, jnp.float32) * grad
        new = jnp.where(jnp.all(jnp.isfinite(losses)), new, log_scales)
        return combine(weights, task_grads), state_cls(optax.safe_increment(count), new)

    tx = optax.GradientTransformationExtraArgs(init_fn, update_fn)
    return with_domains(tx, method, learning_rate=(learning_rate, POSITIVE))


class IMTLLState(NamedTuple):
    """State of ``imtl_l``.

    Attributes:
      count: int32 step counter.
      log_scales: ``[K]`` learned log-scales ``s_k`` (start at 0).
    """

    count: jax.Array
    log_scales: jax.Array


def imtl_l(
    learning_rate: jax.typing.ArrayLike = 1e-2, *, num_tasks: int | None = None
) -> optax.GradientTransformationExtraArgs:
    r"""IMTL-L: impartial multi-task learning, the loss-balancing part.

    Liu et al. (2021), Sec. 3.2 (Eq. 8): every task loss gets a learned scale
    ``e^{s_k}`` and a regulariser that stops it from collapsing,

    .. math::
      \mathcal L(\theta, s) = \sum_k e^{s_k} L_k(\theta) - s_k,
      \qquad d = \sum_k e^{s_k} g_k .

    At its optimum ``e^{s_k} L_k = 1``: every scaled loss is pulled to the same
    value. The paper learns ``s`` with the network; here ``s`` lives in the state
    and takes one SGD step per update on the same objective,
    ``s_k <- s_k - lr (e^{s_k} L_k - 1)``, with ``d`` at ``s`` before the step
    (the scalarisation and gradient of TorchJD's ``IMTLL``). It equals twice
    ``uncertainty_weighting`` with ``s = -log sigma^2``, and shares its code.

    Degenerate inputs: non-finite losses leave ``s`` unchanged; ``K = 1`` gives
    ``e^{s} g_1``; task gradients only enter linearly.

    Args:
      learning_rate: SGD step size for the log-scales.
      num_tasks: ``K`` (static; sizes the log-scales).

    Returns:
      An ``optax.GradientTransformationExtraArgs``; ``update`` requires the
      extra argument ``losses`` (shape ``[K]``) and ignores other extra args.

    Example:
      >>> import jax.numpy as jnp
      >>> tx = imtl_l(0.1, num_tasks=2)
      >>> d, s = tx.update({"w": jnp.eye(2)}, tx.init(None), losses=jnp.array([3.0, 1.0]))
      >>> d["w"].tolist(), [round(v, 3) for v in s.log_scales.tolist()]
      ([1.0, 1.0], [-0.2, 0.0])

    References:
      Liu, Li, Kuang, Xue, Chen, Yang, Liao & Zhang, *Towards Impartial
      Multi-task Learning*, ICLR 2021, https://openreview.net/forum?id=IMPnRXEWpvr.
    """
    require_num_tasks(num_tasks, "imtl_l")

    def weights_and_grad(log_scales, losses):
        scale = jnp.exp(log_scales)
        return scale, scale * losses - 1.0

    return _learned_log_scales(learning_rate, num_tasks, weights_and_grad, IMTLLState, "imtl_l")
