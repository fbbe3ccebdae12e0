"""Multi-task data sets: MMoE's synthetic generator, DRGrad's settings, Census-Income (KDD).

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

__all__ = [
    "CENSUS_COLUMNS",
    "CENSUS_TASKS",
    "MultiTaskData",
    "Split",
    "drgrad_synthetic",
    "load_census_income",
    "mmoe_synthetic",
]
