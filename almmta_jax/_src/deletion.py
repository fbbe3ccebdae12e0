"""Deleting touches: the journey as it would have been logged without them.

See docs/almmta.md, *Deleted journeys*. A deletion keeps the other touches and
their times; the three time features of ``JourneyBatch.tfeat`` are then what
``time_features`` computes for the shorter journey with the same window end:

* hours to the window end: unchanged;
* hours since the previous touch: measured from the previous *kept* touch
  (0 when none is left before it);
* position from the end / L: the number of kept touches after it, over L.

Every model applies this rule to its ``(batch, keep)`` input, so a deletion
uplift compares the journey with a journey the data could have held.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp


def _previous(flags: jax.Array) -> jax.Array:
    """Index of the last position before j with ``flags`` set, -1 when none: ``[..., L]``."""
    idx = jnp.arange(flags.shape[-1])
    last = jax.lax.cummax(jnp.where(flags, idx, -1), axis=flags.ndim - 1)
    pad = jnp.full(flags.shape[:-1] + (1,), -1, last.dtype)
    return jnp.concatenate([pad, last[..., :-1]], axis=-1)


def _after(flags: jax.Array) -> jax.Array:
    """Number of positions after j with ``flags`` set: ``[..., L]``."""
    f = flags.astype(jnp.int32)
    return jnp.flip(jnp.cumsum(jnp.flip(f, -1), axis=-1), -1) - f


def deleted_time_features(tfeat, touch_mask, keep) -> jax.Array:
    """The time features of each journey restricted to the touches in ``keep``.

    Where nothing before or after a kept touch was deleted its features are
    returned bit for bit; deleted and padded positions hold 0, as padding does.
    The gap is rebuilt from the hours-to-end feature, so it assumes every touch
    lies at or before the window end (true of every loader's ``tfeat``).

    Args:
      tfeat: ``[..., L, 3]`` time features (``time_features``).
      touch_mask: ``[..., L]`` bool valid positions.
      keep: ``[..., L]`` bool touches left in the journey (``touch_mask & keep``
        is used).

    Returns:
      ``[..., L, 3]`` float32 time features of the shorter journeys.

    Example:
      >>> import numpy as np
      >>> from almmta_jax.data import time_features
      >>> hours = np.array([[0.0, 1.0, 3.0]])  # touches at hour 0, 1 and 3
      >>> mask = np.ones((1, 3), bool)
      >>> f = time_features(hours * 3600, mask)
      >>> g = deleted_time_features(f, mask, np.array([[True, False, True]]))
      >>> np.round(np.expm1(np.asarray(g[0, 2, 1])), 4)  # the gap now spans 3 hours
      np.float32(3.0)
    """
    tfeat = jnp.asarray(tfeat)
    mask = jnp.asarray(touch_mask, bool)
    if tfeat.shape[-1] != 3 or tfeat.shape[:-1] != mask.shape:
        raise ValueError(
            f"tfeat has shape {tfeat.shape} and touch_mask {mask.shape}; "
            "expected [..., L, 3] and [..., L]."
        )
    kept = jnp.logical_and(mask, jnp.asarray(keep, bool))
    to_end = tfeat[..., 0]
    prev = _previous(kept)
    hours = jnp.expm1(to_end)
    h_prev = jnp.take_along_axis(hours, jnp.maximum(prev, 0), axis=-1)
    rebuilt = jnp.where(prev >= 0, jnp.log1p(jnp.maximum(h_prev - hours, 0.0)), 0.0)
    gap = jnp.where(prev != _previous(mask), rebuilt, tfeat[..., 1])
    n_after = _after(kept)
    length = mask.shape[-1]
    pos = jnp.where(n_after != _after(mask), n_after / length, tfeat[..., 2])
    out = jnp.stack([to_end, gap, pos.astype(tfeat.dtype)], axis=-1)
    return jnp.where(kept[..., None], out, 0.0).astype(jnp.float32)
