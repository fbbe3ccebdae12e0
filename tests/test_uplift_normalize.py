"""``normalize=`` of the uplift scores: scikit-uplift's definition vs a slow reference.

The reference follows scikit-uplift's documented definition: the curve is taken
only at the cut-offs where the score changes, joined by straight lines, and the
score is ``(A(model) - A(random)) / (A(perfect) - A(random))`` with trapezoid
areas. When the library itself is importable it is checked too.
"""

import numpy as np
import pytest

from almmta_jax import metrics


def _ref_points(scores, y, t, kind):
    order = sorted(range(len(scores)), key=lambda i: -scores[i])
    xs, vs = [0], [0.0]
    n_t = n_c = y_t = y_c = 0.0
    for pos, i in enumerate(order):
        n_t += t[i]
        n_c += 1 - t[i]
        y_t += y[i] * t[i]
        y_c += y[i] * (1 - t[i])
        last_of_block = pos == len(order) - 1 or scores[order[pos + 1]] != scores[i]
        if not last_of_block:
            continue
        m = pos + 1
        if kind == "gain":
            mean_t = y_t / n_t if n_t else 0.0
            mean_c = y_c / n_c if n_c else 0.0
            vs.append((mean_t - mean_c) * m)
        else:
            vs.append(y_t - y_c * (n_t / n_c if n_c else 0.0))
        xs.append(m)
    return np.array(xs, float), np.array(vs)


def _trapezoid(xs, vs):
    return float(sum((xs[i + 1] - xs[i]) * (vs[i + 1] + vs[i]) / 2 for i in range(len(xs) - 1)))


def _ref_sklift(scores, y, t, kind):
    n = len(scores)
    if kind == "gain":
        control_responders = sum(1 for a, b in zip(y, t) if a == 1 and b == 0)
        treated_silent = sum(1 for a, b in zip(y, t) if a == 0 and b == 1)
        extra = y if control_responders > treated_silent else t
        perfect = [2.0 * (a == b) + e for a, b, e in zip(y, t, extra)]
    else:
        perfect = [a * b - a * (1 - b) for a, b in zip(y, t)]
    model = _trapezoid(*_ref_points(scores, y, t, kind))
    xs, vs = _ref_points(perfect, y, t, kind)
    best = _trapezoid(xs, vs)
    base = n * vs[-1] / 2
    return (model - base) / (best - base)


def _draw(seed, n=60):
    rng = np.random.default_rng(seed)
    scores = rng.integers(0, 8, n).astype(float)  # ties on purpose
    t = rng.integers(0, 2, n).astype(float)
    y = (rng.random(n) < 0.3 + 0.3 * t * (scores > 3)).astype(float)
    return scores, y, t


@pytest.mark.parametrize("seed", range(6))
def test_sklift_normalization_matches_reference(seed):
    scores, y, t = _draw(seed)
    for fn, kind in ((metrics.auuc, "gain"), (metrics.qini_score, "qini")):
        got = float(fn(scores, y, t, normalize="sklift"))
        want = _ref_sklift(list(scores), list(y), list(t), kind)
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5, err_msg=kind)


@pytest.mark.parametrize("seed", range(3))
def test_sklift_gain_normalization_when_control_responders_outnumber_silent_treated(seed):
    # A world where most users respond: the perfect gain ranking then breaks the
    # ties of each (y == t) group by the outcome rather than by the treatment.
    rng = np.random.default_rng(seed)
    scores = rng.integers(0, 8, 60).astype(float)
    t = rng.integers(0, 2, 60).astype(float)
    y = (rng.random(60) < 0.85).astype(float)
    assert np.sum(y * (1 - t)) > np.sum((1 - y) * t)
    got = float(metrics.auuc(scores, y, t, normalize="sklift"))
    want = _ref_sklift(list(scores), list(y), list(t), "gain")
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)


def test_sklift_normalization_perfect_is_one_and_reversed_ranking_is_lower():
    scores, y, t = _draw(11)
    perfect = y * t - y * (1 - t)
    assert np.isclose(float(metrics.qini_score(perfect, y, t, normalize="sklift")), 1.0)
    assert float(metrics.auuc(-perfect, y, t, normalize="sklift")) < 0
    assert float(metrics.qini_score(-perfect, y, t, normalize="sklift")) < 0


def test_default_normalization_is_unchanged():
    scores, y, t = _draw(3)
    gain = np.asarray(metrics.uplift_curve(scores, y, t))
    assert float(metrics.auuc(scores, y, t)) == float(
        metrics.auuc(scores, y, t, normalize="causalml")
    )
    np.testing.assert_allclose(metrics.auuc(scores, y, t), gain.mean() / abs(gain[-1]), rtol=1e-5)


def test_normalize_bad_values():
    with pytest.raises(ValueError, match="normalize must be one of"):
        metrics.auuc([1.0, 2.0], [0, 1], [0, 1], normalize="oracle")
    with pytest.raises(ValueError, match="outcome must hold only 0 and 1"):
        metrics.qini_score([1.0, 2.0], [0.5, 1], [0, 1], normalize="sklift")


@pytest.mark.filterwarnings("ignore::FutureWarning")  # scikit-uplift's use of scikit-learn
def test_sklift_library_agrees():
    sklift_metrics = pytest.importorskip(
        "sklift.metrics", reason="scikit-uplift is not installed (optional cross-check)"
    )
    for seed in range(4):
        scores, y, t = _draw(seed, n=200)
        want_auuc = sklift_metrics.uplift_auc_score(y, scores, t)
        want_qini = sklift_metrics.qini_auc_score(y, scores, t)
        got_auuc = float(metrics.auuc(scores, y, t, normalize="sklift"))
        got_qini = float(metrics.qini_score(scores, y, t, normalize="sklift"))
        np.testing.assert_allclose(got_auuc, want_auuc, rtol=1e-4, atol=1e-5)
        np.testing.assert_allclose(got_qini, want_qini, rtol=1e-4, atol=1e-5)
