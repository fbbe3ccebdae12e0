"""drgrad_jax: multi-task gradient routing (DRGrad) and its baselines as optax transforms.

Every multi-task transformation here takes per-task gradients as ONE pytree whose
leaves carry a leading task axis ``[num_tasks, *param_shape]`` and returns one
update with the params' shape, so it composes with any optax optimizer::

    tx = optax.chain(drgrad_jax.drgrad(...), optax.adam(1e-3))
"""

# --- the per-task-gradient contract -------------------------------------------
from drgrad_jax._src.task_grads import (
    SHARED,
    RepGrads,
    check_task_grads,
    gramian,
    per_task_grads,
    per_task_rep_grads,
    sum_tasks,
)

# --- DRGrad: router, updater, transformation ----------------------------------
from drgrad_jax._src.routing import RouterDiagnostics
from drgrad_jax._src.routing import released_code_route
from drgrad_jax._src.routing import route
from drgrad_jax._src.transform import DRGradState
from drgrad_jax._src.transform import drgrad
from drgrad_jax._src.transform import find_drgrad_state
from drgrad_jax._src.transform import mixing_weights

# --- the multi-task gradient method zoo ----------------------------------------

# --- models, data, metrics, training (submodules) ------------------------------

__version__ = "0.1.0"

__all__ = [
    "DRGradState",
    "RouterDiagnostics",
    "drgrad",
    "find_drgrad_state",
    "mixing_weights",
    "released_code_route",
    "route",
    "SHARED",
    "RepGrads",
    "check_task_grads",
    "gramian",
    "per_task_grads",
    "per_task_rep_grads",
    "sum_tasks",
]
