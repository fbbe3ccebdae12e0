"""The DRGrad updater: mixing weights of the split primary tower from routed gradient norms."""

from __future__ import annotations

import jax
import jax.numpy as jnp

UPDATERS = ("cumulative", "mean", "ema", "fixed")


def init_accumulators(num_primary: int) -> jax.Array:
    """sigma', sigma'' = 0 for each primary task: ``[P, 2]`` float32."""
    return jnp.zeros((num_primary, 2), jnp.float32)


def update_accumulators(accum, norms, count, *, updater, ema_decay):
    """One updater step on ``accum [P, 2]`` given this step's routed norms ``[P, 2]``.

    ``cumulative`` and ``mean`` keep the running sums sigma += ||routed grad||
    (paper section "Updater"); ``ema`` keeps s <- d s + (1 - d) ||routed grad||;
    ``fixed`` keeps nothing.
    """
    del count
    if updater in ("cumulative", "mean"):
        return accum + norms
    if updater == "ema":
        return ema_decay * accum + (1.0 - ema_decay) * norms
    return accum


def mixing_from_accumulators(accum, count, *, updater, temperature):
    """mu', mu'' per primary task (``[P, 2]``, rows sum to one) from the accumulators.

    ``cumulative``: softmax(sigma', sigma''), the paper's literal rule.
    ``mean``: softmax(sigma / t) with t the number of steps taken.
    ``ema``: softmax(s / temperature).
    ``fixed``: 0.5 / 0.5, the "router only" ablation.
    """
    if updater == "cumulative":
        logits = accum
    elif updater == "mean":
        logits = accum / jnp.maximum(count, 1).astype(jnp.float32)
    elif updater == "ema":
        logits = accum / temperature
    else:
        return jnp.full(accum.shape, 0.5, jnp.float32)
    return jax.nn.softmax(logits.astype(jnp.float32), axis=-1)
