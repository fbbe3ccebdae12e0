"""DML-style baseline of the ALM-MTA evaluation (docs/almmta.md, *Baselines*): an R-learner on exposure counts.

Treatments are a journey's channel counts; the nuisances and the effect
coefficients are closed-form ridge regressions, so the fit needs no training
loop. The fitted ``DMLModel`` maps ``(batch, keep)`` to outcome logits like
the neural baselines, so ``deletion_uplift`` attributes it the same way.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from almmta_jax._src.data import JourneyBatch


def _keep(batch: JourneyBatch, keep):
    return batch.touch_mask if keep is None else jnp.logical_and(batch.touch_mask, keep)


def _poly(x: np.ndarray) -> np.ndarray:
    return np.concatenate([np.ones((x.shape[0], 1)), x, x**2], axis=1)


def _ridge(a: np.ndarray, b: np.ndarray, lam: float) -> np.ndarray:
    reg = lam * np.eye(a.shape[1])
    reg[0, 0] = 0.0  # no penalty on the intercept
    return np.linalg.solve(a.T @ a + reg, a.T @ b)


class DMLModel(NamedTuple):
    """A fitted DML-style R-learner (``fit_dml``).

    Attributes:
      g_coef: ``[d_φ]`` ridge coefficients of ``ĝ(x) = E[Y | x]`` on ``φ(x)``.
      e_coef: ``[d_φ, K]`` ridge coefficients of ``ê_c(x) = E[n_c | x]``.
      theta: ``[1 + d_x, K]`` effect coefficients, ``θ_c(x) = [1; x]ᵀ theta[:, c]``.
      channel_field: the channel column of ``touch_ids``.
      x_mean, x_scale: standardization of x.
    """

    g_coef: np.ndarray
    e_coef: np.ndarray
    theta: np.ndarray
    channel_field: int
    x_mean: np.ndarray
    x_scale: np.ndarray

    def _x(self, x):
        return (jnp.asarray(x, jnp.float32) - self.x_mean[None, :]) / self.x_scale[None, :]

    def effects(self, x) -> jax.Array:
        """``[B, K]`` per-channel effects ``θ_c(x)``."""
        xs = self._x(x)
        return jnp.concatenate([jnp.ones((xs.shape[0], 1)), xs], axis=1) @ self.theta

    def __call__(self, batch: JourneyBatch, keep=None, *, dropout_key=None) -> jax.Array:
        """Logit of ``clip(ĝ(x) + Σ_c θ_c(x)(n_c − ê_c(x)), 1e-4, 1 − 1e-4)``."""
        del dropout_key
        xs = self._x(batch.x)
        phi = jnp.concatenate([jnp.ones((xs.shape[0], 1)), xs, xs**2], axis=1)
        k = _keep(batch, keep).astype(jnp.float32)
        one_hot = jax.nn.one_hot(batch.touch_ids[..., self.channel_field], self.theta.shape[1])
        n = jnp.einsum("bl,blk->bk", k, one_hot)
        p = phi @ self.g_coef + jnp.sum(self.effects(batch.x) * (n - phi @ self.e_coef), axis=1)
        p = jnp.clip(p, 1e-4, 1 - 1e-4)
        return jnp.log(p) - jnp.log1p(-p)


def fit_dml(
    data: JourneyBatch,
    channel_field: int,
    num_channels: int,
    *,
    ridge: float = 1.0,
    folds: int = 2,
    seed: int = 0,
) -> DMLModel:
    """DML-style residualization on cluster exposure counts (docs/almmta.md, *Baselines*).

    Treatments are the channel counts ``n_uc``. Nuisances ``ĝ(x) = E[Y | x]`` and
    ``ê_c(x) = E[n_c | x]`` are ridge regressions on ``φ(x) = [1, x, x²]``,
    cross-fitted over ``folds`` folds; the R-learner then solves::

      Y − ĝ(x) = Σ_c θ_c(x) (n_c − ê_c(x)) + ε,    θ_c(x) = [1; x]ᵀ β_c

    by ridge least squares. The deletion uplift of a touch of channel c is
    ``θ_c(x)`` (up to the probability clipping of the prediction).

    Deviation: the method's description fits the nuisances with MLPs; ridge on quadratic
    features keeps the fit closed-form.

    Args:
      data: training journeys.
      channel_field: the channel column of ``touch_ids``.
      num_channels: ``K``.
      ridge: L2 penalty of every regression.
      folds: cross-fitting folds (>= 2).
      seed: fold assignment seed.

    Returns:
      A ``DMLModel`` (call it as ``model(batch, keep) -> logits``).

    References:
      Chernozhukov et al., "Double/Debiased Machine Learning for Treatment and
      Structural Parameters", 2018, https://arxiv.org/abs/1608.00060; Nie & Wager,
      "Quasi-oracle estimation of heterogeneous treatment effects", 2021.
    """
    if folds < 2:
        raise ValueError(f"folds must be >= 2, got {folds}.")
    x = np.asarray(data.x, np.float64)
    y = np.asarray(data.y, np.float64)
    ids = np.asarray(data.touch_ids)[..., channel_field]
    mask = np.asarray(data.touch_mask)
    n = ((ids[..., None] == np.arange(num_channels)) & mask[..., None]).sum(1).astype(np.float64)
    mu, sd = x.mean(0), x.std(0) + 1e-6
    xs = (x - mu) / sd
    phi = _poly(xs)
    fold = np.random.default_rng(seed).integers(0, folds, x.shape[0])
    g_hat, e_hat = np.zeros_like(y), np.zeros_like(n)
    for f in range(folds):
        tr, te = fold != f, fold == f
        g_hat[te] = phi[te] @ _ridge(phi[tr], y[tr], ridge)
        e_hat[te] = phi[te] @ _ridge(phi[tr], n[tr], ridge)
    x1 = np.concatenate([np.ones((x.shape[0], 1)), xs], axis=1)
    design = ((n - e_hat)[:, :, None] * x1[:, None, :]).reshape(x.shape[0], -1)  # [N, K*(1+d)]
    reg = ridge * np.eye(design.shape[1])
    beta = np.linalg.solve(design.T @ design + reg, design.T @ (y - g_hat))
    theta = beta.reshape(num_channels, x1.shape[1]).T
    return DMLModel(
        g_coef=jnp.asarray(_ridge(phi, y, ridge), jnp.float32),
        e_coef=jnp.asarray(_ridge(phi, n, ridge), jnp.float32),
        theta=jnp.asarray(theta, jnp.float32),
        channel_field=int(channel_field),
        x_mean=jnp.asarray(mu, jnp.float32),
        x_scale=jnp.asarray(sd, jnp.float32),
    )
