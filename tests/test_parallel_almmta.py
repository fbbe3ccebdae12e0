"""Data-parallel ALM-MTA on 8 fake CPU devices, checkpoint resume and determinism."""

import jax
import numpy as np
import pytest

from almmta_jax import (
    TrainConfig,
    default_optimizer,
    make_train,
    shard_state,
    state_sharding,
)
from almmta_jax.data import journey_batches
from almmta_jax.testing import random_journeys
from drgrad_jax import parallel
from tests.almmta_tiny import tiny_model

NUM_DEVICES = 8
BATCH = 16
STEPS_PER_EPOCH = 4


def _config(mode="grl", optimizer="adamw", **kw):
    model = tiny_model(vocab_sizes=(16, 8), max_len=4, num_users=16, dropout=0.2)
    base = dict(
        mode=mode,
        batch_size=BATCH,
        num_epochs=2,
        queue_size=12,  # < BATCH: the ring buffer wraps every step
        warmup_steps=0,  # the adversary's reversal is on from the first step
        lambda_max=0.5,
        learning_rate=1e-2,
        lr_warmup_steps=1,
        beta=0.5,
    )
    base.update(kw)
    tx = default_optimizer(
        base["learning_rate"], warmup_steps=base["lr_warmup_steps"], kind=optimizer
    )
    return TrainConfig(model, optimizer=tx, **base)


@pytest.fixture(scope="module")
def data():
    cfg = _config()
    return jax.tree.map(
        np.asarray, random_journeys(jax.random.key(3), STEPS_PER_EPOCH * BATCH, cfg.model)
    )


@pytest.fixture(scope="module")
def mesh():
    if len(jax.devices()) < NUM_DEVICES:
        pytest.skip(f"needs {NUM_DEVICES} devices (conftest fakes them on CPU)")
    return parallel.make_mesh(NUM_DEVICES)


def _batches(data, n):
    rows = [slice(i * BATCH, (i + 1) * BATCH) for i in range(n)]
    return [jax.tree.map(lambda a, r=r: a[r], data) for r in rows]


def _max_abs_diff(a, b):
    return max(
        float(np.max(np.abs(np.asarray(x, np.float64) - np.asarray(y, np.float64))))
        for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b))
    )


# ------------------------------------------------------------ data parallelism


def _key_bias_free(params):
    """``params`` with the attention key bias zeroed (see the test below)."""
    params = jax.tree.map(np.array, params)
    for attn in params["encoder"]["attns"].values():
        bias = attn["qkv"]["bias"][...]
        d = bias.shape[0] // 3
        bias[d : 2 * d] = 0.0
        attn["qkv"]["bias"][...] = bias
    return params


# Two setups cover both modes, both optimizers and both state layouts; each is
# compiled once (single-device reference and 8-device step) and shared below.
SETUPS = {
    "grl-adamw-sharded-embeddings": dict(mode="grl", optimizer="adamw", shard_embeddings=True),
    "simultaneous-sgd-replicated": dict(
        mode="simultaneous", optimizer="sgd", shard_embeddings=False
    ),
}


@pytest.fixture(scope="module")
def setups(data, mesh):
    out = {}
    for name, kw in SETUPS.items():
        cfg = _config(kw["mode"], adversary_steps=2, optimizer=kw["optimizer"])
        trainer = make_train(cfg, data)  # single device, the reference
        multi = make_train(cfg, data, mesh=mesh, shard_embeddings=kw["shard_embeddings"])
        out[name] = (kw["optimizer"], trainer, multi, kw["shard_embeddings"])
    return out


@pytest.mark.parametrize("name", list(SETUPS))
def test_eight_devices_equal_one_device(data, mesh, setups, name):
    optimizer, trainer, multi, shard_embeddings = setups[name]
    cfg = trainer.config
    assert trainer.steps_per_epoch == STEPS_PER_EPOCH
    one = trainer.init(jax.random.key(0))
    many = shard_state(one, mesh, shard_embeddings=shard_embeddings)
    for batch in _batches(data, 3):
        one, m_one = trainer.step(one, batch)
        sharded = parallel.shard_batch(batch, mesh)
        # The batch is really split: each device holds BATCH / 8 journeys.
        assert {s.data.shape for s in sharded.touch_ids.addressable_shards} == {(2, 4, 2)}
        assert len(sharded.y.addressable_shards) == NUM_DEVICES
        many, m_many = multi.step(many, sharded)
    assert int(many.step) == 3
    table = many.params["touch_embed"]["tables"][0]["embedding"][...]
    # Dropout, the queue and the adversary are all active in the compared steps.
    assert float(m_one.adversary_weight) > 0 and bool(np.asarray(one.queue_valid).all())
    for a, b in zip(m_one, m_many):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-4, atol=1e-5)
    if optimizer == "adamw":
        # Attention is invariant to the key bias, so its gradient is zero up to
        # rounding (~1e-9), and Adam's g / sqrt(v) turns that rounding, which
        # differs with the summation order, into steps of +-lr. Every other leaf
        # must match; the key bias can only have drifted by the step sizes.
        drift = _max_abs_diff(one.params, many.params)
        assert drift <= 3 * cfg.learning_rate * 1.01
        one = one._replace(params=_key_bias_free(one.params))
        many = many._replace(params=_key_bias_free(many.params))
    for field in ("params", "adv_params", "opt_state", "key_ema", "queue", "queue_valid"):
        got, want = getattr(many, field), getattr(one, field)
        assert jax.tree.structure(got) == jax.tree.structure(want)
        assert _max_abs_diff(got, want) < 1e-5, field
    # The parameters move (a zero update would make the comparison vacuous).
    init = trainer.init(jax.random.key(0))
    assert _max_abs_diff(one.params, init.params) > 1e-3
    if shard_embeddings:
        assert table.sharding.spec == jax.sharding.PartitionSpec("data", None)
        assert table.addressable_shards[0].data.shape == (16 // NUM_DEVICES, 8)
    else:
        assert table.sharding.is_fully_replicated


def test_step_all_reduces_gradients(data, mesh, setups):
    _, trainer, multi, shard_embeddings = setups["simultaneous-sgd-replicated"]
    state = multi.init(jax.random.key(0))
    batch = parallel.shard_batch(_batches(data, 1)[0], mesh)
    hlo = multi.compiled.step.lower(state, batch).compile().as_text()
    # The partitioned program reduces gradients across devices.
    assert "all-reduce" in hlo
    # A non-finite batch is dropped by the step's guard: state kept, counter moved.
    bad = parallel.shard_batch(
        _batches(data, 1)[0]._replace(ipw=np.full(BATCH, np.inf, np.float32)), mesh
    )
    new, metrics = multi.step(state, bad)
    assert not np.isfinite(float(metrics.outcome_loss))
    assert int(new.step) == 1 and _max_abs_diff(new.params, state.params) == 0.0
    assert int(new.skipped) == 1


def test_state_sharding_rules(data, mesh):
    cfg = _config()
    state = make_train(cfg, data).init(jax.random.key(0))
    plain = state_sharding(state, mesh)
    assert all(s.is_fully_replicated for s in jax.tree.leaves(plain))
    split = state_sharding(state, mesh, shard_embeddings=True)
    paths = {
        jax.tree_util.keystr(p)
        for p, s in jax.tree_util.tree_leaves_with_path(split)
        if not s.is_fully_replicated
    }
    # 16-row tables split 8 ways (params and both Adam moments); the 8-row table
    # splits too; the position table (5 rows) is not an id table.
    assert any("tables'][0]" in p for p in paths) and any("user_table" in p for p in paths)
    assert not any("position" in p or "kernel" in p for p in paths)
    assert len(paths) == 3 * 3


def test_data_parallel_bad_arguments(data, mesh):
    with pytest.raises(ValueError, match="batch_size=12 is not divisible"):
        make_train(_config(batch_size=12), data, mesh=mesh)
    with pytest.raises(ValueError, match="not a mesh axis"):
        state_sharding(make_train(_config(), data).init(jax.random.key(0)), mesh, axis="model")
    with pytest.raises(TypeError, match="mesh must be a jax.sharding.Mesh"):
        make_train(_config(), data, mesh="data")
    with pytest.raises(TypeError, match="TrainConfig"):
        make_train(_config().model, data, mesh=mesh)
    with pytest.raises(TypeError, match="TrainState"):
        state_sharding({"w": np.zeros(3)}, mesh)


# --------------------------------------------------- checkpoint and determinism


def _run(trainer, data, key, *, num_steps, start=None, seed=5):
    """Python-loop training over a seeded stream; resumes at ``start.step``."""
    state = trainer.init(key) if start is None else start
    done = int(state.step)
    stream = journey_batches(
        data, BATCH, seed=seed, shuffle_buffer=24, drop_last=True, epochs=3, start_batch=done
    )
    metrics = []
    for _, batch in zip(range(num_steps - done), stream):
        state, m = trainer.step(state, batch)
        metrics.append(m)
    return state, metrics


def _leaves(tree):
    return [
        np.asarray(
            jax.random.key_data(x) if jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key) else x
        )
        for x in jax.tree.leaves(tree)
    ]


def test_kill_mid_epoch_and_resume_is_bit_identical(data, setups, tmp_path):
    _, trainer, _, _ = setups["grl-adamw-sharded-embeddings"]
    key = jax.random.key(11)
    total = 2 * STEPS_PER_EPOCH + 1
    full, metrics = _run(trainer, data, key, num_steps=total)
    # The "killed" run: 6 steps (mid-epoch 2), checkpoint, then its state is gone.
    killed, _ = _run(trainer, data, key, num_steps=STEPS_PER_EPOCH + 2)
    trainer.save(tmp_path / "ckpt", killed)
    del killed
    restored = trainer.restore(tmp_path / "ckpt")
    assert int(restored.step) == STEPS_PER_EPOCH + 2
    resumed, resumed_metrics = _run(trainer, data, key, num_steps=total, start=restored)
    assert int(resumed.step) == total
    for a, b in zip(_leaves(full), _leaves(resumed)):
        np.testing.assert_array_equal(a, b)
    for a, b in zip(_leaves(metrics[-len(resumed_metrics) :]), _leaves(resumed_metrics)):
        np.testing.assert_array_equal(a, b)
    # Determinism: a second run with the same seed gives identical metrics and state;
    # another seed does not.
    again, metrics_again = _run(trainer, data, key, num_steps=total)
    for a, b in zip(_leaves((full, metrics)), _leaves((again, metrics_again))):
        np.testing.assert_array_equal(a, b)
    _, other = _run(trainer, data, jax.random.key(12), num_steps=3)
    assert not np.array_equal(
        np.asarray(other[-1].outcome_loss), np.asarray(metrics[2].outcome_loss)
    )


# ------------------------------------------------------- the scaling benchmark


def test_scaling_benchmark_streaming_smoke(tmp_path):
    from benchmarks import scaling

    d = tmp_path / "shards"
    assert scaling._write_shards(d, 250, 100, max_len=4) == 3
    out = scaling._subprocess(["--worker", "stream", "--dir", str(d)], {"JAX_PLATFORMS": "cpu"})
    assert out["journeys"] == 250 and out["user_id_sum"] == 250 * 249 // 2
    assert out["peak_rss_mb"] >= out["rss_after_imports_mb"] > 0
