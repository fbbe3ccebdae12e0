"""Per-touch effect estimates against known effects: RMSE and two rank correlations.

See docs/almmta.md, *Exact truth*. Where the true deletion effect of every touch
is known (the simulator's ``delta_x``), ``effect_agreement`` scores estimated
effects three ways: the per-touch RMSE (levels and scale), the Spearman
correlation over all touches of all journeys pooled (the cross-user order) and
the mean per-journey Spearman correlation (the order of the touches within a
journey, blind to levels). Ranks give tied values their average rank, as
``scipy.stats.rankdata`` does.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np


class EffectAgreement(NamedTuple):
    """How closely estimated per-touch effects follow the true ones over the valid touches.

    Attributes:
      rmse: root mean squared difference of estimate and truth over the valid touches.
      pooled_spearman: Spearman correlation over every valid touch of every journey
        pooled (NaN when either side is constant or fewer than 2 touches are valid).
      journey_spearman: mean over journeys of the Spearman correlation of each
        journey's valid touches (NaN when no journey is scored).
      journeys_scored: journeys with at least ``min_touches`` valid touches whose
        estimate and truth both vary (the journeys averaged in ``journey_spearman``).
      touches: valid touches.
    """

    rmse: float
    pooled_spearman: float
    journey_spearman: float
    journeys_scored: int
    touches: int


def _as_table(a, name: str) -> np.ndarray:
    a = np.asarray(a)
    if a.ndim != 2:
        raise ValueError(f"{name} must be a table [journeys, touches]; got shape {a.shape}.")
    return a


def _check(estimate, truth, mask) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    e = _as_table(estimate, "estimate").astype(np.float64)
    t = _as_table(truth, "truth").astype(np.float64)
    m = _as_table(mask, "mask")
    if m.dtype != bool:
        if not np.isin(m, (0, 1)).all():
            raise ValueError("mask must be boolean (or 0/1); it holds other values.")
        m = m.astype(bool)
    for name, a in (("estimate", e), ("truth", t)):
        if a.shape != m.shape:
            raise ValueError(f"{name} has shape {a.shape}; expected {m.shape} like the mask.")
    if not m.any():
        raise ValueError("mask selects no touch; there is nothing to score.")
    if not np.isfinite(t[m]).all():
        raise ValueError("truth is not finite on a valid touch.")
    return e, t, m


def _average_ranks(values: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """Row-wise 1-based ranks among each row's valid entries, ties averaged (0 elsewhere)."""
    x = np.where(valid, values, np.inf)  # invalid entries sort last, after every valid one
    order = np.argsort(x, axis=-1, kind="stable")
    xs = np.take_along_axis(x, order, axis=-1)
    ok = np.take_along_axis(valid, order, axis=-1)
    n = x.shape[-1]
    pos = np.broadcast_to(np.arange(n), x.shape)
    # A tie block starts where the sorted value changes (or an invalid run begins).
    starts = np.ones(x.shape, bool)
    starts[..., 1:] = (xs[..., 1:] != xs[..., :-1]) | (ok[..., 1:] != ok[..., :-1])
    ends = np.ones(x.shape, bool)
    ends[..., :-1] = starts[..., 1:]
    first = np.maximum.accumulate(np.where(starts, pos, 0), axis=-1)
    last = np.flip(np.minimum.accumulate(np.flip(np.where(ends, pos, n), -1), axis=-1), -1)
    ranks = np.zeros(x.shape)
    np.put_along_axis(ranks, order, (first + last) / 2 + 1, axis=-1)
    return np.where(valid, ranks, 0.0)


def _rank_correlation(e: np.ndarray, t: np.ndarray, m: np.ndarray) -> np.ndarray:
    """Row-wise Pearson correlation of the average ranks over valid entries (NaN if undefined)."""
    re, rt = _average_ranks(e, m), _average_ranks(t, m)
    n = m.sum(-1)
    safe = np.maximum(n, 1)
    de = np.where(m, re - re.sum(-1, keepdims=True) / safe[..., None], 0.0)
    dt = np.where(m, rt - rt.sum(-1, keepdims=True) / safe[..., None], 0.0)
    ve, vt = (de**2).sum(-1), (dt**2).sum(-1)
    ok = (n >= 2) & (ve > 0) & (vt > 0)
    with np.errstate(invalid="ignore", divide="ignore"):
        rho = (de * dt).sum(-1) / np.sqrt(ve * vt)
    return np.where(ok, rho, np.nan)


def effect_agreement(estimate, truth, mask, *, min_touches: int = 2) -> EffectAgreement:
    """RMSE, pooled and per-journey Spearman of estimated vs true per-touch effects.

    Per-journey Spearman only sees the order of the touches inside each journey:
    an estimate off by a per-journey shift or scale, or one that puts the
    journeys' effects in the wrong order across users, keeps it at 1. The
    pooled Spearman sees the order across users, the RMSE the levels and scale
    (docs/almmta.md, *Exact truth*). Entries outside ``mask`` are ignored.

    Args:
      estimate: ``[U, L]`` estimated effects (e.g. deletion uplifts Δ̂). A
        non-finite value on a valid touch makes every score NaN (a diverged
        model is reported, not refused).
      truth: ``[U, L]`` true effects (e.g. the simulator's ``delta_x``), finite
        on the valid touches.
      mask: ``[U, L]`` boolean (or 0/1), True on the valid touches.
      min_touches: the fewest valid touches for a journey to enter the
        per-journey mean (at least 2).

    Returns:
      An ``EffectAgreement``.

    Raises:
      ValueError: if an input is not a ``[U, L]`` table, the shapes differ, the
        mask is not boolean or selects nothing, the truth is not finite on a
        valid touch or ``min_touches`` is below 2.

    Example:
      >>> import numpy as np
      >>> truth = np.array([[0.3, 0.1, 0.2], [0.05, 0.02, 0.0]])
      >>> mask = np.array([[True, True, True], [True, True, False]])
      >>> a = effect_agreement(truth + 0.1, truth, mask)
      >>> round(a.rmse, 3), round(a.pooled_spearman, 3), a.journey_spearman, a.journeys_scored
      (0.1, 1.0, 1.0, 2)
      >>> flipped = np.where(np.arange(2)[:, None] == 1, truth + 1.0, truth)  # user 1 lifted
      >>> b = effect_agreement(flipped, truth, mask)
      >>> b.journey_spearman, round(b.pooled_spearman, 3), round(b.rmse, 3)
      (1.0, -0.5, 0.632)
    """
    if isinstance(min_touches, bool) or not isinstance(min_touches, (int, np.integer)):
        raise ValueError(f"min_touches must be an integer >= 2; got {min_touches!r}.")
    if min_touches < 2:
        raise ValueError(f"min_touches must be >= 2; got {min_touches}.")
    e, t, m = _check(estimate, truth, mask)
    touches = int(m.sum())
    if not np.isfinite(e[m]).all():
        nan = float("nan")
        return EffectAgreement(nan, nan, nan, 0, touches)
    rmse = float(np.sqrt(np.mean((e[m] - t[m]) ** 2)))
    pooled = float(_rank_correlation(e[m][None], t[m][None], np.ones((1, touches), bool))[0])
    rho = _rank_correlation(e, t, m)
    kept = np.isfinite(rho) & (m.sum(-1) >= min_touches)
    journey = float(rho[kept].mean()) if kept.any() else float("nan")
    return EffectAgreement(rmse, pooled, journey, int(kept.sum()), touches)
