"""Uplift curves and AUUC: causalml's normalization and the project's oracle normalization.

Two AUUC normalizations live here, and numbers from one are never comparable with
the other (see docs/almmta.md, *Uplift curves and AUUC*):

* ``auuc`` / ``qini_score`` follow causalml: the curve gets a 0 row prepended and
  is divided by the absolute value of its last point; the AUUC is the mean of
  the normalized curve, so the straight random line scores exactly 0.5 and an
  oracle scores *more* than 0.5 but not 1; the Qini score is the mean gap
  between the normalized Qini curve and the random line (random = 0).
  scikit-uplift instead evaluates the curve at distinct score thresholds only
  and reports ``(A_model - A_random) / (A_perfect - A_random)`` (random 0,
  perfect 1); h2o bins the predictions first.
* ``normalized_auuc`` is the project's oracle normalization (docs/almmta.md,
  *Grouped AUUC protocol*, step 7): ``(A_model - A_anti) / (A_oracle - A_anti)`` on a cumulative-gain curve with
  tied scores averaged, so a random ranking scores 0.5 in expectation, the
  oracle exactly 1 and the reversed oracle 0. This is scikit-uplift's
  normalization re-centred to 0.5 with the anti-oracle in place of the random
  line (``nauuc = (1 + sklift) / 2`` when the random line is the midpoint).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

# ----------------------------------------------------------------- validation


def _vector(a, name: str, n: int | None = None, dtype=jnp.float32) -> jax.Array:
    a = jnp.asarray(a)
    if a.ndim != 1:
        raise ValueError(f"{name} must be a vector [n]; got shape {a.shape}.")
    if n is not None and a.shape[0] != n:
        raise ValueError(f"{name} has shape {a.shape}; expected ({n},) like the scores.")
    if a.shape[0] == 0:
        raise ValueError(f"{name} is empty; expected at least one unit.")
    return a.astype(dtype)


# ------------------------------------------------------- per-unit uplift curves


def _order(scores: jax.Array) -> jax.Array:
    # Highest score first; ties keep the input order (causalml sorts the same way).
    return jnp.argsort(-scores, stable=True)


@jax.jit
def _curves(scores, outcome, treatment):
    order = _order(scores)
    y, t = outcome[order], treatment[order]
    n_t = jnp.cumsum(t)
    n_c = jnp.cumsum(1.0 - t)
    y_t = jnp.cumsum(y * t)
    y_c = jnp.cumsum(y * (1.0 - t))
    k = jnp.arange(1, scores.shape[0] + 1, dtype=jnp.float32)
    safe = lambda d: jnp.where(d > 0, d, 1.0)
    lift = jnp.where((n_t > 0) & (n_c > 0), y_t / safe(n_t) - y_c / safe(n_c), 0.0)
    gain = lift * k
    qini = jnp.where(n_c > 0, y_t - y_c * n_t / safe(n_c), 0.0)
    zero = jnp.zeros((1,), jnp.float32)
    return jnp.concatenate([zero, gain]), jnp.concatenate([zero, qini])


def _check_unit_inputs(scores, outcome, treatment):
    scores = _vector(scores, "scores")
    n = scores.shape[0]
    outcome = _vector(outcome, "outcome", n)
    treatment = _vector(treatment, "treatment", n)
    if not isinstance(treatment, jax.core.Tracer):
        t = np.asarray(treatment)
        if not np.all((t == 0) | (t == 1)):
            raise ValueError("treatment must hold only 0 and 1.")
    return scores, outcome, treatment


def uplift_curve(scores, outcome, treatment) -> jax.Array:
    """Cumulative uplift gain of units sorted by score, highest first.

    See docs/almmta.md, *Uplift curves and AUUC*.

    ::

      lift(k) = Y_T(k) / N_T(k) - Y_C(k) / N_C(k),    gain(k) = k · lift(k)

    over the top ``k`` units, with ``gain(0) = 0`` prepended and ``lift = 0``
    while one arm of the top ``k`` is empty. Ties keep the input order.

    Args:
      scores: ``[n]`` predicted uplift.
      outcome: ``[n]`` observed outcome.
      treatment: ``[n]`` 0/1 treatment indicator.

    Returns:
      ``[n + 1]`` float32 gain curve (causalml's un-normalized ``get_cumgain``).

    Example:
      >>> [round(float(v), 3) for v in uplift_curve([3., 2., 1., 0.], [1, 0, 0, 0], [1, 0, 1, 0])]
      [0.0, 0.0, 2.0, 1.5, 2.0]
    """
    return _curves(*_check_unit_inputs(scores, outcome, treatment))[0]


def qini_curve(scores, outcome, treatment) -> jax.Array:
    """Qini curve ``qini(k) = Y_T(k) - Y_C(k) · N_T(k) / N_C(k)`` (0 while N_C(k) = 0).

    Args:
      scores: ``[n]`` predicted uplift.
      outcome: ``[n]`` observed outcome.
      treatment: ``[n]`` 0/1 treatment indicator.

    Returns:
      ``[n + 1]`` float32 curve with ``qini(0) = 0`` prepended.

    Example:
      >>> [float(v) for v in qini_curve([3., 2., 1., 0.], [1, 0, 0, 0], [1, 0, 1, 0])]
      [0.0, 0.0, 1.0, 1.0, 1.0]
    """
    return _curves(*_check_unit_inputs(scores, outcome, treatment))[1]


def _normalized_mean(curve: jax.Array, last: jax.Array | None = None) -> jax.Array:
    last = jnp.abs(curve[-1] if last is None else last)
    return jnp.where(last > 0, jnp.mean(curve) / jnp.where(last > 0, last, 1.0), jnp.nan)


def auuc(scores, outcome, treatment) -> jax.Array:
    """causalml's normalized area under the uplift (cumulative gain) curve.

    ::

      AUUC = (n + 1)^{-1} Σ_{k=0..n} gain(k) / |gain(n)|

    The straight random line from 0 to ``gain(n)`` scores exactly 0.5; values
    above 1 occur when the overall effect is negative. This is *not* the
    oracle-normalized score of ``normalized_auuc``.

    Args:
      scores: ``[n]`` predicted uplift.
      outcome: ``[n]`` observed outcome.
      treatment: ``[n]`` 0/1 treatment indicator.

    Returns:
      A float32 scalar; NaN when ``gain(n) = 0``.

    Example:
      >>> round(float(auuc([3., 2., 1., 0.], [1, 0, 0, 0], [1, 0, 1, 0])), 3)
      0.55

    References:
      Zhao et al., causalml ``metrics.auuc_score``, https://github.com/uber/causalml.
    """
    return _normalized_mean(uplift_curve(scores, outcome, treatment))


def qini_score(scores, outcome, treatment) -> jax.Array:
    """causalml's Qini score: mean gap between the normalized Qini curve and the random line.

    ::

      Q = (n + 1)^{-1} Σ_{k=0..n} [qini(k) - (k / n) qini(n)] / |qini(n)|

    A random ranking scores 0 (it is not divided by a perfect curve).

    Args:
      scores: ``[n]`` predicted uplift.
      outcome: ``[n]`` observed outcome.
      treatment: ``[n]`` 0/1 treatment indicator.

    Returns:
      A float32 scalar; NaN when ``qini(n) = 0``.

    Example:
      >>> round(float(qini_score([3., 2., 1., 0.], [1, 0, 0, 0], [1, 0, 1, 0])), 3)
      0.1
    """
    q = qini_curve(scores, outcome, treatment)
    n = q.shape[0] - 1
    random = q[-1] * jnp.arange(n + 1, dtype=jnp.float32) / n
    return _normalized_mean(q - random, q[-1])


# --------------------------------------------- oracle-normalized gain curves


@jax.jit
def _tie_averaged_gain(scores, gains):
    """``G(k)`` for k = 0..n of units sorted by score, each tied block linearly averaged."""
    order = _order(scores)
    s, g = scores[order], gains[order]
    cum = jnp.concatenate([jnp.zeros((1,), gains.dtype), jnp.cumsum(g)])
    # Blocks of equal scores: [start, end) in the sorted order.
    start = jnp.searchsorted(-s, -s, side="left")
    end = jnp.searchsorted(-s, -s, side="right")
    k = jnp.arange(1, s.shape[0] + 1)
    frac = (k - start) / (end - start)
    inner = cum[start] + frac * (cum[end] - cum[start])
    return jnp.concatenate([jnp.zeros((1,), gains.dtype), inner])


def gain_curve(scores, gains) -> jax.Array:
    """Cumulative gain ``G(k) = Σ_{i≤k} g_(i)`` of units sorted by score, ties averaged.

    Within a block of tied scores the curve is the expectation over random
    orders of the block: the straight line between the block's end points.

    Args:
      scores: ``[n]`` ranking scores (higher first).
      gains: ``[n]`` contribution of each unit (a known effect, an IPW-transformed
        outcome, or a cell's ``U_bc · n⁺_bc``).

    Returns:
      ``[n + 1]`` float32 curve with ``G(0) = 0``.

    Example:
      >>> [float(v) for v in gain_curve([1., 1., 0.], [2., 0., 1.])]
      [0.0, 1.0, 2.0, 3.0]
    """
    scores = _vector(scores, "scores")
    gains = _vector(gains, "gains", scores.shape[0])
    return _tie_averaged_gain(scores, gains)


@jax.jit
def _nauuc(scores, gains):
    area = lambda c: jnp.mean(c[1:])
    # nAUUC is unchanged when every gain moves by one constant m (each area moves
    # by m (n + 1) / 2), so the areas are taken over centred gains: their
    # differences then stay accurate in float32 when the gains are close together.
    mean = jnp.mean(gains)
    centred = gains - mean
    a_model = area(_tie_averaged_gain(scores, centred))
    a_oracle = area(_tie_averaged_gain(gains, centred))
    a_anti = area(_tie_averaged_gain(-gains, centred))
    span = a_oracle - a_anti
    # Relative tolerance against the uncentred areas: A(oracle) = A(anti)
    # exactly when all gains are equal.
    shift = mean * (gains.shape[0] + 1) / 2
    scale = jnp.maximum(jnp.abs(a_oracle + shift) + jnp.abs(a_anti + shift), 1e-30)
    ok = span > 1e-6 * scale
    return jnp.where(ok, (a_model - a_anti) / jnp.where(ok, span, 1.0), jnp.nan)


def normalized_auuc(scores, gains) -> jax.Array:
    """Oracle-normalized AUUC: random 0.5 in expectation, oracle 1, reversed oracle 0.

    ::

      A(r) = n^{-1} Σ_{k=1..n} G_r(k),
      nAUUC = (A(model) - A(anti)) / (A(oracle) - A(anti))

    with ``G`` the tie-averaged cumulative gain (``gain_curve``), the oracle
    sorting by ``g`` descending and the anti-oracle ascending. Because
    ``A(oracle) + A(anti) = 2 E[A(random)]``, a random ranking scores 0.5 in
    expectation (docs/almmta.md, *Grouped AUUC protocol*, step 7). Per unit with a known effect, pass ``gains = τ``;
    with observed data, an IPW-transformed outcome ``y (t/e - (1-t)/(1-e))``.
    Adding one constant to every gain leaves nAUUC unchanged, so the areas are
    computed on gains centred at their mean: gains close together (16 ± 0.01)
    still give the float64 value to about 1e-7.

    Args:
      scores: ``[n]`` ranking scores.
      gains: ``[n]`` contributions ``g``.

    Returns:
      A float32 scalar in [0, 1]; NaN when ``A(oracle) = A(anti)`` (all gains equal).

    Example:
      >>> float(normalized_auuc([3., 2., 1.], [1., 0., -1.]))
      1.0
      >>> float(normalized_auuc([1., 2., 3.], [1., 0., -1.]))
      0.0

    References:
      Liu et al., "ALM-MTA", ICLR 2026, https://arxiv.org/abs/2605.08881 (grouped
      AUUC); Gutierrez & Gérardy, "Causal inference and uplift modelling", 2017.
    """
    scores = _vector(scores, "scores")
    gains = _vector(gains, "gains", scores.shape[0])
    return _nauuc(scores, gains)
