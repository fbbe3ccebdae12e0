"""Bad inputs on the DRGrad side: each gives a clear error or a documented, tested recovery.

| bad input                              | what happens                                    |
|----------------------------------------|-------------------------------------------------|
| NaN/Inf in the data's features/labels  | ValueError from make_train naming split, field  |
| NaN/Inf in a streamed batch            | step skipped, TrainState.skipped += 1           |
| NaN task gradients (finite loss)       | step skipped and counted; params stay finite    |
| a zero task loss / zero task gradient  | finite update (no division by a zero norm)      |
| a task with all-zero labels in a batch | an ordinary finite step                         |
| single-class AUC                       | NaN for that task; select_by_validation skips it|
| mismatched shapes                      | ValueError naming the field and both shapes     |
| corrupt Census file                    | error naming the file and line, or gzip's error |
| checkpoint of another config           | ValueError naming what differs                  |
"""

import dataclasses
import functools
import gzip
import pathlib

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

import drgrad_jax
from drgrad_jax import data, models

SENTINEL = 12345.0  # a finite dense value whose rows make the model's gradient NaN
FIXTURE = pathlib.Path(__file__).parent / "fixtures" / "census_tiny"


class _NaNGradModel(models.SplitMMoE):
    """SplitMMoE whose loss stays finite but whose gradients are NaN on SENTINEL rows.

    The extra term is ``0 * sqrt(t + 1 - m)`` with ``t = |w - stop_gradient(w)|^2 = 0``:
    its value is 0, its gradient ``0 * inf`` = NaN when a row carries the sentinel
    (``m = 1``) and 0 otherwise.
    """

    def __call__(self, cat, dense, user=None, *, mu=None):
        logits = super().__call__(cat, dense, user, mu=mu)
        w = jax.tree.leaves(nnx.state(self, nnx.Param))[0]
        m = jnp.any(dense[:, 0] == SENTINEL).astype(jnp.float32)
        t = jnp.sum(jnp.square(w - jax.lax.stop_gradient(w)))
        return logits + 0.0 * jnp.sqrt(t + 1.0 - m)


@pytest.fixture(scope="module")
def synth():
    # 96 rows in batches of 32: 3 steps per epoch.
    return data.drgrad_synthetic("conflict", 96, 64, 64, dim=4, num_sines=0, seed=2)


def _config(d, **kw):
    model = functools.partial(
        _NaNGradModel, d.vocab_sizes, d.num_dense, 2, num_experts=2, expert_hidden=(8,)
    )
    tx = drgrad_jax.drgrad(model(rngs=nnx.Rngs(0)).drgrad_towers("params"), num_tasks=2)
    return drgrad_jax.TrainConfig(model, optax.adam(1e-2), tx, batch_size=32, num_epochs=2, **kw)


@pytest.fixture(scope="module")
def trainer(synth):
    return drgrad_jax.make_train(_config(synth), synth)


def _batch(d, rows=slice(0, 32)):
    s = d.train
    return data.Split(s.cat[rows], s.dense[rows].copy(), s.labels[rows].copy(), s.user[rows], None)


def _finite(tree):
    return all(bool(np.all(np.isfinite(x))) for x in jax.tree.leaves(tree))


def _same(a, b):
    return all(np.array_equal(x, y) for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)))


def _with(d, split, **fields):
    return dataclasses.replace(d, **{split: getattr(d, split)._replace(**fields)})


# --- NaN / Inf ---------------------------------------------------------------------


@pytest.mark.parametrize(
    "split,field,value", [("train", "dense", np.nan), ("val", "labels", np.inf)]
)
def test_non_finite_data_is_refused_at_make_train(synth, split, field, value):
    array = getattr(getattr(synth, split), field).copy()
    array[5, 1] = value
    bad = _with(synth, split, **{field: array})
    with pytest.raises(ValueError, match=rf"data\.{split}\.{field} holds 1 non-finite .* row 5"):
        drgrad_jax.make_train(_config(synth), bad)


def test_non_finite_streamed_batch_is_skipped_and_counted(synth, trainer):
    state = trainer.init(jax.random.key(0))
    for field, value in (("dense", np.nan), ("labels", np.inf), ("dense", -np.inf)):
        batch = _batch(synth)
        getattr(batch, field)[3, 0] = value
        new, losses = trainer.step(state, batch)
        assert not np.all(np.isfinite(losses))
        assert int(new.step) == int(state.step) + 1
        assert int(new.skipped) == int(state.skipped) + 1
        assert _same(new.params, state.params) and _same(new.opt_state, state.opt_state)
        state = new
    # A clean batch afterwards trains normally.
    new, losses = trainer.step(state, _batch(synth))
    assert np.all(np.isfinite(losses)) and int(new.skipped) == 3
    assert not _same(new.params, state.params) and _finite(new.params)


def test_without_the_guard_nan_reaches_the_params(synth):
    """The guard is what keeps NaN out: with ``skip_nonfinite=False`` it gets in."""
    unguarded = drgrad_jax.make_train(_config(synth, skip_nonfinite=False), synth)
    batch = _batch(synth)
    batch.dense[0, 0] = SENTINEL
    state, losses = unguarded.step(unguarded.init(jax.random.key(0)), batch)
    assert np.all(np.isfinite(losses)) and not _finite(state.params)


def test_nan_task_gradients_are_skipped_and_counted(synth, trainer):
    state = trainer.init(jax.random.key(0))
    batch = _batch(synth)
    batch.dense[7, 0] = SENTINEL  # finite input and loss, NaN gradients
    new, losses = trainer.step(state, batch)
    assert np.all(np.isfinite(losses)), "the loss itself is finite"
    assert int(new.skipped) == 1 and _same(new.params, state.params)
    mu = drgrad_jax.mixing_weights(new.opt_state)
    np.testing.assert_array_equal(mu, drgrad_jax.mixing_weights(state.opt_state))


def test_nan_gradient_rows_in_the_data_skip_one_step_per_epoch(synth):
    """In a whole run the batch holding the bad row is skipped once per epoch."""
    dense = synth.train.dense.copy()
    dense[10, 0] = SENTINEL  # finite, so the data check lets it through
    bad = _with(synth, "train", dense=dense)
    trainer = drgrad_jax.make_train(_config(synth), bad)
    state, losses = trainer.run(trainer.init(jax.random.key(1)), trainer.total_steps)
    assert int(state.skipped) == 2 and int(state.step) == 6
    assert np.all(np.isfinite(losses)) and _finite(state.params)
    assert _finite(drgrad_jax.mixing_weights(state.opt_state))


# --- zero losses and single-class tasks ------------------------------------------------


@pytest.mark.parametrize("method", ["drgrad", "drgrad_ema", "pcgrad"])
@pytest.mark.parametrize("zero", [[0], [1], [0, 1]])
def test_zero_task_gradient_gives_a_finite_update(synth, method, zero):
    """A task whose loss is exactly 0 has an all-zero gradient: no 0/0 in norms or cosines."""
    model = models.SplitMMoE(
        synth.vocab_sizes, synth.num_dense, 2, num_experts=2, expert_hidden=(8,), rngs=nnx.Rngs(0)
    )
    params = nnx.to_pure_dict(nnx.state(model))
    tx = {
        "drgrad": lambda: drgrad_jax.drgrad(model.drgrad_towers("params"), num_tasks=2),
        "drgrad_ema": lambda: drgrad_jax.drgrad(
            model.drgrad_towers("params"), num_tasks=2, updater="ema"
        ),
        "pcgrad": lambda: drgrad_jax.pcgrad(seed=0),
    }[method]()
    rng = np.random.default_rng(len(zero))
    grads = jax.tree.map(lambda p: rng.normal(size=(2, *p.shape)).astype(np.float32), params)
    keep = np.isin(np.arange(2), zero, invert=True).astype(np.float32)
    grads = jax.tree.map(lambda g: g * keep.reshape((2,) + (1,) * (g.ndim - 1)), grads)
    losses = jnp.asarray([0.0 if k in zero else 0.7 for k in range(2)])
    update, state = jax.jit(tx.update)(grads, tx.init(params), params, losses=losses)
    assert _finite(update)
    assert _finite([x for x in jax.tree.leaves(state) if jnp.issubdtype(x.dtype, jnp.inexact)])
    if len(zero) == 2:
        assert all(np.all(np.asarray(u) == 0) for u in jax.tree.leaves(update))


def test_task_with_all_zero_labels_in_a_batch_is_an_ordinary_step(synth, trainer):
    state = trainer.init(jax.random.key(0))
    batch = _batch(synth)
    batch.labels[:, 1] = 0.0
    new, losses = trainer.step(state, batch)
    assert np.all(np.isfinite(losses)) and int(new.skipped) == 0
    assert _finite(new.params) and not _same(new.params, state.params)


def test_single_class_auc_is_nan_and_validation_selection_skips_it(synth, trainer):
    val = drgrad_jax.device_splits(synth)[1]
    one_class = val._replace(labels=val.labels.at[:, 0].set(1.0))
    auc, loss = trainer.evaluate(trainer.init(jax.random.key(0)), one_class)
    assert np.isnan(auc[0]) and np.isfinite(auc[1]) and np.all(np.isfinite(loss))
    assert np.isnan(drgrad_jax.metrics.auc(np.ones(4), np.arange(4.0)))
    result = drgrad_jax.TrainResult(
        None,
        *(jnp.zeros((3, 2)),) * 1,
        jnp.asarray([[np.nan, 0.5], [0.6, 0.5], [0.55, 0.5]]),
        jnp.asarray([[0.9, 0.1], [0.7, 0.2], [0.8, 0.3]]),
        *(jnp.zeros((3, 2)),) * 2,
        jnp.zeros((3, 2)),
        jnp.zeros((3,), jnp.int32),
    )
    epoch, test = drgrad_jax.select_by_validation(result)
    assert int(epoch) == 1
    np.testing.assert_allclose(test, [0.7, 0.2])


# --- shapes -----------------------------------------------------------------------


def test_mismatched_shapes_in_the_data(synth):
    config = _config(synth)
    labels = np.concatenate([synth.train.labels, synth.train.labels[:, :1]], axis=1)
    with pytest.raises(
        ValueError, match=r"data\.train\.labels has shape \(96, 3\); expected \(96, 2\)"
    ):
        drgrad_jax.make_train(config, _with(synth, "train", labels=labels))
    with pytest.raises(ValueError, match=r"data\.test\.dense has shape \(63, 4\)"):
        drgrad_jax.make_train(config, _with(synth, "test", dense=synth.test.dense[:63]))
    cat = synth.val.cat.copy()
    if cat.shape[1]:
        cat[2, 0] = synth.vocab_sizes[0]
        with pytest.raises(ValueError, match=r"data\.val\.cat\[2, 0\] .* is outside"):
            drgrad_jax.make_train(config, _with(synth, "val", cat=cat))
    labels = synth.train.labels.copy()
    labels[0, 0] = 0.5
    with pytest.raises(ValueError, match=r"data\.train\.labels must be 0/1"):
        drgrad_jax.make_train(config, _with(synth, "train", labels=labels))


def test_mismatched_shapes_in_a_streamed_batch(synth, trainer):
    state = trainer.init(jax.random.key(0))
    b = _batch(synth)
    with pytest.raises(
        ValueError, match=r"batch\.dense has shape \(32, 3\); expected \[B, \*\(4,\)\]"
    ):
        trainer.step(state, b._replace(dense=b.dense[:, :3]))
    with pytest.raises(ValueError, match=r"batch\.labels has shape \(32, 1\)"):
        trainer.step(state, b._replace(labels=b.labels[:, :1]))
    with pytest.raises(ValueError, match="batch.user is missing"):
        trainer.step(state, b._replace(user=None))
    with pytest.raises(ValueError, match="different leading sizes"):
        trainer.step(state, b._replace(labels=b.labels[:16]))
    with pytest.raises(TypeError, match="batch must be a Split"):
        trainer.step(state, {"dense": b.dense})


# --- files ------------------------------------------------------------------------


def _census_dir(tmp_path, name, text=None, raw=None):
    out = tmp_path / name
    out.mkdir()
    if raw is not None:
        (out / "census-income.test.gz").write_bytes(raw)
    else:
        (out / "census-income.test").write_text(text)
    return out


def test_corrupt_census_files(tmp_path):
    gz = (FIXTURE / "census-income.test.gz").read_bytes()
    lines = gzip.decompress(gz).decode("latin-1").splitlines()
    assert len(lines) > 5 and data.load_census_income(FIXTURE / "census-income.test.gz")
    # A row cut in the middle: the file and the line are named.
    cut = lines[:3] + [lines[3][: len(lines[3]) // 2]] + lines[4:]
    path = _census_dir(tmp_path, "cut", "\n".join(cut))
    with pytest.raises(ValueError, match=r"census-income\.test:4: found \d+ comma-separated"):
        data.load_census_income(path)
    # A non-numeric value in a continuous column: the file, line and column are named.
    values = lines[2].split(",")
    values[0] = " forty"
    garbled = lines[:2] + [",".join(values)] + lines[3:]
    path = _census_dir(tmp_path, "garbled", "\n".join(garbled))
    with pytest.raises(
        ValueError, match=r"census-income\.test:3: column 1 \(age\) is not a finite"
    ):
        data.load_census_income(path)
    path = _census_dir(tmp_path, "empty", "")
    with pytest.raises(ValueError, match="holds no rows"):
        data.load_census_income(path)
    # A gzip file cut short or not gzip at all: a ValueError naming the file.
    path = _census_dir(tmp_path, "truncated", raw=gz[: len(gz) // 2])
    with pytest.raises(ValueError, match=r"census-income\.test\.gz is not a readable"):
        data.load_census_income(path)
    path = _census_dir(tmp_path, "notgzip", raw=b"\x00garbage" * 64)
    with pytest.raises(ValueError, match="is not a readable Census-Income file"):
        data.load_census_income(path)


def test_checkpoint_from_another_config(synth, trainer, tmp_path):
    trainer.save(tmp_path / "ckpt", trainer.init(jax.random.key(0)))
    pc = dataclasses.replace(_config(synth), mtl_transform=drgrad_jax.pcgrad())
    with pytest.raises(ValueError, match="transform state: checkpoint DRGradState"):
        drgrad_jax.make_train(pc, synth).restore(tmp_path / "ckpt")
