"""Where a representation-level method cuts a model: its declared shared representation.

A representation-level method (``TrainConfig(space="activations")``) takes the
per-task gradients at a layer of the model instead of at the shared parameters
and pulls the combined one back through that layer once. The layer must be one
the tasks share, or the per-task gradients there are orthogonal by
construction. Each model declares it with ``trunk`` / ``heads`` (and DRGrad's
v1 / v_s with ``drgrad_trunk`` / ``drgrad_heads``); docs/drgrad.md, *Shared
representation*. A model may also give the heads on one copy of the
representation per task, ``task_heads`` (``drgrad_task_heads``), which the
activations path then uses: the K cotangents in one backward pass through the
heads.
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


def task_heads_name(abstract, heads: str) -> str | None:
    """The per-task-copies form of the model's ``heads`` method (``task_heads``), if it has one.

    Only one defined with ``heads`` or below it counts: a subclass that
    overrides ``heads`` alone inherits a ``task_heads`` of other heads.
    """
    name = heads.replace("heads", "task_heads")
    mro = type(abstract).__mro__
    owner = {n: next((c for c in mro if n in vars(c)), None) for n in (heads, name)}
    if owner[name] is None or owner[heads] is None or not issubclass(owner[name], owner[heads]):
        return None
    return name


def check_shared_layer(config, train: Split, names, num_tasks: int) -> None:
    """Refuses a representation no two tasks read, or ``task_heads`` that disagree with ``heads``.

    Both are checked once, on a few rows: the cotangents of the summed logits
    at the representation, per task, through ``heads`` (one-hot) and through
    the per-task copies of ``task_heads`` must agree.
    """
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
    per_task = task_heads_name(model, names[1])
    if per_task is not None:
        copies = jax.tree.map(lambda r: jnp.broadcast_to(r, (num_tasks,) + r.shape), reps)
        got = jax.grad(lambda c: jnp.sum(getattr(model, per_task)(c)))(copies)
        pairs = zip(jax.tree.leaves(got), jax.tree.leaves(cotangents))
        if not all(np.allclose(a, b, rtol=1e-4, atol=1e-6) for a, b in pairs):
            raise ValueError(
                f"{type(model).__name__}.{per_task}() gives other per-task cotangents than "
                f"{names[1]}(): task k must read copy k of every tensor and nothing else "
                "(docs/drgrad.md, *Shared representation*)."
            )
