"""``ModelConfig.post_outcome_fields``: post-outcome log columns feed the mediator branch only.

(docs/almmta.md, *Networks*.) Changing only such a column must move the encoder
output, the mediator and the outcome, and must leave the treatment summary z(t)
and the contrastive keys exactly as they were; without the flag (the default)
the column reaches z(t) too.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from almmta_jax import ALMMTA, ModelConfig
from almmta_jax.data import JourneyBatch

SIZES = dict(d_x=2, max_len=4, d_model=8, num_heads=2, ffn_dim=8, d_mediator=4, d_contrast=4)


def _batches():
    rng = np.random.default_rng(0)
    ids = rng.integers(0, 5, size=(3, 4, 3)).astype(np.int32)
    moved = ids.copy()
    moved[..., 2] = (ids[..., 2] + 1) % 5  # only the post-outcome column changes

    def batch(i):
        return JourneyBatch(
            jnp.asarray(rng.standard_normal((3, 2)), jnp.float32),
            jnp.zeros(3, jnp.int32),
            jnp.asarray(i),
            jnp.zeros((3, 4, 3)),
            jnp.ones((3, 4), bool),
            jnp.zeros(3),
            jnp.zeros((3, 4, 1)),
            jnp.zeros((3, 4), bool),
            jnp.ones(3),
        )

    a = batch(ids)
    return a, a._replace(touch_ids=jnp.asarray(moved))


@pytest.mark.parametrize("post", [(2,), ()])
def test_post_outcome_columns_bypass_the_treatment_summary(post):
    cfg = ModelConfig(vocab_sizes=(5, 5, 5), post_outcome_fields=post, **SIZES)
    model = ALMMTA(cfg, rngs=nnx.Rngs(0))
    a, b = _batches()
    ea, eb = model.encode(a), model.encode(b)
    assert not np.allclose(ea.h, eb.h) and not np.allclose(ea.mediator, eb.mediator)
    assert not np.allclose(model(a), model(b))
    if post:
        np.testing.assert_array_equal(ea.treatment, eb.treatment)
        np.testing.assert_array_equal(model.touch_keys(ea.e), model.touch_keys(eb.e))
    else:
        assert not np.allclose(ea.treatment, eb.treatment)


def test_post_outcome_fields_default_is_empty_and_bad_values_are_refused():
    assert ModelConfig(vocab_sizes=(5,), **SIZES).post_outcome_fields == ()
    for bad in [(3,), (-1,), (1, 1), (True,)]:
        with pytest.raises(ValueError, match="post_outcome_fields"):
            ModelConfig(vocab_sizes=(5, 5, 5), post_outcome_fields=bad, **SIZES)
    jax.clear_caches()
