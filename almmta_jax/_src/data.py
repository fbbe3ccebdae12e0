"""Journey batches: the one data format every ALM-MTA model, loss and metric reads.

A journey is one user's time-ordered touchpoints before a possible outcome. A
batch of B journeys is padded to L touchpoints with a mask (``JourneyBatch``).
Loaders build the padded arrays from the flat "ragged" layout (journey i spans
``offsets[i]:offsets[i+1]`` of the per-touch arrays), truncating journeys longer
than L to their most recent L touches. ``journey_batches`` streams batches with a
seeded shuffle buffer from in-memory arrays or from shards on disk, so data larger
than memory can flow through a training loop.

Conventions (every loader in the package follows them):

* valid touches form a prefix of each row and are in time order; padding holds 0
  (ids are not shifted, so models must use ``touch_mask``, never ``id == 0``);
* a real journey has at least one touch, so ``touch_mask.any(-1)`` tells real rows
  from the all-padding rows ``journey_batches`` may add to the last batch (those
  also carry ``ipw = 0``);
* ``yp_mask == touch_mask & (y == 1)``: the proxy is defined only on uploads.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import numpy as np

from almmta_jax._src.fields import check_binary, check_ids, first_row

SECONDS_PER_HOUR = 3600.0


class JourneyBatch(NamedTuple):
    """A batch of B user journeys padded to L touchpoints.

    Attributes:
      x: ``[B, d_x]`` float32 observed user features.
      user_id: ``[B]`` int32 user ids (hashed or contiguous; 0 if unknown).
      touch_ids: ``[B, L, F]`` int32 categorical ids of each touchpoint, one column
        per id field (simulator: item, cluster, music, template, vocabularies
        ``SimConfig.vocab_sizes``; Criteo: campaign, ``CRITEO_VOCAB_SIZES = (10,)``).
        Padding positions hold 0; ids are not shifted, so use ``touch_mask``.
      tfeat: ``[B, L, 3]`` float32 time features: log1p(hours to window end),
        log1p(hours since previous touch), position-from-end / L.
      touch_mask: ``[B, L]`` bool, True at real touchpoints.
      y: ``[B]`` float32 binary outcome (upload / conversion).
      yp: ``[B, L, P]`` float32 per-touchpoint proxy targets y' in [0, 1]
        (zeros where absent).
      yp_mask: ``[B, L]`` bool, ``touch_mask & (y == 1)``: where y' is defined.
      ipw: ``[B]`` float32 inverse-propensity weights (ones when not computed).
      propensity: optional ``[B, L]`` float32 logged propensity of each touch
        (e.g. the serving policy's probability), in (0, 1]; ``None`` when absent
        (an empty pytree node, so batches without it still go through ``jax.jit``).

    Example:
      >>> b = ragged_to_batch(offsets=[0, 2, 5], touch_ids=[3, 1, 4, 1, 5],
      ...     timestamp=[0, 3600, 0, 7200, 10800], y=[0, 1], max_len=4)
      >>> b.touch_ids.shape, b.touch_mask.sum(axis=1).tolist(), int(b.yp_mask.sum())
      ((2, 4, 1), [2, 3], 3)
    """

    x: jax.Array
    user_id: jax.Array
    touch_ids: jax.Array
    tfeat: jax.Array
    touch_mask: jax.Array
    y: jax.Array
    yp: jax.Array
    yp_mask: jax.Array
    ipw: jax.Array
    propensity: jax.Array | None = None


# ------------------------------------------------------------------ validation


def _shape(a) -> tuple[int, ...]:
    return tuple(np.shape(a))


def _dtype(a) -> np.dtype:
    # Works for NumPy arrays, jax.Arrays and tracers without a host transfer.
    return np.dtype(a.dtype) if hasattr(a, "dtype") else np.asarray(a).dtype


def validate_journeys(batch: JourneyBatch, *, allow_padding_rows: bool = False) -> JourneyBatch:
    """Checks a ``JourneyBatch`` of host arrays: shapes, dtypes and values.

    Shapes and dtypes are checked for any array type; values (binary outcome,
    proxy range, finiteness, non-empty journeys, ``yp_mask``) only for NumPy
    arrays, so the check is a boundary check for loaders, not a per-step one.

    Args:
      batch: the journeys.
      allow_padding_rows: accept all-padding rows (as in a padded last batch);
        they must carry ``ipw == 0``.

    Returns:
      ``batch`` unchanged.

    Raises:
      TypeError: a field is not a JourneyBatch, or has the wrong dtype kind.
      ValueError: inconsistent shapes, an empty journey, a non-binary outcome,
        proxy outside [0, 1], non-finite features, negative weights, ids that are
        negative or beyond int32 (the first bad row named), or a
        ``yp_mask`` that is not ``touch_mask & (y == 1)``.
    """
    if not isinstance(batch, JourneyBatch):
        raise TypeError(f"batch must be a JourneyBatch, got {type(batch).__name__}.")
    mask_shape = _shape(batch.touch_mask)
    if len(mask_shape) != 2:
        raise ValueError(f"touch_mask has shape {mask_shape}; expected [B, L].")
    B, L = mask_shape
    expect = {
        "user_id": (B,),
        "y": (B,),
        "ipw": (B,),
        "yp_mask": (B, L),
    }
    for name, shp in expect.items():
        got = _shape(getattr(batch, name))
        if got != shp:
            raise ValueError(f"{name} has shape {got}; expected {shp} from touch_mask [B, L].")
    for name, rank in (("x", 2), ("touch_ids", 3), ("tfeat", 3), ("yp", 3)):
        got = _shape(getattr(batch, name))
        if len(got) != rank or got[0] != B or (rank == 3 and got[1] != L):
            want = "[B, d_x]" if rank == 2 else "[B, L, *]"
            raise ValueError(
                f"{name} has shape {got}; expected {want} with B={B}, L={L} from touch_mask."
            )
    if _shape(batch.tfeat)[2] != 3:
        raise ValueError(f"tfeat has shape {_shape(batch.tfeat)}; expected [B, L, 3].")
    if batch.propensity is not None and _shape(batch.propensity) != (B, L):
        raise ValueError(
            f"propensity has shape {_shape(batch.propensity)}; expected ({B}, {L}) or None."
        )
    for name in ("touch_ids", "user_id"):
        if not np.issubdtype(_dtype(getattr(batch, name)), np.integer):
            raise TypeError(f"{name} has dtype {_dtype(getattr(batch, name))}; expected integers.")
    for name in ("touch_mask", "yp_mask"):
        if _dtype(getattr(batch, name)) != np.bool_:
            raise TypeError(f"{name} has dtype {_dtype(getattr(batch, name))}; expected bool.")
    if not all(isinstance(a, np.ndarray) for a in batch if a is not None):
        return batch

    mask = batch.touch_mask
    real = mask.any(axis=1)
    if not allow_padding_rows and not real.all():
        bad = np.flatnonzero(~real)
        raise ValueError(
            f"{bad.size} empty journeys (no valid touch), e.g. rows {bad[:5].tolist()}; every "
            "journey needs at least one touchpoint."
        )
    if allow_padding_rows and np.any(batch.ipw[~real] != 0):
        raise ValueError("all-padding rows must carry ipw == 0.")
    y = check_binary("y", batch.y)
    for name in ("x", "tfeat", "yp", "ipw"):
        bad = ~np.isfinite(getattr(batch, name))
        if bad.any():
            raise ValueError(f"{name} contains NaN or infinite values; {first_row(bad)}.")
    bad = (batch.yp < 0) | (batch.yp > 1)
    if bad.any():
        raise ValueError(f"yp (the proxy y') must lie in [0, 1]; {first_row(bad)}.")
    if np.any(batch.ipw < 0):
        raise ValueError(f"ipw must be >= 0; {first_row(batch.ipw < 0)}.")
    check_ids("touch_ids", batch.touch_ids)
    check_ids("user_id", batch.user_id)
    if not np.array_equal(batch.yp_mask, mask & (y == 1)[:, None]):
        raise ValueError("yp_mask must equal touch_mask & (y == 1)[:, None].")
    if batch.propensity is not None:
        p = batch.propensity[mask]
        if not np.all((p > 0) & (p <= 1)):
            raise ValueError("propensity must lie in (0, 1] at valid touches.")
    return batch


# ----------------------------------------------------------- ragged -> padded


def check_offsets(offsets, num_touches: int, *, name: str = "offsets") -> np.ndarray:
    """Validates journey boundaries of the flat layout and returns them as int64.

    Args:
      offsets: ``[n + 1]`` non-decreasing integers, ``offsets[0] == 0`` and
        ``offsets[-1] == num_touches``.
      num_touches: the length of the per-touch arrays.
      name: argument name for messages.

    Returns:
      ``offsets`` as an int64 array.
    """
    off = np.asarray(offsets)
    if off.ndim != 1 or off.shape[0] < 1:
        raise ValueError(f"{name} has shape {off.shape}; expected [n + 1] with n >= 0.")
    if not np.issubdtype(off.dtype, np.integer):
        raise TypeError(f"{name} has dtype {off.dtype}; expected integers.")
    off = off.astype(np.int64)
    if off[0] != 0 or off[-1] != num_touches:
        raise ValueError(
            f"{name} must start at 0 and end at the number of touches {num_touches}; got "
            f"{name}[0]={off[0]}, {name}[-1]={off[-1]} (per-touch arrays and offsets disagree)."
        )
    lengths = np.diff(off)
    if np.any(lengths < 0):
        raise ValueError(f"{name} must be non-decreasing.")
    return off


def pad_ragged(values, offsets, max_len: int) -> tuple[np.ndarray, np.ndarray]:
    """Pads flat per-touch values to ``[n, max_len, ...]``, keeping the most recent touches.

    Journey i spans ``values[offsets[i]:offsets[i+1]]`` in time order. A journey
    longer than ``max_len`` keeps its LAST ``max_len`` touches (the ones nearest
    the outcome); shorter ones are left-aligned and padded with 0.

    Args:
      values: ``[T, ...]`` per-touch array.
      offsets: ``[n + 1]`` journey boundaries.
      max_len: the padded length L.

    Returns:
      ``(padded [n, L, ...], mask [n, L] bool)``.

    Example:
      >>> v, m = pad_ragged(np.arange(6), np.array([0, 1, 6]), 3)
      >>> v.tolist(), m.tolist()
      ([[0, 0, 0], [3, 4, 5]], [[True, False, False], [True, True, True]])
    """
    if int(max_len) < 1:
        raise ValueError(f"max_len must be >= 1, got {max_len}.")
    values = np.asarray(values)
    off = check_offsets(offsets, values.shape[0])
    lengths = np.diff(off)
    kept = np.minimum(lengths, max_len)
    start = off[1:] - kept
    pos = np.arange(max_len)
    mask = pos[None, :] < kept[:, None]
    idx = np.where(mask, start[:, None] + pos[None, :], 0)
    if values.shape[0] == 0:
        padded = np.zeros(mask.shape + values.shape[1:], values.dtype)
    else:
        padded = values[idx]
        padded[~mask] = 0
    return padded, mask


def time_features(timestamps, touch_mask, end_time=None) -> np.ndarray:
    """The three touch time features (docs/almmta.md, *Journey batches*) from padded timestamps (seconds).

    * log1p(hours from the touch to the window end), clipped at 0;
    * log1p(hours since the previous valid touch; 0 for the first);
    * position from the end / L (0 for the last valid touch).

    Args:
      timestamps: ``[n, L]`` seconds, non-decreasing over valid touches.
      touch_mask: ``[n, L]`` bool.
      end_time: ``[n]`` window end in seconds; the last valid touch when None.

    Returns:
      ``[n, L, 3]`` float32, zeros at padding.
    """
    ts = np.asarray(timestamps, np.float64)
    mask = np.asarray(touch_mask, bool)
    if ts.shape != mask.shape or ts.ndim != 2:
        raise ValueError(
            f"timestamps has shape {ts.shape} and touch_mask {mask.shape}; expected equal [n, L]."
        )
    n, L = mask.shape
    if end_time is None:
        end = np.where(mask, ts, -np.inf).max(axis=1, initial=-np.inf)
        end = np.where(np.isfinite(end), end, 0.0)
    else:
        end = np.asarray(end_time, np.float64)
        if end.shape != (n,):
            raise ValueError(f"end_time has shape {end.shape}; expected ({n},).")
    to_end = np.maximum(end[:, None] - ts, 0.0) / SECONDS_PER_HOUR
    prev = np.concatenate([ts[:, :1], ts[:, :-1]], axis=1)
    prev_ok = np.concatenate([np.zeros((n, 1), bool), mask[:, :-1]], axis=1)
    gap = np.where(prev_ok & mask, np.maximum(ts - prev, 0.0), 0.0) / SECONDS_PER_HOUR
    after = mask[:, ::-1].cumsum(axis=1)[:, ::-1] - mask
    feats = np.stack([np.log1p(to_end), np.log1p(gap), after / float(L)], axis=-1)
    return np.where(mask[..., None], feats, 0.0).astype(np.float32)


def ragged_to_batch(
    *,
    offsets,
    touch_ids,
    timestamp,
    y,
    max_len: int,
    x=None,
    user_id=None,
    yp=None,
    ipw=None,
    propensity=None,
    end_time=None,
) -> JourneyBatch:
    """Builds a validated ``JourneyBatch`` from the flat (ragged) journey layout.

    Journeys longer than ``max_len`` keep their most recent ``max_len`` touches;
    the "hours since previous touch" of the first kept touch still measures the
    gap to the dropped touch before it, and the window end is unchanged.

    Args:
      offsets: ``[n + 1]`` journey boundaries.
      touch_ids: ``[T]`` or ``[T, F]`` non-negative integer ids.
      timestamp: ``[T]`` seconds, non-decreasing within each journey.
      y: ``[n]`` binary outcome.
      max_len: padded length L.
      x: ``[n, d_x]`` user features; a single column of ones when None.
      user_id: ``[n]`` integer ids; zeros when None.
      yp: ``[T]`` or ``[T, P]`` proxy in [0, 1]; zeros ``[.., 1]`` when None.
        Values on journeys with y = 0 are zeroed (the proxy is masked there).
      ipw: ``[n]`` weights; ones when None.
      propensity: ``[T]`` logged propensities in (0, 1], or None.
      end_time: ``[n]`` window ends in seconds; each journey's last touch when None.

    Returns:
      A ``JourneyBatch`` of NumPy arrays (validated).
    """
    timestamp = np.asarray(timestamp)
    T = timestamp.shape[0]
    if timestamp.ndim != 1:
        raise ValueError(f"timestamp has shape {timestamp.shape}; expected [T].")
    off = check_offsets(offsets, T)
    n = off.shape[0] - 1
    lengths = np.diff(off)
    if np.any(lengths == 0):
        bad = np.flatnonzero(lengths == 0)
        raise ValueError(
            f"{bad.size} empty journeys (offsets[i] == offsets[i+1]), e.g. journeys "
            f"{bad[:5].tolist()}; drop them before loading."
        )
    ids = np.asarray(touch_ids)
    if ids.ndim == 1:
        ids = ids[:, None]
    if ids.ndim != 2 or ids.shape[0] != T:
        raise ValueError(
            f"touch_ids has shape {np.shape(touch_ids)}; expected [T] or [T, F] with T={T} "
            "(the length of timestamp)."
        )
    if not np.issubdtype(ids.dtype, np.integer):
        raise TypeError(f"touch_ids has dtype {ids.dtype}; expected integers.")
    ids = check_ids("touch_ids", ids)  # before the int32 cast below
    if not np.all(np.isfinite(timestamp.astype(np.float64))):
        raise ValueError("timestamp contains NaN or infinite values.")
    tsf = timestamp.astype(np.float64)
    journey = np.repeat(np.arange(n), lengths)
    step = np.diff(tsf)
    same = journey[1:] == journey[:-1]
    if np.any(step[same] < 0):
        bad = journey[1:][same & (step < 0)]
        raise ValueError(
            f"timestamp decreases inside {np.unique(bad).size} journeys, e.g. journey "
            f"{int(bad[0])}; touches must be in time order."
        )
    y = np.asarray(y)
    if y.shape != (n,):
        raise ValueError(f"y has shape {y.shape}; expected ({n},) from offsets.")
    yf = check_binary("y", y).astype(np.float32)

    gap = np.zeros(T)
    gap[1:] = np.where(same, step, 0.0)
    last = tsf[off[1:] - 1]
    end = last if end_time is None else np.asarray(end_time, np.float64)
    if end.shape != (n,):
        raise ValueError(f"end_time has shape {end.shape}; expected ({n},).")
    to_end = np.maximum(np.repeat(end, lengths) - tsf, 0.0) / SECONDS_PER_HOUR
    flat_t = np.stack([np.log1p(to_end), np.log1p(gap / SECONDS_PER_HOUR)], axis=1)
    tpad, mask = pad_ragged(flat_t, off, max_len)
    after = mask[:, ::-1].cumsum(axis=1)[:, ::-1] - mask
    tfeat = np.concatenate([tpad, (after / float(max_len))[..., None]], axis=-1)
    tfeat = np.where(mask[..., None], tfeat, 0.0).astype(np.float32)
    ids_pad, _ = pad_ragged(ids, off, max_len)

    if yp is None:
        yp_pad = np.zeros((n, max_len, 1), np.float32)
    else:
        yp = np.asarray(yp, np.float32)
        if yp.ndim == 1:
            yp = yp[:, None]
        if yp.ndim != 2 or yp.shape[0] != T:
            raise ValueError(f"yp has shape {yp.shape}; expected [T] or [T, P] with T={T}.")
        yp_pad, _ = pad_ragged(yp, off, max_len)
        yp_pad = np.where((yf == 1)[:, None, None], yp_pad, 0.0).astype(np.float32)
    if x is None:
        x = np.ones((n, 1), np.float32)
    x = np.asarray(x, np.float32)
    if x.ndim != 2 or x.shape[0] != n:
        raise ValueError(f"x has shape {x.shape}; expected [n, d_x] with n={n}.")
    uid = np.zeros(n, np.int32) if user_id is None else np.asarray(user_id)
    if uid.shape != (n,):
        raise ValueError(f"user_id has shape {uid.shape}; expected ({n},).")
    uid = check_ids("user_id", uid)
    w = np.ones(n, np.float32) if ipw is None else np.asarray(ipw, np.float32)
    if w.shape != (n,):
        raise ValueError(f"ipw has shape {w.shape}; expected ({n},).")
    prop = None
    if propensity is not None:
        propensity = np.asarray(propensity, np.float32)
        if propensity.shape != (T,):
            raise ValueError(f"propensity has shape {propensity.shape}; expected ({T},).")
        prop, _ = pad_ragged(propensity, off, max_len)
        prop = np.where(mask, prop, 1.0).astype(np.float32)
    batch = JourneyBatch(
        x=x,
        user_id=uid.astype(np.int32),
        touch_ids=ids_pad.astype(np.int32),
        tfeat=tfeat,
        touch_mask=mask,
        y=yf,
        yp=yp_pad,
        yp_mask=mask & (yf == 1)[:, None],
        ipw=w,
        propensity=prop,
    )
    return validate_journeys(batch)


def as_numpy(batch: JourneyBatch) -> JourneyBatch:
    """The batch with every present field as a NumPy array (host memory)."""
    return JourneyBatch(*(None if a is None else np.asarray(a) for a in batch))
