"""Small quadratic programs on a K x K task Gramian: min-norm points and box QPs.

Multi-task gradient methods (MGDA, CAGrad, UPGrad) reduce to tiny quadratic
programs over task weights ``w`` in which the gradients enter only through the
Gramian ``M = G G^T``. With K tasks, K is small (2 to ~14), so the programs are
solved EXACTLY by active-set enumeration: for each of the ``2^K - 1`` candidate
supports the KKT equalities are solved as one linear system, every candidate is
made feasible (clipped, renormalised), and the feasible candidate with the
smallest objective wins. The optimum is among the candidates, and a degenerate
system (singular Gramian: identical or zero gradients) yields at worst a
feasible, non-optimal candidate that loses the comparison, never a NaN.

Above ``EXACT_MAX_TASKS`` tasks enumeration grows too fast, and an accelerated
projected-gradient method with a fixed number of iterations is used instead.
"""

from __future__ import annotations

import itertools

import jax
import jax.numpy as jnp
import numpy as np
from optax.projections import projection_simplex

EXACT_MAX_TASKS = 10
"""Largest task count solved by exact active-set enumeration (``2^K`` supports)."""

PGD_ITERS = 500
"""Iterations of accelerated projected gradient used above ``EXACT_MAX_TASKS``."""


def _supports(k: int) -> np.ndarray:
    """All non-empty supports of ``k`` variables as a ``[2^k - 1, k]`` float mask."""
    rows = [m for m in itertools.product((0.0, 1.0), repeat=k) if any(m)]
    return np.asarray(rows, np.float32)


def _normalized(gram: jax.Array) -> jax.Array:
    """``gram`` divided by its mean diagonal (argmins are scale-free; conditioning is not)."""
    gram = jnp.asarray(gram, jnp.float32)
    scale = jnp.trace(gram) / gram.shape[0]
    return gram / jnp.where(scale > 0, scale, 1.0)


def _quad(gram: jax.Array, w: jax.Array) -> jax.Array:
    return jnp.einsum("...i,ij,...j->...", w, gram, w)


def _to_simplex(w: jax.Array, fallback: jax.Array) -> jax.Array:
    """Clips a candidate to ``w >= 0`` and renormalises; a useless one becomes ``fallback``."""
    w = jnp.where(jnp.isfinite(w), jnp.maximum(w, 0.0), 0.0)
    total = jnp.sum(w)
    return jnp.where(total > 0, w / jnp.where(total > 0, total, 1.0), fallback)


JITTER = 1e-6
"""Ridge added to the (trace-normalised) support systems before their Cholesky solve."""


def support_solve(gram: jax.Array, mask: jax.Array, rhs: jax.Array) -> jax.Array:
    """Solves ``(M_SS + JITTER I) x_S = rhs_S`` on the support ``mask`` (zero elsewhere).

    ``M`` is positive semi-definite, so the ridged block is positive definite and
    a Cholesky solve suffices (much cheaper to compile than a pivoted LU); two
    steps of iterative refinement against the unridged block remove the ridge's
    bias when the block is regular. On a singular block the solution grows
    along the null space, which is the right direction for the normalised
    candidates; non-finite entries make a candidate lose the comparison.

    Args:
      gram: ``[K, K]`` trace-normalised Gramian.
      mask: ``[K]`` 0/1 support.
      rhs: ``[K]`` or ``[K, m]`` right-hand side.

    Returns:
      ``x`` with the shape of ``rhs``, zero off the support.
    """
    k = gram.shape[0]
    a = gram * mask[:, None] * mask[None, :] + jnp.diag(1.0 - mask)
    factor = jax.scipy.linalg.cho_factor(a + JITTER * jnp.eye(k, dtype=gram.dtype), lower=True)
    m = mask if rhs.ndim == 1 else mask[:, None]
    b = rhs * m
    x = jax.scipy.linalg.cho_solve(factor, b)
    for _ in range(2):  # iterative refinement removes the ridge's bias on regular blocks
        x = x + jax.scipy.linalg.cho_solve(factor, b - a @ x)
    return x * m


def _simplex_solve(gram: jax.Array, mask: jax.Array) -> jax.Array:
    """The KKT point ``w_S ∝ M_SS^{-1} 1`` of ``min w^T M w`` on the simplex, made feasible."""
    w = support_solve(gram, mask, mask)
    size = jnp.sum(mask)
    return _to_simplex(w, mask / jnp.where(size > 0, size, 1.0))


def _box_solve(gram: jax.Array, lower: jax.Array, mask: jax.Array) -> jax.Array:
    """The KKT point of ``min_{w >= lower} w^T M w`` with free set ``mask``, made feasible."""
    v = support_solve(gram, mask, -(gram @ lower))
    return lower + jnp.where(jnp.isfinite(v), jnp.maximum(v, 0.0), 0.0)


def _pick(objective: jax.Array, candidates: jax.Array) -> jax.Array:
    """The candidate with the smallest objective (NaN objectives never win)."""
    objective = jnp.where(jnp.isnan(objective), jnp.inf, objective)
    return candidates[jnp.argmin(objective)]


def _accelerated_pgd(gram, linear, project, w0, iters, lam_max=None):
    """FISTA on ``w^T M w + linear^T w`` with a projection, fixed iteration count."""
    if lam_max is None:
        lam_max = jnp.max(jnp.linalg.eigvalsh(gram))
    lipschitz = 2.0 * lam_max
    step = 1.0 / jnp.where(lipschitz > 0, lipschitz, 1.0)

    def body(_, carry):
        w, y, t = carry
        grad = 2.0 * gram @ y + linear
        w_next = project(y - step * grad)
        t_next = 0.5 * (1.0 + jnp.sqrt(1.0 + 4.0 * t * t))
        y = w_next + ((t - 1.0) / t_next) * (w_next - w)
        return w_next, y, t_next

    w, _, _ = jax.lax.fori_loop(0, iters, body, (w0, w0, jnp.ones((), w0.dtype)))
    return w


def min_norm_weights(gram: jax.typing.ArrayLike) -> jax.Array:
    r"""Weights of the min-norm point of the convex hull of the task gradients.

    .. math::
      w^\star = \arg\min_{w \in \Delta^K} \Big\|\sum_k w_k g_k\Big\|^2
              = \arg\min_{w \in \Delta^K} w^\top M w

    Exact (active-set enumeration) for ``K <= EXACT_MAX_TASKS``; accelerated
    projected gradient with ``PGD_ITERS`` iterations above.

    Args:
      gram: ``[K, K]`` Gramian ``M = G G^T`` (positive semi-definite).

    Returns:
      ``[K]`` float32 weights on the simplex. Ties (e.g. identical gradients) are
      broken towards the first candidate support, so identical gradients give
      ``e_1``; the min-norm POINT is unique even when the weights are not.

    Example:
      >>> import jax.numpy as jnp
      >>> [round(v, 3) for v in min_norm_weights(jnp.array([[1.0, 0.0], [0.0, 4.0]])).tolist()]
      [0.8, 0.2]
    """
    gram = _normalized(gram)
    k = gram.shape[0]
    if k == 1:
        return jnp.ones((1,), jnp.float32)
    if k > EXACT_MAX_TASKS:
        w0 = jnp.full((k,), 1.0 / k, jnp.float32)
        w = _accelerated_pgd(gram, jnp.zeros((k,), jnp.float32), projection_simplex, w0, PGD_ITERS)
        # Polish: solve the KKT system on the support the iterations found.
        candidates = jnp.stack([w, _simplex_solve(gram, (w > 1e-6).astype(jnp.float32))])
        return _pick(_quad(gram, candidates), candidates)
    candidates = jax.vmap(lambda m: _simplex_solve(gram, m))(jnp.asarray(_supports(k)))
    return _pick(_quad(gram, candidates), candidates)


def box_qp_weights(gram: jax.typing.ArrayLike, lower: jax.typing.ArrayLike) -> jax.Array:
    r"""Solves the box-constrained program ``min_{w >= lower} w^T M w``.

    With ``lower = u`` this is the dual of projecting ``G^T u`` onto the dual
    cone ``{v : G v >= 0}``: the projection is ``G^T w*`` (Quinton & Rey 2024,
    Prop. 1), which UPGrad averages over ``u = e_i / K``.

    Exact (active-set enumeration over the free variables ``w_S > lower_S``)
    for ``K <= EXACT_MAX_TASKS``; accelerated projected gradient above.

    Args:
      gram: ``[K, K]`` positive semi-definite Gramian.
      lower: ``[K]`` lower bounds (non-negative for the dual-cone use).

    Returns:
      ``[K]`` float32 weights ``w* >= lower``.

    Example:
      >>> import jax.numpy as jnp
      >>> m = jnp.array([[1.0, -1.0], [-1.0, 2.0]])
      >>> box_qp_weights(m, jnp.array([1.0, 0.0])).tolist()
      [1.0, 0.5]
    """
    gram = _normalized(gram)
    lower = jnp.asarray(lower, jnp.float32)
    k = gram.shape[0]
    if lower.shape != (k,):
        raise ValueError(f"lower has shape {lower.shape}; expected [{k}] to match gram.")
    if k > EXACT_MAX_TASKS:
        w = _accelerated_pgd(
            gram, jnp.zeros((k,), jnp.float32), lambda v: jnp.maximum(v, lower), lower, PGD_ITERS
        )
        free = (w > lower + 1e-6).astype(jnp.float32)
        candidates = jnp.stack([w, _box_solve(gram, lower, free)])
        return _pick(_quad(gram, candidates), candidates)
    masks = jnp.asarray(_supports(k))
    candidates = jnp.concatenate(
        [lower[None, :], jax.vmap(lambda m: _box_solve(gram, lower, m))(masks)], axis=0
    )
    return _pick(_quad(gram, candidates), candidates)
