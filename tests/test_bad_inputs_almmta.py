"""Bad inputs on the ALM-MTA side: each gives a clear error or a documented recovery.

| bad input | what happens |
| --- | --- |
| NaN / Inf in a batch | rejected by ``validate_journeys``, ``load_journey_npz`` and ``journey_batches`` (names the field and shard); inside a step, the training loop's guard (``drgrad_jax.loop.keep_if_finite``) drops the update and counts it |
| empty journey | ``ragged_to_batch`` / ``validate_journeys`` raise; a step on one stays finite |
| all-padding batch | never produced by ``journey_batches``; a step on one stays finite, outcome loss 0 |
| mismatched shapes | ``ValueError`` at trace time naming the field and both shapes |
| corrupt npz shard / Criteo file | ``ValueError`` naming the file |
| checkpoint of another config | ``Trainer.restore`` lists what differs (config fields, arrays) |
| single-class AUC | NaN (the single-class rule), parameters untouched |
"""

import dataclasses
import zipfile

import jax
import numpy as np
import pytest

from almmta_jax import (
    TrainConfig,
    default_optimizer,
    make_train,
)
from almmta_jax.data import (
    JourneyBatch,
    NpzShards,
    journey_batches,
    load_criteo_attribution,
    load_journey_npz,
    ragged_to_batch,
    save_journey_npz,
    validate_journeys,
)
from almmta_jax.testing import random_journeys
from tests.almmta_tiny import tiny_model

BATCH = 8


def _config(**kw):
    model = tiny_model(vocab_sizes=(16,), max_len=4, num_users=0)
    base = dict(batch_size=BATCH, num_epochs=1, queue_size=8, warmup_steps=0, lr_warmup_steps=1)
    base.update(kw)
    return TrainConfig(model, **base)


@pytest.fixture(scope="module")
def data():
    return jax.tree.map(np.asarray, random_journeys(jax.random.key(0), 4 * BATCH, _config().model))


@pytest.fixture(scope="module")
def trainer(data):
    return make_train(_config(), data)


@pytest.fixture(scope="module")
def state(trainer):
    return trainer.init(jax.random.key(1))


def _batch(data):
    return jax.tree.map(lambda a: a[:BATCH].copy(), data)


def _finite(tree):
    return all(bool(np.isfinite(np.asarray(x)).all()) for x in jax.tree.leaves(tree))


def _host(x):
    if jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key):
        x = jax.random.key_data(x)
    return np.asarray(x)


def _equal(a, b):
    la, lb = jax.tree.leaves(a), jax.tree.leaves(b)
    return len(la) == len(lb) and all(np.array_equal(_host(x), _host(y)) for x, y in zip(la, lb))


# ------------------------------------------------------------------- NaN / Inf


@pytest.mark.parametrize("field, where", [("x", (0, 0)), ("tfeat", (1, 0, 2)), ("ipw", (3,))])
@pytest.mark.parametrize("value", [np.nan, np.inf])
def test_nonfinite_batch_rejected_at_the_boundary(data, tmp_path, field, where, value):
    b = _batch(data)
    arr = getattr(b, field).copy()
    arr[where] = value
    bad = b._replace(**{field: arr})
    with pytest.raises(ValueError, match=f"{field} contains NaN or infinite"):
        validate_journeys(bad)
    with pytest.raises(ValueError, match=f"source shard 1 .*{field} contains NaN"):
        list(journey_batches([b, bad], 4, shuffle_buffer=0))
    arrays = {k: v for k, v in bad._asdict().items() if v is not None}
    np.savez(tmp_path / "nan.npz", **arrays)
    with pytest.raises(ValueError, match=f"{field} contains NaN"):
        next(journey_batches(NpzShards([tmp_path / "nan.npz"]), 4))


def test_nonfinite_step_is_dropped_by_the_guard(trainer, state, data):
    b = _batch(data)
    x = b.x.copy()
    x[0, 0] = np.nan
    kept, metrics = trainer.step(state, b._replace(x=x))
    assert not np.isfinite(float(metrics.outcome_loss))  # the skip is visible in the logs
    assert int(kept.step) == int(state.step) + 1
    assert int(kept.skipped) == int(state.skipped) + 1
    assert _equal(kept.params, state.params) and _equal(kept.opt_state, state.opt_state)
    assert _equal(kept.queue, state.queue) and _finite(kept.params)
    # On a finite step the guard is the identity: the unguarded trainer gives the same state.
    good, _ = trainer.step(state, b)
    unguarded = make_train(_config(skip_nonfinite=False), data)
    raw, _ = unguarded.step(state, b)
    assert int(good.skipped) == 0 and _equal(good, raw)


def test_trainer_step_alone_keeps_parameters_finite(trainer, state, data):
    b = _batch(data)
    x = b.x.copy()
    x[0, 0] = np.nan
    new, _ = trainer.step(state, b._replace(x=x))
    assert _finite(new.params)


def test_make_train_rejects_nan_data(data):
    x = data.x.copy()
    x[2, 1] = np.nan
    with pytest.raises(ValueError, match="x contains NaN"):
        make_train(_config(), data._replace(x=x))


# -------------------------------------------------------- empty and padding rows


def test_empty_journeys(trainer, state, data):
    with pytest.raises(ValueError, match="1 empty journeys.*journeys \\[1\\]"):
        ragged_to_batch(
            offsets=[0, 2, 2, 3], touch_ids=[1, 2, 3], timestamp=[0, 1, 2], y=[0, 1, 0], max_len=4
        )
    b = _batch(data)
    mask = b.touch_mask.copy()
    mask[2] = False
    empty = b._replace(touch_mask=mask, yp_mask=mask & (b.y == 1)[:, None])
    with pytest.raises(ValueError, match="empty journeys .*rows \\[2\\]"):
        validate_journeys(empty)
    # Past the validators (e.g. a hand-built device batch), the step stays finite.
    new, metrics = trainer.step(state, empty)
    assert _finite(new.params) and _finite(new.adv_params) and _finite(metrics)


def test_all_padding_batch(trainer, state, data):
    b = _batch(data)
    off = np.zeros_like(b.touch_mask)
    pad = b._replace(touch_mask=off, yp_mask=off, ipw=np.zeros_like(b.ipw), y=np.zeros_like(b.y))
    validate_journeys(pad, allow_padding_rows=True)  # a legal padded batch ...
    new, metrics = trainer.step(state, pad)  # ... whose step is finite and learns nothing about y
    assert _finite(new.params) and _finite(metrics)
    assert float(metrics.outcome_loss) == 0.0 and float(metrics.proxy_loss) == 0.0
    # journey_batches never yields one: only the last batch is padded, and it has real rows.
    out = list(journey_batches(jax.tree.map(lambda a: a[:9], data), 4))
    assert [int(x.touch_mask.any(-1).sum()) for x in out] == [4, 4, 1]


def test_padding_rows_do_not_train_the_adversary(trainer, state, data):
    b = _batch(data)
    off = np.zeros_like(b.touch_mask)
    pad = b._replace(touch_mask=off, yp_mask=off, ipw=np.zeros_like(b.ipw), y=np.zeros_like(b.y))
    new, metrics = trainer.step(state, pad)
    assert float(metrics.adversary_loss) == 0.0


# ---------------------------------------------------------------- shapes


def test_mismatched_shapes(trainer, state, data):
    b = _batch(data)
    with pytest.raises(ValueError, match=r"batch.x has shape \(8, 5\); expected \(8, 3\)"):
        trainer.step(state, b._replace(x=np.zeros((BATCH, 5), np.float32)))
    with pytest.raises(ValueError, match="2 id fields"):
        trainer.step(state, b._replace(touch_ids=np.zeros((BATCH, 4, 2), np.int32)))
    with pytest.raises(ValueError, match=r"batch.y has shape \(7,\)"):
        trainer.step(state, b._replace(y=b.y[:7]))
    with pytest.raises(ValueError, match=r"yp_mask has shape \(8, 3\)"):
        validate_journeys(b._replace(yp_mask=b.yp_mask[:, :3]))
    with pytest.raises(TypeError, match="touch_mask has dtype"):
        validate_journeys(b._replace(touch_mask=b.touch_mask.astype(np.float32)))
    from drgrad_jax import parallel

    mesh = parallel.make_mesh(min(8, len(jax.devices())))
    if mesh.shape["data"] > 1:
        with pytest.raises(ValueError, match="not divisible"):
            parallel.shard_batch(jax.tree.map(lambda a: a[:5], b), mesh)


# ------------------------------------------------------------ corrupt files


def test_corrupt_npz_shard(data, tmp_path):
    good = tmp_path / "good.npz"
    save_journey_npz(good, _batch(data))
    raw = good.read_bytes()
    (tmp_path / "garbage.npz").write_bytes(b"PK\x03\x04 not really a zip")
    (tmp_path / "truncated.npz").write_bytes(raw[: len(raw) // 3])
    # A member whose bytes are flipped: the zip CRC catches it on read.
    with zipfile.ZipFile(good) as z:
        members = {n: z.read(n) for n in z.namelist()}
    x = bytearray(members["x.npy"])
    x[-4:] = b"\xff\xff\xff\xff"
    with zipfile.ZipFile(tmp_path / "flipped.npz", "w") as z:
        for n, blob in members.items():
            z.writestr(n, bytes(x) if n == "x.npy" else blob)
    for name in ("garbage.npz", "truncated.npz"):
        with pytest.raises(ValueError, match=name):
            list(journey_batches(NpzShards([good, tmp_path / name]), 4, shuffle_buffer=0))
    # Bytes changed consistently (valid zip, valid CRC) but a NaN inside: the validator.
    flipped = load_journey_npz  # the float32 tail now reads NaN
    with pytest.raises(ValueError, match="x contains NaN"):
        flipped(tmp_path / "flipped.npz")


def _write_criteo(path, **override):
    rng = np.random.default_rng(0)
    lengths = np.array([3, 4, 3])
    arrays = dict(
        offsets=np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64),
        user=np.arange(3, dtype=np.int32),
        label=np.array([0, 1, 0], np.int8),
        campaign=rng.integers(0, 10, lengths.sum()).astype(np.int16),
        timestamp=np.concatenate([np.sort(rng.integers(0, 10**5, k)) for k in lengths]),
    )
    arrays.update(override)
    np.savez(path, **arrays)


def test_corrupt_criteo_file(tmp_path):
    _write_criteo(tmp_path / "train.npz")
    ok = load_criteo_attribution(tmp_path, "train", max_len=4)
    assert isinstance(ok, JourneyBatch) and ok.y.shape == (3,)
    raw = (tmp_path / "train.npz").read_bytes()
    cases = [
        ("not a readable", lambda p: p.write_bytes(b"\x00garbage")),
        ("not a readable|corrupt", lambda p: p.write_bytes(raw[: len(raw) // 2])),
        ("missing arrays", lambda p: np.savez(p, offsets=np.array([0]))),
        ("binary", lambda p: _write_criteo(p, label=np.array([0, 2, 0], np.int8))),
        ("campaign must be < 10", lambda p: _write_criteo(p, campaign=np.full(10, 12, np.int16))),
        ("must start at 0", lambda p: _write_criteo(p, offsets=np.array([0, 3, 7, 11]))),
    ]
    for i, (match, write) in enumerate(cases):
        d = tmp_path / f"case{i}"
        d.mkdir()
        write(d / "train.npz")
        with pytest.raises(ValueError, match=match) as err:
            load_criteo_attribution(d, "train", max_len=4)
        assert str(d) in str(err.value)  # names the file or its directory
    with pytest.raises(FileNotFoundError):
        load_criteo_attribution(tmp_path / "nowhere", "train")


# ---------------------------------------------------------------- checkpoints


def test_checkpoint_from_another_config(trainer, state, data, tmp_path):
    trainer.save(tmp_path / "ckpt", state)
    same = trainer.restore(tmp_path / "ckpt")
    assert _equal(same, state)
    wider = make_train(_config(queue_size=12), data)
    with pytest.raises(
        ValueError, match=r"(?s)different configuration.*queue_size: checkpoint 8, here 12"
    ) as err:
        wider.restore(tmp_path / "ckpt")
    assert ".queue: checkpoint shape (8, 4) float32, here (12, 4) float32" in str(err.value)
    sgd = make_train(_config(optimizer=default_optimizer(kind="sgd")), data)
    with pytest.raises(ValueError, match="arrays only in the checkpoint"):
        sgd.restore(tmp_path / "ckpt")
    with pytest.raises(FileNotFoundError, match="no checkpoint"):
        trainer.restore(tmp_path / "absent")


# Each field of the checkpoint's signature changed alone from ``_config()``. The
# signature records every TrainConfig field but these three, which change neither the
# state nor the trajectory (``optimizer`` only as "default" or "given").
UNSIGNED = {"eval_size", "skip_nonfinite", "progress"}
CHANGED = {
    "mode": "simultaneous",
    "adversary_steps": 2,
    "alpha": 0.5,
    "beta": 0.2,
    "lambda_max": 0.1,
    "warmup_steps": 3,
    "learning_rate": 2e-3,
    "lr_warmup_steps": 2,
    "weight_decay": 1e-4,
    "clip_norm": 1.0,
    "batch_size": BATCH // 2,
    "num_epochs": 2,
    "temperature": 0.2,
    "queue_size": 12,
    "momentum": 0.9,
    "proxy_on_negatives": True,
    "balancer": "drgrad",
}


def _changed(field):
    """(the config with ``field`` changed, the value the message prints for it)."""
    base = _config()
    if field == "model":
        model = dataclasses.replace(base.model, dropout=0.5)
        return dataclasses.replace(base, model=model), "'dropout': 0.5"
    if field == "optimizer":
        return _config(optimizer=default_optimizer()), "'default', here 'given'"
    if field == "generator_adv_loss":  # the GRL mode has only neg_bce
        cfg = _config(mode="simultaneous", generator_adv_loss="confusion")
        return cfg, "'neg_bce', here 'confusion'"
    value = CHANGED[field]
    return _config(**{field: value}), f"{getattr(base, field)!r}, here {value!r}"


@pytest.fixture(scope="module")
def saved(trainer, state, tmp_path_factory):
    path = tmp_path_factory.mktemp("ckpt") / "ckpt"
    trainer.save(path, state)
    return path


SIGNED = sorted(f.name for f in dataclasses.fields(TrainConfig) if f.name not in UNSIGNED)


def test_every_signed_field_is_tried():
    assert set(SIGNED) == set(CHANGED) | {"model", "optimizer", "generator_adv_loss"}


@pytest.mark.parametrize("field", SIGNED)
def test_checkpoint_of_another_config_field_is_refused(data, saved, field):
    # Building a trainer traces shapes only, and a refused restore stops before
    # reading any array: nothing here compiles a step.
    cfg, values = _changed(field)
    with pytest.raises(ValueError, match="different configuration") as err:
        make_train(cfg, data).restore(saved)
    name = "model" if field == "model" else f"config.{field}"
    lines = [x.strip() for x in str(err.value).splitlines()]
    line = next((x for x in lines if x.startswith(name + ":")), None)
    assert line is not None, str(err.value)
    assert values in line


def test_checkpoint_of_other_data_is_refused(saved):
    more = jax.tree.map(np.asarray, random_journeys(jax.random.key(0), 5 * BATCH, _config().model))
    with pytest.raises(ValueError, match="config.num_train: checkpoint 32, here 40"):
        make_train(_config(), more).restore(saved)


# ----------------------------------------------------------- single-class AUC


def test_single_class_auc_is_nan_and_harmless(trainer, state, data):
    b = _batch(data)
    no_uploads = b._replace(
        y=np.zeros_like(b.y), yp=np.zeros_like(b.yp), yp_mask=np.zeros_like(b.yp_mask)
    )
    ev = trainer.evaluate(state, no_uploads)
    # The single-class rule: AUC is undefined, reported as NaN rather than a made-up 0.5.
    assert np.isnan(float(ev.outcome_auc)) and np.isnan(float(ev.adversary_auc))
    assert np.isnan(float(ev.proxy_auc))  # no uploader touches at all
    assert np.isfinite(float(ev.outcome_log_loss))
    both = trainer.evaluate(state, b)
    assert 0.0 <= float(both.outcome_auc) <= 1.0
    # Training on a single-class batch keeps parameters finite.
    new, _ = trainer.step(state, no_uploads)
    assert _finite(new.params)
