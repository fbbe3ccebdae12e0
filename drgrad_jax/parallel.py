"""Data parallelism over a device mesh: batch split, parameters replicated, multi-host input.

Example:
  >>> import numpy as np
  >>> from drgrad_jax import parallel
  >>> mesh = parallel.make_mesh(2)
  >>> tuple(parallel.shard_batch(np.zeros((4, 3)), mesh).sharding.spec)
  ('data',)
"""

from drgrad_jax._src.parallel import (
    batch_sharding,
    check_mesh,
    host_local_to_global,
    initialize_multihost,
    make_mesh,
    replicate,
    replicated,
    shard_batch,
)

__all__ = [
    "batch_sharding",
    "check_mesh",
    "host_local_to_global",
    "initialize_multihost",
    "make_mesh",
    "replicate",
    "replicated",
    "shard_batch",
]
