"""drgrad_jax: multi-task gradient routing (DRGrad) and its baselines as optax transforms.

Every multi-task transformation here takes per-task gradients as ONE pytree whose
leaves carry a leading task axis ``[num_tasks, *param_shape]`` and returns one
update with the params' shape, so it composes with any optax optimizer::

    tx = optax.chain(drgrad_jax.drgrad(...), optax.adam(1e-3))
"""

# ruff: noqa: I001  (imports are grouped by topic below, not alphabetically)

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
from drgrad_jax._src.aligned_mtl import AlignedMTLState
from drgrad_jax._src.aligned_mtl import aligned_mtl
from drgrad_jax._src.aligned_mtl import aligned_mtl_weights
from drgrad_jax._src.cagrad import CAGradState
from drgrad_jax._src.cagrad import cagrad
from drgrad_jax._src.cagrad import cagrad_weights
from drgrad_jax._src.gradvac import GradVacState
from drgrad_jax._src.gradvac import gradvac
from drgrad_jax._src.gradvac import gradvac_weights
from drgrad_jax._src.imtl import IMTLGState
from drgrad_jax._src.imtl import imtl_g
from drgrad_jax._src.imtl import imtl_g_weights
from drgrad_jax._src.linear_scalarization import LinearScalarizationState
from drgrad_jax._src.linear_scalarization import linear_scalarization
from drgrad_jax._src.loss_weighting import DWAState
from drgrad_jax._src.loss_weighting import UncertaintyWeightingState
from drgrad_jax._src.loss_weighting import dwa
from drgrad_jax._src.loss_weighting import uncertainty_weighting
from drgrad_jax._src.mgda import MGDAState
from drgrad_jax._src.mgda import mgda
from drgrad_jax._src.min_norm import box_qp_weights
from drgrad_jax._src.min_norm import min_norm_weights
from drgrad_jax._src.nash_mtl import NashMTLState
from drgrad_jax._src.nash_mtl import nash_mtl
from drgrad_jax._src.nash_mtl import nash_mtl_weights
from drgrad_jax._src.pcgrad import PCGradState
from drgrad_jax._src.pcgrad import pcgrad
from drgrad_jax._src.pcgrad import pcgrad_weights
from drgrad_jax._src.upgrad import UPGradState
from drgrad_jax._src.upgrad import upgrad
from drgrad_jax._src.upgrad import upgrad_weights

# --- models, data, metrics, training (submodules) ------------------------------
from drgrad_jax import data, metrics, models
from drgrad_jax._src.train import TrainConfig
from drgrad_jax._src.train import TrainResult
from drgrad_jax._src.train import TrainState
from drgrad_jax._src.loop import Trainer
from drgrad_jax._src.train import device_splits
from drgrad_jax._src.train import make_train
from drgrad_jax._src.train import select_by_validation

# --- data parallelism over a device mesh, the shared training loop (submodules) ---
from drgrad_jax import loop, parallel

__version__ = "0.1.0"

__all__ = [
    "TrainConfig",
    "TrainResult",
    "TrainState",
    "Trainer",
    "data",
    "device_splits",
    "loop",
    "make_train",
    "metrics",
    "models",
    "parallel",
    "select_by_validation",
    "AlignedMTLState",
    "aligned_mtl",
    "aligned_mtl_weights",
    "CAGradState",
    "cagrad",
    "cagrad_weights",
    "GradVacState",
    "gradvac",
    "gradvac_weights",
    "IMTLGState",
    "imtl_g",
    "imtl_g_weights",
    "LinearScalarizationState",
    "linear_scalarization",
    "DWAState",
    "UncertaintyWeightingState",
    "dwa",
    "uncertainty_weighting",
    "MGDAState",
    "mgda",
    "box_qp_weights",
    "min_norm_weights",
    "NashMTLState",
    "nash_mtl",
    "nash_mtl_weights",
    "PCGradState",
    "pcgrad",
    "pcgrad_weights",
    "UPGradState",
    "upgrad",
    "upgrad_weights",
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
