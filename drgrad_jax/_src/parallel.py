"""Data parallelism over a device mesh with ``jax.sharding``.

A 1-D mesh over the devices, the batch's leading axis split across it, the
parameters and optimizer state replicated: then a plain ``jax.jit`` step runs
data-parallel and GSPMD inserts the gradient all-reduces. The multi-task
transforms see the same per-task gradients as on one device, so they work
unchanged.

One host::

    mesh = parallel.make_mesh()                # all local devices, axis "data"
    batch = parallel.shard_batch(batch, mesh)  # leading axis split
    params = parallel.replicate(params, mesh)

Several hosts (one process per host, all running the same program)::

    parallel.initialize_multihost()            # jax.distributed.initialize
    mesh = parallel.make_mesh()                # the GLOBAL mesh over jax.devices()
    i, n = jax.process_index(), jax.process_count()
    local = load_shards(files[i::n])           # each host reads its own shard
    batch = parallel.host_local_to_global(local, mesh)
"""

from __future__ import annotations

from typing import Any

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec


def make_mesh(num_devices: int | None = None, axis: str = "data") -> Mesh:
    """A 1-D device mesh over the first ``num_devices`` devices of ``jax.devices()``.

    On several hosts ``jax.devices()`` lists every process's devices, so the
    mesh is global; call it after ``initialize_multihost``.

    Args:
      num_devices: how many devices (default: all of them).
      axis: the name of the mesh axis the batch is split over.

    Returns:
      A ``jax.sharding.Mesh`` of shape ``{axis: num_devices}``.

    Raises:
      ValueError: ``num_devices`` is not a positive int or exceeds the devices
        available; ``axis`` is not a non-empty string.

    Example:
      >>> from drgrad_jax import parallel
      >>> mesh = parallel.make_mesh(4)
      >>> dict(mesh.shape)
      {'data': 4}
    """
    if not isinstance(axis, str) or not axis:
        raise ValueError(f"axis must be a non-empty string; got {axis!r}.")
    devices = jax.devices()
    if num_devices is None:
        num_devices = len(devices)
    if isinstance(num_devices, bool) or not isinstance(num_devices, (int, np.integer)):
        raise ValueError(f"num_devices must be a positive int or None; got {num_devices!r}.")
    if num_devices < 1:
        raise ValueError(f"num_devices must be >= 1; got {num_devices}.")
    if num_devices > len(devices):
        raise ValueError(
            f"num_devices={num_devices} exceeds the {len(devices)} available "
            f"{devices[0].platform} device(s). On CPU, set "
            "XLA_FLAGS=--xla_force_host_platform_device_count=N before importing jax."
        )
    return Mesh(np.asarray(devices[: int(num_devices)]), (axis,))


def check_mesh(mesh: Any, axis: str = "data") -> None:
    """Raises unless ``mesh`` is a ``jax.sharding.Mesh`` with an axis named ``axis``.

    Example:
      >>> from drgrad_jax import parallel
      >>> parallel.check_mesh(parallel.make_mesh(2), "model")
      Traceback (most recent call last):
      ...
      ValueError: axis='model' is not a mesh axis; the mesh has ('data',).
    """
    if not isinstance(mesh, Mesh):
        raise TypeError(f"mesh must be a jax.sharding.Mesh; got {type(mesh).__name__}.")
    if axis not in mesh.axis_names:
        raise ValueError(f"axis={axis!r} is not a mesh axis; the mesh has {mesh.axis_names}.")


_check_mesh = check_mesh  # the former private name, still imported by unconverted callers


def batch_sharding(mesh: Mesh, axis: str = "data") -> NamedSharding:
    """The sharding that splits an array's leading (batch) axis over ``axis``.

    Args:
      mesh: a ``jax.sharding.Mesh``.
      axis: the mesh axis to split over.

    Returns:
      ``NamedSharding(mesh, PartitionSpec(axis))``; trailing axes are replicated.

    Example:
      >>> from drgrad_jax import parallel
      >>> tuple(parallel.batch_sharding(parallel.make_mesh(2)).spec)
      ('data',)
    """
    check_mesh(mesh, axis)
    return NamedSharding(mesh, PartitionSpec(axis))


def replicated(mesh: Mesh) -> NamedSharding:
    """The sharding that keeps a full copy of an array on every device of ``mesh``.

    Example:
      >>> from drgrad_jax import parallel
      >>> parallel.replicated(parallel.make_mesh(2)).is_fully_replicated
      True
    """
    if not isinstance(mesh, Mesh):
        raise TypeError(f"mesh must be a jax.sharding.Mesh; got {type(mesh).__name__}.")
    return NamedSharding(mesh, PartitionSpec())


def _check_leading(tree: Any, size: int, axis: str, what: str) -> None:
    for path, leaf in jax.tree_util.tree_leaves_with_path(tree):
        shape = np.shape(leaf)
        name = jax.tree_util.keystr(path) or "<root>"
        if len(shape) == 0:
            raise ValueError(f"{what} leaf {name} is a scalar; it needs a leading batch axis.")
        if shape[0] % size:
            raise ValueError(
                f"{what} leaf {name} has leading size {shape[0]} (shape {shape}), not "
                f"divisible by the {size} devices of mesh axis {axis!r}."
            )


def shard_batch(tree: Any, mesh: Mesh, axis: str = "data") -> Any:
    """Puts every leaf of ``tree`` on ``mesh`` with its leading axis split over ``axis``.

    Single-process only (every leaf must hold the whole global batch); with
    several processes use ``host_local_to_global``.

    Args:
      tree: a pytree of arrays with a common leading batch axis (``None``
        leaves are kept).
      mesh: a ``jax.sharding.Mesh``.
      axis: the mesh axis to split over.

    Returns:
      The same pytree of ``jax.Array`` s sharded by ``batch_sharding(mesh, axis)``.

    Raises:
      ValueError: a leaf is a scalar or its leading size is not divisible by
        the mesh axis size (the message names the leaf path and its size).

    Example:
      >>> import numpy as np
      >>> from drgrad_jax import parallel
      >>> mesh = parallel.make_mesh(4)
      >>> x = parallel.shard_batch({"x": np.zeros((8, 3))}, mesh)["x"]
      >>> [s.data.shape for s in x.addressable_shards]
      [(2, 3), (2, 3), (2, 3), (2, 3)]
    """
    check_mesh(mesh, axis)
    _check_leading(tree, mesh.shape[axis], axis, "batch")
    return jax.device_put(tree, batch_sharding(mesh, axis))


def replicate(tree: Any, mesh: Mesh) -> Any:
    """Puts every leaf of ``tree`` (parameters, optimizer state) on all devices of ``mesh``.

    Example:
      >>> import numpy as np
      >>> from drgrad_jax import parallel
      >>> w = parallel.replicate({"w": np.ones(3)}, parallel.make_mesh(2))["w"]
      >>> w.sharding.is_fully_replicated, len(w.addressable_shards)
      (True, 2)
    """
    return jax.device_put(tree, replicated(mesh))


def host_local_to_global(tree: Any, mesh: Mesh, axis: str = "data") -> Any:
    """Assembles each process's local batch into one global batch sharded over ``axis``.

    Every process passes the rows it read itself (its shard of the files); the
    result is a global ``jax.Array`` whose leading size is the sum over
    processes, split over the mesh, built with
    ``jax.make_array_from_process_local_data``. With one process it equals
    ``shard_batch``.

    Args:
      tree: a pytree of host-local NumPy arrays with a common leading axis,
        divisible by the number of this process's devices in ``mesh``.
      mesh: the global mesh (``make_mesh()`` after ``initialize_multihost``).
      axis: the mesh axis to split over.

    Returns:
      The pytree of global sharded arrays.

    Raises:
      ValueError: a local leading size not divisible by the local devices.

    Example:
      >>> import numpy as np
      >>> from drgrad_jax import parallel
      >>> mesh = parallel.make_mesh(4)
      >>> x = parallel.host_local_to_global(np.arange(8.0)[:, None], mesh)
      >>> x.shape, tuple(x.sharding.spec)
      ((8, 1), ('data',))
    """
    check_mesh(mesh, axis)
    local = sum(d.process_index == jax.process_index() for d in mesh.devices.flat)
    _check_leading(tree, max(local, 1), axis, "host-local batch")
    sharding = batch_sharding(mesh, axis)
    return jax.tree.map(
        lambda a: jax.make_array_from_process_local_data(sharding, np.asarray(a)), tree
    )


def initialize_multihost(**kwargs: Any) -> None:
    """Connects this process to the others of a multi-host run (``jax.distributed.initialize``).

    Call it once per process, before any other JAX call. On Cloud TPU, SLURM and
    Open MPI launches the arguments are detected; elsewhere pass
    ``coordinator_address="host0:1234", num_processes=N, process_id=i``.

    The recipe after it, identical on every host:

    1. ``mesh = make_mesh()`` builds the global mesh over ``jax.devices()``
       (every host's devices, in the same order on every host).
    2. Each host reads only its own shard of the input files, e.g.
       ``files[jax.process_index()::jax.process_count()]``, so no host holds
       the whole data set.
    3. ``host_local_to_global(local_batch, mesh)`` assembles the global batch
       with ``jax.make_array_from_process_local_data``; parameters go through
       ``replicate`` (every host initializes them from the same key).
    4. The same jitted step runs on every host; GSPMD all-reduces gradients
       across hosts as across local devices.

    Args:
      **kwargs: forwarded to ``jax.distributed.initialize``
        (``coordinator_address``, ``num_processes``, ``process_id``,
        ``local_device_ids``, ...).

    References:
      JAX documentation, "Multi-host and multi-process environments":
      https://docs.jax.dev/en/latest/multi_process.html
    """
    jax.distributed.initialize(**kwargs)
