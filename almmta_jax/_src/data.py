"""Journey batches: the one data format every ALM-MTA model, loss and metric reads."""

from __future__ import annotations

from typing import NamedTuple

import jax


class JourneyBatch(NamedTuple):
    """A batch of B user journeys padded to L touchpoints.

    Attributes:
      x: ``[B, d_x]`` float32 observed user features.
      user_id: ``[B]`` int32 user ids (hashed or contiguous; 0 if unknown).
      touch_ids: ``[B, L, F]`` int32 categorical ids of each touchpoint, one column
        per id field (simulator: item, cluster, music, template; Criteo: campaign).
        Padding positions hold 0.
      tfeat: ``[B, L, 3]`` float32 time features: log1p(hours to window end),
        log1p(hours since previous touch), position-from-end / L.
      touch_mask: ``[B, L]`` bool, True at real touchpoints.
      y: ``[B]`` float32 binary outcome (upload / conversion).
      yp: ``[B, L, P]`` float32 per-touchpoint proxy targets y' in [0, 1]
        (zeros where absent).
      yp_mask: ``[B, L]`` bool, ``touch_mask & (y == 1)``: where y' is defined.
      ipw: ``[B]`` float32 inverse-propensity weights (ones when not computed).
    """

    x: jax.Array
    user_id: jax.Array
    touch_ids: jax.Array
    tfeat: jax.Array
    touch_mask: jax.Array
    y: jax.Array
    yp: jax.Array
    yp_mask: jax.Array
    ipw: jax.Array
