"""FAMO: fast adaptive multitask optimization from the task losses alone."""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from drgrad_jax._src.domains import NON_NEGATIVE, POSITIVE, REAL, check_task_vector, with_domains
from drgrad_jax._src.loss_weighting import _losses_arg
from drgrad_jax._src.task_grads import (
    check_matches_params,
    check_task_grads,
    combine,
    require_num_tasks,
)

EPSILON = 1e-8
"""Added to ``L - b`` before its logarithm (as in the paper's code)."""


class FAMOState(NamedTuple):
    """State of ``famo``.

    Attributes:
      count: int32 number of updates seen with finite losses.
      logits: ``[K]`` task-weighting logits ``xi`` (weights ``softmax(xi)``).
      prev_losses: ``[K]`` the losses of the previous update.
      logits_opt: state of the logits' optimizer (Adam with weight decay).
    """

    count: jax.Array
    logits: jax.Array
    prev_losses: jax.Array
    logits_opt: Any


def famo_weights(
    logits: jax.typing.ArrayLike, losses: jax.typing.ArrayLike, min_losses: jax.typing.ArrayLike
) -> jax.Array:
    r"""FAMO's task weights ``z_k / (c (L_k - b_k + eps))``, ``c = sum_j z_j / (L_j - b_j + eps)``.

    This is the gradient of ``sum_k z_k log(L_k - b_k + eps) / c`` w.r.t. the
    losses, ``z = softmax(logits)``: positive weights that sum to one.
    """
    z = jax.nn.softmax(jnp.asarray(logits, jnp.float32))
    shifted = jnp.asarray(losses, jnp.float32) - jnp.asarray(min_losses, jnp.float32) + EPSILON
    ratio = z / shifted
    return ratio / jnp.sum(ratio)


def _logits_optimizer(learning_rate, weight_decay) -> optax.GradientTransformation:
    # PyTorch's Adam(weight_decay=...) adds the decay to the gradient before the moments.
    return optax.chain(optax.add_decayed_weights(weight_decay), optax.adam(learning_rate))


def famo(
    learning_rate: jax.typing.ArrayLike = 0.025,
    weight_decay: jax.typing.ArrayLike = 1e-3,
    min_losses: jax.typing.ArrayLike | None = None,
    *,
    num_tasks: int | None = None,
) -> optax.GradientTransformationExtraArgs:
    r"""FAMO: balance the rates at which the task losses fall, using only the losses.

    Liu et al. (2023), Algorithm 1 / Eq. (8): with logits ``xi``,
    ``z = softmax(xi)`` and lower bounds ``b`` (``min_losses``), the update is
    the gradient of ``sum_k z_k log(L_k - b_k) / c``,

    .. math::
      d = \sum_k \frac{z_k}{c\,(L_k - b_k)} g_k, \qquad
      c = \sum_k \frac{z_k}{L_k - b_k},

    and the logits follow the measured change of the log-losses,
    ``delta_k = log(L_k^{before} - b_k) - log(L_k^{after} - b_k)``, with one
    step of Adam (weight decay ``gamma``) along
    ``J_softmax(xi)^T delta``. The paper measures ``L^{after}`` on the same
    batch after the parameter step, which costs an extra forward pass; here the
    logits step at each update uses the previous update's losses and the
    current ones (the variant that needs no extra pass: with a fixed batch, or
    passing the re-evaluated losses of the previous batch, it is the paper's
    rule). Recorded against TorchJD's ``FAMO`` called in that order (forward,
    then ``update`` with the next losses). ``eps = 1e-8`` is added to
    ``L - b`` as in the paper's code.

    Degenerate inputs: losses must stay above ``min_losses``; non-finite losses
    leave the state unchanged (and give a non-finite update); ``K = 1`` gives
    ``g_1 / (L_1 - b_1)``.

    Args:
      learning_rate: Adam step size of the logits (0.025 in the paper).
      weight_decay: decay ``gamma`` of the logits (1e-3 in the paper).
      min_losses: ``[K]`` lower bounds ``b`` of the losses (any finite values;
        each loss must stay above its bound), or ``None`` for 0. NaN, Inf or a
        vector of the wrong length is refused as numbers; as a JAX array a
        non-finite bound makes the update NaN (docs/drgrad.md, *Using the
        transformations*).
      num_tasks: ``K`` (static; sizes the logits).

    Returns:
      An ``optax.GradientTransformationExtraArgs``; ``update`` requires the
      extra argument ``losses`` (shape ``[K]``) and ignores other extra args.

    Example:
      >>> import jax.numpy as jnp
      >>> tx = famo(num_tasks=2)
      >>> d, s = tx.update({"w": jnp.eye(2)}, tx.init(None), losses=jnp.array([1.0, 3.0]))
      >>> [round(v, 3) for v in d["w"].tolist()]
      [0.75, 0.25]

    References:
      Liu, Feng, Stone & Liu, *FAMO: Fast Adaptive Multitask Optimization*,
      NeurIPS 2023, https://arxiv.org/abs/2306.03792.
    """
    require_num_tasks(num_tasks, "famo")
    check_task_vector("famo", "min_losses", min_losses, num_tasks)

    def bounds():
        if min_losses is None:
            return jnp.zeros((num_tasks,), jnp.float32)
        return jnp.asarray(min_losses, jnp.float32)

    def init_fn(params):
        del params
        logits = jnp.zeros((num_tasks,), jnp.float32)
        return FAMOState(
            count=jnp.zeros([], jnp.int32),
            logits=logits,
            prev_losses=jnp.ones((num_tasks,), jnp.float32),
            logits_opt=_logits_optimizer(learning_rate, weight_decay).init(logits),
        )

    def update_fn(task_grads, state, params=None, **extra_args):
        check_task_grads(task_grads, num_tasks)
        check_matches_params(task_grads, params)
        losses = _losses_arg(extra_args, num_tasks, "famo")
        b = bounds()
        delta = jnp.log(state.prev_losses - b + EPSILON) - jnp.log(losses - b + EPSILON)
        _, pullback = jax.vjp(jax.nn.softmax, state.logits)
        (grad,) = pullback(delta)
        opt = _logits_optimizer(learning_rate, weight_decay)
        step, opt_state = opt.update(grad, state.logits_opt, state.logits)
        stepped = state.count > 0
        logits = jnp.where(stepped, state.logits + step, state.logits)
        opt_state = optax.tree.where(stepped, opt_state, state.logits_opt)
        weights = famo_weights(logits, losses, b)
        finite = jnp.all(jnp.isfinite(losses))
        new_state = FAMOState(
            count=optax.safe_increment(state.count),
            logits=logits,
            prev_losses=losses,
            logits_opt=opt_state,
        )
        new_state = optax.tree.where(finite, new_state, state)
        return combine(weights, task_grads), new_state

    tx = optax.GradientTransformationExtraArgs(init_fn, update_fn)
    return with_domains(
        tx,
        "famo",
        learning_rate=(learning_rate, POSITIVE),
        weight_decay=(weight_decay, NON_NEGATIVE),
        min_losses=(min_losses, REAL),
    )
