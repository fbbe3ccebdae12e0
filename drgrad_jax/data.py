"""Multi-task data sets: synthetic worlds with a known task relation, MMoE's generator, Census-Income.

Example:
  >>> from drgrad_jax import data
  >>> d = data.mmoe_synthetic(100, 20, 20, correlation=0.5, dim=6)
  >>> d.train.labels.shape
  (100, 2)
"""

from drgrad_jax._src.census import CENSUS_COLUMNS, CENSUS_TASKS, load_census_income
from drgrad_jax._src.data import (
    MultiTaskData,
    Split,
    drgrad_synthetic,
    mmoe_synthetic,
)
from drgrad_jax._src.worlds import (
    compete_world,
    conflict_world,
    cooperate_world,
    paper_world,
    personalized_world,
    relation_world,
)

__all__ = [
    "CENSUS_COLUMNS",
    "CENSUS_TASKS",
    "compete_world",
    "MultiTaskData",
    "Split",
    "conflict_world",
    "cooperate_world",
    "drgrad_synthetic",
    "load_census_income",
    "mmoe_synthetic",
    "paper_world",
    "personalized_world",
    "relation_world",
]
