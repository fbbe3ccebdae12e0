"""Ranking and calibration metrics: exact ROC AUC, log-loss and group AUC (gAUC).

Every metric is a pure, jit-able and vmap-able function of arrays. AUC is exact
(the Mann-Whitney statistic computed by sorting, ties counted one half), not a
thresholded approximation.

Single-class rule: an AUC is undefined when the positives or the negatives have
zero total weight. Then ``auc`` returns NaN (it never silently returns 0.5), and
``gauc`` leaves that group out; ``gauc`` is NaN when no group has both classes.
A NaN score makes the AUC NaN as well.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np


def _as_vector(x, name: str, n: int | None = None) -> jax.Array:
    x = jnp.asarray(x)
    if x.ndim != 1:
        raise ValueError(f"{name} must be a vector [n]; got shape {x.shape}.")
    if n is not None and x.shape[0] != n:
        raise ValueError(f"{name} has shape {x.shape}; expected [{n}] like labels.")
    return x


def _check_binary(labels: jax.Array) -> None:
    """Checks labels are 0/1 when their values are known (not under a trace)."""
    if isinstance(labels, jax.core.Tracer):
        return
    values = np.unique(np.asarray(labels))
    if not np.all(np.isin(values, [0, 1])):
        raise ValueError(
            f"labels must be binary 0/1 (or bool); got values {values[:5].tolist()}"
            f"{' ...' if values.size > 5 else ''}."
        )


def _host_ranks(scores):
    """Dense float32 ranks of concrete float64 scores (NaN kept), so float32 keeps their order.

    Exact for fewer than 2**24 distinct scores; beyond that the ranks round.
    """
    if isinstance(scores, jax.core.Tracer) or np.asarray(scores).dtype != np.float64:
        return scores
    s = np.asarray(scores)
    finite = ~np.isnan(s)
    ranks = np.full(s.shape, np.nan, np.float32)
    ranks[finite] = np.unique(s[finite], return_inverse=True)[1].reshape(-1)
    return ranks


def _validate(labels, scores, weights):
    scores = _host_ranks(scores)
    labels = _as_vector(labels, "labels")
    n = labels.shape[0]
    if n == 0:
        raise ValueError("labels is empty; an AUC needs at least one positive and one negative.")
    scores = _as_vector(scores, "scores", n)
    if not jnp.issubdtype(scores.dtype, jnp.floating):
        scores = scores.astype(jnp.float32)
    _check_binary(labels)
    if weights is None:
        weights = jnp.ones((n,), jnp.float32)
    else:
        weights = _as_vector(weights, "weights", n).astype(jnp.float32)
        if not isinstance(weights, jax.core.Tracer) and bool(jnp.any(weights < 0)):
            i = int(jnp.argmax(weights < 0))
            raise ValueError(f"weights must be >= 0; weights[{i}] = {float(weights[i])}.")
    pos = labels.astype(jnp.float32) > 0.5
    return pos, scores, weights


@jax.jit
def _grouped_auc_parts(pos, scores, weights, group_ids):
    """Per-group Mann-Whitney AUC (garbage where undefined) and class weights.

    Sorts by (group, score); for each positive, the negative weight of its
    group strictly below its score plus half the tied negative weight is
    summed. Groups are renumbered densely in sorted order, so outputs have
    length ``n`` with unused trailing slots zero.
    """
    n = scores.shape[0]
    order = jnp.lexsort((scores, group_ids))
    s = scores[order]
    g = group_ids[order]
    p = pos[order]
    w = weights[order]
    w_pos = jnp.where(p, w, 0.0)
    w_neg = jnp.where(p, 0.0, w)
    idx = jnp.arange(n)
    first = idx == 0
    prev_g = jnp.roll(g, 1)
    prev_s = jnp.roll(s, 1)
    new_group = first | (g != prev_g)
    new_run = new_group | (s != prev_s)
    group_id = jnp.cumsum(new_group) - 1
    run_id = jnp.cumsum(new_run) - 1
    # Exclusive cumulative negative weight at each position, in sorted order.
    cum_neg = jnp.cumsum(w_neg) - w_neg
    run_start = jax.ops.segment_min(idx, run_id, num_segments=n)[run_id]
    group_start = jax.ops.segment_min(idx, group_id, num_segments=n)[group_id]
    neg_below = cum_neg[run_start] - cum_neg[group_start]
    neg_tied = jax.ops.segment_sum(w_neg, run_id, num_segments=n)[run_id]
    tot_pos = jax.ops.segment_sum(w_pos, group_id, num_segments=n)
    tot_neg = jax.ops.segment_sum(w_neg, group_id, num_segments=n)
    count = jax.ops.segment_sum(w, group_id, num_segments=n)
    # Normalising each term by its group's totals before summing keeps float32
    # sums of O(n) terms in [0, 1] (exact counts would reach n^2 / 4).
    neg_g = tot_neg[group_id]
    pos_g = tot_pos[group_id]
    frac_below = (neg_below + 0.5 * neg_tied) / jnp.where(neg_g > 0, neg_g, 1.0)
    contrib = (w_pos / jnp.where(pos_g > 0, pos_g, 1.0)) * frac_below
    auc_g = jax.ops.segment_sum(contrib, group_id, num_segments=n)
    return auc_g, tot_pos, tot_neg, count


def auc(labels, scores, weights=None) -> jax.Array:
    """Exact area under the ROC curve, with ties counted one half.

    The Mann-Whitney form, with optional per-example weights ``w``::

      AUC = sum_{i: y_i=1} sum_{j: y_j=0} w_i w_j ([s_i > s_j] + 0.5 [s_i = s_j])
            / (sum_{i: y_i=1} w_i * sum_{j: y_j=0} w_j)

    computed in ``O(n log n)`` by one sort. Argument order follows
    ``sklearn.metrics.roc_auc_score(y_true, y_score)``. Jit-able and vmap-able.

    Args:
      labels: ``[n]`` binary labels (0/1 ints, floats or bools). Checked to be
        binary when concrete; under a trace, values above 0.5 count as positive.
      scores: ``[n]`` scores, larger meaning more likely positive (logits and
        probabilities give the same AUC).
      weights: optional ``[n]`` non-negative example weights.

    Concrete float64 scores are replaced by their ranks on the host before the
    float32 computation, so scores differing by 1e-9 are not ties (exact below
    2**24 distinct scores). Under a trace scores are compared in float32.

    Returns:
      A float32 scalar in ``[0, 1]``; NaN when one class has zero total weight
      (the single-class rule) or when a score is NaN.

    Raises:
      ValueError: shapes are not matching vectors, ``labels`` is empty,
        concrete labels are not binary, or a concrete weight is negative.

    Example:
      >>> import jax.numpy as jnp
      >>> float(auc(jnp.array([0, 0, 1, 1]), jnp.array([0.1, 0.4, 0.35, 0.8])))
      0.75
      >>> float(auc(jnp.array([0, 1]), jnp.array([0.5, 0.5])))
      0.5

    References:
      Hanley & McNeil, "The meaning and use of the area under a receiver operating
      characteristic (ROC) curve", Radiology, 1982.
    """
    pos, scores, weights = _validate(labels, scores, weights)
    return _auc(pos, scores, weights)


@jax.jit
def _auc(pos, scores, weights):
    groups = jnp.zeros(scores.shape, jnp.int32)
    auc_g, tot_pos, tot_neg, _ = _grouped_auc_parts(pos, scores, weights, groups)
    bad = (tot_pos[0] * tot_neg[0] <= 0) | jnp.any(jnp.isnan(scores))
    return jnp.where(bad, jnp.nan, auc_g[0]).astype(jnp.float32)


def gauc(labels, scores, group_ids, weights=None) -> jax.Array:
    """Group AUC: per-user AUC averaged with weights equal to each user's impressions.

    ::

      gAUC = sum_u n_u AUC_u / sum_u n_u

    over the users ``u`` whose examples contain both classes, with ``n_u`` the
    user's impression count (or total example weight when ``weights`` is
    given). Users with a single class are left out, as in the usual gAUC.

    Args:
      labels: ``[n]`` binary labels.
      scores: ``[n]`` scores.
      group_ids: ``[n]`` integer user (group) ids, any values.
      weights: optional ``[n]`` non-negative example weights.

    Returns:
      A float32 scalar; NaN when no group has both classes or a score is NaN.

    Raises:
      ValueError: mismatched shapes, empty input, non-binary concrete labels, or
        non-integer ``group_ids``.

    Example:
      >>> import jax.numpy as jnp
      >>> y = jnp.array([0, 1, 0, 1, 1])
      >>> s = jnp.array([0.1, 0.9, 0.8, 0.2, 0.5])
      >>> u = jnp.array([0, 0, 1, 1, 2])
      >>> float(gauc(y, s, u))  # user 0: AUC 1, user 1: AUC 0, user 2 skipped
      0.5

    References:
      Zhou et al., "Deep Interest Network for Click-Through Rate Prediction",
      KDD 2018, https://arxiv.org/abs/1706.06978.
    """
    pos, scores, weights = _validate(labels, scores, weights)
    group_ids = _as_vector(group_ids, "group_ids", scores.shape[0])
    if not jnp.issubdtype(group_ids.dtype, jnp.integer):
        raise TypeError(f"group_ids must be integers; got dtype {group_ids.dtype}.")
    return _gauc(pos, scores, weights, group_ids)


@jax.jit
def _gauc(pos, scores, weights, group_ids):
    per_group, tot_pos, tot_neg, count = _grouped_auc_parts(pos, scores, weights, group_ids)
    valid = tot_pos * tot_neg > 0
    w = jnp.where(valid, count, 0.0)
    total = jnp.sum(w)
    value = jnp.sum(w * per_group) / jnp.where(total > 0, total, 1.0)
    bad = (total <= 0) | jnp.any(jnp.isnan(scores))
    return jnp.where(bad, jnp.nan, value).astype(jnp.float32)


def log_loss(labels, scores, weights=None, *, from_logits: bool = False, eps: float = 1e-7):
    """Mean binary cross-entropy (log-loss), optionally weighted.

    ::

      L = - sum_i w_i (y_i log p_i + (1 - y_i) log(1 - p_i)) / sum_i w_i

    With ``from_logits=True`` the scores are logits and the loss is computed
    stably as ``softplus(z) - y z``; otherwise they are probabilities clipped to
    ``[eps, 1 - eps]`` (as sklearn does).

    Args:
      labels: ``[n]`` labels in ``[0, 1]`` (soft labels allowed).
      scores: ``[n]`` probabilities, or logits with ``from_logits=True``.
      weights: optional ``[n]`` non-negative example weights.
      from_logits: whether ``scores`` are logits.
      eps: probability clipping.

    Returns:
      A float32 scalar.

    Example:
      >>> import jax.numpy as jnp
      >>> round(float(log_loss(jnp.array([1.0, 0.0]), jnp.array([0.5, 0.5]))), 4)
      0.6931
    """
    labels = _as_vector(labels, "labels").astype(jnp.float32)
    n = labels.shape[0]
    if n == 0:
        raise ValueError("labels is empty; log-loss needs at least one example.")
    scores = _as_vector(scores, "scores", n).astype(jnp.float32)
    w = jnp.ones((n,), jnp.float32) if weights is None else _as_vector(weights, "weights", n)
    w = w.astype(jnp.float32)
    if from_logits:
        per = jax.nn.softplus(scores) - labels * scores
    else:
        p = jnp.clip(scores, eps, 1.0 - eps)
        per = -(labels * jnp.log(p) + (1.0 - labels) * jnp.log1p(-p))
    return jnp.sum(w * per) / jnp.sum(w)
