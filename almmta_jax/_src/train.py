"""Training ALM-MTA: one jitted min-max step for every player (notes §4.3 and §4.5).

The mediator branch and the adversary are updated in ONE jitted function:

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

import dataclasses
import os
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from almmta_jax._src import losses
from almmta_jax._src.data import JourneyBatch, validate_journeys
from almmta_jax._src.networks import (
    ALMMTA,
    ModelConfig,
    check_batch,
    check_targets,
    normalize,
)

MODES = ("grl", "simultaneous", "alternating")
GENERATOR_ADV_LOSSES = ("neg_bce", "confusion")
BALANCERS = ("none", "drgrad")
OPTIMIZERS = ("adamw", "sgd")
ADVERSARY = nnx.PathContains("discriminator")
SHARED_BACKBONE = ("touch_embed", "user_encoder", "encoder", "mediator_mlp")
"""θ_G subtrees read by both the outcome loss L_y and the proxy loss L_p (what
``balancer="drgrad"`` routes between the two heads)."""


# --- gradient reversal and the adversary schedule --------------------------------


@jax.custom_vjp
def gradient_reversal(x: Any, lam: jax.Array) -> Any:
    """``GRL_λ``: the identity forward, cotangent times ``−λ`` backward (Ganin et al., 2016).

    ``λ`` itself receives a zero cotangent, so a schedule feeding it is never
    differentiated.

    Args:
      x: any pytree of arrays.
      lam: scalar reversal weight ``λ >= 0``.

    Returns:
      ``x`` unchanged.

    Example:
      >>> import jax, jax.numpy as jnp
      >>> float(jax.grad(lambda v: 3.0 * gradient_reversal(v, jnp.float32(0.5)))(2.0))
      -1.5

    References:
      Ganin et al., "Domain-Adversarial Training of Neural Networks", JMLR 17, 2016,
      https://arxiv.org/abs/1505.07818.
    """
    del lam
    return x


def _grl_fwd(x, lam):
    return x, lam


def _grl_bwd(lam, g):
    return jax.tree.map(lambda t: (-lam * t).astype(t.dtype), g), jnp.zeros_like(lam)


gradient_reversal.defvjp(_grl_fwd, _grl_bwd)


def adversary_weight(
    step: jax.Array, lambda_max: float, warmup_steps: int, total_steps: int
) -> jax.Array:
    """The DANN ramp of the adversary weight λ_t after a warm-up (notes §4.5).

    ``λ_t = λ_max (2 / (1 + e^{−10 p_t}) − 1) 1[step >= warmup]`` with
    ``p_t = clip((step − warmup) / (total − warmup), 0, 1)``.

    Args:
      step: int step counter (traced is fine).
      lambda_max: ``λ_max``.
      warmup_steps: steps before reversal starts.
      total_steps: steps at which the ramp reaches ``λ_max (2/(1+e^{-10}) − 1)``.

    Returns:
      A float32 scalar.

    Example:
      >>> float(adversary_weight(5, 0.3, 10, 20))
      0.0
      >>> round(float(adversary_weight(20, 0.3, 10, 20)), 5)
      0.29997
    """
    step = jnp.asarray(step, jnp.float32)
    span = max(total_steps - warmup_steps, 1)
    p = jnp.clip((step - warmup_steps) / span, 0.0, 1.0)
    ramp = 2.0 / (1.0 + jnp.exp(-10.0 * p)) - 1.0
    return jnp.where(step >= warmup_steps, lambda_max * ramp, 0.0).astype(jnp.float32)


# --- DRGrad balancing of the two heads -------------------------------------------


def head_balancer() -> optax.GradientTransformationExtraArgs:
    """The DRGrad transformation routing the outcome and proxy heads' shared gradients.

    ``drgrad_jax.drgrad(mode="released_code")`` with ``"head:0"`` the outcome
    head's (L_y) and ``"head:1"`` the proxy head's (α L_p) view of the shared
    backbone; ``balance_heads`` builds those views.
    """
    from drgrad_jax import drgrad

    return drgrad({"head:0": "outcome", "head:1": "proxy"}, mode="released_code")


def balance_heads(task_grads, balancer_state, prefixes: tuple[str, ...] = SHARED_BACKBONE):
    """DRGrad balancing of L_y and α L_p on the shared backbone (notes §3, §4.3).

    ``task_grads`` are θ_G's per-term gradients with a leading axis of three
    rows: ``g_y = ∇L_y``, ``g_p = α ∇L_p`` and ``g_r`` (every other term: β L_cl
    and the adversarial term). On the shared backbone (``prefixes``) the two
    heads' gradients are routed by the released-code rule of DRGrad
    (``drgrad_jax.drgrad(mode="released_code")``), with c = cos(g_y, g_p) and
    s = the sum of a unit-normalized gradient's entries, all over the whole
    backbone::

        κ = 1 − 1{c <= 0} c,   w_yp = clip(s_y / s_p, 0.1, 5),   w_py = clip(s_p / s_y, 0.1, 5)
        g_shared = (g_y + w_yp κ g_p) + (g_p + w_py κ g_y) + g_r

    Every other leaf receives the plain sum ``g_y + g_p + g_r``. The result
    goes through the player's optimizer as before.

    Args:
      task_grads: θ_G-shaped pytree with leaves ``[3, *param_shape]``.
      balancer_state: the ``DRGradState`` of ``head_balancer()``.
      prefixes: ``/``-joined path prefixes of the shared backbone.

    Returns:
      ``(grads, balancer_state)``: θ_G-shaped gradients and the new state.

    Example:
      >>> import jax.numpy as jnp
      >>> g = {"encoder": jnp.array([[1.0, 0.0], [1.0, 1.0], [0.0, 0.0]]),
      ...      "head": jnp.array([[2.0], [0.0], [1.0]])}
      >>> out, _ = balance_heads(g, head_balancer().init(None), ("encoder",))
      >>> out["head"].tolist()  # not shared: the plain sum
      [3.0]
      >>> [round(v, 4) for v in out["encoder"].tolist()]  # w_yp = 1/√2, w_py = √2
      [4.1213, 1.7071]

    References:
      Liu, Miao, Xia, "Direct Routing Gradient (DRGrad): A Personalized
      Information Surgery for Multi-Task Learning (MTL) Recommendations",
      AAAI 2025, https://arxiv.org/abs/2510.09643 (rule of the released code,
      https://github.com/logwhistle/drgrad_for_aaai25).
    """
    from drgrad_jax._src import task_grads as tg

    leaves, treedef = jax.tree_util.tree_flatten(task_grads)
    for leaf in leaves:
        if jnp.ndim(leaf) < 1 or jnp.shape(leaf)[0] != 3:
            raise ValueError(
                f"task_grads leaves must be [3, *param_shape] (rows L_y, α L_p, rest); got "
                f"shape {jnp.shape(leaf)}."
            )
    shared = tg.match_prefix(tg.leaf_paths(task_grads), tuple(prefixes))
    if not shared:
        raise ValueError(f"no task_grads leaf lies under the shared prefixes {prefixes}.")
    zero = lambda g: jnp.zeros_like(g[0])
    views = {
        "outcome": [jnp.stack([leaves[i][0], zero(leaves[i])]) for i in shared],
        "proxy": [jnp.stack([zero(leaves[i]), leaves[i][1]]) for i in shared],
    }
    routed, balancer_state = head_balancer().update(views, balancer_state)
    out = [tg.sum_rows(g) for g in leaves]
    for n, i in enumerate(shared):
        out[i] = (routed["outcome"][n] + routed["proxy"][n] + leaves[i][2]).astype(leaves[i].dtype)
    return jax.tree_util.tree_unflatten(treedef, out), balancer_state


# --- configuration and state -----------------------------------------------------


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """Everything that defines an ALM-MTA training run (notes §4.3-§4.5).

    Attributes:
      model: the ``ModelConfig``.
      mode: ``"grl"``, ``"simultaneous"`` or ``"alternating"``.
      adversary_steps: inner adversary steps ``k`` of the two-player modes.
      generator_adv_loss: ``"neg_bce"`` (−L_adv) or ``"confusion"`` (BCE(D, 1/2)),
        the mediator's adversarial term in the two-player modes.
      alpha: proxy loss weight α.
      beta: contrastive loss weight β (0 switches the contrastive module off).
      lambda_max: final adversary weight λ_max (0 switches the reversal off;
        the adversary still trains, for its AUC).
      warmup_steps: steps before the reversal starts (``None``: one epoch).
      optimizer: ``"adamw"`` (default) or ``"sgd"`` (clipped SGD with the same
        decoupled weight decay), used by both players.
      learning_rate: peak learning rate (both players).
      lr_warmup_steps: linear learning-rate warm-up.
      weight_decay: AdamW weight decay (the "stability" L2).
      clip_norm: global-norm clipping of each player's gradient.
      batch_size: journeys per step.
      epochs: passes over the training data.
      temperature: InfoNCE temperature ``T_c``.
      queue_size: negative-queue length ``Q``.
      momentum: EMA momentum of the key encoder.
      proxy_on_negatives: also train ``y' = 0`` on journeys with ``y = 0`` (the
        leak the adversary must remove; off by default).
      balancer: ``"none"`` (fixed weights) or ``"drgrad"``: the released-code
        DRGrad rule between the outcome head (L_y) and the proxy head (α L_p) on
        the shared backbone's gradients (see ``balance_heads``); every other
        term and parameter keeps its plain gradient.
      eval_size: journeys of ``eval_data`` scored at the end of every epoch.
      skip_nonfinite: the ``Trainer``'s steps keep the previous state when the
        new one holds NaN/Inf (``keep_if_finite``): the step counter advances,
        the step's metrics show the non-finite loss, and parameters never
        become NaN. ``make_step`` itself stays unguarded.
    """

    model: ModelConfig
    mode: str = "grl"
    adversary_steps: int = 1
    generator_adv_loss: str = "neg_bce"
    alpha: float = 1.0
    beta: float = 0.1
    lambda_max: float = 0.3
    warmup_steps: int | None = None
    optimizer: str = "adamw"
    learning_rate: float = 1e-3
    lr_warmup_steps: int = 500
    weight_decay: float = 1e-5
    clip_norm: float = 5.0
    batch_size: int = 512
    epochs: int = 10
    temperature: float = 0.1
    queue_size: int = 4096
    momentum: float = 0.995
    proxy_on_negatives: bool = False
    balancer: str = "none"
    eval_size: int = 4096
    skip_nonfinite: bool = True

    def __post_init__(self):
        if not isinstance(self.model, ModelConfig):
            raise TypeError(f"model must be a ModelConfig, got {type(self.model).__name__}.")
        if self.mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {self.mode!r}.")
        if self.generator_adv_loss not in GENERATOR_ADV_LOSSES:
            raise ValueError(
                f"generator_adv_loss must be one of {GENERATOR_ADV_LOSSES}, got "
                f"{self.generator_adv_loss!r}."
            )
        if self.mode == "grl" and self.generator_adv_loss != "neg_bce":
            raise ValueError(
                "mode='grl' reverses the adversary's own loss; generator_adv_loss='confusion' needs a two-player mode."
            )
        if self.optimizer not in OPTIMIZERS:
            raise ValueError(f"optimizer must be one of {OPTIMIZERS}, got {self.optimizer!r}.")
        if self.balancer not in BALANCERS:
            raise ValueError(f"balancer must be one of {BALANCERS}, got {self.balancer!r}.")
        for name in ("adversary_steps", "batch_size", "epochs", "queue_size"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}.")
        for name in ("alpha", "beta", "lambda_max", "weight_decay"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}.")
        if not 0.0 <= self.momentum < 1.0:
            raise ValueError(f"momentum must be in [0, 1), got {self.momentum}.")
        if self.temperature <= 0 or self.learning_rate <= 0 or self.clip_norm <= 0:
            raise ValueError("temperature, learning_rate and clip_norm must be > 0.")


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


class EvalMetrics(NamedTuple):
    """Held-out metrics: AUCs of the outcome, proxy and adversary heads, contrastive accuracy."""

    outcome_auc: jax.Array
    proxy_auc: jax.Array
    adversary_auc: jax.Array
    contrastive_accuracy: jax.Array
    outcome_log_loss: jax.Array


class Trainer(NamedTuple):
    """The functions of one configured run (see ``make_trainer``).

    Attributes:
      init: ``init(key) -> TrainState``.
      step: ``step(state, batch) -> (state, StepMetrics)``, a plain ``jax.jit``.
      run_epochs: ``run_epochs(state, data, num_epochs) -> (state, (StepMetrics,
        EvalMetrics))`` with per-epoch means; resumes from ``state.step``.
      evaluate: ``evaluate(state, batch) -> EvalMetrics``.
      model: ``model(state) -> ALMMTA``, the trained network (evaluation use).
      train: ``train(key) -> (state, (StepMetrics, EvalMetrics))``, the whole run.
      steps_per_epoch: int.
      total_steps: int.
    """

    init: Callable
    step: Callable
    run_epochs: Callable
    evaluate: Callable
    model: Callable
    train: Callable
    steps_per_epoch: int
    total_steps: int


def _optimizer(config: TrainConfig) -> optax.GradientTransformation:
    warm = max(config.lr_warmup_steps, 1)
    peak = config.learning_rate
    # Linear warm-up that already moves on the first step: lr_t = peak min(1, (t+1)/warm).
    lr = lambda count: peak * jnp.minimum(1.0, (count + 1.0) / warm)
    if config.optimizer == "sgd":
        return optax.chain(
            optax.clip_by_global_norm(config.clip_norm),
            optax.add_decayed_weights(config.weight_decay),
            optax.sgd(lr),
        )
    return optax.chain(
        optax.clip_by_global_norm(config.clip_norm),
        optax.adamw(lr, weight_decay=config.weight_decay),
    )


def _positives(batch: JourneyBatch) -> jax.Array:
    """Contrastive positives: touches of uploaders with ``max_p y' >= 0.5``."""
    return batch.yp_mask & (jnp.max(batch.yp, axis=-1) >= 0.5)


class _Parts(NamedTuple):
    main: jax.Array  # L_y + α L_p + β L_cl
    mediator: jax.Array
    enc_e: jax.Array
    keep: jax.Array
    outcome: jax.Array
    proxy: jax.Array
    contrastive: jax.Array
    accuracy: jax.Array


def make_step(
    config: TrainConfig, graphdef, *, outcome_only: bool = False, player: str = "both"
) -> Callable:
    """The un-jitted min-max step ``step(state, batch, *, schedule, weights=None)``.

    Returns ``(state, StepMetrics)``. ``make_trainer`` jits it once (with
    ``schedule`` bound); it is exposed for tests, benchmarks and sweeps: a
    ``schedule`` closing over a traced λ_max and ``weights`` (``LossWeights``
    of traced arrays) let one compiled program vmap over hyperparameters. ``outcome_only=True`` gives the same backbone trained
    on ``L_y`` alone (no proxy, contrastive or adversary work), the cost baseline
    of the speed benchmark. ``player="adversary"`` / ``"generator"`` (two-player
    modes only) split the step into the two separately jitted calls of the
    naive alternating loop, the other baseline: the adversary call runs its own
    forward pass to get ``M̂`` and leaves the step counter alone; the generator
    call leaves θ_D unchanged.
    """
    if player not in ("both", "adversary", "generator"):
        raise ValueError(f"player must be 'both', 'adversary' or 'generator', got {player!r}.")
    if player != "both" and (config.mode == "grl" or outcome_only):
        raise ValueError("player='adversary'/'generator' needs a two-player mode, not 'grl'.")
    tx = _optimizer(config)
    mc = config.model
    balanced = config.balancer == "drgrad" and not outcome_only
    key_graphdef, disc_graphdef = _head_graphdefs(mc)

    def proxy_mask_fn(b, on_negatives):
        if isinstance(on_negatives, (bool, np.bool_)):
            return b.touch_mask if on_negatives else b.yp_mask
        return jnp.where(jnp.asarray(on_negatives, bool), b.touch_mask, b.yp_mask)

    def forward_parts(params, adv_params, state, batch, dropout_key, w) -> _Parts:
        model = nnx.merge(graphdef, adv_params, params)
        enc = model.encode(batch, dropout_key=dropout_key)
        logit = model.outcome_logit(enc.mediator, enc.treatment, enc.s)
        l_y = losses.outcome_loss(logit, batch.y, batch.ipw)
        zero = jnp.zeros((), jnp.float32)
        if outcome_only:
            return _Parts(l_y, enc.mediator, enc.e, enc.keep, l_y, zero, zero, zero)
        l_p = losses.proxy_loss(
            model.proxy_logits(enc.mediators), batch.yp, proxy_mask_fn(batch, w.proxy_on_negatives)
        )
        main = l_y + w.alpha * l_p
        l_cl, acc = zero, zero
        if config.beta > 0:
            l_cl, acc = losses.info_nce_loss(
                model.query(enc.mediator, enc.s),
                model.touch_keys(enc.e),
                _positives(batch),
                enc.keep,
                state.queue,
                state.queue_valid,
                config.temperature,
            )
            main = main + w.beta * l_cl
        return _Parts(main, enc.mediator, enc.e, enc.keep, l_y, l_p, l_cl, acc)

    def discriminate(adv_params, mediator):
        # The adversary alone, rebuilt from θ_D (θ_G is not needed to evaluate D).
        return nnx.merge(disc_graphdef, adv_params["discriminator"])(mediator)[..., 0]

    def step(
        state: TrainState, batch: JourneyBatch, *, schedule, weights: LossWeights | None = None
    ) -> tuple[TrainState, StepMetrics]:
        check_batch(batch, mc)
        check_targets(batch, mc)
        if weights is None:
            w = LossWeights(config.alpha, config.beta, config.proxy_on_negatives)
        elif not isinstance(weights, LossWeights):
            raise TypeError(f"weights must be a LossWeights, got {type(weights).__name__}.")
        else:
            w = weights
        lam = schedule(state.step)
        dropout_key = jax.random.fold_in(jax.random.fold_in(state.rng, 2), state.step)
        y = batch.y.astype(jnp.float32)
        # All-padding rows (a streamed last batch) do not train the adversary.
        real = jnp.any(batch.touch_mask, axis=1).astype(jnp.float32)
        balancer_state = state.balancer_state

        if outcome_only:

            def loss_fn(params):
                parts = forward_parts(params, state.adv_params, state, batch, dropout_key, w)
                return parts.main, parts

            grads, parts = jax.grad(loss_fn, has_aux=True)(state.params)
            adv_params, adv_opt_state = state.adv_params, state.adv_opt_state
            l_adv = jnp.zeros((), jnp.float32)
        elif config.mode == "grl" and balanced:

            def loss_terms(params, adv_params):
                parts = forward_parts(params, adv_params, state, batch, dropout_key, w)
                d_logit = discriminate(adv_params, gradient_reversal(parts.mediator, lam))
                l_adv = losses.adversary_loss(d_logit, y, real)
                rest = w.beta * parts.contrastive + l_adv
                terms = jnp.stack([parts.outcome, w.alpha * parts.proxy, rest])
                return terms, (parts, l_adv)

            _, vjp_fn, (parts, l_adv) = jax.vjp(
                loss_terms, state.params, state.adv_params, has_aux=True
            )
            # Three backward passes (one per term) as one vmapped VJP.
            task_grads, adv_task_grads = jax.vmap(vjp_fn)(jnp.eye(3, dtype=jnp.float32))
            adv_grads = jax.tree.map(lambda g: g[2], adv_task_grads)
            grads, balancer_state = balance_heads(task_grads, state.balancer_state)
            adv_updates, adv_opt_state = tx.update(adv_grads, state.adv_opt_state, state.adv_params)
            adv_params = optax.apply_updates(state.adv_params, adv_updates)
        elif config.mode == "grl":

            def loss_fn(params, adv_params):
                parts = forward_parts(params, adv_params, state, batch, dropout_key, w)
                d_logit = discriminate(adv_params, gradient_reversal(parts.mediator, lam))
                l_adv = losses.adversary_loss(d_logit, y, real)
                return parts.main + l_adv, (parts, l_adv)

            (grads, adv_grads), (parts, l_adv) = jax.grad(loss_fn, argnums=(0, 1), has_aux=True)(
                state.params, state.adv_params
            )
            adv_updates, adv_opt_state = tx.update(adv_grads, state.adv_opt_state, state.adv_params)
            adv_params = optax.apply_updates(state.adv_params, adv_updates)
        else:
            # One forward / backward through θ_G: the adversary's term enters as a
            # cotangent at M̂, computed against whichever adversary the mode asks for.
            def fwd(params):
                parts = forward_parts(params, state.adv_params, state, batch, dropout_key, w)
                if balanced:
                    terms = jnp.stack(
                        [parts.outcome, w.alpha * parts.proxy, w.beta * parts.contrastive]
                    )
                    return (terms, parts.mediator), parts
                return (parts.main, parts.mediator), parts

            if player == "adversary":
                parts = forward_parts(state.params, state.adv_params, state, batch, dropout_key, w)
                mediator = parts.mediator
            else:
                (_, mediator), vjp_fn, parts = jax.vjp(fwd, state.params, has_aux=True)
            mediator_sg = jax.lax.stop_gradient(mediator)

            def adv_loss(adv_params):
                return losses.adversary_loss(discriminate(adv_params, mediator_sg), y, real)

            l_adv = adv_loss(state.adv_params)

            def inner(_, carry):
                p, o = carry
                g = jax.grad(adv_loss)(p)
                u, o = tx.update(g, o, p)
                return optax.apply_updates(p, u), o

            if player == "generator":
                adv_params, adv_opt_state = state.adv_params, state.adv_opt_state
            else:
                adv_params, adv_opt_state = jax.lax.fori_loop(
                    0, config.adversary_steps, inner, (state.adv_params, state.adv_opt_state)
                )
            if player == "adversary":
                new_state = state._replace(adv_params=adv_params, adv_opt_state=adv_opt_state)
                return new_state, StepMetrics(
                    parts.outcome, parts.proxy, parts.contrastive, l_adv, parts.accuracy, lam
                )
            opponent = state.adv_params if config.mode == "simultaneous" else adv_params

            def generator_adv(m):
                d_logit = discriminate(opponent, m)
                if config.generator_adv_loss == "confusion":
                    return lam * losses.confusion_loss(d_logit, real)
                return -lam * losses.adversary_loss(d_logit, y, real)

            g_mediator = jax.grad(generator_adv)(mediator)
            if balanced:
                # Rows L_y, α L_p, and the rest (β L_cl plus the adversarial cotangent at M̂).
                eye = jnp.eye(3, dtype=parts.main.dtype)
                med_ct = jnp.stack([jnp.zeros_like(g_mediator)] * 2 + [g_mediator])
                (task_grads,) = jax.vmap(lambda t, m: vjp_fn((t, m)))(eye, med_ct)
                grads, balancer_state = balance_heads(task_grads, state.balancer_state)
            else:
                (grads,) = vjp_fn((jnp.ones((), parts.main.dtype), g_mediator))

        updates, opt_state = tx.update(grads, state.opt_state, state.params)
        params = optax.apply_updates(state.params, updates)
        key_ema, queue, queue_valid, queue_ptr = _momentum_and_queue(
            config, key_graphdef, state, params, parts, jax.random.fold_in(dropout_key, 7)
        )
        new_state = TrainState(
            step=state.step + 1,
            params=params,
            adv_params=adv_params,
            opt_state=opt_state,
            adv_opt_state=adv_opt_state,
            key_ema=key_ema,
            queue=queue,
            queue_valid=queue_valid,
            queue_ptr=queue_ptr,
            rng=state.rng,
            balancer_state=balancer_state,
        )
        metrics = StepMetrics(
            outcome_loss=parts.outcome,
            proxy_loss=parts.proxy,
            contrastive_loss=parts.contrastive,
            adversary_loss=l_adv,
            contrastive_accuracy=parts.accuracy,
            adversary_weight=lam,
        )
        return new_state, metrics

    return step


def _head_graphdefs(mc: ModelConfig):
    """Graphdefs of the key head and of the adversary, from an abstract model."""
    abstract = nnx.eval_shape(lambda: ALMMTA(mc, rngs=nnx.Rngs(0)))
    return nnx.graphdef(abstract.key_head), nnx.graphdef(abstract.discriminator)


def _momentum_and_queue(config, key_graphdef, state, params, parts, key):
    """EMA of the key head, then enqueue one momentum key per journey (ring buffer)."""
    if config.beta == 0:
        return state.key_ema, state.queue, state.queue_valid, state.queue_ptr
    m = config.momentum
    key_ema = jax.tree.map(lambda e, p: m * e + (1.0 - m) * p, state.key_ema, params["key_head"])
    e = jax.lax.stop_gradient(parts.enc_e)
    b, l, _ = e.shape
    # One random valid touch per journey.
    noise = jax.random.uniform(key, (b, l))
    pick = jnp.argmax(jnp.where(parts.keep, noise, -1.0), axis=1)
    has = jnp.any(parts.keep, axis=1)
    chosen = jnp.take_along_axis(e, pick[:, None, None], axis=1)[:, 0]
    new_keys = nnx.merge(key_graphdef, key_ema)(chosen)
    new_keys = normalize(new_keys)
    q = config.queue_size
    n = min(b, q)
    slots = jnp.mod(state.queue_ptr + jnp.arange(n, dtype=jnp.int32), q)
    queue = state.queue.at[slots].set(new_keys[:n].astype(state.queue.dtype))
    queue_valid = state.queue_valid.at[slots].set(has[:n])
    return key_ema, queue, queue_valid, jnp.mod(state.queue_ptr + n, q).astype(jnp.int32)


def split_model(model: ALMMTA):
    """Splits an ``ALMMTA`` into ``(graphdef, adv_params, params)`` once (θ_D, θ_G)."""
    graphdef, adv_params, params, rest = nnx.split(model, ADVERSARY, nnx.Param, ...)
    if jax.tree.leaves(rest):
        raise ValueError("ALMMTA holds non-parameter state; it cannot be trained functionally.")
    return graphdef, adv_params, params


def init_state(config: TrainConfig, key: jax.Array):
    """A fresh ``TrainState`` and the model's graphdef: ``(graphdef, state)``."""
    init_key, run_key = jax.random.split(key)
    model = ALMMTA(config.model, rngs=nnx.Rngs(init_key))
    graphdef, adv_params, params = split_model(model)
    tx = _optimizer(config)
    state = TrainState(
        step=jnp.zeros((), jnp.int32),
        params=params,
        adv_params=adv_params,
        opt_state=tx.init(params),
        adv_opt_state=tx.init(adv_params),
        key_ema=jax.tree.map(jnp.copy, params["key_head"]),
        queue=jnp.zeros((config.queue_size, config.model.d_contrast), jnp.float32),
        queue_valid=jnp.zeros((config.queue_size,), bool),
        queue_ptr=jnp.zeros((), jnp.int32),
        rng=run_key,
        balancer_state=head_balancer().init(params) if config.balancer == "drgrad" else None,
    )
    return graphdef, state


def _auc(labels, scores, weights=None):
    from drgrad_jax.metrics import auc

    return auc(labels, scores, weights)


def _log_loss(labels, logits):
    from drgrad_jax.metrics import log_loss

    return log_loss(labels, logits, from_logits=True)


def make_evaluate(config: TrainConfig, graphdef) -> Callable:
    """``evaluate(state, batch) -> EvalMetrics`` (evaluation mode, no dropout).

    The proxy AUC scores every uploader touch against ``y' >= 0.5`` (channel
    max); the adversary AUC is D's held-out AUC of ``y`` from ``M̂`` (about 0.5-0.6
    when the mediator does not leak the label).
    """

    def evaluate(state: TrainState, batch: JourneyBatch) -> EvalMetrics:
        model = nnx.merge(graphdef, state.adv_params, state.params)
        enc = model.encode(batch)
        logit = model.outcome_logit(enc.mediator, enc.treatment, enc.s)
        y = batch.y.astype(jnp.float32)
        d_logit = model.discriminate(enc.mediator)
        proxy = jnp.max(model.proxy_logits(enc.mediators), axis=-1).reshape(-1)
        proxy_label = (jnp.max(batch.yp, axis=-1) >= 0.5).reshape(-1).astype(jnp.float32)
        proxy_w = batch.yp_mask.reshape(-1).astype(jnp.float32)
        _, acc = losses.info_nce_loss(
            model.query(enc.mediator, enc.s),
            model.touch_keys(enc.e),
            _positives(batch),
            enc.keep,
            state.queue,
            state.queue_valid,
            config.temperature,
        )
        return EvalMetrics(
            outcome_auc=_auc(y, logit),
            proxy_auc=_auc(proxy_label, proxy, proxy_w),
            adversary_auc=_auc(y, d_logit),
            contrastive_accuracy=acc,
            outcome_log_loss=_log_loss(y, logit),
        )

    return evaluate


def keep_if_finite(old: TrainState, new: TrainState) -> TrainState:
    """``new`` if every floating leaf of it is finite, else ``old`` with ``new.step``.

    The guard of ``data_parallel_step(..., skip_nonfinite=True)``, usable after
    any ALM-MTA step (e.g. ``Trainer.step``): one fused reduction over the state
    and a select, no host round trip, so it runs under ``jit`` and ``lax.scan``.

    Args:
      old: the state before the step.
      new: the state the step produced.

    Returns:
      A ``TrainState``: ``new``, or ``old`` with its counter advanced to ``new.step``.

    Example:
      >>> import jax.numpy as jnp
      >>> from almmta_jax import TrainState
      >>> old = TrainState(jnp.int32(0), {"w": jnp.ones(2)}, {}, (), (), {}, jnp.zeros((1, 1)),
      ...                  jnp.zeros(1, bool), jnp.int32(0), jnp.zeros(2, jnp.uint32))
      >>> bad = old._replace(step=jnp.int32(1), params={"w": jnp.array([0.5, jnp.nan])})
      >>> out = keep_if_finite(old, bad)
      >>> int(out.step), out.params["w"].tolist()
      (1, [1.0, 1.0])
    """
    fields = ("params", "adv_params", "opt_state", "adv_opt_state", "key_ema", "queue")
    checks = [
        jnp.all(jnp.isfinite(leaf))
        for f in fields
        for leaf in jax.tree.leaves(getattr(new, f))
        if jnp.issubdtype(leaf.dtype, jnp.inexact)
    ]
    ok = jnp.all(jnp.stack(checks)) if checks else jnp.bool_(True)
    kept = {
        f: jax.tree.map(lambda a, b: jnp.where(ok, a, b), getattr(new, f), getattr(old, f))
        for f in (*fields, "queue_valid", "queue_ptr")
    }
    return new._replace(**kept)


def _check_data(data: JourneyBatch, config: TrainConfig, name: str) -> int:
    if not isinstance(data, JourneyBatch):
        raise TypeError(f"{name} must be a JourneyBatch, got {type(data).__name__}.")
    try:
        validate_journeys(data)
    except ValueError as e:
        raise ValueError(f"{name}: {e}") from None
    n = int(np.shape(data.y)[0])
    if n < config.batch_size:
        raise ValueError(f"{name} holds {n} journeys; fewer than batch_size={config.batch_size}.")
    return n


def make_trainer(
    config: TrainConfig, data: JourneyBatch, eval_data: JourneyBatch | None = None
) -> Trainer:
    """Builds the jitted functions of one ALM-MTA run on ``data``.

    Each epoch visits ``N // batch_size`` batches in an order drawn from the
    run's key and the epoch index, so a run resumed from a checkpoint continues
    bit-for-bit. At the end of every epoch the held-out metrics are computed on
    the first ``eval_size`` journeys of ``eval_data`` (or of ``data``).

    Args:
      config: a ``TrainConfig``.
      data: the training journeys as one ``JourneyBatch`` of N journeys.
      eval_data: held-out journeys for the per-epoch metrics.

    Returns:
      A ``Trainer``.
    """
    if not isinstance(config, TrainConfig):
        raise TypeError(f"config must be a TrainConfig, got {type(config).__name__}.")
    n = _check_data(data, config, "data")
    steps_per_epoch = n // config.batch_size
    total_steps = steps_per_epoch * config.epochs
    warmup = steps_per_epoch if config.warmup_steps is None else config.warmup_steps
    schedule = lambda step: adversary_weight(step, config.lambda_max, warmup, total_steps)
    graphdef = split_model(nnx.eval_shape(lambda: ALMMTA(config.model, rngs=nnx.Rngs(0))))[0]
    raw_step = make_step(config, graphdef)

    def step_fn(state, batch):
        new, metrics = raw_step(state, batch, schedule=schedule)
        return (keep_if_finite(state, new) if config.skip_nonfinite else new), metrics

    evaluate = make_evaluate(config, graphdef)
    eval_src = data if eval_data is None else eval_data
    m_eval = min(config.eval_size, int(np.shape(eval_src.y)[0]))
    eval_batch = jax.tree.map(lambda a: jnp.asarray(a)[:m_eval], eval_src)
    data = jax.tree.map(jnp.asarray, data)

    def init(key):
        return init_state(config, key)[1]

    def run_epochs(state, data, num_epochs: int):
        def epoch(state, _):
            ep = state.step // steps_per_epoch
            perm = jax.random.permutation(
                jax.random.fold_in(jax.random.fold_in(state.rng, 1), ep), n
            )
            order = perm[: steps_per_epoch * config.batch_size].reshape(
                steps_per_epoch, config.batch_size
            )

            def one(state, idx):
                batch = jax.tree.map(lambda a: a[idx], data)
                return step_fn(state, batch)

            state, ms = jax.lax.scan(one, state, order)
            return state, (jax.tree.map(jnp.mean, ms), evaluate(state, eval_batch))

        return jax.lax.scan(epoch, state, None, length=num_epochs)

    run_jit = jax.jit(run_epochs, static_argnums=2)

    def train(key):
        return run_epochs(init(key), data, config.epochs)

    def model_of(state) -> ALMMTA:
        return nnx.merge(graphdef, state.adv_params, state.params)

    return Trainer(
        init=init,
        step=jax.jit(step_fn),
        run_epochs=run_jit,
        evaluate=jax.jit(evaluate),
        model=model_of,
        train=train,
        steps_per_epoch=steps_per_epoch,
        total_steps=total_steps,
    )


def make_train(
    config: TrainConfig, data: JourneyBatch, eval_data: JourneyBatch | None = None
) -> Callable[[jax.Array], tuple[TrainState, tuple[StepMetrics, EvalMetrics]]]:
    """``make_train(config, data) -> train(key)``: a whole ALM-MTA run as a function of a key.

    ``jax.jit(jax.vmap(train))(keys)`` trains several seeds in one program;
    epochs run under ``lax.scan`` and every step is the jointly jitted min-max
    step (``make_step``).

    Args:
      config: a ``TrainConfig``.
      data: training journeys (``JourneyBatch`` of N journeys).
      eval_data: held-out journeys for the per-epoch metrics.

    Returns:
      ``train(key) -> (TrainState, (StepMetrics, EvalMetrics))``, metrics
      stacked over epochs (step metrics averaged within an epoch).

    Example:
      >>> import jax
      >>> from almmta_jax._src.networks import ModelConfig
      >>> cfg = TrainConfig(ModelConfig(vocab_sizes=(7,), d_x=2, max_len=3, d_model=8,
      ...                   num_heads=2, ffn_dim=8, d_mediator=4, d_contrast=4),
      ...                   batch_size=4, epochs=1, queue_size=8)
      >>> data = random_journeys(jax.random.key(0), 8, cfg.model)
      >>> state, (steps, evals) = jax.jit(make_train(cfg, data))(jax.random.key(1))
      >>> int(state.step), steps.outcome_loss.shape
      (2, (1,))

    References:
      Liu et al., "ALM-MTA: Front-Door Causal Multi-Touch Attribution Method for
      Creator-Ecosystem Optimization", ICLR 2026, https://arxiv.org/abs/2605.08881.
    """
    return make_trainer(config, data, eval_data).train


def random_journeys(key: jax.Array, n: int, config: ModelConfig, upload_rate: float = 0.3):
    """Random journeys shaped for ``config`` (tests, examples and speed benchmarks).

    Lengths are uniform in ``1..max_len``; ``y ~ Bern(upload_rate)``; proxy
    targets are uniform on uploaders and 0 elsewhere.
    """
    ks = jax.random.split(key, 8)
    l = config.max_len
    lengths = jax.random.randint(ks[0], (n,), 1, l + 1)
    mask = jnp.arange(l)[None, :] < lengths[:, None]
    ids = jnp.stack(
        [
            jax.random.randint(jax.random.fold_in(ks[1], i), (n, l), 0, v)
            for i, v in enumerate(config.vocab_sizes)
        ],
        axis=-1,
    )
    ids = jnp.where(mask[:, :, None], ids, 0).astype(jnp.int32)
    tfeat = jnp.where(mask[:, :, None], jax.random.uniform(ks[2], (n, l, 3)), 0.0)
    y = jax.random.bernoulli(ks[3], upload_rate, (n,)).astype(jnp.float32)
    yp_mask = mask & (y[:, None] > 0)
    yp = jnp.where(yp_mask[:, :, None], jax.random.uniform(ks[4], (n, l, config.num_proxy)), 0.0)
    return JourneyBatch(
        x=jax.random.normal(ks[5], (n, config.d_x)),
        user_id=jax.random.randint(ks[6], (n,), 0, max(config.num_users, 1)).astype(jnp.int32),
        touch_ids=ids,
        tfeat=tfeat.astype(jnp.float32),
        touch_mask=mask,
        y=y,
        yp=yp.astype(jnp.float32),
        yp_mask=yp_mask,
        ipw=jnp.ones((n,), jnp.float32),
    )


def save_checkpoint(path, state: TrainState) -> None:
    """Writes ``state`` to the directory ``path`` with orbax (blocking).

    The PRNG key is stored as its raw key data; ``restore_checkpoint`` wraps it back.
    """
    import orbax.checkpoint as ocp

    state = state._replace(rng=jax.random.key_data(state.rng))
    with ocp.StandardCheckpointer() as ckptr:
        ckptr.save(os.path.abspath(path), state)
        ckptr.wait_until_finished()


def _key_name(k) -> str:
    for attr in ("name", "key", "idx"):
        if hasattr(k, attr):
            return str(getattr(k, attr))
    return str(k)


def _dotted(path) -> str:
    return ".".join(_key_name(k) for k in path)


def restore_checkpoint(path, like: TrainState) -> TrainState:
    """Reads a ``TrainState`` saved by ``save_checkpoint``; ``like`` gives its structure.

    Resuming ``Trainer.run_epochs`` from the restored state continues the run
    exactly (same batches, dropout masks, λ_t and queue). The checkpoint's
    metadata is read first: one written by a run with another ``TrainConfig``
    (another model width, vocabulary, queue size, optimizer) raises one
    ``ValueError`` listing the arrays that differ (stored vs expected shape and
    dtype, arrays only on disk, arrays missing from disk). The state is
    restored with the shardings of ``like``.

    Args:
      path: a directory written by ``save_checkpoint``.
      like: a ``TrainState`` of the run to resume (e.g. ``Trainer.init(key)``);
        its values are ignored, its structure, shapes, dtypes and shardings used.

    Returns:
      The restored ``TrainState``.

    Raises:
      FileNotFoundError: no checkpoint at ``path``.
      TypeError: ``like`` is not a ``TrainState``.
      ValueError: the checkpoint does not fit ``like`` (the message lists how).
    """
    import orbax.checkpoint as ocp

    if not isinstance(like, TrainState):
        raise TypeError(f"like must be a TrainState, got {type(like).__name__}.")
    path = os.path.abspath(path)
    if not os.path.isdir(path):
        raise FileNotFoundError(f"no checkpoint directory at {path}.")
    with ocp.StandardCheckpointer() as ckptr:
        meta = ckptr.metadata(path)
    tree = getattr(meta, "item_metadata", meta)
    tree = getattr(tree, "tree", tree)
    stored = {
        m.name: (tuple(m.shape), np.dtype(m.dtype))
        for m in jax.tree.leaves(tree)
        if hasattr(m, "shape") and hasattr(m, "name")
    }
    target = like._replace(rng=jax.random.key_data(like.rng))
    expected = {
        _dotted(p): (tuple(np.shape(leaf)), np.dtype(leaf.dtype))
        for p, leaf in jax.tree_util.tree_leaves_with_path(target)
    }
    problems = [
        f"{name}: stored {stored[name][0]} {stored[name][1]}, expected {want[0]} {want[1]}"
        for name, want in expected.items()
        if name in stored and stored[name] != want
    ]
    only_disk = sorted(set(stored) - set(expected))
    missing = sorted(set(expected) - set(stored))
    if only_disk:
        problems.append(f"{len(only_disk)} arrays only in the checkpoint, e.g. {only_disk[:3]}")
    if missing:
        problems.append(f"{len(missing)} arrays missing from the checkpoint, e.g. {missing[:3]}")
    if problems:
        raise ValueError(
            f"checkpoint {path} was written by a run with a different configuration "
            f"(TrainConfig / ModelConfig) than `like`; {len(problems)} mismatches:\n  "
            + "\n  ".join(problems[:8])
        )
    abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, target)
    with ocp.StandardCheckpointer() as ckptr:
        restored = ckptr.restore(path, abstract)
    return restored._replace(rng=jax.random.wrap_key_data(restored.rng))
