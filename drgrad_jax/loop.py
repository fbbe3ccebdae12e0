"""The training loop shared by ``drgrad_jax`` and ``almmta_jax``: a run as a function of a key.

A package supplies a ``Recipe`` (its state's ``init``, one ``step``, an
``evaluate``); ``Trainer`` adds the batch order, epochs under ``lax.scan``,
the non-finite guard, progress, checkpoints and data parallelism.
``ProgressBar`` is the progress hook both packages' trainers use (a tqdm bar
fed at chunk boundaries), ``progress_enabled`` the rule for when it shows, and
``progress_rows`` the same for a loop on the host (a benchmark's rows).

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
from drgrad_jax._src.progress import (
    ProgressBar,
    chain_hooks,
    progress_enabled,
    progress_rows,
)

__all__ = [
    "Compiled",
    "Recipe",
    "ProgressBar",
    "Trainer",
    "batch_order",
    "chain_hooks",
    "config_signature",
    "is_finite",
    "keep_if_finite",
    "progress_enabled",
    "progress_rows",
]
