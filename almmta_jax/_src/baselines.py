"""Baselines of the ALM-MTA evaluation (docs/almmta.md, *Baselines*), on the same journeys and the same loop.

* ``LogisticMTA``: logistic regression on x and bag-of-touches features.
* ``DNAMTA``: LSTM + time-decay attention + user context (Arava et al. 2018).
* ``CausalMTAPredictor`` with ``journey_balancing_weights``: CausalMTA-style
  back-door adjustment (journey reweighting + a gradient-reversal channel
  classifier; Yao et al. 2022).
* ``fit_dml`` (``dml.py``): DML-style R-learner residualization on cluster exposure counts.
* ``ProxyDirect``: the leaky "direct mediation observation" ablation, where the
  observed proxy y' replaces the learned mediator (no adversary).
* ``alm_mta_variant``: the ALM-MTA ablations that are configurations of
  ``TrainConfig`` (``"no_contrastive"``: β = 0; ``"lambda0"``: no reversal).

Every neural baseline maps ``(batch, keep)`` to outcome logits, is trained by
``make_baseline_train`` (the same optimizer builder as ALM-MTA and the same
training loop: batch order, ``lax.scan`` over epochs, non-finite guard) and is attributed by
``deletion_uplift``: ``Δ_ij = σ(f(t_i)) − σ(f(t_i ∖ τ_ij))``, as for ALM-MTA.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from almmta_jax._src import losses
from almmta_jax._src.adversary import gradient_reversal
from almmta_jax._src.data import JourneyBatch
from almmta_jax._src.deletion import deleted_time_features
from almmta_jax._src.fields import check_model_ids
from almmta_jax._src.fitting import fit_full_batch
from almmta_jax._src.networks import TouchEmbedding
from almmta_jax._src.optimizer import default_optimizer
from almmta_jax._src.train import TrainConfig, check_journeys
from drgrad_jax import loop

ALM_MTA_VARIANTS = ("full", "no_contrastive", "lambda0")

# --------------------------------------------------------------- configuration


@dataclasses.dataclass(frozen=True)
class BaselineConfig:
    """Sizes and training hyperparameters shared by the neural baselines.

    Attributes:
      vocab_sizes: ids per column of ``touch_ids``.
      d_x: width of ``x``.
      max_len: padded journey length ``L``.
      channel_field: the ``touch_ids`` column that is the channel / treatment
        cluster (simulator: 1, the item cluster; Criteo: 0, the campaign).
      num_users: rows of a user-id embedding (0: none).
      hidden: LSTM / MLP width.
      embed_dim: touch id embedding width.
      decay_hours: recency scale of the bag-of-touches features
        ``ρ = exp(-hours_to_end / decay_hours)``.
      optimizer: the optax optimizer, or ``None`` for ``default_optimizer``
        built from the four fields below (as ALM-MTA), its warm-up capped at a
        tenth of the run.
      learning_rate, weight_decay, clip_norm, lr_warmup_steps: the default
        optimizer ``clip_by_global_norm → adamw`` with a linear warm-up
        (capped at a tenth of the run, ``default_optimizer``).
      batch_size, num_epochs: the loop.
      grl_weight: gradient-reversal weight of the CausalMTA channel classifier.
      channel_loss_weight: γ, weight of the channel-classification loss
        (CausalMTA: γ = δ = 0.5, with δ the outcome weight).
      progress: show a progress bar (steps, loss, ETA), as ``TrainConfig.progress``.
    """

    vocab_sizes: tuple[int, ...]
    d_x: int
    max_len: int
    channel_field: int = 0
    num_users: int = 0
    hidden: int = 64
    embed_dim: int = 16
    decay_hours: float = 48.0
    optimizer: optax.GradientTransformation | None = None
    learning_rate: float = 1e-3
    weight_decay: float = 1e-5
    clip_norm: float = 5.0
    lr_warmup_steps: int = 100
    batch_size: int = 512
    num_epochs: int = 10
    grl_weight: float = 1.0
    channel_loss_weight: float = 0.5
    progress: bool | None = None

    def __post_init__(self):
        if not self.vocab_sizes or any(int(v) < 1 for v in self.vocab_sizes):
            raise ValueError(f"vocab_sizes must be positive ints, got {self.vocab_sizes!r}.")
        if not 0 <= self.channel_field < len(self.vocab_sizes):
            raise ValueError(
                f"channel_field must index vocab_sizes (len {len(self.vocab_sizes)}), got "
                f"{self.channel_field}."
            )
        for name in ("d_x", "max_len", "hidden", "embed_dim", "batch_size", "num_epochs"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}.")
        if self.learning_rate <= 0 or self.clip_norm <= 0 or self.decay_hours <= 0:
            raise ValueError("learning_rate, clip_norm and decay_hours must be > 0.")

    @property
    def num_channels(self) -> int:
        """Number of channels (treatment clusters)."""
        return int(self.vocab_sizes[self.channel_field])


def _check_batch(batch: JourneyBatch, config: BaselineConfig) -> None:
    if not isinstance(batch, JourneyBatch):
        raise TypeError(f"batch must be a JourneyBatch, got {type(batch).__name__}.")
    b, l, f = jnp.shape(batch.touch_ids)
    if (l, f) != (config.max_len, len(config.vocab_sizes)):
        raise ValueError(
            f"touch_ids has shape {(b, l, f)}; expected [B, max_len={config.max_len}, "
            f"F={len(config.vocab_sizes)}]."
        )
    if jnp.shape(batch.x) != (b, config.d_x):
        raise ValueError(f"x has shape {jnp.shape(batch.x)}; expected [B={b}, d_x={config.d_x}].")


def _keep(batch: JourneyBatch, keep):
    """``(batch, kept mask)``; with a ``keep``, the batch's time features are those of the
    journeys as logged without the deleted touches (docs/almmta.md, *Deleted journeys*)."""
    if keep is None:
        return batch, batch.touch_mask
    k = jnp.logical_and(batch.touch_mask, keep)
    return batch._replace(tfeat=deleted_time_features(batch.tfeat, batch.touch_mask, k)), k


def recency(batch: JourneyBatch, decay_hours: float) -> jax.Array:
    """``ρ_j = exp(-hours_to_end_j / decay_hours)`` from ``tfeat[..., 0] = log1p(hours)``."""
    return jnp.exp(-jnp.expm1(batch.tfeat[..., 0]) / decay_hours)


# ---------------------------------------------------------------- shared parts


class _User(nnx.Module):
    """``s = ELU(Dense(x ⊕ user-id embedding))``."""

    def __init__(self, config: BaselineConfig, *, rngs: nnx.Rngs):
        extra = 5 if config.num_users else 0
        self.user = nnx.Embed(config.num_users, 5, rngs=rngs) if config.num_users else None
        self.dense = nnx.Linear(config.d_x + extra, config.hidden, rngs=rngs)

    def __call__(self, batch: JourneyBatch) -> jax.Array:
        x = batch.x.astype(jnp.float32)
        if self.user is not None:
            x = jnp.concatenate([x, self.user(batch.user_id)], axis=-1)
        return jax.nn.elu(self.dense(x))


def _masked_lstm(cell, e: jax.Array, keep: jax.Array, hidden: int, reverse: bool = False):
    """LSTM over time where a deleted / padded step carries the state through unchanged."""
    b = e.shape[0]
    carry0 = (jnp.zeros((b, hidden), e.dtype), jnp.zeros((b, hidden), e.dtype))
    xs = (jnp.swapaxes(e, 0, 1), jnp.swapaxes(keep, 0, 1))

    def step(carry, inp):
        x_t, k_t = inp
        new, _ = cell(carry, x_t)
        carry = jax.tree.map(lambda n, o: jnp.where(k_t[:, None], n, o), new, carry)
        return carry, carry[1]

    _, hs = jax.lax.scan(step, carry0, xs, reverse=reverse)
    return jnp.swapaxes(hs, 0, 1)  # [B, L, H]


def _attend(scores: jax.Array, keep: jax.Array, values: jax.Array) -> jax.Array:
    scores = jnp.where(keep, scores, -1e9)
    w = jax.nn.softmax(scores, axis=-1) * keep
    return jnp.einsum("bl,blh->bh", w, values)


# ----------------------------------------------------------------------- models


class LogisticMTA(nnx.Module):
    """Logistic regression on ``x`` and bag-of-touches features (docs/almmta.md, *Baselines*, "LR").

    ``logit = wᵀ[x; n_c; Σ_{j: c_j = c} ρ_j] + b`` with ``n_c`` the number of kept
    touches of channel c and ``ρ`` the recency weight.

    Args:
      config: a ``BaselineConfig``.
      rngs: initialization ``nnx.Rngs``.
    """

    def __init__(self, config: BaselineConfig, *, rngs: nnx.Rngs):
        self.config = config
        self.linear = nnx.Linear(config.d_x + 2 * config.num_channels, 1, rngs=rngs)

    def features(self, batch: JourneyBatch, keep=None) -> jax.Array:
        """``[B, d_x + 2K]`` features of the kept touches."""
        c = self.config
        batch, k = _keep(batch, keep)
        k = k.astype(jnp.float32)
        one_hot = jax.nn.one_hot(batch.touch_ids[..., c.channel_field], c.num_channels)
        counts = jnp.einsum("bl,blk->bk", k, one_hot)
        rec = jnp.einsum("bl,blk->bk", k * recency(batch, c.decay_hours), one_hot)
        return jnp.concatenate([batch.x.astype(jnp.float32), counts, rec], axis=-1)

    def __call__(self, batch: JourneyBatch, keep=None, *, dropout_key=None) -> jax.Array:
        del dropout_key
        return self.linear(self.features(batch, keep))[..., 0]

    def aux_loss(self, batch: JourneyBatch) -> jax.Array:
        del batch
        return jnp.zeros((), jnp.float32)


class DNAMTA(nnx.Module):
    """DNAMTA-style predictor: LSTM, time-decay attention, user context, ELU MLP (docs/almmta.md, *Baselines*).

    ``α_j ∝ exp(vᵀ tanh(W h_j) − softplus(δ) · log1p(hours_to_end_j))`` over
    kept touches; ``logit = MLP([Σ α_j h_j; s(x)])``.

    Args:
      config: a ``BaselineConfig``.
      rngs: initialization ``nnx.Rngs``.

    References:
      Arava et al., "Deep Neural Net with Attention for Multi-channel Multi-touch
      Attribution", AdKDD 2018, https://arxiv.org/abs/1809.02230.
    """

    def __init__(self, config: BaselineConfig, *, rngs: nnx.Rngs):
        h = config.hidden
        self.config = config
        self.embed = TouchEmbedding(config.vocab_sizes, config.embed_dim, rngs=rngs)
        self.user = _User(config, rngs=rngs)
        self.cell = nnx.OptimizedLSTMCell(config.embed_dim, h, rngs=rngs)
        self.att = nnx.Linear(h, h, rngs=rngs)
        self.att_v = nnx.Linear(h, 1, rngs=rngs)
        self.decay = nnx.Param(jnp.zeros((), jnp.float32))
        self.head1 = nnx.Linear(2 * h, h, rngs=rngs)
        self.head2 = nnx.Linear(h, 1, rngs=rngs)

    def __call__(self, batch: JourneyBatch, keep=None, *, dropout_key=None) -> jax.Array:
        del dropout_key
        batch, k = _keep(batch, keep)
        hs = _masked_lstm(
            self.cell, self.embed(batch.touch_ids, batch.tfeat), k, self.config.hidden
        )
        score = self.att_v(jnp.tanh(self.att(hs)))[..., 0]
        score = score - jax.nn.softplus(self.decay[...]) * batch.tfeat[..., 0]
        pooled = _attend(score, k, hs)
        z = jax.nn.elu(self.head1(jnp.concatenate([pooled, self.user(batch)], axis=-1)))
        return self.head2(z)[..., 0]

    def aux_loss(self, batch: JourneyBatch) -> jax.Array:
        del batch
        return jnp.zeros((), jnp.float32)


class CausalMTAPredictor(nnx.Module):
    """CausalMTA-style predictor with a gradient-reversal channel classifier (docs/almmta.md, *Baselines*).

    A bidirectional LSTM (directions summed) with attention queried by the
    forward state at the last kept touch, the user context, and an ELU MLP
    (48 × 2) give the outcome logit. A channel classifier reads the forward
    state *before* each touch (input shifted by one step) and predicts that
    touch's channel through a gradient-reversal layer: the encoder is pushed to
    forget what in the history predicts the next exposure (the dynamic
    confounding). The total loss is ``δ · Σ w_i BCE_i / Σ w_i + γ · CE_channel``
    with the journey weights ``w`` of ``journey_balancing_weights`` in ``ipw``.

    Args:
      config: a ``BaselineConfig`` (``grl_weight``, ``channel_loss_weight``).
      rngs: initialization ``nnx.Rngs``.

    References:
      Yao et al., "CausalMTA: Eliminating the User Confounding Bias for Causal
      Multi-touch Attribution", KDD 2022, https://arxiv.org/abs/2201.00689.
    """

    def __init__(self, config: BaselineConfig, *, rngs: nnx.Rngs):
        h = config.hidden
        self.config = config
        self.embed = TouchEmbedding(config.vocab_sizes, config.embed_dim, rngs=rngs)
        self.user = _User(config, rngs=rngs)
        self.fwd = nnx.OptimizedLSTMCell(config.embed_dim, h, rngs=rngs)
        self.bwd = nnx.OptimizedLSTMCell(config.embed_dim, h, rngs=rngs)
        self.query = nnx.Linear(h, h, rngs=rngs)
        self.fc1 = nnx.Linear(2 * h, 48, rngs=rngs)
        self.fc2 = nnx.Linear(48, 48, rngs=rngs)
        self.out = nnx.Linear(48, 1, rngs=rngs)
        self.channel = nnx.Linear(h, config.num_channels, rngs=rngs)

    def _states(self, batch, k):
        e = self.embed(batch.touch_ids, batch.tfeat)
        hf = _masked_lstm(self.fwd, e, k, self.config.hidden)
        hb = _masked_lstm(self.bwd, e, k, self.config.hidden, reverse=True)
        return hf, hf + hb

    def __call__(self, batch: JourneyBatch, keep=None, *, dropout_key=None) -> jax.Array:
        del dropout_key
        batch, k = _keep(batch, keep)
        hf, hs = self._states(batch, k)
        # The carried-through forward state at the last position is the last kept state.
        q = self.query(hf[:, -1, :])
        pooled = _attend(jnp.einsum("bh,blh->bl", q, hs), k, hs)
        z = jax.nn.elu(self.fc1(jnp.concatenate([pooled, self.user(batch)], axis=-1)))
        return self.out(jax.nn.elu(self.fc2(z)))[..., 0]

    def aux_loss(self, batch: JourneyBatch) -> jax.Array:
        """``γ · CE`` of each touch's channel from the reversed forward state before it."""
        c = self.config
        k = batch.touch_mask
        hf, _ = self._states(batch, k)
        prev = jnp.concatenate([jnp.zeros_like(hf[:, :1]), hf[:, :-1]], axis=1)  # start token
        logits = self.channel(gradient_reversal(prev, jnp.float32(c.grl_weight)))
        ce = optax.softmax_cross_entropy_with_integer_labels(
            logits, batch.touch_ids[..., c.channel_field]
        )
        m = k.astype(jnp.float32)
        return c.channel_loss_weight * jnp.sum(ce * m) / jnp.maximum(jnp.sum(m), 1.0)

    def outcome_weight(self) -> float:
        """δ = 1 − γ (CausalMTA: 0.5)."""
        return 1.0 - self.config.channel_loss_weight


class ProxyDirect(nnx.Module):
    """The leaky ablation: the observed proxy replaces the learned mediator (docs/almmta.md, *Baselines*).

    ``m = L^{-1/2} Σ_j keep_j · a_j · y'_j`` (a_j = σ(MLP(e_j)) per proxy channel),
    ``logit = MLP([m; z(t); s(x)])``, trained on ``L_y`` alone with no adversary.
    The proxy is 0 on journeys with y = 0, so evaluating it with y' available
    at test time reads the label: expect an inflated AUC and attributions that
    follow the proxy, not the causal effect.

    Args:
      config: a ``BaselineConfig``.
      num_proxy: proxy channels ``P``.
      rngs: initialization ``nnx.Rngs``.
    """

    def __init__(self, config: BaselineConfig, num_proxy: int = 1, *, rngs: nnx.Rngs):
        h, d = config.hidden, config.embed_dim
        self.config = config
        self.embed = TouchEmbedding(config.vocab_sizes, config.embed_dim, rngs=rngs)
        self.user = _User(config, rngs=rngs)
        self.gate = nnx.Linear(d, num_proxy, rngs=rngs)
        self.t_gate = nnx.Linear(d, 1, rngs=rngs)
        self.head1 = nnx.Linear(num_proxy + d + h, h, rngs=rngs)
        self.head2 = nnx.Linear(h, 1, rngs=rngs)

    def __call__(self, batch: JourneyBatch, keep=None, *, dropout_key=None) -> jax.Array:
        del dropout_key
        batch, k = _keep(batch, keep)
        k = k.astype(jnp.float32)
        e = self.embed(batch.touch_ids, batch.tfeat)
        scale = 1.0 / np.sqrt(self.config.max_len)
        a = jax.nn.sigmoid(self.gate(e))
        m = scale * jnp.einsum("bl,blp->bp", k, a * batch.yp)
        z = scale * jnp.einsum("bl,bld->bd", k * jax.nn.sigmoid(self.t_gate(e)[..., 0]), e)
        h = jax.nn.elu(self.head1(jnp.concatenate([m, z, self.user(batch)], axis=-1)))
        return self.head2(h)[..., 0]

    def aux_loss(self, batch: JourneyBatch) -> jax.Array:
        del batch
        return jnp.zeros((), jnp.float32)


# ------------------------------------------------------------------ the loop


class BaselineState(NamedTuple):
    """The state of a baseline run in the shared loop.

    Attributes:
      step: int32, steps taken (skipped ones included).
      params: the module's parameters (``nnx.State``).
      opt_state: the optimizer's state.
      data_key: ``uint32`` key data of the key that orders the batches.
      skipped: int32, steps skipped for a non-finite state or loss.
    """

    step: jax.Array
    params: Any
    opt_state: Any
    data_key: jax.Array
    skipped: jax.Array


class BaselineRun(NamedTuple):
    """A trained baseline: ``model()`` rebuilds the module; ``losses`` per epoch."""

    graphdef: Any
    params: Any
    losses: jax.Array

    def model(self) -> nnx.Module:
        """The trained module."""
        return nnx.merge(self.graphdef, self.params)


def _baseline_optimizer(config: BaselineConfig, total_steps: int) -> optax.GradientTransformation:
    if config.optimizer is not None:
        return config.optimizer
    return default_optimizer(
        config.learning_rate,
        warmup_steps=config.lr_warmup_steps,
        total_steps=total_steps,
        weight_decay=config.weight_decay,
        clip_norm=config.clip_norm,
    )


def make_baseline_train(
    model_fn: Callable[[nnx.Rngs], nnx.Module], config: BaselineConfig, data: JourneyBatch
) -> loop.Trainer:
    """The ``Trainer`` of a baseline module on ``data``, in the shared training loop.

    Each epoch visits ``N // batch_size`` batches in the loop's order (a
    function of the key and the epoch), under ``lax.scan``; each step
    minimizes the self-normalized IPW outcome loss ``Σ ipw_i BCE_i / Σ ipw_i``
    (``ipw`` ones for unweighted baselines) scaled by the module's
    ``outcome_weight()`` (1 by default) plus its ``aux_loss`` (0 by default),
    with the config's optimizer (default: ``default_optimizer``).

    Args:
      model_fn: ``rngs -> module`` with ``module(batch, keep) -> logits`` and
        ``module.aux_loss(batch)``.
      config: a ``BaselineConfig``.
      data: training journeys (``JourneyBatch`` of N >= batch_size journeys),
        validated once on the host like ``make_train``'s (``check_journeys``:
        values, and ids against ``config.vocab_sizes`` / ``num_users``);
        ``Trainer.step`` checks a streamed batch's ids the same way.

    Returns:
      A ``drgrad_jax.loop.Trainer``: ``trainer(key, data=None) -> BaselineRun``
      (jit it, or vmap it over keys with ``in_axes=(0, None)``). ``data``
      overrides the journeys given here (same shapes): passing them as an
      argument lets one compiled program train on several worlds.
      ``evaluate(state, batch)`` is the training loss on ``batch``.

    Example:
      >>> import jax, jax.numpy as jnp
      >>> from almmta_jax.testing import random_journeys
      >>> from almmta_jax._src.networks import ModelConfig
      >>> data = random_journeys(jax.random.key(0), 16, ModelConfig((5,), d_x=2, max_len=4))
      >>> cfg = BaselineConfig((5,), d_x=2, max_len=4, batch_size=8, num_epochs=2, hidden=8)
      >>> run = jax.jit(make_baseline_train(lambda r: LogisticMTA(cfg, rngs=r), cfg, data))(
      ...     jax.random.key(1))
      >>> run.losses.shape
      (2,)
    """
    if not isinstance(config, BaselineConfig):
        raise TypeError(f"config must be a BaselineConfig, got {type(config).__name__}.")
    _check_batch(data, config)
    check_journeys(data, config, "data")
    n = int(np.shape(data.y)[0])
    if n < config.batch_size:
        raise ValueError(f"data holds {n} journeys; fewer than batch_size={config.batch_size}.")
    tx = _baseline_optimizer(config, (n // config.batch_size) * config.num_epochs)
    graphdef = nnx.graphdef(nnx.eval_shape(lambda: model_fn(nnx.Rngs(0))))

    def loss_fn(params, batch):
        model = nnx.merge(graphdef, params)
        logit = model(batch)
        weight = model.outcome_weight() if hasattr(model, "outcome_weight") else 1.0
        return weight * losses.outcome_loss(logit, batch.y, batch.ipw) + model.aux_loss(batch)

    def init(key: jax.Array) -> BaselineState:
        init_key, order_key = jax.random.split(key)
        params = nnx.state(model_fn(nnx.Rngs(init_key)))
        zero = jnp.zeros((), jnp.int32)
        return BaselineState(zero, params, tx.init(params), jax.random.key_data(order_key), zero)

    def step(state: BaselineState, batch: JourneyBatch):
        loss, grads = jax.value_and_grad(loss_fn)(state.params, batch)
        updates, opt_state = tx.update(grads, state.opt_state, state.params)
        params = optax.apply_updates(state.params, updates)
        return state._replace(params=params, opt_state=opt_state), loss

    recipe = loop.Recipe(
        init=init,
        step=step,
        evaluate=lambda state, batch: () if batch is None else loss_fn(state.params, batch),
        order_key=lambda state: jax.random.wrap_key_data(state.data_key),
        record=lambda state, mean_loss, _: mean_loss,
        result=lambda state, history: BaselineRun(graphdef, state.params, history),
        unpack=lambda d: (d, None),
        check_batch=lambda batch: (
            check_model_ids(batch, config, "batch") if isinstance(batch, JourneyBatch) else None
        ),
        signature={
            "model": type(nnx.eval_shape(lambda: model_fn(nnx.Rngs(0)))).__name__,
            "baseline": loop.config_signature(config, exclude=("progress",)),
        },
        model=lambda state: nnx.merge(graphdef, state.params),
        fixed_length="the learning-rate warmup is capped at a tenth of total_steps",
    )
    return loop.Trainer(
        recipe,
        data,
        None,
        config=config,
        batch_size=config.batch_size,
        num_epochs=config.num_epochs,
        progress=loop.ProgressBar(
            (n // config.batch_size) * config.num_epochs,
            lambda loss: f"loss {float(loss):.4f}",
            name=type(nnx.eval_shape(lambda: model_fn(nnx.Rngs(0)))).__name__,
        )
        if loop.progress_enabled(config.progress)
        else None,
        name="almmta_jax baseline",
    )


def deletion_uplift(logit_fn: Callable, batch: JourneyBatch) -> tuple[jax.Array, jax.Array]:
    """Deletion uplift of every touch for any ``logit_fn(batch, keep) -> [B]``.

    ``Δ_ij = σ(f(t_i)) − σ(f(t_i ∖ τ_ij))`` on the probability scale, 0 at padded
    positions (the same estimand as ``almmta_jax.attribute``).

    Args:
      logit_fn: ``(batch, keep) -> [B]`` logits (a baseline module or ALM-MTA).
      batch: a ``JourneyBatch``.

    Returns:
      ``(uplift [B, L], prob [B])``.
    """
    mask = jnp.asarray(batch.touch_mask)
    l = mask.shape[1]
    p_full = jax.nn.sigmoid(logit_fn(batch, mask))

    def without(j):
        return jax.nn.sigmoid(logit_fn(batch, mask & (jnp.arange(l) != j)[None, :]))

    p_del = jax.lax.map(without, jnp.arange(l))  # [L, B]
    uplift = jnp.where(mask, p_full[:, None] - p_del.T, 0.0)
    return uplift, p_full


@functools.partial(jax.jit, static_argnums=0)
def _attribute_module(graphdef, params, batch):
    m = nnx.merge(graphdef, params)
    return deletion_uplift(lambda bb, k: m(bb, k), batch)


def attribute_baseline(model: nnx.Module, batch: JourneyBatch, chunk: int = 4096):
    """Jitted ``deletion_uplift`` of a trained baseline module, in chunks of journeys.

    Args:
      model: a baseline module (``model(batch, keep) -> logits``).
      batch: a ``JourneyBatch`` of NumPy or JAX arrays.
      chunk: journeys per jitted call.

    Returns:
      ``(uplift [N, L], prob [N])`` NumPy arrays.
    """
    if isinstance(model, nnx.Module):
        # One compiled program per model structure, shared by every trained copy.
        graphdef, params = nnx.split(model)
        run = functools.partial(_attribute_module, graphdef)
    else:  # a fitted pytree-free model such as DMLModel: closed over as constants
        params = None
        run = jax.jit(lambda p, b: deletion_uplift(lambda bb, k: model(bb, k), b))

    n = int(np.shape(batch.y)[0])
    size = min(chunk, n)
    ups, probs = [], []
    for s in range(0, n, size):
        # The last chunk repeats its final journey so every call has one shape.
        idx = np.minimum(np.arange(s, s + size), n - 1)
        part = jax.tree.map(lambda a, idx=idx: jnp.asarray(np.asarray(a)[idx]), batch)
        u, p = run(params, part)
        take = min(size, n - s)
        ups.append(np.asarray(u)[:take])
        probs.append(np.asarray(p)[:take])
    return np.concatenate(ups), np.concatenate(probs)


# ----------------------------------------------------- CausalMTA journey weights


def _d_logit(p, uu, cc):
    h = jnp.concatenate([uu, cc], axis=-1)
    for i, (w, b) in enumerate(p):
        h = h @ w + b[None, :]
        if i < len(p) - 1:
            h = jax.nn.elu(h)
    return h[..., 0]


@functools.partial(jax.jit, static_argnames=("hidden", "steps", "learning_rate"))
def _fit_balancer(u, c, key, *, hidden: int, steps: int, learning_rate: float):
    """Domain-classifier logits at the real pairs (one compiled program per shape)."""
    u = (u - u.mean(0)[None, :]) / (u.std(0)[None, :] + 1e-6)
    n = u.shape[0]
    sizes = [u.shape[1] + c.shape[1], hidden, hidden, hidden, 1]
    init_key, run_key = jax.random.split(key)
    keys = jax.random.split(init_key, len(sizes) - 1)
    params = [
        (jax.random.normal(k, (a, b)) * jnp.sqrt(1.0 / a), jnp.zeros((b,)))
        for k, a, b in zip(keys, sizes[:-1], sizes[1:], strict=True)
    ]

    def loss(p, k):
        shuffled = u[jax.random.permutation(k, n)]
        real = optax.sigmoid_binary_cross_entropy(_d_logit(p, u, c), 1.0)
        fake = optax.sigmoid_binary_cross_entropy(_d_logit(p, shuffled, c), 0.0)
        return jnp.mean(real) + jnp.mean(fake)

    params = fit_full_batch(loss, params, steps=steps, learning_rate=learning_rate, key=run_key)
    return _d_logit(params, u, c)


def journey_balancing_weights(
    user_features,
    channel_bags,
    key: jax.Array,
    *,
    hidden: int = 10,
    steps: int = 500,
    learning_rate: float = 1e-2,
    clip_percentiles: tuple[float, float] = (1.0, 99.0),
) -> np.ndarray:
    """CausalMTA-style journey reweighting by a domain classifier (docs/almmta.md, *Baselines*, step 1).

    A 4-layer MLP ``D`` (hidden 10) separates real pairs (user features u_i,
    channel summary C_i) from pairs whose user is shuffled, so that the
    shuffled pairs follow ``p(u) p(C)``. At a real pair the density ratio is
    ``w_i = p(u_i) p(C_i) / p(u_i, C_i) = (1 − D_i) / D_i``: reweighting by ``w``
    makes the journeys' channels independent of the user (the static
    confounder). Weights are clipped to percentiles and normalized to mean 1.

    Deviation: CausalMTA feeds the classifier the latent ``z`` of a VRAE over the
    channel sequence; here ``C`` is given directly (e.g. normalized channel
    counts), which removes the VRAE's own fitting error.

    Args:
      user_features: ``[N, d_u]`` user representation.
      channel_bags: ``[N, d_c]`` journey channel summary.
      key: PRNG key (initialization and shuffles).
      hidden: classifier width.
      steps: full-batch Adam steps (a fresh shuffle each step).
      learning_rate: Adam learning rate.
      clip_percentiles: clipping of the weights.

    Returns:
      ``[N]`` float32 weights with mean 1.
    """
    u = jnp.asarray(user_features, jnp.float32)
    c = jnp.asarray(channel_bags, jnp.float32)
    if u.ndim != 2 or c.ndim != 2 or u.shape[0] != c.shape[0]:
        raise ValueError(
            f"user_features [N, d_u] and channel_bags [N, d_c] must share N; got {u.shape}, "
            f"{c.shape}."
        )
    logit = _fit_balancer(u, c, key, hidden=hidden, steps=steps, learning_rate=learning_rate)
    w = np.asarray(jnp.exp(-logit), np.float64)  # (1 - D) / D
    lo, hi = np.percentile(w, clip_percentiles)
    w = np.clip(w, lo, hi)
    return (w / w.mean()).astype(np.float32)


def channel_bags(batch: JourneyBatch, channel_field: int, num_channels: int) -> np.ndarray:
    """``[N, K]`` normalized channel counts of each journey (its channel summary)."""
    ids = np.asarray(batch.touch_ids)[..., channel_field]
    mask = np.asarray(batch.touch_mask)
    one_hot = (ids[..., None] == np.arange(num_channels)) & mask[..., None]
    counts = one_hot.sum(1).astype(np.float32)
    return counts / np.maximum(counts.sum(1, keepdims=True), 1.0)


# ------------------------------------------------------------- ALM-MTA ablations


def alm_mta_variant(config: TrainConfig, variant: str) -> TrainConfig:
    """An ALM-MTA ablation as a ``TrainConfig`` (docs/almmta.md, *Baselines*).

    * ``"full"``: unchanged.
    * ``"no_contrastive"``: β = 0 (attribute with the whole reference pool,
      ``k = R``, in the explicit front-door mode).
    * ``"lambda0"``: λ_max = 0, the adversary trains but nothing is reversed:
      the non-leaky "no adversary" variant reported next to ``ProxyDirect``.

    Args:
      config: the full model's ``TrainConfig``.
      variant: one of ``ALM_MTA_VARIANTS``.

    Returns:
      A ``TrainConfig``.
    """
    if not isinstance(config, TrainConfig):
        raise TypeError(f"config must be a TrainConfig, got {type(config).__name__}.")
    if variant == "full":
        return config
    if variant == "no_contrastive":
        return dataclasses.replace(config, beta=0.0)
    if variant == "lambda0":
        return dataclasses.replace(config, lambda_max=0.0)
    raise ValueError(f"variant must be one of {ALM_MTA_VARIANTS}, got {variant!r}.")
