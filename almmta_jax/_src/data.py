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

import os
import pathlib
import zipfile
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any, NamedTuple

import jax
import numpy as np

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
        proxy outside [0, 1], non-finite features, negative ids or weights, or a
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
    y = batch.y
    if not np.all((y == 0) | (y == 1)):
        bad = np.flatnonzero((y != 0) & (y != 1))
        raise ValueError(
            f"y must be binary (0/1); found {bad.size} other values, e.g. {y[bad[:5]].tolist()}."
        )
    for name in ("x", "tfeat", "yp", "ipw"):
        if not np.all(np.isfinite(getattr(batch, name))):
            raise ValueError(f"{name} contains NaN or infinite values.")
    if np.any((batch.yp < 0) | (batch.yp > 1)):
        raise ValueError("yp (the proxy y') must lie in [0, 1].")
    if np.any(batch.ipw < 0):
        raise ValueError("ipw must be >= 0.")
    if np.any(batch.touch_ids < 0):
        raise ValueError("touch_ids must be >= 0.")
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
    if not np.all((y == 0) | (y == 1)):
        vals = np.unique(y[(y != 0) & (y != 1)])[:5]
        raise ValueError(f"y must be binary (0/1); found values {vals.tolist()}.")
    yf = y.astype(np.float32)

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


# ------------------------------------------------------------------ streaming


def _concat(parts: Sequence[JourneyBatch]) -> JourneyBatch:
    if len(parts) == 1:
        return parts[0]
    fields = []
    for i, name in enumerate(JourneyBatch._fields):
        vals = [p[i] for p in parts]
        if any(v is None for v in vals):
            if not all(v is None for v in vals):
                raise ValueError(f"field {name} is None in some shards but not in others.")
            fields.append(None)
        else:
            shapes = {np.shape(v)[1:] for v in vals}
            if len(shapes) > 1:
                raise ValueError(
                    f"shards disagree on the trailing shape of {name}: {sorted(shapes)}; every "
                    "shard needs the same L, d_x, id fields and proxy channels."
                )
            fields.append(np.concatenate(vals, axis=0))
    return JourneyBatch(*fields)


def _take(batch: JourneyBatch, idx) -> JourneyBatch:
    return JourneyBatch(*(None if a is None else a[idx] for a in batch))


def _num_rows(batch: JourneyBatch) -> int:
    return int(np.shape(batch.y)[0])


def _pad_rows(batch: JourneyBatch, size: int) -> JourneyBatch:
    n = _num_rows(batch)
    out = []
    for a in batch:
        if a is None:
            out.append(None)
            continue
        pad = np.zeros((size - n,) + a.shape[1:], a.dtype)
        out.append(np.concatenate([a, pad], axis=0))
    return JourneyBatch(*out)


def _as_numpy(batch: JourneyBatch) -> JourneyBatch:
    return JourneyBatch(*(None if a is None else np.asarray(a) for a in batch))


def journey_batches(
    source: JourneyBatch | Iterable[JourneyBatch] | Callable[[], Iterable[JourneyBatch]],
    batch_size: int,
    *,
    seed: int = 0,
    shuffle_buffer: int | None = None,
    drop_last: bool = False,
    epochs: int = 1,
    as_jax: bool = False,
    start_batch: int = 0,
    validate: bool = True,
) -> Iterator[JourneyBatch]:
    """Streams fixed-size ``JourneyBatch`` es with a seeded shuffle buffer.

    The source is either one in-memory ``JourneyBatch`` (leading axis = journeys),
    a re-iterable of shard batches (a list, or ``NpzShards`` reading files lazily),
    or a callable returning a fresh iterable each epoch. Shards are concatenated
    into a buffer; once it holds ``batch_size + shuffle_buffer`` journeys, it is
    permuted and a batch is taken from the front, so memory stays bounded by the
    buffer plus one shard. Shard order is permuted too when the source has a length.
    An in-memory source is one shard, so it is always fully shuffled (unless
    ``shuffle_buffer=0``).

    Args:
      source: the journeys (see above).
      batch_size: journeys per batch.
      seed: fixed seed; epoch e uses the stream ``(seed, e)``.
      shuffle_buffer: journeys kept for mixing; None shuffles fully (the whole
        source is buffered), 0 keeps the source order.
      drop_last: drop the final short batch; otherwise pad it to ``batch_size``
        with all-padding rows (``touch_mask`` all False, ``ipw = 0``, ``y = 0``),
        which ``touch_mask.any(-1)`` identifies.
      epochs: passes over the source.
      as_jax: yield ``jax.Array`` s (``jax.device_put``) instead of NumPy arrays.
      start_batch: skip the first ``start_batch`` batches of the stream (counted
        over all epochs), to resume a run mid-epoch from a checkpoint taken after
        that many steps. The skipped batches are still drawn (so the shuffle
        continues exactly) but never copied to the device.
      validate: check every shard with ``validate_journeys`` (padding rows
        allowed) as it enters the buffer, so a NaN, an empty journey or a
        non-binary outcome stops the stream with an error naming the shard
        instead of reaching the parameters.

    Yields:
      ``JourneyBatch`` es with leading axis ``batch_size``.

    Example:
      >>> b = JourneyBatch(np.zeros((5, 1), np.float32), np.arange(5, dtype=np.int32),
      ...     np.zeros((5, 2, 1), np.int32), np.zeros((5, 2, 3), np.float32),
      ...     np.ones((5, 2), bool), np.zeros(5, np.float32), np.zeros((5, 2, 1), np.float32),
      ...     np.zeros((5, 2), bool), np.ones(5, np.float32))
      >>> [int(x.touch_mask.any(-1).sum()) for x in journey_batches(b, 2, seed=0)]
      [2, 2, 1]
    """
    if isinstance(batch_size, bool) or int(batch_size) < 1:
        raise ValueError(f"batch_size must be a positive int, got {batch_size!r}.")
    if shuffle_buffer is not None and int(shuffle_buffer) < 0:
        raise ValueError(f"shuffle_buffer must be >= 0 or None, got {shuffle_buffer!r}.")
    if int(epochs) < 1:
        raise ValueError(f"epochs must be >= 1, got {epochs!r}.")
    if isinstance(start_batch, bool) or int(start_batch) < 0:
        raise ValueError(f"start_batch must be a non-negative int, got {start_batch!r}.")
    if isinstance(source, Iterator) and epochs > 1:
        raise ValueError(
            "source is a one-shot iterator but epochs > 1; pass a list, NpzShards or a callable."
        )
    bs = int(batch_size)
    skip = int(start_batch)
    for epoch in range(int(epochs)):
        rng = np.random.Generator(np.random.PCG64(np.random.SeedSequence([int(seed), epoch])))
        if isinstance(source, JourneyBatch):
            shards: Iterable[JourneyBatch] = [source]
        elif callable(source):
            shards = source()
        else:
            shards = source
        if hasattr(shards, "__len__") and hasattr(shards, "__getitem__") and shuffle_buffer != 0:
            seq, order = shards, rng.permutation(len(shards))
            shards = (seq[int(i)] for i in order)
        for batch in _epoch(shards, bs, rng, shuffle_buffer, drop_last, validate):
            if skip:
                skip -= 1
                continue
            yield jax.device_put(batch) if as_jax else batch


def _epoch(shards, bs, rng, shuffle_buffer, drop_last, validate):
    buf: JourneyBatch | None = None
    keep = np.inf if shuffle_buffer is None else int(shuffle_buffer)
    for i, shard in enumerate(shards):
        if not isinstance(shard, JourneyBatch):
            raise TypeError(f"shards must be JourneyBatch es, got {type(shard).__name__}.")
        shard = _as_numpy(shard)
        if validate:
            try:
                validate_journeys(shard, allow_padding_rows=True)
            except (ValueError, TypeError) as err:
                raise type(err)(f"source shard {i} (in stream order): {err}") from err
        buf = shard if buf is None else _concat([buf, shard])
        if keep > 0 and np.isfinite(keep):
            buf = _take(buf, rng.permutation(_num_rows(buf)))
        while _num_rows(buf) >= bs + keep:
            yield _take(buf, slice(0, bs))
            buf = _take(buf, slice(bs, None))
    if buf is None:
        return
    if keep > 0:
        buf = _take(buf, rng.permutation(_num_rows(buf)))
    n = _num_rows(buf)
    for lo in range(0, n - bs + 1, bs):
        yield _take(buf, slice(lo, lo + bs))
    rest = n % bs
    if rest and not drop_last:
        last = _pad_rows(_take(buf, slice(n - rest, n)), bs)
        yield last


# ------------------------------------------------------------------ npz shards

_RAGGED_REQUIRED = ("offsets", "touch_ids", "timestamp")


def _open_npz(path) -> Any:
    path = pathlib.Path(os.fspath(path))
    if not path.exists():
        raise FileNotFoundError(f"journey file not found: {path}")
    try:
        data = np.load(path, allow_pickle=False)
    except (zipfile.BadZipFile, OSError, ValueError, EOFError) as err:
        raise ValueError(f"{path} is not a readable .npz file ({err}).") from err
    if not isinstance(data, np.lib.npyio.NpzFile):
        raise ValueError(f"{path} holds a single array, not an .npz archive of named arrays.")
    return data


def _read(data, key, path):
    try:
        return data[key]
    except (zipfile.BadZipFile, OSError, ValueError, EOFError) as err:
        raise ValueError(f"{path}: array {key!r} is corrupt ({err}).") from err


def load_journey_npz(path, *, max_len: int = 20) -> JourneyBatch:
    """Loads one ``.npz`` shard of journeys into a validated ``JourneyBatch``.

    Two layouts are accepted:

    * **padded**: arrays named like the ``JourneyBatch`` fields (``x``,
      ``user_id``, ``touch_ids`` ``[n, L, F]``, ``tfeat``, ``touch_mask``, ``y``,
      ``yp``, ``yp_mask``, ``ipw``; optional ``propensity``), as written by
      ``save_journey_npz``; ``max_len`` is ignored.
    * **ragged** (flat): ``offsets`` ``[n+1]``; ``touch_ids`` ``[T]`` or
      ``[T, F]``; ``timestamp`` ``[T]`` seconds; the outcome as ``y`` or
      ``label`` ``[n]``; optional ``x`` ``[n, d_x]``, ``user_id`` (or ``user``)
      ``[n]``, ``yp`` ``[T]``/``[T, P]``, ``ipw`` ``[n]``, ``propensity`` ``[T]``,
      ``end_time`` ``[n]``. Journeys longer than ``max_len`` keep their most
      recent ``max_len`` touches (see ``ragged_to_batch``).

    Args:
      path: the ``.npz`` file.
      max_len: padded length for the ragged layout.

    Returns:
      A validated ``JourneyBatch`` of NumPy arrays.

    Raises:
      FileNotFoundError: missing file.
      ValueError: unreadable/corrupt file, missing arrays, or invalid journeys.
    """
    data = _open_npz(path)
    with data:
        keys = set(data.files)
        if "touch_mask" in keys:
            missing = [f for f in JourneyBatch._fields[:9] if f not in keys]
            if missing:
                raise ValueError(f"{path}: padded layout is missing arrays {missing}.")
            arrays = {f: _read(data, f, path) for f in JourneyBatch._fields if f in keys}
            return validate_journeys(JourneyBatch(**arrays))
        missing = [k for k in _RAGGED_REQUIRED if k not in keys]
        if not ({"y", "label"} & keys):
            missing.append("y (or label)")
        if missing:
            raise ValueError(
                f"{path}: missing arrays {missing}; expected the padded JourneyBatch layout "
                f"or the ragged layout {list(_RAGGED_REQUIRED) + ['y']}. Found {sorted(keys)}."
            )
        get = lambda k: _read(data, k, path) if k in keys else None
        try:
            return ragged_to_batch(
                offsets=get("offsets"),
                touch_ids=get("touch_ids"),
                timestamp=get("timestamp"),
                y=get("y") if "y" in keys else get("label"),
                max_len=max_len,
                x=get("x"),
                user_id=get("user_id") if "user_id" in keys else get("user"),
                yp=get("yp"),
                ipw=get("ipw"),
                propensity=get("propensity"),
                end_time=get("end_time"),
            )
        except (ValueError, TypeError) as err:
            raise type(err)(f"{path}: {err}") from err


def save_journey_npz(path, batch: JourneyBatch) -> None:
    """Writes a ``JourneyBatch`` as a padded-layout ``.npz`` shard (validated first)."""
    batch = validate_journeys(_as_numpy(batch))
    arrays = {k: v for k, v in batch._asdict().items() if v is not None}
    np.savez(path, **arrays)


def host_shard_paths(
    paths: Sequence[str | os.PathLike],
    *,
    process_index: int | None = None,
    process_count: int | None = None,
) -> list[pathlib.Path]:
    """The shard files one host reads: ``paths[process_index::process_count]``.

    Host i of n takes every n-th file starting at the i-th, so the hosts read
    disjoint sets of files whose union is ``paths``, and no file is opened by
    more than one host. Give every host the same list in the same order.

    Args:
      paths: every shard file of the data set.
      process_index: this host's index i (default ``jax.process_index()``).
      process_count: the number of hosts n (default ``jax.process_count()``).

    Returns:
      This host's files, in the given order.

    Raises:
      ValueError: ``paths`` is empty, ``process_count < 1``, ``process_index``
        outside ``[0, process_count)``, or fewer files than hosts (a host
        would get no data and stall the others' collectives).

    Example:
      >>> [p.name for p in host_shard_paths(["a", "b", "c", "d", "e"],
      ...                                   process_index=1, process_count=2)]
      ['b', 'd']
    """
    if isinstance(paths, (str, os.PathLike)):
        paths = [paths]
    paths = [pathlib.Path(os.fspath(p)) for p in paths]
    if not paths:
        raise ValueError("paths is empty; expected at least one .npz shard.")
    count = jax.process_count() if process_count is None else process_count
    index = jax.process_index() if process_index is None else process_index
    for name, v in (("process_count", count), ("process_index", index)):
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)):
            raise TypeError(f"{name} must be an int, got {v!r}.")
    if count < 1:
        raise ValueError(f"process_count must be >= 1, got {count}.")
    if not 0 <= index < count:
        raise ValueError(f"process_index must lie in [0, {count}), got {index}.")
    if len(paths) < count:
        raise ValueError(
            f"{len(paths)} shard files for process_count={count} hosts; every host needs at "
            "least one file (write more, smaller shards)."
        )
    return paths[int(index) :: int(count)]


class NpzShards(Sequence):
    """A re-iterable, lazily loading sequence of ``.npz`` journey shards.

    Each item is ``load_journey_npz(paths[i], max_len=max_len)``, read from disk
    only when asked for; pass it to ``journey_batches`` with a finite
    ``shuffle_buffer`` to stream data larger than memory (memory holds the
    buffer, one batch and one shard, whatever the number of shards).

    On several hosts each host keeps only its own files,
    ``host_shard_paths(paths, process_index=..., process_count=...)``, so host
    i of n reads a disjoint part of the data set and the parts cover it. Only
    this host's files must exist on this host.

    Args:
      paths: every shard file of the data set (the same list on every host).
      max_len: padded length for ragged shards.
      process_index: this host's index (default ``jax.process_index()``).
      process_count: the number of hosts (default ``jax.process_count()``).

    Example:
      >>> import tempfile, pathlib
      >>> b = JourneyBatch(np.zeros((4, 1), np.float32), np.arange(4, dtype=np.int32),
      ...     np.zeros((4, 2, 1), np.int32), np.zeros((4, 2, 3), np.float32),
      ...     np.ones((4, 2), bool), np.zeros(4, np.float32), np.zeros((4, 2, 1), np.float32),
      ...     np.zeros((4, 2), bool), np.ones(4, np.float32))
      >>> d = pathlib.Path(tempfile.mkdtemp())
      >>> for i in range(3):
      ...     save_journey_npz(d / f"part-{i}.npz", b)
      >>> shards = NpzShards(sorted(d.glob("*.npz")), process_index=0, process_count=2)
      >>> [p.name for p in shards.paths]
      ['part-0.npz', 'part-2.npz']
    """

    def __init__(
        self,
        paths: Sequence[str | os.PathLike],
        *,
        max_len: int = 20,
        process_index: int | None = None,
        process_count: int | None = None,
    ):
        self.paths = host_shard_paths(
            paths, process_index=process_index, process_count=process_count
        )
        missing = [str(p) for p in self.paths if not p.exists()]
        if missing:
            raise FileNotFoundError(f"journey shards not found: {missing[:5]}")
        self.max_len = int(max_len)

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i):
        return load_journey_npz(self.paths[i], max_len=self.max_len)
