"""Touchpoint attribution: deletion uplift and Monte-Carlo permutation Shapley.

See docs/almmta.md, *Attribution*.

``Δ_ij = g(x_i, t_i) − g(x_i, t_i ∖ τ_ij)`` on the probability scale, for every
touch of every journey in one vmapped call over the deleted position; padded
positions get 0. MC-Shapley evaluates ``g`` on nested masks of antithetic
permutation pairs. ``g`` is the front-door probability of ``frontdoor.py``
(``"ipw_simple"`` or ``"explicit"``) with the high-match set and its weights held
fixed at the full sequence's.
"""

from __future__ import annotations

import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp
from flax import nnx

from almmta_jax._src import frontdoor as fd
from almmta_jax._src.data import JourneyBatch
from almmta_jax._src.networks import check_batch, check_model

METHODS = ("deletion", "shapley")


class Attribution(NamedTuple):
    """Per-touchpoint credits of a batch of journeys.

    Attributes:
      uplift: ``[B, L]`` deletion uplift Δ (or Shapley value φ) on the probability
        scale; 0 at padded positions.
      logit_uplift: ``[B, L]`` the same on the logit scale (additivity checks).
      prob: ``[B]`` ``g`` of the full journeys.
      share: ``[B, L]`` ``max(uplift, 0)`` normalized to sum to one per journey
        (0 where no touch has positive credit), or ``None`` unless requested.
    """

    uplift: jax.Array
    logit_uplift: jax.Array
    prob: jax.Array
    share: jax.Array | None


def _logit(p):
    p = jnp.clip(p, 1e-7, 1.0 - 1e-7)
    return jnp.log(p) - jnp.log1p(-p)


def positive_shares(uplift: jax.Array, touch_mask: jax.Array) -> jax.Array:
    """``a_ij = max(Δ_ij, 0) / Σ_j max(Δ_ij, 0)`` (0 when the journey has no positive credit)."""
    pos = jnp.where(touch_mask, jnp.maximum(uplift, 0.0), 0.0)
    total = jnp.sum(pos, axis=-1, keepdims=True)
    return jnp.where(total > 0, pos / jnp.where(total > 0, total, 1.0), 0.0)


def _prob_fn(model, batch, frontdoor, pool, k, temperature, log_propensity, log_frequency):
    """``g(keep) -> [B]`` with any front-door set fixed at the full sequences."""
    if frontdoor == "ipw_simple":

        def prob(keep):
            enc = model.encode(batch, keep)
            return jax.nn.sigmoid(model.outcome_logit(enc.mediator, enc.treatment, enc.s))

        return prob
    full = model.encode(batch)
    query = model.query(full.mediator, full.s)
    if log_propensity is None:
        idx, pi = jax.vmap(lambda q: fd.high_match_set(q, pool, k, temperature=temperature))(query)
    else:
        idx, pi = jax.vmap(
            lambda q, lp: fd.high_match_set(
                q,
                pool,
                k,
                temperature=temperature,
                log_propensity=lp,
                log_frequency=log_frequency,
            )
        )(query, log_propensity)
    z_sel = pool.treatment[idx]  # [B, K, d]

    def prob(keep):
        enc = model.encode(batch, keep)
        m = jnp.broadcast_to(enc.mediator[:, None, :], (*z_sel.shape[:2], enc.mediator.shape[-1]))
        s = jnp.broadcast_to(enc.s[:, None, :], (*z_sel.shape[:2], enc.s.shape[-1]))
        probs = jax.nn.sigmoid(model.outcome_logit(m, z_sel, s))  # [B, K]
        return jax.vmap(fd.frontdoor_sum)(probs, pi)

    return prob


@functools.partial(
    jax.jit,
    static_argnames=(
        "graphdef",
        "method",
        "frontdoor",
        "k",
        "temperature",
        "num_permutations",
        "chunk_size",
    ),
)
def _attribute(
    graphdef,
    state,
    batch,
    pool,
    log_propensity,
    log_frequency,
    key,
    *,
    method,
    frontdoor,
    k,
    temperature,
    num_permutations,
    chunk_size,
):
    model = nnx.merge(graphdef, state)
    prob = _prob_fn(model, batch, frontdoor, pool, k, temperature, log_propensity, log_frequency)
    mask = batch.touch_mask
    b, l = mask.shape
    pos = jnp.arange(l)

    def many(keeps):  # [n, B, L] -> [n, B]
        if chunk_size is None:
            return jax.vmap(prob)(keeps)
        return jax.lax.map(prob, keeps, batch_size=chunk_size)

    p_full = prob(mask)
    if method == "deletion":
        keeps = mask[None, :, :] & (pos[:, None, None] != pos[None, None, :])  # [L(j), B, L]
        p_del = many(keeps).T  # [B, L]
        uplift = jnp.where(mask, p_full[:, None] - p_del, 0.0)
        logit_uplift = jnp.where(mask, _logit(p_full)[:, None] - _logit(p_del), 0.0)
        return uplift, logit_uplift, p_full
    # MC permutation Shapley with antithetic pairs.
    half = num_permutations // 2
    noise = jax.random.uniform(key, (half, b, l))
    noise = jnp.where(mask[None], noise, 2.0)  # padding sorts last
    rank = jnp.argsort(jnp.argsort(noise, axis=-1), axis=-1)  # [half, B, L]
    n_valid = jnp.sum(mask, axis=-1)
    rank_rev = jnp.where(mask[None], n_valid[None, :, None] - 1 - rank, rank)
    ranks = jnp.concatenate([rank, rank_rev], axis=0)  # [P, B, L]
    ks = jnp.arange(l + 1)
    nested = mask[None, None] & (ranks[:, None] < ks[None, :, None, None])  # [P, L+1, B, L]
    p_count = ranks.shape[0]
    g = many(nested.reshape(p_count * (l + 1), b, l)).reshape(p_count, l + 1, b)
    g = jnp.moveaxis(g, 2, 1)  # [P, B, L+1]
    after = jnp.take_along_axis(g, ranks + 1, axis=-1)
    before = jnp.take_along_axis(g, ranks, axis=-1)
    uplift = jnp.where(mask, jnp.mean(after - before, axis=0), 0.0)
    logit_uplift = jnp.where(mask, jnp.mean(_logit(after) - _logit(before), axis=0), 0.0)
    return uplift, logit_uplift, p_full


def attribute(
    model,
    batch: JourneyBatch,
    *,
    method: str = "deletion",
    normalize: bool = False,
    frontdoor: str = "ipw_simple",
    pool: fd.ReferencePool | None = None,
    k: int = 8,
    temperature: float = 0.1,
    log_propensity: jax.Array | None = None,
    log_frequency: jax.Array | None = None,
    num_permutations: int = 32,
    key: jax.Array | None = None,
    chunk_size: int | None = None,
) -> Attribution:
    """Per-touchpoint credit of every touch of every journey, in one jitted call.

    See docs/almmta.md, *Attribution*.

    Deletion (default)::

        Δ_ij = g(x_i, t_i) − g(x_i, t_i ∖ τ_ij)

    with the deleted position vmapped. MC permutation Shapley (``method="shapley"``)::

        φ_ij = mean_p [g(S^p_{rank_p(j)+1}) − g(S^p_{rank_p(j)})]

    over ``num_permutations`` permutations drawn as antithetic pairs; each
    permutation satisfies ``Σ_j φ_ij = g(t_i) − g(∅)``. Runs in evaluation mode
    (no dropout).

    Args:
      model: a trained ``ALMMTA`` module; from a ``Trainer``, pass
        ``trainer.model(state)`` (a ``Trainer`` or ``TrainState`` is refused
        with that advice).
      batch: a ``JourneyBatch`` (targets are not read).
      method: ``"deletion"`` or ``"shapley"``.
      normalize: also return per-journey shares of the positive credit.
      frontdoor: ``"ipw_simple"`` or ``"explicit"`` (needs ``pool``).
      pool: the ``ReferencePool`` of the explicit mode.
      k: size of the high-match set of the explicit mode.
      temperature: contrastive temperature ``T_c`` of the match score.
      log_propensity: ``[B, C]`` ``log ê(c | x_i)`` for propensity-weighted
        ``π`` (explicit mode); ``None`` means uniform ``π``.
      log_frequency: ``[C]`` ``log p̂(c)``, required with ``log_propensity``.
      num_permutations: Shapley permutations ``P`` (even).
      key: PRNG key of the Shapley permutations.
      chunk_size: evaluate the masks ``chunk_size`` at a time (``lax.map``)
        instead of all at once, to bound memory.

    Returns:
      An ``Attribution``.

    Example:
      >>> import jax
      >>> from flax import nnx
      >>> from almmta_jax._src.networks import ALMMTA, ModelConfig
      >>> from almmta_jax.testing import random_journeys
      >>> cfg = ModelConfig(vocab_sizes=(5,), d_x=2, max_len=4, d_model=8, num_heads=2,
      ...                   ffn_dim=8, d_mediator=4, d_contrast=4, num_layers=1)
      >>> model = ALMMTA(cfg, rngs=nnx.Rngs(0))
      >>> batch = random_journeys(jax.random.key(0), 3, cfg)
      >>> attribute(model, batch).uplift.shape
      (3, 4)

    References:
      Castro, Gómez & Tejada, "Polynomial calculation of the Shapley value based
      on sampling", Computers & Operations Research 36(5), 2009.
    """
    check_model(model, "attribute")
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}.")
    if frontdoor not in fd.FRONTDOOR_MODES:
        raise ValueError(f"frontdoor must be one of {fd.FRONTDOOR_MODES}, got {frontdoor!r}.")
    check_batch(batch, model.config)
    b = batch.touch_mask.shape[0]
    if frontdoor == "explicit":
        if not isinstance(pool, fd.ReferencePool):
            raise ValueError(
                "frontdoor='explicit' needs pool=ReferencePool (build_reference_pool)."
            )
        if log_propensity is not None and (
            jnp.ndim(log_propensity) != 2 or log_propensity.shape[0] != b
        ):
            raise ValueError(f"log_propensity must be [B={b}, C]; got {jnp.shape(log_propensity)}.")
    else:
        pool, log_propensity, log_frequency = None, None, None
    if method == "shapley":
        if num_permutations < 2 or num_permutations % 2:
            raise ValueError(f"num_permutations must be even and >= 2, got {num_permutations}.")
        if key is None:
            raise ValueError("method='shapley' needs a PRNG key (key=...).")
    else:
        key = None
    if chunk_size is not None and chunk_size < 1:
        raise ValueError(f"chunk_size must be >= 1 or None, got {chunk_size}.")
    graphdef, state = nnx.split(model)
    uplift, logit_uplift, prob = _attribute(
        graphdef,
        state,
        batch,
        pool,
        log_propensity,
        log_frequency,
        key,
        method=method,
        frontdoor=frontdoor,
        k=k,
        temperature=temperature,
        num_permutations=num_permutations,
        chunk_size=chunk_size,
    )
    share = positive_shares(uplift, batch.touch_mask) if normalize else None
    return Attribution(uplift, logit_uplift, prob, share)
