"""Journey loaders: ids, labels and array names checked before any cast, errors name the place."""

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from almmta_jax import data

N = 4
OFFSETS = np.array([0, 2, 5, 6, 9], np.int64)
T = 9


def _ragged(**over):
    arrays = dict(
        offsets=OFFSETS,
        touch_ids=np.arange(T, dtype=np.int64) % 5,
        timestamp=np.arange(T, dtype=np.int64) * 3600,
        y=np.array([0, 1, 0, 1], np.int8),
        user_id=np.array([3, 1, 2, 0], np.int64),
    )
    arrays.update(over)
    return {k: v for k, v in arrays.items() if v is not None}


def _save(path, arrays):
    np.savez(path, **arrays)
    return path


def test_ids_beyond_int32_are_refused_not_wrapped(tmp_path):
    ids = np.arange(T, dtype=np.int64)
    ids[4] = 2**32 + 6
    path = _save(tmp_path / "a.npz", _ragged(touch_ids=ids))
    with pytest.raises(ValueError, match=r"a\.npz: touch_ids must be < 2147483648 .*row 4"):
        data.load_journey_npz(path)
    uid = np.array([0, 2**32 + 6, 1, 2], np.int64)
    path = _save(tmp_path / "b.npz", _ragged(user_id=uid))
    with pytest.raises(ValueError, match=r"b\.npz: user_id must be < 2147483648 .*row 1"):
        data.load_journey_npz(path)


def test_negative_and_fractional_user_ids_are_refused(tmp_path):
    path = _save(tmp_path / "neg.npz", _ragged(user_id=np.array([0, 1, -3, 2])))
    with pytest.raises(ValueError, match=r"neg\.npz: user_id must be >= 0; row 2"):
        data.load_journey_npz(path)
    path = _save(tmp_path / "frac.npz", _ragged(user_id=np.array([0, 1.5, 2, 3])))
    with pytest.raises(ValueError, match=r"frac\.npz: user_id must hold integer ids; row 1"):
        data.load_journey_npz(path)
    ok = data.load_journey_npz(_save(tmp_path / "f.npz", _ragged(user_id=np.array([0.0, 5, 2, 3]))))
    np.testing.assert_array_equal(ok.user_id, [0, 5, 2, 3])


def test_padded_shard_with_negative_user_id_names_the_file(tmp_path):
    batch = data.load_journey_npz(_save(tmp_path / "ok.npz", _ragged()))
    bad = batch._replace(user_id=np.array([0, -1, 2, 3], np.int32))
    np.savez(tmp_path / "padded.npz", **{k: v for k, v in bad._asdict().items() if v is not None})
    with pytest.raises(ValueError, match=r"padded\.npz: user_id must be >= 0; row 1"):
        data.load_journey_npz(tmp_path / "padded.npz")


@pytest.mark.parametrize("value", [np.nan, 2.0, -1.0, 0.5])
def test_bad_label_in_a_padded_shard_names_file_and_row(tmp_path, value):
    batch = data.load_journey_npz(_save(tmp_path / "ok.npz", _ragged()))
    y = batch.y.copy()
    y[2] = value
    arrays = {k: v for k, v in batch._replace(y=y)._asdict().items() if v is not None}
    np.savez(tmp_path / "padded.npz", **arrays)
    with pytest.raises(ValueError, match=r"padded\.npz: y must be binary \(0/1\); row 2"):
        data.load_journey_npz(tmp_path / "padded.npz")


def test_bad_label_in_the_third_file_of_a_stream_names_that_file(tmp_path):
    paths = [_save(tmp_path / f"part-{i}.npz", _ragged()) for i in range(3)]
    _save(paths[2], _ragged(y=np.array([0, 1, np.nan, 1])))
    shards = data.NpzShards(paths, max_len=4)
    with pytest.raises(ValueError, match=r"part-2\.npz: y must be binary"):
        list(data.journey_batches(shards, 2, epochs=1))


@pytest.mark.parametrize(
    "wrong,right", [("user_ids", "user_id"), ("labels", "label"), ("propensities", "propensity")]
)
def test_misspelled_optional_array_is_reported_with_the_suggestion(tmp_path, wrong, right):
    arrays = _ragged()
    arrays[wrong] = arrays.pop("user_id") if wrong == "user_ids" else np.ones(N)
    path = _save(tmp_path / "typo.npz", arrays)
    with pytest.raises(
        ValueError, match=rf"typo\.npz: unknown array '{wrong}'; did you mean '{right}'"
    ):
        data.load_journey_npz(path)


def test_unrelated_extra_arrays_are_still_ignored(tmp_path):
    path = _save(tmp_path / "extra.npz", _ragged(cost=np.ones(T)))
    assert data.load_journey_npz(path).y.shape == (N,)


def test_touch_ids_outside_the_declared_vocabulary(tmp_path):
    path = _save(tmp_path / "v.npz", _ragged())  # ids 0..4
    assert data.load_journey_npz(path, vocab_sizes=(5,)).touch_ids.max() == 4
    with pytest.raises(ValueError, match=r"v\.npz: touch_ids field 0 must be < 4 .*vocabulary"):
        data.load_journey_npz(path, vocab_sizes=(4,))
    with pytest.raises(ValueError, match=r"v\.npz: touch_ids field 0 must be < 4"):
        next(iter(data.NpzShards([path], vocab_sizes=(4,))))


def test_criteo_fractional_campaign_and_negative_user(tmp_path):
    base = dict(
        offsets=OFFSETS,
        user=np.array([0, 1, 2, 3], np.int32),
        label=np.array([0, 1, 0, 1], np.int8),
        campaign=np.arange(T, dtype=np.int16) % 10,
        timestamp=np.arange(T, dtype=np.int64),
    )
    np.savez(tmp_path / "c1.npz", **{**base, "campaign": np.arange(T) % 10 + 0.5})
    with pytest.raises(ValueError, match=r"c1\.npz: campaign must hold integer ids; row 0"):
        data.load_criteo_flat(tmp_path / "c1.npz")
    np.savez(tmp_path / "c2.npz", **{**base, "user": np.array([0, -1, 2, 3])})
    with pytest.raises(ValueError, match=r"c2\.npz: user must be >= 0; row 1"):
        data.load_criteo_flat(tmp_path / "c2.npz")


def test_criteo_raw_fractional_campaign_names_the_line(tmp_path):
    import pathlib

    src = pathlib.Path(__file__).parent / "fixtures" / "criteo_raw_tiny.tsv"
    lines = src.read_text().splitlines()
    cells = lines[3].split("\t")
    cells[2] = "100.5"
    lines[3] = "\t".join(cells)
    (tmp_path / "raw.tsv").write_text("\n".join(lines) + "\n")
    with pytest.raises(ValueError, match=r"raw\.tsv:4: column campaign must hold integer ids"):
        data.criteo_raw_journeys(tmp_path / "raw.tsv")


# ------------------------------------------------------------------ generated cases

CASES = {"n": 0}
_BAD_IDS = st.sampled_from([-1, -(2**40), 2**31, 2**32 + 6, 2**62])
_FIELDS = st.sampled_from(["touch_ids", "user_id"])


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(field=_FIELDS, value=_BAD_IDS, row=st.integers(0, 3), as_float=st.booleans())
def test_generated_bad_ids_are_refused_naming_file_field_and_row(
    tmp_path, field, value, row, as_float
):
    CASES["n"] += 1
    arrays = _ragged()
    a = arrays[field].astype(np.float64 if as_float else np.int64)
    a[row] = value
    arrays[field] = a
    path = _save(tmp_path / "gen.npz", arrays)
    if field == "touch_ids" and as_float:
        with pytest.raises(TypeError, match=r"gen\.npz: touch_ids has dtype float64"):
            data.load_journey_npz(path)
        return
    with pytest.raises(ValueError, match=rf"gen\.npz: {field} must be .*; row {row} "):
        data.load_journey_npz(path)


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    key=st.sampled_from(["user_id", "ipw", "propensity", "end_time", "label", "timestamp"]),
    edit=st.sampled_from(["append_s", "drop_char", "swap_case", "add_underscore"]),
)
def test_generated_misspelled_names_are_reported(tmp_path, key, edit):
    CASES["n"] += 1
    wrong = {
        "append_s": key + "s",
        "drop_char": key[:-1],
        "swap_case": key.upper(),
        "add_underscore": key + "_",
    }[edit]
    arrays = _ragged()
    arrays[wrong] = arrays.pop(key) if key in arrays else np.ones(N)
    path = _save(tmp_path / "gen.npz", arrays)
    with pytest.raises(
        ValueError, match=rf"gen\.npz: unknown array '{wrong}'; did you mean '{key}'"
    ):
        data.load_journey_npz(path)


# --- ids entering without a file: make_train and the streamed Trainer.step ----------------


def _train_setup(**model_kw):
    import jax

    from almmta_jax import TrainConfig
    from almmta_jax.testing import random_journeys
    from tests.almmta_tiny import tiny_model

    model = tiny_model(**model_kw)
    cfg = TrainConfig(model, batch_size=8, num_epochs=1, queue_size=8, warmup_steps=0)
    journeys = jax.tree.map(np.asarray, random_journeys(jax.random.key(0), 16, model))
    return cfg, journeys


def _with(journeys, **arrays):
    return journeys._replace(**arrays)


def _bad_touch(journeys, field, value):
    ids = journeys.touch_ids.copy()
    ids[5, 0, field] = value  # the first touch of every journey is valid
    return _with(journeys, touch_ids=ids)


def test_make_train_refuses_touch_ids_beyond_the_declared_vocabulary():
    from almmta_jax import make_train

    cfg, journeys = _train_setup()  # vocab_sizes=(7, 3)
    with pytest.raises(
        ValueError,
        match=r"data\.touch_ids\[\.\.\., 1\] \(config\.vocab_sizes\[1\]\) must be < 3 "
        r"\(the declared vocabulary size 3\); row 5 \(1 such rows\) holds 3",
    ):
        make_train(cfg, _bad_touch(journeys, 1, 3))
    with pytest.raises(ValueError, match=r"data: touch_ids must be >= 0; row 5"):
        make_train(cfg, _bad_touch(journeys, 0, -1))
    with pytest.raises(ValueError, match=r"eval_data\.touch_ids\[\.\.\., 0\] .* < 7"):
        make_train(cfg, journeys, _bad_touch(journeys, 0, 7))
    make_train(cfg, _bad_touch(journeys, 1, 2))  # the largest id in the vocabulary


def test_padding_touches_and_hashed_fields_are_not_held_to_the_vocabulary():
    from almmta_jax import make_train

    cfg, journeys = _train_setup()
    ids, mask = journeys.touch_ids.copy(), journeys.touch_mask
    ids[~mask] = 99  # padding is never embedded
    make_train(cfg, _with(journeys, touch_ids=ids))
    # hash_buckets=4 < 7: field 0 is folded by design; field 1 (vocab 3) is not.
    hashed, journeys = _train_setup(hash_buckets=4)
    make_train(hashed, _bad_touch(journeys, 0, 1000))
    with pytest.raises(ValueError, match=r"touch_ids\[\.\.\., 1\].*must be < 3"):
        make_train(hashed, _bad_touch(journeys, 1, 3))


def test_make_train_refuses_user_ids_at_or_beyond_num_users():
    from almmta_jax import make_train

    cfg, journeys = _train_setup()  # num_users=6
    uid = journeys.user_id.copy()
    uid[3] = 6
    with pytest.raises(
        ValueError,
        match=r"data\.user_id \(config\.num_users\) must be < 6 .*; row 3 \(1 such rows\) holds 6",
    ):
        make_train(cfg, _with(journeys, user_id=uid))
    no_users, journeys = _train_setup(num_users=0)  # user ids unused: not checked
    make_train(no_users, _with(journeys, user_id=uid))


def test_streamed_step_checks_the_batch_ids_on_the_host():
    import jax

    from almmta_jax import make_train

    cfg, journeys = _train_setup()
    trainer = make_train(cfg, journeys)
    state = trainer.init(jax.random.key(0))
    first = jax.tree.map(lambda a: a[:8], journeys)
    with pytest.raises(ValueError, match=r"batch\.touch_ids\[\.\.\., 0\] .* must be < 7 .*row 5"):
        trainer.step(state, _bad_touch(first, 0, 7))
    uid = first.user_id.copy()
    uid[2] = 10
    with pytest.raises(ValueError, match=r"batch\.user_id \(config\.num_users\) .* row 2"):
        trainer.step(state, _with(first, user_id=uid))
    state, _ = trainer.step(state, first)
    assert int(state.step) == 1
