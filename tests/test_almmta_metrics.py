"""Uplift metrics, k-means, the grouped-AUUC protocol and the budget replay vs slow NumPy oracles."""

import itertools

import hypothesis.strategies as st
import jax
import numpy as np
import pytest
from hypothesis import example, given, settings

from almmta_jax import metrics
from almmta_jax.metrics import cell_agreement

# ------------------------------------------------------------- slow references


def _ref_curves(scores, y, t):
    order = sorted(range(len(scores)), key=lambda i: -scores[i])  # stable, highest first
    gain, qini = [0.0], [0.0]
    for k in range(1, len(order) + 1):
        top = order[:k]
        nt = sum(t[i] for i in top)
        nc = k - nt
        yt = sum(y[i] for i in top if t[i] == 1)
        yc = sum(y[i] for i in top if t[i] == 0)
        lift = yt / nt - yc / nc if nt and nc else 0.0
        gain.append(lift * k)
        qini.append(yt - yc * nt / nc if nc else 0.0)
    return np.array(gain), np.array(qini)


def _ref_area(order, gains):
    g = np.asarray(gains, np.float64)[list(order)]
    return np.mean(np.cumsum(g))


def _ref_nauuc(scores, gains):
    """Averages the model's area over every order of each tied block (exhaustive)."""
    n = len(scores)
    areas = []
    for perm in itertools.permutations(range(n)):
        ranked = [scores[i] for i in perm]
        if all(ranked[i] >= ranked[i + 1] for i in range(n - 1)):
            areas.append(_ref_area(perm, gains))
    a_model = np.mean(areas)
    a_or = _ref_area(np.argsort(-np.asarray(gains), kind="stable"), gains)
    a_anti = _ref_area(np.argsort(np.asarray(gains), kind="stable"), gains)
    if np.isclose(a_or, a_anti):
        return np.nan
    return (a_model - a_anti) / (a_or - a_anti)


def _ref_grouped(score, exposure, y, e, num_buckets, n_min):
    u, k = exposure.shape
    out = {}
    for c in range(k):
        col = e[:, c]
        edges = np.quantile(col, np.linspace(0, 1, num_buckets + 1)[1:-1])
        # Bucket b is the half-open interval [edge_{b-1}, edge_b) (outer edges infinite).
        bounds = np.concatenate([[-np.inf], edges, [np.inf]])
        for b in range(num_buckets):
            users = [i for i in range(u) if bounds[b] <= col[i] < bounds[b + 1]]
            pos = [i for i in users if exposure[i, c]]
            neg = [i for i in users if not exposure[i, c]]
            if len(pos) < n_min or len(neg) < n_min:
                continue
            yp = sum(y[i] / col[i] for i in pos) / sum(1 / col[i] for i in pos)
            yn = sum(y[i] / (1 - col[i]) for i in neg) / sum(1 / (1 - col[i]) for i in neg)
            s = np.mean([score[i, c] for i in pos])
            out[(b, c)] = (yp - yn, s, len(pos))
    per_bucket = []
    for b in range(num_buckets):
        cells = [(c, v) for (bb, c), v in out.items() if bb == b]
        if len(cells) < 2:
            per_bucket.append(np.nan)
            continue
        s = [v[1] for _, v in cells]
        g = [v[0] * v[2] for _, v in cells]
        per_bucket.append(_ref_nauuc(s, g) if len(cells) <= 7 else np.nan)
    return out, np.array(per_bucket)


def _ref_replay(shares, channel, cost, ts, label, offsets, k, frac):
    n = len(label)
    journey_of = {}
    for i in range(n):
        for t in range(offsets[i], offsets[i + 1]):
            journey_of[t] = i
    roi = []
    for ch in range(k):
        value = sum(
            shares[t] * label[journey_of[t]] for t in range(len(channel)) if channel[t] == ch
        )
        spend = sum(cost[t] for t in range(len(channel)) if channel[t] == ch)
        roi.append(value / spend if spend > 0 else 0.0)
    total_roi = sum(roi)
    budget = [frac * sum(cost) * r / total_roi for r in roi]
    events = sorted(range(len(channel)), key=lambda t: (ts[t], t))
    black, paid, spent, conv = set(), set(), 0.0, 0.0
    for t in events:
        i = journey_of[t]
        if i in black:
            continue
        if budget[channel[t]] >= cost[t]:
            budget[channel[t]] -= cost[t]
            spent += cost[t]
            conv += label[i] / (offsets[i + 1] - offsets[i])
            paid.add(i)
        else:
            black.add(i)
    return spent, conv, len(paid)


# ------------------------------------------------------------ per-unit curves


@pytest.mark.parametrize("seed", range(4))
def test_uplift_and_qini_curves_match_reference(seed):
    rng = np.random.default_rng(seed)
    n = 40
    scores = rng.integers(0, 6, n).astype(float)  # ties on purpose
    y = rng.integers(0, 2, n).astype(float)
    t = rng.integers(0, 2, n).astype(float)
    gain, qini = _ref_curves(scores, y, t)
    np.testing.assert_allclose(metrics.uplift_curve(scores, y, t), gain, atol=1e-5)
    np.testing.assert_allclose(metrics.qini_curve(scores, y, t), qini, atol=1e-5)
    np.testing.assert_allclose(metrics.auuc(scores, y, t), gain.mean() / abs(gain[-1]), rtol=1e-5)
    rand = qini[-1] * np.arange(n + 1) / n
    np.testing.assert_allclose(
        metrics.qini_score(scores, y, t), (qini - rand).mean() / abs(qini[-1]), rtol=1e-4, atol=1e-6
    )


def test_causalml_auuc_of_the_random_line_is_one_half():
    # A curve that is exactly the straight random line normalizes to mean 0.5.
    n = 10
    y = np.zeros(2 * n)
    t = np.tile([1.0, 0.0], n)
    y[::2] = 1.0  # treated respond, control do not: lift 1 at every even k
    scores = np.zeros(2 * n)  # all tied: units are taken in index order
    gain = np.asarray(metrics.uplift_curve(scores, y, t))
    # The gain is the straight line k (lift 1 times k) except at k = 1, where the
    # control arm is still empty and the gain is 0 by convention.
    line = np.arange(2 * n + 1.0)
    np.testing.assert_allclose(gain, np.where(line == 1, 0.0, line), atol=1e-5)
    # AUUC = mean of the curve / |last gain|: the line's mean is exactly 1/2 of its end.
    np.testing.assert_allclose(line.mean() / line[-1], 0.5)
    expected = (line.sum() - 1.0) / (2 * n + 1) / (2 * n)
    np.testing.assert_allclose(metrics.auuc(scores, y, t), expected, rtol=1e-6)
    assert abs(expected - 0.5) < 3e-3


@settings(max_examples=40, deadline=None)
@given(st.lists(st.integers(0, 3), min_size=2, max_size=6), st.integers(0, 10_000))
@example(score_ints=[0, 0], seed=104)  # gains 0.5621, 0.5602: areas differ by 0.1%
def test_normalized_auuc_matches_exhaustive_tie_average(score_ints, seed):
    rng = np.random.default_rng(seed)
    scores = np.asarray(score_ints, float)
    # float32 gains: the reference then sees exactly the values the metric sees.
    gains = rng.normal(size=scores.size).astype(np.float32)
    got = float(metrics.normalized_auuc(scores, gains))
    np.testing.assert_allclose(got, _ref_nauuc(list(scores), gains), rtol=1e-4, atol=1e-5)
    curve = np.asarray(metrics.gain_curve(scores, gains))
    assert curve[0] == 0 and np.isclose(curve[-1], gains.sum(), atol=1e-5)


def test_normalized_auuc_accurate_for_gains_close_together():
    """Gains 16 +- 0.01: the areas agree to 4 digits, yet the float32 metric matches float64 to 1e-5."""
    noise = np.random.default_rng(0).normal(size=5).astype(np.float32)
    gains = np.float32(16.0) + np.float32(1e-2) * noise
    scores = np.array([3.0, 0.0, 1.0, 2.0, 1.0])
    want = _ref_nauuc(list(scores), gains)
    assert np.isclose(float(metrics.normalized_auuc(scores, gains)), want, rtol=1e-5)
    assert np.isclose(float(metrics.normalized_auuc(np.zeros(5), gains)), 0.5, rtol=1e-5)


def test_gain_curve_is_a_straight_line_across_a_tied_block():
    # Sorted: 1 alone, then the tied block {2, 0, 4} (sum 6 over three units,
    # so the line from G(1) = 1 to G(4) = 7), then -1.
    curve = metrics.gain_curve([3.0, 1.0, 1.0, 1.0, 0.0], [1.0, 2.0, 0.0, 4.0, -1.0])
    np.testing.assert_allclose(curve, [0.0, 1.0, 3.0, 5.0, 7.0, 6.0], atol=1e-6)


def test_normalized_auuc_is_nan_when_gains_differ_only_by_rounding():
    # 16 and 16 + one or two float32 ulps: the oracle and anti-oracle areas differ
    # by less than 1e-6 of their size, so the ratio is rounding noise. The same
    # differences around zero are real gains and give a value.
    steps = np.array([0.0, 1.0, 0.0, 0.0, 2.0], np.float32) * np.spacing(np.float32(16))
    scores = np.arange(5.0)
    assert np.isnan(float(metrics.normalized_auuc(scores, np.float32(16) + steps)))
    assert np.isclose(
        float(metrics.normalized_auuc(scores, steps)), _ref_nauuc(list(scores), steps)
    )


@pytest.mark.parametrize("n", [2, 4, 5])
def test_normalized_auuc_random_half_oracle_one_anti_zero(n):
    rng = np.random.default_rng(n)
    gains = rng.normal(size=n)
    assert np.isclose(metrics.normalized_auuc(gains, gains), 1.0)
    assert np.isclose(metrics.normalized_auuc(-gains, gains), 0.0, atol=1e-6)
    # Mean over every ranking is exactly one half; all-tied scores give 0.5 too.
    vals = [
        float(metrics.normalized_auuc(np.asarray(p, float), gains))
        for p in itertools.permutations(range(n))
    ]
    np.testing.assert_allclose(np.mean(vals), 0.5, atol=1e-5)
    np.testing.assert_allclose(metrics.normalized_auuc(np.zeros(n), gains), 0.5, atol=1e-5)


def test_normalized_auuc_degenerate_is_nan():
    assert np.isnan(metrics.normalized_auuc([1.0, 2.0, 3.0], [0.5, 0.5, 0.5]))


def test_uplift_bad_inputs():
    with pytest.raises(ValueError, match="treatment"):
        metrics.uplift_curve([1.0, 2.0], [0, 1], [0, 2])
    with pytest.raises(ValueError, match="gains has shape"):
        metrics.normalized_auuc([1.0, 2.0], [1.0])
    with pytest.raises(ValueError, match="scores must be a vector"):
        metrics.auuc(np.zeros((2, 2)), [0, 1], [0, 1])
    with pytest.raises(ValueError, match="empty"):
        metrics.normalized_auuc([], [])


# ---------------------------------------------------------------------- k-means


def test_kmeans_recovers_separated_blobs_and_is_a_lloyd_fixed_point():
    rng = np.random.default_rng(0)
    centers = rng.normal(size=(4, 3)) * 20
    labels = rng.integers(0, 4, 200)
    pts = centers[labels] + rng.normal(size=(200, 3))
    c, a, inertia = metrics.kmeans(jax.random.key(1), pts, 4, restarts=5, iters=30)
    a = np.asarray(a)
    # Same partition up to relabeling.
    for k in range(4):
        assert len(set(a[labels == k])) == 1
    assert len(set(a)) == 4
    d = ((pts[:, None, :] - np.asarray(c)[None]) ** 2).sum(-1)
    np.testing.assert_array_equal(a, d.argmin(1))
    for k in range(4):
        np.testing.assert_allclose(np.asarray(c)[k], pts[a == k].mean(0), rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(inertia, d.min(1).sum(), rtol=1e-4)


def test_kmeans_bad_inputs():
    with pytest.raises(ValueError, match="k must be"):
        metrics.kmeans(jax.random.key(0), np.zeros((3, 2)), 4)
    with pytest.raises(ValueError, match="points must be"):
        metrics.kmeans(jax.random.key(0), np.zeros(3), 1)


# ------------------------------------------------------ the grouped protocol


def _world(seed, u=600, k=5, effect_scale=0.15):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(u, 2))
    e = 1 / (1 + np.exp(-(x @ rng.normal(size=(2, k)) * 0.7)))
    exposure = rng.random((u, k)) < e
    effect = np.linspace(0, effect_scale, k)
    p = 0.1 + (exposure * effect).sum(1) / k + 0.05 * (x[:, 0] > 0)
    y = (rng.random(u) < p).astype(float)
    score = np.where(exposure, effect[None, :] + rng.normal(size=(u, k)) * 0.05, np.nan)
    return x, np.clip(e, 0.01, 0.99), exposure, y, score


@pytest.mark.parametrize("seed", range(3))
def test_grouped_auuc_matches_slow_reference(seed):
    _, e, exposure, y, score = _world(seed)
    r = metrics.grouped_auuc(score, exposure, y, e, num_buckets=3, n_min=10)
    cells, per_bucket = _ref_grouped(score, exposure, y, e, 3, 10)
    assert set(zip(*np.nonzero(r.kept), strict=True)) == set(cells)
    for (b, c), (u_bc, s_bc, n_pos) in cells.items():
        np.testing.assert_allclose(r.cell_uplift[b, c], u_bc, rtol=1e-9)
        np.testing.assert_allclose(r.cell_score[b, c], s_bc, rtol=1e-9)
        assert r.n_exposed[b, c] == n_pos
    np.testing.assert_allclose(r.per_bucket, per_bucket, rtol=1e-4, atol=1e-5)
    assert np.isclose(r.average, np.nanmean(per_bucket))


def test_grouped_auuc_reports_degenerate_and_empty_buckets():
    _, e, exposure, y, score = _world(0)
    # Positivity drops everything: every bucket is reported, none scored.
    r = metrics.grouped_auuc(score, exposure, y, e, num_buckets=2, n_min=10_000)
    assert not r.valid.any() and np.isnan(r.average) and r.dropped_fraction == 1.0
    assert all(reason.startswith("fewer than 2") for reason in r.reason)
    # Tied propensities leave upper buckets empty; they are reported, not scored.
    r = metrics.grouped_auuc(score, exposure, y, np.full_like(e, 0.3), num_buckets=4, n_min=5)
    # Every edge equals 0.3 and a value on an edge goes up: all users are in the top bucket.
    np.testing.assert_array_equal(r.valid, [False, False, False, True])
    assert [reason == "" for reason in r.reason] == [False, False, False, True]
    assert r.n_exposed[:3].sum() == 0 and r.n_exposed[3].sum() == exposure.sum()
    # All cells with one uplift: A(oracle) = A(anti), reported as degenerate.
    y0 = np.zeros_like(y)
    r = metrics.grouped_auuc(score, exposure, y0, e, num_buckets=1, n_min=5)
    assert not r.valid[0] and r.reason[0].startswith("degenerate")


def test_grouped_auuc_scores_true_ranking_high_and_reverse_low():
    _, e, exposure, y, _ = _world(3, u=4000, k=6, effect_scale=0.6)
    effect = np.linspace(0, 0.6, 6)
    truth = np.where(exposure, effect[None, :], np.nan)
    good = metrics.grouped_auuc(truth, exposure, y, e, num_buckets=2, n_min=30)
    bad = metrics.grouped_auuc(-truth, exposure, y, e, num_buckets=2, n_min=30)
    assert good.average > 0.8 and bad.average < 0.2


def test_grouped_auuc_bad_inputs():
    _, e, exposure, y, score = _world(0, u=50)
    with pytest.raises(ValueError, match="strictly inside"):
        metrics.grouped_auuc(score, exposure, y, np.ones_like(e))
    with pytest.raises(ValueError, match=r"outcome must be \[U=50\]; got shape \(3,\)"):
        metrics.grouped_auuc(score, exposure, y[:3], e)
    with pytest.raises(ValueError, match="finite wherever exposure"):
        metrics.grouped_auuc(np.full_like(e, np.nan), exposure, y, e)


def test_cluster_exposure_scores_match_loop():
    rng = np.random.default_rng(0)
    u, l, k = 30, 6, 4
    uplift = rng.normal(size=(u, l))
    clusters = rng.integers(0, k, (u, l))
    mask = rng.random((u, l)) < 0.7
    exposure, score = metrics.cluster_exposure_scores(uplift, clusters, mask, k)
    for i in range(u):
        for c in range(k):
            vals = [uplift[i, j] for j in range(l) if mask[i, j] and clusters[i, j] == c]
            assert exposure[i, c] == bool(vals)
            if vals:
                np.testing.assert_allclose(score[i, c], np.mean(vals))
            else:
                assert np.isnan(score[i, c])
    with pytest.raises(ValueError, match=r"in \[0, 4\)"):
        metrics.cluster_exposure_scores(uplift, clusters + 4, np.ones((u, l), bool), k)


def test_exposure_propensity_recovers_logistic_model():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(4000, 2))
    w = np.array([[1.5, -1.0], [0.0, 2.0]])
    p = 1 / (1 + np.exp(-(x @ w)))
    exposure = rng.random(p.shape) < p
    e = metrics.exposure_propensity(x, exposure, x[:200], steps=300)
    assert e.shape == (200, 2) and e.min() >= 0.01 and e.max() <= 0.99
    assert np.abs(e - np.clip(p[:200], 0.01, 0.99)).mean() < 0.05


def test_exposure_propensity_starts_from_the_base_rates():
    # The fit starts from the intercept-only maximum-likelihood model: every user
    # gets its cluster's exposure rate in the fitting split. One Adam step of
    # 1e-6 moves each weight by at most 1e-6 (the intercepts' gradient is zero).
    rng = np.random.default_rng(2)
    x = rng.normal(size=(500, 3))
    exposure = rng.random((500, 4)) < np.array([0.1, 0.3, 0.5, 0.8])
    e = metrics.exposure_propensity(x, exposure, x[:7], steps=1, learning_rate=1e-6)
    np.testing.assert_allclose(e, np.tile(exposure.mean(0), (7, 1)), atol=1e-4)


def test_exposure_propensity_of_clusters_every_or_no_user_saw_is_clipped():
    # A base rate of 1 or 0 has no finite logit: the start is clipped inside (0, 1)
    # and the propensity ends at the clip interval's edge.
    rng = np.random.default_rng(5)
    x = rng.normal(size=(200, 2))
    exposure = np.stack([np.ones(200, bool), np.zeros(200, bool), rng.random(200) < 0.5], 1)
    e = metrics.exposure_propensity(x, exposure, x[:9], steps=20, clip=(0.02, 0.98))
    assert np.all(np.isfinite(e))
    np.testing.assert_allclose(e[:, 0], 0.98)
    np.testing.assert_allclose(e[:, 1], 0.02)


def test_exposure_propensity_bad_shapes_name_the_argument():
    x = np.zeros((10, 3))
    exposure = np.zeros((10, 2), bool)
    for x_eval in (np.zeros((4, 2)), np.zeros((4, 4)), np.zeros(3)):
        with pytest.raises(ValueError, match=r"x_eval must be \[U, 3\]"):
            metrics.exposure_propensity(x, exposure, x_eval)
    with pytest.raises(ValueError, match="exposure_fit"):
        metrics.exposure_propensity(x, exposure[:5], x)


def test_propensity_buckets_with_reference_edges_match_numpy():
    rng = np.random.default_rng(1)
    ref, e = rng.random((300, 3)), rng.random((50, 3))
    got = metrics.propensity_buckets(e, 4, reference=ref)
    for c in range(3):
        edges = np.quantile(ref[:, c], [0.25, 0.5, 0.75])
        np.testing.assert_array_equal(got[:, c], np.searchsorted(edges, e[:, c], side="right"))
    with pytest.raises(ValueError, match="reference must be"):
        metrics.propensity_buckets(e, 4, reference=ref[:, :2])


def test_propensity_buckets_values_on_edges_go_to_the_upper_bucket():
    # Nine points 0..8: the 1/4, 2/4, 3/4 quantiles are the data points 2, 4, 6.
    ref = np.arange(9.0)[:, None] * np.array([[1.0, 0.1]])  # column 1 scaled: edges .2 .4 .6
    values = np.array([-1.0, 0.0, 1.999, 2.0, 3.0, 4.0, 5.999, 6.0, 7.0, 8.0, 100.0])
    expected = np.array([0, 0, 0, 1, 1, 2, 2, 3, 3, 3, 3])
    got = metrics.propensity_buckets(values[:, None] * np.array([[1.0, 0.1]]), 4, reference=ref)
    np.testing.assert_array_equal(got, np.stack([expected, expected], axis=1))
    # Without a reference the users' own quantiles are the edges: 0..8 is split 2 | 2 | 2 | 3.
    own = metrics.propensity_buckets(ref, 4)
    np.testing.assert_array_equal(own[:, 0], [0, 0, 1, 1, 2, 2, 3, 3, 3])
    np.testing.assert_array_equal(own[:, 1], own[:, 0])
    # One bucket holds everybody; ties on every edge all go to the top bucket.
    np.testing.assert_array_equal(metrics.propensity_buckets(ref, 1), 0)
    np.testing.assert_array_equal(metrics.propensity_buckets(np.full((5, 2), 0.3), 3), 2)
    assert got.dtype.kind == "i"


def test_grouped_auuc_given_buckets_is_the_quantile_protocol():
    _, e, exposure, y, score = _world(1)
    auto = metrics.grouped_auuc(score, exposure, y, e, num_buckets=3, n_min=10)
    given = metrics.grouped_auuc(
        score, exposure, y, e, num_buckets=3, n_min=10, buckets=metrics.propensity_buckets(e, 3)
    )
    np.testing.assert_array_equal(auto.cell_uplift, given.cell_uplift)
    assert auto.average == given.average
    # Other buckets change the cells.
    other = metrics.grouped_auuc(
        score, exposure, y, e, num_buckets=3, n_min=10, buckets=np.zeros(e.shape, int)
    )
    assert not np.array_equal(np.isfinite(other.cell_uplift), np.isfinite(auto.cell_uplift))
    with pytest.raises(ValueError, match="buckets must be an int"):
        metrics.grouped_auuc(score, exposure, y, e, num_buckets=3, buckets=np.zeros(e.shape))
    with pytest.raises(ValueError, match=r"buckets must lie in \[0, num_buckets=3\)"):
        metrics.grouped_auuc(score, exposure, y, e, num_buckets=3, buckets=np.full(e.shape, 3))


def test_cell_agreement_matches_numpy_on_shared_cells():
    rng = np.random.default_rng(2)
    ref, est = rng.normal(size=(3, 5)), rng.normal(size=(3, 5))
    ref[0, 1], est[2, 3] = np.nan, np.nan
    ok = np.isfinite(ref) & np.isfinite(est)
    a = cell_agreement(ref, est)
    assert a.n_cells == ok.sum() == 13
    np.testing.assert_allclose(a.correlation, np.corrcoef(ref[ok], est[ok])[0, 1])
    np.testing.assert_allclose(a.rmse, np.sqrt(np.mean((est[ok] - ref[ok]) ** 2)))
    np.testing.assert_allclose(a.mean_error, np.mean(est[ok] - ref[ok]))
    assert cell_agreement(np.full((2, 2), np.nan), est[:2, :2]).n_cells == 0
    with pytest.raises(ValueError, match="share a shape"):
        cell_agreement(ref, est[:2])


def _confounded_arms(seed, u=20_000, k=6):
    """An observational arm whose exposures follow x, and a randomized arm (p = 1/2).

    The expected outcome is additive in the exposures, ``p = 0.4 + f(x) + Σ_c E_c τ_c(x)``,
    so a cell's uplift is ``E[τ_c(x) | bucket]`` in both arms; f(x) confounds the
    observational arm.
    """
    rng = np.random.default_rng(seed)
    a, v = rng.normal(size=(2, k)), rng.normal(size=(2, k))
    tau = rng.uniform(-0.04, 0.06, k)

    def arm(randomized):
        x = rng.normal(size=(u, 2))
        e = np.full((u, k), 0.5) if randomized else 1 / (1 + np.exp(-(x @ a)))
        exposed = rng.random((u, k)) < e
        tau_x = tau[None, :] * (1 + 0.5 * np.tanh(x @ v))
        f = 0.2 * np.tanh(x[:, 0]) + 0.2 * np.tanh(x[:, 1])
        return x, exposed, np.clip(0.4 + f + (exposed * tau_x).sum(1), 0.0, 1.0), tau_x

    return arm(False), arm(True)


@pytest.mark.parametrize("seed", range(2))
def test_ipw_cells_agree_with_the_randomized_arm_and_a_broken_propensity_does_not(seed):
    (x_o, e_o, p_o, tau_o), (x_r, e_r, p_r, tau_r) = _confounded_arms(seed)
    half = x_o.shape[0] // 2
    prop = metrics.exposure_propensity(
        x_o[:half], e_o[:half], np.concatenate([x_o[half:], x_r]), steps=300
    )
    prop_o, prop_r = prop[: x_o.shape[0] - half], prop[x_o.shape[0] - half :]
    e_o, p_o, tau_o = e_o[half:], p_o[half:], tau_o[half:]
    b = 2
    buckets_o = metrics.propensity_buckets(prop_o, b)

    def cells(score, exposure, outcome, propensity, buckets):
        return metrics.grouped_auuc(
            score, exposure, outcome, propensity, num_buckets=b, buckets=buckets
        )

    rct = cells(
        np.where(e_r, tau_r, np.nan),
        e_r,
        p_r,
        np.full(e_r.shape, 0.5),
        metrics.propensity_buckets(prop_r, b, reference=prop_o),
    )
    score_o = np.where(e_o, tau_o, np.nan)
    fitted = cells(score_o, e_o, p_o, prop_o, buckets_o)
    broken = {
        "no x": np.full(prop_o.shape, 0.5),
        "other users": prop_o[np.random.default_rng(seed).permutation(prop_o.shape[0])],
    }
    good = cell_agreement(rct.cell_uplift, fitted.cell_uplift)
    assert good.n_cells == 12 and good.correlation > 0.85 and good.rmse < 0.015
    for name, p in broken.items():
        bad = cell_agreement(rct.cell_uplift, cells(score_o, e_o, p_o, p, buckets_o).cell_uplift)
        assert bad.rmse > 2 * good.rmse, name
    # Scoring by the true effects ranks the clusters near-perfectly on both arms.
    assert fitted.average > 0.9 and rct.average > 0.9


def test_randomized_arm_ranks_scorers_like_the_observational_protocol():
    (x_o, e_o, p_o, tau_o), (x_r, e_r, p_r, tau_r) = _confounded_arms(5, u=10_000)
    prop = metrics.exposure_propensity(x_o, e_o, np.concatenate([x_o, x_r]), steps=300)
    prop_o, prop_r = prop[: x_o.shape[0]], prop[x_o.shape[0] :]
    buckets_r = metrics.propensity_buckets(prop_r, 2, reference=prop_o)
    offset = np.random.default_rng(0).normal(0, 0.04, tau_o.shape[1])  # per-cluster error
    scorers = {  # each maps the true per-user effects to a score
        "oracle": lambda t: t,
        "noisy": lambda t: t + offset[None, :],
        "constant": lambda t: np.zeros_like(t),
        "reversed": lambda t: -t,
    }
    obs, rct = [], []
    for fn in scorers.values():
        obs.append(
            metrics.grouped_auuc(
                np.where(e_o, fn(tau_o), np.nan), e_o, p_o, prop_o, num_buckets=2
            ).average
        )
        rct.append(
            metrics.grouped_auuc(
                np.where(e_r, fn(tau_r), np.nan),
                e_r,
                p_r,
                np.full(e_r.shape, 0.5),
                num_buckets=2,
                buckets=buckets_r,
            ).average
        )
    assert np.argsort(obs).tolist() == np.argsort(rct).tolist() == [3, 2, 1, 0]


# ---------------------------------------------------------------- budget replay


@pytest.mark.parametrize("seed", range(3))
def test_budget_replay_matches_reference(seed):
    rng = np.random.default_rng(seed)
    lengths = rng.integers(1, 5, 40)
    offsets = np.concatenate([[0], np.cumsum(lengths)])
    t = offsets[-1]
    channel = rng.integers(0, 3, t)
    cost = rng.uniform(0.1, 2.0, t)
    ts = rng.integers(0, 50, t)  # ties in time on purpose
    label = rng.integers(0, 2, 40).astype(float)
    raw = rng.random(t)
    shares = raw / np.repeat(np.add.reduceat(raw, offsets[:-1]), lengths)
    r = metrics.budget_replay(shares, channel, cost, ts, label, offsets, num_channels=3)
    for i, frac in enumerate(r.fractions):
        spent, conv, served = _ref_replay(shares, channel, cost, ts, label, offsets, 3, frac)
        np.testing.assert_allclose(r.spent[i], spent)
        np.testing.assert_allclose(r.conversions[i], conv)
        assert r.journeys[i] == served
        if conv > 0:
            np.testing.assert_allclose(r.cpa[i], 1000 * spent / conv)
    assert np.all(r.spent <= np.sum(cost) * r.fractions + 1e-9)


def test_budget_replay_bad_inputs():
    with pytest.raises(ValueError, match="expected \\(3,\\)"):
        metrics.budget_replay([1.0], [0, 0, 0], [1.0] * 3, [0, 1, 2], [1], [0, 3], num_channels=1)
    with pytest.raises(ValueError, match="channel must lie"):
        metrics.budget_replay(
            [1.0] * 3, [0, 0, 5], [1.0] * 3, [0, 1, 2], [1], [0, 3], num_channels=2
        )


def test_prediction_metrics_are_drgrad_metrics():
    import drgrad_jax.metrics as dm

    assert metrics.auc is dm.auc and metrics.gauc is dm.gauc and metrics.log_loss is dm.log_loss
