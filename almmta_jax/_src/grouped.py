"""The bucketed grouped-AUUC protocol: treatment clusters, exposure propensities, cell uplifts.

See docs/almmta.md, *Grouped AUUC protocol*. ``kmeans`` builds treatment
clusters from content embeddings (step 1); ``exposure_propensity`` fits
``ê_c(x)`` (step 3); ``grouped_auuc`` runs steps 4-8. ``cell_agreement`` checks
the protocol itself: the observational IPW cell uplifts against those of a
randomized arm (bucketed by the observational ``ê_c(x)`` through
``grouped_auuc(..., buckets=...)`` and ``propensity_buckets(..., reference=...)``)
or against exact simulator effects.
"""

from __future__ import annotations

import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from almmta_jax._src.fitting import fit_full_batch
from almmta_jax._src.uplift import gain_curve, normalized_auuc

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
    """Full-batch Adam on the K joint logistic regressions."""
    import optax

    def loss(p):
        logit = xs @ p["w"] + p["b"][None, :]
        bce = jnp.mean(optax.sigmoid_binary_cross_entropy(logit, e_fit))
        return bce + l2 * jnp.sum(p["w"] ** 2)

    return fit_full_batch(loss, params, steps=steps, learning_rate=learning_rate)


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
    mean and scale. The fit starts from the intercept-only maximum-likelihood
    model (``W = 0``, each intercept the logit of its cluster's exposure rate).

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
