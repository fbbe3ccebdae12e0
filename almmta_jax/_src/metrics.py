"""Evaluation of multi-touch attribution: uplift curves, AUUC, Qini, the bucketed
grouped-AUUC protocol, k-means treatment clusters and the budget replay.

``cell_agreement`` checks the protocol itself: the observational IPW cell
uplifts against those of a randomized arm (bucketed by the observational
``ê_c(x)`` through ``grouped_auuc(..., buckets=...)`` and
``propensity_buckets(..., reference=...)``) or against exact simulator effects.

Prediction metrics (AUC, gAUC, log-loss) are those of ``drgrad_jax.metrics`` and
are re-exported by ``almmta_jax.metrics``.

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
* ``normalized_auuc`` is the project's oracle normalization (docs/almmta.md, *Grouped AUUC
  protocol*, step 7):
  ``(A_model - A_anti) / (A_oracle - A_anti)`` on a cumulative-gain curve with
  tied scores averaged, so a random ranking scores 0.5 in expectation, the
  oracle exactly 1 and the reversed oracle 0. This is scikit-uplift's
  normalization re-centred to 0.5 with the anti-oracle in place of the random
  line (``nauuc = (1 + sklift) / 2`` when the random line is the midpoint).
"""

from __future__ import annotations

import functools
from typing import NamedTuple

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


# -------------------------------------------------------------------- k-means


@functools.partial(jax.jit, static_argnames=("k", "restarts", "iters"))
def _kmeans(key, points, k, restarts, iters):
    n = points.shape[0]

    def run(key):
        init = points[jax.random.choice(key, n, (k,), replace=False)]

        def assign(c):
            d = jnp.sum((points[:, None, :] - c[None, :, :]) ** 2, axis=-1)
            return jnp.argmin(d, axis=1), jnp.min(d, axis=1)

        def lloyd(_, c):
            a, _ = assign(c)
            one_hot = jax.nn.one_hot(a, k, dtype=points.dtype)
            count = jnp.sum(one_hot, axis=0)
            means = (one_hot.T @ points) / jnp.maximum(count, 1.0)[:, None]
            # An emptied cluster keeps its centroid rather than collapsing to 0.
            return jnp.where(count[:, None] > 0, means, c)

        c = jax.lax.fori_loop(0, iters, lloyd, init)
        a, d = assign(c)
        return c, a, jnp.sum(d)

    cs, assigns, inertia = jax.vmap(run)(jax.random.split(key, restarts))
    best = jnp.argmin(inertia)
    return cs[best], assigns[best], inertia[best]


def kmeans(
    key: jax.Array, points, k: int, *, restarts: int = 10, iters: int = 50
) -> tuple[jax.Array, jax.Array, jax.Array]:
    """Seeded k-means (Lloyd) with restarts, vmapped; the lowest-inertia run wins.

    Each restart starts from ``k`` distinct points drawn from ``key`` and runs
    ``iters`` Lloyd iterations (an emptied cluster keeps its centroid). Used for
    the treatment clusters of the grouped protocol and the gAUC segments of x (see
    docs/almmta.md, *Grouped AUUC protocol*, step 1, and *Prediction metrics*).

    Args:
      key: PRNG key.
      points: ``[n, d]`` float points.
      k: number of clusters, ``1 <= k <= n``.
      restarts: independent restarts (10 in the grouped protocol).
      iters: Lloyd iterations per restart.

    Returns:
      ``(centroids [k, d], assignment [n] int32, inertia)``.

    Example:
      >>> import jax, jax.numpy as jnp
      >>> pts = jnp.array([[0., 0.], [0., .1], [5., 5.], [5., 5.1]])
      >>> _, a, _ = kmeans(jax.random.key(0), pts, 2)
      >>> bool(a[0] == a[1]) and bool(a[2] == a[3]) and bool(a[0] != a[2])
      True
    """
    points = jnp.asarray(points, jnp.float32)
    if points.ndim != 2 or points.shape[0] == 0:
        raise ValueError(f"points must be [n, d] with n >= 1; got shape {points.shape}.")
    if not 1 <= int(k) <= points.shape[0]:
        raise ValueError(f"k must be in [1, n={points.shape[0]}]; got {k}.")
    if restarts < 1 or iters < 0:
        raise ValueError(f"restarts must be >= 1 and iters >= 0; got {restarts}, {iters}.")
    c, a, inertia = _kmeans(key, points, int(k), int(restarts), int(iters))
    return c, a.astype(jnp.int32), inertia


# ------------------------------------------- the bucketed grouped-AUUC protocol


def cluster_exposure_scores(uplift, clusters, touch_mask, num_clusters: int):
    """Per-user cluster exposure ``E_uc`` and per-user mean credit over cluster-c touches.

    ::

      E_uc = 1[u has a touch of cluster c],   s_uc = mean_{j: c(τ_uj) = c} Δ_uj

    Averaging per user first is what stops heavy users from dominating the
    cell score ``S_bc`` (docs/almmta.md, *Grouped AUUC protocol*, step 6).

    Args:
      uplift: ``[U, L]`` per-touch credit Δ (or φ); padded positions are ignored.
      clusters: ``[U, L]`` int cluster id of each touch in ``[0, num_clusters)``.
      touch_mask: ``[U, L]`` bool valid touches.
      num_clusters: ``K``.

    Returns:
      ``(exposure [U, K] bool, score [U, K] float64)``, score NaN where unexposed.

    Example:
      >>> e, s = cluster_exposure_scores([[.2, .4, 1.]], [[0, 0, 1]], [[True, True, False]], 2)
      >>> e.tolist(), [round(v, 3) for v in s[0, :1].tolist()]
      ([[True, False]], [0.3])
    """
    uplift = np.asarray(uplift, np.float64)
    clusters = np.asarray(clusters)
    mask = np.asarray(touch_mask, bool)
    if uplift.ndim != 2 or clusters.shape != uplift.shape or mask.shape != uplift.shape:
        raise ValueError(
            f"uplift, clusters and touch_mask must share one [U, L] shape; got "
            f"{uplift.shape}, {clusters.shape}, {mask.shape}."
        )
    if not np.issubdtype(clusters.dtype, np.integer):
        raise TypeError(f"clusters must be integers; got dtype {clusters.dtype}.")
    valid = clusters[mask]
    if valid.size and (valid.min() < 0 or valid.max() >= num_clusters):
        raise ValueError(f"clusters must lie in [0, {num_clusters}) at valid touches.")
    u = uplift.shape[0]
    rows = np.broadcast_to(np.arange(u)[:, None], uplift.shape)[mask]
    flat = rows * num_clusters + clusters[mask]
    count = np.bincount(flat, minlength=u * num_clusters).reshape(u, num_clusters)
    total = np.bincount(flat, uplift[mask], minlength=u * num_clusters).reshape(u, num_clusters)
    exposure = count > 0
    with np.errstate(invalid="ignore", divide="ignore"):
        score = np.where(exposure, total / np.maximum(count, 1), np.nan)
    return exposure, score


@functools.partial(jax.jit, static_argnames=("steps", "learning_rate", "l2"))
def _fit_exposure_logistic(xs, e_fit, params, *, steps: int, learning_rate: float, l2: float):
    """Full-batch Adam on the K joint logistic regressions (one program per shape)."""
    import optax

    tx = optax.adam(learning_rate)

    def loss(p):
        logit = xs @ p["w"] + p["b"][None, :]
        bce = jnp.mean(optax.sigmoid_binary_cross_entropy(logit, e_fit))
        return bce + l2 * jnp.sum(p["w"] ** 2)

    def step(carry, _):
        p, o = carry
        g = jax.grad(loss)(p)
        u, o = tx.update(g, o, p)
        return (optax.apply_updates(p, u), o), None

    (params, _), _ = jax.lax.scan(step, (params, tx.init(params)), None, length=steps)
    return params


def exposure_propensity(
    x_fit,
    exposure_fit,
    x_eval,
    *,
    steps: int = 300,
    learning_rate: float = 0.05,
    l2: float = 1e-4,
    clip: tuple[float, float] = (0.01, 0.99),
) -> np.ndarray:
    """Per-cluster logistic regression ``ê_c(x) = P(E_uc = 1 | x)``, clipped.

    See docs/almmta.md, *Grouped AUUC protocol*, step 3.

    All K regressions are fitted jointly by full-batch Adam on the mean binary
    cross-entropy plus ``l2 ||W||²``; x is standardized with the fitting split's
    mean and scale.

    Args:
      x_fit: ``[N, d]`` features of the fitting (training) users.
      exposure_fit: ``[N, K]`` 0/1 exposure of the fitting users.
      x_eval: ``[U, d]`` features of the evaluation users.
      steps: Adam steps.
      learning_rate: Adam learning rate.
      l2: weight penalty.
      clip: clipping interval of the propensity.

    Returns:
      ``[U, K]`` float64 propensities in ``clip``.
    """
    x_fit = np.asarray(x_fit, np.float32)
    e_fit = np.asarray(exposure_fit, np.float32)
    x_eval = np.asarray(x_eval, np.float32)
    if x_fit.ndim != 2 or e_fit.ndim != 2 or e_fit.shape[0] != x_fit.shape[0]:
        raise ValueError(
            f"x_fit must be [N, d] and exposure_fit [N, K]; got {x_fit.shape}, {e_fit.shape}."
        )
    if x_eval.ndim != 2 or x_eval.shape[1] != x_fit.shape[1]:
        raise ValueError(f"x_eval must be [U, {x_fit.shape[1]}]; got {x_eval.shape}.")
    mu, sd = x_fit.mean(0), x_fit.std(0) + 1e-6
    xs, xe = (x_fit - mu) / sd, (x_eval - mu) / sd
    rate = np.clip(e_fit.mean(0), 1e-4, 1 - 1e-4)
    params = {
        "w": jnp.zeros((x_fit.shape[1], e_fit.shape[1]), jnp.float32),
        "b": jnp.asarray(np.log(rate / (1 - rate)), jnp.float32),
    }
    params = _fit_exposure_logistic(
        jnp.asarray(xs), jnp.asarray(e_fit), params, steps=steps, learning_rate=learning_rate, l2=l2
    )
    logit = np.asarray(xe @ np.asarray(params["w"]) + np.asarray(params["b"])[None, :], np.float64)
    return np.clip(1.0 / (1.0 + np.exp(-logit)), clip[0], clip[1])


def propensity_buckets(propensity, num_buckets: int = 5, *, reference=None) -> np.ndarray:
    """Per-cluster quantile bucket of each user's ``ê_c(x)``.

    See docs/almmta.md, *Grouped AUUC protocol*, step 4.

    Edges are the ``b / B`` quantiles of column c over the evaluation users (or
    over ``reference``); a value equal to an inner edge goes to the upper
    bucket. Heavy ties (clipped propensities) can leave a bucket empty; the
    protocol reports that.

    Args:
      propensity: ``[U, K]`` propensities.
      num_buckets: ``B``.
      reference: optional ``[U', K]`` propensities whose quantiles give the
        edges (e.g. the observational users', to bucket a randomized arm the
        same way).

    Returns:
      ``[U, K]`` int bucket ids in ``[0, B)``.
    """
    e = np.asarray(propensity, np.float64)
    if e.ndim != 2:
        raise ValueError(f"propensity must be [U, K]; got shape {e.shape}.")
    if num_buckets < 1:
        raise ValueError(f"num_buckets must be >= 1; got {num_buckets}.")
    ref = e if reference is None else np.asarray(reference, np.float64)
    if ref.ndim != 2 or ref.shape[1] != e.shape[1]:
        raise ValueError(f"reference must be [U', K={e.shape[1]}]; got shape {ref.shape}.")
    q = np.quantile(ref, np.linspace(0, 1, num_buckets + 1)[1:-1], axis=0)  # [B-1, K]
    return np.sum(e[None, :, :] >= q[:, None, :], axis=0)


class GroupedAUUC(NamedTuple):
    """Result of the bucketed grouped-AUUC protocol (docs/almmta.md, *Grouped AUUC protocol*).

    Attributes:
      average: unweighted mean of ``per_bucket`` over valid buckets (NaN if none).
      per_bucket: ``[B]`` oracle-normalized AUUC per bucket (NaN where invalid).
      per_bucket_causalml: ``[B]`` causalml last-point-normalized AUUC per bucket.
      valid: ``[B]`` bool, the bucket was scored.
      reason: per bucket, ``""`` when scored, else why not ("fewer than 2 kept
        clusters", "degenerate: A(oracle) = A(anti)").
      cell_uplift: ``[B, K]`` Hájek IPW cell uplift ``U_bc`` (NaN where dropped).
      cell_score: ``[B, K]`` model score ``S_bc`` (NaN where dropped).
      n_exposed: ``[B, K]`` ``|E⁺_bc|``.
      n_unexposed: ``[B, K]`` ``|E⁻_bc|``.
      kept: ``[B, K]`` bool, the cell passed positivity (both sides ``>= n_min``).
      dropped_fraction: fraction of non-empty cells dropped by positivity.
    """

    average: float
    per_bucket: np.ndarray
    per_bucket_causalml: np.ndarray
    valid: np.ndarray
    reason: tuple[str, ...]
    cell_uplift: np.ndarray
    cell_score: np.ndarray
    n_exposed: np.ndarray
    n_unexposed: np.ndarray
    kept: np.ndarray
    dropped_fraction: float


def grouped_auuc(
    score,
    exposure,
    outcome,
    propensity,
    *,
    num_buckets: int = 5,
    n_min: int = 30,
    buckets=None,
) -> GroupedAUUC:
    """Non-personalized grouped AUUC over treatment clusters within propensity buckets.

    For bucket b and cluster c (users whose ``ê_c(x)`` falls in bucket b), with
    ``E⁺``/``E⁻`` the exposed/unexposed users (docs/almmta.md,
    *Grouped AUUC protocol*, steps 5-8)::

      ȳ⁺ = Σ_{E⁺} y/ê_c / Σ_{E⁺} 1/ê_c,   ȳ⁻ = Σ_{E⁻} y/(1-ê_c) / Σ_{E⁻} 1/(1-ê_c)
      U_bc = ȳ⁺ - ȳ⁻,    S_bc = mean_{u∈E⁺} s_uc,    g_c = U_bc · n⁺_bc

    Cells with ``|E⁺| < n_min`` or ``|E⁻| < n_min`` are dropped (the dropped
    fraction is reported). Per bucket the kept clusters are ranked by ``S_bc``
    (ties averaged) and scored by ``normalized_auuc(S_b, g_b)`` (random 0.5,
    oracle 1); buckets with fewer than 2 kept clusters, or with
    ``A(oracle) = A(anti)``, are reported invalid with a reason and not scored.
    The average is the unweighted mean over valid buckets.

    Args:
      score: ``[U, K]`` the user's mean credit over its cluster-c touches (NaN or
        anything where unexposed; see ``cluster_exposure_scores``).
      exposure: ``[U, K]`` bool ``E_uc``.
      outcome: ``[U]`` outcome ``y``.
      propensity: ``[U, K]`` ``ê_c(x_u)`` in (0, 1).
      num_buckets: ``B`` quantile buckets of ``ê_c``.
      n_min: positivity threshold per side of a cell.
      buckets: optional ``[U, K]`` int bucket ids in ``[0, B)`` replacing the
        quantile buckets of ``propensity`` (a randomized arm: bucket by the
        observational ``ê_c(x)``, weight by the known design propensity).

    Returns:
      A ``GroupedAUUC``.

    Example:
      >>> import numpy as np
      >>> rng = np.random.default_rng(0)
      >>> e = np.full((400, 4), 0.5); exp = rng.random((400, 4)) < 0.5
      >>> effect = np.array([0.0, 0.1, 0.2, 0.3])
      >>> y = (rng.random(400) < 0.2 + (exp * effect).sum(1) / 2).astype(float)
      >>> r = grouped_auuc(np.where(exp, effect, np.nan), exp, y, e, num_buckets=1)
      >>> r.valid.tolist(), r.average > 0.5
      ([True], True)
    """
    s = np.asarray(score, np.float64)
    ex = np.asarray(exposure, bool)
    y = np.asarray(outcome, np.float64)
    e = np.asarray(propensity, np.float64)
    if ex.ndim != 2 or s.shape != ex.shape or e.shape != ex.shape:
        raise ValueError(
            f"score, exposure and propensity must share one [U, K] shape; got {s.shape}, "
            f"{ex.shape}, {e.shape}."
        )
    if y.shape != (ex.shape[0],):
        raise ValueError(f"outcome must be [U={ex.shape[0]}]; got shape {y.shape}.")
    if not np.all((e > 0) & (e < 1)):
        raise ValueError("propensity must lie strictly inside (0, 1) (clip it first).")
    if n_min < 1:
        raise ValueError(f"n_min must be >= 1; got {n_min}.")
    if np.any(ex & ~np.isfinite(s)):
        raise ValueError("score must be finite wherever exposure is True.")
    if buckets is None:
        buckets = propensity_buckets(e, num_buckets)
    else:
        buckets = np.asarray(buckets)
        if buckets.shape != ex.shape or not np.issubdtype(buckets.dtype, np.integer):
            raise ValueError(
                f"buckets must be an int [U, K]={ex.shape} array; got {buckets.dtype} "
                f"{buckets.shape}."
            )
        if buckets.size and (buckets.min() < 0 or buckets.max() >= num_buckets):
            raise ValueError(f"buckets must lie in [0, num_buckets={num_buckets}).")
    k = ex.shape[1]
    shape = (num_buckets, k)
    cell_u, cell_s = np.full(shape, np.nan), np.full(shape, np.nan)
    n_pos, n_neg = np.zeros(shape, np.int64), np.zeros(shape, np.int64)
    s0 = np.where(ex, s, 0.0)
    for b in range(num_buckets):
        inb = buckets == b
        pos, neg = inb & ex, inb & ~ex
        n_pos[b], n_neg[b] = pos.sum(0), neg.sum(0)
        wp, wn = pos / e, neg / (1.0 - e)
        with np.errstate(invalid="ignore", divide="ignore"):
            y_pos = (wp * y[:, None]).sum(0) / wp.sum(0)
            y_neg = (wn * y[:, None]).sum(0) / wn.sum(0)
            cell_u[b] = y_pos - y_neg
            cell_s[b] = (pos * s0).sum(0) / n_pos[b]
    kept = (n_pos >= n_min) & (n_neg >= n_min)
    nonempty = (n_pos + n_neg) > 0
    dropped = float(np.sum(nonempty & ~kept) / max(np.sum(nonempty), 1))
    cell_u, cell_s = np.where(kept, cell_u, np.nan), np.where(kept, cell_s, np.nan)
    per_bucket = np.full(num_buckets, np.nan)
    per_causalml = np.full(num_buckets, np.nan)
    reasons = []
    for b in range(num_buckets):
        c = np.flatnonzero(kept[b])
        if c.size < 2:
            reasons.append(f"fewer than 2 kept clusters ({c.size})")
            continue
        g = cell_u[b, c] * n_pos[b, c]
        value = float(normalized_auuc(cell_s[b, c], g))
        if not np.isfinite(value):
            reasons.append("degenerate: A(oracle) = A(anti)")
            continue
        per_bucket[b] = value
        curve = np.asarray(gain_curve(cell_s[b, c], g), np.float64)
        last = abs(curve[-1])
        per_causalml[b] = curve.mean() / last if last > 0 else np.nan
        reasons.append("")
    valid = np.isfinite(per_bucket)
    average = float(np.mean(per_bucket[valid])) if valid.any() else float("nan")
    return GroupedAUUC(
        average=average,
        per_bucket=per_bucket,
        per_bucket_causalml=per_causalml,
        valid=valid,
        reason=tuple(reasons),
        cell_uplift=cell_u,
        cell_score=cell_s,
        n_exposed=n_pos,
        n_unexposed=n_neg,
        kept=kept,
        dropped_fraction=dropped,
    )


class CellAgreement(NamedTuple):
    """Agreement of two ``[B, K]`` tables of cell uplifts over the cells both keep.

    Attributes:
      n_cells: cells finite in both tables.
      correlation: Pearson correlation (NaN with fewer than 3 cells or no spread).
      rmse: root mean squared difference.
      mean_error: mean of ``estimate − reference`` (the bias).
    """

    n_cells: int
    correlation: float
    rmse: float
    mean_error: float


def cell_agreement(reference, estimate) -> CellAgreement:
    """How closely estimated cell uplifts ``U_bc`` follow reference ones (protocol check).

    Used to validate the observational IPW cells of ``grouped_auuc`` against
    the cells of a randomized arm or against exact simulator effects.

    Args:
      reference: ``[B, K]`` reference cell uplifts (NaN where absent).
      estimate: ``[B, K]`` estimated cell uplifts (NaN where absent).

    Returns:
      A ``CellAgreement``.

    Example:
      >>> import numpy as np
      >>> ref = np.array([[0.1, 0.2, np.nan], [0.3, 0.0, 0.05]])
      >>> a = cell_agreement(ref, ref + 0.01)
      >>> a.n_cells, round(a.rmse, 3), round(a.correlation, 3)
      (5, 0.01, 1.0)
    """
    r = np.asarray(reference, np.float64)
    e = np.asarray(estimate, np.float64)
    if r.shape != e.shape:
        raise ValueError(f"reference and estimate must share a shape; got {r.shape}, {e.shape}.")
    ok = np.isfinite(r) & np.isfinite(e)
    n = int(ok.sum())
    if n == 0:
        return CellAgreement(0, float("nan"), float("nan"), float("nan"))
    d = e[ok] - r[ok]
    corr = float("nan")
    if n >= 3 and np.ptp(r[ok]) > 0 and np.ptp(e[ok]) > 0:
        corr = float(np.corrcoef(r[ok], e[ok])[0, 1])
    return CellAgreement(n, corr, float(np.sqrt(np.mean(d**2))), float(np.mean(d)))


# ---------------------------------------------------------------- budget replay


class BudgetReplay(NamedTuple):
    """Budget-replay result at each budget fraction (docs/almmta.md, *Budget replay*).

    Attributes:
      fractions: ``[F]`` budget fractions of the total test cost.
      cpa: ``[F]`` ``1000 · spent / conversions`` (NaN without conversions).
      conversions: ``[F]`` credited conversions ``Σ y_i / len_i`` over paid touches.
      cvr: ``[F]`` conversions / journeys with at least one paid touch.
      spent: ``[F]`` total money spent.
      journeys: ``[F]`` journeys with at least one paid touch.
    """

    fractions: np.ndarray
    cpa: np.ndarray
    conversions: np.ndarray
    cvr: np.ndarray
    spent: np.ndarray
    journeys: np.ndarray


def channel_roi(shares, channel, cost, label, offsets, num_channels: int) -> np.ndarray:
    """``ROI_k = Σ_i Σ_{t: c_t = k} a_it · y_i / cost_k`` with ``cost_k`` channel k's total cost.

    Args:
      shares: ``[T]`` flat per-touch credit share ``a_it`` (journeys back to back).
      channel: ``[T]`` int channel (campaign) of each touch.
      cost: ``[T]`` cost of each touch.
      label: ``[n]`` journey outcome.
      offsets: ``[n + 1]`` journey boundaries into the flat arrays.
      num_channels: ``K``.

    Returns:
      ``[K]`` float64 ROI (0 for a channel without cost).
    """
    shares = np.asarray(shares, np.float64)
    channel, cost = np.asarray(channel), np.asarray(cost, np.float64)
    offsets, label = np.asarray(offsets), np.asarray(label, np.float64)
    y_touch = np.repeat(label, np.diff(offsets))
    value = np.bincount(channel, shares * y_touch, minlength=num_channels)
    spend = np.bincount(channel, cost, minlength=num_channels)
    return np.where(spend > 0, value / np.where(spend > 0, spend, 1.0), 0.0)


def budget_replay(
    shares,
    channel,
    cost,
    timestamp,
    label,
    offsets,
    *,
    num_channels: int,
    fractions=(1 / 2, 1 / 4, 1 / 8, 1 / 16),
) -> BudgetReplay:
    """CausalMTA's (after DARNN) budget-allocation replay of test impressions.

    See docs/almmta.md, *Budget replay*.

    1. ``ROI_k`` from the attribution shares (``channel_roi``);
    2. ``Budget_k = B · ROI_k / Σ ROI`` with ``B = fraction · total test cost``;
    3. replay every impression in time order (ties by position in the flat
       arrays): a journey already black-listed is skipped; if channel k's
       remaining budget covers the cost it is paid and ``y_i / len_i``
       conversions are credited, otherwise the whole journey is black-listed;
    4. ``CPA = 1000 · spent / conversions``; ``CVR = conversions / journeys``
       with at least one paid impression.

    Args:
      shares: ``[T]`` flat per-touch credit shares (each journey's sum to 1 or 0).
      channel: ``[T]`` int channel per touch in ``[0, num_channels)``.
      cost: ``[T]`` non-negative cost per touch.
      timestamp: ``[T]`` time of each touch.
      label: ``[n]`` 0/1 journey outcome.
      offsets: ``[n + 1]`` journey boundaries.
      num_channels: ``K``.
      fractions: budget fractions of the total cost.

    Returns:
      A ``BudgetReplay``.

    Example:
      >>> r = budget_replay([1., 0., 0., 1.], [0, 1, 1, 0], [1., 1., 1., 1.], [0, 1, 2, 3],
      ...                   [1, 1], [0, 2, 4], num_channels=2, fractions=(0.5,))
      >>> float(r.conversions[0]), float(r.cpa[0])
      (0.5, 2000.0)
    """
    shares = np.asarray(shares, np.float64)
    channel = np.asarray(channel)
    cost = np.asarray(cost, np.float64)
    timestamp = np.asarray(timestamp)
    label = np.asarray(label, np.float64)
    offsets = np.asarray(offsets, np.int64)
    t = offsets[-1] if offsets.size else 0
    for name, a in (
        ("shares", shares),
        ("channel", channel),
        ("cost", cost),
        ("timestamp", timestamp),
    ):
        if a.shape != (t,):
            raise ValueError(f"{name} has shape {a.shape}; expected ({t},) = offsets[-1] touches.")
    if label.shape != (offsets.size - 1,):
        raise ValueError(f"label must be [n={offsets.size - 1}]; got {label.shape}.")
    if np.any(cost < 0) or not np.all(np.isfinite(shares)):
        raise ValueError("cost must be >= 0 and shares finite.")
    if t and (channel.min() < 0 or channel.max() >= num_channels):
        raise ValueError(f"channel must lie in [0, {num_channels}).")
    roi = channel_roi(shares, channel, cost, label, offsets, num_channels)
    lengths = np.diff(offsets)
    journey = np.repeat(np.arange(lengths.size), lengths)
    order = np.argsort(timestamp, kind="stable")
    ch_o, cost_o, j_o = channel[order].tolist(), cost[order].tolist(), journey[order].tolist()
    credit = (label / np.maximum(lengths, 1)).tolist()
    total = float(cost.sum())
    out = {k: [] for k in ("cpa", "conversions", "cvr", "spent", "journeys")}
    roi_total = roi.sum()
    for frac in fractions:
        share = roi / roi_total if roi_total > 0 else np.full(num_channels, 1.0 / num_channels)
        remaining = (frac * total * share).tolist()
        black = bytearray(lengths.size)
        paid = bytearray(lengths.size)
        spent = conv = 0.0
        for ch, c, j in zip(ch_o, cost_o, j_o, strict=True):
            if black[j]:
                continue
            if remaining[ch] >= c:
                remaining[ch] -= c
                spent += c
                conv += credit[j]
                paid[j] = 1
            else:
                black[j] = 1
        served = int(sum(paid))
        out["cpa"].append(1000.0 * spent / conv if conv > 0 else float("nan"))
        out["conversions"].append(conv)
        out["cvr"].append(conv / served if served else float("nan"))
        out["spent"].append(spent)
        out["journeys"].append(served)
    return BudgetReplay(
        fractions=np.asarray(fractions, np.float64),
        **{k: np.asarray(v, np.float64) for k, v in out.items()},
    )
