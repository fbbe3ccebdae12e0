"""Domain checks for id and label fields, run on the host before any narrowing cast.

Every check names the field and the first offending row, so a loader can prefix
the file and report exactly where a value is outside its domain.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable

import numpy as np

INT32_MAX = np.iinfo(np.int32).max


def first_row(bad: np.ndarray) -> str:
    """``"row r (n such rows)"``: the first row of a ``[N, ...]`` mask holding a True."""
    rows = np.flatnonzero(bad.reshape(bad.shape[0], -1).any(axis=1))
    return f"row {int(rows[0])} ({rows.size} such rows)"


def check_ids(name: str, values, *, upper: int | None = None) -> np.ndarray:
    """Checks integer ids and returns them as int64, ready to be narrowed to int32.

    Args:
      name: the field name used in errors.
      values: an array of ids; floats are accepted only when integer-valued.
      upper: exclusive upper bound (a declared vocabulary size); ``2**31 - 1``
        (the int32 range) when None.

    Returns:
      ``values`` as an int64 array.

    Raises:
      TypeError: ``values`` is neither integer nor floating point.
      ValueError: a non-finite or fractional value, a negative id, or an id at or
        above ``upper`` (or beyond int32); the first offending row is named.
    """
    a = np.asarray(values)
    if a.size == 0:
        return a.astype(np.int64)
    if np.issubdtype(a.dtype, np.floating):
        bad = ~np.isfinite(a) | (a != np.round(a))
        if bad.any():
            v = a[bad].flat[0]
            raise ValueError(f"{name} must hold integer ids; {first_row(bad)} holds {v!r}.")
    elif not np.issubdtype(a.dtype, np.integer):
        raise TypeError(f"{name} has dtype {a.dtype}; expected integers.")
    if (a < 0).any():
        bad = a < 0
        v = a[bad].flat[0]
        raise ValueError(f"{name} must be >= 0; {first_row(bad)} holds {v}.")
    top = INT32_MAX + 1 if upper is None else int(upper)
    if (a >= top).any():
        bad = a >= top
        v = a[bad].flat[0]
        what = "the int32 range" if upper is None else f"the declared vocabulary size {top}"
        raise ValueError(f"{name} must be < {top} ({what}); {first_row(bad)} holds {v}.")
    return a.astype(np.int64)


def check_binary(name: str, values) -> np.ndarray:
    """Checks a 0/1 label array (NaN refused) and returns it; names the first bad row."""
    a = np.asarray(values)
    bad = ~((a == 0) | (a == 1))
    if bad.any():
        raise ValueError(f"{name} must be binary (0/1); {first_row(bad)} holds {a[bad].flat[0]!r}.")
    return a


def check_keys(keys: Iterable[str], known: Iterable[str], path) -> None:
    """Refuses an unknown array name that is a close spelling of a known one.

    Args:
      keys: the array names found in a file.
      known: every name the reader understands (required and optional).
      path: the file, for the message.

    Raises:
      ValueError: naming the unknown array and the known name it resembles.
    """
    known = list(known)
    lower = {k.lower(): k for k in known}
    for key in sorted(set(keys) - set(known)):
        close = difflib.get_close_matches(key.lower(), list(lower), n=1, cutoff=0.75)
        if close:
            close = [lower[close[0]]]
            raise ValueError(
                f"{path}: unknown array {key!r}; did you mean {close[0]!r}? Rename it (an "
                "unrecognised optional array would otherwise be ignored)."
            )


def check_model_ids(batch, config, name: str) -> None:
    """Checks a batch's ids against the model's declared vocabularies, on the host.

    Ids of the wrong shape are left to the trace-time shape check. Touch ids at
    valid touches must lie below ``config.vocab_sizes[f]`` for every
    field f the model does not hash (``hash_buckets`` at or above the
    vocabulary); a hashed field only needs ids in the int32 range. User ids must
    lie below ``config.num_users`` when the model embeds them
    (``num_users > 0``). Padding touches are not checked.

    Args:
      batch: a ``JourneyBatch`` with concrete (host or device) arrays.
      config: the ``ModelConfig`` the batch is fed to.
      name: what the batch is called in errors (``"data"``, ``"batch"``).

    Raises:
      ValueError: an id outside its declared vocabulary; the message names the
        field and the first offending row (journey).
    """
    ids = np.asarray(batch.touch_ids)
    mask = np.asarray(batch.touch_mask).astype(bool)
    if ids.ndim != 3 or ids.shape[-1] != len(config.vocab_sizes) or mask.shape != ids.shape[:2]:
        return  # a shape error, reported with both shapes when the step is traced
    cap = getattr(config, "hash_buckets", None)
    for f, vocab in enumerate(config.vocab_sizes):
        hashed = cap is not None and int(cap) < int(vocab)
        field = np.where(mask, ids[..., f], 0)
        upper = None if hashed else int(vocab)
        check_ids(f"{name}.touch_ids[..., {f}] (config.vocab_sizes[{f}])", field, upper=upper)
    if config.num_users > 0:
        check_ids(
            f"{name}.user_id (config.num_users)",
            np.asarray(batch.user_id),
            upper=int(config.num_users),
        )
