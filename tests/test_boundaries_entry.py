"""Data entering without a file: the trainers' entry points hold it to the loaders' rules.

``drgrad_jax.make_train``, ``almmta_jax.make_train``, ``almmta_jax.make_baseline_train``,
the streamed ``Trainer.step`` and ``almmta_jax.data.journey_batches`` check in-memory
data once, on the host, before anything is compiled: every error names the argument,
the field and the first bad row. The property tests corrupt one value of clean data at
a generated place and check the message names that place.
"""

from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import almmta_jax as am
import drgrad_jax as dj
from almmta_jax.data import journey_batches
from drgrad_jax import data, models
from tests.almmta_tiny import tiny_model

GENERATED = {"drgrad": 0, "almmta": 0}
PROPERTY = settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)

# --- DRGrad: make_train ------------------------------------------------------------


@functools.cache
def _drgrad():
    """Personalized data with two categorical fields (vocabularies 5, 4) and user ids
    0..3 of a declared 6, so a model may declare fewer of either."""
    d = data.drgrad_synthetic("personalized", 32, 16, 16, num_users=6, dim=4, seed=0)

    def fill(s):
        n = s.num_examples
        cat = np.stack([np.arange(n) % 5, np.arange(n) % 3], axis=1).astype(np.int32)
        return s._replace(cat=cat, user=(np.arange(n) % 4).astype(np.int32))

    splits = {s: fill(getattr(d, s)) for s in ("train", "val", "test")}
    return dataclasses.replace(d, **splits, vocab_sizes=(5, 4))


def _split_mmoe(vocab_sizes=(5, 4), num_users=6):
    d = _drgrad()
    return functools.partial(
        models.SplitMMoE,
        vocab_sizes,
        d.num_dense,
        d.num_tasks,
        num_experts=2,
        ppnet="single",
        num_users=num_users,
    )


def _config(model=None):
    return dj.TrainConfig(model or _split_mmoe(), optax.sgd(0.1), batch_size=16, num_epochs=1)


def _set(d, split, field, index, value, dtype=None):
    s = getattr(d, split)
    a = np.array(getattr(s, field), dtype=dtype)
    a[index] = value
    return dataclasses.replace(d, **{split: s._replace(**{field: a})})


def test_clean_data_is_accepted():
    dj.make_train(_config(), _drgrad())


def test_user_ids_at_or_beyond_num_users_are_refused_naming_split_and_row():
    bad = _set(_drgrad(), "val", "user", 3, 6)
    with pytest.raises(
        ValueError, match=r"data\.val\.user\[3\] = 6 is outside \[0, data\.num_users=6\)"
    ):
        dj.make_train(_config(), bad)
    bad = _set(_drgrad(), "test", "user", 0, -1)
    with pytest.raises(ValueError, match=r"data\.test\.user\[0\] = -1 is outside"):
        dj.make_train(_config(), bad)


def test_ids_are_held_to_the_models_vocabularies_when_tighter_than_the_data():
    d = _set(_drgrad(), "train", "cat", (7, 1), 3)  # < data.vocab_sizes[1] = 4
    with pytest.raises(
        ValueError,
        match=r"data\.train\.cat\[7, 1\] = 3 is outside \[0, the model's vocab_sizes\[1\]=3\)",
    ):
        dj.make_train(_config(_split_mmoe(vocab_sizes=(5, 3))), d)
    d = _set(_drgrad(), "train", "user", 2, 4)  # < data.num_users = 6
    with pytest.raises(
        ValueError, match=r"data\.train\.user\[2\] = 4 is outside \[0, the model's num_users=4\)"
    ):
        dj.make_train(_config(_split_mmoe(num_users=4)), d)


def test_user_ids_are_checked_against_the_model_when_the_data_declares_none():
    d = dataclasses.replace(_set(_drgrad(), "train", "user", 5, 9), num_users=0)
    with pytest.raises(ValueError, match=r"data\.train\.user\[5\] = 9 .* the model's num_users=6"):
        dj.make_train(_config(), d)


def test_fractional_ids_and_labels_are_refused():
    with pytest.raises(
        TypeError, match=r"data\.train\.user must hold integer ids; got dtype float"
    ):
        dj.make_train(_config(), _set(_drgrad(), "train", "user", 0, 1.5, np.float64))
    with pytest.raises(TypeError, match=r"data\.val\.cat must hold integer ids"):
        dj.make_train(_config(), _set(_drgrad(), "val", "cat", (0, 0), 1.0, np.float32))
    with pytest.raises(
        ValueError, match=r"data\.test\.labels must be 0/1; 1 row\(s\) .* row 4: 0\.5"
    ):
        dj.make_train(_config(), _set(_drgrad(), "test", "labels", (4, 1), 0.5))


def test_a_streamed_batch_is_checked_before_the_step():
    trainer = dj.make_train(_config(), _drgrad())
    state = trainer.init(jax.random.key(0))
    s = _drgrad().train
    batch = data.Split(s.cat[:16].copy(), s.dense[:16], s.labels[:16].copy(), s.user[:16].copy())
    cat = batch.cat.copy()
    cat[9, 0] = 5
    with pytest.raises(
        ValueError, match=r"batch\.cat\[9, 0\] = 5 is outside \[0, data\.vocab_sizes\[0\]=5\)"
    ):
        trainer.step(state, batch._replace(cat=cat))
    user = batch.user.copy()
    user[2] = 7
    with pytest.raises(ValueError, match=r"batch\.user\[2\] = 7 is outside"):
        trainer.step(state, batch._replace(user=jnp.asarray(user)))
    labels = batch.labels.copy()
    labels[11, 0] = 2.0
    with pytest.raises(ValueError, match=r"batch\.labels must be 0/1; row 11 holds 2\.0"):
        trainer.step(state, batch._replace(labels=labels))


# field -> (index within a row, generated bad values, the error's type and text)
DRGRAD_FIELDS = {
    "cat": (1, st.sampled_from([-1, 4, 5, 2**31 - 1, -(2**40)]), ValueError, "cat[{row}, 1] = "),
    "user": ((), st.sampled_from([-1, 6, 7, 2**40]), ValueError, "user[{row}] = "),
    "labels": (0, st.sampled_from([0.5, -1.0, 2.0, 1e-9]), ValueError, "labels must be 0/1"),
    "dense": (
        0,
        st.sampled_from([np.nan, np.inf, -np.inf]),
        ValueError,
        "dense holds 1 non-finite value(s) (NaN/Inf) in 1 row(s), first at row {row};",
    ),
}


@PROPERTY
@given(
    split=st.sampled_from(["train", "val", "test"]),
    field=st.sampled_from(sorted(DRGRAD_FIELDS)),
    row=st.integers(0, 15),
    data_=st.data(),
)
def test_generated_bad_values_in_drgrad_data_are_refused_naming_the_place(split, field, row, data_):
    GENERATED["drgrad"] += 1
    col, values, error, text = DRGRAD_FIELDS[field]
    value = data_.draw(values)
    index = (row,) if col == () else (row, col)
    dtype = np.int64 if field in ("cat", "user") else None
    bad = _set(_drgrad(), split, field, index, value, dtype)
    with pytest.raises(error) as info:
        dj.make_train(_config(), bad)
    message = str(info.value)
    assert f"data.{split}.{field}" in message, message
    assert text.format(row=row) in message, message
    if field == "labels":
        assert f"first at row {row}:" in message, message


DRGRAD_COUNTS = ("batch_size", "num_epochs", "eval_batch_size")
BAD_COUNTS = st.sampled_from([0, -1, 1.5, 16.0, float("nan"), True, "16", None])
BAD_WEIGHTS = st.sampled_from([float("nan"), float("inf"), -1.0, -1e-9, 1e39])


@PROPERTY
@given(
    field=st.sampled_from(DRGRAD_COUNTS + ("task_weights", "pos_weights", "log_every")),
    count=BAD_COUNTS,
    weight=BAD_WEIGHTS,
    task=st.integers(0, 1),
)
def test_generated_bad_drgrad_configs_are_refused_naming_the_field(field, count, weight, task):
    GENERATED["drgrad"] += 1
    if field in ("task_weights", "pos_weights"):
        value = [1.0, 1.0]
        value[task] = weight
        value, where = tuple(value), rf"config\.{field}\[{task}\] = "
    elif field == "log_every":
        value, where = (-1 if count in (0, True) else count), r"config\.log_every must be"
    else:
        value, where = count, rf"config\.{field} must be a positive int"
    cfg = dataclasses.replace(_config(), **{field: value})
    with pytest.raises(ValueError, match=where):
        dj.make_train(cfg, _drgrad())


# --- ALM-MTA: make_train, make_baseline_train, journey_batches ----------------------


@functools.cache
def _journeys():
    model = tiny_model()
    cfg = am.TrainConfig(model, batch_size=8, num_epochs=1, queue_size=8, warmup_steps=0)
    j = jax.tree.map(np.asarray, am.testing.random_journeys(jax.random.key(0), 16, model))
    return cfg, j


def _baseline_config():
    m = tiny_model()
    return am.BaselineConfig(
        m.vocab_sizes,
        d_x=m.d_x,
        max_len=m.max_len,
        num_users=m.num_users,
        batch_size=8,
        num_epochs=1,
        hidden=8,
    )


def _journey_set(j, field, index, value):
    a = np.array(getattr(j, field))
    a[index] = value
    return j._replace(**{field: a})


def test_device_array_journeys_get_the_value_checks():
    """Journeys given as jax.Array s were checked for shapes only; now for values too."""
    cfg, j = _journeys()
    bad = jax.tree.map(jnp.asarray, _journey_set(j, "x", (3, 1), np.nan))
    with pytest.raises(ValueError, match=r"^data: x contains NaN or infinite values; row 3"):
        am.make_train(cfg, bad)


def test_eval_data_gets_the_value_checks():
    cfg, j = _journeys()
    with pytest.raises(ValueError, match=r"^eval_data: y must be binary \(0/1\); row 4"):
        am.make_train(cfg, j, _journey_set(j, "y", 4, 2.0))


def test_baseline_training_checks_values_and_ids():
    bc = _baseline_config()
    model = lambda r: am.LogisticMTA(bc, rngs=r)
    am.make_baseline_train(model, bc, _journeys()[1])
    with pytest.raises(ValueError, match=r"^data: ipw must be >= 0; row 2"):
        am.make_baseline_train(model, bc, _journey_set(_journeys()[1], "ipw", 2, -1.0))
    bad = _journey_set(_journeys()[1], "touch_ids", (6, 0, 0), 7)
    with pytest.raises(ValueError, match=r"data\.touch_ids\[\.\.\., 0\] .* must be < 7 .*row 6"):
        am.make_baseline_train(model, bc, bad)


# field -> (index within a journey, bad values, text); row is the journey.
ALMMTA_FIELDS = {
    "x": (
        (0,),
        st.sampled_from([np.nan, np.inf]),
        "x contains NaN or infinite values; row {row} (",
    ),
    "tfeat": (
        (0, 2),
        st.sampled_from([np.nan, -np.inf]),
        "tfeat contains NaN or infinite values; row {row} (",
    ),
    "y": ((), st.sampled_from([0.5, 2.0, -1.0, np.nan]), "y must be binary (0/1); row {row} ("),
    "ipw": ((), st.sampled_from([-1.0, -1e-6, np.nan]), "ipw "),
    "touch_ids": ((0, 0), st.sampled_from([-1, -(2**31)]), "touch_ids must be >= 0; row {row} ("),
    "user_id": ((), st.sampled_from([-1, -(2**31)]), "user_id must be >= 0; row {row} ("),
}
ENTRIES = ("make_train", "make_train as jax", "eval_data", "make_baseline_train", "journey_batches")


def _enter(entry, journeys):
    cfg, clean = _journeys()
    if entry == "make_train":
        am.make_train(cfg, journeys)
    elif entry == "make_train as jax":
        am.make_train(cfg, jax.tree.map(jnp.asarray, journeys))
    elif entry == "eval_data":
        am.make_train(cfg, clean, journeys)
    elif entry == "make_baseline_train":
        bc = _baseline_config()
        am.make_baseline_train(lambda r: am.LogisticMTA(bc, rngs=r), bc, journeys)
    else:
        list(journey_batches(jax.tree.map(jnp.asarray, journeys), 8))


@PROPERTY
@given(
    entry=st.sampled_from(ENTRIES),
    field=st.sampled_from(sorted(ALMMTA_FIELDS)),
    row=st.integers(0, 15),
    data_=st.data(),
)
def test_generated_bad_journeys_are_refused_at_every_entry_naming_field_and_row(
    entry, field, row, data_
):
    GENERATED["almmta"] += 1
    index, values, text = ALMMTA_FIELDS[field]
    value = data_.draw(values)
    _, clean = _journeys()
    a = np.array(getattr(clean, field))  # int32 ids: values a jax.Array can hold
    a[(row, *index)] = value
    with pytest.raises(ValueError) as info:
        _enter(entry, clean._replace(**{field: a}))
    message = str(info.value)
    prefix = {"eval_data": "eval_data: ", "journey_batches": "source shard 0"}.get(entry, "data: ")
    assert message.startswith(prefix), message
    assert text.format(row=row) in message, message
    if field == "ipw":
        assert f"row {row} (" in message, message


ALMMTA_FLOATS = {
    "alpha": (0.0, None),
    "beta": (0.0, None),
    "lambda_max": (0.0, None),
    "weight_decay": (0.0, None),
    "momentum": (0.0, 1.0),
    "temperature": (None, None),
    "learning_rate": (None, None),
    "clip_norm": (None, None),
}
ALMMTA_COUNTS = {
    "adversary_steps": 1,
    "batch_size": 1,
    "num_epochs": 1,
    "queue_size": 1,
    "lr_warmup_steps": 0,
    "warmup_steps": 0,
    "eval_size": 1,
}


@pytest.mark.parametrize("name", ["learning_rate", "alpha", "lambda_max", "clip_norm"])
def test_almmta_float_fields_beyond_float32_are_refused_naming_the_field(name):
    """1e39 is a finite float64 but Inf in the float32 run: refused like NaN, by the
    transformations' rule (drgrad_jax.domains)."""
    cfg, _ = _journeys()
    domain = "> 0" if name in ("learning_rate", "clip_norm") else ">= 0"
    message = (
        f"TrainConfig: {name} must be {domain} (a finite float32); "
        "got 1e+39, which is inf in float32."
    )
    with pytest.raises(ValueError) as info:
        dataclasses.replace(cfg, **{name: 1e39})
    assert str(info.value) == message
    dataclasses.replace(cfg, **{name: 3.0e38})  # large, but a finite float32


def test_drgrad_task_weights_beyond_float32_are_refused():
    cfg = dataclasses.replace(_config(), task_weights=(1.0, 1e39))
    with pytest.raises(ValueError) as info:
        dj.make_train(cfg, _drgrad())
    assert str(info.value) == (
        "config.task_weights[1] = 1e+39; task weights must be >= 0 (finite float32s)."
    )


def _almmta_float_ok(name, v):
    """The documented domains, written out: closed at 0 for weights, open for scales;
    judged on the float32 the run computes with (1e39 is Inf, 1e-300 is 0)."""
    with np.errstate(over="ignore"):
        v = float(np.float32(v))
    if v != v or v in (float("inf"), float("-inf")):
        return False
    if name == "momentum":
        return 0 <= v < 1
    return v >= 0 if ALMMTA_FLOATS[name][0] == 0.0 else v > 0


@PROPERTY
@given(
    name=st.sampled_from(sorted(ALMMTA_FLOATS)),
    value=st.one_of(
        st.floats(allow_nan=True, allow_infinity=True),
        st.sampled_from([0.0, 1.0, -0.0, 1e39, -1e39, 3.5e38, 3.4e38, 1e-300]),
    ),
)
def test_generated_almmta_float_fields_are_refused_iff_outside_their_domain(name, value):
    GENERATED["almmta"] += 1
    cfg, _ = _journeys()
    if _almmta_float_ok(name, value):
        dataclasses.replace(cfg, **{name: value})
    else:
        with pytest.raises(
            ValueError, match=rf"^TrainConfig: {name} must be .* \(a finite float32\); got"
        ):
            dataclasses.replace(cfg, **{name: value})


@PROPERTY
@given(name=st.sampled_from(sorted(ALMMTA_COUNTS)), value=st.one_of(BAD_COUNTS, st.integers(-3, 3)))
def test_generated_almmta_counts_are_refused_unless_ints_at_their_minimum(name, value):
    GENERATED["almmta"] += 1
    cfg, _ = _journeys()
    ok = (
        isinstance(value, int) and not isinstance(value, bool) and value >= ALMMTA_COUNTS[name]
    ) or (name in ("warmup_steps", "batch_size") and value is None)  # None: one epoch; auto
    if ok:
        dataclasses.replace(cfg, **{name: value})
    else:
        with pytest.raises(ValueError, match=rf"^{name} must be an int >= {ALMMTA_COUNTS[name]}"):
            dataclasses.replace(cfg, **{name: value})


@pytest.fixture(scope="module", autouse=True)
def _report_generated_cases():
    yield
    print(f"\ngenerated cases: {GENERATED}")
