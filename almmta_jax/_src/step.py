"""The ALM-MTA min-max step: every player updated in ONE jitted function (docs/almmta.md, *Losses and objective* and *Gradient reversal and the min-max step*).

The mediator branch and the adversary are updated together:

* ``mode="grl"``: one objective ``L_y + α L_p + β L_cl + BCE(D(GRL_λ(M̂)), y)`` and
  one gradient; the gradient-reversal edge ``GRL_λ`` hands ``+∇L_adv`` to the
  adversary θ_D and ``−λ ∇L_adv`` to everything upstream (θ_G);
* ``mode="simultaneous"``: two optimizers; ``k`` adversary steps on
  ``BCE(D(sg(M̂)), y)`` run under ``lax.fori_loop`` while θ_G descends
  ``L_y + α L_p + β L_cl − λ L_G^adv`` against the pre-update adversary (with
  ``k = 1`` this is the ``grl`` step with separate optimizers);
* ``mode="alternating"``: as ``simultaneous`` but θ_G plays against the
  post-update adversary.

The two parameter groups (θ_G, θ_D) are split once from the NNX model and
updated by their own optax chains: the ``optax.partition`` pattern written out,
so the two-player modes can step θ_D alone inside the loop. The same step also
moves the momentum key encoder, enqueues keys into the ring-buffer negative
queue and folds the step into the dropout key. λ_t is computed from the step
counter inside the step, so the function never recompiles.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from almmta_jax._src import losses
from almmta_jax._src.adversary import (
    adversary_graphdef,
    adversary_updates,
    discriminate,
    gradient_reversal,
)
from almmta_jax._src.balancing import balance_heads
from almmta_jax._src.contrastive import key_head_graphdef, momentum_and_queue, positives
from almmta_jax._src.data import JourneyBatch
from almmta_jax._src.networks import check_batch, check_targets


class TrainState(NamedTuple):
    """The whole state of a run, one pytree (checkpointable, vmappable over seeds).

    Attributes:
      step: int32 step counter (drives λ_t, the learning rate and the dropout key).
      params: θ_G, every parameter except the adversary's (``nnx.State``).
      adv_params: θ_D, the adversary's parameters (``nnx.State``).
      opt_state: optax state of θ_G's optimizer.
      adv_opt_state: optax state of θ_D's optimizer.
      key_ema: the momentum (EMA) copy of the contrastive key head.
      queue: ``[Q, d_c]`` ring buffer of momentum keys (the negatives).
      queue_valid: ``[Q]`` bool, filled slots.
      queue_ptr: int32 next slot to write.
      rng: the run's PRNG key (data order and dropout are folded from it).
      skipped: int32, steps the training loop skipped for a non-finite state.
      balancer_state: the ``DRGradState`` of ``balancer="drgrad"`` (its
        diagnostics hold the last step's head cosine and routing weights), else
        ``None``.
    """

    step: jax.Array
    params: Any
    adv_params: Any
    opt_state: Any
    adv_opt_state: Any
    key_ema: Any
    queue: jax.Array
    queue_valid: jax.Array
    queue_ptr: jax.Array
    rng: jax.Array
    skipped: jax.Array
    balancer_state: Any = None


class LossWeights(NamedTuple):
    """Loss weights a step may take as (traced) arrays instead of the config's constants.

    Passing them to ``make_step``'s step lets one compiled program ``jax.vmap``
    over a sweep of α, β and the proxy-on-negatives switch (one lane per
    setting); omitted, the step uses ``TrainConfig.alpha``, ``.beta`` and
    ``.proxy_on_negatives``. β only scales the contrastive term: the term is
    built when ``TrainConfig.beta > 0``.

    Attributes:
      alpha: proxy loss weight α.
      beta: contrastive loss weight β.
      proxy_on_negatives: bool (or a 0/1 array): also train ``y' = 0`` on
        journeys with ``y = 0``.
    """

    alpha: Any
    beta: Any
    proxy_on_negatives: Any


class StepMetrics(NamedTuple):
    """Scalars logged by every training step."""

    outcome_loss: jax.Array
    proxy_loss: jax.Array
    contrastive_loss: jax.Array
    adversary_loss: jax.Array
    contrastive_accuracy: jax.Array
    adversary_weight: jax.Array


class Parts(NamedTuple):
    """The forward pass of θ_G on a batch: the main objective and what the step reuses."""

    main: jax.Array  # L_y + α L_p + β L_cl
    mediator: jax.Array
    enc_e: jax.Array
    keep: jax.Array
    outcome: jax.Array
    proxy: jax.Array
    contrastive: jax.Array
    accuracy: jax.Array


def _proxy_mask(batch: JourneyBatch, on_negatives) -> jax.Array:
    if isinstance(on_negatives, (bool, np.bool_)):
        return batch.touch_mask if on_negatives else batch.yp_mask
    return jnp.where(jnp.asarray(on_negatives, bool), batch.touch_mask, batch.yp_mask)


def forward_parts(config, graphdef, params, adv_params, state, batch, dropout_key, w) -> Parts:
    """θ_G's forward pass: ``L_y``, ``L_p``, ``L_cl`` and the mediator ``M̂``."""
    model = nnx.merge(graphdef, adv_params, params)
    enc = model.encode(batch, dropout_key=dropout_key)
    logit = model.outcome_logit(enc.mediator, enc.treatment, enc.s)
    l_y = losses.outcome_loss(logit, batch.y, batch.ipw)
    l_p = losses.proxy_loss(
        model.proxy_logits(enc.mediators), batch.yp, _proxy_mask(batch, w.proxy_on_negatives)
    )
    main = l_y + w.alpha * l_p
    zero = jnp.zeros((), jnp.float32)
    l_cl, acc = zero, zero
    if config.beta > 0:
        l_cl, acc = losses.info_nce_loss(
            model.query(enc.mediator, enc.s),
            model.touch_keys(enc.e),
            positives(batch),
            enc.keep,
            state.queue,
            state.queue_valid,
            config.temperature,
        )
        main = main + w.beta * l_cl
    return Parts(main, enc.mediator, enc.e, enc.keep, l_y, l_p, l_cl, acc)


class _Ctx(NamedTuple):
    """What every branch of the step reads (one batch, one step)."""

    state: Any
    batch: JourneyBatch
    forward: Callable  # (params, adv_params) -> Parts
    disc: Callable  # (adv_params, mediator) -> logit
    lam: jax.Array
    y: jax.Array
    real: jax.Array
    weights: LossWeights


def _grl_grads(ctx: _Ctx, tx, balanced: bool):
    """``mode="grl"``: one objective, the adversary's loss through ``GRL_λ``."""
    state = ctx.state

    def terms(params, adv_params):
        parts = ctx.forward(params, adv_params)
        d_logit = ctx.disc(adv_params, gradient_reversal(parts.mediator, ctx.lam))
        l_adv = losses.adversary_loss(d_logit, ctx.y, ctx.real)
        if balanced:
            rest = ctx.weights.beta * parts.contrastive + l_adv
            return jnp.stack([parts.outcome, ctx.weights.alpha * parts.proxy, rest]), (parts, l_adv)
        return parts.main + l_adv, (parts, l_adv)

    balancer_state = state.balancer_state
    if balanced:
        _, vjp_fn, (parts, l_adv) = jax.vjp(terms, state.params, state.adv_params, has_aux=True)
        # Three backward passes (one per term) as one vmapped VJP.
        task_grads, adv_task_grads = jax.vmap(vjp_fn)(jnp.eye(3, dtype=jnp.float32))
        adv_grads = jax.tree.map(lambda g: g[2], adv_task_grads)
        grads, balancer_state = balance_heads(task_grads, state.balancer_state)
    else:
        (grads, adv_grads), (parts, l_adv) = jax.grad(terms, argnums=(0, 1), has_aux=True)(
            state.params, state.adv_params
        )
    adv_updates, adv_opt_state = tx.update(adv_grads, state.adv_opt_state, state.adv_params)
    adv_params = optax.apply_updates(state.adv_params, adv_updates)
    return grads, adv_params, adv_opt_state, parts, l_adv, balancer_state


def _two_player_grads(ctx: _Ctx, tx, config, balanced: bool):
    """``simultaneous`` / ``alternating``: θ_D steps under ``fori_loop``, θ_G one VJP."""
    state, w = ctx.state, ctx.weights

    # One forward / backward through θ_G: the adversary's term enters as a
    # cotangent at M̂, computed against whichever adversary the mode asks for.
    def fwd(params):
        parts = ctx.forward(params, state.adv_params)
        if balanced:
            terms = jnp.stack([parts.outcome, w.alpha * parts.proxy, w.beta * parts.contrastive])
            return (terms, parts.mediator), parts
        return (parts.main, parts.mediator), parts

    (_, mediator), vjp_fn, parts = jax.vjp(fwd, state.params, has_aux=True)
    mediator_sg = jax.lax.stop_gradient(mediator)
    adv_loss = lambda a: losses.adversary_loss(ctx.disc(a, mediator_sg), ctx.y, ctx.real)
    l_adv = adv_loss(state.adv_params)
    adv_params, adv_opt_state = adversary_updates(
        tx, state.adv_params, state.adv_opt_state, adv_loss, config.adversary_steps
    )
    opponent = state.adv_params if config.mode == "simultaneous" else adv_params

    def generator_adv(m):
        d_logit = ctx.disc(opponent, m)
        if config.generator_adv_loss == "confusion":
            return ctx.lam * losses.confusion_loss(d_logit, ctx.real)
        return -ctx.lam * losses.adversary_loss(d_logit, ctx.y, ctx.real)

    g_mediator = jax.grad(generator_adv)(mediator)
    balancer_state = state.balancer_state
    if balanced:
        # Rows L_y, α L_p, and the rest (β L_cl plus the adversarial cotangent at M̂).
        eye = jnp.eye(3, dtype=parts.main.dtype)
        med_ct = jnp.stack([jnp.zeros_like(g_mediator)] * 2 + [g_mediator])
        (task_grads,) = jax.vmap(lambda t, m: vjp_fn((t, m)))(eye, med_ct)
        grads, balancer_state = balance_heads(task_grads, state.balancer_state)
    else:
        (grads,) = vjp_fn((jnp.ones((), parts.main.dtype), g_mediator))
    return grads, adv_params, adv_opt_state, parts, l_adv, balancer_state


def make_step(config, graphdef, tx: optax.GradientTransformation | None = None) -> Callable:
    """The un-jitted min-max step ``step(state, batch, *, schedule, weights=None)``.

    Returns ``(state, StepMetrics)``. ``make_train`` runs it inside the shared
    loop (with ``schedule`` bound); a ``schedule`` closing over a traced λ_max
    and ``weights`` (``LossWeights`` of traced arrays) let one compiled program
    vmap over hyperparameters.

    Args:
      config: a ``TrainConfig``.
      graphdef: the model's graphdef (``split_model``).
      tx: the optimizer of both players (default: ``config``'s).
    """
    tx = config.resolved_optimizer() if tx is None else tx
    mc = config.model
    balanced = config.balancer == "drgrad"
    key_graphdef, disc_graphdef = key_head_graphdef(mc), adversary_graphdef(mc)
    disc = lambda adv_params, mediator: discriminate(disc_graphdef, adv_params, mediator)

    def step(state, batch: JourneyBatch, *, schedule, weights: LossWeights | None = None):
        check_batch(batch, mc)
        check_targets(batch, mc)
        if weights is None:
            weights = LossWeights(config.alpha, config.beta, config.proxy_on_negatives)
        elif not isinstance(weights, LossWeights):
            raise TypeError(f"weights must be a LossWeights, got {type(weights).__name__}.")
        dropout_key = jax.random.fold_in(jax.random.fold_in(state.rng, 2), state.step)
        ctx = _Ctx(
            state=state,
            batch=batch,
            forward=lambda p, a: forward_parts(
                config, graphdef, p, a, state, batch, dropout_key, weights
            ),
            disc=disc,
            lam=schedule(state.step),
            y=batch.y.astype(jnp.float32),
            # All-padding rows (a streamed last batch) do not train the adversary.
            real=jnp.any(batch.touch_mask, axis=1).astype(jnp.float32),
            weights=weights,
        )
        if config.mode == "grl":
            out = _grl_grads(ctx, tx, balanced)
        else:
            out = _two_player_grads(ctx, tx, config, balanced)
        grads, adv_params, adv_opt_state, parts, l_adv, balancer_state = out
        updates, opt_state = tx.update(grads, state.opt_state, state.params)
        params = optax.apply_updates(state.params, updates)
        key_ema, queue, queue_valid, queue_ptr = momentum_and_queue(
            config,
            key_graphdef,
            state,
            params,
            parts.enc_e,
            parts.keep,
            jax.random.fold_in(dropout_key, 7),
        )
        new_state = state._replace(
            step=state.step + 1,
            params=params,
            adv_params=adv_params,
            opt_state=opt_state,
            adv_opt_state=adv_opt_state,
            key_ema=key_ema,
            queue=queue,
            queue_valid=queue_valid,
            queue_ptr=queue_ptr,
            balancer_state=balancer_state,
        )
        metrics = StepMetrics(
            outcome_loss=parts.outcome,
            proxy_loss=parts.proxy,
            contrastive_loss=parts.contrastive,
            adversary_loss=l_adv,
            contrastive_accuracy=parts.accuracy,
            adversary_weight=ctx.lam,
        )
        return new_state, metrics

    return step
