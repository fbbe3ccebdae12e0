"""The training loop shared by ``drgrad_jax`` and ``almmta_jax``: a run as a function of a key.

A package supplies a ``Recipe`` (its state's ``init``, one ``step``, an
``evaluate``); ``Trainer`` adds the batch order, epochs under ``lax.scan``,
the non-finite guard, progress, checkpoints and data parallelism.

Example:
  >>> import jax
  >>> from drgrad_jax import loop
  >>> loop.batch_order(jax.random.key(0), 3, 10, 5).shape  # epoch 3, two batches of 5
  (2, 5)
"""

from drgrad_jax._src.loop import (
    Compiled,
    Recipe,
    Trainer,
    batch_order,
    config_signature,
    is_finite,
    keep_if_finite,
)

__all__ = [
    "Compiled",
    "Recipe",
    "Trainer",
    "batch_order",
    "config_signature",
    "is_finite",
    "keep_if_finite",
]
