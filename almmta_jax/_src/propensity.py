"""Sequence propensity and stabilized IPW weights (see docs/almmta.md, *Propensity and stabilized weights*).

A separate, frozen model ``ê(c | x)`` (an MLP softmax over treatment clusters)
is fitted by cross-entropy on every training touch; a journey's weight is the
geometric mean over its touches of the stabilized ratio ``p̂(c) / ê(c | x)``,
clipped to percentiles and normalized to mean 1.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from almmta_jax._src.fitting import fit_full_batch
from almmta_jax._src.networks import elu_mlp


class PropensityModel(nnx.Module):
    """``ê(c | x) = softmax(MLP(x))_c`` over ``num_clusters`` treatment clusters.

    Args:
      d_x: width of the user features.
      num_clusters: number of treatment clusters ``C``.
      hidden: hidden width of the MLP.
      rngs: ``nnx.Rngs`` for initialization.

    Example:
      >>> import jax.numpy as jnp
      >>> from flax import nnx
      >>> m = PropensityModel(3, 5, rngs=nnx.Rngs(0))
      >>> m(jnp.zeros((2, 3))).shape
      (2, 5)
    """

    def __init__(self, d_x: int, num_clusters: int, hidden: int = 64, *, rngs: nnx.Rngs):
        self.num_clusters = num_clusters
        self.mlp = elu_mlp(d_x, (hidden, num_clusters), rngs=rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        """Log-probabilities ``log ê(c | x)``: ``[..., d_x] -> [..., C]``."""
        return jax.nn.log_softmax(self.mlp(x), axis=-1)


def _check_touches(clusters, touch_mask, num_clusters=None):
    if jnp.ndim(clusters) != 2 or jnp.shape(touch_mask) != jnp.shape(clusters):
        raise ValueError(
            f"clusters must be [N, L] and touch_mask the same shape; got {jnp.shape(clusters)} "
            f"and {jnp.shape(touch_mask)}."
        )
    if not jnp.issubdtype(jnp.result_type(clusters), jnp.integer):
        raise TypeError(f"clusters must be integer ids; got dtype {jnp.result_type(clusters)}.")
    if num_clusters is not None and num_clusters < 1:
        raise ValueError(f"num_clusters must be >= 1, got {num_clusters}.")


def cluster_counts(clusters: jax.Array, touch_mask: jax.Array, num_clusters: int) -> jax.Array:
    """``n[i, c]``: how many valid touches of journey ``i`` belong to cluster ``c``."""
    _check_touches(clusters, touch_mask, num_clusters)
    one_hot = jax.nn.one_hot(clusters, num_clusters, dtype=jnp.float32)
    return jnp.einsum("nl,nlc->nc", touch_mask.astype(jnp.float32), one_hot)


def cluster_log_frequency(
    clusters: jax.Array, touch_mask: jax.Array, num_clusters: int
) -> jax.Array:
    """``log p̂(c)``: the log empirical frequency of each cluster over all valid touches."""
    counts = jnp.sum(cluster_counts(clusters, touch_mask, num_clusters), axis=0)
    return jnp.log(jnp.maximum(counts, 0.5) / jnp.maximum(jnp.sum(counts), 1.0))


def fit_propensity(
    x: jax.Array,
    clusters: jax.Array,
    touch_mask: jax.Array,
    num_clusters: int,
    *,
    key: jax.Array,
    steps: int = 500,
    learning_rate: float = 1e-2,
    hidden: int = 64,
) -> PropensityModel:
    """Fits ``ê(c | x)`` by full-batch cross-entropy on every valid touch.

    Args:
      x: ``[N, d_x]`` user features.
      clusters: ``[N, L]`` int cluster ids of the touches.
      touch_mask: ``[N, L]`` bool valid touches.
      num_clusters: ``C``.
      key: initialization key.
      steps: Adam steps (one ``lax.scan``).
      learning_rate: Adam learning rate.
      hidden: MLP hidden width.

    Returns:
      A fitted ``PropensityModel``.
    """
    _check_touches(clusters, touch_mask, num_clusters)
    if jnp.ndim(x) != 2 or x.shape[0] != clusters.shape[0]:
        raise ValueError(f"x must be [N, d_x] with N={clusters.shape[0]}; got {jnp.shape(x)}.")
    model = PropensityModel(x.shape[1], num_clusters, hidden, rngs=nnx.Rngs(key))
    graphdef, params = nnx.split(model)
    counts = cluster_counts(clusters, touch_mask, num_clusters)
    total = jnp.maximum(jnp.sum(counts), 1.0)

    def loss_fn(p):
        log_e = nnx.merge(graphdef, p)(x)
        return -jnp.sum(counts * log_e) / total

    params = fit_full_batch(loss_fn, params, steps=steps, learning_rate=learning_rate)
    return nnx.merge(graphdef, params)


def ipw_weights(
    log_propensity: jax.Array,
    clusters: jax.Array,
    touch_mask: jax.Array,
    log_frequency: jax.Array,
    *,
    clip_percentiles: tuple[float, float] = (1.0, 99.0),
) -> jax.Array:
    """Clipped, self-normalized stabilized IPW weights of whole journeys.

    See docs/almmta.md, *Propensity and stabilized weights*.

    ``ipw_i = exp(n_i^{-1} Σ_j [log p̂(c_ij) − log ê(c_ij | x_i)])``, clipped to
    the given percentiles over journeys and divided by their mean. Journeys
    without touches get the ratio 1 before clipping.

    Args:
      log_propensity: ``[N, C]`` ``log ê(c | x_i)``.
      clusters: ``[N, L]`` int cluster ids.
      touch_mask: ``[N, L]`` bool.
      log_frequency: ``[C]`` ``log p̂(c)``.
      clip_percentiles: lower and upper percentiles for clipping.

    Returns:
      ``[N]`` float32 weights with mean 1.

    Example:
      >>> import jax.numpy as jnp
      >>> w = ipw_weights(jnp.log(jnp.array([[0.5, 0.5], [0.9, 0.1]])),
      ...                 jnp.array([[0, 1], [0, 0]]), jnp.ones((2, 2), bool),
      ...                 jnp.log(jnp.array([0.5, 0.5])), clip_percentiles=(0., 100.))
      >>> [round(float(v), 4) for v in w]
      [1.2857, 0.7143]
    """
    _check_touches(clusters, touch_mask)
    c = jnp.shape(log_propensity)[-1]
    if jnp.shape(log_propensity) != (clusters.shape[0], c) or jnp.shape(log_frequency) != (c,):
        raise ValueError(
            f"log_propensity must be [N={clusters.shape[0]}, C] and log_frequency [C]; got "
            f"{jnp.shape(log_propensity)} and {jnp.shape(log_frequency)}."
        )
    lo, hi = clip_percentiles
    if not 0.0 <= lo <= hi <= 100.0:
        raise ValueError(
            f"clip_percentiles must satisfy 0 <= lo <= hi <= 100, got {clip_percentiles}."
        )
    log_e = jnp.take_along_axis(log_propensity, clusters, axis=1)
    log_ratio = log_frequency[clusters] - log_e
    m = touch_mask.astype(jnp.float32)
    n_i = jnp.sum(m, axis=1)
    mean_log = jnp.sum(m * log_ratio, axis=1) / jnp.maximum(n_i, 1.0)
    w = jnp.exp(jnp.where(n_i > 0, mean_log, 0.0))
    w = jnp.clip(w, jnp.percentile(w, lo), jnp.percentile(w, hi))
    return (w / jnp.mean(w)).astype(jnp.float32)
