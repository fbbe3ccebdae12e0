"""Data-parallel ALM-MTA: where the state lives on a device mesh.

``make_train(config, data, mesh=mesh)`` runs the shared loop data-parallel:
the batch's leading (journey) axis is split over the mesh's data axis; the
whole ``TrainState`` (θ_G, θ_D, both optimizer states, the momentum key head,
the negative queue and the run key) is replicated, or, as an option, the large
id embedding tables and their optimizer moments are split along the vocabulary
axis (``state_sharding`` below). The step is the unchanged ``make_step``
function under ONE ``jax.jit``, so GSPMD partitions the global program and
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

from typing import Any

import jax
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from almmta_jax._src.step import TrainState
from drgrad_jax.parallel import check_mesh, replicated

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
      >>> from almmta_jax import ModelConfig, TrainConfig, make_train
      >>> from almmta_jax.testing import random_journeys
      >>> from drgrad_jax import parallel
      >>> cfg = TrainConfig(ModelConfig(vocab_sizes=(16,), d_x=2, max_len=3, d_model=8,
      ...     num_heads=2, ffn_dim=8, d_mediator=4, d_contrast=4), batch_size=8, queue_size=8)
      >>> trainer = make_train(cfg, random_journeys(jax.random.key(1), 8, cfg.model))
      >>> state = shard_state(trainer.init(jax.random.key(0)), parallel.make_mesh(4),
      ...                     shard_embeddings=True)
      >>> table = state.params["touch_embed"]["tables"][0]["embedding"][...]
      >>> table.shape, table.addressable_shards[0].data.shape
      ((16, 8), (4, 8))
    """
    return jax.device_put(
        state, state_sharding(state, mesh, axis=axis, shard_embeddings=shard_embeddings)
    )
