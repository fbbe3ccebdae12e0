"""Tests of the Criteo attribution loaders (docs/almmta.md, *Criteo journeys*)."""

import gzip
import pathlib
import shutil

import numpy as np
import pytest

from almmta_jax.data import (
    CRITEO_HISTORY_DIM,
    CRITEO_TOUCH_FIELDS,
    CRITEO_VOCAB_SIZES,
    convert_criteo_raw,
    criteo_journey_history,
    criteo_proxy,
    criteo_raw_journeys,
    load_criteo_attribution,
    load_criteo_flat,
    split_journeys,
    validate_journeys,
)

FIXTURE = pathlib.Path(__file__).parent / "fixtures" / "criteo_raw_tiny.tsv"


# ----------------------------------------------------------- shipped split


@pytest.fixture(scope="module")
def shipped(criteo_dir):
    return {s: load_criteo_attribution(criteo_dir, s) for s in ("train", "test")}


def test_shipped_counts(shipped, criteo_dir):
    train, test = shipped["train"], shipped["test"]
    assert train.y.shape == (164_647,) and test.y.shape == (31_913,)
    assert int(train.y.sum()) == 16_400 and int(test.y.sum()) == 3_490
    assert int(train.y.sum() + test.y.sum()) == 19_890
    for b in (train, test):
        assert b.touch_ids.shape[1:] == (20, len(CRITEO_TOUCH_FIELDS))
        ids = b.touch_ids[b.touch_mask]
        assert ids.min() == 0 and ids.max() == CRITEO_VOCAB_SIZES[0] - 1
        assert b.yp.shape[2] == 2 and b.x.shape[1] == 1
        validate_journeys(b)
    flat = load_criteo_flat(criteo_dir, "train")
    lengths = np.diff(flat["offsets"])
    # Truncation keeps the most recent 20 touches; every journey keeps min(n, 20).
    np.testing.assert_array_equal(train.touch_mask.sum(axis=1), np.minimum(lengths, 20))
    assert set(np.unique(shipped["test"].user_id)) <= set(np.unique(train.user_id))


def test_shipped_features_against_reference(shipped, criteo_dir):
    flat = load_criteo_flat(criteo_dir, "test")
    b = shipped["test"]
    off, ts, camp = flat["offsets"], flat["timestamp"], flat["campaign"]
    rng = np.random.default_rng(0)
    conv = np.flatnonzero(flat["label"] == 1)
    long = np.flatnonzero(np.diff(off) > 20)
    picks = np.concatenate([rng.choice(conv, 20), rng.choice(len(off) - 1, 20), long[:5]])
    for i in picks:
        t = ts[off[i] : off[i + 1]].astype(np.float64)
        c = camp[off[i] : off[i + 1]]
        keep = slice(max(0, len(t) - 20), len(t))
        n = len(t[keep])
        np.testing.assert_array_equal(b.touch_ids[i, :n, 0], c[keep])
        hours_end = (t[-1] - t) / 3600.0
        gap = np.concatenate([[0.0], np.diff(t)]) / 3600.0
        np.testing.assert_allclose(b.tfeat[i, :n, 0], np.log1p(hours_end[keep]), rtol=1e-5)
        np.testing.assert_allclose(b.tfeat[i, :n, 1], np.log1p(gap[keep]), rtol=1e-5)
        np.testing.assert_allclose(b.tfeat[i, :n, 2], (n - 1 - np.arange(n)) / 20.0)
        if flat["label"][i] == 1:
            np.testing.assert_allclose(
                b.yp[i, :n, 0], np.exp(-(t[-1] - t[keep]) / 86_400.0), rtol=1e-5
            )
            np.testing.assert_array_equal(b.yp[i, :n, 1], np.arange(n) == n - 1)
            assert b.yp_mask[i, :n].all()
        else:
            assert not b.yp[i].any() and not b.yp_mask[i].any()
        assert not b.touch_mask[i, n:].any()


def _slow_history(target, source):
    """Reference: loop over journeys; a touch counts when it is the user's and earlier."""
    t_off, s_off = target["offsets"], source["offsets"]
    rows = []
    for i in range(len(t_off) - 1):
        start = target["timestamp"][t_off[i]]
        counts, journeys = np.zeros(10), 0
        for j in range(len(s_off) - 1):
            if source["user"][j] != target["user"][i]:
                continue
            journeys += int(source["timestamp"][s_off[j]] < start)
            for t in range(s_off[j], s_off[j + 1]):
                if source["timestamp"][t] < start:
                    counts[source["campaign"][t]] += 1
        shares = counts / counts.sum() if counts.sum() else counts
        rows.append(np.append(shares, np.log1p(journeys)))
    return np.array(rows)


def _flat(offsets, user, campaign, timestamp):
    return {
        "offsets": np.array(offsets, np.int64),
        "user": np.array(user, np.int32),
        "label": np.zeros(len(user), np.int8),
        "campaign": np.array(campaign, np.int16),
        "timestamp": np.array(timestamp, np.int64),
    }


def test_journey_history_excludes_the_journey(tmp_path):
    # Not ordered by user; user 0 has overlapping journeys, user 2 a single one,
    # user 1's second journey starts at its first one's last touch (a tie, not "before").
    train = _flat(
        [0, 3, 6, 9, 12, 15],
        [1, 0, 2, 0, 1],
        [1, 1, 2, 3, 4, 3, 5, 5, 5, 6, 3, 7, 8, 8, 9],
        [10, 20, 30, 0, 50, 100, 7, 8, 9, 40, 60, 70, 30, 31, 32],
    )
    test = _flat(
        [0, 3, 6, 9], [0, 1, 0], [9, 9, 9, 0, 0, 0, 2, 2, 2], [45, 46, 47, 5, 6, 7, 500, 501, 502]
    )
    for name, arrays in (("train", train), ("test", test)):
        np.savez(tmp_path / f"{name}.npz", **arrays)
    h_train = criteo_journey_history(tmp_path, "train")
    h_test = criteo_journey_history(tmp_path, "test")
    assert h_train.shape == (5, CRITEO_HISTORY_DIM) and h_test.shape == (3, CRITEO_HISTORY_DIM)
    np.testing.assert_allclose(h_train, _slow_history(train, train), atol=1e-6)
    np.testing.assert_allclose(h_test, _slow_history(test, train), atol=1e-6)
    # A user's only journey, and every user's first, carries no history of its own touches.
    np.testing.assert_array_equal(h_train[[1, 2]], 0.0)
    # User 0's later journey sees the earlier one's touches before time 40 only (3 at 0,
    # then 4 and 3 come after 40 although that journey started first).
    np.testing.assert_allclose(h_train[3, :10], np.eye(10)[3], atol=1e-6)
    # Test journeys see the train journeys that precede them in time, not later ones.
    np.testing.assert_allclose(h_test[1], 0.0)
    b = load_criteo_attribution(tmp_path, "test", max_len=3, history=True)
    np.testing.assert_array_equal(b.x, h_test)
    with pytest.raises(ValueError, match="single file"):
        criteo_journey_history(tmp_path / "test.npz", "test")


def test_journey_history_real_data(criteo_dir):
    train = load_criteo_flat(criteo_dir, "train")
    test = load_criteo_flat(criteo_dir, "test")
    h = criteo_journey_history(criteo_dir, "train")
    off = train["offsets"]
    lengths = np.diff(off)
    own = np.zeros((lengths.size, 10))
    np.add.at(own, (np.repeat(np.arange(lengths.size), lengths), train["campaign"]), 1.0)
    own /= lengths[:, None]
    # The per-user table over all train touches equals the journey's own mix for
    # 99.5 % of train journeys; a history of earlier touches only does for the few
    # users who repeat the same campaigns in an earlier journey.
    same = np.all(np.abs(h[:, :10] - own) < 1e-6, axis=1)
    assert same.mean() < 0.05, same.mean()
    start = train["timestamp"][off[:-1]]
    first = np.ones(lengths.size, bool)
    order = np.lexsort((start, train["user"]))
    su = train["user"][order]
    first[order[1:]] = su[1:] != su[:-1]
    np.testing.assert_array_equal(h[first], 0.0)
    rng = np.random.default_rng(1)
    h_test = criteo_journey_history(criteo_dir, "test")
    for split, flat, rows in (("train", train, h), ("test", test, h_test)):
        pick = rng.choice(flat["user"].size, 25, replace=False)
        users = np.isin(train["user"], flat["user"][pick])
        sub_idx = np.flatnonzero(users)
        src_len = lengths[sub_idx]
        touch = (
            np.repeat(off[:-1][sub_idx], src_len)
            + np.arange(src_len.sum())
            - np.repeat(np.cumsum(src_len) - src_len, src_len)
        )
        source = {
            "offsets": np.r_[0, np.cumsum(src_len)],
            "user": train["user"][sub_idx],
            "campaign": train["campaign"][touch],
            "timestamp": train["timestamp"][touch],
        }
        # One-touch stand-ins: the reference reads only each journey's start time.
        target = {
            "offsets": np.arange(pick.size + 1),
            "user": flat["user"][pick],
            "timestamp": flat["timestamp"][flat["offsets"][:-1][pick]],
        }
        np.testing.assert_allclose(
            rows[pick], _slow_history(target, source), atol=1e-6, err_msg=split
        )
    # Every test journey follows at least one train journey of its user.
    assert (h_test[:, :10].sum(axis=1) > 0.99).all()
    b = load_criteo_attribution(criteo_dir, "train", history=True)
    np.testing.assert_array_equal(b.x, h)


# ------------------------------------------------------------ flat errors


def _write_flat(path, **over):
    arrays = {
        "offsets": np.array([0, 3, 6], np.int64),
        "user": np.array([0, 1], np.int32),
        "label": np.array([0, 1], np.int8),
        "campaign": np.array([1, 2, 3, 4, 5, 6], np.int16),
        "timestamp": np.array([0, 10, 20, 5, 6, 7], np.int64),
    }
    arrays.update(over)
    arrays = {k: v for k, v in arrays.items() if v is not None}
    np.savez(path, **arrays)
    return path


def test_flat_loader_bad_input(tmp_path):
    with pytest.raises(FileNotFoundError, match="train.npz"):
        load_criteo_attribution(tmp_path, "train")
    with pytest.raises(ValueError, match="split"):
        load_criteo_attribution(tmp_path, "valid")
    ok = load_criteo_attribution(_write_flat(tmp_path / "train.npz"), "train", max_len=4)
    assert ok.y.tolist() == [0.0, 1.0] and ok.touch_mask.sum() == 6
    np.testing.assert_allclose(ok.yp[1, :3, 1], [0, 0, 1])
    (tmp_path / "corrupt.npz").write_bytes(b"PK\x03\x04 this is not a zip archive")
    with pytest.raises(ValueError, match="not a readable"):
        load_criteo_flat(tmp_path / "corrupt.npz")
    bad = _write_flat(tmp_path / "b1.npz", label=None)
    with pytest.raises(ValueError, match="missing arrays"):
        load_criteo_flat(bad)
    bad = _write_flat(tmp_path / "b2.npz", offsets=np.array([0, 3, 7]))
    with pytest.raises(ValueError, match="disagree"):
        load_criteo_flat(bad)
    bad = _write_flat(tmp_path / "b3.npz", campaign=np.array([1, 2, 3, 4, 5, 12], np.int16))
    with pytest.raises(ValueError, match=r"b3\.npz: campaign must be < 10 .*row 5"):
        load_criteo_flat(bad)
    bad = _write_flat(tmp_path / "b4.npz", label=np.array([0, 2], np.int8))
    with pytest.raises(ValueError, match="binary"):
        load_criteo_attribution(bad, "train")
    bad = _write_flat(tmp_path / "b5.npz", offsets=np.array([0, 0, 6]))
    with pytest.raises(ValueError, match="empty journeys"):
        load_criteo_attribution(bad, "train")
    bad = _write_flat(tmp_path / "b6.npz", timestamp=np.array([0, 10, 5, 5, 6, 7]))
    with pytest.raises(ValueError, match="time order"):
        load_criteo_attribution(bad, "train")


def test_proxy_reference():
    off = np.array([0, 2, 5])
    ts = np.array([0, 86_400, 100, 200, 300])
    yp = criteo_proxy(ts, off, np.array([1, 0]))
    np.testing.assert_allclose(yp[:2, 0], [np.exp(-1.0), 1.0], rtol=1e-6)
    np.testing.assert_array_equal(yp[:2, 1], [0, 1])
    assert not yp[2:].any()


# ----------------------------------------------------------- raw converter

# The fixture's journeys, built by hand from its rows: raw uid 5 -> 0, 7 -> 1,
# 12 -> 2, 40 -> 3 (uid 3 loses its dropped-campaign touch and falls below 3
# touches); campaigns 100..1000 -> 0..9 (999 has the fewest impressions).
EXPECTED = [
    # (user, label, campaigns, timestamps)
    (0, 0, [6, 7, 8], [2000, 261200, 261300]),  # gap of exactly 3 days stays in
    (1, 1, [0, 1, 0, 2], [10, 20, 30, 40]),  # conversion id 555
    (1, 0, [3, 4, 3], [1_000_000, 1_000_100, 1_000_200]),  # then a > 3-day gap: 2 left
    (2, 1, [9, 0, 1], [100, 200, 300]),  # conversion id 1
    (2, 1, [2, 3, 4, 5], [150, 250, 350, 450]),  # conversion id 2, interleaved in time
    (3, 0, [1, 2, 4], [900, 900, 900]),  # equal times keep the file order
]


@pytest.mark.parametrize("chunk_rows", [4, 1_000])
def test_raw_journeys_match_hand_built(chunk_rows):
    flat = criteo_raw_journeys(FIXTURE, chunk_rows=chunk_rows)
    off = flat["offsets"]
    assert len(off) - 1 == len(EXPECTED)
    for i, (user, label, camps, times) in enumerate(EXPECTED):
        assert flat["user"][i] == user and flat["label"][i] == label
        assert flat["campaign"][off[i] : off[i + 1]].tolist() == camps
        assert flat["timestamp"][off[i] : off[i + 1]].tolist() == times
    assert flat["campaign_raw"].tolist() == list(range(100, 1001, 100))
    assert flat["uid_raw"].tolist() == [5, 7, 12, 40]
    assert flat["click"].sum() == 2 and flat["cat1_9"].shape == (20, 9)


def test_convert_raw_gzip_and_split(tmp_path):
    gz = tmp_path / "criteo_attribution_dataset.tsv.gz"
    with open(FIXTURE, "rb") as src, gzip.open(gz, "wb") as dst:
        shutil.copyfileobj(src, dst)
    paths = convert_criteo_raw(gz, tmp_path / "out", seed=0, test_fraction=0.5)
    train = load_criteo_attribution(tmp_path / "out", "train", max_len=3)
    test = load_criteo_attribution(tmp_path / "out", "test", max_len=3)
    assert train.y.shape[0] + test.y.shape[0] == len(EXPECTED)
    assert test.y.shape[0] == 1  # half of the two non-first journeys
    assert set(test.user_id.tolist()) <= set(train.user_id.tolist())
    # max_len = 3 truncates the two 4-touch journeys to their last 3 touches.
    assert train.touch_mask.sum(axis=1).max() == 3
    with np.load(paths["test"]) as f:
        assert {"cat1_9", "cost", "cpo", "click"} <= set(f.files)


def test_split_journeys_properties():
    user = np.repeat(np.arange(50), np.arange(50) % 4 + 1)
    tr, te = split_journeys(np.zeros(user.size + 1, np.int64), user, test_fraction=0.3, seed=1)
    assert np.intersect1d(tr, te).size == 0 and tr.size + te.size == user.size
    first = np.r_[True, user[1:] != user[:-1]]
    assert first[tr].sum() == 50 and not first[te].any()
    tr2, te2 = split_journeys(np.zeros(user.size + 1, np.int64), user, test_fraction=0.3, seed=1)
    np.testing.assert_array_equal(te, te2)


def test_raw_bad_input(tmp_path):
    with pytest.raises(FileNotFoundError):
        criteo_raw_journeys(tmp_path / "nope.tsv.gz")
    bad_gz = tmp_path / "broken.tsv.gz"
    bad_gz.write_bytes(b"this is not gzip data")
    with pytest.raises(ValueError, match="not a readable"):
        criteo_raw_journeys(bad_gz)
    lines = FIXTURE.read_text().splitlines()
    no_col = tmp_path / "no_col.tsv"
    no_col.write_text("\n".join(line.split("\t", 1)[1] for line in lines) + "\n")
    with pytest.raises(ValueError, match="timestamp"):
        criteo_raw_journeys(no_col)
    short = tmp_path / "short_row.tsv"
    short.write_text("\n".join(lines[:5] + ["10\t7"] + lines[5:]) + "\n")
    with pytest.raises(ValueError, match="malformed rows"):
        criteo_raw_journeys(short)
    text = tmp_path / "text.tsv"
    text.write_text("\n".join(lines[:3] + [lines[3].replace("\t7\t", "\tabc\t", 1)]) + "\n")
    with pytest.raises(ValueError, match="malformed rows"):
        criteo_raw_journeys(text)
    empty = tmp_path / "empty.tsv"
    empty.write_text(lines[0] + "\n")
    with pytest.raises(ValueError, match="no impressions"):
        criteo_raw_journeys(empty)
