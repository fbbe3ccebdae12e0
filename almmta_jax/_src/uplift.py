"""Uplift curves and AUUC: causalml's, scikit-uplift's and the project's oracle normalization.

Two AUUC normalizations live here, and numbers from one are never comparable with
the other (see docs/almmta.md, *Uplift curves and AUUC*):

* ``auuc`` / ``qini_score`` follow causalml: the curve gets a 0 row prepended and
  is divided by the absolute value of its last point; the AUUC is the mean of
  the normalized curve, so the straight random line scores exactly 0.5 and an
  oracle scores *more* than 0.5 but not 1; the Qini score is the mean gap
  between the normalized Qini curve and the random line (random = 0).
  causalml's normalization is the default (``normalize="causalml"``).
  scikit-uplift instead evaluates the curve at distinct score thresholds only
  and reports ``(A_model - A_random) / (A_perfect - A_random)`` (random 0,
  perfect 1): ``normalize="sklift"``. h2o bins the predictions first.
* ``normalized_auuc`` is the project's oracle normalization (docs/almmta.md,
  *Grouped AUUC protocol*, step 7): ``(A_model - A_anti) / (A_oracle - A_anti)`` on a cumulative-gain curve with
  tied scores averaged, so a random ranking scores 0.5 in expectation, the
  oracle exactly 1 and the reversed oracle 0. This is scikit-uplift's
  normalization re-centred to 0.5 with the anti-oracle in place of the random
  line (``nauuc = (1 + sklift) / 2`` when the random line is the midpoint).
"""

from __future__ import annotations

import functools

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


# ------------------------------------------- scikit-uplift's normalization

_NORMALIZATIONS = ("causalml", "sklift")


def _check_normalize(normalize) -> str:
    if normalize not in _NORMALIZATIONS:
        raise ValueError(
            f"normalize must be one of {_NORMALIZATIONS} (the default 'causalml' is the "
            f"project's own); got {normalize!r}."
        )
    return normalize


@functools.partial(jax.jit, static_argnames="kind")
def _threshold_curve(scores, outcome, treatment, kind):
    """scikit-uplift's curve at every k = 0..n, straight between distinct-score thresholds."""
    order = _order(scores)
    s, y, t = scores[order], outcome[order], treatment[order]
    k = jnp.arange(1, s.shape[0] + 1, dtype=jnp.float32)
    n_t = jnp.cumsum(t)
    n_c = k - n_t
    y_t = jnp.cumsum(y * t)
    y_c = jnp.cumsum(y * (1.0 - t))
    # An empty arm contributes 0 to its own term only (not to the whole lift).
    div = lambda a, b: jnp.where(b > 0, a / jnp.where(b > 0, b, 1.0), 0.0)
    if kind == "gain":
        c = (div(y_t, n_t) - div(y_c, n_c)) * k
    else:
        c = y_t - y_c * div(n_t, n_c)
    c = jnp.concatenate([jnp.zeros((1,), jnp.float32), c])
    # The curve is only defined where the score changes; inside a block of ties
    # it is the straight segment between the block's end points.
    start = jnp.searchsorted(-s, -s, side="left")
    end = jnp.searchsorted(-s, -s, side="right")
    frac = (k - start) / (end - start)
    inner = c[start] + frac * (c[end] - c[start])
    return jnp.concatenate([jnp.zeros((1,), jnp.float32), inner])


@functools.partial(jax.jit, static_argnames="kind")
def _sklift_score(scores, outcome, treatment, kind):
    y, t = outcome, treatment
    if kind == "gain":
        # Ranking that puts treated responders and untreated non-responders first.
        control_responders = jnp.sum(y * (1.0 - t))
        treated_silent = jnp.sum((1.0 - y) * t)
        tie_break = jnp.where(control_responders > treated_silent, y, t)
        perfect = 2.0 * (y == t) + tie_break
    else:
        perfect = y * t - y * (1.0 - t)
    area = lambda c: jnp.sum(c[1:] + c[:-1]) / 2
    model = _threshold_curve(scores, y, t, kind)
    best = _threshold_curve(perfect, y, t, kind)
    base = best[-1] * (scores.shape[0]) / 2
    span = area(best) - base
    return jnp.where(span != 0, (area(model) - base) / jnp.where(span != 0, span, 1.0), jnp.nan)


def _check_binary_outcome(outcome):
    if not isinstance(outcome, jax.core.Tracer):
        y = np.asarray(outcome)
        if not np.all((y == 0) | (y == 1)):
            raise ValueError("outcome must hold only 0 and 1 with normalize='sklift'.")


def _sklift(scores, outcome, treatment, kind):
    """scikit-uplift's score of one curve kind, after the shared input checks."""
    args = _check_unit_inputs(scores, outcome, treatment)
    _check_binary_outcome(args[1])
    return _sklift_score(*args, kind)


def auuc(scores, outcome, treatment, *, normalize: str = "causalml") -> jax.Array:
    """Normalized area under the uplift (cumulative gain) curve.

    The default, ``normalize="causalml"``, is the project's normalization, the
    one of causalml's ``auuc_score``::

      AUUC = (n + 1)^{-1} Σ_{k=0..n} gain(k) / |gain(n)|

    The straight random line from 0 to ``gain(n)`` scores exactly 0.5; values
    above 1 occur when the overall effect is negative.

    ``normalize="sklift"`` gives scikit-uplift's ``uplift_auc_score``: the
    curve is evaluated only where the score changes (straight in between), an
    empty arm contributes 0 to its own mean, areas are trapezoids, and::

      AUUC = (A(model) - A(random)) / (A(perfect) - A(random))

    with the random line from ``(0, 0)`` to ``(n, gain(n))`` and the perfect
    ranking putting treated responders and untreated non-responders first
    (binary outcomes only): random 0, perfect 1.

    Neither is the oracle-normalized score of ``normalized_auuc``.

    Args:
      scores: ``[n]`` predicted uplift.
      outcome: ``[n]`` observed outcome (0/1 with ``normalize="sklift"``).
      treatment: ``[n]`` 0/1 treatment indicator.
      normalize: ``"causalml"`` (default) or ``"sklift"``.

    Returns:
      A float32 scalar; NaN when ``gain(n) = 0`` (causalml) or the perfect curve
      equals the random line (sklift).

    Example:
      >>> round(float(auuc([3., 2., 1., 0.], [1, 0, 0, 0], [1, 0, 1, 0])), 3)
      0.55
      >>> round(float(auuc([3., 2., 1., 0.], [1, 0, 0, 0], [1, 0, 1, 0], normalize="sklift")), 3)
      0.5

    References:
      Zhao et al., causalml ``metrics.auuc_score``, https://github.com/uber/causalml;
      Shevchenko et al., scikit-uplift ``metrics.uplift_auc_score``,
      https://github.com/maks-sh/scikit-uplift.
    """
    if _check_normalize(normalize) == "sklift":
        return _sklift(scores, outcome, treatment, "gain")
    return _normalized_mean(uplift_curve(scores, outcome, treatment))


def qini_score(scores, outcome, treatment, *, normalize: str = "causalml") -> jax.Array:
    """Qini score: area between the Qini curve and the random line.

    The default, ``normalize="causalml"``, is the project's normalization, the
    one of causalml's ``qini_score`` with the random ranking replaced by its
    expectation, the straight line::

      Q = (n + 1)^{-1} Σ_{k=0..n} [qini(k) - (k / n) qini(n)] / |qini(n)|

    A random ranking scores 0 (it is not divided by a perfect curve).

    ``normalize="sklift"`` gives scikit-uplift's ``qini_auc_score`` (with its
    default ``negative_effect=True``): the curve
    ``Y_T(k) - Y_C(k) N_T(k) / N_C(k)`` (the ratio is 0 while ``N_C(k) = 0``)
    evaluated where the score changes, trapezoid areas, and
    ``(A(model) - A(random)) / (A(perfect) - A(random))``, the perfect ranking
    sorting by ``y·t - y·(1 - t)`` (binary outcomes only): random 0, perfect 1.

    Args:
      scores: ``[n]`` predicted uplift.
      outcome: ``[n]`` observed outcome (0/1 with ``normalize="sklift"``).
      treatment: ``[n]`` 0/1 treatment indicator.
      normalize: ``"causalml"`` (default) or ``"sklift"``.

    Returns:
      A float32 scalar; NaN when ``qini(n) = 0`` (causalml) or the perfect curve
      equals the random line (sklift).

    Example:
      >>> round(float(qini_score([3., 2., 1., 0.], [1, 0, 0, 0], [1, 0, 1, 0])), 3)
      0.1
      >>> s, y, t = [3., 2., 1., 0.], [1, 0, 0, 0], [1, 0, 1, 0]
      >>> round(float(qini_score(s, y, t, normalize="sklift")), 3)
      1.0
    """
    if _check_normalize(normalize) == "sklift":
        return _sklift(scores, outcome, treatment, "qini")
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
      A float32 scalar in [0, 1]; NaN when ``A(oracle) - A(anti)`` is at most
      1e-6 of the uncentred areas' size (all gains equal, up to float32 rounding).

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
