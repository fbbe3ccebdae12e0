"""The CDP simulator with exact attribution truth (see docs/almmta.md, *CDP simulator*).

Public names: ``SimConfig`` (presets "default", "unit_test", "scale"; switches
``gamma_TY``, ``gamma_WM``, ``eta_p``, ``kappa``, ``gamma_w``, ``outcome_leak``,
``confounder_alignment``), ``simulate_cdp``, ``SimData``, ``sim_to_batch``,
``gauss_hermite_psi``, ``shapley_truth``, ``confounded_regression`` (the exact
confounded ``E[Y | x, t]``), ``SIM_TOUCH_FIELDS``, ``SIM_LEAK_STEPS``
and ``SPLIT_CODES``; and the closed-form FD-CATE oracle of
docs/almmta.md, *Front-door oracle* (``fd_oracle_sample``, ``fd_oracle_tau``, ``fd_oracle_nuisances``,
``fd_fitted_nuisances``, ``fd_plugin``).
"""

from almmta_jax._src.ceiling import confounded_regression
from almmta_jax._src.frontdoor_oracle import (
    FDOracleData,
    FDOracleParams,
    fd_fitted_nuisances,
    fd_oracle_nuisances,
    fd_oracle_sample,
    fd_oracle_tau,
    fd_plugin,
)
from almmta_jax._src.simulate import (
    SIM_LEAK_STEPS,
    SIM_TOUCH_FIELDS,
    SPLIT_CODES,
    SimConfig,
    SimData,
    shapley_truth,
    sim_to_batch,
    simulate_cdp,
)
from almmta_jax._src.truth import gauss_hermite_psi

__all__ = [
    "confounded_regression",
    "FDOracleData",
    "FDOracleParams",
    "fd_fitted_nuisances",
    "fd_oracle_nuisances",
    "fd_oracle_sample",
    "fd_oracle_tau",
    "fd_plugin",
    "SIM_LEAK_STEPS",
    "SIM_TOUCH_FIELDS",
    "SPLIT_CODES",
    "SimConfig",
    "SimData",
    "gauss_hermite_psi",
    "shapley_truth",
    "sim_to_batch",
    "simulate_cdp",
]
