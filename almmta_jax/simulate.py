"""The CDP simulator with exact attribution truth (notes §7b).

Public names: ``SimConfig`` (presets "default", "unit_test", "scale"; switches
``gamma_TY``, ``gamma_WM``, ``eta_p``, ``kappa``, ``gamma_w``), ``simulate_cdp``,
``SimData``, ``sim_to_batch``, ``gauss_hermite_psi``, ``SIM_TOUCH_FIELDS``,
and ``SPLIT_CODES``.
"""

from almmta_jax._src.simulate import (
    SIM_TOUCH_FIELDS,
    SPLIT_CODES,
    SimConfig,
    SimData,
    gauss_hermite_psi,
    sim_to_batch,
    simulate_cdp,
)

__all__ = [
    "SIM_TOUCH_FIELDS",
    "SPLIT_CODES",
    "SimConfig",
    "SimData",
    "gauss_hermite_psi",
    "sim_to_batch",
    "simulate_cdp",
]
