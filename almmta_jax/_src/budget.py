"""CausalMTA's budget-allocation replay of test impressions (after DARNN).

See docs/almmta.md, *Budget replay*.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

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
