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

# --- evaluation -----------------------------------------------------------------

__version__ = "0.1.0"

__all__: list[str] = [
    # data: journey batches, simulator, loaders
    "JourneyBatch",
    "NpzShards",
    "SimConfig",
    "SimData",
    "convert_criteo_raw",
    "gauss_hermite_psi",
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
]
