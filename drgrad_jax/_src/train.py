"""A whole multi-task training run as one jittable function of a PRNG key.

``make_train(config, data)`` returns ``train(key)``: model initialization,
epochs under ``lax.scan`` with minibatches shuffled by the key, and evaluation
on the validation and test splits after every epoch. Because the run is a pure
function of the key, ``jax.jit(jax.vmap(train))(keys)`` trains several seeds in
one program.

The gradient step follows the per-task-gradient contract: per-task gradients
(in parameter space via ``per_task_grads`` or at the task representations via
``per_task_rep_grads``) go through the multi-task transform, whose one update
then goes through the optimizer, as ``optax.chain(mtl_transform, optimizer)``
would. Without a transform the step is the plain gradient of the summed loss.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from drgrad_jax._src import metrics, networks
from drgrad_jax._src.data import MultiTaskData, Split
from drgrad_jax._src.task_grads import per_task_grads, per_task_rep_grads
from drgrad_jax._src.transform import mixing_weights

SPACES = ("params", "activations")


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """Configuration of a multi-task training run (frozen: a run is a function of it).

    Attributes:
      model: ``model(rngs=nnx.Rngs(key)) -> nnx.Module`` returning per-task
        logits ``[B, K]`` from ``(cat, dense, user, mu=mu)``, e.g.
        ``functools.partial(models.MMoE, data.vocab_sizes, data.num_dense, 2)``.
      optimizer: the optax optimizer applied to the combined gradient.
      mtl_transform: a multi-task gradient transformation taking per-task
        gradients ``[K, ...]`` (DRGrad, PCGrad, ...), or ``None`` for the plain
        summed-loss gradient.
      space: ``"params"`` (per-task parameter gradients) or ``"activations"``
        (per-task gradients at the model's ``trunk`` representations, finished
        with one trunk VJP; needs ``mtl_transform``).
      batch_size: training minibatch size (the last partial batch of each
        epoch is dropped).
      num_epochs: passes over the training split.
      task_weights: loss weights ``alpha_k`` (default all 1).
      pos_weights: per-task weights of positive examples in the BCE (the
        released Census code uses 3.0 for income), default 1.
      use_task_of: label task-exclusive parameters (``networks.task_of``) so
        per-task gradients cost K backward passes through shared leaves only.
      shared_grads: ``"per_task"`` (default) or ``"summed"``: the ``shared``
        argument of ``per_task_grads``. ``"summed"`` costs one backward pass
        but only keeps the task SUM of shared leaves; use it only with
        transforms that never compare tasks on shared leaves (``drgrad`` in
        parameter space, ``linear_scalarization``).
      eval_batch_size: evaluation chunk size (bounds memory on large splits).
      log_every: print one line per seed every this many epochs (0: silent).
      name: prefix of the printed lines.
    """

    model: Callable[..., nnx.Module]
    optimizer: optax.GradientTransformation = dataclasses.field(
        default_factory=lambda: optax.adam(1e-3)
    )
    mtl_transform: optax.GradientTransformation | None = None
    space: str = "params"
    batch_size: int = 256
    num_epochs: int = 10
    task_weights: tuple[float, ...] | None = None
    pos_weights: tuple[float, ...] | None = None
    use_task_of: bool = True
    shared_grads: str = "per_task"
    eval_batch_size: int = 4096
    log_every: int = 0
    name: str = "train"


class TrainResult(NamedTuple):
    """What ``train(key)`` returns (with a leading seed axis under ``vmap``).

    Attributes:
      params: final parameters (a plain dict; ``nnx.merge(graphdef, params)``).
      train_loss: ``[E, K]`` mean training loss per epoch and task.
      val_auc, test_auc: ``[E, K]`` ROC AUC after each epoch.
      val_loss, test_loss: ``[E, K]`` log-loss after each epoch.
      mu: ``[E, 2]`` the DRGrad updater's (mu', mu'') after each epoch, NaN when
        no DRGrad state is in the optimizer.
    """

    params: Any
    train_loss: jax.Array
    val_auc: jax.Array
    test_auc: jax.Array
    val_loss: jax.Array
    test_loss: jax.Array
    mu: jax.Array


def device_splits(data: MultiTaskData) -> tuple[Split, Split, Split]:
    """The (train, val, test) splits as device arrays, without regression targets.

    Pass them as ``train(key, splits)`` (broadcast with ``in_axes=(0, None)``
    under ``vmap``) so the arrays are program inputs, not constants baked into
    the compiled program.
    """

    def put(s: Split) -> Split:
        return Split(
            jnp.asarray(s.cat, jnp.int32),
            jnp.asarray(s.dense, jnp.float32),
            jnp.asarray(s.labels, jnp.float32),
            None if s.user is None else jnp.asarray(s.user, jnp.int32),
            None,
        )

    return put(data.train), put(data.val), put(data.test)


def select_by_validation(result: TrainResult, task: int = 0):
    """Epoch with the best validation AUC on ``task`` and the test AUCs there.

    Works on a single run (``[E, K]``) or a seed batch (``[S, E, K]``).

    Returns:
      ``(epoch, test_auc)`` with ``epoch`` ``[...]`` int and ``test_auc`` ``[..., K]``.
    """
    val = jnp.nan_to_num(result.val_auc[..., task], nan=-1.0)
    epoch = jnp.argmax(val, axis=-1)
    test = jnp.take_along_axis(result.test_auc, epoch[..., None, None], axis=-2)[..., 0, :]
    return epoch, test


def _check_config(config: TrainConfig, data: MultiTaskData) -> None:
    if not isinstance(config, TrainConfig):
        raise TypeError(f"config must be a TrainConfig; got {type(config).__name__}.")
    if not isinstance(data, MultiTaskData):
        raise TypeError(f"data must be a MultiTaskData; got {type(data).__name__}.")
    if config.space not in SPACES:
        raise ValueError(f"config.space must be one of {SPACES}; got {config.space!r}.")
    if config.shared_grads not in ("per_task", "summed"):
        raise ValueError(
            f"config.shared_grads must be 'per_task' or 'summed'; got {config.shared_grads!r}."
        )
    if config.space == "activations" and config.mtl_transform is None:
        raise ValueError("config.space='activations' needs a config.mtl_transform.")
    for name in ("batch_size", "num_epochs", "eval_batch_size"):
        value = getattr(config, name)
        if int(value) != value or value < 1:
            raise ValueError(f"config.{name} must be a positive int; got {value!r}.")
    n_train = data.train.num_examples
    if config.batch_size > n_train:
        raise ValueError(
            f"config.batch_size={config.batch_size} exceeds the {n_train} training examples."
        )
    for name, split in (("train", data.train), ("val", data.val), ("test", data.test)):
        if split.num_examples == 0:
            raise ValueError(f"data.{name} is empty.")
    k = data.num_tasks
    for name in ("task_weights", "pos_weights"):
        value = getattr(config, name)
        if value is not None and len(value) != k:
            raise ValueError(
                f"config.{name} has {len(value)} entries; expected {k} (one per task)."
            )
    if config.log_every < 0:
        raise ValueError(f"config.log_every must be >= 0; got {config.log_every}.")


def make_train(config: TrainConfig, data: MultiTaskData) -> Callable[..., TrainResult]:
    """Builds ``train(key, splits=None) -> TrainResult``, a whole run as a function of a key.

    Each step draws a minibatch (a key-dependent permutation per epoch) and

    * ``mtl_transform is None``: ``g = grad(sum_k alpha_k L_k)``;
    * ``space="params"``: ``losses, G = per_task_grads(L, params, task_of=...)``,
      ``g, s = mtl_transform.update(G, s, params, losses=losses)``;
    * ``space="activations"``: per-task cotangents at ``model.trunk``'s
      representations go through ``mtl_transform`` and the result is pulled
      back through the trunk once (``RepGrads.finish``);

    then ``updates, s = optimizer.update(g, s, params)``. A model with a
    ``mu`` input (``SplitMMoE``) reads the DRGrad updater's weights from the
    optimizer state (``mixing_weights``) in every forward pass.

    Args:
      config: a ``TrainConfig``.
      data: a ``MultiTaskData``; its arrays are moved to the device once.

    Returns:
      ``train(key, splits=None)``. ``splits`` defaults to ``data``'s arrays
      (then constants of the compiled program); pass ``device_splits(data)``
      to make them inputs instead. ``jax.jit(jax.vmap(train))(keys)`` runs
      one seed per key.

    Raises:
      ValueError / TypeError: a bad config, or a model whose output is not
        ``[B, num_tasks]`` (checked here, before any compilation).

    Example:
      >>> import functools, jax, optax
      >>> from drgrad_jax import data, models
      >>> d = data.mmoe_synthetic(256, 128, 128, dim=8)
      >>> cfg = TrainConfig(functools.partial(models.MMoE, (), 8, 2, num_experts=2),
      ...                   optax.adam(1e-2), batch_size=64, num_epochs=2)
      >>> out = jax.jit(jax.vmap(make_train(cfg, d)))(jax.random.split(jax.random.key(0), 2))
      >>> out.val_auc.shape  # [seeds, epochs, tasks]
      (2, 2, 2)
    """
    _check_config(config, data)
    k = data.num_tasks
    default_splits = device_splits(data)
    abstract = nnx.eval_shape(lambda: config.model(rngs=nnx.Rngs(0)))
    graphdef, _ = nnx.split(abstract)
    probe = jax.tree.map(lambda a: None if a is None else a[:2], default_splits[0])
    out = jax.eval_shape(lambda: config.model(rngs=nnx.Rngs(0))(probe.cat, probe.dense, probe.user))
    if out.shape != (2, k):
        raise ValueError(
            f"the model returns logits of shape {out.shape} for a batch of 2; expected "
            f"(2, {k}) for the data's {k} tasks {data.task_names}."
        )
    if config.space == "activations" and not (
        hasattr(abstract, "trunk") and hasattr(abstract, "heads")
    ):
        raise ValueError("config.space='activations' needs a model with trunk() and heads().")
    labels_of = None
    if config.mtl_transform is not None and config.space == "params" and config.use_task_of:
        if hasattr(abstract, "task_owner"):
            labels_of = networks.task_of(abstract)
    alpha = jnp.asarray(config.task_weights or (1.0,) * k, jnp.float32)
    pos_w = jnp.asarray(config.pos_weights or (1.0,) * k, jnp.float32)
    mtl = (
        None
        if config.mtl_transform is None
        else optax.with_extra_args_support(config.mtl_transform)
    )
    # Only pass ``shared`` when asked, so the default works with any contract version.
    shared_kw = {} if config.shared_grads == "per_task" else {"shared": config.shared_grads}
    opt = config.optimizer
    batch_size = int(config.batch_size)
    n_train = data.train.num_examples
    n_batches = n_train // batch_size

    def model_of(params):
        return nnx.merge(graphdef, params)

    def task_losses(logits, labels):
        per = optax.sigmoid_binary_cross_entropy(logits, labels)
        per = per * (1.0 + (pos_w[None, :] - 1.0) * labels)
        return alpha * jnp.mean(per, axis=0)

    def loss_fn(params, batch, mu):
        logits = model_of(params)(batch.cat, batch.dense, batch.user, mu=mu)
        return task_losses(logits, batch.labels)

    def trunk_fn(params, batch, mu):
        del mu
        return model_of(params).trunk(batch.cat, batch.dense, batch.user)

    def heads_fn(params, reps, batch, mu):
        return task_losses(model_of(params).heads(reps, mu=mu), batch.labels)

    def step(params, state, batch):
        mtl_state, opt_state = state
        mu = mixing_weights(state)
        if mtl is None:
            (_, losses), grads = jax.value_and_grad(
                lambda p: (jnp.sum(loss_fn(p, batch, mu)), loss_fn(p, batch, mu)), has_aux=True
            )(params)
        elif config.space == "params":
            losses, task_grads = per_task_grads(
                loss_fn, params, batch, mu, task_of=labels_of, **shared_kw
            )
            grads, mtl_state = mtl.update(task_grads, mtl_state, params, losses=losses)
        else:
            rep = per_task_rep_grads(trunk_fn, heads_fn, params, batch, mu)
            rep_update, mtl_state = mtl.update(
                rep.rep_task_grads, mtl_state, rep.reps, losses=rep.losses
            )
            grads, losses = rep.finish(rep_update), rep.losses
        updates, opt_state = opt.update(grads, opt_state, params)
        params = optax.apply_updates(params, updates)
        return params, (mtl_state, opt_state), losses

    def evaluate(params, state, split: Split):
        mu = mixing_weights(state)
        model = model_of(params)

        def one(row):
            row = jax.tree.map(lambda a: a[None], row)
            return model(row.cat, row.dense, row.user, mu=mu)[0]

        logits = jax.lax.map(one, split, batch_size=int(config.eval_batch_size))
        aucs = jax.vmap(metrics.auc, in_axes=(1, 1))(split.labels, logits)
        losses = jax.vmap(lambda y, z: metrics.log_loss(y, z, from_logits=True), in_axes=(1, 1))(
            split.labels, logits
        )
        return aucs, losses

    def log_line(epoch, train_loss, val_auc, test_auc, mu):
        epoch = int(epoch)
        if (epoch + 1) % config.log_every and epoch + 1 != config.num_epochs:
            return
        fmt = lambda xs: " ".join(f"{float(x):.4f}" for x in np.asarray(xs))
        mu_txt = "" if np.isnan(np.asarray(mu)).all() else f" mu {fmt(mu)}"
        print(
            f"[{config.name}] epoch {epoch + 1}/{config.num_epochs} loss {fmt(train_loss)} "
            f"val AUC {fmt(val_auc)} test AUC {fmt(test_auc)}{mu_txt}",
            flush=True,
        )

    def train(key: jax.Array, splits: tuple[Split, Split, Split] | None = None) -> TrainResult:
        train_split, val_split, test_split = default_splits if splits is None else splits
        init_key, data_key = jax.random.split(key)
        params = nnx.to_pure_dict(nnx.state(config.model(rngs=nnx.Rngs(init_key))))
        state = (None if mtl is None else mtl.init(params), opt.init(params))
        if mtl is not None and config.space == "activations":
            # The transform sees the representations, not the params.
            probe_batch = jax.tree.map(lambda a: a[:batch_size], train_split)
            reps = jax.eval_shape(trunk_fn, params, probe_batch, None)
            reps = jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), reps)
            state = (mtl.init(reps), state[1])

        def batch_step(carry, idx):
            params, state = carry
            batch = jax.tree.map(lambda a: a[idx], train_split)
            params, state, losses = step(params, state, batch)
            return (params, state), losses

        def epoch_step(carry, inputs):
            epoch, epoch_key = inputs
            perm = jax.random.permutation(epoch_key, n_train)[: n_batches * batch_size]
            carry, losses = jax.lax.scan(batch_step, carry, perm.reshape(n_batches, batch_size))
            params, state = carry
            val_auc, val_loss = evaluate(params, state, val_split)
            test_auc, test_loss = evaluate(params, state, test_split)
            mu = mixing_weights(state)
            mu = (
                jnp.full((2,), jnp.nan)
                if mu is None
                else jnp.asarray(mu, jnp.float32).reshape(-1)[:2]
            )
            train_loss = jnp.mean(losses, axis=0)
            if config.log_every:
                jax.debug.callback(log_line, epoch, train_loss, val_auc, test_auc, mu)
            return carry, (train_loss, val_auc, test_auc, val_loss, test_loss, mu)

        epochs = jnp.arange(config.num_epochs)
        keys = jax.random.split(data_key, config.num_epochs)
        (params, _), hist = jax.lax.scan(epoch_step, (params, state), (epochs, keys))
        return TrainResult(params, *hist)

    return train
