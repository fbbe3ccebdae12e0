"""Journey batches, streaming and loaders (notes §4.1, §7a).

Public names: ``JourneyBatch``, ``validate_journeys``, ``journey_batches``,
``pad_ragged``, ``time_features``, ``ragged_to_batch``, ``check_offsets``,
``load_journey_npz``, ``save_journey_npz`` and ``NpzShards``.
"""

from almmta_jax._src.data import (
    JourneyBatch,
    NpzShards,
    check_offsets,
    journey_batches,
    load_journey_npz,
    pad_ragged,
    ragged_to_batch,
    save_journey_npz,
    time_features,
    validate_journeys,
)

__all__ = [
    "JourneyBatch",
    "NpzShards",
    "check_offsets",
    "journey_batches",
    "load_journey_npz",
    "pad_ragged",
    "ragged_to_batch",
    "save_journey_npz",
    "time_features",
    "validate_journeys",
]
