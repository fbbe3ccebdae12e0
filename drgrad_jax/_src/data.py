"""Multi-task data sets: MMoE's synthetic generator, DRGrad's settings, Census-Income (KDD).

Every loader returns a ``MultiTaskData``: three ``Split``s of NumPy arrays
(categorical ids, dense features, binary labels, optional user ids and
regression targets) plus the vocabulary sizes and task names a model needs.
Generation and parsing run on the host in NumPy; the arrays go to the device
once, in the training loop.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import NamedTuple

import numpy as np


class Split(NamedTuple):
    """One partition of a multi-task data set (a pytree of arrays).

    Attributes:
      cat: ``[N, F]`` int32 categorical ids; column f lies in ``[0, vocab_sizes[f])``.
      dense: ``[N, D]`` float32 numeric features.
      labels: ``[N, K]`` float32 binary labels, one column per task.
      user: ``[N]`` int32 user ids, or ``None``.
      targets: ``[N, K]`` float32 regression targets before binarization, or ``None``.
    """

    cat: np.ndarray
    dense: np.ndarray
    labels: np.ndarray
    user: np.ndarray | None = None
    targets: np.ndarray | None = None

    @property
    def num_examples(self) -> int:
        return int(self.labels.shape[0])


@dataclasses.dataclass(frozen=True, eq=False)
class MultiTaskData:
    """A multi-task data set: train / validation / test splits and their metadata.

    Attributes:
      train, val, test: the three ``Split``s.
      vocab_sizes: vocabulary size of each categorical field (id 0 is the
        out-of-vocabulary bucket for Census).
      num_dense: number of dense features.
      task_names: one name per label column.
      num_users: user-id vocabulary (0 when there are no user ids).
      cat_names, dense_names: feature names.
      description: where the data came from and how it was split; print it
        next to every number.
    """

    train: Split
    val: Split
    test: Split
    vocab_sizes: tuple[int, ...]
    num_dense: int
    task_names: tuple[str, ...]
    num_users: int = 0
    cat_names: tuple[str, ...] = ()
    dense_names: tuple[str, ...] = ()
    description: str = ""

    @property
    def num_tasks(self) -> int:
        return len(self.task_names)


def _split_sizes(num_train, num_val, num_test):
    sizes = {"num_train": num_train, "num_val": num_val, "num_test": num_test}
    for name, v in sizes.items():
        if int(v) != v or v <= 0:
            raise ValueError(f"{name} must be a positive int; got {v!r}.")
    return int(num_train), int(num_val), int(num_test)


def _orthonormal_pairs(rng, dim: int, num_pairs: int) -> np.ndarray:
    if dim < 2 * num_pairs:
        raise ValueError(f"dim={dim} is too small for {num_pairs} orthogonal task pairs.")
    q, _ = np.linalg.qr(rng.standard_normal((dim, 2 * num_pairs)))
    return q.T.reshape(num_pairs, 2, dim)


def _mmoe_label(x, w, alphas, betas, noise):
    """``y = w^T x + sum_i sin(alpha_i w^T x + beta_i) + noise`` per row (``w`` per row)."""
    proj = np.einsum("nd,nd->n", x, w) if w.ndim == 2 else x @ w
    y = proj.copy()
    if alphas.size:
        y += np.sin(alphas[None, :] * proj[:, None] + betas[None, :]).sum(axis=1)
    return y + noise


def _binarize(targets: np.ndarray, num_train: int) -> np.ndarray:
    median = np.median(targets[:num_train], axis=0)
    return (targets > median[None, :]).astype(np.float32)


def _dense_arrays(dense, targets: np.ndarray, n_train: int, user=None) -> dict:
    """A generated world's arrays: float32 ``dense`` inputs, no categorical field, labels
    ``1[target > its training median]``, optional ``user`` ids and the raw ``targets``."""
    return {
        "cat": np.zeros((len(dense), 0), np.int32),
        "dense": np.asarray(dense, np.float32),
        "labels": _binarize(targets, n_train),
        "user": user,
        "targets": targets,
    }


def _split(arrays: dict, n_train: int, n_val: int) -> tuple[Split, Split, Split]:
    bounds = [(0, n_train), (n_train, n_train + n_val), (n_train + n_val, None)]
    out = []
    for lo, hi in bounds:
        out.append(Split(**{k: (None if v is None else v[lo:hi]) for k, v in arrays.items()}))
    return tuple(out)


def mmoe_synthetic(
    num_train: int = 10_000,
    num_val: int = 1_000,
    num_test: int = 1_000,
    *,
    correlation: float = 0.5,
    dim: int = 100,
    scale: float = 1.0,
    num_sines: int = 10,
    noise_std: float = 0.1,
    num_task_pairs: int = 1,
    seed: int = 0,
) -> MultiTaskData:
    """MMoE's synthetic generator: two regression tasks with a controlled correlation.

    With orthonormal ``u1, u2`` and correlation score ``p`` (MMoE Sec. 3.2)::

      w1 = c u1,   w2 = c (p u1 + sqrt(1 - p^2) u2)           => cos(w1, w2) = p
      y_t = w_t^T x + sum_{i=1..m} sin(alpha_i w_t^T x + beta_i) + eps_t,  x ~ N(0, I_d)

    ``alpha_i, beta_i ~ N(0, 1)`` are drawn once per data set and shared by both
    tasks; ``eps_t ~ N(0, noise_std^2)``. Without sine terms (``num_sines=0``)
    the labels' Pearson correlation is ``p c^2 / (c^2 + noise_std^2)``. Binary
    labels are ``1[y > median of y over the training split]`` (see
    docs/drgrad.md, *Synthetic data*).
    Several task pairs use mutually orthogonal ``u`` vectors; task columns are
    ordered pair by pair (``t1_0, t2_0, t1_1, t2_1, ...``).

    Args:
      num_train, num_val, num_test: split sizes (drawn i.i.d.).
      correlation: the task correlation score ``p`` in ``[-1, 1]``.
      dim: input dimension ``d``.
      scale: ``c``.
      num_sines: ``m`` (0 for the linear case).
      noise_std: standard deviation of the label noise.
      num_task_pairs: number of independent task pairs.
      seed: NumPy seed; the whole data set is a function of it.

    Returns:
      A ``MultiTaskData`` with ``dense`` = x, no categorical fields, binary
      ``labels`` and the regression ``targets``.

    Example:
      >>> d = mmoe_synthetic(200, 50, 50, correlation=0.9, dim=8)
      >>> d.train.dense.shape, d.train.labels.shape, d.task_names
      ((200, 8), (200, 2), ('t1_0', 't2_0'))

    References:
      Ma et al., "Modeling Task Relationships in Multi-task Learning with
      Multi-gate Mixture-of-Experts", KDD 2018, Sec. 3.2.
    """
    n_train, n_val, n_test = _split_sizes(num_train, num_val, num_test)
    if not -1.0 <= correlation <= 1.0:
        raise ValueError(f"correlation must be in [-1, 1]; got {correlation}.")
    if int(num_sines) != num_sines or num_sines < 0:
        raise ValueError(f"num_sines must be an int >= 0; got {num_sines!r}.")
    if int(num_task_pairs) != num_task_pairs or num_task_pairs < 1:
        raise ValueError(f"num_task_pairs must be an int >= 1; got {num_task_pairs!r}.")
    if noise_std < 0:
        raise ValueError(f"noise_std must be >= 0; got {noise_std}.")
    rng = np.random.default_rng(seed)
    n = n_train + n_val + n_test
    u = _orthonormal_pairs(rng, dim, num_task_pairs)
    alphas = rng.standard_normal(num_sines)
    betas = rng.standard_normal(num_sines)
    x = rng.standard_normal((n, dim))
    targets, names = [], []
    p = float(correlation)
    for pair in range(num_task_pairs):
        u1, u2 = u[pair]
        w1 = scale * u1
        w2 = scale * (p * u1 + np.sqrt(1.0 - p * p) * u2)
        for t, w in ((1, w1), (2, w2)):
            targets.append(_mmoe_label(x, w, alphas, betas, noise_std * rng.standard_normal(n)))
            names.append(f"t{t}_{pair}")
    targets = np.stack(targets, axis=1).astype(np.float32)
    arrays = _dense_arrays(x, targets, n_train)
    train, val, test = _split(arrays, n_train, n_val)
    return MultiTaskData(
        train,
        val,
        test,
        vocab_sizes=(),
        num_dense=dim,
        task_names=tuple(names),
        dense_names=tuple(f"x{i}" for i in range(dim)),
        description=(
            f"mmoe_synthetic p={p:+.2f} d={dim} c={scale} m={num_sines} noise={noise_std} "
            f"seed={seed}: train {n_train} / val {n_val} / test {n_test}"
        ),
    )


DRGRAD_SETTINGS = {"cooperate": 0.5, "conflict": -0.5, "personalized": None}


def drgrad_synthetic(
    setting: str = "cooperate",
    num_train: int = 100_000,
    num_val: int = 10_000,
    num_test: int = 10_000,
    *,
    correlation: float | None = None,
    num_users: int = 100,
    group_correlations: Sequence[float] = (0.5, -0.5),
    dim: int = 100,
    scale: float = 1.0,
    num_sines: int = 10,
    noise_std: float = 0.1,
    seed: int = 0,
) -> MultiTaskData:
    """DRGrad's synthetic settings on MMoE's generator, with user ids (docs/drgrad.md, *Synthetic data*).

    ``"cooperate"`` uses ``p = +0.5``, ``"conflict"`` ``p = -0.5`` (override
    with ``correlation`` for a sweep). ``"personalized"``: user ``u`` belongs
    to group ``g = u mod G``, and group g's task-2 weight is
    ``w2_g = c (p_g u1 + sqrt(1 - p_g^2) u2)`` with ``p_g = group_correlations[g]``
    while task 1 is shared; pooled over users the tasks look weakly related,
    yet each group clearly cooperates or conflicts. Every sample carries a
    uniformly drawn user id, both as the one categorical field and as
    ``Split.user`` (for a personalized gate).

    Args:
      setting: ``"cooperate"``, ``"conflict"`` or ``"personalized"``.
      num_train, num_val, num_test: split sizes (100,000 / 10,000 test in the paper).
      correlation: overrides the setting's ``p`` (not for ``"personalized"``).
      num_users: number of user ids.
      group_correlations: ``p_g`` per group (``"personalized"`` only).
      dim, scale, num_sines, noise_std: as in ``mmoe_synthetic``.
      seed: NumPy seed.

    Returns:
      A ``MultiTaskData`` with tasks ``("task1", "task2")``; ``targets`` hold
      the regression labels.

    Example:
      >>> d = drgrad_synthetic("personalized", 300, 50, 50, num_users=6, dim=8)
      >>> d.train.user.shape, d.vocab_sizes, d.num_users
      ((300,), (6,), 6)

    References:
      Liu, Miao, Xia, "Direct Routing Gradient (DRGrad)", AAAI 2025, Sec. 5.
    """
    if setting not in DRGRAD_SETTINGS:
        raise ValueError(f"setting must be one of {sorted(DRGRAD_SETTINGS)}; got {setting!r}.")
    n_train, n_val, n_test = _split_sizes(num_train, num_val, num_test)
    if int(num_users) != num_users or num_users < 1:
        raise ValueError(f"num_users must be a positive int; got {num_users!r}.")
    rng = np.random.default_rng(seed)
    n = n_train + n_val + n_test
    ((u1, u2),) = _orthonormal_pairs(rng, dim, 1)
    alphas = rng.standard_normal(num_sines)
    betas = rng.standard_normal(num_sines)
    x = rng.standard_normal((n, dim))
    user = rng.integers(0, num_users, n).astype(np.int32)
    if setting == "personalized":
        if correlation is not None:
            raise ValueError(
                "correlation does not apply to setting='personalized'; use group_correlations."
            )
        p_g = np.asarray(group_correlations, np.float64)
        if p_g.ndim != 1 or p_g.size == 0 or np.any(np.abs(p_g) > 1):
            raise ValueError(
                f"group_correlations must be a non-empty sequence in [-1, 1]; got {p_g.tolist()}."
            )
        if p_g.size > num_users:
            raise ValueError(f"{p_g.size} groups need at least as many users; got {num_users}.")
        p = p_g[user % p_g.size]
        desc = f"groups p_g={p_g.tolist()}"
    else:
        p0 = DRGRAD_SETTINGS[setting] if correlation is None else float(correlation)
        if not -1.0 <= p0 <= 1.0:
            raise ValueError(f"correlation must be in [-1, 1]; got {p0}.")
        p = np.full(n, p0)
        desc = f"p={p0:+.2f}"
    w1 = scale * u1
    w2 = scale * (p[:, None] * u1[None, :] + np.sqrt(1.0 - p * p)[:, None] * u2[None, :])
    y1 = _mmoe_label(x, w1, alphas, betas, noise_std * rng.standard_normal(n))
    y2 = _mmoe_label(x, w2, alphas, betas, noise_std * rng.standard_normal(n))
    targets = np.stack([y1, y2], axis=1).astype(np.float32)
    arrays = {
        "cat": user[:, None].copy(),
        "dense": x.astype(np.float32),
        "labels": _binarize(targets, n_train),
        "user": user,
        "targets": targets,
    }
    train, val, test = _split(arrays, n_train, n_val)
    return MultiTaskData(
        train,
        val,
        test,
        vocab_sizes=(int(num_users),),
        num_dense=dim,
        task_names=("task1", "task2"),
        num_users=int(num_users),
        cat_names=("user",),
        dense_names=tuple(f"x{i}" for i in range(dim)),
        description=(
            f"drgrad_synthetic {setting} {desc} d={dim} m={num_sines} seed={seed}: "
            f"train {n_train} / val {n_val} / test {n_test}"
        ),
    )
