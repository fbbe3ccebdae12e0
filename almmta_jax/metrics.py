"""Evaluation of multi-touch attribution (see docs/almmta.md, *Prediction metrics* to
*Budget replay*).

Prediction metrics are those of ``drgrad_jax.metrics`` (one exact AUC for both
packages); the uplift metrics, the bucketed grouped-AUUC protocol, k-means,
the budget replay and the scores of per-touch effects against a known truth
(``effect_agreement``) are documented in docs/almmta.md.

Example:
  >>> from almmta_jax import metrics
  >>> float(metrics.normalized_auuc([3., 2., 1.], [1., 0., -1.]))
  1.0
"""

from almmta_jax._src.budget import BudgetReplay as BudgetReplay
from almmta_jax._src.budget import budget_replay as budget_replay
from almmta_jax._src.budget import channel_roi as channel_roi
from almmta_jax._src.effects import EffectAgreement as EffectAgreement
from almmta_jax._src.effects import effect_agreement as effect_agreement
from almmta_jax._src.grouped import CellAgreement as CellAgreement
from almmta_jax._src.grouped import GroupedAUUC as GroupedAUUC
from almmta_jax._src.grouped import cell_agreement as cell_agreement
from almmta_jax._src.grouped import cluster_exposure_scores as cluster_exposure_scores
from almmta_jax._src.grouped import exposure_propensity as exposure_propensity
from almmta_jax._src.grouped import grouped_auuc as grouped_auuc
from almmta_jax._src.grouped import kmeans as kmeans
from almmta_jax._src.grouped import propensity_buckets as propensity_buckets
from almmta_jax._src.uplift import auuc as auuc
from almmta_jax._src.uplift import gain_curve as gain_curve
from almmta_jax._src.uplift import normalized_auuc as normalized_auuc
from almmta_jax._src.uplift import qini_curve as qini_curve
from almmta_jax._src.uplift import qini_score as qini_score
from almmta_jax._src.uplift import uplift_curve as uplift_curve
from drgrad_jax.metrics import auc as auc
from drgrad_jax.metrics import gauc as gauc
from drgrad_jax.metrics import log_loss as log_loss

__all__ = [
    "BudgetReplay",
    "CellAgreement",
    "EffectAgreement",
    "GroupedAUUC",
    "auc",
    "auuc",
    "budget_replay",
    "cell_agreement",
    "channel_roi",
    "cluster_exposure_scores",
    "effect_agreement",
    "exposure_propensity",
    "gain_curve",
    "gauc",
    "grouped_auuc",
    "kmeans",
    "log_loss",
    "normalized_auuc",
    "propensity_buckets",
    "qini_curve",
    "qini_score",
    "uplift_curve",
]
