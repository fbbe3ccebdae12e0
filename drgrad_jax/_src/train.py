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
import os
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from drgrad_jax._src import metrics, networks, parallel
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
    skip_nonfinite: bool = True


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


def _check_split(split: Any, name: str, data: MultiTaskData) -> None:
    """Shapes, dtypes and values of one split (host-side, once, before compiling)."""
    if not isinstance(split, Split):
        raise TypeError(f"{name} must be a Split; got {type(split).__name__}.")
    n = int(np.shape(split.labels)[0]) if np.ndim(split.labels) else -1
    f, d, k = len(data.vocab_sizes), data.num_dense, data.num_tasks
    want = {
        "cat": ((n, f), "[N, len(data.vocab_sizes)]"),
        "dense": ((n, d), "[N, data.num_dense]"),
        "labels": ((n, k), "[N, data.num_tasks]"),
    }
    if data.num_users and split.user is not None:
        want["user"] = ((n,), "[N]")
    for field, (shape, rule) in want.items():
        got = np.shape(getattr(split, field))
        if got != shape:
            raise ValueError(
                f"{name}.{field} has shape {got}; expected {shape} ({rule} with N = {n}, "
                f"the rows of {name}.labels)."
            )
    for field in ("dense", "labels"):
        value = np.asarray(getattr(split, field))
        bad = ~np.isfinite(value)
        if bad.any():
            rows = np.flatnonzero(bad.any(axis=1))
            raise ValueError(
                f"{name}.{field} holds {int(bad.sum())} non-finite value(s) (NaN/Inf) in "
                f"{rows.size} row(s), first at row {int(rows[0])}; clean or drop them first."
            )
    labels = np.asarray(split.labels)
    if not np.isin(labels, (0.0, 1.0)).all():
        bad = labels[~np.isin(labels, (0.0, 1.0))]
        raise ValueError(
            f"{name}.labels must be 0/1; found {bad.size} other value(s), e.g. {bad[0]}."
        )
    cat = np.asarray(split.cat)
    if f and n:
        if not np.issubdtype(cat.dtype, np.integer):
            raise TypeError(f"{name}.cat must hold integer ids; got dtype {cat.dtype}.")
        high = np.asarray(data.vocab_sizes)[None, :]
        bad = (cat < 0) | (cat >= high)
        if bad.any():
            row, col = (int(i[0]) for i in np.nonzero(bad))
            raise ValueError(
                f"{name}.cat[{row}, {col}] = {int(cat[row, col])} is outside "
                f"[0, vocab_sizes[{col}]={data.vocab_sizes[col]})."
            )


def _check_data(data: MultiTaskData) -> None:
    for name in ("train", "val", "test"):
        _check_split(getattr(data, name), f"data.{name}", data)


def _abstract(tree: Any) -> list[tuple[str, tuple[int, ...], str]]:
    leaves = jax.tree_util.tree_leaves_with_path(tree)
    return [
        (jax.tree_util.keystr(p), tuple(np.shape(x)), str(jnp.result_type(x))) for p, x in leaves
    ]


def _state_kinds(tree: Any) -> list[str]:
    """Class names of the NamedTuple states in ``tree`` (which transforms built it)."""
    out = []

    def walk(node):
        if isinstance(node, tuple) and hasattr(node, "_fields"):
            out.append(type(node).__name__)
        if isinstance(node, (tuple, list)):
            for x in node:
                walk(x)
        elif isinstance(node, dict):
            for x in node.values():
                walk(x)

    walk(tree)
    return [k for k in out if k not in ("TrainState",)]


def _describe(fn: Any) -> str:
    if hasattr(fn, "func"):  # functools.partial
        parts = [getattr(fn.func, "__qualname__", repr(fn.func))]
        parts += [repr(a) for a in fn.args]
        parts += [f"{k}={v!r}" for k, v in fn.keywords.items()]
        return f"{parts[0]}({', '.join(parts[1:])})"
    return getattr(fn, "__qualname__", type(fn).__name__)


class Trainer:
    """One configured run: ``train(key)`` for the whole run, ``init``/``run``/``step`` step by step.

    Built by ``make_train``. Calling it, ``trainer(key, splits=None)``, runs
    every epoch and returns a ``TrainResult`` (jit-able and vmap-able over
    keys). Step by step::

        state = trainer.init(key)                   # TrainState
        state, losses = trainer.run(state, 1000)    # the next 1000 batches
        trainer.save(path, state)                   # orbax checkpoint
        state = trainer.restore(path)               # ... later, maybe elsewhere
        state, losses = trainer.run(state, trainer.total_steps - int(state.step))

    Batch ``b`` of epoch ``e`` is the same in both forms (``e``-th key of
    ``split(data_key, num_epochs)``, a permutation of the training rows), so a
    resumed run equals an uninterrupted one bit for bit.

    Attributes:
      config: the ``TrainConfig``.
      mesh: the device mesh for data parallelism, or ``None``.
      graphdef: the model's ``nnx.GraphDef`` (``nnx.merge(graphdef, params)``).
      steps_per_epoch: ``num_train // batch_size``.
      total_steps: ``steps_per_epoch * num_epochs``.
    """

    def __init__(self, config, data, mesh, graphdef, core):
        self.config = config
        self.mesh = mesh
        self.graphdef = graphdef
        self.steps_per_epoch = core["n_batches"]
        self.total_steps = core["n_batches"] * int(config.num_epochs)
        self._core = core
        self._splits = core["splits"]
        self._init = jax.jit(core["init"])
        self._run = jax.jit(core["run"])
        self._step = jax.jit(core["step"])
        self._evaluate = jax.jit(core["evaluate"])
        self._meta = {
            "model": _describe(config.model),
            "num_tasks": data.num_tasks,
            "num_train": data.train.num_examples,
            "batch_size": int(config.batch_size),
            "num_epochs": int(config.num_epochs),
            "space": config.space,
            "shared_grads": config.shared_grads,
            "task_weights": None if config.task_weights is None else list(config.task_weights),
            "pos_weights": None if config.pos_weights is None else list(config.pos_weights),
        }

    def __call__(self, key: jax.Array, splits: tuple[Split, Split, Split] | None = None):
        """The whole run: ``TrainResult`` with one row per epoch (see ``make_train``)."""
        return self._core["train"](key, splits)

    def _place(self, tree):
        return tree if self.mesh is None else parallel.replicate(tree, self.mesh)

    def init(self, key: jax.Array) -> TrainState:
        """The state before the first step: ``train(key)``'s initialization (step 0)."""
        return self._place(self._init(key))

    def run(
        self, state: TrainState, num_steps: int, train_split: Split | None = None
    ) -> tuple[TrainState, jax.Array]:
        """Takes the next ``num_steps`` steps on the run's own batch order.

        One compiled program serves every ``num_steps`` (it is a traced loop
        bound), so splitting a run into pieces changes nothing in the numbers.

        Args:
          state: a ``TrainState`` (from ``init``, ``run`` or ``restore``).
          num_steps: how many steps; ``state.step + num_steps`` may not exceed
            ``total_steps`` (the batch order is defined for ``num_epochs`` epochs).
          train_split: the training split as device arrays (default: ``data``'s).

        Returns:
          ``(state, mean_losses)``: the new state and the ``[K]`` task losses
          averaged over the finite steps taken (NaN when none was).
        """
        num_steps = int(num_steps)
        if num_steps < 0:
            raise ValueError(f"num_steps must be >= 0; got {num_steps}.")
        if not isinstance(state, TrainState):
            raise TypeError(f"state must be a TrainState; got {type(state).__name__}.")
        try:
            done = int(state.step)
        except jax.errors.ConcretizationTypeError:  # traced: the caller bounds it
            done = None
        if done is not None:
            if done + num_steps > self.total_steps:
                raise ValueError(
                    f"num_steps={num_steps} from step {done} passes total_steps="
                    f"{self.total_steps} ({self.config.num_epochs} epochs of "
                    f"{self.steps_per_epoch} batches)."
                )
        split = self._splits[0] if train_split is None else train_split
        return self._run(state, split, jnp.asarray(num_steps, jnp.int32))

    def step(self, state: TrainState, batch: Split) -> tuple[TrainState, jax.Array]:
        """One step on a given batch (streamed input), e.g. ``parallel.shard_batch(b, mesh)``.

        Returns ``(state, losses[K])``. The shapes of ``batch`` are checked
        when the step is traced; its values are not checked (a non-finite step
        is skipped and counted under ``skip_nonfinite``).
        """
        self._core["check_batch"](batch)
        return self._step(state, batch)

    def evaluate(self, state: TrainState, split: Split | None = None):
        """``(auc[K], log_loss[K])`` of ``state.params`` on ``split`` (default: validation)."""
        split = self._splits[1] if split is None else split
        return self._evaluate(state, split)

    def model(self, state: TrainState) -> nnx.Module:
        """The trained network of ``state`` (``nnx.merge(graphdef, state.params)``)."""
        return nnx.merge(self.graphdef, state.params)

    # --- checkpoints -------------------------------------------------------------

    def _signature(self, state: TrainState) -> dict:
        return {
            "config": self._meta,
            "params": _abstract(state.params),
            "opt_state": _abstract(state.opt_state),
            "opt_kinds": _state_kinds(state.opt_state),
        }

    def save(self, path: str | os.PathLike, state: TrainState) -> None:
        """Writes ``state`` and this run's configuration signature as an orbax checkpoint.

        Args:
          path: a directory that does not exist yet (orbax writes atomically).
          state: the ``TrainState`` to save.
        """
        import orbax.checkpoint as ocp

        path = os.path.abspath(os.fspath(path))
        leaves = {f"{i:05d}": x for i, x in enumerate(jax.tree.leaves(state))}
        meta = self._signature(state)
        meta = jax.tree.map(lambda x: list(x) if isinstance(x, tuple) else x, meta)
        ckptr = ocp.Checkpointer(ocp.CompositeCheckpointHandler())
        ckptr.save(
            path,
            ocp.args.Composite(state=ocp.args.StandardSave(leaves), meta=ocp.args.JsonSave(meta)),
        )

    def restore(self, path: str | os.PathLike) -> TrainState:
        """Reads a checkpoint written by ``save`` for this same configuration.

        Raises:
          FileNotFoundError: no checkpoint at ``path``.
          ValueError: the checkpoint was written by a different configuration;
            the message names what differs (config fields, the optimizer or
            multi-task transform, parameter leaves and their shapes).
        """
        import orbax.checkpoint as ocp

        path = os.path.abspath(os.fspath(path))
        if not os.path.isdir(path):
            raise FileNotFoundError(f"no checkpoint directory at {path}.")
        ckptr = ocp.Checkpointer(ocp.CompositeCheckpointHandler())
        try:
            saved = ckptr.restore(path, ocp.args.Composite(meta=ocp.args.JsonRestore())).meta
        except Exception as e:  # orbax raises several types for a missing/garbled item
            raise ValueError(f"{path} is not a drgrad_jax checkpoint: {e}") from None
        template = jax.eval_shape(self._core["init"], jax.random.key(0))
        self._check_signature(path, saved, template)
        abstract = {f"{i:05d}": x for i, x in enumerate(jax.tree.leaves(template))}
        got = ckptr.restore(
            path, ocp.args.Composite(state=ocp.args.StandardRestore(abstract))
        ).state
        leaves = [jnp.asarray(got[k]) for k in sorted(got)]
        state = jax.tree.unflatten(jax.tree.structure(template), leaves)
        return self._place(state)

    def _check_signature(self, path: str, saved: dict, template: TrainState) -> None:
        mine = jax.tree.map(
            lambda x: list(x) if isinstance(x, tuple) else x, self._signature(template)
        )
        diffs = []
        for field, value in mine["config"].items():
            if field != "model" and saved["config"].get(field) != value:
                diffs.append(
                    f"config.{field}: checkpoint {saved['config'].get(field)!r}, here {value!r}"
                )
        if saved["opt_kinds"] != mine["opt_kinds"]:
            diffs.append(
                "optimizer / mtl_transform state: checkpoint "
                f"{'+'.join(saved['opt_kinds']) or 'none'}, here {'+'.join(mine['opt_kinds']) or 'none'}"
            )
        for part in ("params", "opt_state"):
            a = {p: (s, d) for p, s, d in saved[part]}
            b = {p: (s, d) for p, s, d in mine[part]}
            only_a, only_b = sorted(set(a) - set(b)), sorted(set(b) - set(a))
            if only_a:
                diffs.append(f"{part} leaves only in the checkpoint: {', '.join(only_a[:4])}")
            if only_b:
                diffs.append(f"{part} leaves missing from the checkpoint: {', '.join(only_b[:4])}")
            changed = [p for p in a if p in b and tuple(a[p][0]) != tuple(b[p][0])]
            changed += [p for p in a if p in b and a[p][1] != b[p][1] and p not in changed]
            for p in changed[:4]:
                diffs.append(
                    f"{part}{p}: checkpoint shape {tuple(a[p][0])} {a[p][1]}, "
                    f"here {tuple(b[p][0])} {b[p][1]}"
                )
        if diffs:
            if saved["config"].get("model") != mine["config"]["model"]:
                diffs.insert(
                    0,
                    f"model: checkpoint {saved['config']['model']}, here {mine['config']['model']}",
                )
            raise ValueError(
                f"checkpoint {path} was written by a different configuration:\n  "
                + "\n  ".join(diffs)
            )


def make_train(
    config: TrainConfig, data: MultiTaskData, mesh: jax.sharding.Mesh | None = None
) -> Trainer:
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
    optimizer state (``mixing_weights``) in every forward pass. With
    ``skip_nonfinite`` a step whose losses or ``g`` hold NaN/Inf leaves the
    parameters and state unchanged and is counted.

    With a ``mesh`` the run is data-parallel: every batch is split over the
    mesh's (first) axis, parameters and optimizer state are replicated, and the
    multi-task transform runs unchanged on the all-reduced per-task gradients,
    so the result equals the one-device run up to float summation order.

    Args:
      config: a ``TrainConfig``.
      data: a ``MultiTaskData``; checked once (shapes, finite dense features
        and labels, 0/1 labels, categorical ids in range) and moved to the
        device once.
      mesh: a ``jax.sharding.Mesh`` (``parallel.make_mesh``) or ``None`` (one
        device, as before). ``config.batch_size`` must be divisible by its size.

    Returns:
      A ``Trainer``. Called as ``train(key, splits=None)``: ``splits``
      defaults to ``data``'s arrays (then constants of the compiled program);
      pass ``device_splits(data)`` to make them inputs instead.
      ``jax.jit(jax.vmap(train))(keys)`` runs one seed per key (without a mesh).
      Its ``init``/``run``/``step``/``save``/``restore`` train step by step.

    Raises:
      ValueError / TypeError: a bad config or data (non-finite values, wrong
        shapes), a model whose output is not ``[B, num_tasks]``, or a batch
        size not divisible by the mesh (checked here, before any compilation).

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
    _check_config(config, data)
    _check_data(data)
    if mesh is not None:
        if not isinstance(mesh, jax.sharding.Mesh):
            raise TypeError(f"mesh must be a jax.sharding.Mesh or None; got {type(mesh).__name__}.")
        axis = mesh.axis_names[0]
        if config.batch_size % mesh.shape[axis]:
            raise ValueError(
                f"config.batch_size={config.batch_size} is not divisible by the "
                f"{mesh.shape[axis]} devices of mesh axis {axis!r}."
            )
        batch_spec = parallel.batch_sharding(mesh, axis)
        replicated = parallel.replicated(mesh)
    k = data.num_tasks
    default_splits = device_splits(data)
    if mesh is not None:
        default_splits = parallel.replicate(default_splits, mesh)
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
    num_epochs = int(config.num_epochs)
    want_batch = jax.tree.map(
        lambda a: None if a is None else ((batch_size,) + tuple(a.shape[1:]), a.dtype),
        default_splits[0],
    )

    def check_batch(batch):
        if not isinstance(batch, Split):
            raise TypeError(f"batch must be a Split; got {type(batch).__name__}.")
        for field in ("cat", "dense", "labels", "user"):
            want, got = getattr(want_batch, field), getattr(batch, field)
            if (want is None) != (got is None):
                raise ValueError(
                    f"batch.{field} is {'missing' if got is None else 'unexpected'}; the training "
                    f"data {'has' if want is not None else 'has no'} {field}."
                )
            if want is not None and np.shape(got)[1:] != want[0][1:]:
                raise ValueError(
                    f"batch.{field} has shape {np.shape(got)}; expected [B, *{want[0][1:]}] "
                    f"as in the training data."
                )
        n = {np.shape(x)[0] for x in jax.tree.leaves(batch) if x is not None}
        if len(n) != 1:
            raise ValueError(f"batch fields have different leading sizes {sorted(n)}.")

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

    def constrain(batch):
        if mesh is None:
            return batch
        return jax.lax.with_sharding_constraint(batch, batch_spec)

    def step(params, state, batch):
        """One step; returns (params, state, losses, ok)."""
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
        new_params = optax.apply_updates(params, updates)
        new_state = (mtl_state, opt_state)
        if not config.skip_nonfinite:
            return new_params, new_state, losses, jnp.asarray(True)
        # Finite losses, combined gradient, new parameters and transform state, or no step.
        ok = jnp.all(jnp.isfinite(losses))
        for leaf in jax.tree.leaves((grads, new_params, mtl_state)):
            if jnp.issubdtype(leaf.dtype, jnp.inexact):
                ok = ok & jnp.all(jnp.isfinite(leaf))
        new_params = optax.tree.where(ok, new_params, params)
        new_state = optax.tree.where(ok, new_state, state)
        return new_params, new_state, losses, ok

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

    def init_state(key: jax.Array, train_split: Split) -> TrainState:
        init_key, data_key = jax.random.split(key)
        params = nnx.to_pure_dict(nnx.state(config.model(rngs=nnx.Rngs(init_key))))
        state = (None if mtl is None else mtl.init(params), opt.init(params))
        if mtl is not None and config.space == "activations":
            # The transform sees the representations, not the params.
            probe_batch = jax.tree.map(lambda a: a[:batch_size], train_split)
            reps = jax.eval_shape(trunk_fn, params, probe_batch, None)
            reps = jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), reps)
            state = (mtl.init(reps), state[1])
        if mesh is not None:
            params, state = jax.lax.with_sharding_constraint((params, state), replicated)
        zero = jnp.zeros((), jnp.int32)
        return TrainState(zero, params, state, jax.random.key_data(data_key), zero)

    def epoch_perm(data_key, epoch):
        key = jax.random.split(jax.random.wrap_key_data(data_key), num_epochs)[epoch]
        return jax.random.permutation(key, n_train)[: n_batches * batch_size]

    def one_step(ts: TrainState, batch: Split):
        params, state, losses, ok = step(ts.params, ts.opt_state, constrain(batch))
        ts = TrainState(
            ts.step + 1, params, state, ts.data_key, ts.skipped + (~ok).astype(jnp.int32)
        )
        return ts, losses, ok

    def run(ts: TrainState, train_split: Split, num_steps: jax.Array):
        """``num_steps`` steps from ``ts.step`` (a traced bound: one program for all)."""

        def body(carry):
            ts, perm, total, count, i = carry
            b = ts.step % n_batches
            perm = jax.lax.cond(
                b == 0, lambda: epoch_perm(ts.data_key, ts.step // n_batches), lambda: perm
            )
            idx = jax.lax.dynamic_slice_in_dim(perm, b * batch_size, batch_size)
            ts, losses, ok = one_step(ts, jax.tree.map(lambda a: a[idx], train_split))
            total = total + jnp.where(ok, losses, 0.0)
            return ts, perm, total, count + ok.astype(jnp.int32), i + 1

        perm = epoch_perm(ts.data_key, jnp.minimum(ts.step // n_batches, num_epochs - 1))
        zeros = jnp.zeros((k,), jnp.float32)
        init = (ts, perm, zeros, jnp.zeros((), jnp.int32), jnp.zeros((), jnp.int32))
        ts, _, total, count, _ = jax.lax.while_loop(lambda c: c[-1] < num_steps, body, init)
        return ts, jnp.where(count > 0, total / jnp.maximum(count, 1), jnp.nan)

    def given_step(ts: TrainState, batch: Split):
        ts, losses, _ = one_step(ts, batch)
        return ts, losses

    def evaluate_state(ts: TrainState, split: Split):
        return evaluate(ts.params, ts.opt_state, split)

    def train(key: jax.Array, splits: tuple[Split, Split, Split] | None = None) -> TrainResult:
        train_split, val_split, test_split = default_splits if splits is None else splits
        ts = init_state(key, train_split)

        def batch_step(ts, idx):
            ts, losses, ok = one_step(ts, jax.tree.map(lambda a: a[idx], train_split))
            return ts, (losses, ok)

        def epoch_step(ts, epoch):
            perm = epoch_perm(ts.data_key, epoch)
            ts, (losses, ok) = jax.lax.scan(batch_step, ts, perm.reshape(n_batches, batch_size))
            params, state = ts.params, ts.opt_state
            val_auc, val_loss = evaluate(params, state, val_split)
            test_auc, test_loss = evaluate(params, state, test_split)
            mu = mixing_weights(state)
            mu = (
                jnp.full((2,), jnp.nan)
                if mu is None
                else jnp.asarray(mu, jnp.float32).reshape(-1)[:2]
            )
            # Mean over the steps taken; NaN for an epoch whose steps were all skipped.
            n_ok = jnp.sum(ok)
            train_loss = jnp.sum(jnp.where(ok[:, None], losses, 0.0), axis=0) / n_ok
            if config.log_every:
                jax.debug.callback(log_line, epoch, train_loss, val_auc, test_auc, mu)
            return ts, (train_loss, val_auc, test_auc, val_loss, test_loss, mu, ts.skipped)

        ts, hist = jax.lax.scan(epoch_step, ts, jnp.arange(num_epochs))
        return TrainResult(ts.params, *hist)

    core = {
        "n_batches": n_batches,
        "splits": default_splits,
        "init": lambda key: init_state(key, default_splits[0]),
        "run": run,
        "step": given_step,
        "evaluate": evaluate_state,
        "train": train,
        "check_batch": check_batch,
    }
    return Trainer(config, data, mesh, graphdef, core)
