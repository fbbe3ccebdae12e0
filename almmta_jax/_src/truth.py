"""The logistic-normal integral Psi behind every exact truth of the CDP simulator.

The upload is logistic in a Gaussian-noised linear index, so every
interventional probability is ``Psi(a, s) = E_{z~N(0,s^2)} sigmoid(a + z)``,
computed by Gauss-Hermite quadrature (see docs/almmta.md, *Exact truth*).
"""

from __future__ import annotations

import numpy as np


def sigmoid(a):
    """Float64 logistic function in its tanh form (no overflow warnings for large |a|)."""
    return 0.5 * (1.0 + np.tanh(0.5 * a))


def _sigmoid_(a):
    """In-place sigmoid of a float64 scratch array."""
    a *= 0.5
    np.tanh(a, out=a)
    a += 1.0
    a *= 0.5
    return a


def gauss_hermite_psi(a, s, num_nodes: int = 32) -> np.ndarray:
    r"""Logistic-normal integral ``Psi(a, s) = E_{z ~ N(0, s^2)} sigmoid(a + z)``.

    .. math::
      \Psi(a, s) \approx \sum_k \frac{\omega_k}{\sqrt{\pi}}
        \sigma(a + \sqrt{2}\, s\, \zeta_k)

    with Gauss-Hermite nodes ``zeta_k`` and weights ``omega_k`` (docs/almmta.md,
    *Exact truth*). Computed in float64; ``a`` and ``s`` broadcast against each other.

    Args:
      a: mean of the logit (any shape).
      s: standard deviation of the logit noise, >= 0 (broadcastable to ``a``).
      num_nodes: quadrature nodes (32 are accurate to ~1e-7 for s <= 2 and
        ~2e-5 at s = 3; raise it for wider noise).

    Returns:
      float64 array of the broadcast shape of ``a`` and ``s``.

    Example:
      >>> float(gauss_hermite_psi(0.0, 2.0))
      0.5
      >>> round(float(gauss_hermite_psi(1.0, 0.0)), 6)
      0.731059

    References:
      Abramowitz & Stegun, "Handbook of Mathematical Functions", 1964, §25.4.46
      (Gauss-Hermite integration).
    """
    if int(num_nodes) < 1:
        raise ValueError(f"num_nodes must be >= 1, got {num_nodes}.")
    a = np.asarray(a, dtype=np.float64)
    s = np.asarray(s, dtype=np.float64)
    if np.any(s < 0):
        raise ValueError("s (the logit noise sd) must be >= 0.")
    nodes, weights = np.polynomial.hermite.hermgauss(int(num_nodes))
    a, s = np.broadcast_arrays(a, s)
    shape = a.shape
    a, s = a.reshape(-1), s.reshape(-1)
    wts = weights / np.sqrt(np.pi)
    out = np.empty(a.shape[0])
    # Blocks bound the [block, nodes] scratch to ~32 MB at any scale.
    block = max(1, (1 << 22) // nodes.shape[0])
    for lo in range(0, a.shape[0], block):
        scratch = np.sqrt(2.0) * s[lo : lo + block, None] * nodes
        scratch += a[lo : lo + block, None]
        out[lo : lo + block] = _sigmoid_(scratch) @ wts
    return out.reshape(shape)


def cluster_truths(p_x, removal_x, clusters, mask, n_obs: int, num_clusters: int):
    """The two cluster-level truths of ``SimData`` (docs/almmta.md, *Exact truth*).

    Args:
      p_x: ``[N]`` P^x(full), observational users first, then the randomized arm.
      removal_x: ``[N, L]`` exact effect of removing the cluster of touch j.
      clusters: ``[N, L]`` int cluster of each touch.
      mask: ``[N, L]`` bool valid touches.
      n_obs: observational users (the first rows).
      num_clusters: K.

    Returns:
      ``(rct_cluster_uplift [K], obs_cluster_removal [K])``: the randomized arm's
      mean p_x of users exposed to c minus that of the unexposed, and the mean
      over exposed observational users of the cluster-removal effect (NaN where
      a side is empty).
    """
    n, K = p_x.shape[0], num_clusters
    n_rct = n - n_obs
    exposed = np.zeros((n, K), dtype=bool)
    rows = np.broadcast_to(np.arange(n)[:, None], clusters.shape)
    exposed[rows[mask], clusters[mask]] = True
    rct_cluster_uplift = np.full(K, np.nan)
    if n_rct > 0:
        e_r, p_r = exposed[n_obs:], p_x[n_obs:]
        n_pos = e_r.sum(axis=0)
        n_neg = n_rct - n_pos
        s_pos = p_r @ e_r
        s_neg = p_r.sum() - s_pos
        ok = (n_pos > 0) & (n_neg > 0)
        rct_cluster_uplift[ok] = s_pos[ok] / n_pos[ok] - s_neg[ok] / n_neg[ok]
    # Per user and cluster, the removal effect (any of the user's touches of c carries it).
    obs, rows_o = mask[:n_obs], rows[:n_obs]
    rem_uc = np.zeros((n_obs, K))
    rem_uc[rows_o[obs], clusters[:n_obs][obs]] = removal_x[:n_obs][obs]
    n_exp = exposed[:n_obs].sum(axis=0)
    obs_cluster_removal = np.full(K, np.nan)
    obs_cluster_removal[n_exp > 0] = rem_uc.sum(axis=0)[n_exp > 0] / n_exp[n_exp > 0]
    return rct_cluster_uplift, obs_cluster_removal
