"""Where data enters the DRGrad trainer: the splits and streamed batches, checked on the host.

``make_train`` checks every split once, before anything compiles: shapes against
the data's declared sizes, finite features and labels, 0/1 labels, integer ids
within the tighter of the data's and the model's vocabularies. ``Trainer.step``
applies the same id and label rules to each streamed batch (non-finite values
are left to the step's guard). Every message names the split, the field and
the first bad row (README, *Bad inputs*).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import numpy as np

from drgrad_jax._src.data import MultiTaskData, Split


def check_split(split: Any, name: str, data: MultiTaskData) -> None:
    """Shapes, dtypes and values of one split (host-side, once, before compiling)."""
    if not isinstance(split, Split):
        raise TypeError(f"{name} must be a Split; got {type(split).__name__}.")
    n = int(np.shape(split.labels)[0]) if np.ndim(split.labels) else -1
    f, d, k = len(data.vocab_sizes), data.num_dense, data.num_tasks
    want = {
        "cat": ((n, f), "[N, len(data.vocab_sizes)]"),
        "dense": ((n, d), "[N, data.num_dense]"),
        "labels": ((n, k), "[N, data.num_tasks]"),
    }
    if data.num_users and split.user is not None:
        want["user"] = ((n,), "[N]")
    for field, (shape, rule) in want.items():
        got = np.shape(getattr(split, field))
        if got != shape:
            raise ValueError(
                f"{name}.{field} has shape {got}; expected {shape} ({rule} with N = {n}, "
                f"the rows of {name}.labels)."
            )
    for field in ("dense", "labels"):
        value = np.asarray(getattr(split, field))
        bad = ~np.isfinite(value)
        if bad.any():
            rows = np.flatnonzero(bad.any(axis=1))
            raise ValueError(
                f"{name}.{field} holds {int(bad.sum())} non-finite value(s) (NaN/Inf) in "
                f"{rows.size} row(s), first at row {int(rows[0])}; clean or drop them first."
            )
    labels = np.asarray(split.labels)
    bad = ~np.isin(labels, (0.0, 1.0))
    if bad.any():
        rows = np.flatnonzero(bad.reshape(n, -1).any(axis=1))
        raise ValueError(
            f"{name}.labels must be 0/1; {rows.size} row(s) hold other values, first at row "
            f"{int(rows[0])}: {float(labels[bad][0])!r}."
        )


def id_bounds(data: MultiTaskData, abstract: Any) -> dict[str, list[tuple[int, str]]]:
    """Exclusive upper bounds of the ids, per field: the data's and the model's, the tighter."""
    cat = [(int(v), f"data.vocab_sizes[{f}]") for f, v in enumerate(data.vocab_sizes)]
    model_vocab = getattr(getattr(abstract, "encoder", None), "vocab_sizes", None)
    for f, v in enumerate(model_vocab or ()):
        if f < len(cat) and int(v) < cat[f][0]:
            cat[f] = (int(v), f"the model's vocab_sizes[{f}]")
    user = [(int(data.num_users), "data.num_users")] if data.num_users else []
    embed = getattr(abstract, "user_embed", None)
    if embed is not None and hasattr(embed, "num_embeddings"):
        if not user or int(embed.num_embeddings) < user[0][0]:
            user = [(int(embed.num_embeddings), "the model's num_users")]
    return {"cat": cat, "user": user}


def check_ids(split: Split, name: str, bounds: dict) -> None:
    """Categorical and user ids are integers in ``[0, bound)``; names the first bad row."""
    for field in ("cat", "user"):
        value = getattr(split, field)
        if value is None or not bounds[field] or np.size(value) == 0:
            continue
        ids = np.asarray(value)
        if not np.issubdtype(ids.dtype, np.integer):
            raise TypeError(f"{name}.{field} must hold integer ids; got dtype {ids.dtype}.")
        ids = ids.reshape(ids.shape[0], -1)
        if ids.shape[1] != len(bounds[field]):
            continue  # a shape error, reported by the shape checks
        high = np.asarray([b for b, _ in bounds[field]])[None, :]
        bad = (ids < 0) | (ids >= high)
        if bad.any():
            row, col = (int(i[0]) for i in np.nonzero(bad))
            where = f"{name}.cat[{row}, {col}]" if field == "cat" else f"{name}.user[{row}]"
            raise ValueError(
                f"{where} = {int(ids[row, col])} is outside [0, {bounds[field][col][1]}="
                f"{bounds[field][col][0]})."
            )


def check_data(data: MultiTaskData) -> None:
    """Checks the three splits of ``data`` (``check_split``)."""
    for name in ("train", "val", "test"):
        check_split(getattr(data, name), f"data.{name}", data)


def batch_checker(want_batch: Split, bounds: dict) -> Callable[[Any], None]:
    """Host-side check of a streamed batch: shapes as the training split's, ids, 0/1 labels.

    Non-finite values are left to the step's guard (the step is skipped and
    counted); a finite label other than 0/1 and an id out of range are refused.
    """

    def check_batch(batch):
        if not isinstance(batch, Split):
            raise TypeError(f"batch must be a Split; got {type(batch).__name__}.")
        for field in ("cat", "dense", "labels", "user"):
            want, got = getattr(want_batch, field), getattr(batch, field)
            if (want is None) != (got is None):
                raise ValueError(
                    f"batch.{field} is {'missing' if got is None else 'unexpected'}; the training "
                    f"data {'has' if want is not None else 'has no'} {field}."
                )
            if want is not None and np.shape(got)[1:] != tuple(np.shape(want))[1:]:
                raise ValueError(
                    f"batch.{field} has shape {np.shape(got)}; expected "
                    f"[B, *{tuple(np.shape(want))[1:]}] as in the training data."
                )
        n = {np.shape(x)[0] for x in jax.tree.leaves(batch) if x is not None}
        if len(n) != 1:
            raise ValueError(f"batch fields have different leading sizes {sorted(n)}.")
        labels = np.asarray(batch.labels)
        bad = np.isfinite(labels) & ~np.isin(labels, (0.0, 1.0))
        if bad.any():
            row = int(np.flatnonzero(bad.reshape(labels.shape[0], -1).any(axis=1))[0])
            raise ValueError(
                f"batch.labels must be 0/1; row {row} holds {float(labels[bad][0])!r}."
            )
        check_ids(batch, "batch", bounds)

    return check_batch
