"""Tests for drgrad_jax.parallel and the data-parallel DRGrad trainer on 8 fake CPU devices."""

import jax
import numpy as np
import pytest

from drgrad_jax import parallel


def test_make_mesh_sizes_and_errors():
    assert jax.device_count() >= 8, "conftest fakes 8 CPU devices"
    mesh = parallel.make_mesh(8)
    assert dict(mesh.shape) == {"data": 8}
    assert dict(parallel.make_mesh().shape) == {"data": jax.device_count()}
    assert parallel.make_mesh(3, axis="batch").axis_names == ("batch",)
    with pytest.raises(ValueError, match="num_devices=9999 exceeds"):
        parallel.make_mesh(9999)
    with pytest.raises(ValueError, match="num_devices must be >= 1"):
        parallel.make_mesh(0)
    with pytest.raises(ValueError, match="num_devices must be a positive int"):
        parallel.make_mesh(2.0)
    with pytest.raises(ValueError, match="axis"):
        parallel.make_mesh(2, axis="")


def test_shard_batch_splits_leading_axis_and_keeps_values():
    mesh = parallel.make_mesh(8)
    rng = np.random.default_rng(0)
    tree = {
        "cat": rng.integers(0, 5, (16, 3), dtype=np.int32),
        "dense": rng.normal(size=(16, 4)).astype(np.float32),
        "none": None,
    }
    out = parallel.shard_batch(tree, mesh)
    assert out["none"] is None
    for name in ("cat", "dense"):
        x = out[name]
        assert x.sharding.spec == jax.sharding.PartitionSpec("data")
        assert [s.data.shape for s in x.addressable_shards] == [(2, tree[name].shape[1])] * 8
        # Shard i holds rows [2i, 2i+2).
        for s in x.addressable_shards:
            np.testing.assert_array_equal(np.asarray(s.data), tree[name][s.index])
        np.testing.assert_array_equal(np.asarray(x), tree[name])
    glob = parallel.host_local_to_global(tree, mesh)
    for name in ("cat", "dense"):
        assert glob[name].sharding == out[name].sharding
        np.testing.assert_array_equal(np.asarray(glob[name]), tree[name])


def test_shard_batch_bad_inputs_name_the_leaf():
    mesh = parallel.make_mesh(8)
    with pytest.raises(ValueError, match=r"\['dense'\] has leading size 12"):
        parallel.shard_batch({"cat": np.zeros((16, 2)), "dense": np.zeros((12, 2))}, mesh)
    with pytest.raises(ValueError, match="scalar"):
        parallel.shard_batch({"s": np.float32(1.0)}, mesh)
    with pytest.raises(ValueError, match="not a mesh axis"):
        parallel.shard_batch(np.zeros((8,)), mesh, axis="model")
    with pytest.raises(TypeError, match="mesh must be a jax.sharding.Mesh"):
        parallel.shard_batch(np.zeros((8,)), "data")
    with pytest.raises(ValueError, match="host-local batch leaf"):
        parallel.host_local_to_global(np.zeros((7, 2)), mesh)


def test_replicate_puts_full_copy_everywhere():
    mesh = parallel.make_mesh(8)
    params = {"w": np.arange(6.0).reshape(2, 3), "b": np.ones(3)}
    out = parallel.replicate(params, mesh)
    for name, x in out.items():
        assert x.sharding.is_fully_replicated and len(x.addressable_shards) == 8
        for s in x.addressable_shards:
            np.testing.assert_array_equal(np.asarray(s.data), params[name])


# --- the data-parallel trainer ------------------------------------------------------

import functools  # noqa: E402

import optax  # noqa: E402
from flax import nnx  # noqa: E402

import drgrad_jax  # noqa: E402
from drgrad_jax import data, models  # noqa: E402

STEPS = 6  # a few steps: 8-device and 1-device runs are compared after these
MAX_ABS_DIFF = {}  # method -> largest |8-device - 1-device| parameter difference seen


@pytest.fixture(scope="module")
def synth():
    return data.drgrad_synthetic("conflict", 256, 64, 64, dim=6, num_sines=0, seed=0)


class _Inspecting(models.SplitMMoE):
    """SplitMMoE that reports the sharding its dense input arrives with."""

    seen = []

    def __call__(self, cat, dense, user=None, *, mu=None):
        jax.debug.inspect_array_sharding(dense, callback=_Inspecting.seen.append)
        return super().__call__(cat, dense, user, mu=mu)


def _config(d, method):
    model = functools.partial(
        _Inspecting, d.vocab_sizes, d.num_dense, 2, num_experts=2, expert_hidden=(8,)
    )
    towers = model(rngs=nnx.Rngs(0)).drgrad_towers("params")
    tx = {
        "drgrad": drgrad_jax.drgrad(towers, num_tasks=2),
        "pcgrad": drgrad_jax.pcgrad(seed=0),
    }[method]
    return drgrad_jax.TrainConfig(model, optax.adam(1e-2), tx, batch_size=64, num_epochs=2)


def _max_abs_diff(a, b) -> float:
    return max(
        float(np.max(np.abs(np.asarray(x) - np.asarray(y))))
        for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b))
    )


@pytest.mark.parametrize("method", ["drgrad", "pcgrad"])
def test_eight_devices_equal_one_device(synth, method):
    config = _config(synth, method)
    mesh = drgrad_jax.parallel.make_mesh(8)
    single = drgrad_jax.make_train(config, synth)
    multi = drgrad_jax.make_train(config, synth, mesh=mesh)
    key = jax.random.key(4)
    s1, l1 = single.run(single.init(key), STEPS)
    _Inspecting.seen.clear()
    s8, l8 = multi.run(multi.init(key), STEPS)
    assert int(s8.step) == STEPS and int(s8.skipped) == 0
    # Every batch reached the model split over the 8 devices, 8 rows each.
    assert _Inspecting.seen, "the model never saw a batch"
    for sharding in _Inspecting.seen:
        assert sharding.spec[0] == "data" and not sharding.is_fully_replicated
        assert sharding.shard_shape((64, synth.num_dense)) == (8, synth.num_dense)
    # Parameters and optimizer state live replicated on all 8 devices.
    for leaf in jax.tree.leaves((s8.params, s8.opt_state)):
        assert leaf.sharding.is_fully_replicated and len(leaf.sharding.device_set) == 8
    diff = _max_abs_diff(s1.params, s8.params)
    MAX_ABS_DIFF[method] = diff
    print(f"\n[{method}] max |params 8 devices - 1 device| after {STEPS} steps: {diff:.3g}")
    assert diff < 1e-5
    # The parameters did move, so the comparison is not between two initial states.
    assert _max_abs_diff(single.init(key).params, s1.params) > 1e-2
    np.testing.assert_allclose(l1, l8, rtol=1e-5, atol=1e-6)
    mu1 = drgrad_jax.mixing_weights(s1.opt_state)
    if mu1 is not None:
        np.testing.assert_allclose(mu1, drgrad_jax.mixing_weights(s8.opt_state), atol=1e-5)
    if method == "drgrad":
        # A streamed batch, placed with shard_batch, keeps its sharding into the step.
        tr = synth.train
        batch = data.Split(tr.cat[:64], tr.dense[:64], tr.labels[:64], tr.user[:64], None)
        batch = drgrad_jax.parallel.shard_batch(batch, mesh)
        assert batch.dense.sharding.spec[0] == "data"
        state, losses = multi.step(s8, batch)
        assert losses.shape == (2,) and int(state.step) == STEPS + 1
        for leaf in jax.tree.leaves(state.params):
            assert leaf.sharding.is_fully_replicated


def test_mesh_argument_errors(synth):
    config = _config(synth, "drgrad")
    with pytest.raises(ValueError, match="batch_size=64 is not divisible by the 3 devices"):
        drgrad_jax.make_train(config, synth, mesh=drgrad_jax.parallel.make_mesh(3))
    with pytest.raises(TypeError, match="mesh must be a jax.sharding.Mesh"):
        drgrad_jax.make_train(config, synth, mesh="data")


@pytest.mark.slow
def test_stability_benchmark_smoke(tmp_path):
    """``benchmarks.stability`` in miniature (DRGrad part): runs, stays finite, writes JSON.

    The ALM-MTA part runs in ``python -m benchmarks.stability --quick``; its trainer
    is covered by tests/test_almmta_train.py.
    """
    import json

    from benchmarks import stability

    path = tmp_path / "stability.json"
    argv = ["--quick", "--only", "drgrad", "--drgrad-steps", "300", "--json", str(path)]
    out = stability.main(argv)
    saved = json.loads(path.read_text())
    assert saved["drgrad"]["steps"] == 300 and "almmta" not in saved
    rec = out["drgrad"]
    assert rec["diverged_at_step"] is None and len(rec["chunks"]) == 3
    assert all(c["finite"] and c["skipped"] == 0 for c in rec["chunks"])
    assert rec["chunks"][-1]["loss"][0] < rec["chunks"][0]["loss"][0]
    mu = rec["chunks"][-1]["mu"]
    assert len(mu) == 2 and abs(sum(mu) - 1.0) < 1e-4
