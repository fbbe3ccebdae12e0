"""Uplift metrics, k-means, the grouped-AUUC protocol and the budget replay vs slow NumPy oracles."""

import itertools

import hypothesis.strategies as st
import jax
import numpy as np
import pytest
from hypothesis import given, settings

from almmta_jax import metrics

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
        for b in range(num_buckets):
            users = [i for i in range(u) if sum(col[i] >= q for q in edges) == b]
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
    gain = np.asarray(metrics.uplift_curve(np.zeros(2 * n), y, t))
    even = gain[::2]
    np.testing.assert_allclose(even, np.arange(0, 2 * n + 1, 2), atol=1e-5)


@settings(max_examples=40, deadline=None)
@given(st.lists(st.integers(0, 3), min_size=2, max_size=6), st.integers(0, 10_000))
def test_normalized_auuc_matches_exhaustive_tie_average(score_ints, seed):
    rng = np.random.default_rng(seed)
    scores = np.asarray(score_ints, float)
    gains = rng.normal(size=scores.size)
    got = float(metrics.normalized_auuc(scores, gains))
    np.testing.assert_allclose(got, _ref_nauuc(list(scores), gains), rtol=1e-4, atol=1e-5)
    curve = np.asarray(metrics.gain_curve(scores, gains))
    assert curve[0] == 0 and np.isclose(curve[-1], gains.sum(), atol=1e-5)


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
    assert r.valid.sum() == 1 and sum(reason != "" for reason in r.reason) == 3
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
    with pytest.raises(ValueError, match="outcome must be"):
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
