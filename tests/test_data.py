"""Tests for drgrad_jax.data: synthetic generators and the Census-Income loader."""

import gzip
import pathlib
import shutil

import numpy as np
import pytest

from drgrad_jax import data

FIXTURE = pathlib.Path(__file__).parent / "fixtures" / "census_tiny"


# --- synthetic ---------------------------------------------------------------------


@pytest.mark.parametrize("p", [-0.5, 0.0, 0.5, 0.9])
def test_mmoe_linear_labels_have_pearson_p(p):
    d = data.mmoe_synthetic(100_000, 1, 1, correlation=p, num_sines=0, seed=int(10 * p) + 10)
    y = d.train.targets
    r = np.corrcoef(y[:, 0], y[:, 1])[0, 1]
    assert abs(r - p) < 0.02, (p, r)


def test_mmoe_weights_have_cosine_p_and_binarization_at_train_median():
    d = data.mmoe_synthetic(4000, 500, 500, correlation=0.3, dim=20, num_sines=0, noise_std=0.0)
    x, y = d.train.dense.astype(np.float64), d.train.targets.astype(np.float64)
    # Noise-free linear targets: recover w1, w2 by least squares and check the geometry.
    w = np.linalg.lstsq(x, y, rcond=None)[0]
    cos = w[:, 0] @ w[:, 1] / np.linalg.norm(w[:, 0]) / np.linalg.norm(w[:, 1])
    np.testing.assert_allclose(cos, 0.3, atol=1e-4)
    np.testing.assert_allclose(np.linalg.norm(w, axis=0), [1.0, 1.0], atol=1e-4)
    median = np.median(d.train.targets, axis=0)
    np.testing.assert_array_equal(d.test.labels, (d.test.targets > median).astype(np.float32))
    np.testing.assert_allclose(d.train.labels.mean(0), 0.5, atol=1e-3)


def test_mmoe_sines_task_pairs_and_seeds():
    d = data.mmoe_synthetic(20_000, 10, 10, correlation=0.9, num_task_pairs=2, seed=1)
    assert d.task_names == ("t1_0", "t2_0", "t1_1", "t2_1")
    r = np.corrcoef(d.train.targets.T)
    assert r[0, 1] > 0.5 and r[2, 3] > 0.5  # sine terms keep p > 0 pairs correlated
    assert abs(r[0, 2]) < 0.1 and abs(r[1, 3]) < 0.1  # pairs are independent
    again = data.mmoe_synthetic(20_000, 10, 10, correlation=0.9, num_task_pairs=2, seed=1)
    np.testing.assert_array_equal(d.train.dense, again.train.dense)
    other = data.mmoe_synthetic(20_000, 10, 10, correlation=0.9, num_task_pairs=2, seed=2)
    assert not np.allclose(d.train.targets, other.train.targets)
    assert d.train.cat.shape == (20_000, 0) and d.vocab_sizes == ()


def test_mmoe_bad_arguments():
    with pytest.raises(ValueError, match="correlation"):
        data.mmoe_synthetic(10, 10, 10, correlation=1.5)
    with pytest.raises(ValueError, match="num_val"):
        data.mmoe_synthetic(10, 0, 10)
    with pytest.raises(ValueError, match="dim=3"):
        data.mmoe_synthetic(10, 10, 10, dim=3, num_task_pairs=2)
    with pytest.raises(ValueError, match="num_sines"):
        data.mmoe_synthetic(10, 10, 10, num_sines=-1)


def test_drgrad_cooperate_conflict_signs():
    kw = dict(num_sines=0, dim=16)
    coop = data.drgrad_synthetic("cooperate", 20_000, 10, 10, **kw)
    conf = data.drgrad_synthetic("conflict", 20_000, 10, 10, **kw)
    r = lambda d: np.corrcoef(d.train.targets.T)[0, 1]
    np.testing.assert_allclose(r(coop), 0.5, atol=0.03)
    np.testing.assert_allclose(r(conf), -0.5, atol=0.03)
    sweep = data.drgrad_synthetic("cooperate", 20_000, 10, 10, correlation=0.8, **kw)
    np.testing.assert_allclose(r(sweep), 0.8, atol=0.03)
    np.testing.assert_array_equal(coop.train.cat[:, 0], coop.train.user)


def test_drgrad_personalized_groups():
    d = data.drgrad_synthetic(
        "personalized", 40_000, 10, 10, num_users=8, group_correlations=(0.9, -0.9), num_sines=0
    )
    y, u = d.train.targets, d.train.user
    assert d.num_users == 8 and d.vocab_sizes == (8,) and u.min() >= 0 and u.max() < 8
    for g, p in enumerate((0.9, -0.9)):
        m = (u % 2) == g
        np.testing.assert_allclose(np.corrcoef(y[m].T)[0, 1], p, atol=0.03)
    assert abs(np.corrcoef(y.T)[0, 1]) < 0.05  # pooled over users: no clear relation
    with pytest.raises(ValueError, match="group_correlations"):
        data.drgrad_synthetic("personalized", 10, 10, 10, group_correlations=(2.0,))
    with pytest.raises(ValueError, match="correlation does not apply"):
        data.drgrad_synthetic("personalized", 10, 10, 10, correlation=0.5)
    with pytest.raises(ValueError, match="setting"):
        data.drgrad_synthetic("neutral")


# --- Census-Income ---------------------------------------------------------------


def test_census_shipped_file_counts(census_dir):
    d = data.load_census_income(census_dir)
    splits = (d.train, d.val, d.test)
    assert sum(s.num_examples for s in splits) == 99_762
    labels = np.concatenate([s.labels for s in splits])
    assert labels[:, 0].sum() == 6_186 and labels[:, 1].sum() == 43_143
    assert [s.num_examples for s in splits] == [59_857, 19_952, 19_953]
    assert "re-split 60/20/20 (seed 0)" in d.description
    assert len(d.vocab_sizes) == 32 and d.num_dense == 7
    assert "education" in d.cat_names
    for col in ("marital_status", "income", "instance_weight"):
        assert col not in d.cat_names and col not in d.dense_names
    assert d.train.cat.min() >= 1  # id 0 (unseen) never occurs in the training split
    assert np.all(d.val.cat < np.array(d.vocab_sizes))
    np.testing.assert_allclose(d.train.dense.mean(0), 0, atol=1e-4)
    np.testing.assert_allclose(d.train.dense.std(0), 1, atol=1e-3)
    again = data.load_census_income(census_dir / "census-income.test.gz", seed=1)
    assert not np.array_equal(again.train.labels, d.train.labels)


def _parse(path):
    opener = gzip.open if str(path).endswith(".gz") else open
    with opener(path, "rt") as f:
        return [[v.strip() for v in line.split(",")] for line in f if line.strip()]


def test_census_fixture_two_file_protocol_matches_oracle():
    d = data.load_census_income(FIXTURE)
    train_rows = _parse(FIXTURE / "census-income.data")
    test_rows = _parse(FIXTURE / "census-income.test.gz")
    assert "MMoE protocol" in d.description
    assert d.train.num_examples == len(train_rows) == 30
    assert d.val.num_examples + d.test.num_examples == len(test_rows) == 20
    # Training rows keep file order: labels and a transformed money column match.
    income = np.array([r[41] == "50000+." for r in train_rows], np.float32)
    never = np.array([r[7] == "Never married" for r in train_rows], np.float32)
    np.testing.assert_array_equal(d.train.labels, np.stack([income, never], 1))
    gains = np.log1p(np.array([float(r[16]) for r in train_rows]))
    col = d.dense_names.index("capital_gains")
    np.testing.assert_allclose(
        d.train.dense[:, col], (gains - gains.mean()) / gains.std(), rtol=1e-5
    )
    # Vocabularies come from the training file only: its unseen value maps to id 0.
    f = d.cat_names.index("class_of_worker")
    seen = sorted({r[1] for r in train_rows})
    assert d.vocab_sizes[f] == len(seen) + 1
    test_values = np.concatenate([d.val.cat[:, f], d.test.cat[:, f]])
    assert (test_values == 0).sum() == sum(r[1] not in seen for r in test_rows) == 1
    expect = np.array([seen.index(r[1]) + 1 for r in train_rows])
    np.testing.assert_array_equal(d.train.cat[:, f], expect)


def test_census_education_task_and_single_file(tmp_path):
    d = data.load_census_income(FIXTURE, ("education", "never_married"))
    assert "education" not in d.cat_names and len(d.vocab_sizes) == 31
    rows = _parse(FIXTURE / "census-income.data")
    college = np.array(
        [
            r[4] in ("Bachelors degree(BA AB BS)", "Masters degree(MA MS MEng MEd MSW MBA)")
            for r in rows
        ]
    )
    np.testing.assert_array_equal(d.train.labels[:, 0], college.astype(np.float32))
    single = data.load_census_income(FIXTURE / "census-income.data", fractions=(0.5, 0.25, 0.25))
    assert [s.num_examples for s in (single.train, single.val, single.test)] == [15, 8, 7]
    assert "re-split 50/25/25" in single.description
    # The re-split protocol also applies to a directory holding only one file.
    shutil.copy(FIXTURE / "census-income.test.gz", tmp_path)
    only = data.load_census_income(tmp_path)
    assert only.train.num_examples == 12 and "re-split 60/20/20" in only.description


def test_census_bad_inputs(tmp_path):
    with pytest.raises(FileNotFoundError, match="nowhere"):
        data.load_census_income(tmp_path / "nowhere")
    with pytest.raises(FileNotFoundError, match="no census-income"):
        data.load_census_income(tmp_path)
    rows = (FIXTURE / "census-income.data").read_text().splitlines()
    bad = tmp_path / "census-income.test"
    bad.write_text("\n".join(rows[:3] + [rows[3].rsplit(",", 1)[0]] + rows[4:]) + "\n")
    with pytest.raises(ValueError, match=r"census-income.test:4: found 41"):
        data.load_census_income(bad)
    with pytest.raises(ValueError, match="unknown name.*salary"):
        data.load_census_income(FIXTURE, ("salary", "never_married"))
    with pytest.raises(ValueError, match="protocol"):
        data.load_census_income(FIXTURE, protocol="official")
    with pytest.raises(FileNotFoundError, match="protocol='mmoe'"):
        data.load_census_income(FIXTURE / "census-income.data", protocol="mmoe")
    tiny = tmp_path / "two.data"
    tiny.write_text("\n".join(rows[:2]) + "\n")
    with pytest.raises(ValueError, match="val split .* is empty"):
        data.load_census_income(tiny)
    empty = tmp_path / "empty.data"
    empty.write_text("\n")
    with pytest.raises(ValueError, match="no rows"):
        data.load_census_income(empty)
    with pytest.raises(ValueError, match="fractions"):
        data.load_census_income(FIXTURE / "census-income.data", fractions=(0.5, 0.5, 0.5))
