"""almmta_jax: front-door multi-touch attribution with an adversarially learned mediator.

ALM-MTA (Liu et al., 2026) attributes an outcome (an upload, a conversion) to each
touchpoint of a user's journey through a learned mediator, trained against an
adversary in one jitted min-max step, with contrastive positivity and a bucketed
grouped-AUUC evaluation.

Journey data and loaders live in ``almmta_jax.data``, the causal simulator in
``almmta_jax.simulate`` and the evaluation metrics in ``almmta_jax.metrics``;
everything else is here. Each public name has exactly one path.
"""

# --- submodules: data (journey batches, loaders), simulate (the CDP simulator), metrics
# isort: split
from almmta_jax import data, metrics, simulate, testing

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
from almmta_jax._src.train import auto_batch_size as auto_batch_size
from almmta_jax._src.train import make_train as make_train

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

__version__ = "0.1.0"

__all__: list[str] = [
    # submodules
    "data",
    "metrics",
    "simulate",
    "testing",
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
    "adversary_loss",
    "adversary_weight",
    "attribute",
    "auto_batch_size",
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
    "CausalMTAPredictor",
    "DMLModel",
    "DNAMTA",
    "LogisticMTA",
    "ProxyDirect",
    "alm_mta_variant",
    "attribute_baseline",
    "channel_bags",
    "deletion_uplift",
    "fit_dml",
    "journey_balancing_weights",
    "make_baseline_train",
]
