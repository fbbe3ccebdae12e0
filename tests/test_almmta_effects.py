"""Per-touch effect scores (RMSE, pooled and per-journey Spearman) vs a slow plain-Python oracle."""

import math

import hypothesis.strategies as st
import numpy as np
import pytest
from hypothesis import example, given, settings

from almmta_jax import metrics

# ------------------------------------------------------------- slow references


def _ref_ranks(values):
    """1-based ranks, each tie block given the mean of the positions it spans (scipy's 'average')."""
    ordered = sorted(values)
    ranks = []
    for v in values:
        positions = [i + 1 for i, w in enumerate(ordered) if w == v]
        ranks.append(sum(positions) / len(positions))
    return ranks


def _ref_spearman(a, b):
    """Pearson correlation of the average ranks; NaN with < 2 values or a constant side."""
    n = len(a)
    if n < 2 or len(set(a)) == 1 or len(set(b)) == 1:
        return math.nan
    ra, rb = _ref_ranks(a), _ref_ranks(b)
    ma, mb = sum(ra) / n, sum(rb) / n
    cov = sum((x - ma) * (y - mb) for x, y in zip(ra, rb))
    va = sum((x - ma) ** 2 for x in ra)
    vb = sum((y - mb) ** 2 for y in rb)
    return cov / math.sqrt(va * vb)


def _ref_scores(est, truth, mask, min_touches=2):
    """``(rmse, pooled, journey mean, journeys scored, touches)`` from the definitions, by loops."""
    pooled_e, pooled_t, rhos = [], [], []
    for row_e, row_t, row_m in zip(est, truth, mask):
        e = [float(x) for x, keep in zip(row_e, row_m) if keep]
        t = [float(x) for x, keep in zip(row_t, row_m) if keep]
        pooled_e += e
        pooled_t += t
        if len(e) >= min_touches:
            rho = _ref_spearman(e, t)
            if not math.isnan(rho):
                rhos.append(rho)
    n = len(pooled_e)
    rmse = math.sqrt(sum((x - y) ** 2 for x, y in zip(pooled_e, pooled_t)) / n)
    journey = sum(rhos) / len(rhos) if rhos else math.nan
    return rmse, _ref_spearman(pooled_e, pooled_t), journey, len(rhos), n


def _assert_matches(got, ref):
    rmse, pooled, journey, scored, touches = ref
    assert got.touches == touches and got.journeys_scored == scored
    for value, expected in ((got.rmse, rmse), (got.pooled_spearman, pooled)):
        assert value == pytest.approx(expected, abs=1e-12, nan_ok=True)
    assert got.journey_spearman == pytest.approx(journey, abs=1e-12, nan_ok=True)


@st.composite
def tables(draw, max_users=5, max_len=6, levels=4):
    """``(estimate, truth, mask)`` with many ties (few levels) and a non-empty mask."""
    u = draw(st.integers(1, max_users))
    n = draw(st.integers(1, max_len))
    cell = st.integers(0, levels - 1)
    grid = lambda elements: st.lists(
        st.lists(elements, min_size=n, max_size=n), min_size=u, max_size=u
    )
    est = np.array(draw(grid(cell)), np.float64) / 10
    truth = np.array(draw(grid(cell)), np.float64) / 10
    mask = np.array(draw(grid(st.booleans())), bool)
    mask[draw(st.integers(0, u - 1)), draw(st.integers(0, n - 1))] = True
    return est, truth, mask


# ----------------------------------------------------------------------- oracle


@settings(max_examples=200, deadline=None)
@given(tables(), st.integers(2, 4))
@example(  # one journey, a tie block on each side
    (np.array([[0.1, 0.1, 0.3, 0.0]]), np.array([[0.2, 0.0, 0.2, 0.2]]), np.ones((1, 4), bool)),
    2,
)
def test_effect_agreement_matches_the_loop_reference(data, min_touches):
    est, truth, mask = data
    got = metrics.effect_agreement(est, truth, mask, min_touches=min_touches)
    _assert_matches(got, _ref_scores(est.tolist(), truth.tolist(), mask.tolist(), min_touches))


def test_ranks_follow_scipy_on_continuous_and_tied_data():
    stats = pytest.importorskip("scipy.stats")
    rng = np.random.default_rng(0)
    for levels in (3, 1000):
        est = rng.integers(0, levels, (40, 8)).astype(np.float64)
        truth = rng.integers(0, levels, (40, 8)).astype(np.float64)
        mask = rng.random((40, 8)) < 0.8
        got = metrics.effect_agreement(est, truth, mask)
        assert got.pooled_spearman == pytest.approx(
            stats.spearmanr(est[mask], truth[mask]).statistic, abs=1e-12
        )
        assert _ref_ranks([3.0, 1.0, 3.0, 2.0]) == list(stats.rankdata([3, 1, 3, 2]))


# ------------------------------------------------------------------- properties


@settings(max_examples=100, deadline=None)
@given(tables())
def test_rmse_is_zero_iff_estimate_equals_truth_on_the_mask(data):
    est, truth, mask = data
    same = np.where(mask, truth, est + 7.0)  # equal on the mask, different off it
    assert metrics.effect_agreement(same, truth, mask).rmse == 0.0
    i, j = np.argwhere(mask)[0]
    off = same.copy()
    off[i, j] += 1e-3
    assert metrics.effect_agreement(off, truth, mask).rmse > 0.0


MONOTONE = (np.exp, np.arctan, lambda x: x**3 + 2 * x, lambda x: 5 * x - 3)


@settings(max_examples=100, deadline=None)
@given(tables(), st.sampled_from(range(len(MONOTONE))), st.sampled_from(range(len(MONOTONE))))
def test_spearman_is_invariant_to_strictly_increasing_transforms(data, f, g):
    est, truth, mask = data
    base = metrics.effect_agreement(est, truth, mask)
    moved = metrics.effect_agreement(MONOTONE[f](est), MONOTONE[g](truth), mask)
    assert moved.journeys_scored == base.journeys_scored
    for field in ("pooled_spearman", "journey_spearman"):
        a, b = getattr(base, field), getattr(moved, field)
        assert b == pytest.approx(a, abs=1e-12, nan_ok=True), field


@settings(max_examples=100, deadline=None)
@given(tables(), st.integers(0, 2**31 - 1))
def test_masked_entries_change_nothing(data, seed):
    est, truth, mask = data
    rng = np.random.default_rng(seed)
    junk = rng.choice([np.nan, np.inf, -np.inf, 1e9, -5.0, 0.0], size=est.shape)
    base = metrics.effect_agreement(est, truth, mask)
    other = metrics.effect_agreement(np.where(mask, est, junk), np.where(mask, truth, junk), mask)
    assert other.touches == base.touches and other.journeys_scored == base.journeys_scored
    for a, b in zip(base, other):
        assert b == pytest.approx(a, abs=1e-12, nan_ok=True)


def test_levels_the_per_journey_spearman_cannot_see():
    """A per-journey shift and a cross-user reordering keep per-journey Spearman at 1."""
    rng = np.random.default_rng(1)
    truth = rng.uniform(0.0, 0.1, (50, 6))
    mask = np.ones(truth.shape, bool)
    shifted = truth + rng.uniform(-0.5, 0.5, (50, 1))  # each journey moved by its own amount
    a = metrics.effect_agreement(shifted, truth, mask)
    assert a.journey_spearman == pytest.approx(1.0) and a.journeys_scored == 50
    assert a.rmse > 0.1 and a.pooled_spearman < 0.5
    scaled = metrics.effect_agreement(3.0 * truth, truth, mask)  # right order, wrong scale
    assert scaled.journey_spearman == pytest.approx(1.0)
    assert scaled.pooled_spearman == pytest.approx(1.0) and scaled.rmse > 0.05


def test_min_touches_and_constant_journeys_leave_the_mean():
    truth = np.array([[0.3, 0.1, 0.2], [0.1, 0.2, 0.0], [0.2, 0.2, 0.2]])
    est = np.array([[0.3, 0.1, 0.2], [0.2, 0.1, 0.0], [0.1, 0.2, 0.3]])
    mask = np.array([[1, 1, 1], [1, 1, 0], [1, 1, 1]], bool)
    # Journey 2's truth is constant: never scored; journey 1 has two touches.
    two = metrics.effect_agreement(est, truth, mask)
    assert (two.journeys_scored, two.journey_spearman) == (2, 0.0)
    three = metrics.effect_agreement(est, truth, mask, min_touches=3)
    assert (three.journeys_scored, three.journey_spearman) == (1, 1.0)


def test_a_non_finite_estimate_on_a_valid_touch_reports_nan():
    truth = np.array([[0.3, 0.1, 0.2]])
    got = metrics.effect_agreement(np.array([[0.3, np.nan, 0.2]]), truth, np.ones((1, 3), bool))
    assert np.isnan([got.rmse, got.pooled_spearman, got.journey_spearman]).all()
    assert (got.journeys_scored, got.touches) == (0, 3)


# ------------------------------------------------------------------- bad inputs


@pytest.mark.parametrize(
    "est, truth, mask, kwargs, match",
    [
        (np.zeros(3), np.zeros(3), np.ones(3, bool), {}, "estimate must be a table"),
        (np.zeros((2, 3)), np.zeros((2, 2)), np.ones((2, 3), bool), {}, "truth has shape"),
        (np.zeros((2, 3)), np.zeros((2, 3)), np.full((2, 3), 2), {}, "mask must be boolean"),
        (np.zeros((2, 3)), np.zeros((2, 3)), np.zeros((2, 3), bool), {}, "mask selects no"),
        (np.zeros((1, 2)), np.array([[np.nan, 0.0]]), np.ones((1, 2), bool), {}, "truth is not"),
        (np.zeros((1, 2)), np.zeros((1, 2)), np.ones((1, 2), bool), {"min_touches": 1}, "min_t"),
        (np.zeros((1, 2)), np.zeros((1, 2)), np.ones((1, 2), bool), {"min_touches": 2.0}, "min_t"),
    ],
)
def test_bad_inputs_name_the_argument(est, truth, mask, kwargs, match):
    with pytest.raises(ValueError, match=match):
        metrics.effect_agreement(est, truth, mask, **kwargs)
