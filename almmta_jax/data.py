"""Journey batches, streaming and loaders (see docs/almmta.md, *Journey batches* and *Criteo journeys*).

Public names: ``JourneyBatch``, ``validate_journeys``, ``journey_batches``,
``pad_ragged``, ``time_features``, ``deleted_time_features``, ``ragged_to_batch``, ``check_offsets``,
``load_journey_npz``, ``save_journey_npz``, ``NpzShards`` and
``host_shard_paths``; the Criteo
loaders ``load_criteo_attribution``, ``load_criteo_flat``, ``criteo_proxy``,
``criteo_journey_history``, ``convert_criteo_raw``, ``criteo_raw_journeys``,
``split_journeys`` and their constants; and the simulator's ``SIM_TOUCH_FIELDS``.
"""

from almmta_jax._src.criteo import (
    CRITEO_HISTORY_DIM,
    CRITEO_NUM_USERS,
    CRITEO_PROXY_TAU_S,
    CRITEO_TOUCH_FIELDS,
    CRITEO_VOCAB_SIZES,
    convert_criteo_raw,
    criteo_journey_history,
    criteo_proxy,
    criteo_raw_journeys,
    load_criteo_attribution,
    load_criteo_flat,
    split_journeys,
)
from almmta_jax._src.data import (
    JourneyBatch,
    check_offsets,
    pad_ragged,
    ragged_to_batch,
    time_features,
    validate_journeys,
)
from almmta_jax._src.deletion import deleted_time_features
from almmta_jax._src.shards import NpzShards, host_shard_paths, load_journey_npz, save_journey_npz
from almmta_jax._src.simulate import SIM_TOUCH_FIELDS
from almmta_jax._src.streaming import journey_batches

__all__ = [
    "CRITEO_HISTORY_DIM",
    "CRITEO_NUM_USERS",
    "CRITEO_PROXY_TAU_S",
    "CRITEO_TOUCH_FIELDS",
    "CRITEO_VOCAB_SIZES",
    "SIM_TOUCH_FIELDS",
    "convert_criteo_raw",
    "criteo_proxy",
    "criteo_raw_journeys",
    "criteo_journey_history",
    "load_criteo_attribution",
    "load_criteo_flat",
    "split_journeys",
    "JourneyBatch",
    "NpzShards",
    "check_offsets",
    "deleted_time_features",
    "host_shard_paths",
    "journey_batches",
    "load_journey_npz",
    "pad_ragged",
    "ragged_to_batch",
    "save_journey_npz",
    "time_features",
    "validate_journeys",
]
