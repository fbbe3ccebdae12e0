"""The default optimizer of ALM-MTA and its baselines: clipping, decoupled decay, warm-up."""

from __future__ import annotations

import jax.numpy as jnp
import optax

KINDS = ("adamw", "sgd")


def default_optimizer(
    learning_rate: float = 1e-3,
    *,
    warmup_steps: int = 500,
    total_steps: int | None = None,
    weight_decay: float = 1e-5,
    clip_norm: float = 5.0,
    kind: str = "adamw",
) -> optax.GradientTransformation:
    """``clip_by_global_norm → adamw`` (or clipped SGD with the same decay) with a linear warm-up.

    The learning rate is ``lr_t = learning_rate · min(1, (t + 1) / warmup_steps)``,
    which already moves on the first step (``t = 0``). When the run's length
    is known (``total_steps``), the warm-up is capped at a tenth of the run, so
    a short run (a test, a quick benchmark, a small data set) is not spent
    warming up: ``warm = max(min(warmup_steps, total_steps // 10), 1)``. Both
    ALM-MTA's trainer and every baseline pass their planned length here, so
    they follow the one rule.

    Args:
      learning_rate: the peak learning rate.
      warmup_steps: steps of the linear warm-up (at least 1).
      total_steps: the planned number of steps, or None (no cap).
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
    warm = int(warmup_steps)
    if total_steps is not None:
        warm = min(warm, int(total_steps) // 10)
    warm = max(warm, 1)
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
