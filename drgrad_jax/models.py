"""Multi-task recommender networks (Flax NNX): Shared-Bottom, MMoE, PLE, Split-MMoE.

Every model returns per-task logits ``[B, K]`` from ``model(cat, dense, user, mu=mu)``
and splits into ``trunk`` (to the task representations) and ``heads`` (the towers).

Example:
  >>> import jax.numpy as jnp
  >>> from flax import nnx
  >>> from drgrad_jax import models
  >>> m = models.MMoE((10, 4), 3, num_tasks=2, rngs=nnx.Rngs(0))
  >>> m(jnp.zeros((5, 2), jnp.int32), jnp.ones((5, 3))).shape
  (5, 2)
"""

from drgrad_jax._src.encoders import EmbeddingEncoder, FieldMLPEncoder
from drgrad_jax._src.layers import ACTIVATIONS, MLP, ExpertPool, Gate, PersonalizedGate, Tower
from drgrad_jax._src.networks import (
    MODELS,
    PLE,
    MMoE,
    SharedBottom,
    SplitMMoE,
    census_released,
    match_width,
    mix_logits,
    param_count,
    params_of,
    task_of,
)

__all__ = [
    "ACTIVATIONS",
    "MLP",
    "MMoE",
    "MODELS",
    "PLE",
    "EmbeddingEncoder",
    "ExpertPool",
    "FieldMLPEncoder",
    "Gate",
    "PersonalizedGate",
    "SharedBottom",
    "SplitMMoE",
    "Tower",
    "census_released",
    "match_width",
    "mix_logits",
    "param_count",
    "params_of",
    "task_of",
]
