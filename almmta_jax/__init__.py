"""almmta_jax: front-door multi-touch attribution with an adversarially learned mediator.

ALM-MTA (Liu et al., 2026) attributes an outcome (an upload, a conversion) to each
touchpoint of a user's journey through a learned mediator, trained against an
adversary in one jitted min-max step, with contrastive positivity and a bucketed
grouped-AUUC evaluation.
"""

# --- data: journey batches, simulator, loaders ----------------------------------
from almmta_jax._src.criteo import convert_criteo_raw as convert_criteo_raw
from almmta_jax._src.criteo import load_criteo_attribution as load_criteo_attribution
from almmta_jax._src.data import JourneyBatch as JourneyBatch
from almmta_jax._src.data import NpzShards as NpzShards
from almmta_jax._src.data import host_shard_paths as host_shard_paths
from almmta_jax._src.data import journey_batches as journey_batches
from almmta_jax._src.data import load_journey_npz as load_journey_npz
from almmta_jax._src.data import pad_ragged as pad_ragged
from almmta_jax._src.data import ragged_to_batch as ragged_to_batch
from almmta_jax._src.data import save_journey_npz as save_journey_npz
from almmta_jax._src.data import time_features as time_features
from almmta_jax._src.data import validate_journeys as validate_journeys
from almmta_jax._src.simulate import SimConfig as SimConfig
from almmta_jax._src.simulate import SimData as SimData
from almmta_jax._src.simulate import gauss_hermite_psi as gauss_hermite_psi
from almmta_jax._src.simulate import sim_to_batch as sim_to_batch
from almmta_jax._src.simulate import simulate_cdp as simulate_cdp

# --- model, training, attribution ----------------------------------------------
# isort: split
from almmta_jax._src.adversary import adversary_weight as adversary_weight
from almmta_jax._src.adversary import gradient_reversal as gradient_reversal
from almmta_jax._src.adversary import split_model as split_model
from almmta_jax._src.attribution import Attribution as Attribution
from almmta_jax._src.attribution import attribute as attribute
from almmta_jax._src.attribution import positive_shares as positive_shares
from almmta_jax._src.balancing import balance_heads as balance_heads
from almmta_jax._src.balancing import head_balancer as head_balancer
from almmta_jax._src.frontdoor import ReferencePool as ReferencePool
from almmta_jax._src.frontdoor import build_reference_pool as build_reference_pool
from almmta_jax._src.frontdoor import frontdoor_sum as frontdoor_sum
from almmta_jax._src.frontdoor import high_match_set as high_match_set
from almmta_jax._src.frontdoor import match_scores as match_scores
from almmta_jax._src.losses import adversary_loss as adversary_loss
from almmta_jax._src.losses import confusion_loss as confusion_loss
from almmta_jax._src.losses import info_nce_loss as info_nce_loss
from almmta_jax._src.losses import outcome_loss as outcome_loss
from almmta_jax._src.losses import proxy_loss as proxy_loss
from almmta_jax._src.networks import ALMMTA as ALMMTA
from almmta_jax._src.networks import Encoded as Encoded
from almmta_jax._src.networks import ModelConfig as ModelConfig
from almmta_jax._src.optimizer import default_optimizer as default_optimizer
from almmta_jax._src.parallel import shard_state as shard_state
from almmta_jax._src.parallel import state_sharding as state_sharding
from almmta_jax._src.propensity import PropensityModel as PropensityModel
from almmta_jax._src.propensity import cluster_counts as cluster_counts
from almmta_jax._src.propensity import cluster_log_frequency as cluster_log_frequency
from almmta_jax._src.propensity import fit_propensity as fit_propensity
from almmta_jax._src.propensity import ipw_weights as ipw_weights
from almmta_jax._src.step import LossWeights as LossWeights
from almmta_jax._src.step import StepMetrics as StepMetrics
from almmta_jax._src.step import TrainState as TrainState
from almmta_jax._src.step import make_step as make_step
from almmta_jax._src.train import EvalMetrics as EvalMetrics
from almmta_jax._src.train import TrainConfig as TrainConfig
from almmta_jax._src.train import make_train as make_train
from drgrad_jax.loop import Trainer as Trainer

# --- evaluation -----------------------------------------------------------------
# isort: split
from almmta_jax._src.baselines import DNAMTA as DNAMTA
from almmta_jax._src.baselines import BaselineConfig as BaselineConfig
from almmta_jax._src.baselines import BaselineRun as BaselineRun
from almmta_jax._src.baselines import CausalMTAPredictor as CausalMTAPredictor
from almmta_jax._src.baselines import LogisticMTA as LogisticMTA
from almmta_jax._src.baselines import ProxyDirect as ProxyDirect
from almmta_jax._src.baselines import alm_mta_variant as alm_mta_variant
from almmta_jax._src.baselines import attribute_baseline as attribute_baseline
from almmta_jax._src.baselines import channel_bags as channel_bags
from almmta_jax._src.baselines import deletion_uplift as deletion_uplift
from almmta_jax._src.baselines import journey_balancing_weights as journey_balancing_weights
from almmta_jax._src.baselines import make_baseline_train as make_baseline_train
from almmta_jax._src.dml import DMLModel as DMLModel
from almmta_jax._src.dml import fit_dml as fit_dml
from almmta_jax._src.metrics import BudgetReplay as BudgetReplay
from almmta_jax._src.metrics import CellAgreement as CellAgreement
from almmta_jax._src.metrics import GroupedAUUC as GroupedAUUC
from almmta_jax._src.metrics import auuc as auuc
from almmta_jax._src.metrics import budget_replay as budget_replay
from almmta_jax._src.metrics import cell_agreement as cell_agreement
from almmta_jax._src.metrics import channel_roi as channel_roi
from almmta_jax._src.metrics import cluster_exposure_scores as cluster_exposure_scores
from almmta_jax._src.metrics import exposure_propensity as exposure_propensity
from almmta_jax._src.metrics import gain_curve as gain_curve
from almmta_jax._src.metrics import grouped_auuc as grouped_auuc
from almmta_jax._src.metrics import kmeans as kmeans
from almmta_jax._src.metrics import normalized_auuc as normalized_auuc
from almmta_jax._src.metrics import propensity_buckets as propensity_buckets
from almmta_jax._src.metrics import qini_curve as qini_curve
from almmta_jax._src.metrics import qini_score as qini_score
from almmta_jax._src.metrics import uplift_curve as uplift_curve

__version__ = "0.1.0"

__all__: list[str] = [
    # data: journey batches, simulator, loaders
    "JourneyBatch",
    "NpzShards",
    "SimConfig",
    "SimData",
    "convert_criteo_raw",
    "gauss_hermite_psi",
    "host_shard_paths",
    "journey_batches",
    "load_criteo_attribution",
    "load_journey_npz",
    "pad_ragged",
    "ragged_to_batch",
    "save_journey_npz",
    "sim_to_batch",
    "simulate_cdp",
    "time_features",
    "validate_journeys",
    # model, training, attribution
    "ALMMTA",
    "Attribution",
    "Encoded",
    "EvalMetrics",
    "LossWeights",
    "ModelConfig",
    "PropensityModel",
    "ReferencePool",
    "StepMetrics",
    "TrainConfig",
    "TrainState",
    "Trainer",
    "adversary_loss",
    "adversary_weight",
    "attribute",
    "balance_heads",
    "build_reference_pool",
    "cluster_counts",
    "cluster_log_frequency",
    "default_optimizer",
    "confusion_loss",
    "fit_propensity",
    "frontdoor_sum",
    "gradient_reversal",
    "head_balancer",
    "high_match_set",
    "info_nce_loss",
    "ipw_weights",
    "make_step",
    "make_train",
    "match_scores",
    "outcome_loss",
    "positive_shares",
    "proxy_loss",
    "shard_state",
    "split_model",
    "state_sharding",
    # evaluation: metrics and baselines
    "BaselineConfig",
    "BaselineRun",
    "BudgetReplay",
    "CausalMTAPredictor",
    "DMLModel",
    "DNAMTA",
    "GroupedAUUC",
    "LogisticMTA",
    "ProxyDirect",
    "alm_mta_variant",
    "attribute_baseline",
    "auuc",
    "budget_replay",
    "CellAgreement",
    "cell_agreement",
    "channel_bags",
    "channel_roi",
    "cluster_exposure_scores",
    "deletion_uplift",
    "exposure_propensity",
    "fit_dml",
    "gain_curve",
    "grouped_auuc",
    "journey_balancing_weights",
    "kmeans",
    "make_baseline_train",
    "normalized_auuc",
    "propensity_buckets",
    "qini_curve",
    "qini_score",
    "uplift_curve",
]
