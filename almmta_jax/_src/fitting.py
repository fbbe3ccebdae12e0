"""Full-batch Adam under one ``lax.scan``: the fit of the small nuisance models.

The sequence propensity ``ê(c | x)``, the grouped protocol's exposure
propensities ``ê_c(x)`` and the baselines' auxiliary classifiers are small
models fitted on all their data at once; this is their one training loop.
"""

from __future__ import annotations

import operator
from collections.abc import Callable
from typing import Any

import jax
import optax


def fit_full_batch(
    loss_fn: Callable[..., jax.Array],
    params: Any,
    *,
    steps: int,
    learning_rate: float,
    key: jax.Array | None = None,
) -> Any:
    """Minimizes ``loss_fn`` by ``steps`` full-batch Adam steps in one jitted scan.

    Args:
      loss_fn: ``loss_fn(params)``, or ``loss_fn(params, step_key)`` when ``key``
        is given (e.g. for a fresh shuffle per step); returns a scalar.
      params: the initial parameter pytree.
      steps: number of Adam steps (static).
      learning_rate: Adam learning rate.
      key: optional PRNG key, split into one key per step.

    Returns:
      The parameters after the last step.

    Raises:
      ValueError: ``steps`` is not a positive int.

    Example:
      >>> import jax.numpy as jnp
      >>> p = fit_full_batch(lambda p: (p["w"] - 3.0) ** 2, {"w": jnp.zeros(())},
      ...                    steps=300, learning_rate=0.1)
      >>> round(float(p["w"]), 2)
      3.0
    """
    try:
        steps = operator.index(steps)
    except TypeError:
        raise ValueError(f"steps must be a positive int; got {steps!r}.") from None
    if steps < 1:
        raise ValueError(f"steps must be a positive int; got {steps!r}.")
    tx = optax.adam(learning_rate)
    grad_fn = jax.grad(loss_fn)

    def step(carry, step_key):
        p, opt = carry
        grads = grad_fn(p) if step_key is None else grad_fn(p, step_key)
        updates, opt = tx.update(grads, opt, p)
        return (optax.apply_updates(p, updates), opt), None

    def run(p, step_keys):
        (p, _), _ = jax.lax.scan(step, (p, tx.init(p)), step_keys, length=steps)
        return p

    step_keys = None if key is None else jax.random.split(key, steps)
    return jax.jit(run)(params, step_keys)
