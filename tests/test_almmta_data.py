"""Tests of the journey batch format, padding, streaming and npz shards."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from almmta_jax.data import (
    JourneyBatch,
    NpzShards,
    journey_batches,
    load_journey_npz,
    pad_ragged,
    ragged_to_batch,
    save_journey_npz,
    time_features,
    validate_journeys,
)


def _ragged(rng, n, max_touch=9, min_touch=1, F=2):
    lengths = rng.integers(min_touch, max_touch + 1, size=n)
    offsets = np.concatenate([[0], np.cumsum(lengths)])
    T = int(offsets[-1])
    ts = np.concatenate([np.sort(rng.integers(0, 10**6, size=k)) for k in lengths])
    return {
        "offsets": offsets,
        "touch_ids": rng.integers(0, 50, size=(T, F)),
        "timestamp": ts,
        "y": (rng.random(n) < 0.3).astype(np.int8),
        "user_id": np.arange(n),
    }


def _batch(n=10, L=5, seed=0, **kw):
    rng = np.random.default_rng(seed)
    return ragged_to_batch(max_len=L, **{**_ragged(rng, n, max_touch=L + 2), **kw})


def test_field_order_is_the_interface():
    assert JourneyBatch._fields == (
        "x",
        "user_id",
        "touch_ids",
        "tfeat",
        "touch_mask",
        "y",
        "yp",
        "yp_mask",
        "ipw",
        "propensity",
    )
    b = _batch()
    assert b.propensity is None
    # None fields are empty pytree nodes: the batch goes through jit unchanged.
    out = jax.jit(lambda batch: jnp.sum(batch.ipw * batch.y))(b)
    assert float(out) == float(b.y.sum())


def test_validate_at_trace_time():
    b = jax.device_put(_batch(n=4, L=3))

    @jax.jit
    def total(batch):
        validate_journeys(batch)  # shapes and dtypes only: values are abstract here
        return jnp.sum(batch.y)

    assert float(total(b)) == float(np.sum(b.y))
    with pytest.raises(ValueError, match="yp_mask has shape"):
        total(b._replace(yp_mask=b.yp_mask[:, :2]))


# ------------------------------------------------------------------ padding


@given(
    lengths=st.lists(st.integers(0, 12), min_size=1, max_size=12),
    L=st.integers(1, 8),
    extra=st.integers(0, 2),
)
@settings(max_examples=60, deadline=None)
def test_pad_ragged_matches_loop(lengths, L, extra):
    offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
    T = int(offsets[-1])
    vals = np.arange(T * (extra + 1)).reshape((T,) + ((extra + 1,) if extra else ()))
    padded, mask = pad_ragged(vals, offsets, L)
    for i, n in enumerate(lengths):
        seq = vals[offsets[i] : offsets[i + 1]][-L:] if n else vals[:0]
        k = len(seq)
        assert mask[i].tolist() == [True] * k + [False] * (L - k)
        np.testing.assert_array_equal(padded[i, :k], seq)
        assert not padded[i, k:].any()


def test_time_features_matches_loop():
    rng = np.random.default_rng(1)
    n, L = 7, 6
    lengths = rng.integers(1, L + 1, size=n)
    mask = np.arange(L) < lengths[:, None]
    ts = np.where(mask, np.sort(rng.uniform(0, 1e6, size=(n, L)), axis=1), 0.0)
    end = ts.max(axis=1) + rng.uniform(0, 1e4, size=n)
    for end_time in (None, end):
        f = time_features(ts, mask, end_time)
        for i in range(n):
            k = lengths[i]
            e = ts[i, k - 1] if end_time is None else end[i]
            for j in range(L):
                if j >= k:
                    assert not f[i, j].any()
                    continue
                gap = 0.0 if j == 0 else (ts[i, j] - ts[i, j - 1]) / 3600
                ref = [np.log1p((e - ts[i, j]) / 3600), np.log1p(gap), (k - 1 - j) / L]
                np.testing.assert_allclose(f[i, j], ref, rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="end_time"):
        time_features(ts, mask, end[:3])


def test_truncation_keeps_most_recent_touches():
    # One journey of 5 touches at hours 0, 1, 3, 6, 10; L = 3 keeps the last three.
    hours = np.array([0, 1, 3, 6, 10])
    b = ragged_to_batch(
        offsets=[0, 5],
        touch_ids=np.arange(5),
        timestamp=hours * 3600,
        y=[1],
        max_len=3,
        yp=np.linspace(0, 1, 5),
    )
    np.testing.assert_array_equal(b.touch_ids[0, :, 0], [2, 3, 4])
    # The first kept touch still measures its gap to the dropped touch before it.
    np.testing.assert_allclose(b.tfeat[0, :, 1], np.log1p([2, 3, 4]), rtol=1e-6)
    np.testing.assert_allclose(b.tfeat[0, :, 0], np.log1p([7, 4, 0]), rtol=1e-6)
    np.testing.assert_allclose(b.tfeat[0, :, 2], [2 / 3, 1 / 3, 0])
    np.testing.assert_allclose(b.yp[0, :, 0], [0.5, 0.75, 1.0])
    assert b.yp_mask.all() and b.x.shape == (1, 1)


def test_ragged_to_batch_semantics():
    b = _batch(
        n=4,
        L=4,
        yp=None,
        ipw=np.arange(1, 5, dtype=np.float32),
    )
    assert b.yp.shape == (4, 4, 1) and b.ipw.tolist() == [1, 2, 3, 4]
    rng = np.random.default_rng(3)
    r = _ragged(rng, 6, max_touch=3)
    T = r["timestamp"].shape[0]
    b = ragged_to_batch(
        max_len=3, yp=np.ones((T, 2)), propensity=np.full(T, 0.25), x=np.zeros((6, 4)), **r
    )
    assert (b.yp[b.y == 0] == 0).all() and (b.yp[b.yp_mask] == 1).all()
    assert (b.propensity[b.touch_mask] == 0.25).all()
    validate_journeys(b)


@pytest.mark.parametrize(
    "change,match",
    [
        ({"offsets": np.array([0, 2, 2, 5])}, "empty journeys"),
        ({"y": np.array([0, 1, 2])}, "binary"),
        ({"y": np.array([0.0, 0.5, 1.0])}, "binary"),
        ({"y": np.array([0, 1])}, "expected"),
        ({"offsets": np.array([0, 2, 4, 6])}, "disagree"),
        ({"offsets": np.array([0, 3, 2, 5])}, "non-decreasing"),
        ({"touch_ids": np.zeros(4, np.int64)}, "touch_ids"),
        ({"touch_ids": np.zeros(5)}, "integers"),
        ({"timestamp": np.array([0, 1, 2, 9, 3])}, "time order"),
        ({"timestamp": np.array([0, 1, np.nan, 3, 9])}, "NaN"),
        ({"x": np.zeros((2, 3))}, "x has shape"),
        ({"yp": np.zeros((4, 1))}, "yp has shape"),
        ({"ipw": np.ones(2)}, "ipw has shape"),
        ({"propensity": np.ones(3)}, "propensity has shape"),
        ({"touch_ids": -np.ones(5, np.int64)}, "touch_ids must be >= 0"),
        ({"yp": np.full(5, 1.5)}, r"\[0, 1\]"),
    ],
)
def test_ragged_to_batch_bad_input(change, match):
    base = {
        "offsets": np.array([0, 2, 3, 5]),
        "touch_ids": np.arange(5),
        "timestamp": np.array([0, 1, 2, 3, 9]),
        "y": np.array([0, 1, 1]),
        "max_len": 4,
    }
    with pytest.raises((ValueError, TypeError), match=match):
        ragged_to_batch(**{**base, **change})


# --------------------------------------------------------------- validation


def _replace(b, **kw):
    return b._replace(**kw)


@pytest.mark.parametrize(
    "field,make,match",
    [
        ("touch_mask", lambda b: b.touch_mask[:, :-1], "expected"),
        ("y", lambda b: b.y[:-1], "y has shape"),
        ("tfeat", lambda b: b.tfeat[..., :2], "tfeat"),
        ("touch_ids", lambda b: b.touch_ids[:, :, 0], "touch_ids has shape"),
        ("touch_ids", lambda b: b.touch_ids.astype(np.float32), "integers"),
        ("touch_mask", lambda b: b.touch_mask.astype(np.int8), "bool"),
        ("y", lambda b: np.where(np.arange(b.y.size) == 0, 3.0, b.y), "binary"),
        (
            "touch_mask",
            lambda b: np.where(np.arange(b.y.size)[:, None] == 0, False, b.touch_mask),
            "empty",
        ),
        ("yp", lambda b: b.yp + 2.0, r"\[0, 1\]"),
        ("yp_mask", lambda b: ~b.yp_mask, "yp_mask"),
        ("x", lambda b: np.full_like(b.x, np.nan), "NaN"),
        ("ipw", lambda b: -b.ipw, "ipw"),
        ("propensity", lambda b: np.zeros(b.touch_mask.shape, np.float32), "propensity"),
        ("propensity", lambda b: np.ones((2, 2), np.float32), "propensity has shape"),
    ],
)
def test_validate_journeys_rejects(field, make, match):
    b = _batch(n=6, L=4, seed=2)
    with pytest.raises((ValueError, TypeError), match=match):
        validate_journeys(_replace(b, **{field: make(b)}))


def test_validate_padding_rows():
    b = _batch(n=4, L=3)
    pad = _replace(
        b,
        touch_mask=np.where(np.arange(4)[:, None] == 3, False, b.touch_mask),
        yp_mask=np.where(np.arange(4)[:, None] == 3, False, b.yp_mask),
    )
    with pytest.raises(ValueError, match="empty"):
        validate_journeys(pad)
    with pytest.raises(ValueError, match="ipw == 0"):
        validate_journeys(pad, allow_padding_rows=True)
    validate_journeys(
        _replace(pad, ipw=np.array([1, 1, 1, 0], np.float32)), allow_padding_rows=True
    )
    with pytest.raises(TypeError, match="JourneyBatch"):
        validate_journeys(tuple(b))


# ---------------------------------------------------------------- streaming


def _real_ids(batches):
    return np.concatenate(
        [np.zeros(0, np.int32)] + [b.user_id[b.touch_mask.any(axis=1)] for b in batches]
    )


@given(
    n=st.integers(1, 40),
    bs=st.integers(1, 12),
    buffer=st.sampled_from([None, 0, 3, 17]),
    drop_last=st.booleans(),
    seed=st.integers(0, 3),
)
@settings(max_examples=40, deadline=None)
def test_every_journey_once_per_epoch(n, bs, buffer, drop_last, seed):
    b = _batch(n=n, L=3, seed=seed)
    out = list(journey_batches(b, bs, seed=seed, shuffle_buffer=buffer, drop_last=drop_last))
    assert all(x.y.shape == (bs,) for x in out)
    ids = _real_ids(out)
    if drop_last:
        assert ids.size == (n // bs) * bs and len(np.unique(ids)) == ids.size
    else:
        np.testing.assert_array_equal(np.sort(ids), np.arange(n))
        for x in out:
            validate_journeys(x, allow_padding_rows=True)
        last = out[-1]
        pad = ~last.touch_mask.any(axis=1)
        assert pad.sum() == (-n) % bs
        assert (last.ipw[pad] == 0).all() and (last.y[pad] == 0).all()
    if buffer == 0:
        expect = np.arange(n) if not drop_last else np.arange((n // bs) * bs)
        np.testing.assert_array_equal(ids, expect)


def _traceable(n, L=4, seed=0):
    """A batch whose every field of row i is a value of journey i (user_id i)."""
    b = _batch(n=n, L=L, seed=seed)
    i = np.arange(n)
    y = (i % 3 == 0).astype(np.float32)
    mask = b.touch_mask
    touch = np.arange(L)[None, :]
    return b._replace(
        x=np.stack([0.25 * i, -1.0 * i], axis=1).astype(np.float32),
        y=y,
        yp=np.where(mask, (i[:, None] + touch) % 2, 0).astype(np.float32)[..., None],
        yp_mask=mask & (y[:, None] == 1),
        ipw=(1.0 + i / 64).astype(np.float32),
        propensity=np.where(mask, 0.01 * (i[:, None] + 1) + 0.001 * touch, 0).astype(np.float32),
    )


def _assert_rows_are_their_source(batches, source):
    row_of = {int(u): r for r, u in enumerate(source.user_id)}
    seen = 0
    for out in batches:
        for r in range(out.touch_mask.shape[0]):
            if not out.touch_mask[r].any():  # a padding row
                assert out.ipw[r] == 0 and out.y[r] == 0 and not out.yp_mask[r].any()
                continue
            src = row_of[int(out.user_id[r])]
            for name in JourneyBatch._fields:
                np.testing.assert_array_equal(
                    getattr(out, name)[r], getattr(source, name)[src], err_msg=name
                )
            seen += 1
    return seen


@pytest.mark.parametrize("buffer", [None, 0, 3])
def test_streamed_rows_carry_every_field_of_their_journey(tmp_path, buffer):
    source = _traceable(13)
    validate_journeys(source)
    stream = journey_batches(source, 4, seed=2, shuffle_buffer=buffer, epochs=2)
    assert _assert_rows_are_their_source(stream, source) == 26
    # The same through npz shards on disk (two files, so rows cross file boundaries).
    paths = []
    for k, rows in enumerate((slice(0, 6), slice(6, 13))):
        part = JourneyBatch(*(None if v is None else v[rows] for v in source))
        paths.append(tmp_path / f"part-{k}.npz")
        save_journey_npz(paths[-1], part)
    stream = journey_batches(NpzShards(paths), 5, seed=1, shuffle_buffer=buffer)
    assert _assert_rows_are_their_source(stream, source) == 13


def test_streaming_seeds_and_epochs():
    b = _batch(n=30, L=3)
    run = lambda seed, **kw: _real_ids(journey_batches(b, 7, seed=seed, **kw))
    np.testing.assert_array_equal(run(0), run(0))
    assert not np.array_equal(run(0), run(1))
    two = run(0, epochs=2)
    assert two.size == 60 and not np.array_equal(two[:30], two[30:])
    np.testing.assert_array_equal(np.sort(two[30:]), np.arange(30))
    first = next(iter(journey_batches(b, 7, as_jax=True)))
    assert isinstance(first.touch_ids, jax.Array)
    with pytest.raises(ValueError, match="batch_size"):
        next(journey_batches(b, 0))
    with pytest.raises(ValueError, match="one-shot"):
        next(journey_batches(iter([b]), 4, epochs=2))
    with pytest.raises(TypeError, match="JourneyBatch"):
        next(journey_batches([tuple(b)], 4))


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(epochs=0), "epochs"),
        (dict(shuffle_buffer=-1), "shuffle_buffer"),
        (dict(start_batch=-1), "start_batch"),
        (dict(batch_size=True), "batch_size"),
    ],
)
def test_streaming_counts_below_their_minimum_are_refused(kwargs, match):
    # One below each documented minimum (epochs >= 1, shuffle_buffer >= 0,
    # start_batch >= 0, batch_size a positive int): an empty stream is an error.
    kw = dict(batch_size=4) | kwargs
    with pytest.raises(ValueError, match=match):
        next(journey_batches(_batch(n=8, L=3), **kw))


def test_shuffle_buffer_is_bounded():
    # Shards arrive in order from a generator (no length, so no shard permutation):
    # the first batch can only hold journeys from the shards read so far.
    shards = [_batch(n=10, L=3, seed=i)._replace(user_id=np.arange(10) + 10 * i) for i in range(8)]
    out = list(journey_batches(lambda: iter(shards), 5, seed=0, shuffle_buffer=8))
    first = out[0].user_id
    assert first.max() < 20  # read 2 shards (20 journeys >= 5 + 8) before the first batch
    np.testing.assert_array_equal(np.sort(_real_ids(out)), np.arange(80))
    # A full shuffle mixes the whole stream.
    full = list(journey_batches(shards, 5, seed=0))
    assert np.sort(_real_ids(full)).tolist() == list(range(80))


# --------------------------------------------------------------- npz shards


def test_npz_roundtrip_and_ragged_layout(tmp_path):
    b = _batch(n=9, L=4, propensity=None)
    save_journey_npz(tmp_path / "padded.npz", b)
    back = load_journey_npz(tmp_path / "padded.npz")
    for a, c in zip(b, back):
        if a is None:
            assert c is None
        else:
            np.testing.assert_array_equal(a, c)
    rng = np.random.default_rng(5)
    r = _ragged(rng, 11, max_touch=7)
    np.savez(tmp_path / "ragged.npz", label=r.pop("y"), **r)
    rb = load_journey_npz(tmp_path / "ragged.npz", max_len=5)
    assert rb.touch_ids.shape == (11, 5, 2)
    lengths = np.diff(r["offsets"])
    np.testing.assert_array_equal(rb.touch_mask.sum(axis=1), np.minimum(lengths, 5))
    shards = NpzShards([tmp_path / "padded.npz", tmp_path / "ragged.npz"], max_len=4)
    assert len(shards) == 2 and _real_ids(journey_batches(shards, 4)).size == 20
    # Shards must share L to be batched together.
    shards = NpzShards([tmp_path / "padded.npz", tmp_path / "ragged.npz"], max_len=5)
    with pytest.raises(ValueError, match="shards disagree"):
        list(journey_batches(shards, 4))
    shards = NpzShards([tmp_path / "padded.npz"] * 3, max_len=4)
    out = list(journey_batches(shards, 4, seed=1, shuffle_buffer=5, epochs=2))
    assert _real_ids(out).size == 54


def test_npz_bad_files(tmp_path):
    with pytest.raises(FileNotFoundError, match="not found"):
        load_journey_npz(tmp_path / "missing.npz")
    with pytest.raises(FileNotFoundError, match="not found"):
        NpzShards([tmp_path / "missing.npz"])
    (tmp_path / "corrupt.npz").write_bytes(b"\x00\x01garbage")
    with pytest.raises(ValueError, match="not a readable"):
        load_journey_npz(tmp_path / "corrupt.npz")
    np.save(tmp_path / "single.npy", np.zeros(3))
    with pytest.raises(ValueError, match="single array"):
        load_journey_npz(tmp_path / "single.npy")
    np.savez(tmp_path / "partial.npz", offsets=np.array([0, 2]), touch_ids=np.zeros(2, int))
    with pytest.raises(ValueError, match="missing arrays"):
        load_journey_npz(tmp_path / "partial.npz")
    np.savez(
        tmp_path / "mismatch.npz",
        offsets=np.array([0, 2, 5]),
        touch_ids=np.zeros(4, int),
        timestamp=np.arange(4),
        y=np.array([0, 1]),
    )
    with pytest.raises(ValueError, match="mismatch.npz"):
        load_journey_npz(tmp_path / "mismatch.npz")
    b = _batch(n=3, L=3)
    arrays = {k: v for k, v in b._asdict().items() if v is not None}
    arrays["y"] = np.array([0, 1, 5], np.float32)
    np.savez(tmp_path / "badpadded.npz", **arrays)
    with pytest.raises(ValueError, match="binary"):
        load_journey_npz(tmp_path / "badpadded.npz")
    # A truncated archive: the zip directory is gone.
    save_journey_npz(tmp_path / "ok.npz", b)
    data = (tmp_path / "ok.npz").read_bytes()
    (tmp_path / "truncated.npz").write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match="truncated.npz"):
        load_journey_npz(tmp_path / "truncated.npz")


# ------------------------------------------------------- multi-host streaming


def _write_shards(tmp_path, sizes, L=3):
    paths, start = [], 0
    for i, n in enumerate(sizes):
        b = _batch(n=n, L=L, seed=i)._replace(user_id=np.arange(start, start + n, dtype=np.int32))
        path = tmp_path / f"part-{i:03d}.npz"
        save_journey_npz(path, b)
        paths.append(path)
        start += n
    return paths, start


@given(
    sizes=st.lists(st.integers(1, 9), min_size=1, max_size=9),
    hosts=st.integers(1, 4),
    seed=st.integers(0, 3),
    buffer=st.sampled_from([None, 0, 5]),
)
@settings(max_examples=25, deadline=None)
def test_hosts_read_disjoint_parts_covering_the_data(tmp_path_factory, sizes, hosts, seed, buffer):
    from almmta_jax.data import host_shard_paths

    tmp = tmp_path_factory.mktemp("shards")
    paths, total = _write_shards(tmp, sizes)
    if hosts > len(paths):
        with pytest.raises(ValueError, match="every host needs"):
            NpzShards(paths, process_index=0, process_count=hosts)
        return
    seen, files = [], []
    for i in range(hosts):
        shards = NpzShards(paths, process_index=i, process_count=hosts)
        assert shards.paths == host_shard_paths(paths, process_index=i, process_count=hosts)
        files.append(set(shards.paths))
        # Host i opens only its own files: the others may be absent on its disk.
        ids = _real_ids(journey_batches(shards, 4, seed=seed, shuffle_buffer=buffer))
        assert len(np.unique(ids)) == ids.size
        seen.append(set(ids.tolist()))
    for i in range(hosts):
        for j in range(i + 1, hosts):
            assert not seen[i] & seen[j] and not files[i] & files[j]
    assert set().union(*seen) == set(range(total))
    assert set().union(*files) == set(paths)


def test_host_only_needs_its_own_files(tmp_path):
    paths, _ = _write_shards(tmp_path, [3, 3, 3, 3])
    paths[1].unlink()  # lives on the other host
    shards = NpzShards(paths, process_index=0, process_count=2)
    assert len(shards) == 2
    with pytest.raises(FileNotFoundError, match="part-001"):
        NpzShards(paths, process_index=1, process_count=2)
    # Defaults come from jax: one process here, so every file.
    assert len(NpzShards([paths[0], paths[2]])) == 2


@pytest.mark.parametrize(
    "kw, err, match",
    [
        ({"process_index": 2, "process_count": 2}, ValueError, "process_index"),
        ({"process_index": -1, "process_count": 2}, ValueError, "process_index"),
        ({"process_index": 0, "process_count": 0}, ValueError, "process_count"),
        ({"process_index": 0.5, "process_count": 2}, TypeError, "process_index"),
    ],
)
def test_host_shard_paths_bad_arguments(kw, err, match):
    from almmta_jax.data import host_shard_paths

    with pytest.raises(err, match=match):
        host_shard_paths(["a.npz", "b.npz"], **kw)
    with pytest.raises(ValueError, match="empty"):
        host_shard_paths([], process_index=0, process_count=1)


def test_npz_shards_load_lazily_within_a_bounded_buffer(tmp_path):
    paths, total = _write_shards(tmp_path, [10] * 12)
    loaded = []

    class Counting(NpzShards):
        def __getitem__(self, i):
            loaded.append(i)
            return super().__getitem__(i)

    stream = journey_batches(Counting(paths), 5, seed=3, shuffle_buffer=8)
    first = next(stream)
    # 5 + 8 journeys need 2 shards of 10: nothing else has been read.
    assert len(loaded) == 2 and first.y.shape == (5,)
    rest = list(stream)
    assert len(loaded) == 12
    ids = _real_ids([first, *rest])
    np.testing.assert_array_equal(np.sort(ids), np.arange(total))


@pytest.mark.parametrize("buffer", [None, 0, 7])
def test_start_batch_resumes_the_same_stream(tmp_path, buffer):
    paths, _ = _write_shards(tmp_path, [6, 9, 4, 8])
    shards = NpzShards(paths)
    kw = dict(seed=4, shuffle_buffer=buffer, epochs=3)
    full = list(journey_batches(shards, 5, **kw))
    for k in (0, 3, len(full) // 3 + 1, len(full) - 1, len(full)):
        resumed = list(journey_batches(shards, 5, start_batch=k, **kw))
        assert len(resumed) == len(full) - k
        for a, b in zip(full[k:], resumed):
            np.testing.assert_array_equal(a.user_id, b.user_id)
            np.testing.assert_array_equal(a.touch_mask, b.touch_mask)
    with pytest.raises(ValueError, match="start_batch"):
        next(journey_batches(shards, 5, start_batch=-1))
