"""Multi-task data sets: MMoE's synthetic generator, DRGrad's settings, Census-Income (KDD).

Every loader returns a ``MultiTaskData``: three ``Split``s of NumPy arrays
(categorical ids, dense features, binary labels, optional user ids and
regression targets) plus the vocabulary sizes and task names a model needs.
Generation and parsing run on the host in NumPy; the arrays go to the device
once, in the training loop.
"""

from __future__ import annotations

import dataclasses
import gzip
import pathlib
import zlib
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
    arrays = {
        "cat": np.zeros((n, 0), np.int32),
        "dense": x.astype(np.float32),
        "labels": _binarize(targets, n_train),
        "user": None,
        "targets": targets,
    }
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


# --- Census-Income (KDD) ---------------------------------------------------------

CENSUS_COLUMNS = (
    "age", "class_of_worker", "industry_code", "occupation_code", "education",
    "wage_per_hour", "enrolled_in_edu_inst_last_wk", "marital_status", "major_industry_code",
    "major_occupation_code", "race", "hispanic_origin", "sex", "member_of_labor_union",
    "reason_for_unemployment", "full_or_part_time_employment_stat", "capital_gains",
    "capital_losses", "dividends_from_stocks", "tax_filer_status",
    "region_of_previous_residence", "state_of_previous_residence",
    "detailed_household_and_family_stat", "detailed_household_summary_in_household",
    "instance_weight", "migration_code_change_in_msa", "migration_code_change_in_reg",
    "migration_code_move_within_reg", "live_in_this_house_1_year_ago",
    "migration_prev_res_in_sunbelt", "num_persons_worked_for_employer",
    "family_members_under_18", "country_of_birth_father", "country_of_birth_mother",
    "country_of_birth_self", "citizenship", "own_business_or_self_employed",
    "fill_inc_questionnaire_for_veterans_admin", "veterans_benefits", "weeks_worked_in_year",
    "year", "income",
)  # fmt: skip
"""The 42 columns of the UCI Census-Income (KDD) files, in file order."""

_CONTINUOUS = (0, 5, 16, 17, 18, 30, 39)  # 1-based 1, 6, 17, 18, 19, 31, 40
_MONEY = (5, 16, 17, 18)  # log1p before standardizing: 1-based 6, 17, 18, 19
_INSTANCE_WEIGHT = 24
_INCOME = 41
_MARITAL = 7
_EDUCATION = 4
_COLLEGE = (
    "Associates degree-occup /vocational",
    "Associates degree-academic program",
    "Bachelors degree(BA AB BS)",
    "Masters degree(MA MS MEng MEd MSW MBA)",
    "Prof school degree (MD DDS DVM LLB JD)",
    "Doctorate degree(PhD EdD)",
)
CENSUS_TASKS = {
    "income": (_INCOME, lambda v: v == "50000+."),
    "never_married": (_MARITAL, lambda v: v == "Never married"),
    "education": (_EDUCATION, lambda v: np.isin(v, _COLLEGE)),
}
"""Census task name -> (label column, rule mapping that column's strings to 0/1)."""


def _read_census(path: pathlib.Path) -> list[tuple[str, ...]]:
    """Reads one Census file into its 42 columns of raw strings (one tuple per column)."""
    if not path.is_file():
        raise FileNotFoundError(f"Census-Income file not found: {path}")
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rt", encoding="latin-1") as f:
            lines = f.read().splitlines()
    except (EOFError, OSError, zlib.error) as e:  # cut or garbled gzip stream
        raise ValueError(f"{path} is not a readable Census-Income file: {e}") from e
    width = len(CENSUS_COLUMNS)
    kept = []
    for lineno, line in enumerate(lines, start=1):
        n = line.count(",") + 1
        if n != width:
            if not line.strip():
                continue
            raise ValueError(
                f"{path}:{lineno}: found {n} comma-separated values; a Census-Income row "
                f"has {width}."
            )
        kept.append(line)
    if not kept:
        raise ValueError(f"{path} holds no rows.")
    # One split of the whole text is much faster than one per line.
    flat = ",".join(kept).split(",")
    return [tuple(flat[c::width]) for c in range(width)]


def _strip(column: Sequence[str]) -> np.ndarray:
    return np.asarray([v.strip() for v in column])


def _find(directory: pathlib.Path, stem: str) -> pathlib.Path | None:
    for name in (stem, stem + ".gz"):
        if (directory / name).is_file():
            return directory / name
    return None


def _encode_categorical(column: Sequence[str], train_idx: np.ndarray):
    """Ids 1..V for values seen in training (sorted), 0 for unseen ones."""
    values = sorted(set(column))
    codes = np.fromiter(
        map(dict(zip(values, range(len(values)))).__getitem__, column), np.int32, len(column)
    )
    seen = np.zeros(len(values), bool)
    seen[codes[train_idx]] = True
    remap = np.where(seen, np.cumsum(seen), 0).astype(np.int32)
    return remap[codes], int(seen.sum()) + 1


def load_census_income(
    path: str | pathlib.Path,
    tasks: Sequence[str] = ("income", "never_married"),
    *,
    protocol: str = "auto",
    seed: int = 0,
    fractions: tuple[float, float, float] = (0.6, 0.2, 0.2),
) -> MultiTaskData:
    """Loads UCI Census-Income (KDD) for multi-task learning (MMoE's protocol).

    See docs/drgrad.md, *Census-Income*.

    Tasks (binary): ``"income"`` (income > 50K, column 42), ``"never_married"``
    (marital status is "Never married", column 8) and ``"education"``
    (education is a college degree: associates, bachelors, masters,
    professional or doctorate, column 5). MMoE's groups are
    ``("income", "never_married")`` and ``("education", "never_married")``.

    Inputs: every column except the income column (42), the instance weight (25,
    a survey weight, not a feature) and the requested tasks' label columns.
    Education stays an input unless it is a task. Continuous columns (1, 6, 17,
    18, 19, 31, 40): ``log1p`` on the money columns 6, 17, 18, 19, then
    standardized with training-split statistics. The other 32 (or fewer)
    columns are categorical with vocabularies built on the training split
    only: id 0 is the out-of-vocabulary bucket.

    Splits (``protocol``):

    * ``"mmoe"``: train on ``census-income.data[.gz]``; the test file is
      shuffled with ``seed`` and halved into validation and test.
    * ``"resplit"``: one file (the test partition, as shipped in
      ``../shared/data/census-income-kdd/``) shuffled with ``seed`` and split by
      ``fractions`` (default 60/20/20).
    * ``"auto"``: ``"mmoe"`` when ``path`` is a directory holding both files,
      else ``"resplit"`` of the one file found (or given).

    Args:
      path: a directory with ``census-income.data[.gz]`` and/or
        ``census-income.test[.gz]``, or the path of one such file.
      tasks: task names, any of ``CENSUS_TASKS``, in label-column order.
      protocol: ``"auto"``, ``"mmoe"`` or ``"resplit"``.
      seed: seed of the shuffle.
      fractions: train / validation / test fractions of ``"resplit"``.

    Returns:
      A ``MultiTaskData``; ``description`` names the files and the split.

    Raises:
      FileNotFoundError: no Census file at ``path``.
      ValueError: a row with the wrong column count (file and line named), an
        unknown task or protocol, bad fractions, or an empty split.

    Example:
      >>> import pathlib
      >>> fixture = pathlib.Path("tests/fixtures/census_tiny")
      >>> d = load_census_income(fixture)          # doctest: +SKIP
      >>> d.task_names, len(d.vocab_sizes), d.num_dense   # doctest: +SKIP
      (('income', 'never_married'), 32, 7)

    References:
      Ma et al., KDD 2018, Sec. 6.3. Data: https://archive.ics.uci.edu/dataset/117.
    """
    tasks = tuple(tasks)
    unknown = [t for t in tasks if t not in CENSUS_TASKS]
    if unknown or not tasks:
        raise ValueError(
            f"tasks has unknown name(s) {unknown or tasks}; choose from {sorted(CENSUS_TASKS)}."
        )
    if len(set(tasks)) != len(tasks):
        raise ValueError(f"tasks names a task twice: {tasks}.")
    if protocol not in ("auto", "mmoe", "resplit"):
        raise ValueError(f"protocol must be 'auto', 'mmoe' or 'resplit'; got {protocol!r}.")
    path = pathlib.Path(path)
    if path.is_dir():
        train_file = _find(path, "census-income.data")
        test_file = _find(path, "census-income.test")
        if train_file is None and test_file is None:
            raise FileNotFoundError(
                f"no census-income.data[.gz] or census-income.test[.gz] in directory {path}"
            )
    elif path.is_file():
        train_file, test_file = None, path
    else:
        raise FileNotFoundError(f"Census-Income path not found: {path}")
    if protocol == "auto":
        protocol = "mmoe" if train_file is not None and test_file is not None else "resplit"
    rng = np.random.default_rng(seed)
    if protocol == "mmoe":
        if train_file is None or test_file is None:
            raise FileNotFoundError(
                f"protocol='mmoe' needs census-income.data[.gz] and census-income.test[.gz] "
                f"in {path}"
            )
        train_cols = _read_census(train_file)
        test_cols = _read_census(test_file)
        columns = [a + b for a, b in zip(train_cols, test_cols)]
        n_tr, n_te = len(train_cols[0]), len(test_cols[0])
        perm = n_tr + rng.permutation(n_te)
        half = n_te // 2
        idx = (np.arange(n_tr), perm[:half], perm[half:])
        desc = (
            f"Census-Income (KDD) MMoE protocol: train = {train_file.name}, "
            f"{test_file.name} halved into val/test (seed {seed})"
        )
    else:
        fr = np.asarray(fractions, np.float64)
        if fr.shape != (3,) or np.any(fr <= 0) or not np.isclose(fr.sum(), 1.0):
            raise ValueError(f"fractions must be 3 positive numbers summing to 1; got {fractions}.")
        source = test_file if test_file is not None else train_file
        columns = _read_census(source)
        n = len(columns[0])
        perm = rng.permutation(n)
        n_tr, n_va = int(round(fr[0] * n)), int(round(fr[1] * n))
        idx = (perm[:n_tr], perm[n_tr : n_tr + n_va], perm[n_tr + n_va :])
        pct = "/".join(str(round(100 * f)) for f in fr)
        desc = f"Census-Income (KDD) {source.name} re-split {pct} (seed {seed})"
    for name, part in zip(("train", "val", "test"), idx):
        if part.size == 0:
            raise ValueError(
                f"the {name} split of {desc} is empty ({len(columns[0])} rows); use more rows or "
                "other fractions."
            )
    train_idx = idx[0]

    labels = np.stack(
        [CENSUS_TASKS[t][1](_strip(columns[CENSUS_TASKS[t][0]])) for t in tasks], axis=1
    ).astype(np.float32)
    dropped = {_INCOME, _INSTANCE_WEIGHT} | {CENSUS_TASKS[t][0] for t in tasks}
    cat_cols = [c for c in range(len(CENSUS_COLUMNS)) if c not in dropped and c not in _CONTINUOUS]
    dense_cols = [c for c in _CONTINUOUS if c not in dropped]
    cat, vocab_sizes = [], []
    for c in cat_cols:
        ids, v = _encode_categorical(columns[c], train_idx)
        cat.append(ids)
        vocab_sizes.append(v)
    dense = []
    for c in dense_cols:
        try:
            x = np.asarray(columns[c], dtype=np.float64)
        except ValueError as e:
            raise ValueError(f"column {c + 1} ({CENSUS_COLUMNS[c]}) is not numeric: {e}") from None
        if c in _MONEY:
            x = np.log1p(np.maximum(x, 0.0))
        mean, std = x[train_idx].mean(), x[train_idx].std()
        dense.append((x - mean) / (std if std > 0 else 1.0))
    cat = np.stack(cat, axis=1).astype(np.int32)
    dense = np.stack(dense, axis=1).astype(np.float32)
    splits = [Split(cat[i], dense[i], labels[i]) for i in idx]
    sizes = " / ".join(f"{n} {s.num_examples}" for n, s in zip(("train", "val", "test"), splits))
    return MultiTaskData(
        *splits,
        vocab_sizes=tuple(vocab_sizes),
        num_dense=len(dense_cols),
        task_names=tasks,
        cat_names=tuple(CENSUS_COLUMNS[c] for c in cat_cols),
        dense_names=tuple(CENSUS_COLUMNS[c] for c in dense_cols),
        description=f"{desc}: {sizes}",
    )
