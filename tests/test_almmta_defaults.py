"""ALM-MTA's data-derived configuration and the defaults that make small runs learn."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import almmta_jax as am
from almmta_jax.testing import random_journeys


def _reference_vocab(batches):
    """Largest id at a real touch + 1, per field, over every batch (a plain loop)."""
    fields = batches[0].touch_ids.shape[-1]
    top = [0] * fields
    for b in batches:
        ids, mask = np.asarray(b.touch_ids), np.asarray(b.touch_mask)
        for i in range(ids.shape[0]):
            for j in range(ids.shape[1]):
                if mask[i, j]:
                    for f in range(fields):
                        top[f] = max(top[f], int(ids[i, j, f]) + 1)
    return tuple(top)


@pytest.fixture(scope="module")
def two_splits():
    cfg = am.ModelConfig(vocab_sizes=(9, 4), d_x=3, max_len=5, num_users=7, num_proxy=2)
    a = random_journeys(jax.random.key(0), 12, cfg)
    b = random_journeys(jax.random.key(1), 6, cfg)
    # a large id behind the padding must not count; a large user id must
    pad = ~np.asarray(a.touch_mask)
    a = a._replace(touch_ids=jnp.where(pad[..., None], 99, a.touch_ids))
    b = b._replace(user_id=b.user_id.at[0].set(11))
    return a, b


def test_from_batch_reads_every_data_field_from_the_journeys(two_splits):
    a, b = two_splits
    cfg = am.ModelConfig.from_batch(a, b, d_model=16, num_heads=2)
    assert cfg.vocab_sizes == _reference_vocab([a, b])
    assert max(cfg.vocab_sizes) < 99  # padding ids are not ids
    assert (cfg.d_x, cfg.max_len, cfg.num_proxy) == (3, 5, 2)
    assert cfg.num_users == 12  # user id 11 in the second split
    assert (cfg.d_model, cfg.num_heads) == (16, 2)
    # the evaluation split's ids fit: make_train's id check accepts both splits
    small = am.TrainConfig(
        dataclasses.replace(cfg, ffn_dim=8, d_mediator=4, d_contrast=4),
        batch_size=4,
        num_epochs=1,
        queue_size=8,
    )
    am.make_train(small, a, b)


def test_from_batch_overrides_and_refusals(two_splits):
    a, b = two_splits
    assert am.ModelConfig.from_batch(a, vocab_sizes=(50, 50)).vocab_sizes == (50, 50)
    no_users = a._replace(user_id=jnp.zeros_like(a.user_id))
    assert am.ModelConfig.from_batch(no_users).num_users == 0
    with pytest.raises(TypeError, match="JourneyBatch"):
        am.ModelConfig.from_batch({"x": a.x})
    with pytest.raises(TypeError, match="JourneyBatch"):
        am.ModelConfig.from_batch()
    shorter = jax.tree.map(lambda x: x, b)._replace(x=b.x[:, :2])
    with pytest.raises(ValueError, match="disagree"):
        am.ModelConfig.from_batch(a, shorter)


@settings(max_examples=60, deadline=None)
@given(n=st.integers(1, 200_000))
def test_auto_batch_size_gives_enough_steps_within_the_papers_cap(n):
    size = am.auto_batch_size(n)
    assert 1 <= size <= min(n, 512)
    if size < n:
        assert size & (size - 1) == 0 and size >= 32  # a power of two, at least 32
    if 32 < size < 512:
        assert n // size >= 25  # enough steps per epoch ...
        assert n // (2 * size) < 25  # ... with the largest such batch
    if n >= 512 * 25:
        assert size == 512  # the paper's batch on large data


def test_make_train_resolves_the_default_batch_from_the_data():
    cfg = am.ModelConfig(
        vocab_sizes=(5,), d_x=2, max_len=3, d_model=8, num_heads=2, ffn_dim=8, d_mediator=4
    )
    data = random_journeys(jax.random.key(0), 1_600, cfg)
    trainer = am.make_train(am.TrainConfig(cfg, num_epochs=1, queue_size=8), data)
    assert trainer.config.batch_size == 64 and trainer.steps_per_epoch == 25
    explicit = am.make_train(am.TrainConfig(cfg, batch_size=512, queue_size=8), data)
    assert explicit.config.batch_size == 512


def _first_sgd_step(total_steps):
    tx = am.default_optimizer(
        1.0, warmup_steps=500, total_steps=total_steps, weight_decay=0.0, clip_norm=1e9, kind="sgd"
    )
    p = {"w": jnp.ones(())}
    u, _ = tx.update(p, tx.init(p), p)
    return float(-u["w"])


def test_warmup_is_capped_at_a_tenth_of_the_planned_run():
    # lr_0 = lr * (0 + 1) / warm with warm = max(min(500, total // 10), 1)
    assert _first_sgd_step(None) == pytest.approx(1 / 500)
    assert _first_sgd_step(30) == pytest.approx(1 / 3)
    assert _first_sgd_step(5) == pytest.approx(1.0)
    assert _first_sgd_step(100_000) == pytest.approx(1 / 500)
