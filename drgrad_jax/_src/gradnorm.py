"""GradNorm: learn task weights that equalise the gradient norms' training rates."""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import jax
import jax.numpy as jnp
import optax

from drgrad_jax._src.domains import NON_NEGATIVE, POSITIVE, with_domains
from drgrad_jax._src.loss_weighting import _losses_arg
from drgrad_jax._src.task_grads import (
    check_matches_params,
    check_task_grads,
    combine,
    leaf_paths,
    match_prefix,
    require_num_tasks,
)

MIN_WEIGHT = 1e-4
"""Floor on a task weight after its step (before renormalisation): weights stay positive."""


class GradNormState(NamedTuple):
    """State of ``gradnorm``.

    Attributes:
      count: int32 number of updates seen with finite losses.
      weights: ``[K]`` task weights ``w_k`` (sum ``K``; start at 1).
      initial_losses: ``[K]`` the losses of the first update, ``L_k(0)``.
    """

    count: jax.Array
    weights: jax.Array
    initial_losses: jax.Array


def gradnorm_step(
    weights: jax.Array,
    layer_norms: jax.Array,
    losses: jax.Array,
    initial_losses: jax.Array,
    alpha: jax.typing.ArrayLike,
    learning_rate: jax.typing.ArrayLike,
) -> jax.Array:
    r"""One GradNorm step on the task weights (Chen et al. 2018, Eqs. 1-2).

    ``G_k = w_k ||grad_W L_k||``, target ``T_k = mean(G) r_k^alpha`` with
    ``r_k = (L_k / L_k(0)) / mean(L / L(0))`` held constant, and
    ``L_grad = sum_k |G_k - T_k|``; SGD on ``w`` then renormalise to ``sum w = K``.

    Args:
      weights: ``[K]`` current weights.
      layer_norms: ``[K]`` norms of the task gradients at the chosen layer.
      losses: ``[K]`` current losses.
      initial_losses: ``[K]`` losses at the first update.
      alpha: restoring-force strength.
      learning_rate: step size on the weights.

    Returns:
      ``[K]`` new weights summing to ``K``.
    """
    k = weights.shape[0]
    inverse_rate = losses / initial_losses
    relative = inverse_rate / jnp.mean(inverse_rate)
    norms = weights * layer_norms
    target = jnp.mean(norms) * relative ** jnp.asarray(alpha, jnp.float32)
    grad = jnp.sign(norms - target) * layer_norms
    stepped = jnp.maximum(weights - jnp.asarray(learning_rate, jnp.float32) * grad, MIN_WEIGHT)
    return k * stepped / jnp.sum(stepped)


def gradnorm(
    alpha: jax.typing.ArrayLike = 1.5,
    learning_rate: jax.typing.ArrayLike = 0.025,
    *,
    num_tasks: int | None = None,
    layer: str | Sequence[str] | None = None,
) -> optax.GradientTransformationExtraArgs:
    r"""GradNorm: adapt the task weights so every task trains at a similar rate.

    Chen et al. (2018), Sec. 3: with weights ``w_k`` (initially 1), the update
    is ``d = sum_k w_k g_k``; then, at a chosen shared layer ``W``,

    .. math::
      G_W^{(k)} = w_k \|\nabla_W L_k\|, \quad
      r_k = \frac{L_k / L_k(0)}{\tfrac1K \sum_j L_j / L_j(0)}, \quad
      L_{grad} = \sum_k \big|G_W^{(k)} - \overline{G_W}\, r_k^{\alpha}\big|,

    the weights take one gradient step on ``L_grad`` (the target held
    constant), are floored at ``1e-4`` and renormalised to ``sum_k w_k = K``.
    ``d`` uses the weights before the step, as in the paper.

    The layer ``W`` needs no extra backward pass: the per-task gradients already
    hold one row per task for every shared leaf (``per_task_grads`` computes
    them in the same K backward passes as the rest). ``layer`` names the leaves
    whose rows make up ``W`` by their ``/``-joined path prefixes (as in
    ``per_task_grads``' ``task_of``, e.g. ``"trunk/layers/1"``); ``None`` uses
    every leaf. At the representation level (``per_task_rep_grads``) the
    cotangents ARE the last shared layer's outputs, which is LibMTL's choice
    with ``rep_grad``. The paper trains ``w`` with the network's optimizer;
    plain SGD with ``learning_rate`` is used here, and the weights are not
    re-parametrised by a softmax (LibMTL's variant).

    Degenerate inputs: zero layer gradients leave the weights unchanged by the
    step; ``K = 1`` keeps ``w = 1``; non-finite losses leave the state
    unchanged.

    Args:
      alpha: restoring-force strength ``alpha`` (1.5 in the paper's NYUv2 runs).
      learning_rate: SGD step size of the weights.
      num_tasks: ``K`` (static; sizes the weights).
      layer: path prefix or prefixes of the leaves forming the shared layer
        ``W`` (static), or ``None`` for all leaves.

    Returns:
      An ``optax.GradientTransformationExtraArgs``; ``update`` requires the
      extra argument ``losses`` (shape ``[K]``) and ignores other extra args.

    Raises:
      ValueError: ``num_tasks`` is not a positive int; at the first update,
        ``layer`` matches no leaf of the per-task gradients.

    Example:
      >>> import jax.numpy as jnp
      >>> tx = gradnorm(num_tasks=2, layer="trunk")
      >>> g = {"trunk": jnp.array([[3.0], [1.0]]), "head": jnp.ones((2, 1))}
      >>> d, s = tx.update(g, tx.init(None), losses=jnp.array([1.0, 1.0]))
      >>> d["trunk"].tolist(), [round(v, 3) for v in s.weights.tolist()]
      ([4.0], [0.949, 1.051])

    References:
      Chen, Badrinarayanan, Lee & Rabinovich, *GradNorm: Gradient Normalization
      for Adaptive Loss Balancing in Deep Multitask Networks*, ICML 2018,
      https://arxiv.org/abs/1711.02257.
    """
    require_num_tasks(num_tasks, "gradnorm")
    prefixes = (layer,) if isinstance(layer, str) else None if layer is None else tuple(layer)

    def init_fn(params):
        del params
        return GradNormState(
            count=jnp.zeros([], jnp.int32),
            weights=jnp.ones((num_tasks,), jnp.float32),
            initial_losses=jnp.ones((num_tasks,), jnp.float32),
        )

    def layer_norms(task_grads) -> jax.Array:
        leaves = jax.tree_util.tree_leaves(task_grads)
        if prefixes is None:
            chosen = leaves
        else:
            idx = match_prefix(leaf_paths(task_grads), tuple(p.strip("/") for p in prefixes))
            if not idx:
                raise ValueError(
                    f"layer={layer!r} matches no leaf of task_grads; paths are "
                    f"{leaf_paths(task_grads)}."
                )
            chosen = [leaves[i] for i in idx]
        sq = sum(jnp.sum(g.reshape(num_tasks, -1).astype(jnp.float32) ** 2, axis=1) for g in chosen)
        return jnp.sqrt(sq)

    def update_fn(task_grads, state, params=None, **extra_args):
        check_task_grads(task_grads, num_tasks)
        check_matches_params(task_grads, params)
        losses = _losses_arg(extra_args, num_tasks, "gradnorm")
        initial = jnp.where(state.count > 0, state.initial_losses, losses)
        new_weights = gradnorm_step(
            state.weights, layer_norms(task_grads), losses, initial, alpha, learning_rate
        )
        finite = jnp.all(jnp.isfinite(losses)) & jnp.all(jnp.isfinite(new_weights))
        new_state = GradNormState(
            count=optax.safe_increment(state.count), weights=new_weights, initial_losses=initial
        )
        new_state = optax.tree.where(finite, new_state, state)
        return combine(state.weights, task_grads), new_state

    tx = optax.GradientTransformationExtraArgs(init_fn, update_fn)
    return with_domains(
        tx, "gradnorm", alpha=(alpha, NON_NEGATIVE), learning_rate=(learning_rate, POSITIVE)
    )
