"""Tests of the Criteo benchmark's reference scores (docs/almmta.md, *Criteo history covariate*)."""

import numpy as np
import pytest

pytest.importorskip("scipy")

from benchmarks import _criteo_reference as ref  # noqa: E402


def _flat():
    # Journey 0: user 2, campaigns 1, 1, 4 at 0 h, 1 h, 100 h; journey 1: user 0, campaign 3
    # twice, an hour apart, 11 h after journey 0 ends (a gap that belongs to no journey).
    return {
        "offsets": np.array([0, 3, 5]),
        "user": np.array([2, 0]),
        "label": np.array([1, 0]),
        "campaign": np.array([1, 1, 4, 3, 3]),
        "timestamp": np.array([0, 3600, 360_000, 400_000, 403_600]),
    }


def test_journey_features_by_hand():
    f = ref.journey_features(_flat())
    assert f.shape == (2, 39)
    np.testing.assert_allclose(f[0, :10], np.eye(10)[1] * 2 / 3 + np.eye(10)[4] / 3)
    np.testing.assert_array_equal(f[0, 10:20], np.eye(10)[1])  # first campaign
    np.testing.assert_array_equal(f[0, 20:30], np.eye(10)[4])  # last campaign
    hours, gaps = 100.0, [1.0, 99.0]
    expected = [np.log1p(3), np.log1p(hours), np.log1p(hours / 2), np.log1p(gaps[1])]
    expected += [
        np.log1p(max(gaps)),
        1.0,
        np.sin(2 * np.pi * 4 / 24),
        np.cos(2 * np.pi * 4 / 24),
        0.0,
    ]
    np.testing.assert_allclose(f[0, 30:], expected, atol=1e-12)
    np.testing.assert_allclose(f[1, 30:35], np.log1p([2.0, 1.0, 1.0, 1.0, 1.0]))
    assert f[1, 35] == 0.0 and f[1, 38] == pytest.approx(400_000 / 86_400 / 30)


def test_converted_flag_and_subgroups():
    seen = ref.converted_in_train(_flat(), np.array([0, 2, 2, 5]))
    assert seen.tolist() == [False, True, True, False]
    y = np.array([0, 1, 0, 0])
    out = ref.subgroup_auc(y, np.array([0.9, 0.8, 0.1, 0.2]), seen)
    assert out["converted_in_train"] == {"auc": 1.0, "journeys": 2, "positives": 1}
    assert np.isnan(out["not_converted_in_train"]["auc"])
    sub = ref.subset_flat(_flat(), np.array([1]))
    assert sub["campaign"].tolist() == [3, 3] and sub["offsets"].tolist() == [0, 2]


def test_fit_logistic_recovers_coefficients():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(20_000, 2))
    p = 1 / (1 + np.exp(-(0.5 + x @ np.array([1.5, -1.0]))))
    y = (rng.random(20_000) < p).astype(float)
    predict = ref.fit_logistic(x, y, l2=0.0)
    z = np.log(predict(np.eye(2)) / (1 - predict(np.eye(2))))
    z0 = np.log(predict(np.zeros((1, 2))) / (1 - predict(np.zeros((1, 2)))))
    np.testing.assert_allclose(z0, 0.5, atol=0.06)
    np.testing.assert_allclose(z - z0, [1.5, -1.0], atol=0.08)
