"""Census-Income loader: every field's domain is checked, and errors name the file and line."""

import gzip
import pathlib

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from drgrad_jax import data

FIXTURE = pathlib.Path(__file__).parent / "fixtures" / "census_tiny" / "census-income.test.gz"
LINES = gzip.decompress(FIXTURE.read_bytes()).decode("latin-1").splitlines()


def _write(tmp_path, lines, name="census-income.test", raw_prefix=b""):
    path = tmp_path / name
    path.write_bytes(raw_prefix + "\n".join(lines).encode("latin-1"))
    return path


def _set(line, col, value):
    values = line.split(",")
    values[col] = value
    return ",".join(values)


def _reference_income(lines):
    """Income labels read straight from the documented values (slow, per row)."""
    out = []
    for line in lines:
        v = line.split(",")[41].replace(" ", "")
        v = v[:-1] if v.endswith(".") else v
        out.append({"-50000": 0.0, "50000+": 1.0}[v])
    return np.asarray(out)


def _labels(d):
    return np.concatenate([d.train.labels, d.val.labels, d.test.labels])


def test_income_without_the_period_is_read_as_positive(tmp_path):
    lines = [line.replace("50000+.", "50000+").replace("- 50000.", "-50000") for line in LINES]
    d = data.load_census_income(_write(tmp_path, lines), tasks=("income",))
    ref = data.load_census_income(FIXTURE, tasks=("income",))
    assert _labels(d)[:, 0].sum() == _reference_income(LINES).sum() > 0
    np.testing.assert_array_equal(_labels(d), _labels(ref))


def test_unknown_income_label_names_file_and_line(tmp_path):
    lines = list(LINES)
    lines[6] = _set(lines[6], 41, " 50000-.")
    with pytest.raises(ValueError, match=r"census-income\.test:7: income label '50000-\.'"):
        data.load_census_income(_write(tmp_path, lines))


@pytest.mark.parametrize("text", [" nan", " inf", " -Infinity", " NaN"])
def test_text_nan_in_a_numeric_column_names_file_and_line(tmp_path, text):
    lines = list(LINES)
    lines[4] = _set(lines[4], 0, text)
    with pytest.raises(ValueError, match=r"census-income\.test:5: column 1 \(age\) is not a fin"):
        data.load_census_income(_write(tmp_path, lines))


def test_non_numeric_value_names_file_and_line(tmp_path):
    lines = list(LINES)
    lines[2] = _set(lines[2], 5, " ten")
    with pytest.raises(ValueError, match=r"test:3: column 6 \(wage_per_hour\) is not a finite"):
        data.load_census_income(_write(tmp_path, lines))


def test_whitespace_is_normalised_for_categories_and_labels(tmp_path):
    # Extra or missing spaces around every value load the same data.
    squeezed = [",".join(v.strip() for v in line.split(",")) for line in LINES]
    # Rows alternate between spellings, so a per-spelling vocabulary would grow.
    padded = [
        ",".join(" " * (i % 3) + v.strip() + "\t" * (i % 2) for v in line.split(","))
        for i, line in enumerate(LINES)
    ]
    ref = data.load_census_income(FIXTURE)
    for lines in (squeezed, padded):
        d = data.load_census_income(_write(tmp_path, lines))
        assert d.vocab_sizes == ref.vocab_sizes
        np.testing.assert_array_equal(d.train.cat, ref.train.cat)
        np.testing.assert_array_equal(_labels(d), _labels(ref))


def test_bom_is_stripped(tmp_path):
    d = data.load_census_income(_write(tmp_path, LINES, raw_prefix=b"\xef\xbb\xbf"))
    ref = data.load_census_income(FIXTURE)
    np.testing.assert_array_equal(d.train.dense, ref.train.dense)


def test_header_line_is_refused_by_name(tmp_path):
    header = ",".join(data.CENSUS_COLUMNS)
    with pytest.raises(ValueError, match=r"census-income\.test:1: a header line"):
        data.load_census_income(_write(tmp_path, [header] + LINES))


def test_mmoe_protocol_names_the_right_file(tmp_path):
    train = list(LINES)
    test = list(LINES)
    test[9] = _set(test[9], 0, " nan")
    _write(tmp_path, train, "census-income.data")
    _write(tmp_path, test, "census-income.test")
    with pytest.raises(ValueError, match=r"census-income\.test:10: column 1"):
        data.load_census_income(tmp_path, protocol="mmoe")


_GARBAGE = st.sampled_from(["nan", "inf", "-inf", "x", "", "1e400", "+", "?", "- 5e4"])
CASES = {"n": 0}


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    row=st.integers(0, len(LINES) - 1),
    col=st.sampled_from([0, 5, 16, 17, 18, 30, 39, 41]),
    value=_GARBAGE,
    pad=st.sampled_from(["", " ", "  ", "\t"]),
)
def test_generated_bad_cells_are_refused_naming_the_line(tmp_path, row, col, value, pad):
    CASES["n"] += 1
    lines = list(LINES)
    lines[row] = _set(lines[row], col, pad + value + pad)
    path = _write(tmp_path, lines)
    with pytest.raises(ValueError, match=rf"census-income\.test:{row + 1}: "):
        data.load_census_income(path)


@settings(
    max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    row=st.integers(0, len(LINES) - 1),
    label=st.sampled_from(["50000+.", "50000+", "- 50000.", "-50000", " - 50000 .", "50000 +"]),
)
def test_generated_label_spellings_match_the_reference(tmp_path, row, label):
    CASES["n"] += 1
    lines = list(LINES)
    lines[row] = _set(lines[row], 41, " " + label)
    d = data.load_census_income(_write(tmp_path, lines), tasks=("income",))
    assert _labels(d)[:, 0].sum() == _reference_income(lines).sum()
