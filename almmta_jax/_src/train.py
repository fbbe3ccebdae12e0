"""Training ALM-MTA: the configuration and its wiring to the shared training loop.

``make_train(config, data)`` returns a ``drgrad_jax.loop.Trainer`` whose step is
the jointly jitted min-max step (``step.py``: the adversary, the contrastive
queue and the optional DRGrad head balancing in one function), whose
evaluation scores the held-out journeys after every epoch, and whose batch
order, non-finite guard, checkpoints and data parallelism are the loop's.
"""

from __future__ import annotations

import dataclasses
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from almmta_jax._src import losses
from almmta_jax._src.adversary import adversary_weight, split_model
from almmta_jax._src.balancing import head_balancer
from almmta_jax._src.contrastive import positives
from almmta_jax._src.data import JourneyBatch, as_numpy, validate_journeys
from almmta_jax._src.fields import check_model_ids
from almmta_jax._src.networks import ALMMTA, ModelConfig
from almmta_jax._src.optimizer import default_optimizer
from almmta_jax._src.parallel import state_sharding
from almmta_jax._src.step import TrainState, make_step
from drgrad_jax import domains, loop
from drgrad_jax.metrics import auc, log_loss

MODES = ("grl", "simultaneous", "alternating")
GENERATOR_ADV_LOSSES = ("neg_bce", "confusion")
BALANCERS = ("none", "drgrad")


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """Everything that defines an ALM-MTA training run (docs/almmta.md, *Losses and objective* to *Gradient reversal and the min-max step*).

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
      optimizer: the optax optimizer of both players (each player gets its
        own state), or ``None`` for ``default_optimizer`` built from the four
        fields below.
      learning_rate: peak learning rate of the default optimizer.
      lr_warmup_steps: linear learning-rate warm-up of the default optimizer,
        capped at a tenth of the planned run (``default_optimizer``).
      weight_decay: AdamW weight decay (the "stability" L2) of the default optimizer.
      clip_norm: global-norm clipping of each player's gradient (default optimizer).
      batch_size: journeys per step, or ``None`` (the default) for
        ``auto_batch_size`` of the training data: the paper's 512 on large
        data, smaller on a small data set so that an epoch has at least 25 steps.
      num_epochs: passes over the training data.
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
        new one holds NaN/Inf (``drgrad_jax.loop.keep_if_finite``): the step
        counter advances, ``state.skipped`` counts the step, the step's metrics
        show the non-finite loss, and parameters never become NaN.
        ``make_step`` itself stays unguarded.
      progress: show a progress bar (steps, outcome loss, held-out AUC, ETA) on
        standard error, updated once per epoch (or per ``Trainer.run`` call);
        ``None`` (default): on in an interactive session, off under pytest or
        with ``DRGRAD_PROGRESS=0`` (``drgrad_jax.loop.progress_enabled``).
    """

    model: ModelConfig
    mode: str = "grl"
    adversary_steps: int = 1
    generator_adv_loss: str = "neg_bce"
    alpha: float = 1.0
    beta: float = 0.1
    lambda_max: float = 0.3
    warmup_steps: int | None = None
    optimizer: optax.GradientTransformation | None = None
    learning_rate: float = 1e-3
    lr_warmup_steps: int = 500
    weight_decay: float = 1e-5
    clip_norm: float = 5.0
    batch_size: int | None = None
    num_epochs: int = 10
    temperature: float = 0.1
    queue_size: int = 4096
    momentum: float = 0.995
    proxy_on_negatives: bool = False
    balancer: str = "none"
    eval_size: int = 4096
    skip_nonfinite: bool = True
    progress: bool | None = None

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
        if self.optimizer is not None and not isinstance(
            self.optimizer, optax.GradientTransformation
        ):
            raise TypeError(
                "optimizer must be an optax.GradientTransformation or None, got "
                f"{type(self.optimizer).__name__}."
            )
        if self.balancer not in BALANCERS:
            raise ValueError(f"balancer must be one of {BALANCERS}, got {self.balancer!r}.")
        _check_fields(self)

    def resolved_optimizer(self, total_steps: int | None = None) -> optax.GradientTransformation:
        """``optimizer``, or ``default_optimizer`` from this config's fields when it is None.

        ``total_steps`` (the planned run length, which ``make_train`` passes)
        caps the default warm-up at a tenth of the run.
        """
        if self.optimizer is not None:
            return self.optimizer
        return default_optimizer(
            self.learning_rate,
            warmup_steps=self.lr_warmup_steps,
            total_steps=total_steps,
            weight_decay=self.weight_decay,
            clip_norm=self.clip_norm,
        )


_COUNTS = {"adversary_steps": 1, "batch_size": 1, "num_epochs": 1, "queue_size": 1}
_COUNTS.update({"lr_warmup_steps": 0, "warmup_steps": 0, "eval_size": 1})
# The float fields' domains; the rule (NaN, Inf and values beyond float32 outside) is
# drgrad_jax.domains', shared with the transformations' hyperparameters.
_FLOATS = {
    "alpha": domains.NON_NEGATIVE,
    "beta": domains.NON_NEGATIVE,
    "lambda_max": domains.NON_NEGATIVE,
    "weight_decay": domains.NON_NEGATIVE,
    "momentum": domains.UNIT_RIGHT_OPEN,
    "temperature": domains.POSITIVE,
    "learning_rate": domains.POSITIVE,
    "clip_norm": domains.POSITIVE,
}


def _check_fields(config: TrainConfig) -> None:
    """Counts are ints at or above their minimum; floats finite float32s in their domains."""
    for name, low in _COUNTS.items():
        value = getattr(config, name)
        if value is None and name in ("warmup_steps", "batch_size"):
            continue
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < low:
            raise ValueError(f"{name} must be an int >= {low}, got {value!r}.")
    for name, domain in _FLOATS.items():
        value = getattr(config, name)
        if isinstance(value, bool) or not isinstance(value, (int, float, np.number)):
            raise TypeError(f"{name} must be a number, got {type(value).__name__}.")
        domains.check("TrainConfig", name, value, domain)


class EvalMetrics(NamedTuple):
    """Held-out metrics: AUCs of the outcome, proxy and adversary heads, contrastive accuracy."""

    outcome_auc: jax.Array
    proxy_auc: jax.Array
    adversary_auc: jax.Array
    contrastive_accuracy: jax.Array
    outcome_log_loss: jax.Array


def init_state(config: TrainConfig, key: jax.Array):
    """A fresh ``TrainState`` and the model's graphdef: ``(graphdef, state)``."""
    init_key, run_key = jax.random.split(key)
    model = ALMMTA(config.model, rngs=nnx.Rngs(init_key))
    graphdef, adv_params, params = split_model(model)
    tx = config.resolved_optimizer()
    zero = jnp.zeros((), jnp.int32)
    state = TrainState(
        step=zero,
        params=params,
        adv_params=adv_params,
        opt_state=tx.init(params),
        adv_opt_state=tx.init(adv_params),
        key_ema=jax.tree.map(jnp.copy, params["key_head"]),
        queue=jnp.zeros((config.queue_size, config.model.d_contrast), jnp.float32),
        queue_valid=jnp.zeros((config.queue_size,), bool),
        queue_ptr=zero,
        rng=run_key,
        skipped=zero,
        balancer_state=head_balancer().init(params) if config.balancer == "drgrad" else None,
    )
    return graphdef, state


def make_evaluate(config: TrainConfig, graphdef):
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
            positives(batch),
            enc.keep,
            state.queue,
            state.queue_valid,
            config.temperature,
        )
        return EvalMetrics(
            outcome_auc=auc(y, logit),
            proxy_auc=auc(proxy_label, proxy, proxy_w),
            adversary_auc=auc(y, d_logit),
            contrastive_accuracy=acc,
            outcome_log_loss=log_loss(y, logit, from_logits=True),
        )

    return evaluate


def auto_batch_size(num_journeys: int, *, largest: int = 512, min_steps: int = 25) -> int:
    """The default batch size of ``make_train`` for ``num_journeys`` training journeys.

    The paper's batch of 512 journeys suits its 20k-user worlds; on a small
    data set it leaves a handful of steps per epoch and the run does not
    learn. The default is therefore the largest power of two that gives at
    least ``min_steps`` steps per epoch, between 32 and ``largest``, and never
    more than the data (docs/almmta.md, *Optimization defaults*).

    Args:
      num_journeys: N, the number of training journeys.
      largest: the cap (the paper's batch size).
      min_steps: the fewest steps per epoch wanted.

    Returns:
      The batch size, an int.

    Example:
      >>> auto_batch_size(1_600), auto_batch_size(16_000), auto_batch_size(10)
      (64, 512, 10)
    """
    if num_journeys < 1:
        raise ValueError(f"num_journeys must be >= 1, got {num_journeys}.")
    size = 32
    while size * 2 <= min(largest, num_journeys // min_steps):
        size *= 2
    return min(size, num_journeys)


def _progress_text(record) -> str:
    """The text beside the progress bar: the step losses, and the held-out AUC per epoch."""
    steps, evals = record if type(record) is tuple else (record, None)
    text = f"L_y {float(steps.outcome_loss):.4f} L_adv {float(steps.adversary_loss):.4f}"
    return text if evals is None else f"{text} AUC {float(evals.outcome_auc):.4f}"


def check_journeys(batch: JourneyBatch, model_config, name: str) -> None:
    """Validates journeys entering without a file, once, on the host.

    Concrete device arrays are copied to the host first, so journeys given as
    ``jax.Array`` s get the loaders' value checks (finite features, binary
    outcome, non-empty journeys, ids in range) as NumPy ones do; traced or
    not fully addressable arrays get the shape checks only.

    Args:
      batch: the journeys.
      model_config: what declares the vocabularies (``vocab_sizes``,
        ``num_users``, optional ``hash_buckets``): a ``ModelConfig`` or a
        ``BaselineConfig``.
      name: the argument's name, prefixed to every message.

    Raises:
      TypeError / ValueError: from ``validate_journeys`` and ``check_model_ids``.
    """
    if not isinstance(batch, JourneyBatch):
        raise TypeError(f"{name} must be a JourneyBatch, got {type(batch).__name__}.")
    leaves = [a for a in batch if a is not None]
    concrete = all(
        not isinstance(a, jax.core.Tracer)
        and (not isinstance(a, jax.Array) or a.is_fully_addressable)
        for a in leaves
    )
    host = as_numpy(batch) if concrete else batch
    try:
        validate_journeys(host)
    except ValueError as e:
        raise ValueError(f"{name}: {e}") from None
    check_model_ids(host, model_config, name)


def _check_data(data: JourneyBatch, config: TrainConfig, name: str) -> int:
    check_journeys(data, config.model, name)
    n = int(np.shape(data.y)[0])
    if config.batch_size is not None and n < config.batch_size:
        raise ValueError(f"{name} holds {n} journeys; fewer than batch_size={config.batch_size}.")
    return n


def make_train(
    config: TrainConfig,
    data: JourneyBatch,
    eval_data: JourneyBatch | None = None,
    *,
    mesh: jax.sharding.Mesh | None = None,
    shard_embeddings: bool = False,
) -> loop.Trainer:
    """Builds the ``Trainer`` of one ALM-MTA run on ``data``: ``trainer(key)`` is the whole run.

    Each epoch visits ``N // batch_size`` batches in the shared loop's order
    (a function of the run's key and the epoch), so a run resumed from a
    checkpoint continues bit for bit; every step is the jointly jitted min-max
    step (``make_step``) behind the loop's non-finite guard. At the end of
    every epoch the held-out metrics are computed on the first ``eval_size``
    journeys of ``eval_data`` (or of ``data``). ``jax.jit(jax.vmap(trainer))(keys)``
    trains several seeds in one program.

    The journeys (and ``eval_data``) are validated once on the host
    (``check_journeys``; device arrays are copied to the host for it), their ids
    against ``config.model``: touch ids below ``vocab_sizes`` for every field
    the model does not hash, user ids below ``num_users`` when it embeds them;
    ``Trainer.step`` applies the same id check to each streamed batch.

    With a ``mesh`` every step is data-parallel: the batch's journeys are split
    over the mesh's first axis and the state is placed by ``state_sharding``
    (replicated, or with the id embedding tables split along their vocabulary
    axis when ``shard_embeddings``); GSPMD adds the all-reduces.

    Args:
      config: a ``TrainConfig``.
      data: the training journeys as one ``JourneyBatch`` of N journeys.
      eval_data: held-out journeys for the per-epoch metrics.
      mesh: a ``jax.sharding.Mesh`` (``drgrad_jax.parallel.make_mesh``) or None.
      shard_embeddings: with a mesh, split the id embedding tables.

    Returns:
      A ``drgrad_jax.loop.Trainer`` on ``TrainState`` s: ``trainer(key)`` gives
      ``(TrainState, (StepMetrics, EvalMetrics))`` with the metrics stacked
      over epochs (step metrics averaged over an epoch's finite steps);
      ``step(state, batch) -> (state, StepMetrics)``; ``evaluate(state, batch)
      -> EvalMetrics``; ``run``, ``run_epochs``, ``save``, ``restore``, ``model``.

    Example:
      >>> import jax
      >>> from almmta_jax._src.networks import ModelConfig
      >>> from almmta_jax.testing import random_journeys
      >>> cfg = TrainConfig(ModelConfig(vocab_sizes=(7,), d_x=2, max_len=3, d_model=8,
      ...                   num_heads=2, ffn_dim=8, d_mediator=4, d_contrast=4),
      ...                   batch_size=4, num_epochs=1, queue_size=8)
      >>> data = random_journeys(jax.random.key(0), 8, cfg.model)
      >>> state, (steps, evals) = jax.jit(make_train(cfg, data))(jax.random.key(1))
      >>> int(state.step), steps.outcome_loss.shape
      (2, (1,))

    References:
      Liu et al., "ALM-MTA: Front-Door Causal Multi-Touch Attribution Method for
      Creator-Ecosystem Optimization", ICLR 2026, https://arxiv.org/abs/2605.08881.
    """
    if not isinstance(config, TrainConfig):
        raise TypeError(f"config must be a TrainConfig, got {type(config).__name__}.")
    n = _check_data(data, config, "data")
    if config.batch_size is None:
        config = dataclasses.replace(config, batch_size=auto_batch_size(n))
    steps_per_epoch = n // config.batch_size
    total_steps = steps_per_epoch * config.num_epochs
    warmup = steps_per_epoch if config.warmup_steps is None else config.warmup_steps
    schedule = lambda step: adversary_weight(step, config.lambda_max, warmup, total_steps)
    graphdef = split_model(nnx.eval_shape(lambda: ALMMTA(config.model, rngs=nnx.Rngs(0))))[0]
    raw_step = make_step(config, graphdef, config.resolved_optimizer(total_steps))
    eval_src = data if eval_data is None else eval_data
    if eval_data is not None:
        check_journeys(eval_data, config.model, "eval_data")
    m_eval = min(config.eval_size, int(np.shape(eval_src.y)[0]))
    eval_batch = jax.tree.map(lambda a: jnp.asarray(a)[:m_eval], eval_src)
    placement = lambda state, mesh: state_sharding(
        state, mesh, axis=mesh.axis_names[0], shard_embeddings=shard_embeddings
    )
    recipe = loop.Recipe(
        init=lambda key: init_state(config, key)[1],
        step=lambda state, batch: raw_step(state, batch, schedule=schedule),
        evaluate=make_evaluate(config, graphdef),
        order_key=lambda state: jax.random.fold_in(state.rng, 1),
        unpack=lambda d: (d, eval_batch),
        check_batch=lambda batch: (
            check_model_ids(batch, config.model, "batch")
            if isinstance(batch, JourneyBatch)
            else None
        ),
        state_sharding=placement,
        signature=loop.config_signature(
            config, exclude=("eval_size", "skip_nonfinite", "progress")
        ),
        model=lambda state: nnx.merge(graphdef, state.adv_params, state.params),
        fixed_length="the adversary weight ramps over total_steps",
    )
    return loop.Trainer(
        recipe,
        data,
        eval_batch,
        config=config,
        batch_size=config.batch_size,
        num_epochs=config.num_epochs,
        mesh=mesh,
        skip_nonfinite=config.skip_nonfinite,
        progress=loop.ProgressBar(total_steps, _progress_text, name="almmta")
        if loop.progress_enabled(config.progress)
        else None,
        name="almmta_jax",
    )
