"""Synthetic worlds whose task relation is known by construction (docs/drgrad.md, *Synthetic worlds*).

A world is cooperating or conflicting by what the two tasks' gradients do at
the shared representation of a model trained on it, not by the correlation of
its labels: MMoE's generator with p = -0.5 is p = +0.5 up to a flip of task
2's label, which a network's last layer absorbs. The worlds here are built
so that the sign survives every such flip:

* an observed factor ``f(s)``, ``s = u^T x`` along one direction ``u`` of the
  input, with ``f(s) = s + sin(2 s) / 2`` (monotone: ``f' = 1 + cos 2s >= 0``);
* an unobserved binary cause ``c = +-1`` (a hidden state, e.g. an engaged
  session) that enters both targets with the same sign;
* ``t1 = f(s) + c + e1``, ``t2 = rho f(s) + c + e2`` with a little own noise
  ``e_k``; ``rho = +1`` cooperates, ``rho = -1`` conflicts.

With ``rho = -1`` the heads read ``s`` with opposite signs while the errors
that ``c`` leaves in the two tasks share their sign, so on every example the
tasks push the shared feature in opposite directions; flipping task 2's label
flips both the head and the error, and the product (the cosine) keeps its
sign. Each task alone is equally hard in both worlds: only the relation
differs. The personalized world draws ``rho`` from a user group that the data
carry only as ``Split.user`` (the personalized gate's input); the competing
world has no relation at all, only two tasks sharing too few units; and the
paper's own generator is given as printed, to measure what it contains.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from drgrad_jax._src.data import MultiTaskData, _dense_arrays, _split, _split_sizes

TASKS = ("task1", "task2")


def _observed_factor(s: np.ndarray) -> np.ndarray:
    """``f(s) = s + sin(2 s) / 2``: monotone (``f' = 1 + cos 2s >= 0``), not linear."""
    return s + 0.5 * np.sin(2.0 * s)


def _check(dim: int, cause_scale: float, noise_std: float) -> None:
    if int(dim) != dim or dim < 1:
        raise ValueError(f"dim must be a positive int; got {dim!r}.")
    if cause_scale < 0 or noise_std < 0:
        raise ValueError(
            f"cause_scale and noise_std must be >= 0; got cause_scale={cause_scale}, "
            f"noise_std={noise_std}."
        )


def _relation_world(
    relation: np.ndarray | float,
    sizes: tuple[int, int, int],
    *,
    dim: int,
    cause_scale: float,
    noise_std: float,
    rng: np.random.Generator,
    user: np.ndarray | None = None,
) -> tuple[dict, str]:
    """The arrays of a world where task 2 reads ``f(s)`` with sign ``relation`` (per row)."""
    n_train = sizes[0]
    n = sum(sizes)
    u = rng.standard_normal(dim)
    u /= np.linalg.norm(u)
    x = rng.standard_normal((n, dim))
    f = _observed_factor(x @ u)
    cause = cause_scale * rng.choice(np.array([-1.0, 1.0]), n)
    e1, e2 = noise_std * rng.standard_normal((2, n))
    targets = np.stack([f + cause + e1, relation * f + cause + e2], axis=1).astype(np.float32)
    arrays = _dense_arrays(x, targets, n_train, user)
    return arrays, f"d={dim} cause_scale={cause_scale} noise_std={noise_std}"


def _world(arrays: dict, sizes, dim: int, description: str, num_users: int = 0):
    train, val, test = _split(arrays, sizes[0], sizes[1])
    return MultiTaskData(
        train,
        val,
        test,
        vocab_sizes=(),
        num_dense=dim,
        task_names=TASKS,
        num_users=num_users,
        dense_names=tuple(f"x{i}" for i in range(dim)),
        description=f"{description}: train {sizes[0]} / val {sizes[1]} / test {sizes[2]}",
    )


def relation_world(
    relation: float,
    num_train: int = 100_000,
    num_val: int = 10_000,
    num_test: int = 10_000,
    *,
    dim: int = 16,
    cause_scale: float = 1.0,
    noise_std: float = 0.25,
    seed: int = 0,
) -> MultiTaskData:
    """Two tasks that read one observed factor with relative sign ``relation`` and share a hidden cause.

    With ``x ~ N(0, I_d)``, a random unit direction ``u``, ``f(s) = s + sin(2s)/2``,
    an unobserved binary cause ``c = +-cause_scale`` (each sign with probability
    1/2) and own noise
    ``e_k ~ N(0, noise_std^2)``::

      t1 = f(u^T x) + c + e1,      t2 = relation * f(u^T x) + c + e2

    and each label is ``1[t_k > median of t_k over the training split]``.
    ``relation = +1`` is ``cooperate_world``, ``-1`` ``conflict_world``; values
    in between weaken task 2's reading of the shared factor. Only ``x`` is an
    input; ``c`` is what makes the tasks' errors agree in sign, so with
    ``relation < 0`` they pull the shared feature apart (docs/drgrad.md,
    *Synthetic worlds*).

    Args:
      relation: the sign (and weight) with which task 2 reads ``f``, in ``[-1, 1]``.
      num_train, num_val, num_test: split sizes (drawn i.i.d.).
      dim: input dimension ``d``. Small by default: the relation lives in one
        direction of ``x``, and with ``d = 100`` a full-size MMoE measured it
        near 0 (docs/drgrad.md, *Synthetic worlds*).
      cause_scale: size of the shared unobserved cause (its two values are +-cause_scale).
      noise_std: standard deviation of each task's own noise.
      seed: NumPy seed; the whole data set is a function of it.

    Returns:
      A ``MultiTaskData`` with ``dense`` = x, no categorical fields, no user
      ids, binary ``labels`` (positive rate 0.5 on the training split) and the
      regression ``targets``.

    Example:
      >>> d = relation_world(-1.0, 200, 50, 50, dim=8)
      >>> d.train.dense.shape, d.train.labels.shape, d.task_names
      ((200, 8), (200, 2), ('task1', 'task2'))
    """
    sizes = _split_sizes(num_train, num_val, num_test)
    if not -1.0 <= relation <= 1.0:
        raise ValueError(f"relation must be in [-1, 1]; got {relation}.")
    _check(dim, cause_scale, noise_std)
    rng = np.random.default_rng(seed)
    arrays, desc = _relation_world(
        float(relation), sizes, dim=dim, cause_scale=cause_scale, noise_std=noise_std, rng=rng
    )
    return _world(arrays, sizes, dim, f"relation_world rho={relation:+.2f} {desc} seed={seed}")


def cooperate_world(
    num_train: int = 100_000, num_val: int = 10_000, num_test: int = 10_000, **kwargs
) -> MultiTaskData:
    """``relation_world(+1)``: both tasks read the observed factor the same way.

    Example:
      >>> cooperate_world(100, 20, 20, dim=4).description[:31]
      'relation_world rho=+1.00 d=4 ca'
    """
    return relation_world(1.0, num_train, num_val, num_test, **kwargs)


def conflict_world(
    num_train: int = 100_000, num_val: int = 10_000, num_test: int = 10_000, **kwargs
) -> MultiTaskData:
    """``relation_world(-1)``: opposite readings of the observed factor, a shared hidden cause.

    Example:
      >>> conflict_world(100, 20, 20, dim=4).description[:31]
      'relation_world rho=-1.00 d=4 ca'
    """
    return relation_world(-1.0, num_train, num_val, num_test, **kwargs)


def personalized_world(
    num_train: int = 100_000,
    num_val: int = 10_000,
    num_test: int = 10_000,
    *,
    num_users: int = 100,
    group_relations: Sequence[float] = (1.0, -1.0),
    dim: int = 16,
    cause_scale: float = 1.0,
    noise_std: float = 0.25,
    seed: int = 0,
) -> MultiTaskData:
    """``relation_world`` whose relation is set by a user group only the personalized gate sees.

    Each row has a uniformly drawn user id ``u``; the user's group is
    ``g = u mod G`` and task 2 reads the observed factor with sign
    ``group_relations[g]`` (by default group 0 cooperates and group 1
    conflicts: each group alone is ``cooperate_world`` or
    ``conflict_world``). Pooled over the groups, task 2's dependence on ``x``
    cancels, so a model that does not know the group cannot predict task 2
    from ``x``. The user id is carried ONLY as ``Split.user``, the input of
    Split-MMoE's personalized gate: there is no categorical field
    (``vocab_sizes == ()``), ``x`` is drawn independently of the user, and
    MMoE, Shared-Bottom, PLE and a Split-MMoE without the gate never read
    ``user``.

    Args:
      num_train, num_val, num_test: split sizes.
      num_users: number of user ids (at least the number of groups).
      group_relations: ``relation`` of each group, each in ``[-1, 1]``.
      dim, cause_scale, noise_std, seed: as in ``relation_world``.

    Returns:
      A ``MultiTaskData`` with ``user`` ids and ``num_users`` set.

    Example:
      >>> d = personalized_world(300, 50, 50, num_users=6, dim=8)
      >>> d.train.user.shape, d.train.cat.shape, d.vocab_sizes, d.num_users
      ((300,), (300, 0), (), 6)
    """
    sizes = _split_sizes(num_train, num_val, num_test)
    _check(dim, cause_scale, noise_std)
    if int(num_users) != num_users or num_users < 1:
        raise ValueError(f"num_users must be a positive int; got {num_users!r}.")
    rho_g = np.asarray(group_relations, np.float64)
    if rho_g.ndim != 1 or rho_g.size == 0 or np.any(np.abs(rho_g) > 1):
        raise ValueError(
            f"group_relations must be a non-empty sequence in [-1, 1]; got {rho_g.tolist()}."
        )
    if rho_g.size > num_users:
        raise ValueError(f"{rho_g.size} groups need at least as many users; got {num_users}.")
    rng = np.random.default_rng(seed)
    user = rng.integers(0, num_users, sum(sizes)).astype(np.int32)
    arrays, desc = _relation_world(
        rho_g[user % rho_g.size],
        sizes,
        dim=dim,
        cause_scale=cause_scale,
        noise_std=noise_std,
        rng=rng,
        user=user,
    )
    desc = f"personalized_world rho_g={rho_g.tolist()} users={num_users} {desc} seed={seed}"
    return _world(arrays, sizes, dim, desc, num_users=int(num_users))


def compete_world(
    num_train: int = 100_000,
    num_val: int = 10_000,
    num_test: int = 10_000,
    *,
    directions: int = 4,
    frequency: float = 2.0,
    dim: int = 16,
    noise_std: float = 0.25,
    seed: int = 0,
) -> MultiTaskData:
    """Two tasks on disjoint input directions: nothing to share, capacity to compete for.

    With ``x ~ N(0, I_d)``, orthonormal directions ``q_1..q_2m`` (``m = directions``,
    a random rotation) and own noise ``e_k ~ N(0, noise_std^2)``::

      t1 = sum_{j <= m} sin(w q_j^T x) / sqrt(m) + e1,   t2 = sum_{j > m} sin(w q_j^T x) / sqrt(m) + e2

    (``w = frequency``), each label ``1[t_k > median over train]``. The tasks
    read orthogonal directions, so neither helps the other, and each needs
    many hidden units (``sin`` is not monotone): a small shared expert pool is
    split between them. The condition a method acts on here is negative
    transfer (task 1 trained alone beats task 1 trained beside task 2), not a
    gradient conflict (docs/drgrad.md, *Synthetic worlds*).

    Args:
      num_train, num_val, num_test: split sizes (drawn i.i.d.).
      directions: input directions each task reads; ``2 * directions <= dim``.
      frequency: the sines' angular frequency (higher needs more units).
      dim, noise_std, seed: as in ``relation_world``.

    Returns:
      A ``MultiTaskData`` with ``dense`` = x, no categorical fields, no user ids.

    Example:
      >>> d = compete_world(200, 50, 50, directions=2, dim=6)
      >>> d.train.dense.shape, float(d.train.labels.mean())
      ((200, 6), 0.5)
    """
    sizes = _split_sizes(num_train, num_val, num_test)
    _check(dim, 0.0, noise_std)
    if int(directions) != directions or not 1 <= 2 * directions <= dim:
        raise ValueError(
            f"directions must be an int in [1, dim / 2 = {dim // 2}]; got {directions!r}."
        )
    if not np.isfinite(frequency) or frequency <= 0:
        raise ValueError(f"frequency must be a finite number > 0; got {frequency!r}.")
    rng = np.random.default_rng(seed)
    n, m = sum(sizes), int(directions)
    q = np.linalg.qr(rng.standard_normal((dim, dim)))[0][:, : 2 * m]
    x = rng.standard_normal((n, dim))
    waves = np.sin(frequency * (x @ q)) / np.sqrt(m)
    noise = noise_std * rng.standard_normal((n, 2))
    targets = (np.stack([waves[:, :m].sum(1), waves[:, m:].sum(1)], 1) + noise).astype(np.float32)
    arrays = _dense_arrays(x, targets, sizes[0])
    desc = f"compete_world directions={m} frequency={frequency} d={dim} noise_std={noise_std}"
    return _world(arrays, sizes, dim, f"{desc} seed={seed}")


def _paper_features(rng: np.random.Generator, n: int, num_sparse: int, num_dense: int):
    """``x_i = exp(r1 k_i) + r2 k_i^(i/2 + 1)``, ``k_i`` uniform on ``{1, ..., i+1}``; then N(0, 1)."""
    cols = []
    for i in range(1, num_sparse + 1):
        k = rng.integers(1, i + 2, n)  # randint(1, i+2), upper bound exclusive
        cols.append(np.exp(rng.random(n) * k) + rng.random(n) * k ** (i / 2 + 1))
    return np.concatenate([np.stack(cols, axis=1), rng.standard_normal((n, num_dense))], axis=1)


def paper_world(
    num_train: int = 100_000,
    num_val: int = 10_000,
    num_test: int = 10_000,
    *,
    cos_theta: float = 0.5,
    num_sparse: int = 6,
    num_dense: int = 26,
    seed: int = 0,
) -> MultiTaskData:
    """DRGrad's own synthetic generator, as printed in the paper (Sec. 5), with its gaps filled.

    Per row, ``num_sparse`` "sparse" features ``x_i = exp(r k) + r' k^(i/2 + 1)``
    (``r, r' ~ U(0, 1)``, ``k`` a random integer in ``[1, i + 2)``, ``i = 1..6``)
    and ``num_dense`` features ``N(0, 1)`` form ``x`` (32 values); with the sums
    over features the printed vector expression implies::

      label1 = 10 (4 sum x^2 / ||x^2|| + 5 sum exp(x / ||x||) + 6 sum sin(x) + N(0.01, 0.002))
      label2 = cos(theta) label1 + N(0.01, 0.002)          (N(mean, variance))

    binarized at the training median. Gaps filled here (the paper leaves them
    open): the dense features are ``N(0, 1)``; "sparse" features are numbers,
    not ids; the model inputs are all 32 features standardized on the
    training split. Since label2's noise is tiny next to label1's spread,
    task 2's label equals task 1's (``cos_theta > 0``) or its complement
    (``cos_theta < 0``) on almost every row: the paper's "conflict" is a label
    flip (measured in docs/drgrad.md, *Synthetic worlds*).

    Args:
      num_train, num_val, num_test: split sizes (100,000 train / 10,000 test in the paper).
      cos_theta: the task angle's cosine, in ``[-1, 1]``.
      num_sparse, num_dense: feature counts (6 and 26 in the paper).
      seed: NumPy seed.

    Returns:
      A ``MultiTaskData`` with ``num_sparse + num_dense`` dense inputs.

    Example:
      >>> d = paper_world(200, 50, 50, cos_theta=-0.5)
      >>> d.train.dense.shape, float((d.train.labels[:, 0] != d.train.labels[:, 1]).mean())
      ((200, 32), 1.0)

    References:
      Liu, Miao, Xia, "Direct Routing Gradient (DRGrad)", AAAI 2025, Sec. 5.
    """
    sizes = _split_sizes(num_train, num_val, num_test)
    if not -1.0 <= cos_theta <= 1.0:
        raise ValueError(f"cos_theta must be in [-1, 1]; got {cos_theta}.")
    for name, v in (("num_sparse", num_sparse), ("num_dense", num_dense)):
        if int(v) != v or v < 0:
            raise ValueError(f"{name} must be an int >= 0; got {v!r}.")
    if num_sparse + num_dense < 1:
        raise ValueError("num_sparse + num_dense must be at least 1.")
    rng = np.random.default_rng(seed)
    n = sum(sizes)
    x = _paper_features(rng, n, int(num_sparse), int(num_dense))
    sq = x * x
    noise_std = np.sqrt(0.002)
    label1 = 10.0 * (
        4.0 * (sq / np.linalg.norm(sq, axis=1, keepdims=True)).sum(1)
        + 5.0 * np.exp(x / np.linalg.norm(x, axis=1, keepdims=True)).sum(1)
        + 6.0 * np.sin(x).sum(1)
        + rng.normal(0.01, noise_std, n)
    )
    label2 = cos_theta * label1 + rng.normal(0.01, noise_std, n)
    targets = np.stack([label1, label2], axis=1).astype(np.float32)
    mean, std = x[: sizes[0]].mean(0), x[: sizes[0]].std(0)
    dense = ((x - mean) / np.where(std > 0, std, 1.0)).astype(np.float32)
    arrays = _dense_arrays(dense, targets, sizes[0])
    dim = int(num_sparse + num_dense)
    desc = (
        f"paper_world cos_theta={cos_theta:+.2f} sparse={num_sparse} dense={num_dense} seed={seed}"
    )
    return _world(arrays, sizes, dim, desc)
