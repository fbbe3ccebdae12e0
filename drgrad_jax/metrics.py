"""Metrics for multi-task recommendation: exact ROC AUC, log-loss, group AUC.

Example:
  >>> import jax.numpy as jnp
  >>> from drgrad_jax import metrics
  >>> float(metrics.auc(jnp.array([0, 1, 1]), jnp.array([0.2, 0.9, 0.1])))
  0.5
"""

from drgrad_jax._src.metrics import auc, gauc, log_loss

__all__ = ["auc", "gauc", "log_loss"]
