"""Data-parallel ALM-MTA: the one jitted min-max step over a device mesh.

The batch's leading (journey) axis is split over the mesh's data axis; the
whole ``TrainState`` (θ_G, θ_D, both optimizer states, the momentum key head,
the negative queue and the run key) is replicated, or, as an option, the large
id embedding tables and their optimizer moments are split along the vocabulary
axis. The step is the unchanged ``make_step`` function under ONE ``jax.jit``
with explicit in/out shardings, so GSPMD partitions the global program and
inserts the all-reduces; no per-device code is written.

Because the program is the global one, the things that could differ across
devices are equal by construction:

* dropout masks come from ``fold_in(rng, step)`` over the global ``[B, ...]``
  shape, and JAX's partitionable threefry (``jax_threefry_partitionable``,
  the default) draws the same bits whatever the sharding;
* the negative queue enqueues the first ``min(B, Q)`` momentum keys of the
  GLOBAL batch, one ring buffer replicated on every device;
* losses and gradients are means over the global batch (the model holds no
  batch statistics; layer norms act per touch).

What remains is floating-point summation order in the all-reduces, so 8
devices match 1 device to float tolerance, not bit for bit (tested).

Mesh construction and batch placement reuse ``drgrad_jax.parallel``
(``make_mesh``, ``shard_batch``, ``host_local_to_global``,
``initialize_multihost``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
from flax import nnx
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from almmta_jax._src.networks import ALMMTA
from almmta_jax._src.train import (
    TrainConfig,
    TrainState,
    adversary_weight,
    init_state,
    keep_if_finite,
    make_step,
    restore_checkpoint,
    split_model,
)
from drgrad_jax.parallel import batch_sharding, check_mesh, replicated

# Parameter paths of the id embedding tables (touch id fields and users).
_EMBEDDING_TABLES = ("'tables'", "'user_table'")


def _is_embedding_table(path) -> bool:
    name = jax.tree_util.keystr(path)
    return any(t in name for t in _EMBEDDING_TABLES) and "'embedding'" in name


def state_sharding(
    state: TrainState, mesh: Mesh, *, axis: str = "data", shard_embeddings: bool = False
) -> Any:
    """The ``NamedSharding`` of every leaf of an ALM-MTA ``TrainState``.

    Every leaf is replicated over ``mesh``. With ``shard_embeddings=True`` the
    id embedding tables (``touch_embed.tables[*]``, ``user_encoder.user_table``)
    and their optimizer moments are split along the vocabulary (row) axis over
    ``axis``, ``PartitionSpec(axis, None)``, when their row count is divisible
    by the axis size; smaller or indivisible tables stay replicated. This cuts
    each device's share of the tables (the bulk of the parameters at real
    vocabulary sizes) by the number of devices.

    Args:
      state: a ``TrainState`` (arrays or ``jax.ShapeDtypeStruct`` s).
      mesh: a ``jax.sharding.Mesh`` (``drgrad_jax.parallel.make_mesh``).
      axis: the mesh axis of the data (and, optionally, of the tables).
      shard_embeddings: split the embedding tables along their vocabulary axis.

    Returns:
      A pytree of ``NamedSharding`` with the structure of ``state``.

    Raises:
      TypeError: ``state`` is not a ``TrainState`` or ``mesh`` is not a Mesh.
      ValueError: ``axis`` is not an axis of ``mesh``.
    """
    if not isinstance(state, TrainState):
        raise TypeError(f"state must be a TrainState, got {type(state).__name__}.")
    check_mesh(mesh, axis)
    full = replicated(mesh)
    rows = NamedSharding(mesh, PartitionSpec(axis, None))
    size = mesh.shape[axis]

    def pick(path, leaf):
        shape = getattr(leaf, "shape", ())
        if (
            shard_embeddings
            and len(shape) == 2
            and shape[0] % size == 0
            and _is_embedding_table(path)
        ):
            return rows
        return full

    return jax.tree_util.tree_map_with_path(pick, state)


def shard_state(
    state: TrainState, mesh: Mesh, *, axis: str = "data", shard_embeddings: bool = False
) -> TrainState:
    """Places a ``TrainState`` on ``mesh`` as ``state_sharding`` says (see there).

    On several hosts every host must pass the same state (initialize it from the
    same key, or restore the same checkpoint).

    Example:
      >>> import jax
      >>> from almmta_jax import ModelConfig, TrainConfig, init_state
      >>> from drgrad_jax import parallel
      >>> cfg = TrainConfig(ModelConfig(vocab_sizes=(16,), d_x=2, max_len=3, d_model=8,
      ...     num_heads=2, ffn_dim=8, d_mediator=4, d_contrast=4), batch_size=8, queue_size=8)
      >>> state = shard_state(init_state(cfg, jax.random.key(0))[1], parallel.make_mesh(4),
      ...                     shard_embeddings=True)
      >>> table = state.params["touch_embed"]["tables"][0]["embedding"][...]
      >>> table.shape, table.addressable_shards[0].data.shape
      ((16, 8), (4, 8))
    """
    return jax.device_put(
        state, state_sharding(state, mesh, axis=axis, shard_embeddings=shard_embeddings)
    )


def data_parallel_step(
    config: TrainConfig,
    mesh: Mesh,
    *,
    steps_per_epoch: int,
    axis: str = "data",
    shard_embeddings: bool = False,
    skip_nonfinite: bool = True,
) -> Callable[[TrainState, Any], tuple[TrainState, Any]]:
    """The ALM-MTA min-max step, jitted once with the batch split over ``mesh``.

    ``step(state, batch) -> (state, StepMetrics)`` is ``make_step(config, ...)``
    (every mode: ``"grl"``, ``"simultaneous"``, ``"alternating"``) under one
    ``jax.jit`` with ``in_shardings = (state_sharding, batch_sharding)`` and
    the new state sharded the same way, metrics replicated. The gradient of the
    mean loss over the global batch ``B`` is ``(1/B) Σ_devices Σ_{b in shard}
    ∇ℓ_b``: GSPMD computes the inner sums locally and all-reduces them.

    The adversary schedule λ_t (docs/almmta.md, *Gradient reversal and the min-max step*) is the one ``make_trainer`` uses for
    ``N = steps_per_epoch * batch_size`` journeys: warm-up ``config.warmup_steps``
    (one epoch when ``None``), ramp over ``steps_per_epoch * config.epochs`` steps.

    Feed it a batch placed with ``drgrad_jax.parallel.shard_batch(batch, mesh)``
    (one host) or ``host_local_to_global(local_batch, mesh)`` (several hosts),
    and a state placed with ``shard_state``; NumPy inputs are placed on the fly.
    The global batch size must be divisible by the data-axis size.

    With ``skip_nonfinite=True`` (the default) a step whose new parameters,
    optimizer states, key head or queue hold a NaN or an infinity (a corrupt
    batch, an overflow) is dropped: the state is kept as it was, only the step
    counter advances (so a data stream resumed at ``state.step`` stays aligned),
    and the returned ``StepMetrics`` carry the non-finite losses, so the skip
    is visible in the logs. Parameters therefore never turn NaN silently. On
    finite steps the result is exactly the unguarded step's.

    Args:
      config: a ``TrainConfig``.
      mesh: a ``jax.sharding.Mesh``.
      steps_per_epoch: training steps per epoch (fixes λ_t's schedule).
      axis: the mesh axis the batch is split over.
      shard_embeddings: also split the embedding tables (see ``state_sharding``).
      skip_nonfinite: drop steps that would write a non-finite value into the
        state (see above).

    Returns:
      The jitted ``step(state, batch) -> (state, StepMetrics)``.

    Raises:
      TypeError: ``config`` is not a ``TrainConfig`` or ``mesh`` not a Mesh.
      ValueError: ``steps_per_epoch < 1``, an unknown ``axis``, or
        ``config.batch_size`` not divisible by the axis size.

    Example:
      >>> import jax
      >>> from almmta_jax import ModelConfig, TrainConfig, init_state, random_journeys
      >>> from drgrad_jax import parallel
      >>> cfg = TrainConfig(ModelConfig(vocab_sizes=(7,), d_x=2, max_len=3, d_model=8,
      ...     num_heads=2, ffn_dim=8, d_mediator=4, d_contrast=4), batch_size=8, queue_size=8)
      >>> mesh = parallel.make_mesh(4)
      >>> step = data_parallel_step(cfg, mesh, steps_per_epoch=10)
      >>> state = shard_state(init_state(cfg, jax.random.key(0))[1], mesh)
      >>> batch = parallel.shard_batch(random_journeys(jax.random.key(1), 8, cfg.model), mesh)
      >>> state, metrics = step(state, batch)
      >>> int(state.step), batch.y.addressable_shards[0].data.shape
      (1, (2,))

    References:
      Liu et al., "ALM-MTA: Front-Door Causal Multi-Touch Attribution Method for
      Creator-Ecosystem Optimization", ICLR 2026, https://arxiv.org/abs/2605.08881.
      JAX documentation, "Distributed arrays and automatic parallelization":
      https://docs.jax.dev/en/latest/notebooks/Distributed_arrays_and_automatic_parallelization.html
    """
    if not isinstance(config, TrainConfig):
        raise TypeError(f"config must be a TrainConfig, got {type(config).__name__}.")
    check_mesh(mesh, axis)
    if isinstance(steps_per_epoch, bool) or int(steps_per_epoch) < 1:
        raise ValueError(f"steps_per_epoch must be a positive int, got {steps_per_epoch!r}.")
    size = mesh.shape[axis]
    if config.batch_size % size:
        raise ValueError(
            f"config.batch_size={config.batch_size} is not divisible by the {size} devices of "
            f"mesh axis {axis!r}; each device must hold the same number of journeys."
        )
    spe = int(steps_per_epoch)
    total = spe * config.epochs
    warmup = spe if config.warmup_steps is None else config.warmup_steps
    schedule = lambda step: adversary_weight(step, config.lambda_max, warmup, total)
    graphdef = split_model(nnx.eval_shape(lambda: ALMMTA(config.model, rngs=nnx.Rngs(0))))[0]
    raw_step = make_step(config, graphdef)
    abstract = jax.eval_shape(lambda k: init_state(config, k)[1], jax.random.key(0))
    s_shard = state_sharding(abstract, mesh, axis=axis, shard_embeddings=shard_embeddings)

    def step(state, batch):
        new, metrics = raw_step(state, batch, schedule=schedule)
        if skip_nonfinite:
            new = keep_if_finite(state, new)
        return new, metrics

    return jax.jit(
        step,
        in_shardings=(s_shard, batch_sharding(mesh, axis)),
        out_shardings=(s_shard, replicated(mesh)),
    )


def restore_checked(path, like: TrainState) -> TrainState:
    """``restore_checkpoint``, which checks the checkpoint fits ``like`` array by array.

    Kept as a name of its own for code that resumes sharded runs; pass
    ``shard_state(...)`` of a fresh state as ``like`` to restore straight onto
    a mesh. See ``restore_checkpoint`` for the arguments and errors.
    """
    return restore_checkpoint(path, like)
