"""Random journeys shaped for a model: data for tests, examples and speed benchmarks.

Example:
  >>> import jax
  >>> from almmta_jax import ModelConfig
  >>> from almmta_jax.testing import random_journeys
  >>> random_journeys(jax.random.key(0), 5, ModelConfig((4,), d_x=2, max_len=3)).touch_ids.shape
  (5, 3, 1)
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from almmta_jax._src.data import JourneyBatch
from almmta_jax._src.networks import ModelConfig

__all__ = ["random_journeys"]


def random_journeys(key: jax.Array, n: int, config: ModelConfig, upload_rate: float = 0.3):
    """Random journeys shaped for ``config`` (tests, examples and speed benchmarks).

    Lengths are uniform in ``1..max_len``; ``y ~ Bern(upload_rate)``; proxy
    targets are uniform on uploaders and 0 elsewhere.
    """
    ks = jax.random.split(key, 8)
    l = config.max_len
    lengths = jax.random.randint(ks[0], (n,), 1, l + 1)
    mask = jnp.arange(l)[None, :] < lengths[:, None]
    ids = jnp.stack(
        [
            jax.random.randint(jax.random.fold_in(ks[1], i), (n, l), 0, v)
            for i, v in enumerate(config.vocab_sizes)
        ],
        axis=-1,
    )
    ids = jnp.where(mask[:, :, None], ids, 0).astype(jnp.int32)
    tfeat = jnp.where(mask[:, :, None], jax.random.uniform(ks[2], (n, l, 3)), 0.0)
    y = jax.random.bernoulli(ks[3], upload_rate, (n,)).astype(jnp.float32)
    yp_mask = mask & (y[:, None] > 0)
    yp = jnp.where(yp_mask[:, :, None], jax.random.uniform(ks[4], (n, l, config.num_proxy)), 0.0)
    return JourneyBatch(
        x=jax.random.normal(ks[5], (n, config.d_x)),
        user_id=jax.random.randint(ks[6], (n,), 0, max(config.num_users, 1)).astype(jnp.int32),
        touch_ids=ids,
        tfeat=tfeat.astype(jnp.float32),
        touch_mask=mask,
        y=y,
        yp=yp.astype(jnp.float32),
        yp_mask=yp_mask,
        ipw=jnp.ones((n,), jnp.float32),
    )
