"""Which multi-task transforms may take per-task gradients whose shared leaves are summed.

``per_task_grads(..., shared="summed")`` (``TrainConfig(shared_grads="summed")``)
spends one backward pass on the shared parameters and puts each shared leaf's
task-summed gradient in row 0 of its task axis, the other rows zero. That is
exact for a rule that only sums the tasks on shared leaves (``drgrad`` in
parameter space, an equal-weight ``linear_scalarization`` or ``mean``) and
wrong for every rule that compares them (docs/drgrad.md, *Using the
transformations*). The transform is recognised by the library state its
``init`` builds, also inside a chain or a wrapper.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

from drgrad_jax._src.linear_scalarization import LinearScalarizationState, MeanState
from drgrad_jax._src.transform import DRGradState

SUMMING_STATES = (DRGradState, LinearScalarizationState, MeanState)


def _state_types(tree: Any) -> set[type]:
    """The classes of the library's transform states inside an optimizer state."""
    if isinstance(tree, tuple) and hasattr(tree, "_fields"):
        if type(tree).__module__.startswith("drgrad_jax."):
            return {type(tree)}  # a method's own state; its fields are its business
        return set().union(*(_state_types(x) for x in tree))
    if isinstance(tree, (tuple, list)):
        return set().union(*(_state_types(x) for x in tree))
    if isinstance(tree, dict):
        return set().union(*(_state_types(x) for x in tree.values()))
    return set()


def _fixed_weights(tx: optax.GradientTransformation, num_tasks: int) -> np.ndarray | None:
    """The weights of a lone fixed weighting (its update of the identity), or None."""
    eye = {"w": jnp.eye(num_tasks)}
    try:
        return np.asarray(tx.update(eye, tx.init({"w": jnp.zeros(num_tasks)}))[0]["w"])
    except (ValueError, TypeError, KeyError):  # not a lone fixed weighting: nothing to read
        return None


def check_summed_shared_grads(
    mtl_transform: optax.GradientTransformation | None, params: Any, num_tasks: int
) -> None:
    """Refuses a transform that compares tasks on shared leaves, saying what to use instead.

    Args:
      mtl_transform: the multi-task transform, or ``None`` (the plain sum: accepted).
      params: the parameters (arrays or ``ShapeDtypeStruct`` s; only shapes are read).
      num_tasks: ``K``.

    Raises:
      ValueError: the transform's state is a library method other than
        ``drgrad``, ``linear_scalarization`` and ``mean`` (the message says to
        use ``shared_grads='per_task'``), or a ``linear_scalarization`` with
        unequal weights (the message says to move them to the loss weights).

    Example:
      >>> import jax.numpy as jnp
      >>> from drgrad_jax._src.pcgrad import pcgrad
      >>> check_summed_shared_grads(pcgrad(), {"w": jnp.ones(2)}, 2)
      Traceback (most recent call last):
      ...
      ValueError: config.shared_grads='summed' keeps only ... Use shared_grads='per_task' ...
    """
    if mtl_transform is None:
        return
    kinds = _state_types(jax.eval_shape(mtl_transform.init, params))
    comparing = sorted(t.__name__ for t in kinds - set(SUMMING_STATES))
    if comparing:
        raise ValueError(
            "config.shared_grads='summed' keeps only the task sum of the shared parameters' "
            f"gradients (in row 0, the other rows zero), but config.mtl_transform "
            f"({', '.join(comparing)}) compares the tasks' gradients on shared parameters, so "
            "its update would be wrong. Use shared_grads='per_task' (the default: one row per "
            "task on shared parameters) with this transform; 'summed' suits only drgrad in "
            "parameter space and an equal-weight linear_scalarization or mean."
        )
    if LinearScalarizationState in kinds and DRGradState not in kinds:
        w = _fixed_weights(mtl_transform, num_tasks)
        if w is not None and not np.allclose(w, w[0]):
            raise ValueError(
                "config.shared_grads='summed' keeps only the task sum of the shared parameters' "
                "gradients, but config.mtl_transform weights the tasks unequally "
                f"({np.round(w, 4).tolist()}), which needs each task's own gradient. Put the "
                "weights in config.task_weights (they scale the losses before the sum, so "
                "'summed' stays exact) with linear_scalarization(), or use "
                "shared_grads='per_task'."
            )
