"""A closed-form front-door CATE model: the unit-test oracle.

See docs/almmta.md, *Front-door oracle*.

Binary treatment A, binary mediator Z, covariates C and a hidden confounder U of
A and Y (Jung, 2025, "FD-CATE"):

* ``A ~ Bern(sigmoid(kappa_e (0.1 + 0.7 w_A.C + 0.7 U)))``,
* ``Z ~ Bern(sigmoid(0.1 + 0.7 w_Z.C + 1.2 A))`` (no U: front door holds),
* ``Y = 0.7 w_Y.C + 1.4 Z + beta_U U + noise``, ``beta_U = -2.4`` scaled by 1.25
  until the naive contrast is negative while the true effect stays positive.

The conditional effect is ``tau(C) = 1.4 [sigmoid(0.1 + 0.7 w_Z.C + 1.2) -
sigmoid(0.1 + 0.7 w_Z.C)]``, and the front-door plug-in

.. math::
  \\hat\\tau(C) = \\sum_z [q(z|1,C) - q(z|0,C)] \\sum_a e_a(C)\\, m(z,a,C)

recovers it exactly with oracle nuisances (the U terms cancel) and within
sampling error with fitted ones.

References:
  Jung, FD-CATE (front-door conditional average treatment effects), 2025,
  https://arxiv.org/abs/2509.22531, https://github.com/yonghanjung/FD-CATE.
  Pearl, "Causal diagrams for empirical research", Biometrika 82(4), 1995.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np


def _sigmoid(a):
    return 0.5 * (1.0 + np.tanh(0.5 * np.asarray(a, np.float64)))


class FDOracleParams(NamedTuple):
    """Coefficients of the FD-CATE model (unit vectors and the U weight in Y)."""

    w_A: np.ndarray
    w_Z: np.ndarray
    w_Y: np.ndarray
    beta_U: float
    kappa_e: float


class FDOracleData(NamedTuple):
    """A sample of the FD-CATE model: ``C [n, d]``, ``A, Z [n]`` int8, ``Y [n]``,
    the hidden ``U [n]``, the truth ``tau [n]`` and the parameters."""

    C: np.ndarray
    A: np.ndarray
    Z: np.ndarray
    Y: np.ndarray
    U: np.ndarray
    tau: np.ndarray
    params: FDOracleParams


_GH_U = np.polynomial.hermite.hermgauss(64)


def _u_moments(lin_a: np.ndarray, kappa_e: float):
    """P(A=1|C) and E[U | A=a, C] by quadrature over U ~ N(0, 1)."""
    nodes, weights = _GH_U
    u = np.sqrt(2.0) * nodes
    wts = weights / np.sqrt(np.pi)
    p = _sigmoid(kappa_e * (lin_a[:, None] + 0.7 * u[None, :]))
    e1 = p @ wts
    eu1 = (p * u) @ wts / e1
    eu0 = ((1.0 - p) * u) @ wts / (1.0 - e1)
    return e1, eu0, eu1


def fd_oracle_tau(C, params: FDOracleParams) -> np.ndarray:
    """The true conditional effect ``tau(C)`` of the oracle, ``[n]`` float64."""
    lz = 0.1 + 0.7 * np.asarray(C, np.float64) @ params.w_Z
    return 1.4 * (_sigmoid(lz + 1.2) - _sigmoid(lz))


def fd_oracle_sample(
    n: int, d: int = 4, *, seed: int = 0, kappa_e: float = 1.0, noise_sd: float = 1.0
) -> FDOracleData:
    """Draws n units of the FD-CATE model (docs/almmta.md, *Front-door oracle*).

    ``beta_U`` starts at -2.4 and is multiplied by 1.25 until the naive contrast
    E[Y|A=1] - E[Y|A=0] (computed exactly by quadrature over U and C-sample
    averages) is negative; the true effect is positive by construction.

    Args:
      n: units.
      d: covariate dimension.
      seed: PCG64 seed.
      kappa_e: treatment-logit multiplier (weak overlap when large).
      noise_sd: sd of the outcome noise.

    Returns:
      An ``FDOracleData``.
    """
    if int(n) < 2 or int(d) < 1:
        raise ValueError(f"need n >= 2 and d >= 1, got n={n}, d={d}.")
    rng = np.random.Generator(np.random.PCG64(int(seed)))

    def unit(v):
        return v / np.linalg.norm(v)

    w_A, w_Z, w_Y = (unit(rng.standard_normal(d)) for _ in range(3))
    C = rng.standard_normal((n, d))
    U = rng.standard_normal(n)
    A = (rng.random(n) < _sigmoid(kappa_e * (0.1 + 0.7 * C @ w_A + 0.7 * U))).astype(np.int8)
    Z = (rng.random(n) < _sigmoid(0.1 + 0.7 * C @ w_Z + 1.2 * A)).astype(np.int8)
    eps = noise_sd * rng.standard_normal(n)
    beta_U = -2.4
    for _ in range(50):
        Y = 0.7 * C @ w_Y + 1.4 * Z + beta_U * U + eps
        if Y[A == 1].mean() - Y[A == 0].mean() < 0:
            break
        beta_U *= 1.25
    params = FDOracleParams(w_A=w_A, w_Z=w_Z, w_Y=w_Y, beta_U=float(beta_U), kappa_e=kappa_e)
    return FDOracleData(C=C, A=A, Z=Z, Y=Y, U=U, tau=fd_oracle_tau(C, params), params=params)


def fd_oracle_nuisances(C, params: FDOracleParams):
    """Oracle nuisances at covariates C.

    Returns:
      ``(q1 [n, 2], e1 [n], m [n, 2, 2])``: ``q1[:, a] = P(Z=1 | A=a, C)``,
      ``e1 = P(A=1 | C)`` and ``m[:, z, a] = E[Y | Z=z, A=a, C]``.
    """
    C = np.asarray(C, np.float64)
    lz = 0.1 + 0.7 * C @ params.w_Z
    q1 = np.stack([_sigmoid(lz), _sigmoid(lz + 1.2)], axis=1)
    e1, eu0, eu1 = _u_moments(0.1 + 0.7 * C @ params.w_A, params.kappa_e)
    base = 0.7 * C @ params.w_Y
    eu = np.stack([eu0, eu1], axis=1)  # [n, a]
    m = base[:, None, None] + 1.4 * np.arange(2)[None, :, None] + params.beta_U * eu[:, None, :]
    return q1, e1, m


def fd_plugin(q1, e1, m) -> np.ndarray:
    """The front-door plug-in ``sum_z [q(z|1) - q(z|0)] sum_a e_a m(z, a)`` per unit.

    Args:
      q1: ``[n, 2]`` P(Z=1 | A=a, C) for a = 0, 1.
      e1: ``[n]`` P(A=1 | C).
      m: ``[n, 2, 2]`` E[Y | Z=z, A=a, C] indexed ``[:, z, a]``.

    Returns:
      ``[n]`` estimates of tau(C).
    """
    q1, e1, m = (np.asarray(v, np.float64) for v in (q1, e1, m))
    n = e1.shape[0]
    if q1.shape != (n, 2) or m.shape != (n, 2, 2):
        raise ValueError(
            f"q1 {q1.shape}, e1 {e1.shape}, m {m.shape}: expected [n, 2], [n], [n, 2, 2]."
        )
    q = np.stack([1.0 - q1, q1], axis=1)  # [n, z, a]
    dq = q[:, :, 1] - q[:, :, 0]  # [n, z]
    e = np.stack([1.0 - e1, e1], axis=1)  # [n, a]
    inner = (m * e[:, None, :]).sum(axis=2)  # [n, z]
    return (dq * inner).sum(axis=1)


def _logistic_fit(X, y, iters: int = 100, l2: float = 1e-6) -> np.ndarray:
    b = np.zeros(X.shape[1])
    for _ in range(iters):
        p = _sigmoid(X @ b)
        H = X.T @ (X * (p * (1.0 - p))[:, None]) + l2 * np.eye(X.shape[1])
        step = np.linalg.solve(H, X.T @ (y - p) - l2 * b)
        b += step
        if np.max(np.abs(step)) < 1e-10:
            break
    return b


def fd_fitted_nuisances(data: FDOracleData, C_eval=None):
    """Nuisances fitted on ``data`` by NumPy regressions, evaluated at ``C_eval``.

    * ``q``: logistic regression of Z on [1, C, A];
    * ``e``: logistic regression of A on [1, C], giving the index ``l(C)``;
    * ``m``: least squares of Y on [1, C, Z, A, poly_3(l), A poly_3(l)], a control
      function for E[U | A, C], which depends on C only through the treatment index.

    Returns:
      ``(q1, e1, m)`` as in ``fd_oracle_nuisances``.
    """
    C, A, Z, Y = data.C, data.A.astype(float), data.Z.astype(float), data.Y
    Ce = C if C_eval is None else np.asarray(C_eval, np.float64)
    n, ne = C.shape[0], Ce.shape[0]
    bq = _logistic_fit(np.column_stack([np.ones(n), C, A]), Z)
    be = _logistic_fit(np.column_stack([np.ones(n), C]), A)

    def design(Cm, a, z):
        k = Cm.shape[0]
        idx = np.column_stack([np.ones(k), Cm]) @ be
        poly = np.column_stack([idx, idx**2, idx**3])
        a = np.broadcast_to(a, (k,)).astype(float)
        z = np.broadcast_to(z, (k,)).astype(float)
        return np.column_stack([np.ones(k), Cm, z, a, poly, a[:, None] * poly])

    bm, *_ = np.linalg.lstsq(design(C, A, Z), Y, rcond=None)
    Xq = lambda a: np.column_stack([np.ones(ne), Ce, np.full(ne, a)])
    q1 = np.stack([_sigmoid(Xq(0.0) @ bq), _sigmoid(Xq(1.0) @ bq)], axis=1)
    e1 = _sigmoid(np.column_stack([np.ones(ne), Ce]) @ be)
    m = np.stack(
        [np.stack([design(Ce, a, z) @ bm for a in (0.0, 1.0)], axis=1) for z in (0.0, 1.0)],
        axis=1,
    )
    return q1, e1, m


__all__ = [
    "FDOracleData",
    "FDOracleParams",
    "fd_fitted_nuisances",
    "fd_oracle_nuisances",
    "fd_oracle_sample",
    "fd_oracle_tau",
    "fd_plugin",
]
