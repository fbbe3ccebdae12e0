"""Where a representation-level method cuts a model: its declared shared representation.

A representation-level method (``TrainConfig(space="activations")``) takes the
per-task gradients at a layer of the model instead of at the shared parameters
and pulls the combined one back through that layer once. The layer must be one
the tasks share, or the per-task gradients there are orthogonal by
construction. Each model declares it with ``trunk`` / ``heads`` (and DRGrad's
v1 / v_s with ``drgrad_trunk`` / ``drgrad_heads``); docs/drgrad.md, *Shared
representation*.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from drgrad_jax._src.data import Split
from drgrad_jax._src.transform import find_drgrad_state


def representation(config, abstract) -> tuple[str, str]:
    """The ``(trunk, heads)`` method names of ``config.model`` that the activations path cuts at."""
    params = nnx.to_pure_dict(nnx.state(abstract))
    is_drgrad = find_drgrad_state(jax.eval_shape(config.mtl_transform.init, params)) is not None
    if is_drgrad and hasattr(abstract, "drgrad_trunk"):
        return "drgrad_trunk", "drgrad_heads"
    if not (hasattr(abstract, "trunk") and hasattr(abstract, "heads")):
        raise ValueError(
            f"config.space='activations' needs a model that declares its shared representation "
            f"with trunk() and heads(); {type(abstract).__name__} has "
            f"{'no trunk()' if not hasattr(abstract, 'trunk') else 'no heads()'} "
            "(docs/drgrad.md, *Shared representation*)."
        )
    return "trunk", "heads"


def check_shared_layer(config, train: Split, names, num_tasks: int) -> None:
    """Refuses a representation where no tensor is read by two tasks (on a few rows, once)."""
    if num_tasks < 2:
        return
    model = config.model(rngs=nnx.Rngs(0))
    probe = jax.tree.map(lambda a: None if a is None else a[:8], train)
    trunk, heads = (getattr(model, n) for n in names)
    reps = trunk(probe.cat, probe.dense, probe.user)
    _, vjp = jax.vjp(lambda r: jnp.sum(heads(r), axis=0), reps)
    cotangents = jax.vmap(vjp)(jnp.eye(num_tasks))[0]
    flat = jnp.concatenate(
        [jnp.abs(c.reshape(num_tasks, -1)) for c in jax.tree.leaves(cotangents)], axis=1
    )
    overlap = flat @ flat.T
    if not bool(jnp.any(overlap[~np.eye(num_tasks, dtype=bool)] > 0)):
        name = type(model).__name__
        raise ValueError(
            f"config.space='activations': no tensor of {name}.{names[0]}() is read by more "
            "than one task, so the per-task gradients there are orthogonal by construction "
            "(each is zero wherever another is not): a method that compares tasks has nothing "
            "to compare (PCGrad never projects, MGDA only reweights by inverse norms). Return "
            f"the layer the tasks share from {names[0]}() "
            "(docs/drgrad.md, *Shared representation*), or use space='params'."
        )
