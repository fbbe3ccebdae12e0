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
