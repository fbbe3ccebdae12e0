"""Checkpoint and resume of the DRGrad trainer, and run-to-run determinism."""

import dataclasses
import functools
from typing import NamedTuple

import jax
import numpy as np
import optax
import pytest
from flax import nnx

import drgrad_jax
from drgrad_jax import data, models, parallel
from drgrad_jax._src import checkpoint

SEED = 7


@pytest.fixture(scope="module")
def synth():
    # 96 training rows in batches of 32: 3 steps per epoch, 3 epochs, 9 steps.
    return data.drgrad_synthetic("conflict", 96, 64, 64, dim=4, num_sines=0, seed=1)


def _model(d, hidden=(8,)):
    return functools.partial(
        models.SplitMMoE, d.vocab_sizes, d.num_dense, 2, num_experts=2, expert_hidden=hidden
    )


def _config(d, method="drgrad", hidden=(8,)):
    model = _model(d, hidden)
    if method == "drgrad":
        tx = drgrad_jax.drgrad(model(rngs=nnx.Rngs(0)).drgrad_towers("params"), num_tasks=2)
    else:
        tx = drgrad_jax.pcgrad(seed=0)
    return drgrad_jax.TrainConfig(model, optax.adam(1e-2), tx, batch_size=32, num_epochs=3)


@pytest.fixture(scope="module")
def trainer(synth):
    return drgrad_jax.make_train(_config(synth), synth)


@pytest.fixture(scope="module")
def fresh(synth):
    """The same configuration built again, as a new process would after a restart."""
    return drgrad_jax.make_train(_config(synth), synth)


@pytest.fixture(scope="module")
def uninterrupted(trainer):
    state, _ = trainer.run(trainer.init(jax.random.key(SEED)), trainer.total_steps)
    return state


def _assert_identical(a, b):
    la, lb = jax.tree.leaves(a), jax.tree.leaves(b)
    assert jax.tree.structure(a) == jax.tree.structure(b)
    for x, y in zip(la, lb):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


def test_run_in_pieces_equals_one_run(trainer, uninterrupted):
    assert trainer.steps_per_epoch == 3 and trainer.total_steps == 9
    state = trainer.init(jax.random.key(SEED))
    for n in (2, 2, 4, 1):  # crosses the epoch boundaries at 3 and 6 mid-piece
        state, _ = trainer.run(state, n)
    _assert_identical(state, uninterrupted)


@pytest.mark.parametrize("stop", [1, 4, 6])
def test_resume_from_checkpoint_is_bit_identical(trainer, fresh, uninterrupted, tmp_path, stop):
    """Stop after ``stop`` steps (4: mid-epoch), save, restore in a fresh trainer, finish."""
    state, _ = trainer.run(trainer.init(jax.random.key(SEED)), stop)
    trainer.save(tmp_path / "ckpt", state)
    del state
    restored = fresh.restore(tmp_path / "ckpt")
    assert int(restored.step) == stop
    restored, _ = fresh.run(restored, fresh.total_steps - stop)
    _assert_identical(restored, uninterrupted)
    mu = drgrad_jax.mixing_weights(restored.opt_state)
    assert mu is not None and np.all(np.isfinite(mu))


@pytest.fixture(scope="module")
def whole(trainer):
    return jax.jit(trainer)(jax.random.key(SEED))


def test_a_finished_run_extends_from_its_checkpoint(synth, trainer, uninterrupted, tmp_path):
    """The planned length is not part of the configuration: a longer trainer continues."""
    trainer.save(tmp_path / "ckpt", uninterrupted)  # step 9, the end of the plan
    longer = drgrad_jax.make_train(dataclasses.replace(_config(synth), num_epochs=5), synth)
    restored = longer.restore(tmp_path / "ckpt")
    assert int(restored.step) == 9
    extended, _ = longer.run(restored, longer.total_steps - 9)
    straight, _ = longer.run(longer.init(jax.random.key(SEED)), longer.total_steps)
    _assert_identical(extended, straight)


def test_step_wise_run_matches_whole_run(synth, trainer, uninterrupted, whole):
    """``train(key)`` and ``init``+``run`` visit the same batches in the same order."""
    for x, y in zip(jax.tree.leaves(whole.params), jax.tree.leaves(uninterrupted.params)):
        np.testing.assert_allclose(x, y, rtol=1e-5, atol=1e-6)
    auc, loss = trainer.evaluate(uninterrupted, drgrad_jax.device_splits(synth)[2])
    np.testing.assert_allclose(auc, whole.test_auc[-1], atol=1e-5)
    np.testing.assert_allclose(loss, whole.test_loss[-1], rtol=1e-5)
    assert whole.skipped.tolist() == [0, 0, 0]


def test_two_runs_with_the_same_seed_give_identical_metrics(fresh, whole):
    """Two separately built and compiled runs with one seed agree exactly."""
    again = jax.jit(fresh)(jax.random.key(SEED))
    _assert_identical(again, whole)
    assert np.all(np.isfinite(whole.val_auc))
    other_seed = jax.jit(fresh)(jax.random.key(SEED + 1))
    assert not np.array_equal(other_seed.val_auc, whole.val_auc)


@pytest.fixture(scope="module")
def saved(trainer, tmp_path_factory):
    path = tmp_path_factory.mktemp("ckpt") / "ckpt"
    trainer.save(path, trainer.init(jax.random.key(0)))
    return path


def _activation(d, activation):
    cfg = _config(d)
    return dataclasses.replace(cfg, model=functools.partial(cfg.model, activation=activation))


# Every field of the checkpoint's signature, each changed alone: (field, changed build,
# the two values as the message prints them). Building a trainer only traces shapes,
# and a refused restore stops before reading any array, so nothing here compiles a step.
CHANGED = {
    "batch_size": (lambda d: dataclasses.replace(_config(d), batch_size=16), "32, here 16"),
    "task_weights": (
        lambda d: dataclasses.replace(_config(d), task_weights=(1.0, 2.0)),
        "None, here [1.0, 2.0]",
    ),
    "pos_weights": (
        lambda d: dataclasses.replace(_config(d), pos_weights=(1.0, 2.0)),
        "None, here [1.0, 2.0]",
    ),
    "space": (
        lambda d: dataclasses.replace(
            _config(d),
            mtl_transform=drgrad_jax.drgrad({"dedicated": "v1", "shared": "vs"}, num_tasks=2),
        ),
        "'params', here 'activations'",
    ),
    "shared_grads": (
        lambda d: dataclasses.replace(_config(d), shared_grads="summed"),
        "'per_task', here 'summed'",
    ),
    # Same shapes, another network: only the signature can tell.
    "model": (lambda d: _activation(d, "tanh"), "activation='tanh'"),
}


@pytest.mark.parametrize("field", sorted(CHANGED))
def test_checkpoint_of_another_config_field_is_refused(synth, saved, field):
    build, values = CHANGED[field]
    other = drgrad_jax.make_train(build(synth), synth)
    prefix = "" if field == "model" else "config."
    with pytest.raises(ValueError, match="different configuration") as err:
        other.restore(saved)
    line = next(x for x in str(err.value).splitlines() if x.strip().startswith(prefix + field))
    assert values in line


def test_checkpoint_of_other_data_is_refused(saved):
    bigger = data.drgrad_synthetic("conflict", 128, 64, 64, dim=4, num_sines=0, seed=1)
    other = drgrad_jax.make_train(_config(bigger), bigger)
    with pytest.raises(ValueError, match="config.num_train: checkpoint 96, here 128"):
        other.restore(saved)


def test_checkpoint_of_another_network_or_method_is_refused(synth, saved, trainer, tmp_path):
    wider = drgrad_jax.make_train(_config(synth, hidden=(16,)), synth)
    with pytest.raises(ValueError, match="different configuration") as err:
        wider.restore(saved)
    msg = str(err.value)
    assert "expert_hidden=(8,)" in msg and "expert_hidden=(16,)" in msg
    assert "checkpoint shape (8, 8) float32, here (16, 8) float32" in msg
    other_method = drgrad_jax.make_train(_config(synth, method="pcgrad"), synth)
    with pytest.raises(ValueError, match="checkpoint DRGradState.*here PCGradState"):
        other_method.restore(saved)
    with pytest.raises(FileNotFoundError, match="no checkpoint"):
        trainer.restore(tmp_path / "nothing")
    (tmp_path / "junk").mkdir()
    with pytest.raises(ValueError, match="not a drgrad_jax checkpoint"):
        trainer.restore(tmp_path / "junk")


def test_run_past_the_end_and_bad_arguments(trainer):
    state = trainer.init(jax.random.key(0))
    with pytest.raises(ValueError, match="passes total_steps=9"):
        trainer.run(state, 10)
    with pytest.raises(ValueError, match="num_steps must be >= 0"):
        trainer.run(state, -1)
    with pytest.raises(TypeError, match="state must be a TrainState"):
        trainer.run({"step": 0}, 1)


# --- damaged checkpoints and other device counts ----------------------------------------


def _data_files(path):
    return sorted(p for p in (path / "state").rglob("*") if p.is_file() and p.parent.name == "d")


def _delete_every_data_file(path):
    for p in _data_files(path):
        p.unlink()


def _delete_the_data_file_holding_arrays(path):
    # OCDBT may leave unreferenced per-process files behind; state/d holds the merged data.
    for p in (path / "state" / "d").iterdir():
        p.unlink()


DAMAGE = {
    "tree metadata": (
        lambda p: (p / "state" / "_METADATA").unlink(),
        "missing the tree metadata state/_METADATA",
    ),
    "signature": (
        lambda p: (p / "meta" / "metadata").unlink(),
        "missing the configuration signature meta/metadata",
    ),
    "array index": (
        lambda p: (p / "state" / "manifest.ocdbt").unlink(),
        "missing the array index state/manifest.ocdbt",
    ),
    "signature and tree metadata": (
        lambda p: [(p / "meta" / "metadata").unlink(), (p / "state" / "_METADATA").unlink()],
        "missing the configuration signature meta/metadata; the tree metadata state/_METADATA",
    ),
    "garbled signature": (
        lambda p: (p / "meta" / "metadata").write_text('{"config": {}}'),
        "meta/metadata lacks config, state, state_kinds",
    ),
    "truncated tree metadata": (
        lambda p: (p / "state" / "_METADATA").write_text('{"tree_metadata": {'),
        "the tree metadata state/_METADATA is unreadable",
    ),
    "every data file": (_delete_every_data_file, "could not be read.*missing or corrupt"),
    "the index's data file": (
        _delete_the_data_file_holding_arrays,
        r"array \d{5} \(.*\) could not be read from state/d/[0-9a-f]+; a data file",
    ),
}


@pytest.mark.parametrize("damage", sorted(DAMAGE))
def test_damaged_checkpoint_is_reported_as_damaged_naming_what_is_missing(
    trainer, saved, tmp_path, damage
):
    import shutil

    path = tmp_path / "ckpt"
    shutil.copytree(saved, path)
    spoil, match = DAMAGE[damage]
    spoil(path)
    with pytest.raises(ValueError, match=rf"damaged checkpoint at {path}: .*{match}") as err:
        trainer.restore(path)
    assert "different configuration" not in str(err.value)


def test_intact_checkpoint_restores_exactly(trainer, saved):
    _assert_identical(trainer.restore(saved), trainer.init(jax.random.key(0)))


@pytest.fixture(scope="module")
def meshed(synth):
    return drgrad_jax.make_train(_config(synth), synth, mesh=parallel.make_mesh(8))


def test_checkpoint_moves_between_one_device_and_an_eight_device_mesh(
    trainer, meshed, saved, tmp_path
):
    """Written without a mesh, restored on 8 devices, and the reverse: same values."""
    want = trainer.init(jax.random.key(0))
    on_mesh = meshed.restore(saved)
    _assert_identical(on_mesh, want)
    assert all(len(x.sharding.device_set) == 8 for x in jax.tree.leaves(on_mesh))
    meshed.save(tmp_path / "from_mesh", meshed.init(jax.random.key(3)))
    back = trainer.restore(tmp_path / "from_mesh")
    _assert_identical(back, trainer.init(jax.random.key(3)))
    assert all(len(x.sharding.device_set) == 1 for x in jax.tree.leaves(back))
    # The restored state steps on its new placement.
    state, _ = trainer.run(back, 1)
    assert int(state.step) == 1


def test_state_kinds_names_every_named_tuple_below_the_top_in_order():
    # A partitioned optimizer keeps its inner states in dicts (optax.partition),
    # so the signature walks dicts as well as tuples and lists.
    class Top(NamedTuple):
        inner: object

    class A(NamedTuple):
        count: int

    class B(NamedTuple):
        pass

    tree = Top(({"x": A(0), "y": [B(), {"z": A(1)}]}, B()))
    assert checkpoint._state_kinds(tree) == ["A", "B", "A", "B"]
    assert checkpoint._state_kinds({"x": A(0)}) == ["A"]


def test_config_signature_records_every_field_but_the_excluded_as_json():
    @dataclasses.dataclass(frozen=True)
    class Model:
        widths: tuple = (8, 4)

    @dataclasses.dataclass(frozen=True)
    class Config:
        lr: float = 0.1
        steps: object = np.int64(3)
        model: Model = Model()
        optimizer: object = None
        progress: object = None

    assert checkpoint.config_signature(Config(), exclude=("progress",)) == {
        "lr": 0.1,
        "steps": 3,
        "model": {"widths": [8, 4]},
        "optimizer": "default",
    }
    given = checkpoint.config_signature(Config(optimizer=optax.sgd(0.1), progress=print))
    assert given["optimizer"] == "given" and given["progress"] is print
    assert type(given["steps"]) is int


def test_unreadable_arrays_names_the_array_and_its_data_file():
    saved = {"state": [["['params']['w']", [8, 8], "float32"], ["['opt'][0].count", [], "int32"]]}
    error = 'reading 00001/ failed: local file "/runs/ckpt/state/d/0a1b2c" is truncated'
    assert checkpoint._unreadable_arrays("/runs/ckpt", saved, error) == (
        "damaged checkpoint at /runs/ckpt: the metadata is intact but array 00001 "
        "(['opt'][0].count) could not be read from state/d/0a1b2c; a data file under "
        "state/ is missing or corrupt."
    )
    # An array number the signature does not list: the message names the arrays.
    for number in ("00002", "00005"):
        far = checkpoint._unreadable_arrays("/runs/ckpt", saved, f"reading {number}/ failed")
        assert "the arrays could not be read;" in far
