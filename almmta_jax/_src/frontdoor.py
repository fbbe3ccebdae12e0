"""Front-door marginalization of the outcome head.

See docs/almmta.md, *Setting and estimand* and *Front-door marginalization*.

With a deterministic learned mediator ``M̂ = φ(x, t)`` the front-door formula

    P(Y=1 | do(T=t), x) = Σ_m P(m | t, x) Σ_{t'} P(Y=1 | m, t', x) P(t' | x)      (FD)

collapses to ``g_FD(x, t) = Σ_{t'} P(t' | x) f(φ(x, t), t', x)``. Two readings:

* ``"ipw_simple"``: ``g(x, t) = σ(f(M̂(x,t), z(t), s(x)))``, the factual head trained
  with IPW (the paper's "ITE head + IPW");
* ``"explicit"``: the sum over ``t'`` runs over the top-K sequences of a fixed
  reference pool ranked by the contrastive match ``ω_ib = max_j q_i·k_bj / T_c``,
  weighted uniformly or by the propensity ratio that turns pool draws from
  ``P(t')`` into draws from ``P(t' | x_i)``.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

from almmta_jax._src.data import JourneyBatch
from almmta_jax._src.networks import check_model

FRONTDOOR_MODES = ("ipw_simple", "explicit")
POOL_WEIGHTS = ("uniform", "propensity")


class ReferencePool(NamedTuple):
    """Cached summaries of R reference sequences ``t'`` (docs/almmta.md, *Front-door marginalization*).

    Attributes:
      treatment: ``[R, d]`` treatment summaries ``z_b``.
      keys: ``[R, L, d_c]`` unit-norm contrastive keys of their touches.
      key_mask: ``[R, L]`` bool valid touches.
      clusters: ``[R, L]`` int treatment clusters of their touches.
    """

    treatment: jax.Array
    keys: jax.Array
    key_mask: jax.Array
    clusters: jax.Array


def frontdoor_sum(
    outcome_probs: jax.Array,
    treatment_weights: jax.Array,
    mediator_weights: jax.Array | None = None,
) -> jax.Array:
    """The front-door sum (FD) for one unit: ``Σ_m P(m|t) Σ_{t'} π(t') P(y | m, t')``.

    Args:
      outcome_probs: ``[K]`` (deterministic mediator) or ``[S, K]`` (``S``
        mediator values) probabilities ``P(y | m, t'_b)``.
      treatment_weights: ``[K]`` weights ``π(t'_b)`` summing to one.
      mediator_weights: ``[S]`` weights ``P(m_s | t)`` summing to one, or
        ``None`` for a deterministic mediator.

    Returns:
      A scalar probability.

    Example:
      >>> import jax.numpy as jnp
      >>> p = jnp.array([[0.2, 0.6], [0.4, 0.8]])
      >>> round(float(frontdoor_sum(p, jnp.array([0.5, 0.5]), jnp.array([0.25, 0.75]))), 4)
      0.55
    """
    if jnp.ndim(treatment_weights) != 1 or jnp.shape(outcome_probs)[-1:] != jnp.shape(
        treatment_weights
    ):
        raise ValueError(
            f"treatment_weights must be [K] matching outcome_probs[..., K]; got "
            f"{jnp.shape(treatment_weights)} and {jnp.shape(outcome_probs)}."
        )
    inner = outcome_probs @ treatment_weights
    if mediator_weights is None:
        if jnp.ndim(outcome_probs) != 1:
            raise ValueError(
                f"outcome_probs must be [K] without mediator_weights; got {jnp.shape(outcome_probs)}."
            )
        return inner
    if jnp.ndim(outcome_probs) != 2 or jnp.shape(mediator_weights) != outcome_probs.shape[:1]:
        raise ValueError(
            f"with mediator_weights [S], outcome_probs must be [S, K]; got "
            f"{jnp.shape(mediator_weights)} and {jnp.shape(outcome_probs)}."
        )
    return mediator_weights @ inner


def build_reference_pool(model, batch: JourneyBatch, clusters: jax.Array) -> ReferencePool:
    """Encodes R reference journeys once (evaluation mode) into a ``ReferencePool``.

    Args:
      model: an ``ALMMTA`` module.
      batch: a ``JourneyBatch`` of the R reference journeys.
      clusters: ``[R, L]`` int treatment clusters of their touches.

    Returns:
      A ``ReferencePool``.
    """
    check_model(model, "build_reference_pool")
    if jnp.shape(clusters) != jnp.shape(batch.touch_mask):
        raise ValueError(
            f"clusters has shape {jnp.shape(clusters)}; expected {jnp.shape(batch.touch_mask)}."
        )
    enc = model.encode(batch)
    return ReferencePool(
        treatment=enc.treatment,
        keys=model.touch_keys(enc.e),
        key_mask=batch.touch_mask,
        clusters=jnp.asarray(clusters, jnp.int32),
    )


def match_scores(query: jax.Array, pool: ReferencePool, temperature: float = 0.1) -> jax.Array:
    """``ω_b = max_j q·k_bj / T_c`` for one query ``[d_c]`` against every pool sequence: ``[R]``."""
    scores = jnp.einsum("d,rld->rl", query, pool.keys) / temperature
    return jnp.max(jnp.where(pool.key_mask, scores, jnp.finfo(scores.dtype).min), axis=1)


def high_match_set(
    query: jax.Array,
    pool: ReferencePool,
    k: int,
    *,
    temperature: float = 0.1,
    log_propensity: jax.Array | None = None,
    log_frequency: jax.Array | None = None,
) -> tuple[jax.Array, jax.Array]:
    """The top-K reference sequences ``S_i`` by match score and their weights ``π_i``.

    With ``log_propensity`` (``[C]``, ``log ê(c | x_i)``) and ``log_frequency``
    (``[C]``, ``log p̂(c)``)::

        π_ib ∝ exp(n_b^{-1} Σ_j [log ê(c_bj | x_i) − log p̂(c_bj)])

    otherwise ``π`` is uniform over ``S_i``.

    Args:
      query: ``[d_c]`` the unit's contrastive query (from the full sequence).
      pool: a ``ReferencePool`` with R >= k sequences.
      k: size of the high-match set (k = R: no contrastive restriction).
      temperature: ``T_c``.
      log_propensity: optional ``[C]``.
      log_frequency: optional ``[C]``.

    Returns:
      ``(indices [k], weights [k])``.
    """
    r = pool.treatment.shape[0]
    if not 1 <= k <= r:
        raise ValueError(f"k must be in [1, R={r}], got {k}.")
    _, idx = jax.lax.top_k(match_scores(query, pool, temperature), k)
    if log_propensity is None:
        return idx, jnp.full((k,), 1.0 / k, jnp.float32)
    if log_frequency is None or jnp.shape(log_frequency) != jnp.shape(log_propensity):
        raise ValueError(
            "log_frequency [C] is required with log_propensity [C]; got "
            f"{jnp.shape(log_frequency) if log_frequency is not None else None} and "
            f"{jnp.shape(log_propensity)}."
        )
    c = pool.clusters[idx]
    m = pool.key_mask[idx].astype(jnp.float32)
    log_ratio = log_propensity[c] - log_frequency[c]
    score = jnp.sum(m * log_ratio, axis=1) / jnp.maximum(jnp.sum(m, axis=1), 1.0)
    return idx, jax.nn.softmax(score)
