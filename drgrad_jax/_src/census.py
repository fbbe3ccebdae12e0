"""UCI Census-Income (KDD) for multi-task learning: parsing, field checks, encoding.

Every field is checked against its documented domain before any cast (income
labels, finite numbers), and every error names the file and line.
"""

from __future__ import annotations

import gzip
import pathlib
import zlib
from collections.abc import Sequence

import numpy as np

from drgrad_jax._src.data import MultiTaskData, Split

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
_INCOME_LABELS = {"-50000": 0.0, "50000+": 1.0}
"""The income label values documented in ``census-income.names``; spaces inside a
value and one trailing period (the row terminator of the C4.5 format) are ignored,
so ``- 50000.``, ``-50000`` and ``50000+`` are all read."""


def _income(v: np.ndarray) -> np.ndarray:
    keys = np.char.rstrip(np.char.replace(v, " ", ""), ".")
    return np.isin(keys, "50000+")


CENSUS_TASKS = {
    "income": (_INCOME, _income),
    "never_married": (_MARITAL, lambda v: v == "Never married"),
    "education": (_EDUCATION, lambda v: np.isin(v, _COLLEGE)),
}
"""Census task name -> (label column, rule mapping that column's strings to 0/1)."""


def _read_census(path: pathlib.Path) -> tuple[list[tuple[str, ...]], np.ndarray]:
    """Reads one Census file into its 42 columns of raw strings and the line numbers."""
    if not path.is_file():
        raise FileNotFoundError(f"Census-Income file not found: {path}")
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rt", encoding="latin-1") as f:
            lines = f.read().splitlines()
    except (EOFError, OSError, zlib.error) as e:  # cut or garbled gzip stream
        raise ValueError(f"{path} is not a readable Census-Income file: {e}") from e
    if lines and lines[0].startswith("\xef\xbb\xbf"):  # a UTF-8 byte-order mark
        lines[0] = lines[0][3:]
    width = len(CENSUS_COLUMNS)
    kept, linenos = [], []
    for lineno, line in enumerate(lines, start=1):
        n = line.count(",") + 1
        if n != width:
            if not line.strip():
                continue
            raise ValueError(
                f"{path}:{lineno}: found {n} comma-separated values; a Census-Income row "
                f"has {width}."
            )
        if not kept and line.split(",", 1)[0].strip().lower() == "age":
            raise ValueError(
                f"{path}:{lineno}: a header line (first value 'age'); Census-Income files "
                "have no header, remove that line."
            )
        kept.append(line)
        linenos.append(lineno)
    if not kept:
        raise ValueError(f"{path} holds no rows.")
    # One split of the whole text is much faster than one per line.
    flat = ",".join(kept).split(",")
    return [tuple(flat[c::width]) for c in range(width)], np.asarray(linenos)


def _census_place(sources, row: int) -> str:
    """``file:line`` of row ``row`` of the concatenated ``sources`` ((path, linenos) pairs)."""
    for path, linenos in sources:
        if row < linenos.size:
            return f"{path}:{linenos[row]}"
        row -= linenos.size
    raise IndexError(row)


def _check_income(column: np.ndarray, sources) -> None:
    keys = np.char.rstrip(np.char.replace(column, " ", ""), ".")
    bad = np.flatnonzero(~np.isin(keys, list(_INCOME_LABELS)))
    if bad.size:
        raise ValueError(
            f"{_census_place(sources, bad[0])}: income label {str(column[bad[0]])!r} is not one of "
            f"the documented values {sorted(_INCOME_LABELS)} ({bad.size} such rows)."
        )


def _numeric(column: Sequence[str], c: int, sources) -> np.ndarray:
    """Parses a continuous column; text that is not a finite number names its file and line."""
    try:
        x = np.asarray(column, dtype=np.float64)
        bad = np.flatnonzero(~np.isfinite(x))
    except ValueError:
        bad = None
    if bad is None or bad.size:
        for row, v in enumerate(column):
            try:
                ok = np.isfinite(float(v))
            except ValueError:
                ok = False
            if not ok:
                raise ValueError(
                    f"{_census_place(sources, row)}: column {c + 1} ({CENSUS_COLUMNS[c]}) is "
                    f"not a finite number: {str(v).strip()!r}."
                )
    return x


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
      ValueError: naming the file and line: a row with the wrong column count,
        a header line, an income label other than the documented ``-50000`` and ``50000+``, or a
        continuous value that is not a finite number (text ``nan``/``inf``
        included); also an unknown task or protocol, bad fractions, or an empty
        split. A UTF-8 byte-order mark is skipped, and every value is stripped of
        surrounding whitespace (labels and categories alike).

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
        train_cols, train_lines = _read_census(train_file)
        test_cols, test_lines = _read_census(test_file)
        sources = [(train_file, train_lines), (test_file, test_lines)]
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
        columns, lines = _read_census(source)
        sources = [(source, lines)]
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

    columns = [_strip(col) for col in columns]  # one whitespace rule for labels and categories
    if "income" in tasks:
        _check_income(columns[_INCOME], sources)
    labels = np.stack(
        [CENSUS_TASKS[t][1](columns[CENSUS_TASKS[t][0]]) for t in tasks], axis=1
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
        x = _numeric(columns[c], c, sources)
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
