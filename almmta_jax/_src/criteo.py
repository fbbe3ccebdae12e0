"""Criteo attribution journeys: the shipped CausalMTA split and the raw-TSV converter.

The Criteo Attribution Modeling for Bidding data set (Diemert et al., 2017) after
CausalMTA's preprocessing (top-10 campaigns, journeys by user and conversion id,
non-converting impressions split at gaps over 3 days, journeys shorter than 3
dropped, test users a subset of train users) is stored flat: journey i spans
``offsets[i]:offsets[i+1]`` of the per-touch arrays (see docs/almmta.md, *Criteo journeys*).

``load_criteo_attribution`` turns one split into a ``JourneyBatch`` with the
project's surrogate proxy; ``convert_criteo_raw`` rebuilds the same flat layout
from the raw ``criteo_attribution_dataset.tsv.gz`` at a user-given path.

References:
  Diemert et al., "Attribution Modeling Increases Efficiency of Bidding in Display
  Advertising", AdKDD 2017, https://arxiv.org/abs/1707.06409.
  Yao et al., "CausalMTA: Eliminating the User Confounding Bias for Causal
  Multi-touch Attribution", KDD 2022, https://arxiv.org/abs/2201.00689.
"""

from __future__ import annotations

import gzip
import itertools
import os
import pathlib
from typing import Literal

import numpy as np

from almmta_jax._src.data import JourneyBatch, check_offsets, ragged_to_batch
from almmta_jax._src.fields import check_binary, check_ids
from almmta_jax._src.shards import open_npz, read_npz_array

CRITEO_TOUCH_FIELDS = ("campaign",)
"""Column order of ``touch_ids`` in Criteo batches."""

CRITEO_VOCAB_SIZES = (10,)
"""Vocabulary of each ``touch_ids`` column (campaigns 0..9)."""

CRITEO_NUM_USERS = 157_332
"""User ids of the shipped split (train and test share them): 0..157,331."""

CRITEO_PROXY_TAU_S = 86_400.0
"""Time scale of the recency proxy channel, 1 day in seconds."""

CRITEO_SPLITS = ("train", "test")

_FLAT_REQUIRED = ("offsets", "user", "label", "campaign", "timestamp")


def _split_path(path, split: str) -> pathlib.Path:
    if split not in CRITEO_SPLITS:
        raise ValueError(f"split must be one of {CRITEO_SPLITS}, got {split!r}.")
    p = pathlib.Path(os.fspath(path))
    if p.is_dir():
        p = p / f"{split}.npz"
    if not p.exists():
        raise FileNotFoundError(
            f"Criteo {split} journeys not found at {p}; pass the directory holding "
            "train.npz/test.npz (see the data README)."
        )
    return p


def load_criteo_flat(path, split: Literal["train", "test"] = "train") -> dict[str, np.ndarray]:
    """The validated flat arrays of one Criteo split (see docs/almmta.md, *Criteo journeys*).

    Args:
      path: directory holding ``train.npz`` and ``test.npz`` (or one ``.npz`` file).
      split: "train" or "test".

    Returns:
      A dict with ``offsets`` int64 [n+1], ``user`` [n], ``label`` [n],
      ``campaign`` [T], ``timestamp`` [T] and whichever of ``cat1_9`` [T, 9],
      ``cost``, ``cpo``, ``click`` [T] the file holds.

    Raises:
      FileNotFoundError: the file is missing.
      ValueError: unreadable file, missing arrays, inconsistent lengths, labels
        that are not 0/1, campaigns outside 0..9, or time running backwards.
    """
    p = _split_path(path, split)
    data = open_npz(p)
    with data:
        missing = [k for k in _FLAT_REQUIRED if k not in data.files]
        if missing:
            raise ValueError(f"{p}: missing arrays {missing}; found {sorted(data.files)}.")
        out = {k: read_npz_array(data, k, p) for k in data.files}
    T = out["campaign"].shape[0]
    for k in ("timestamp", "cat1_9", "cost", "cpo", "click"):
        if k in out and out[k].shape[0] != T:
            raise ValueError(
                f"{p}: {k} has {out[k].shape[0]} rows but campaign has {T}; per-touch arrays "
                "must have equal length."
            )
    try:
        out["offsets"] = check_offsets(out["offsets"], T)
    except (ValueError, TypeError) as err:
        raise ValueError(f"{p}: {err}") from err
    n = out["offsets"].shape[0] - 1
    for k in ("user", "label"):
        if out[k].shape != (n,):
            raise ValueError(f"{p}: {k} has shape {out[k].shape}; expected ({n},) from offsets.")
    try:
        check_ids("campaign", out["campaign"], upper=CRITEO_VOCAB_SIZES[0])
        check_ids("user", out["user"])
        check_binary("label", out["label"])
    except (ValueError, TypeError) as err:
        raise type(err)(f"{p}: {err}") from err
    return out


def criteo_proxy(timestamp, offsets, label) -> np.ndarray:
    r"""The two-channel surrogate proxy (docs/almmta.md, *Criteo proxy*), flat ``[T, 2]`` float32.

    On converting journeys, with ``t_end`` the journey's last touch:

    .. math:: y'_{j,1} = \exp(-(t_{end} - t_j) / \tau), \quad \tau = 1\ \mathrm{day};
      \qquad y'_{j,2} = 1[j \text{ is the last touch}],

    and 0 on non-converting journeys. It encodes a recency / last-touch prior,
    not inspiration (a documented deviation).
    """
    ts = np.asarray(timestamp, np.float64)
    off = check_offsets(offsets, ts.shape[0])
    lengths = np.diff(off)
    label = np.asarray(label)
    end = np.repeat(ts[np.maximum(off[1:] - 1, 0)], lengths)
    conv = np.repeat(label == 1, lengths)
    recency = np.exp(-np.maximum(end - ts, 0.0) / CRITEO_PROXY_TAU_S)
    last = np.zeros(ts.shape[0], bool)
    last[off[1:][lengths > 0] - 1] = True
    yp = np.stack([recency, last.astype(np.float64)], axis=1)
    return np.where(conv[:, None], yp, 0.0).astype(np.float32)


CRITEO_HISTORY_DIM = 11
"""Columns of ``criteo_journey_history``: 10 campaign shares, log1p(earlier journeys)."""


def _journey_history(target: dict, source: dict, num_campaigns: int = 10) -> np.ndarray:
    """Per-journey history of ``target`` journeys from ``source`` touches (docs/almmta.md, *Criteo history covariate*).

    Row i describes what journey i's user had been shown before the journey
    began: with ``s_i`` its first touch time and ``u_i`` its user,

    * columns 0..K-1: campaign shares of the ``source`` touches of ``u_i`` with
      time ``< s_i`` (normalized to sum 1; all zero without such touches);
    * column K: ``log1p`` of the number of ``source`` journeys of ``u_i`` that
      start before ``s_i``.

    Every touch of journey i is at or after ``s_i``, so the row never contains
    the journey it describes, even when ``target`` is ``source``.

    Args:
      target: flat arrays ``offsets``, ``user``, ``timestamp`` of the described journeys.
      source: flat arrays ``offsets``, ``user``, ``timestamp``, ``campaign`` (the history).
      num_campaigns: K, campaign ids are ``0..K-1``.

    Returns:
      ``[n_target, K + 1]`` float32.
    """
    t_off, s_off = np.asarray(target["offsets"]), np.asarray(source["offsets"])
    t_user = np.asarray(target["user"], np.int64)
    s_user = np.asarray(source["user"], np.int64)
    s_ts = np.asarray(source["timestamp"], np.int64)
    t_start = np.asarray(target["timestamp"], np.int64)[t_off[:-1]]
    lo = min(int(s_ts.min(initial=0)), int(t_start.min(initial=0)))
    span = max(int(s_ts.max(initial=0)), int(t_start.max(initial=0))) - lo + 1
    top = max(int(s_user.max(initial=0)), int(t_user.max(initial=0))) + 1
    if span * top >= 2**62:
        raise ValueError(f"timestamps span {span} s over {top} users: too wide to key in int64.")
    base = t_user * span
    query = base + (t_start - lo)

    def before(keys: np.ndarray) -> np.ndarray:
        keys = np.sort(keys)
        return np.searchsorted(keys, query, "left") - np.searchsorted(keys, base, "left")

    touch_key = np.repeat(s_user, np.diff(s_off)) * span + (s_ts - lo)
    camp = np.asarray(source["campaign"], np.int64)
    counts = np.stack([before(touch_key[camp == c]) for c in range(num_campaigns)], 1)
    total = counts.sum(1, keepdims=True)
    shares = np.divide(counts, total, out=np.zeros(counts.shape), where=total > 0)
    journeys = before(s_user * span + (s_ts[s_off[:-1]] - lo))
    return np.concatenate([shares, np.log1p(journeys)[:, None]], 1).astype(np.float32)


def criteo_journey_history(path, split: Literal["train", "test"] = "train") -> np.ndarray:
    """The history covariate of every journey of one split (docs/almmta.md, *Criteo history covariate*).

    The history of the split's journeys from the train split's touches:
    a journey's row summarizes its user's train touches strictly before the
    journey's first touch (campaign shares) and the number of the user's train
    journeys begun before it. It never contains the journey itself, and train
    and test rows are built by the same rule (test journeys see the train
    journeys that precede them in time, not later ones).

    Args:
      path: directory holding ``train.npz`` and ``test.npz`` (a single ``.npz``
        file is accepted for ``split="train"`` only).
      split: "train" or "test".

    Returns:
      ``[n_journeys, CRITEO_HISTORY_DIM]`` float32, rows in the split's journey order.

    Raises:
      ValueError: ``split="test"`` with a single file (the train split is needed).
    """
    p = pathlib.Path(os.fspath(path))
    if split == "test" and not p.is_dir():
        raise ValueError(
            f"path {p} is a single file; the test split's history needs the directory "
            "holding train.npz and test.npz."
        )
    source = load_criteo_flat(path, "train")
    target = source if split == "train" else load_criteo_flat(path, split)
    return _journey_history(target, source, CRITEO_VOCAB_SIZES[0])


def load_criteo_attribution(
    path,
    split: Literal["train", "test"] = "train",
    *,
    max_len: int = 20,
    history: bool = False,
) -> JourneyBatch:
    """One split of the shipped Criteo journeys as a ``JourneyBatch`` (docs/almmta.md, *Criteo journeys*).

    * ``touch_ids``: ``[n, L, 1]`` campaign ids 0..9 (``CRITEO_TOUCH_FIELDS``,
      ``CRITEO_VOCAB_SIZES``).
    * ``tfeat``: log1p(hours to the journey end, the last touch; the conversion
      time is not shipped), log1p(hours since the previous touch), position from
      the end / L.
    * ``yp``: ``[n, L, 2]``, the surrogate proxy of ``criteo_proxy``; ``yp_mask``
      is ``touch_mask & (y == 1)``.
    * ``x``: ``[n, 1]`` ones: Criteo ships no dense user features; the user
      enters through ``user_id`` (contiguous ids, shared by train and test).
      With ``history=True``, ``x`` is ``criteo_journey_history(path, split)``
      instead: ``[n, 11]``, the user's train touches before the journey began.
    * ``ipw``: ones.

    Journeys longer than ``max_len`` keep their most recent ``max_len`` touches
    (261 train / 152 test journeys exceed 20), so the journey counts are
    unchanged: 164,647 train and 31,913 test journeys, 19,890 converting.

    Args:
      path: directory holding ``train.npz``/``test.npz`` (or one split's file).
      split: "train" or "test".
      max_len: padded length L.
      history: put the per-journey history covariate in ``x`` (needs the
        directory holding both splits when ``split="test"``).

    Returns:
      A validated ``JourneyBatch`` of NumPy arrays.
    """
    flat = load_criteo_flat(path, split)
    off, ts = flat["offsets"], flat["timestamp"]
    x = None
    if history:
        x = criteo_journey_history(path, split)
    try:
        return ragged_to_batch(
            offsets=off,
            touch_ids=flat["campaign"].astype(np.int64),
            timestamp=ts,
            y=flat["label"],
            max_len=max_len,
            user_id=flat["user"],
            x=x,
            yp=criteo_proxy(ts, off, flat["label"]),
        )
    except (ValueError, TypeError) as err:
        raise type(err)(f"Criteo {split} split at {path}: {err}") from err


# ------------------------------------------------------------- raw converter

_RAW_COLUMNS = (
    "timestamp",
    "uid",
    "campaign",
    "conversion",
    "conversion_timestamp",
    "conversion_id",
    "attribution",
    "click",
    "click_pos",
    "click_nb",
    "cost",
    "cpo",
    "time_since_last_click",
) + tuple(f"cat{i}" for i in range(1, 10))
_ID_COLUMNS = ("timestamp", "uid", "campaign", "conversion_id", "click") + tuple(
    f"cat{i}" for i in range(1, 10)
)
_KEEP = ("timestamp", "uid", "campaign", "conversion_id", "click", "cost", "cpo") + tuple(
    f"cat{i}" for i in range(1, 10)
)


def _open_text(path: pathlib.Path):
    if path.suffix == ".gz":
        return gzip.open(path, "rt", encoding="utf-8", newline="")
    return open(path, encoding="utf-8", newline="")


def _raw_chunks(path: pathlib.Path, columns: tuple[str, ...], chunk_rows: int):
    """Yields ``{column: float64 array}`` chunks of the raw TSV (header checked)."""
    try:
        f = _open_text(path)
        header = f.readline()
    except (OSError, EOFError, UnicodeDecodeError) as err:
        raise ValueError(f"{path} is not a readable (gzipped) TSV file ({err}).") from err
    with f:
        names = header.rstrip("\r\n").split("\t")
        missing = [c for c in columns if c not in names]
        if missing:
            raise ValueError(
                f"{path}: header lacks columns {missing}; expected the Criteo attribution "
                f"TSV header {list(_RAW_COLUMNS)}, got {names[:24]}."
            )
        cols = [names.index(c) for c in columns]
        line_no = 1
        while True:
            try:
                lines = list(itertools.islice(f, chunk_rows))
            except (OSError, EOFError, UnicodeDecodeError) as err:
                raise ValueError(f"{path}: read error after line {line_no} ({err}).") from err
            if not lines:
                return
            try:
                arr = np.loadtxt(lines, delimiter="\t", dtype=np.float64, usecols=cols, ndmin=2)
            except ValueError as err:
                raise ValueError(
                    f"{path}: malformed rows between lines {line_no + 1} and "
                    f"{line_no + len(lines)} ({err})."
                ) from err
            if not np.all(np.isfinite(arr)):
                r, c = np.argwhere(~np.isfinite(arr))[0]
                raise ValueError(
                    f"{path}:{line_no + 1 + r}: column {columns[c]} is not finite ({arr[r, c]})."
                )
            for i, c in enumerate(columns):
                frac = np.flatnonzero(arr[:, i] != np.round(arr[:, i]))
                if c in _ID_COLUMNS and frac.size:
                    raise ValueError(
                        f"{path}:{line_no + 1 + frac[0]}: column {c} must hold integer ids; "
                        f"found {arr[frac[0], i]!r}."
                    )
            line_no += len(lines)
            yield {c: arr[:, i] for i, c in enumerate(columns)}


def criteo_raw_journeys(
    tsv_path,
    *,
    top_campaigns: int = 10,
    gap_seconds: float = 259_200.0,
    min_len: int = 3,
    chunk_rows: int = 1_000_000,
) -> dict[str, np.ndarray]:
    """Builds CausalMTA-style journeys from the raw Criteo attribution TSV.

    See docs/almmta.md, *Criteo journeys*.

    1. Stream the file in chunks (two passes) and keep the ``top_campaigns``
       campaigns with the most impressions, remapped to 0.. by ascending raw id.
    2. Impressions with ``conversion_id != -1`` form journeys by (uid,
       conversion_id), in time order, label 1.
    3. Impressions with ``conversion_id == -1`` form journeys by uid, in time
       order, split wherever two touches are more than ``gap_seconds`` apart,
       label 0.
    4. Journeys shorter than ``min_len`` are dropped; uids are remapped to
       contiguous ids by ascending raw uid. Journeys are ordered by (user, start).

    Args:
      tsv_path: ``criteo_attribution_dataset.tsv.gz`` (or an uncompressed TSV)
        with its header row.
      top_campaigns: campaigns kept.
      gap_seconds: session gap of non-converting journeys (3 days).
      min_len: shortest journey kept.
      chunk_rows: rows parsed per chunk.

    Returns:
      Flat arrays: ``offsets``, ``user`` int32, ``label`` int8, ``campaign``
      int16, ``timestamp`` int64, ``cat1_9`` int64 [T, 9], ``cost``, ``cpo``
      float64, ``click`` int8, and ``campaign_raw`` (the kept raw ids, in the
      order of the new ids).
    """
    path = pathlib.Path(os.fspath(tsv_path))
    if not path.exists():
        raise FileNotFoundError(f"raw Criteo TSV not found: {path}")
    if int(top_campaigns) < 1 or int(min_len) < 1 or int(chunk_rows) < 1:
        raise ValueError("top_campaigns, min_len and chunk_rows must be >= 1.")
    counts: dict[int, int] = {}
    for chunk in _raw_chunks(path, ("campaign",), chunk_rows):
        ids, cnt = np.unique(chunk["campaign"].astype(np.int64), return_counts=True)
        for i, c in zip(ids.tolist(), cnt.tolist()):
            counts[i] = counts.get(i, 0) + c
    if not counts:
        raise ValueError(f"{path} holds a header but no impressions.")
    # Most impressions first; ties broken by the smaller raw id.
    ranked = sorted(counts, key=lambda k: (-counts[k], k))[: int(top_campaigns)]
    kept = np.array(sorted(ranked), dtype=np.int64)

    parts: dict[str, list[np.ndarray]] = {c: [] for c in _KEEP}
    for chunk in _raw_chunks(path, _KEEP, chunk_rows):
        sel = np.isin(chunk["campaign"].astype(np.int64), kept)
        for c in _KEEP:
            parts[c].append(chunk[c][sel])
    rows = {c: np.concatenate(v) for c, v in parts.items()}
    ts = rows["timestamp"].astype(np.int64)
    uid = rows["uid"].astype(np.int64)
    conv_id = rows["conversion_id"].astype(np.int64)
    n_rows = ts.shape[0]
    order_in_file = np.arange(n_rows)

    converting = conv_id != -1
    # Sort: converting first by (uid, conversion_id, time); then non-converting by (uid, time).
    group2 = np.where(converting, conv_id, -1)
    order = np.lexsort((order_in_file, ts, group2, uid, ~converting))
    uid_s, g2_s, ts_s, conv_s = uid[order], group2[order], ts[order], converting[order]
    new = np.ones(n_rows, bool)
    if n_rows:
        new[1:] = (
            (uid_s[1:] != uid_s[:-1])
            | (g2_s[1:] != g2_s[:-1])
            | (conv_s[1:] != conv_s[:-1])
            | (~conv_s[1:] & (ts_s[1:] - ts_s[:-1] > gap_seconds))
        )
    starts = np.flatnonzero(new)
    ends = np.append(starts[1:], n_rows)
    lengths = ends - starts
    keep_j = lengths >= int(min_len)
    starts, lengths = starts[keep_j], lengths[keep_j]
    j_uid = uid_s[starts]
    j_start = ts_s[starts]
    j_order = np.lexsort((j_start, j_uid))
    starts, lengths, j_uid = starts[j_order], lengths[j_order], j_uid[j_order]
    touch = order[np.repeat(starts, lengths) + _ranges(lengths)]
    offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
    users, user = np.unique(j_uid, return_inverse=True)
    cats = np.stack([rows[f"cat{i}"][touch] for i in range(1, 10)], axis=1).astype(np.int64)
    return {
        "offsets": offsets,
        "user": user.astype(np.int32),
        "label": conv_s[starts].astype(np.int8),
        "campaign": np.searchsorted(kept, rows["campaign"][touch].astype(np.int64)).astype(
            np.int16
        ),
        "timestamp": ts[touch],
        "cat1_9": cats,
        "cost": rows["cost"][touch],
        "cpo": rows["cpo"][touch],
        "click": rows["click"][touch].astype(np.int8),
        "campaign_raw": kept,
        "uid_raw": users,
    }


def _ranges(lengths: np.ndarray) -> np.ndarray:
    """Concatenated ``arange(l)`` for each l in ``lengths``."""
    total = int(lengths.sum())
    if total == 0:
        return np.zeros(0, np.int64)
    starts = np.repeat(np.cumsum(lengths) - lengths, lengths)
    return np.arange(total) - starts


def split_journeys(
    offsets, user, *, test_fraction: float = 0.162, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """Seeded journey split: each user's earliest journey stays in train.

    A random ``test_fraction`` of the remaining journeys goes to test, so test
    users are a subset of train users. Journeys must be ordered by (user, start).

    Returns:
      ``(train_index, test_index)`` sorted journey indices.
    """
    if not 0.0 <= test_fraction < 1.0:
        raise ValueError(f"test_fraction must be in [0, 1), got {test_fraction}.")
    user = np.asarray(user)
    n = user.shape[0]
    first = np.ones(n, bool)
    first[1:] = user[1:] != user[:-1]
    rest = np.flatnonzero(~first)
    rng = np.random.Generator(np.random.PCG64(int(seed)))
    n_test = int(round(test_fraction * rest.size))
    test = np.sort(rng.choice(rest, size=n_test, replace=False)) if n_test else rest[:0]
    train = np.setdiff1d(np.arange(n), test)
    return train, test


def _subset(flat: dict[str, np.ndarray], idx: np.ndarray) -> dict[str, np.ndarray]:
    off = flat["offsets"]
    lengths = np.diff(off)[idx]
    touch = np.repeat(off[:-1][idx], lengths) + _ranges(lengths)
    out = {
        "offsets": np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64),
        "user": flat["user"][idx],
        "label": flat["label"][idx],
    }
    for k in ("campaign", "timestamp", "cat1_9", "cost", "cpo", "click"):
        out[k] = flat[k][touch]
    return out


def convert_criteo_raw(
    tsv_path,
    out_dir,
    *,
    seed: int = 0,
    test_fraction: float = 0.162,
    top_campaigns: int = 10,
    gap_seconds: float = 259_200.0,
    min_len: int = 3,
    chunk_rows: int = 1_000_000,
) -> dict[str, pathlib.Path]:
    """Converts the raw Criteo TSV into ``train.npz``/``test.npz`` in the shipped layout.

    Runs ``criteo_raw_journeys`` then ``split_journeys`` and writes both splits
    with ``offsets``, ``user``, ``label``, ``campaign``, ``timestamp``,
    ``cat1_9``, ``cost``, ``cpo`` and ``click`` (the shipped train split lacks
    the last four; this converter keeps them for both). The seeded split does not
    reproduce the shipped one, which stays authoritative.

    Args:
      tsv_path: raw ``criteo_attribution_dataset.tsv.gz``.
      out_dir: output directory (created if needed).
      seed: split seed.
      test_fraction: share of non-first journeys sent to test.
      top_campaigns, gap_seconds, min_len, chunk_rows: see ``criteo_raw_journeys``.

    Returns:
      ``{"train": path, "test": path}``; load them with ``load_criteo_attribution``.
    """
    flat = criteo_raw_journeys(
        tsv_path,
        top_campaigns=top_campaigns,
        gap_seconds=gap_seconds,
        min_len=min_len,
        chunk_rows=chunk_rows,
    )
    train, test = split_journeys(
        flat["offsets"], flat["user"], test_fraction=test_fraction, seed=seed
    )
    out = pathlib.Path(os.fspath(out_dir))
    out.mkdir(parents=True, exist_ok=True)
    paths = {}
    for name, idx in (("train", train), ("test", test)):
        paths[name] = out / f"{name}.npz"
        np.savez(paths[name], **_subset(flat, idx))
    return paths
