"""Deleted journeys (docs/almmta.md, *Deleted journeys*): a deletion is the journey as logged without the touch.

The reference is the definition: remove the touches, pack the rest to the front
and compute ``time_features`` of the shorter journey at the same window end.
Every model's ``(batch, keep)`` logits must equal its logits on that packed batch.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

import almmta_jax as am
from almmta_jax.data import JourneyBatch, deleted_time_features, time_features
from tests.almmta_tiny import tiny_model

L = 6
N = 24


def _journeys(seed: int, n: int = N):
    """Timestamps (seconds, sorted over valid touches), masks of lengths 1..L, window ends."""
    rng = np.random.default_rng(seed)
    lengths = rng.integers(1, L + 1, size=n)
    mask = np.arange(L)[None, :] < lengths[:, None]
    hours = np.sort(rng.uniform(0.0, 400.0, size=(n, L)), axis=1)
    end = hours.max(axis=1) + rng.uniform(0.0, 48.0, size=n)
    seconds = np.where(mask, hours, 0.0) * 3600.0
    return seconds, mask, end * 3600.0, rng


def _packed(values: np.ndarray, kept: np.ndarray) -> np.ndarray:
    """Each row's kept entries moved to the front, zeros after them."""
    out = np.zeros_like(values)
    for i in range(values.shape[0]):
        idx = np.flatnonzero(kept[i])
        out[i, : idx.size] = values[i, idx]
    return out


def _logged_without(seconds, mask, end, keep):
    """Time features of the packed shorter journeys, computed from scratch: ``(tfeat, mask)``."""
    kept = mask & keep
    short_mask = np.arange(L)[None, :] < kept.sum(1)[:, None]
    return time_features(_packed(seconds, kept), short_mask, end_time=end), short_mask, kept


def test_full_keep_returns_the_features_bit_for_bit():
    seconds, mask, end, _ = _journeys(0)
    f = time_features(seconds, mask, end_time=end)
    np.testing.assert_array_equal(np.asarray(deleted_time_features(f, mask, mask)), f)
    np.testing.assert_array_equal(np.asarray(deleted_time_features(f, mask, np.ones_like(mask))), f)


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_random_deletions_match_the_journey_logged_without_them(seed):
    seconds, mask, end, rng = _journeys(seed)
    keep = rng.random(mask.shape) < 0.6  # any number of deletions, first and last included
    f = time_features(seconds, mask, end_time=end)
    ref, short_mask, kept = _logged_without(seconds, mask, end, keep)
    got = np.asarray(deleted_time_features(f, mask, keep))
    np.testing.assert_allclose(_packed(got, kept), ref, rtol=1e-5, atol=2e-6)
    assert not got[~kept].any()  # deleted and padded positions read as padding


def test_each_single_deletion_moves_only_its_successor_gap_and_earlier_positions():
    seconds, mask, end, _ = _journeys(4)
    f = time_features(seconds, mask, end_time=end)
    for j in range(L):
        keep = np.arange(L)[None, :] != j
        got = np.asarray(deleted_time_features(f, mask, keep))
        ref, _, kept = _logged_without(seconds, mask, end, keep)
        np.testing.assert_allclose(_packed(got, kept), ref, rtol=1e-5, atol=2e-6)
        untouched = kept.copy()
        untouched[:, :j] = False  # positions before j moved one closer to the end
        if j + 1 < L:
            untouched[:, j + 1] = False  # the successor's gap now spans back to j - 1
        np.testing.assert_array_equal(got[untouched], f[untouched])


def test_deleted_time_features_refuses_mismatched_shapes():
    with pytest.raises(ValueError, match="tfeat has shape"):
        deleted_time_features(np.zeros((2, L, 2)), np.ones((2, L), bool), np.ones((2, L), bool))
    with pytest.raises(ValueError, match="touch_mask"):
        deleted_time_features(np.zeros((2, L, 3)), np.ones((2, L + 1), bool), np.ones((2, L), bool))


# ------------------------------------------------------------------ every model


CFG = tiny_model(max_len=L)


def _batch_and_packed(keep):
    """A batch with consistent time features, and the batch logged without ``~keep``."""
    seconds, mask, end, rng = _journeys(5, 8)
    ids = np.stack([rng.integers(0, v, size=(8, L)) for v in CFG.vocab_sizes], axis=-1)
    ids = np.where(mask[..., None], ids, 0).astype(np.int32)
    y = (rng.random(8) < 0.5).astype(np.float32)
    yp = np.where(mask[..., None] & (y[:, None, None] > 0), rng.random((8, L, 1)), 0.0)
    batch = JourneyBatch(
        x=rng.normal(size=(8, CFG.d_x)).astype(np.float32),
        user_id=rng.integers(0, CFG.num_users, size=8).astype(np.int32),
        touch_ids=ids,
        tfeat=time_features(seconds, mask, end_time=end),
        touch_mask=mask,
        y=y,
        yp=yp.astype(np.float32),
        yp_mask=mask & (y[:, None] > 0),
        ipw=np.ones(8, np.float32),
    )
    tfeat, short_mask, kept = _logged_without(seconds, mask, end, keep)
    short = batch._replace(
        touch_ids=_packed(ids, kept),
        tfeat=tfeat,
        touch_mask=short_mask,
        yp=_packed(batch.yp, kept),
        yp_mask=short_mask & (y[:, None] > 0),
    )
    return batch, short


def _models():
    rngs = nnx.Rngs(3)
    bcfg = am.BaselineConfig(CFG.vocab_sizes, d_x=CFG.d_x, max_len=L, channel_field=1, hidden=8)
    return {
        "alm_mta attention": am.ALMMTA(CFG, rngs=rngs),
        "alm_mta gru": am.ALMMTA(tiny_model(max_len=L, encoder="gru"), rngs=rngs),
        "lr": am.LogisticMTA(bcfg, rngs=rngs),
        "dnamta": am.DNAMTA(bcfg, rngs=rngs),
        "causalmta": am.CausalMTAPredictor(bcfg, rngs=rngs),
        "proxy_direct": am.ProxyDirect(bcfg, rngs=rngs),
    }


@pytest.mark.parametrize("j", [0, 2, L - 1])
def test_every_model_scores_a_deletion_as_the_journey_logged_without_the_touch(j):
    keep = np.arange(L)[None, :] != j
    batch, short = _batch_and_packed(keep)
    for name, model in _models().items():
        deleted = np.asarray(
            model(batch, jnp.asarray(np.broadcast_to(keep, batch.touch_mask.shape)))
        )
        np.testing.assert_allclose(deleted, np.asarray(model(short)), atol=2e-5, err_msg=name)


def test_deletion_uplift_reads_the_shorter_journey():
    """Both attribution entry points: uplift = g(full) minus g(journey logged without j)."""
    j = 1
    keep = np.arange(L)[None, :] != j
    batch, short = _batch_and_packed(keep)
    has_j = batch.touch_mask[:, j]
    alm = am.ALMMTA(CFG, rngs=nnx.Rngs(4))
    bcfg = am.BaselineConfig(CFG.vocab_sizes, d_x=CFG.d_x, max_len=L, channel_field=1, hidden=8)
    dnamta = am.DNAMTA(bcfg, rngs=nnx.Rngs(5))
    for model, uplift in (
        (alm, am.attribute(alm, batch).uplift),
        (dnamta, am.attribute_baseline(dnamta, batch)[0]),
    ):
        ref = np.asarray(jax.nn.sigmoid(model(batch)) - jax.nn.sigmoid(model(short)))
        np.testing.assert_allclose(np.asarray(uplift)[has_j, j], ref[has_j], atol=2e-5)
