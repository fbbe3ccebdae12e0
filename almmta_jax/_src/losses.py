"""The ALM-MTA losses: outcome, proxy, adversary and contrastive terms.

See docs/almmta.md, *Losses and objective*.

All functions are pure maps from arrays to a scalar (and, for InfoNCE, an
accuracy); masks are explicit, and an empty mask gives a loss of 0 rather than
a NaN.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import optax


def _check_same(name_a, a, name_b, b):
    if jnp.shape(a) != jnp.shape(b):
        raise ValueError(
            f"{name_a} has shape {jnp.shape(a)} but {name_b} has shape {jnp.shape(b)}; "
            "they must match."
        )


def outcome_loss(logits: jax.Array, y: jax.Array, ipw: jax.Array) -> jax.Array:
    """Self-normalized IPW binary cross-entropy of the outcome head (docs/almmta.md, *Losses and objective*).

    ``L_y = Σ_i ipw_i BCE(logit_i, y_i) / Σ_i ipw_i``.

    Args:
      logits: ``[B]`` outcome logits.
      y: ``[B]`` binary outcomes.
      ipw: ``[B]`` non-negative inverse-propensity weights.

    Returns:
      A scalar.

    Example:
      >>> import jax.numpy as jnp
      >>> round(float(outcome_loss(jnp.zeros(2), jnp.array([0., 1.]), jnp.ones(2))), 4)
      0.6931
    """
    _check_same("logits", logits, "y", y)
    _check_same("logits", logits, "ipw", ipw)
    bce = optax.sigmoid_binary_cross_entropy(logits, y.astype(logits.dtype))
    return jnp.sum(ipw * bce) / jnp.maximum(jnp.sum(ipw), 1e-12)


def proxy_loss(proxy_logits: jax.Array, yp: jax.Array, yp_mask: jax.Array) -> jax.Array:
    """Per-touchpoint soft-target BCE of the proxy head on uploading journeys.

    See docs/almmta.md, *Losses and objective*.

    ``L_p = mean_{(i,j): yp_mask_ij} mean_p BCE(logit_ijp, y'_ijp)``; 0 when no
    position is masked in.

    Args:
      proxy_logits: ``[B, L, P]`` logits of ``ŷ'``.
      yp: ``[B, L, P]`` soft targets in [0, 1].
      yp_mask: ``[B, L]`` bool, where ``y'`` is defined.

    Returns:
      A scalar.
    """
    _check_same("proxy_logits", proxy_logits, "yp", yp)
    if jnp.shape(yp_mask) != jnp.shape(yp)[:2]:
        raise ValueError(
            f"yp_mask has shape {jnp.shape(yp_mask)}; expected {jnp.shape(yp)[:2]} (yp is [B, L, P])."
        )
    bce = jnp.mean(optax.sigmoid_binary_cross_entropy(proxy_logits, yp), axis=-1)
    w = yp_mask.astype(bce.dtype)
    return jnp.sum(w * bce) / jnp.maximum(jnp.sum(w), 1.0)


def _row_mean(values: jax.Array, weights: jax.Array | None, name: str) -> jax.Array:
    """Mean over rows, or ``sum_i w_i v_i / sum_i w_i`` (0 when every weight is 0)."""
    if weights is None:
        return jnp.mean(values)
    _check_same(name, values, "weights", weights)
    weights = weights.astype(values.dtype)
    total = jnp.sum(weights)
    return jnp.where(total > 0, jnp.sum(weights * values) / jnp.where(total > 0, total, 1.0), 0.0)


def adversary_loss(
    d_logits: jax.Array, y: jax.Array, weights: jax.Array | None = None
) -> jax.Array:
    """The discriminator's loss ``L_adv = mean_i BCE(D(M_i), y_i)`` (docs/almmta.md, *Losses and objective*).

    Args:
      d_logits: ``[B]`` discriminator logits.
      y: ``[B]`` outcomes.
      weights: optional ``[B]`` row weights, e.g. 1 for real journeys and 0 for
        the all-padding rows that fill a last streamed batch, which then do not
        train the adversary (a weighted mean; 0 when every weight is 0).

    Returns:
      The scalar loss.

    Example:
      >>> import jax.numpy as jnp
      >>> full = adversary_loss(jnp.zeros(2), jnp.array([1.0, 0.0]))
      >>> padded = adversary_loss(jnp.zeros(3), jnp.array([1.0, 0.0, 0.0]), jnp.array([1.0, 1.0, 0.0]))
      >>> bool(jnp.isclose(full, padded))
      True
    """
    _check_same("d_logits", d_logits, "y", y)
    bce = optax.sigmoid_binary_cross_entropy(d_logits, y.astype(d_logits.dtype))
    return _row_mean(bce, weights, "d_logits")


def confusion_loss(d_logits: jax.Array, weights: jax.Array | None = None) -> jax.Array:
    """The mediator's confusion objective ``mean_i BCE(D(M_i), 1/2)``.

    See docs/almmta.md, *Gradient reversal and the min-max step*.

    ``weights`` as in ``adversary_loss``.
    """
    bce = optax.sigmoid_binary_cross_entropy(d_logits, jnp.full_like(d_logits, 0.5))
    return _row_mean(bce, weights, "d_logits")


def info_nce_loss(
    query: jax.Array,
    keys: jax.Array,
    positive: jax.Array,
    key_valid: jax.Array,
    queue: jax.Array,
    queue_valid: jax.Array,
    temperature: float = 0.1,
) -> tuple[jax.Array, jax.Array]:
    """Multi-positive InfoNCE with in-batch and queued negatives (docs/almmta.md, *Losses and objective*).

    For every positive pair ``(i, j)``::

        ℓ_ij = −log e^{q_i·k_ij/T} / (e^{q_i·k_ij/T} + Σ_{n ∈ N_i} e^{q_i·k_n/T})

    where ``N_i`` holds every valid key of the other journeys in the batch and
    every valid queued key. The loss is the mean of ``ℓ_ij`` over positives (0
    without positives). The accuracy is the fraction of journeys with positives
    whose best-matching valid touch (largest ``q_i·k_ij``) is a positive: the
    ranking the top-K high-match selection relies on. (Beating every negative
    is uninformative here: the same item shown in another journey gives a
    near-identical key.)

    Args:
      query: ``[B, d_c]`` unit-norm queries.
      keys: ``[B, L, d_c]`` unit-norm touch keys (gradient flows through them).
      positive: ``[B, L]`` bool, the positive pairs.
      key_valid: ``[B, L]`` bool, keys usable as negatives for other journeys.
      queue: ``[Q, d_c]`` queued keys of the momentum encoder (no gradient).
      queue_valid: ``[Q]`` bool, filled queue slots.
      temperature: ``T_c``.

    Returns:
      ``(loss, accuracy)`` scalars.

    References:
      van den Oord, Li & Vinyals, "Representation Learning with Contrastive
      Predictive Coding", https://arxiv.org/abs/1807.03748, 2018; He et al.,
      "Momentum Contrast for Unsupervised Visual Representation Learning",
      https://arxiv.org/abs/1911.05722, 2019.
    """
    b, l, dc = keys.shape
    if jnp.shape(query) != (b, dc):
        raise ValueError(
            f"query has shape {jnp.shape(query)}; expected {(b, dc)} from keys {keys.shape}."
        )
    for name, arr in (("positive", positive), ("key_valid", key_valid)):
        if jnp.shape(arr) != (b, l):
            raise ValueError(f"{name} has shape {jnp.shape(arr)}; expected {(b, l)}.")
    if jnp.ndim(queue) != 2 or queue.shape[1] != dc or jnp.shape(queue_valid) != queue.shape[:1]:
        raise ValueError(
            f"queue must be [Q, {dc}] with queue_valid [Q]; got {jnp.shape(queue)} and "
            f"{jnp.shape(queue_valid)}."
        )
    neg_inf = jnp.finfo(query.dtype).min
    pos_scores = jnp.einsum("bd,bld->bl", query, keys) / temperature
    # In-batch negatives: all valid keys of the other journeys.
    batch_scores = jnp.einsum("bd,cld->bcl", query, keys) / temperature
    other = jnp.logical_not(jnp.eye(b, dtype=bool))[:, :, None] & key_valid[None, :, :]
    batch_scores = jnp.where(other, batch_scores, neg_inf).reshape(b, b * l)
    queue_scores = (query @ jax.lax.stop_gradient(queue).T) / temperature
    queue_scores = jnp.where(queue_valid[None, :], queue_scores, neg_inf)
    neg = jnp.concatenate([batch_scores, queue_scores], axis=1)
    neg_lse = jax.nn.logsumexp(neg, axis=1)
    per_pair = jnp.logaddexp(pos_scores, neg_lse[:, None]) - pos_scores
    w = positive.astype(query.dtype)
    count = jnp.sum(w)
    loss = jnp.sum(w * per_pair) / jnp.maximum(count, 1.0)
    # Accuracy: does the best-matching touch of each journey with positives hit one?
    best = jnp.argmax(jnp.where(key_valid, pos_scores, neg_inf), axis=1)
    has_pos = jnp.any(positive, axis=1)
    hit = jnp.take_along_axis(positive, best[:, None], axis=1)[:, 0] & has_pos
    accuracy = jnp.sum(hit) / jnp.maximum(jnp.sum(has_pos), 1)
    return loss, accuracy.astype(query.dtype)
