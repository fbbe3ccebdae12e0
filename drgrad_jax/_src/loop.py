"""The training loop both packages share: a whole run as a function of a key.

A package describes its training by a ``Recipe``: how to build the state from
a key (``init``), one optimizer step on a batch (``step``), an evaluation
(``evaluate``) and which key orders the batches (``order_key``). ``Trainer``
turns it into a run with one set of rules:

* the batch order: epoch ``e`` visits the training rows in the order
  ``permutation(fold_in(order_key, e), N)``, cut to ``N // batch_size`` whole
  batches. It depends on (key, epoch) only, not on the planned number of
  epochs, so a run can be extended and a resumed run sees the same batches;
* epochs under ``lax.scan``: ``trainer(key)`` is one jittable program, and
  ``jax.jit(jax.vmap(trainer))(keys)`` trains one seed per key;
* the non-finite guard: a step whose new state or metrics hold a NaN or an
  infinity keeps the old state (the step counter still advances) and is
  counted in ``state.skipped``; a finite step is unchanged by the guard;
* evaluation after every epoch, a progress hook at chunk boundaries (one host
  callback per epoch, never per step), and data parallelism over a device mesh
  (the batch split over the mesh's first axis, the state placed as the recipe
  says, GSPMD adding the all-reduces);
* one checkpoint format: an orbax checkpoint of the state's leaves plus a JSON
  signature of the configuration, checked on restore so a checkpoint of
  another configuration is refused with a message naming what differs.

The state is any ``NamedTuple`` with int32 scalar fields ``step`` (steps taken,
skipped ones included) and ``skipped``.
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from drgrad_jax._src import parallel
from drgrad_jax._src.checkpoint import (  # noqa: F401  (config_signature is re-exported)
    _CHECKPOINT_FILES,
    _CHECKPOINT_PARTS,
    _SIGNATURE_KEYS,
    _abstract,
    _is_key,
    _jsonable,
    _state_kinds,
    _unreadable_arrays,
    config_signature,
)


@dataclasses.dataclass(frozen=True)
class Recipe:
    """What a package supplies to the shared loop (everything else is the loop's).

    Attributes:
      init: ``init(key) -> state``, the state before the first step; a
        ``NamedTuple`` with int32 scalar fields ``step`` and ``skipped``.
      step: ``step(state, batch) -> (state, metrics)``, one unguarded optimizer
        step; ``metrics`` is a pytree of arrays (averaged over an epoch's
        finite steps by the loop).
      evaluate: ``evaluate(state, eval_data) -> eval_metrics``.
      order_key: ``order_key(state) -> key``, the PRNG key that orders the
        batches (constant over a run).
      record: ``record(state, mean_step_metrics, eval_metrics)``, one epoch's
        entry of the history (default: ``(mean_step_metrics, eval_metrics)``).
      result: ``result(state, history)``, what ``trainer(key)`` returns
        (default: ``(state, history)``).
      unpack: ``unpack(data) -> (train_data, eval_data)`` for the optional
        ``data`` argument of ``trainer(key, data)`` (default: a pair).
      check_batch: host-side check of a streamed batch before ``Trainer.step``
        (shapes; ALM-MTA also checks id ranges), or ``None``.
      state_sharding: ``state_sharding(abstract_state, mesh) -> shardings`` or
        ``None`` (replicate every leaf).
      signature: JSON-able description of the configuration, stored in every
        checkpoint and compared on restore.
      model: ``model(state) -> nnx.Module``, the trained network, or ``None``.
      fixed_length: why the step reads the planned length (e.g. a schedule
        laid over ``total_steps``), or ``None`` when it does not: a checkpoint
        then restores into a trainer planned for more epochs, which extends
        the run (the batch order depends only on the key and the epoch).
    """

    init: Callable[[jax.Array], Any]
    step: Callable[[Any, Any], tuple[Any, Any]]
    evaluate: Callable[[Any, Any], Any]
    order_key: Callable[[Any], jax.Array]
    record: Callable[[Any, Any, Any], Any] | None = None
    result: Callable[[Any, Any], Any] | None = None
    unpack: Callable[[Any], tuple[Any, Any]] | None = None
    check_batch: Callable[[Any], None] | None = None
    state_sharding: Callable[[Any, jax.sharding.Mesh], Any] | None = None
    signature: dict | None = None
    model: Callable[[Any], Any] | None = None
    fixed_length: str | None = None


class Compiled(NamedTuple):
    """The jitted functions of a ``Trainer`` (for ``lower`` and compile counts)."""

    init: Any
    step: Any
    run: Any
    run_epochs: Any
    evaluate: Any


def is_finite(tree: Any) -> jax.Array:
    """True when every floating (or complex) leaf of ``tree`` is finite (one fused reduction).

    Example:
      >>> import jax.numpy as jnp
      >>> bool(is_finite({"w": jnp.ones(2), "n": jnp.int32(3)}))
      True
      >>> bool(is_finite((jnp.array([1.0, jnp.inf]),)))
      False
    """
    checks = [
        jnp.all(jnp.isfinite(leaf))
        for leaf in jax.tree.leaves(tree)
        if jnp.issubdtype(jnp.result_type(leaf), jnp.inexact)
    ]
    return jnp.all(jnp.stack(checks)) if checks else jnp.bool_(True)


def keep_if_finite(old: Any, new: Any, metrics: Any = ()) -> tuple[Any, jax.Array]:
    """The non-finite guard: ``new`` if it and ``metrics`` are finite, else ``old``.

    Either way the step counter advances (``step = old.step + 1``), so a data
    stream resumed at ``state.step`` stays aligned, and a rejected step adds
    one to ``skipped``. No host round trip: it runs under ``jit`` and ``scan``.

    Args:
      old: the state before the step (a ``NamedTuple`` with ``step`` and ``skipped``).
      new: the state the step produced.
      metrics: the step's losses or metrics, checked with the state.

    Returns:
      ``(state, ok)`` with ``ok`` a bool scalar (the step was taken).

    Example:
      >>> import jax.numpy as jnp
      >>> from typing import NamedTuple
      >>> class S(NamedTuple):
      ...     step: jnp.ndarray
      ...     w: jnp.ndarray
      ...     skipped: jnp.ndarray
      >>> old = S(jnp.int32(0), jnp.ones(2), jnp.int32(0))
      >>> out, ok = keep_if_finite(old, old._replace(w=jnp.array([0.5, jnp.nan])))
      >>> int(out.step), out.w.tolist(), int(out.skipped), bool(ok)
      (1, [1.0, 1.0], 1, False)
    """
    ok = is_finite((new, metrics))
    kept = optax.tree.where(ok, new, old)
    return kept._replace(step=old.step + 1, skipped=old.skipped + (~ok).astype(jnp.int32)), ok


def batch_order(order_key: jax.Array, epoch: jax.Array, num_rows: int, batch_size: int):
    """Row indices of every batch of ``epoch``: ``[num_rows // batch_size, batch_size]``.

    ``permutation(fold_in(order_key, epoch), num_rows)`` cut to whole batches: a
    function of (key, epoch) alone, so it never needs the planned epoch count.

    Example:
      >>> import jax
      >>> batch_order(jax.random.key(0), 0, 10, 4).shape
      (2, 4)
    """
    perm = jax.random.permutation(jax.random.fold_in(order_key, epoch), num_rows)
    n_batches = num_rows // batch_size
    return perm[: n_batches * batch_size].reshape(n_batches, batch_size)


def _mean_where(ok: jax.Array, metrics: Any) -> Any:
    """Per-leaf mean over the steps with ``ok`` (NaN when there is none)."""
    n_ok = jnp.sum(ok)

    def mean(m):
        mask = ok.reshape(ok.shape + (1,) * (m.ndim - 1))
        total = jnp.sum(jnp.where(mask, m, 0.0), axis=0)
        return jnp.where(n_ok > 0, total / jnp.maximum(n_ok, 1), jnp.nan).astype(m.dtype)

    return jax.tree.map(mean, metrics)


class Trainer:
    """One configured run: ``trainer(key)`` for the whole run, or step by step.

    Built by each package's ``make_train(config, data)``. Calling it,
    ``trainer(key, data=None)``, initializes the state, runs every epoch under
    ``lax.scan`` with an evaluation after each, and returns the package's
    result (jit-able and vmap-able over keys). Step by step::

        state = trainer.init(key)                     # step 0
        state, metrics = trainer.run(state, 1000)     # the next 1000 batches
        trainer.save(path, state)                     # orbax checkpoint
        state = trainer.restore(path)                 # ... later, maybe elsewhere
        state, metrics = trainer.run(state, trainer.total_steps - int(state.step))
        state, metrics = trainer.step(state, batch)   # or a streamed batch

    ``run`` stops at ``total_steps``. To extend a finished run, build the
    trainer again with more epochs and ``restore`` the checkpoint into it: the
    planned length is not part of the checked configuration unless the
    package's step reads it (``Recipe.fixed_length`` then says why).

    Batch ``b`` of epoch ``e`` is the same in every form (``batch_order``), so
    a resumed run equals an uninterrupted one bit for bit.

    Attributes:
      config: the package's configuration.
      mesh: the device mesh for data parallelism, or ``None``.
      steps_per_epoch: ``num_train // batch_size``.
      total_steps: ``steps_per_epoch * num_epochs``.
      compiled: the jitted functions (``Compiled``).
    """

    def __init__(
        self,
        recipe: Recipe,
        train_data: Any,
        eval_data: Any,
        *,
        config: Any,
        batch_size: int,
        num_epochs: int,
        mesh: jax.sharding.Mesh | None = None,
        skip_nonfinite: bool = True,
        progress: Callable[[int, Any], None] | None = None,
        name: str = "train",
    ):
        self.recipe = recipe
        self.config = config
        self.mesh = mesh
        self.name = name
        self.batch_size = int(batch_size)
        self.num_epochs = int(num_epochs)
        self.num_train = int(np.shape(jax.tree.leaves(train_data)[0])[0])
        if self.batch_size > self.num_train:
            raise ValueError(
                f"batch_size={self.batch_size} exceeds the {self.num_train} training examples."
            )
        self.steps_per_epoch = self.num_train // self.batch_size
        self.total_steps = self.steps_per_epoch * self.num_epochs
        self.skip_nonfinite = bool(skip_nonfinite)
        self.progress = progress
        self._batch_spec = self._state_spec = None
        if mesh is not None:
            axis = self._check_mesh(mesh)
            self._batch_spec = parallel.batch_sharding(mesh, axis)
            abstract = jax.eval_shape(recipe.init, jax.random.key(0))
            self._state_spec = (
                jax.tree.map(lambda _: parallel.replicated(mesh), abstract)
                if recipe.state_sharding is None
                else recipe.state_sharding(abstract, mesh)
            )
        self.train_data, self.eval_data = self._device(train_data), self._device(eval_data)
        # On a mesh the step-wise programs return the state exactly as the recipe places it.
        out = {} if mesh is None else {"out_shardings": self._state_spec}
        full = None if mesh is None else parallel.replicated(mesh)
        step_out = {} if mesh is None else {"out_shardings": (self._state_spec, full, full)}
        run_out = {} if mesh is None else {"out_shardings": (self._state_spec, full)}
        self.compiled = Compiled(
            init=jax.jit(self._init, **out),
            step=jax.jit(self._step, **step_out),
            run=jax.jit(self._run, **run_out),
            run_epochs=jax.jit(self._run_epochs, static_argnums=1),
            evaluate=jax.jit(recipe.evaluate),
        )

    # --- placement ------------------------------------------------------------------

    def _check_mesh(self, mesh) -> str:
        if not isinstance(mesh, jax.sharding.Mesh):
            raise TypeError(f"mesh must be a jax.sharding.Mesh or None; got {type(mesh).__name__}.")
        axis = mesh.axis_names[0]
        if self.batch_size % mesh.shape[axis]:
            raise ValueError(
                f"config.batch_size={self.batch_size} is not divisible by the "
                f"{mesh.shape[axis]} devices of mesh axis {axis!r}."
            )
        return axis

    def _device(self, tree):
        tree = jax.tree.map(jnp.asarray, tree)
        return tree if self.mesh is None else parallel.replicate(tree, self.mesh)

    def _constrain_state(self, state):
        if self.mesh is None:
            return state
        return jax.lax.with_sharding_constraint(state, self._state_spec)

    def _constrain_batch(self, batch):
        if self.mesh is None:
            return batch
        return jax.lax.with_sharding_constraint(batch, self._batch_spec)

    def _place(self, state):
        return state if self.mesh is None else jax.device_put(state, self._state_spec)

    # --- the traced loop ----------------------------------------------------------------

    def _init(self, key):
        return self._constrain_state(self.recipe.init(key))

    def _step(self, state, batch):
        new, metrics = self.recipe.step(state, self._constrain_batch(batch))
        if self.skip_nonfinite:
            new, ok = keep_if_finite(state, new, metrics)
        else:
            new, ok = new._replace(step=state.step + 1, skipped=state.skipped), jnp.bool_(True)
        return self._constrain_state(new), metrics, ok

    def _order(self, state, epoch):
        return batch_order(self.recipe.order_key(state), epoch, self.num_train, self.batch_size)

    def _take(self, train_data, idx):
        return jax.tree.map(lambda a: None if a is None else a[idx], train_data)

    def _run(self, state, train_data, num_steps):
        """``num_steps`` steps from ``state.step`` (a traced bound: one program for all)."""
        spe = self.steps_per_epoch
        probe = jax.eval_shape(
            lambda s, d: self._step(s, self._take(d, self._order(s, 0)[0]))[1], state, train_data
        )
        zeros = jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), probe)

        def body(carry):
            state, order, total, count, i = carry
            b = state.step % spe
            order = jax.lax.cond(
                b == 0, lambda: self._order(state, state.step // spe), lambda: order
            )
            state, metrics, ok = self._step(state, self._take(train_data, order[b]))
            total = jax.tree.map(lambda t, m: t + jnp.where(ok, m, 0.0), total, metrics)
            return state, order, total, count + ok.astype(jnp.int32), i + 1

        order = self._order(state, state.step // spe)
        init = (state, order, zeros, jnp.zeros((), jnp.int32), jnp.zeros((), jnp.int32))
        state, _, total, count, _ = jax.lax.while_loop(lambda c: c[-1] < num_steps, body, init)
        mean = jax.tree.map(
            lambda t: jnp.where(count > 0, t / jnp.maximum(count, 1), jnp.nan).astype(t.dtype),
            total,
        )
        if self.progress is not None:
            jax.debug.callback(self.progress, state.step, mean)
        return state, mean

    def _run_epochs(self, state, num_epochs: int, train_data, eval_data):
        record = self.recipe.record or (lambda state, means, ev: (means, ev))

        def one(state, idx):
            state, metrics, ok = self._step(state, self._take(train_data, idx))
            return state, (metrics, ok)

        def epoch(state, _):
            order = self._order(state, state.step // self.steps_per_epoch)
            state, (metrics, ok) = jax.lax.scan(one, state, order)
            rec = record(state, _mean_where(ok, metrics), self.recipe.evaluate(state, eval_data))
            if self.progress is not None:
                jax.debug.callback(self.progress, state.step, rec)
            return state, rec

        return jax.lax.scan(epoch, state, None, length=num_epochs)

    # --- the public surface -------------------------------------------------------------

    def __call__(self, key: jax.Array, data: Any = None):
        """The whole run from ``key``; ``data`` (optional) replaces the arrays given at build."""
        if data is None:
            train_data, eval_data = self.train_data, self.eval_data
        else:
            unpack = self.recipe.unpack or (lambda d: d)
            train_data, eval_data = unpack(data)
        state = self._init(key)
        state, history = self._run_epochs(state, self.num_epochs, train_data, eval_data)
        result = self.recipe.result or (lambda state, history: (state, history))
        return result(state, history)

    def init(self, key: jax.Array):
        """The state before the first step (``trainer(key)``'s initialization)."""
        return self._place(self.compiled.init(key))

    def _check_steps(self, state, num_steps: int, what: str) -> None:
        if not (isinstance(state, tuple) and hasattr(state, "_fields") and "step" in state._fields):
            raise TypeError(f"state must be a TrainState; got {type(state).__name__}.")
        try:
            done = int(state.step)
        except jax.errors.ConcretizationTypeError:  # traced: the caller bounds it
            return
        steps = num_steps * (self.steps_per_epoch if what == "num_epochs" else 1)
        if done + steps > self.total_steps:
            raise ValueError(
                f"{what}={num_steps} from step {done} passes total_steps={self.total_steps} "
                f"({self.num_epochs} epochs of {self.steps_per_epoch} batches)."
            )

    def run(self, state, num_steps: int, train_data: Any = None):
        """Takes the next ``num_steps`` steps on the run's own batch order.

        One compiled program serves every ``num_steps`` (a traced loop bound),
        so splitting a run into pieces changes nothing in the numbers.

        Args:
          state: a state from ``init``, ``run``, ``step`` or ``restore``.
          num_steps: how many steps; ``state.step + num_steps`` may not pass
            ``total_steps``.
          train_data: the training arrays (default: the ones given at build).

        Returns:
          ``(state, mean_metrics)``: the step metrics averaged over the finite
          steps taken (NaN when none was).
        """
        num_steps = int(num_steps)
        if num_steps < 0:
            raise ValueError(f"num_steps must be >= 0; got {num_steps}.")
        self._check_steps(state, num_steps, "num_steps")
        data = self.train_data if train_data is None else train_data
        return self.compiled.run(state, data, jnp.asarray(num_steps, jnp.int32))

    def run_epochs(self, state, num_epochs: int, train_data: Any = None, eval_data: Any = None):
        """``num_epochs`` whole epochs from ``state`` (at an epoch boundary), evaluated after each.

        Returns:
          ``(state, history)``: the recipe's per-epoch records stacked over epochs.
        """
        num_epochs = int(num_epochs)
        if num_epochs < 1:
            raise ValueError(f"num_epochs must be >= 1; got {num_epochs}.")
        self._check_steps(state, num_epochs, "num_epochs")
        train = self.train_data if train_data is None else train_data
        ev = self.eval_data if eval_data is None else eval_data
        return self.compiled.run_epochs(state, num_epochs, train, ev)

    def step(self, state, batch):
        """One guarded step on a given batch (a streamed input); returns ``(state, metrics)``.

        The batch is checked on the host first when the package gives a check
        (shapes, ids against the model's vocabularies, DRGrad's finite labels
        0/1); non-finite values are not (a non-finite step is skipped and
        counted).
        """
        if self.recipe.check_batch is not None:
            self.recipe.check_batch(batch)
        state, metrics, _ = self.compiled.step(state, batch)
        return state, metrics

    def evaluate(self, state, eval_data: Any = None):
        """The package's evaluation of ``state`` on ``eval_data`` (default: the build's)."""
        return self.compiled.evaluate(state, self.eval_data if eval_data is None else eval_data)

    # --- checkpoints --------------------------------------------------------------------

    def _signature(self, state) -> dict:
        config = {
            "num_train": self.num_train,
            "batch_size": self.batch_size,
            "num_epochs": self.num_epochs,
        }
        config.update(self.recipe.signature or {})
        return _jsonable(
            {
                "config": config,
                "state": _abstract(state),
                "state_kinds": _state_kinds(state),
            }
        )

    def save(self, path: str | os.PathLike, state) -> None:
        """Writes ``state`` and this run's configuration signature as an orbax checkpoint.

        Args:
          path: a directory that does not exist yet (orbax writes atomically).
          state: the state to save.
        """
        import orbax.checkpoint as ocp

        path = os.path.abspath(os.fspath(path))
        leaves = [jax.random.key_data(x) if _is_key(x) else x for x in jax.tree.leaves(state)]
        ckptr = ocp.Checkpointer(ocp.CompositeCheckpointHandler())
        ckptr.save(
            path,
            ocp.args.Composite(
                state=ocp.args.StandardSave({f"{i:05d}": x for i, x in enumerate(leaves)}),
                meta=ocp.args.JsonSave(self._signature(state)),
            ),
        )

    def restore(self, path: str | os.PathLike):
        """Reads a checkpoint written by ``save`` for this same configuration.

        The arrays are read onto one device and then placed as this trainer
        places its state, so a checkpoint written with or without a mesh (of any
        number of devices) restores into a trainer with or without one.

        Raises:
          FileNotFoundError: no checkpoint at ``path``.
          ValueError: ``damaged checkpoint at <path>: ...`` when a part of the
            checkpoint is missing or unreadable (the message names it: the
            configuration signature ``meta/metadata``, the tree metadata
            ``state/_METADATA``, the array index ``state/manifest.ocdbt``, or a
            data file under ``state/``); otherwise, the checkpoint was written by
            a different configuration, and the message names what differs
            (configuration fields, the optimizer or transform states, the
            state's arrays and their shapes).
        """
        import orbax.checkpoint as ocp

        path = os.path.abspath(os.fspath(path))
        if not os.path.isdir(path):
            raise FileNotFoundError(f"no checkpoint directory at {path}.")
        ckptr = ocp.Checkpointer(ocp.CompositeCheckpointHandler())
        saved = self._read_intact_metadata(path, ckptr, ocp)
        template = jax.eval_shape(self.recipe.init, jax.random.key(0))
        self._check_signature(path, saved, template)
        leaves = jax.tree.leaves(template)
        # One device, whatever the writer's mesh was; ``_place`` then shards it.
        one = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
        abstract = {}
        for i, x in enumerate(leaves):
            x = jax.eval_shape(jax.random.key_data, x) if _is_key(x) else x
            abstract[f"{i:05d}"] = jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=one)
        try:
            got = ckptr.restore(
                path, ocp.args.Composite(state=ocp.args.StandardRestore(abstract))
            ).state
        except Exception as e:  # tensorstore reports a missing chunk as a bare Exception
            raise ValueError(_unreadable_arrays(path, saved, str(e))) from None
        out = []
        for i, x in enumerate(leaves):
            value = jnp.asarray(got[f"{i:05d}"])
            out.append(jax.random.wrap_key_data(value) if _is_key(x) else value)
        return self._place(jax.tree.unflatten(jax.tree.structure(template), out))

    def _read_intact_metadata(self, path: str, ckptr, ocp) -> dict:
        """The saved signature, after checking that every metadata file is present and whole."""
        if not any(os.path.exists(os.path.join(path, p)) for p in _CHECKPOINT_PARTS):
            raise ValueError(
                f"{path} is not a {self.name} checkpoint: it holds none of "
                f"{', '.join(_CHECKPOINT_PARTS)}."
            )
        missing = [
            f"{what} {rel}"
            for rel, what in _CHECKPOINT_FILES.items()
            if not os.path.isfile(os.path.join(path, rel))
        ]
        if missing:
            raise ValueError(f"damaged checkpoint at {path}: missing {'; '.join(missing)}.")

        def damaged(what):
            return ValueError(f"damaged checkpoint at {path}: {what}.")

        try:
            saved = ckptr.restore(path, ocp.args.Composite(meta=ocp.args.JsonRestore())).meta
        except Exception as e:  # orbax raises several types for a garbled item
            raise damaged(
                f"the configuration signature meta/metadata is unreadable ({e})"
            ) from None
        if not isinstance(saved, dict) or any(k not in saved for k in _SIGNATURE_KEYS):
            raise damaged(
                f"the configuration signature meta/metadata lacks {', '.join(_SIGNATURE_KEYS)}"
            )
        try:
            with open(os.path.join(path, "state", "_METADATA")) as f:
                tree = json.load(f)["tree_metadata"]
        except (OSError, ValueError, KeyError, TypeError) as e:
            raise damaged(f"the tree metadata state/_METADATA is unreadable ({e!r})") from None
        if len(tree) != len(saved["state"]):
            raise damaged(
                f"the tree metadata state/_METADATA lists {len(tree)} arrays but the "
                f"configuration signature records {len(saved['state'])}"
            )
        return saved

    def _check_signature(self, path: str, saved: dict, template) -> None:
        mine = self._signature(template)
        diffs = []
        for field, value in mine["config"].items():
            if field == "num_epochs" and self.recipe.fixed_length is None:
                continue  # the planned length: a longer trainer extends the run
            if field != "model" and saved["config"].get(field) != value:
                why = f" ({self.recipe.fixed_length})" if field == "num_epochs" else ""
                diffs.append(
                    f"config.{field}: checkpoint {saved['config'].get(field)!r}, here {value!r}"
                    f"{why}"
                )
        if saved["state_kinds"] != mine["state_kinds"]:
            diffs.append(
                "optimizer or transform state: checkpoint "
                f"{'+'.join(saved['state_kinds']) or 'none'}, "
                f"here {'+'.join(mine['state_kinds']) or 'none'}"
            )
        a = {p: (s, d) for p, s, d in saved["state"]}
        b = {p: (s, d) for p, s, d in mine["state"]}
        only_a, only_b = sorted(set(a) - set(b)), sorted(set(b) - set(a))
        if only_a:
            diffs.append(f"arrays only in the checkpoint: {', '.join(only_a[:4])}")
        if only_b:
            diffs.append(f"arrays missing from the checkpoint: {', '.join(only_b[:4])}")
        changed = [p for p in a if p in b and a[p] != b[p]]
        for p in changed[:4]:
            diffs.append(
                f"{p}: checkpoint shape {tuple(a[p][0])} {a[p][1]}, here {tuple(b[p][0])} {b[p][1]}"
            )
        # A model change that keeps every shape (an activation, a dropout rate) is
        # refused as well, not only one that shows in the arrays.
        if saved["config"].get("model") != mine["config"].get("model"):
            diffs.insert(
                0,
                f"model: checkpoint {saved['config'].get('model')}, "
                f"here {mine['config'].get('model')}",
            )
        if diffs:
            raise ValueError(
                f"checkpoint {path} was written by a different configuration:\n  "
                + "\n  ".join(diffs)
            )

    def model(self, state):
        """The trained network of ``state`` (evaluation use)."""
        if self.recipe.model is None:
            raise ValueError("this trainer's recipe has no model.")
        return self.recipe.model(state)

    def compilations(self) -> dict[str, int]:
        """How many programs each jitted function has compiled (one each in a steady run)."""
        return {k: f._cache_size() for k, f in self.compiled._asdict().items()}
