"""The contrastive module of ALM-MTA: positives, the momentum key encoder, the negative queue.

The mediator's query is pulled towards the keys of the touches that carried
the outcome (an uploader's touches with a clear proxy signal) and pushed from
a queue of negative keys (docs/almmta.md, *Losses and objective*). As in MoCo, the queue holds keys of a
slowly moving copy of the key head (an exponential moving average of its
parameters), so the negatives stay consistent while the key head trains.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx

from almmta_jax._src.data import JourneyBatch
from almmta_jax._src.networks import ALMMTA, normalize


def positives(batch: JourneyBatch) -> jax.Array:
    """Contrastive positives: touches of uploaders with ``max_p y' >= 0.5``."""
    return batch.yp_mask & (jnp.max(batch.yp, axis=-1) >= 0.5)


def key_head_graphdef(model_config) -> Any:
    """Graphdef of the key head alone, from an abstract model (no parameters are built)."""
    abstract = nnx.eval_shape(lambda: ALMMTA(model_config, rngs=nnx.Rngs(0)))
    return nnx.graphdef(abstract.key_head)


def momentum_and_queue(config, key_graphdef, state, params, touch_embeddings, keep, key):
    """EMA of the key head, then enqueue one momentum key per journey (ring buffer).

    Args:
      config: the ``TrainConfig`` (``beta``, ``momentum``, ``queue_size``).
      key_graphdef: ``key_head_graphdef(config.model)``.
      state: the ``TrainState`` before the step (its EMA copy and queue).
      params: θ_G after the step (its ``key_head`` is tracked).
      touch_embeddings: ``[B, L, d]`` touch embeddings of the step's batch.
      keep: ``[B, L]`` bool, the touches that were kept.
      key: PRNG key picking one touch per journey.

    Returns:
      ``(key_ema, queue, queue_valid, queue_ptr)``; unchanged when ``beta == 0``.
    """
    if config.beta == 0:
        return state.key_ema, state.queue, state.queue_valid, state.queue_ptr
    m = config.momentum
    key_ema = jax.tree.map(lambda e, p: m * e + (1.0 - m) * p, state.key_ema, params["key_head"])
    e = jax.lax.stop_gradient(touch_embeddings)
    b, l, _ = e.shape
    # One random valid touch per journey.
    noise = jax.random.uniform(key, (b, l))
    pick = jnp.argmax(jnp.where(keep, noise, -1.0), axis=1)
    has = jnp.any(keep, axis=1)
    chosen = jnp.take_along_axis(e, pick[:, None, None], axis=1)[:, 0]
    new_keys = normalize(nnx.merge(key_graphdef, key_ema)(chosen))
    q = config.queue_size
    n = min(b, q)
    slots = jnp.mod(state.queue_ptr + jnp.arange(n, dtype=jnp.int32), q)
    queue = state.queue.at[slots].set(new_keys[:n].astype(state.queue.dtype))
    queue_valid = state.queue_valid.at[slots].set(has[:n])
    return key_ema, queue, queue_valid, jnp.mod(state.queue_ptr + n, q).astype(jnp.int32)
