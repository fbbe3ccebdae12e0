"""drgrad_jax: multi-task gradient routing (DRGrad) and its baselines as optax transforms.

Every multi-task transformation here takes per-task gradients as ONE pytree whose
leaves carry a leading task axis ``[num_tasks, *param_shape]`` and returns one
update with the params' shape, so it composes with any optax optimizer::

    tx = optax.chain(drgrad_jax.drgrad(...), optax.adam(1e-3))
"""

# ruff: noqa: I001  (imports are grouped by topic below, not alphabetically)

# --- the per-task-gradient contract -------------------------------------------
from drgrad_jax._src.gramian import gramian, scaled_gramian
from drgrad_jax._src.task_grads import (
    SHARED,
    RepGrads,
    check_task_grads,
    per_task_grads,
    per_task_rep_grads,
    sum_tasks,
)

# --- DRGrad: router, updater, transformation ----------------------------------
from drgrad_jax._src.routing import RouterDiagnostics
from drgrad_jax._src.routing import released_code_route
from drgrad_jax._src.routing import route
from drgrad_jax._src.released import drgrad_released
from drgrad_jax._src.transform import DRGradState
from drgrad_jax._src.transform import drgrad
from drgrad_jax._src.transform import find_drgrad_state
from drgrad_jax._src.transform import mixing_weights
from drgrad_jax._src.transform import transform_space

# --- the multi-task gradient method zoo ----------------------------------------
from drgrad_jax._src.aligned_mtl import AlignedMTLState
from drgrad_jax._src.aligned_mtl import aligned_mtl
from drgrad_jax._src.aligned_mtl import aligned_mtl_weights
from drgrad_jax._src.cagrad import CAGradState
from drgrad_jax._src.cagrad import cagrad
from drgrad_jax._src.cagrad import cagrad_weights
from drgrad_jax._src.conflict_free import ConflictFreeState
from drgrad_jax._src.conflict_free import conflict_free
from drgrad_jax._src.conflict_free import conflict_free_weights
from drgrad_jax._src.cr_mogm import CRMOGMState
from drgrad_jax._src.cr_mogm import cr_mogm
from drgrad_jax._src.db_mtl import DBMTLState
from drgrad_jax._src.db_mtl import db_mtl
from drgrad_jax._src.dualproj import DualProjState
from drgrad_jax._src.dualproj import dualproj
from drgrad_jax._src.dualproj import dualproj_weights
from drgrad_jax._src.excess_mtl import ExcessMTLState
from drgrad_jax._src.excess_mtl import excess_mtl
from drgrad_jax._src.fairgrad import FairGradState
from drgrad_jax._src.fairgrad import fairgrad
from drgrad_jax._src.fairgrad import fairgrad_weights
from drgrad_jax._src.famo import FAMOState
from drgrad_jax._src.famo import famo
from drgrad_jax._src.geometric_mean import GeometricMeanState
from drgrad_jax._src.geometric_mean import geometric_mean
from drgrad_jax._src.graddrop import GradDropState
from drgrad_jax._src.graddrop import graddrop
from drgrad_jax._src.graddrop import graddrop_combine
from drgrad_jax._src.gradnorm import GradNormState
from drgrad_jax._src.gradnorm import gradnorm
from drgrad_jax._src.gradvac import GradVacState
from drgrad_jax._src.gradvac import gradvac
from drgrad_jax._src.gradvac import gradvac_weights
from drgrad_jax._src.imtl import IMTLGState
from drgrad_jax._src.imtl import imtl_g
from drgrad_jax._src.imtl import imtl_g_weights
from drgrad_jax._src.krum import KrumState
from drgrad_jax._src.krum import krum
from drgrad_jax._src.krum import krum_weights
from drgrad_jax._src.linear_scalarization import LinearScalarizationState
from drgrad_jax._src.linear_scalarization import MeanState
from drgrad_jax._src.linear_scalarization import constant
from drgrad_jax._src.linear_scalarization import linear_scalarization
from drgrad_jax._src.linear_scalarization import mean
from drgrad_jax._src.loss_weighting import DWAState
from drgrad_jax._src.loss_weighting import IMTLLState
from drgrad_jax._src.loss_weighting import imtl_l
from drgrad_jax._src.loss_weighting import UncertaintyWeightingState
from drgrad_jax._src.loss_weighting import dwa
from drgrad_jax._src.loss_weighting import uncertainty_weighting
from drgrad_jax._src.mgda import MGDAState
from drgrad_jax._src.mgda import mgda
from drgrad_jax._src.moco import MoCoState
from drgrad_jax._src.moco import moco
from drgrad_jax._src.modo import MoDoState
from drgrad_jax._src.modo import modo
from drgrad_jax._src.modo import modo_weights
from drgrad_jax._src.min_norm import box_qp_weights
from drgrad_jax._src.min_norm import min_norm_weights
from drgrad_jax._src.nash_mtl import NashMTLState
from drgrad_jax._src.nash_mtl import nash_mtl
from drgrad_jax._src.nash_mtl import nash_mtl_weights
from drgrad_jax._src.pcgrad import PCGradState
from drgrad_jax._src.pcgrad import pcgrad
from drgrad_jax._src.pcgrad import pcgrad_weights
from drgrad_jax._src.random_weighting import RandomWeightingState
from drgrad_jax._src.random_weighting import random_weighting
from drgrad_jax._src.random_weighting import rlw
from drgrad_jax._src.sdmgrad import SDMGradState
from drgrad_jax._src.sdmgrad import sdmgrad
from drgrad_jax._src.sdmgrad import sdmgrad_weights
from drgrad_jax._src.stch import STCHState
from drgrad_jax._src.stch import stch
from drgrad_jax._src.trimmed_mean import TrimmedMeanState
from drgrad_jax._src.trimmed_mean import trimmed_mean
from drgrad_jax._src.upgrad import UPGradState
from drgrad_jax._src.upgrad import upgrad
from drgrad_jax._src.upgrad import upgrad_weights

# --- models, data, metrics, training (submodules) ------------------------------
from drgrad_jax import data, metrics, models
from drgrad_jax._src.train import TrainConfig
from drgrad_jax._src.train import TrainResult
from drgrad_jax._src.train import TrainState
from drgrad_jax._src.train import device_splits
from drgrad_jax._src.train import make_train
from drgrad_jax._src.train import select_by_validation
from drgrad_jax._src.train import sweep_learning_rates

# --- data parallelism over a device mesh, the shared training loop, hyperparameter
# domains (submodules) ---
from drgrad_jax import domains, loop, parallel, tree

__version__ = "0.1.0"

__all__ = [
    "TrainConfig",
    "TrainResult",
    "TrainState",
    "data",
    "device_splits",
    "domains",
    "loop",
    "make_train",
    "metrics",
    "models",
    "parallel",
    "select_by_validation",
    "sweep_learning_rates",
    "tree",
    "AlignedMTLState",
    "aligned_mtl",
    "aligned_mtl_weights",
    "CAGradState",
    "cagrad",
    "cagrad_weights",
    "ConflictFreeState",
    "conflict_free",
    "conflict_free_weights",
    "CRMOGMState",
    "cr_mogm",
    "DBMTLState",
    "db_mtl",
    "DualProjState",
    "dualproj",
    "dualproj_weights",
    "ExcessMTLState",
    "excess_mtl",
    "FairGradState",
    "fairgrad",
    "fairgrad_weights",
    "FAMOState",
    "famo",
    "GeometricMeanState",
    "geometric_mean",
    "GradDropState",
    "graddrop",
    "graddrop_combine",
    "GradNormState",
    "gradnorm",
    "GradVacState",
    "gradvac",
    "gradvac_weights",
    "IMTLGState",
    "imtl_g",
    "imtl_g_weights",
    "KrumState",
    "krum",
    "krum_weights",
    "LinearScalarizationState",
    "linear_scalarization",
    "MeanState",
    "constant",
    "mean",
    "DWAState",
    "IMTLLState",
    "imtl_l",
    "UncertaintyWeightingState",
    "dwa",
    "uncertainty_weighting",
    "MGDAState",
    "mgda",
    "MoCoState",
    "moco",
    "MoDoState",
    "modo",
    "modo_weights",
    "box_qp_weights",
    "min_norm_weights",
    "NashMTLState",
    "nash_mtl",
    "nash_mtl_weights",
    "PCGradState",
    "pcgrad",
    "pcgrad_weights",
    "RandomWeightingState",
    "random_weighting",
    "rlw",
    "SDMGradState",
    "sdmgrad",
    "sdmgrad_weights",
    "STCHState",
    "stch",
    "TrimmedMeanState",
    "trimmed_mean",
    "UPGradState",
    "upgrad",
    "upgrad_weights",
    "DRGradState",
    "RouterDiagnostics",
    "drgrad",
    "drgrad_released",
    "find_drgrad_state",
    "mixing_weights",
    "transform_space",
    "released_code_route",
    "route",
    "SHARED",
    "RepGrads",
    "check_task_grads",
    "gramian",
    "per_task_grads",
    "per_task_rep_grads",
    "scaled_gramian",
    "sum_tasks",
]
