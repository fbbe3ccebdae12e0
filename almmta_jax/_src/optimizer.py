"""The default optimizer of ALM-MTA and its baselines: clipping, decoupled decay, warm-up."""

from __future__ import annotations

import jax.numpy as jnp
import optax

KINDS = ("adamw", "sgd")


def default_optimizer(
    learning_rate: float = 1e-3,
    *,
    warmup_steps: int = 500,
    weight_decay: float = 1e-5,
    clip_norm: float = 5.0,
    kind: str = "adamw",
) -> optax.GradientTransformation:
    """``clip_by_global_norm → adamw`` (or clipped SGD with the same decay) with a linear warm-up.

    The learning rate is ``lr_t = learning_rate · min(1, (t + 1) / warmup_steps)``,
    which already moves on the first step (``t = 0``).

    Args:
      learning_rate: the peak learning rate.
      warmup_steps: steps of the linear warm-up (at least 1).
      weight_decay: decoupled weight decay (the "stability" L2).
      clip_norm: global-norm clipping of the gradient.
      kind: ``"adamw"`` or ``"sgd"``.

    Returns:
      An ``optax.GradientTransformation``.

    Example:
      >>> import jax.numpy as jnp
      >>> tx = default_optimizer(0.1, warmup_steps=2, weight_decay=0.0, kind="sgd")
      >>> u, _ = tx.update({"w": jnp.ones(1)}, tx.init({"w": jnp.ones(1)}), {"w": jnp.ones(1)})
      >>> round(float(u["w"][0]), 6)  # half the peak rate on the first step
      -0.05
    """
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}, got {kind!r}.")
    if learning_rate <= 0 or clip_norm <= 0:
        raise ValueError(
            f"learning_rate and clip_norm must be > 0, got {learning_rate}, {clip_norm}."
        )
    if weight_decay < 0:
        raise ValueError(f"weight_decay must be >= 0, got {weight_decay}.")
    warm = max(int(warmup_steps), 1)
    lr = lambda count: learning_rate * jnp.minimum(1.0, (count + 1.0) / warm)
    if kind == "sgd":
        return optax.chain(
            optax.clip_by_global_norm(clip_norm),
            optax.add_decayed_weights(weight_decay),
            optax.sgd(lr),
        )
    return optax.chain(
        optax.clip_by_global_norm(clip_norm),
        optax.adamw(lr, weight_decay=weight_decay),
    )
