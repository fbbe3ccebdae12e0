"""Streaming fixed-size journey batches with a seeded shuffle buffer.

``journey_batches`` reads one in-memory ``JourneyBatch`` or any iterable of
shards (e.g. ``NpzShards`` on disk), so data larger than memory can flow through
a training loop; the last batch may be padded with all-padding rows carrying
``ipw = 0``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence

import jax
import numpy as np

from almmta_jax._src.data import JourneyBatch, as_numpy, validate_journeys


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
        shard = as_numpy(shard)
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
