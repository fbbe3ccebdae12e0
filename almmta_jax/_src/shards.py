"""Journey shards on disk: the ragged ``.npz`` layout, its reader and writer, host sharding.

A shard stores journeys flat (journey i spans ``offsets[i]:offsets[i+1]`` of the
per-touch arrays) and is padded on load with ``ragged_to_batch``.
"""

from __future__ import annotations

import os
import pathlib
import zipfile
from collections.abc import Sequence
from typing import Any

import jax
import numpy as np

from almmta_jax._src.data import JourneyBatch, as_numpy, ragged_to_batch, validate_journeys
from almmta_jax._src.fields import check_ids, check_keys

_RAGGED_REQUIRED = ("offsets", "touch_ids", "timestamp")
_RAGGED_OPTIONAL = ("y", "label", "x", "user_id", "user", "yp", "ipw", "propensity", "end_time")


def open_npz(path) -> Any:
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


def read_npz_array(data, key, path):
    try:
        return data[key]
    except (zipfile.BadZipFile, OSError, ValueError, EOFError) as err:
        raise ValueError(f"{path}: array {key!r} is corrupt ({err}).") from err


def _check_vocab(batch: JourneyBatch, vocab_sizes, path) -> None:
    ids = batch.touch_ids
    if len(vocab_sizes) != ids.shape[2]:
        raise ValueError(
            f"{path}: touch_ids has {ids.shape[2]} fields but vocab_sizes declares "
            f"{len(vocab_sizes)}."
        )
    for f, v in enumerate(vocab_sizes):
        check_ids(f"{path}: touch_ids field {f}", ids[..., f], upper=v)


def load_journey_npz(path, *, max_len: int = 20, vocab_sizes=None) -> JourneyBatch:
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

    An array name that is not one of these but is a close spelling of one
    (``user_ids`` for ``user_id``) is refused with the suggestion, rather than
    silently ignored.

    Args:
      path: the ``.npz`` file.
      max_len: padded length for the ragged layout.
      vocab_sizes: the declared number of ids of each touch id field (the
        model's ``ModelConfig.vocab_sizes``); when given, every touch id must
        lie in ``[0, vocab_sizes[f])``. The embedding folds larger ids with
        ``mod``, so pass it to catch ids from a different vocabulary. Off
        (None) by default.

    Returns:
      A validated ``JourneyBatch`` of NumPy arrays.

    Raises:
      FileNotFoundError: missing file.
      ValueError: unreadable/corrupt file, missing arrays, an unknown array
        named like a known one, or invalid journeys (ids out of range, labels
        not 0/1, NaN); every message starts with the file.
    """
    batch = _load_journey_npz(path, max_len)
    if vocab_sizes is not None:
        _check_vocab(batch, tuple(vocab_sizes), path)
    return batch


def _load_journey_npz(path, max_len):
    data = open_npz(path)
    with data:
        keys = set(data.files)
        if "touch_mask" in keys:
            check_keys(keys, JourneyBatch._fields, path)
            missing = [f for f in JourneyBatch._fields[:9] if f not in keys]
            if missing:
                raise ValueError(f"{path}: padded layout is missing arrays {missing}.")
            arrays = {f: read_npz_array(data, f, path) for f in JourneyBatch._fields if f in keys}
            try:
                return validate_journeys(JourneyBatch(**arrays))
            except (ValueError, TypeError) as err:
                raise type(err)(f"{path}: {err}") from err
        check_keys(keys, _RAGGED_REQUIRED + _RAGGED_OPTIONAL, path)
        missing = [k for k in _RAGGED_REQUIRED if k not in keys]
        if not ({"y", "label"} & keys):
            missing.append("y (or label)")
        if missing:
            raise ValueError(
                f"{path}: missing arrays {missing}; expected the padded JourneyBatch layout "
                f"or the ragged layout {list(_RAGGED_REQUIRED) + ['y']}. Found {sorted(keys)}."
            )
        get = lambda k: read_npz_array(data, k, path) if k in keys else None
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
    batch = validate_journeys(as_numpy(batch))
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
        vocab_sizes=None,
    ):
        self.paths = host_shard_paths(
            paths, process_index=process_index, process_count=process_count
        )
        missing = [str(p) for p in self.paths if not p.exists()]
        if missing:
            raise FileNotFoundError(f"journey shards not found: {missing[:5]}")
        self.max_len = int(max_len)
        self.vocab_sizes = vocab_sizes

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i):
        return load_journey_npz(self.paths[i], max_len=self.max_len, vocab_sizes=self.vocab_sizes)
