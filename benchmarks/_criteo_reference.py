"""Reference scores for the Criteo benchmark: memorisation flag, a plain logistic regression, subgroup AUCs.

The shipped split puts later journeys of train users in test, and on it every
converting test journey belongs to a user with a converting train journey. A
"did this user convert in train" flag is therefore a strong score by itself;
these references say how much of a method's AUC that explains (docs/almmta.md,
*Criteo history covariate*).
"""

from __future__ import annotations

import numpy as np

from drgrad_jax import metrics

DAY_S = 86_400.0


def converted_in_train(train_flat: dict, users) -> np.ndarray:
    """Whether each user in ``users`` has a converting journey in the train split."""
    users = np.asarray(users, np.int64)
    size = max(int(train_flat["user"].max(initial=-1)), int(users.max(initial=-1))) + 1
    conv = np.bincount(train_flat["user"], weights=train_flat["label"], minlength=size) > 0
    return conv[users]


def journey_features(flat: dict, num_campaigns: int = 10) -> np.ndarray:
    """Campaign and time summaries of each journey, ``[n, 3K + 9]`` float64.

    Campaign shares, first and last campaign one-hot; log1p of the length, of
    the duration, mean gap, last gap and largest gap (hours); whether a gap
    exceeds 3 days; hour of day of the last touch (sin, cos); start day / 30.
    """
    off = np.asarray(flat["offsets"])
    ts = np.asarray(flat["timestamp"], np.float64)
    camp = np.asarray(flat["campaign"], np.int64)
    n, lengths = off.size - 1, np.diff(off)
    rows = np.repeat(np.arange(n), lengths)
    shares = np.zeros((n, num_campaigns))
    np.add.at(shares, (rows, camp), 1.0)
    shares /= lengths[:, None]
    eye = np.eye(num_campaigns)
    start, end = ts[off[:-1]], ts[off[1:] - 1]
    gaps = np.diff(ts, prepend=0.0)
    gaps[off[:-1]] = 0.0
    max_gap = np.zeros(n)
    np.maximum.at(max_gap, rows, gaps / 3600.0)
    hours = (end - start) / 3600.0
    last_gap = (end - ts[np.maximum(off[1:] - 2, off[:-1])]) / 3600.0
    phase = 2 * np.pi * (end % DAY_S) / DAY_S
    time = [
        np.log1p(lengths),
        np.log1p(hours),
        np.log1p(hours / np.maximum(lengths - 1, 1)),
        np.log1p(last_gap),
        np.log1p(max_gap),
        (max_gap > 72.0).astype(np.float64),
        np.sin(phase),
        np.cos(phase),
        start / DAY_S / 30.0,
    ]
    return np.column_stack([shares, eye[camp[off[:-1]]], eye[camp[off[1:] - 1]], *time])


def fit_logistic(x, y, *, l2: float = 1e-4, max_iter: int = 500):
    """L2-penalized logistic regression by L-BFGS on standardized features.

    Returns:
      A function mapping ``[m, d]`` features to probabilities.
    """
    from scipy.optimize import minimize

    x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
    mu, sd = x.mean(0), x.std(0) + 1e-9
    design = lambda a: np.column_stack([(np.asarray(a, np.float64) - mu) / sd, np.ones(len(a))])
    z_fit = design(x)

    def loss(w):
        z = z_fit @ w
        p = 1.0 / (1.0 + np.exp(-z))
        grad = z_fit.T @ (p - y) / y.size
        grad[:-1] += 2 * l2 * w[:-1]
        return np.mean(np.logaddexp(0.0, z) - y * z) + l2 * np.sum(w[:-1] ** 2), grad

    w = minimize(loss, np.zeros(z_fit.shape[1]), jac=True, method="L-BFGS-B").x
    return lambda a: 1.0 / (1.0 + np.exp(-(design(a) @ w)))


def subgroup_auc(y, score, seen: np.ndarray) -> dict:
    """AUC within test journeys of users who converted in train and of the others.

    A group holding a single class gets NaN (its size and positives say why).
    """
    y, score = np.asarray(y), np.asarray(score)
    out = {}
    for name, m in (("converted_in_train", seen), ("not_converted_in_train", ~seen)):
        out[name] = {
            "auc": float(metrics.auc(y[m], score[m])) if m.any() else float("nan"),
            "journeys": int(m.sum()),
            "positives": int(y[m].sum()),
        }
    return out


def subset_flat(flat: dict, idx) -> dict:
    """The journeys ``idx`` of a flat split (offsets, user, label, campaign, timestamp)."""
    off = np.asarray(flat["offsets"])
    lengths = np.diff(off)[idx]
    starts = np.repeat(off[:-1][idx], lengths)
    touch = starts + np.arange(lengths.sum()) - np.repeat(np.cumsum(lengths) - lengths, lengths)
    out = {k: np.asarray(flat[k])[idx] for k in ("user", "label")}
    out["offsets"] = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
    for k in ("campaign", "timestamp"):
        out[k] = np.asarray(flat[k])[touch]
    return out


def reference_scores(train_flat: dict, test_flat: dict, seen: np.ndarray) -> dict:
    """AUC, log-loss and subgroup AUCs of the flag and of the logistic regression.

    Args:
      train_flat: the train journeys the methods are fitted on (flat arrays).
      test_flat: the test split (flat arrays).
      seen: ``[n_test]`` bool, the test journey's user converted in the full train split.

    Returns:
      ``{"user_converted_in_train": {...}, "lr_campaign_time": {...}}``.
    """
    y = np.asarray(test_flat["label"], np.float64)
    predict = fit_logistic(journey_features(train_flat), train_flat["label"])
    prob = np.clip(predict(journey_features(test_flat)), 1e-7, 1 - 1e-7)
    out = {}
    for name, score, ll in (
        ("user_converted_in_train", seen.astype(np.float64), float("nan")),
        ("lr_campaign_time", prob, float(metrics.log_loss(y, prob))),
    ):
        out[name] = {
            "auc": float(metrics.auc(y, score)),
            "log_loss": ll,
            "auc_by_train_conversion": subgroup_auc(y, score, seen),
        }
    return out
