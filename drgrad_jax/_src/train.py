"""A whole multi-task training run as one jittable function of a PRNG key.

``make_train(config, data)`` returns a ``Trainer``; calling it, ``train(key)``,
runs model initialization, epochs under ``lax.scan`` with minibatches shuffled
by the key, and evaluation on the validation and test splits after every epoch.
Because the run is a pure function of the key, ``jax.jit(jax.vmap(train))(keys)``
trains several seeds in one program.

The same object also trains step by step (``init``, ``run``, ``step``,
``evaluate``), with the batch order a function of (key, step) so a run saved
with ``save`` after any step and resumed with ``restore`` finishes bit for bit
like an uninterrupted one, and data-parallel over a device mesh
(``make_train(config, data, mesh=parallel.make_mesh())``): the batch split over
the devices, parameters and optimizer state replicated, GSPMD adding the
gradient all-reduces.

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
from tqdm import tqdm

from drgrad_jax._src import loop, metrics, networks, progress
from drgrad_jax._src.data import MultiTaskData, Split
from drgrad_jax._src.domains import NON_NEGATIVE
from drgrad_jax._src.entry import batch_checker, check_data, check_ids, id_bounds
from drgrad_jax._src.representation import (
    check_shared_layer,
    representation,
    task_heads_name,
)
from drgrad_jax._src.shared_sum import check_summed_shared_grads
from drgrad_jax._src.task_grads import check_tasks_at_once, per_task_grads, per_task_rep_grads
from drgrad_jax._src.transform import mixing_weights, transform_space

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
      space: ``"params"`` (per-task parameter gradients), ``"activations"``
        (per-task gradients at a representation, finished with one trunk VJP;
        needs ``mtl_transform``) or ``None`` (default): a ``drgrad`` /
        ``drgrad_released`` transform's own space (``transform_space``; with
        ``SplitMMoE.drgrad_towers()`` that is ``"activations"``), else
        ``"params"``. An explicit space that contradicts a DRGrad
        transform's is refused. At ``"activations"`` a ``drgrad`` transform
        routes at the model's ``drgrad_trunk`` (v1, v_s) when it has one; every
        other transform acts at the model's shared representation, ``trunk``
        (MGDA-UB), which must hold a tensor read by more than one task (see
        docs/drgrad.md, *Shared representation*).
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
        parameter space, an equal-weight ``linear_scalarization`` or ``mean``).
        ``make_train`` refuses it with the library's other methods (PCGrad,
        MGDA, ...; docs/drgrad.md, *Using the transformations*).
      tasks_at_once: the ``tasks_at_once`` argument of ``per_task_grads``: how
        many tasks' backward passes through shared leaves run together as one
        vmap (``1``, the default: one after another, fastest on CPU; ``None``:
        all K at once). The gradients, and so the run, are the same
        (docs/drgrad.md, *Cost of the K backward passes*).
      eval_batch_size: evaluation chunk size (bounds memory on large splits).
      log_every: print one line per seed every this many epochs (0: silent).
      name: prefix of the printed lines and label of the progress bar.
      progress: show a progress bar (steps, loss, held-out AUC, ETA) on
        standard error, updated once per epoch (or per ``Trainer.run`` call);
        ``None`` (default): on in an interactive session, off under pytest or
        with ``DRGRAD_PROGRESS=0`` (``loop.progress_enabled``; docs/drgrad.md,
        *Progress*).
      skip_nonfinite: when a step's task losses or combined gradient hold a
        NaN/Inf, leave the parameters and optimizer state unchanged and count
        the step in ``TrainState.skipped`` / ``TrainResult.skipped`` instead of
        writing NaN into the parameters. A step with finite values is unchanged
        by this guard.
    """

    model: Callable[..., nnx.Module]
    optimizer: optax.GradientTransformation = dataclasses.field(
        default_factory=lambda: optax.adam(1e-3)
    )
    mtl_transform: optax.GradientTransformation | None = None
    space: str | None = None
    batch_size: int = 256
    num_epochs: int = 10
    task_weights: tuple[float, ...] | None = None
    pos_weights: tuple[float, ...] | None = None
    use_task_of: bool = True
    shared_grads: str = "per_task"
    tasks_at_once: int | None = 1
    eval_batch_size: int = 4096
    log_every: int = 0
    name: str = "train"
    skip_nonfinite: bool = True
    progress: bool | None = None


class TrainResult(NamedTuple):
    """What ``train(key)`` returns (with a leading seed axis under ``vmap``).

    Attributes:
      params: final parameters (a plain dict; ``nnx.merge(graphdef, params)``).
      train_loss: ``[E, K]`` mean training loss per epoch and task.
      val_auc, test_auc: ``[E, K]`` ROC AUC after each epoch.
      val_loss, test_loss: ``[E, K]`` log-loss after each epoch.
      mu: ``[E, 2]`` the DRGrad updater's (mu', mu'') after each epoch, NaN when
        no DRGrad state is in the optimizer.
      skipped: ``[E]`` int32, steps skipped so far for non-finite losses or
        gradients (``TrainConfig.skip_nonfinite``), after each epoch.
    """

    params: Any
    train_loss: jax.Array
    val_auc: jax.Array
    test_auc: jax.Array
    val_loss: jax.Array
    test_loss: jax.Array
    mu: jax.Array
    skipped: jax.Array


class TrainState(NamedTuple):
    """The state of a step-wise run (``Trainer.init`` / ``run`` / ``step``).

    Attributes:
      step: int32 scalar, optimizer steps taken (skipped ones included); the
        next batch is batch ``step % steps_per_epoch`` of epoch
        ``step // steps_per_epoch``.
      params: the parameters (a plain dict).
      opt_state: ``(mtl_state, optimizer_state)``.
      data_key: ``uint32`` key data (``jax.random.key_data``) of the key that
        orders the batches.
      skipped: int32 scalar, steps skipped for non-finite losses or gradients.
    """

    step: jax.Array
    params: Any
    opt_state: Any
    data_key: jax.Array
    skipped: jax.Array


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


def select_by_validation(
    result: TrainResult, rule: int | str | Callable[[jax.Array], jax.Array] = "mean"
):
    """The epoch with the best validation score under ``rule``, and the test AUCs there.

    A multi-task model chosen on one task's validation AUC can hide a seesaw
    (the other tasks at their worst), so the default scores an epoch by the
    mean of the tasks' validation AUCs. Tasks whose AUC is NaN (a single class
    in the split) are left out of the mean; an epoch with no finite score is
    never chosen over one with a score.

    Works on a single run (``[E, K]``) or a seed batch (``[S, E, K]``).

    Args:
      result: a ``TrainResult``.
      rule: ``"mean"`` (default): the mean validation AUC over tasks; an int
        ``k``: task ``k``'s validation AUC alone (e.g. a primary task); or a
        callable ``rule(val_auc[..., E, K]) -> score[..., E]``, higher is
        better.

    Returns:
      ``(epoch, test_auc)`` with ``epoch`` ``[...]`` int and ``test_auc`` ``[..., K]``.

    Raises:
      ValueError: an unknown rule, a task index out of range, or a callable
        whose score does not have the shape ``val_auc.shape[:-1]``.

    Example:
      >>> import jax.numpy as jnp
      >>> val = jnp.array([[0.9, 0.5], [0.8, 0.7]])  # [epochs, tasks]
      >>> r = TrainResult(None, None, val, val + 0.01, None, None, None, None)
      >>> int(select_by_validation(r)[0]), int(select_by_validation(r, rule=0)[0])
      (1, 0)
      >>> int(select_by_validation(r, rule=lambda v: v.min(axis=-1))[0])
      1
    """
    val_auc = jnp.asarray(result.val_auc)
    k = val_auc.shape[-1]
    if callable(rule):
        score = jnp.asarray(rule(val_auc))
        if score.shape != val_auc.shape[:-1]:
            raise ValueError(
                f"rule(val_auc) has shape {score.shape}; expected {val_auc.shape[:-1]} "
                "(one score per epoch)."
            )
    elif isinstance(rule, str) and rule == "mean":
        finite = jnp.isfinite(val_auc)
        total = jnp.sum(jnp.where(finite, val_auc, 0.0), axis=-1)
        count = jnp.sum(finite, axis=-1)
        score = jnp.where(count > 0, total / jnp.maximum(count, 1), jnp.nan)
    elif isinstance(rule, (int, np.integer)) and not isinstance(rule, bool):
        if not 0 <= rule < k:
            raise ValueError(f"rule={rule} is not a task index in [0, {k}).")
        score = val_auc[..., int(rule)]
    else:
        raise ValueError(f"rule must be 'mean', a task index or a callable; got {rule!r}.")
    val = jnp.nan_to_num(score, nan=-1.0)
    epoch = jnp.argmax(val, axis=-1)
    test = jnp.take_along_axis(result.test_auc, epoch[..., None, None], axis=-2)[..., 0, :]
    return epoch, test


def resolve_space(config: TrainConfig) -> TrainConfig:
    """``config`` with ``space`` set: a DRGrad transform's own space when None, else "params".

    Raises:
      ValueError: an explicit ``space`` that contradicts the DRGrad transform's.
    """
    if not isinstance(config, TrainConfig):
        raise TypeError(f"config must be a TrainConfig; got {type(config).__name__}.")
    own = transform_space(config.mtl_transform)
    if config.space is None:
        return dataclasses.replace(config, space=own or "params")
    if own is not None and config.space != own:
        raise ValueError(
            f"config.space={config.space!r}, but the DRGrad transform routes in {own!r} space "
            "(its towers name "
            + ("representations" if own == "activations" else "parameter subtrees")
            + "). Leave config.space None to follow the transform, or build the transform "
            f"with towers for {config.space!r} (e.g. model.drgrad_towers({config.space!r}))."
        )
    return config


def _check_config(config: TrainConfig, data: MultiTaskData) -> None:
    """Checks a config that ``resolve_space`` has already typed and resolved."""
    if not isinstance(data, MultiTaskData):
        raise TypeError(f"data must be a MultiTaskData; got {type(data).__name__}.")
    if config.space not in SPACES:
        raise ValueError(f"config.space must be one of {SPACES}; got {config.space!r}.")
    if config.shared_grads not in ("per_task", "summed"):
        raise ValueError(
            f"config.shared_grads must be 'per_task' or 'summed'; got {config.shared_grads!r}."
        )
    check_tasks_at_once(config.tasks_at_once, "config.tasks_at_once")
    if config.space == "activations" and config.mtl_transform is None:
        raise ValueError("config.space='activations' needs a config.mtl_transform.")
    for name in ("batch_size", "num_epochs", "eval_batch_size"):
        value = getattr(config, name)
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
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
        bad = [i for i, v in enumerate(value or ()) if not NON_NEGATIVE.contains(np.float64(v))]
        if bad:
            raise ValueError(
                f"config.{name}[{bad[0]}] = {value[bad[0]]!r}; task weights must be >= 0 "
                "(finite float32s)."
            )
    if isinstance(config.log_every, bool) or not isinstance(config.log_every, (int, np.integer)):
        raise ValueError(f"config.log_every must be an int >= 0; got {config.log_every!r}.")
    if config.log_every < 0:
        raise ValueError(f"config.log_every must be >= 0; got {config.log_every}.")


def _describe(fn: Any) -> str:
    if hasattr(fn, "func"):  # functools.partial
        parts = [getattr(fn.func, "__qualname__", repr(fn.func))]
        parts += [repr(a) for a in fn.args]
        parts += [f"{k}={v!r}" for k, v in fn.keywords.items()]
        return f"{parts[0]}({', '.join(parts[1:])})"
    return getattr(fn, "__qualname__", type(fn).__name__)


def _check_mesh_arg(mesh: Any) -> None:
    if mesh is not None and not isinstance(mesh, jax.sharding.Mesh):
        raise TypeError(f"mesh must be a jax.sharding.Mesh or None; got {type(mesh).__name__}.")


def _probe_model(config: TrainConfig, data: MultiTaskData, train: Split):
    """The abstract model, checked against the data's task count (no compilation)."""
    k = data.num_tasks
    abstract = nnx.eval_shape(lambda: config.model(rngs=nnx.Rngs(0)))
    probe = jax.tree.map(lambda a: None if a is None else a[:2], train)
    out = jax.eval_shape(lambda: config.model(rngs=nnx.Rngs(0))(probe.cat, probe.dense, probe.user))
    if out.shape != (2, k):
        raise ValueError(
            f"the model returns logits of shape {out.shape} for a batch of 2; expected "
            f"(2, {k}) for the data's {k} tasks {data.task_names}."
        )
    if config.space == "activations":
        names = representation(config, abstract)
        check_shared_layer(config, train, names, k)
    return abstract


def _losses(config: TrainConfig, graphdef, num_tasks: int, names=("trunk", "heads")):
    """``(loss_fn, trunk_fn, heads_fn)``: the weighted per-task BCE and its two halves."""
    alpha = jnp.asarray(config.task_weights or (1.0,) * num_tasks, jnp.float32)
    pos_w = jnp.asarray(config.pos_weights or (1.0,) * num_tasks, jnp.float32)

    def task_losses(logits, labels):
        per = optax.sigmoid_binary_cross_entropy(logits, labels)
        per = per * (1.0 + (pos_w[None, :] - 1.0) * labels)
        return alpha * jnp.mean(per, axis=0)

    def loss_fn(params, batch, mu):
        logits = nnx.merge(graphdef, params)(batch.cat, batch.dense, batch.user, mu=mu)
        return task_losses(logits, batch.labels)

    def trunk_fn(params, batch, mu):
        del mu
        trunk = getattr(nnx.merge(graphdef, params), names[0])
        return trunk(batch.cat, batch.dense, batch.user)

    def heads_fn(params, reps, batch, mu):
        heads = getattr(nnx.merge(graphdef, params), names[1])
        return task_losses(heads(reps, mu=mu), batch.labels)

    return loss_fn, trunk_fn, heads_fn


def _gradient_step(config: TrainConfig, graphdef, abstract, num_tasks: int):
    """``step(state, batch) -> (state, losses[K])``: the unguarded multi-task step."""
    activations = config.space == "activations"
    names = representation(config, abstract) if activations else ("trunk", "heads")
    # Heads on per-task copies give the K cotangents in one backward pass.
    per_task = task_heads_name(abstract, names[1]) if activations else None
    loss_fn, trunk_fn, heads_fn = _losses(
        config, graphdef, num_tasks, (names[0], per_task or names[1])
    )
    copies = None if per_task is None else num_tasks
    labels_of = None
    if config.mtl_transform is not None and config.space == "params" and config.use_task_of:
        if hasattr(abstract, "task_owner"):
            labels_of = networks.task_of(abstract)
    mtl = (
        None
        if config.mtl_transform is None
        else optax.with_extra_args_support(config.mtl_transform)
    )
    opt = config.optimizer

    def step(ts: TrainState, batch: Split):
        params, (mtl_state, opt_state) = ts.params, ts.opt_state
        mu = mixing_weights(ts.opt_state)
        if mtl is None:
            (_, losses), grads = jax.value_and_grad(
                lambda p: (jnp.sum(loss_fn(p, batch, mu)), loss_fn(p, batch, mu)), has_aux=True
            )(params)
        elif config.space == "params":
            losses, task_grads = per_task_grads(
                loss_fn,
                params,
                batch,
                mu,
                task_of=labels_of,
                shared=config.shared_grads,
                tasks_at_once=config.tasks_at_once,
            )
            grads, mtl_state = mtl.update(task_grads, mtl_state, params, losses=losses)
        else:
            rep = per_task_rep_grads(trunk_fn, heads_fn, params, batch, mu, num_tasks=copies)
            rep_update, mtl_state = mtl.update(
                rep.rep_task_grads, mtl_state, rep.reps, losses=rep.losses
            )
            grads, losses = rep.finish(rep_update), rep.losses
        updates, opt_state = opt.update(grads, opt_state, params)
        params = optax.apply_updates(params, updates)
        return ts._replace(params=params, opt_state=(mtl_state, opt_state)), losses

    def init(key: jax.Array, train: Split) -> TrainState:
        init_key, data_key = jax.random.split(key)
        params = nnx.to_pure_dict(nnx.state(config.model(rngs=nnx.Rngs(init_key))))
        state = (None if mtl is None else mtl.init(params), opt.init(params))
        if mtl is not None and config.space == "activations":
            # The transform sees the representations, not the params.
            probe_batch = jax.tree.map(lambda a: a[: config.batch_size], train)
            reps = jax.eval_shape(trunk_fn, params, probe_batch, None)
            reps = jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), reps)
            state = (mtl.init(reps), state[1])
        zero = jnp.zeros((), jnp.int32)
        return TrainState(zero, params, state, jax.random.key_data(data_key), zero)

    return step, init


def _evaluator(config: TrainConfig, graphdef):
    """``evaluate(state, split) -> (auc[K], log_loss[K])``; a tuple of splits gives a tuple."""

    def one_split(ts: TrainState, split: Split):
        mu = mixing_weights(ts.opt_state)
        model = nnx.merge(graphdef, ts.params)

        def one(row):
            row = jax.tree.map(lambda a: a[None], row)
            return model(row.cat, row.dense, row.user, mu=mu)[0]

        logits = jax.lax.map(one, split, batch_size=int(config.eval_batch_size))
        aucs = jax.vmap(metrics.auc, in_axes=(1, 1))(split.labels, logits)
        losses = jax.vmap(lambda y, z: metrics.log_loss(y, z, from_logits=True), in_axes=(1, 1))(
            split.labels, logits
        )
        return aucs, losses

    def evaluate(ts: TrainState, splits):
        if isinstance(splits, Split):
            return one_split(ts, splits)
        return tuple(one_split(ts, s) for s in splits)

    return evaluate


def _epoch_record(ts: TrainState, train_loss, evals):
    """One epoch's row of ``TrainResult`` (after the loop's mean over finite steps)."""
    (val_auc, val_loss), (test_auc, test_loss) = evals
    mu = mixing_weights(ts.opt_state)
    mu = jnp.full((2,), jnp.nan) if mu is None else jnp.asarray(mu, jnp.float32).reshape(-1)[:2]
    return (train_loss, val_auc, test_auc, val_loss, test_loss, mu, ts.skipped)


def _printer(config: TrainConfig, steps_per_epoch: int):
    """The progress hook printing one line every ``log_every`` epochs (and the last)."""

    def log_line(step, record):
        if not isinstance(record, tuple):  # a ``Trainer.run`` chunk: no evaluation to print
            return
        epoch = int(step) // steps_per_epoch - 1
        if (epoch + 1) % config.log_every and epoch + 1 != config.num_epochs:
            return
        train_loss, val_auc, test_auc, _, _, mu, _ = record
        fmt = lambda xs: " ".join(f"{float(x):.4f}" for x in np.asarray(xs))
        mu_txt = "" if np.isnan(np.asarray(mu)).all() else f" mu {fmt(mu)}"
        with tqdm.external_write_mode():  # above a progress bar, when one shows
            print(
                f"[{config.name}] epoch {epoch + 1}/{config.num_epochs} loss {fmt(train_loss)} "
                f"val AUC {fmt(val_auc)} test AUC {fmt(test_auc)}{mu_txt}",
                flush=True,
            )

    return log_line


def _progress_text(record) -> str:
    """The text beside the progress bar: the task losses, and the validation AUCs per epoch."""
    fmt = lambda xs: " ".join(f"{float(x):.4f}" for x in np.ravel(xs))
    if isinstance(record, tuple):  # an epoch's record: (train_loss, val_auc, ...)
        return f"loss {fmt(record[0])} val AUC {fmt(record[1])}"
    return f"loss {fmt(record)}"  # a ``Trainer.run`` chunk's mean task losses


def make_train(
    config: TrainConfig, data: MultiTaskData, mesh: jax.sharding.Mesh | None = None
) -> loop.Trainer:
    """Builds the ``Trainer`` of a multi-task run: ``trainer(key)`` is the whole run.

    Each step draws a minibatch (the shared loop's batch order) and

    * ``mtl_transform is None``: ``g = grad(sum_k alpha_k L_k)``;
    * ``space="params"``: ``losses, G = per_task_grads(L, params, task_of=...)``,
      ``g, s = mtl_transform.update(G, s, params, losses=losses)``;
    * ``space="activations"``: per-task cotangents at the model's shared
      representation (``model.trunk``; DRGrad's v1 / v_s, ``drgrad_trunk``,
      for a ``drgrad`` transform) go through ``mtl_transform`` and the result
      is pulled back through the trunk once (``RepGrads.finish``);

    then ``updates, s = optimizer.update(g, s, params)``. A model with a
    ``mu`` input (``SplitMMoE``) reads the DRGrad updater's weights from the
    optimizer state (``mixing_weights``) in every forward pass. With
    ``skip_nonfinite`` a step whose losses or new state hold NaN/Inf leaves
    the parameters and state unchanged and is counted.

    With a ``mesh`` the run is data-parallel: every batch is split over the
    mesh's (first) axis, parameters and optimizer state are replicated, and the
    multi-task transform runs unchanged on the all-reduced per-task gradients,
    so the result equals the one-device run up to float summation order.

    Args:
      config: a ``TrainConfig``.
      data: a ``MultiTaskData``; checked once on the host (shapes, finite
        dense features and labels, 0/1 labels, integer categorical ids below
        ``data.vocab_sizes`` and the model encoder's ``vocab_sizes``, integer
        user ids below ``data.num_users`` and the model's user embedding; the
        first bad row named) and moved to the device once. ``Trainer.step``
        checks each streamed batch's ids and finite labels the same way.
      mesh: a ``jax.sharding.Mesh`` (``parallel.make_mesh``) or ``None`` (one
        device). ``config.batch_size`` must be divisible by its size.

    Returns:
      A ``drgrad_jax.loop.Trainer``. Called as ``trainer(key, splits=None)`` it
      returns a ``TrainResult``; ``splits`` defaults to ``data``'s arrays (then
      constants of the compiled program); pass ``device_splits(data)`` to make
      them inputs instead. ``jax.jit(jax.vmap(trainer))(keys)`` runs one seed
      per key (without a mesh). Its ``init``/``run``/``step``/``evaluate``/
      ``save``/``restore`` train step by step on ``TrainState`` s; ``evaluate``
      gives ``(auc[K], log_loss[K])`` of a split.

    Raises:
      ValueError / TypeError: a bad config or data (non-finite values, wrong
        shapes), a model whose output is not ``[B, num_tasks]``, a batch size
        not divisible by the mesh (checked here, before any compilation), or
        ``space="activations"`` on a representation no two tasks read.

    Example:
      >>> import functools, jax, optax
      >>> from drgrad_jax import data, models
      >>> d = data.mmoe_synthetic(256, 128, 128, dim=8)
      >>> cfg = TrainConfig(functools.partial(models.MMoE, (), 8, 2, num_experts=2),
      ...                   optax.adam(1e-2), batch_size=64, num_epochs=2)
      >>> out = jax.jit(jax.vmap(make_train(cfg, d)))(jax.random.split(jax.random.key(0), 2))
      >>> out.val_auc.shape  # [seeds, epochs, tasks]
      (2, 2, 2)
      >>> trainer = make_train(cfg, d)  # step by step: 4 batches per epoch
      >>> state, losses = trainer.run(trainer.init(jax.random.key(0)), 6)
      >>> int(state.step), losses.shape
      (6, (2,))
    """
    config = resolve_space(config)
    _check_config(config, data)
    check_data(data)
    _check_mesh_arg(mesh)
    train, val, test = device_splits(data)
    abstract = _probe_model(config, data, train)
    if config.shared_grads == "summed" and config.space == "params":
        check_summed_shared_grads(
            config.mtl_transform, nnx.to_pure_dict(nnx.state(abstract)), data.num_tasks
        )
    bounds = id_bounds(data, abstract)
    for name in ("train", "val", "test"):
        check_ids(getattr(data, name), f"data.{name}", bounds)
    graphdef, _ = nnx.split(abstract)
    step, init = _gradient_step(config, graphdef, abstract, data.num_tasks)
    steps_per_epoch = data.train.num_examples // config.batch_size
    recipe = loop.Recipe(
        init=lambda key: init(key, train),
        step=step,
        evaluate=_evaluator(config, graphdef),
        order_key=lambda ts: jax.random.wrap_key_data(ts.data_key),
        record=_epoch_record,
        result=lambda ts, history: TrainResult(ts.params, *history),
        unpack=lambda splits: (splits[0], tuple(splits[1:])),
        check_batch=batch_checker(jax.tree.map(lambda a: a[: config.batch_size], train), bounds),
        signature={
            "model": _describe(config.model),
            "num_tasks": data.num_tasks,
            "space": config.space,
            "shared_grads": config.shared_grads,
            "task_weights": None if config.task_weights is None else list(config.task_weights),
            "pos_weights": None if config.pos_weights is None else list(config.pos_weights),
        },
        model=lambda ts: nnx.merge(graphdef, ts.params),
    )
    return loop.Trainer(
        recipe,
        train,
        (val, test),
        config=config,
        batch_size=config.batch_size,
        num_epochs=config.num_epochs,
        mesh=mesh,
        skip_nonfinite=config.skip_nonfinite,
        progress=progress.chain_hooks(
            _printer(config, steps_per_epoch) if config.log_every else None,
            progress.ProgressBar(
                steps_per_epoch * config.num_epochs, _progress_text, name=config.name
            )
            if progress.progress_enabled(config.progress)
            else None,
        ),
        name="drgrad_jax",
    )


def sweep_learning_rates(
    config: TrainConfig,
    data: MultiTaskData,
    learning_rates,
    keys: jax.Array,
    *,
    optimizer: Callable[[jax.Array], optax.GradientTransformation] = optax.adam,
) -> TrainResult:
    """Whole runs for every (learning rate, seed) pair, as ONE compiled program.

    The learning rate is data, not a constant: the run of ``make_train`` is
    traced once with the rate as an input and vmapped over ``learning_rates``
    and over ``keys``, so a grid costs one compilation (docs/drgrad.md, *Model
    selection and run length*). Each lane equals ``make_train`` with
    ``optimizer(lr)`` and that key, up to float rounding (the rate is a
    float32 input rather than a constant folded into the program).

    Args:
      config: a ``TrainConfig``; its ``optimizer`` is replaced by
        ``optimizer(lr)`` in each lane.
      data: a ``MultiTaskData`` (its splits become inputs, ``device_splits``).
      learning_rates: 1-D sequence of positive rates ``[L]``.
      keys: ``[S]`` PRNG keys, one per seed (the same keys for every rate, so
        rates are compared on the same initializations and batch orders).
      optimizer: ``lr -> GradientTransformation``, e.g.
        ``lambda lr: optax.adam(lr, b2=0.9999)``; called with a traced scalar.

    Returns:
      A ``TrainResult`` whose arrays have leading axes ``[L, S]``;
      ``select_by_validation`` reads it as it is.

    Raises:
      ValueError: ``learning_rates`` empty, not 1-D, or not all finite and
        positive; ``keys`` without a leading seed axis.
    """
    lrs = np.asarray(learning_rates, np.float64)
    if lrs.ndim != 1 or lrs.size == 0 or not np.all(np.isfinite(lrs) & (lrs > 0)):
        raise ValueError(
            f"learning_rates must be a non-empty 1-D sequence of finite positive rates; "
            f"got {learning_rates!r}."
        )
    if not isinstance(keys, jax.Array) or keys.ndim != 1:
        raise ValueError(f"keys must be a 1-D array of PRNG keys (one per seed); got {keys!r}.")
    splits = device_splits(data)

    def one(lr, key, splits):
        lane = dataclasses.replace(config, optimizer=optimizer(lr))
        with jax.ensure_compile_time_eval():  # the host-side probes stay concrete in the trace
            train = make_train(lane, data)
        return train(key, splits)

    run = jax.vmap(jax.vmap(one, (None, 0, None)), (0, None, None))
    return jax.jit(run)(jnp.asarray(lrs, jnp.float32), keys, splits)
