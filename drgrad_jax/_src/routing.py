"""The DRGrad router: which gradients between tasks help, and how much of them to add.

Pure functions of gradient pytrees (lists of leaves in one fixed order). Every
quantity the router computes -- cosines, norm ratios, indicators -- is a
constant of the backward pass: nothing here is differentiated through.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

EPS = 1e-12
"""Floor of norm products in cosines and of denominators in norm ratios (see docs/drgrad.md, *Degenerate norms*)."""

PAIRINGS = ("consistent", "as_printed")


class RouterDiagnostics(NamedTuple):
    """What the router saw at one step, for one primary task (the paper's Fig. 4-7).

    Attributes:
      xi_shared: cos(g1', g1'') -- the primary task's two branches.
      xi_aux: ``[J]`` cos(g1', g2j) for each auxiliary task j.
      lam_shared: the scale applied to g1'' on the dedicated side.
      lam_aux: ``[J]`` the scale applied to g2j on the dedicated side
        (before the sign indicator).
      ratio_aux: ``[J]`` the unclipped norm ratio ||g1'|| / ||g2j||.
      case: ``[J]`` int32 row of the paper's Table 1 that fired:
        0 = (xi_shared >= 0, xi_aux >= 0), 1 = (>= 0, < 0), 2 = (< 0, >= 0),
        3 = (< 0, < 0).
    """

    xi_shared: jax.Array
    xi_aux: jax.Array
    lam_shared: jax.Array
    lam_aux: jax.Array
    ratio_aux: jax.Array
    case: jax.Array


def empty_diagnostics(num_aux: int) -> RouterDiagnostics:
    """Diagnostics before the first step: zero cosines and scales, case 0."""
    z = jnp.zeros((), jnp.float32)
    zj = jnp.zeros((num_aux,), jnp.float32)
    return RouterDiagnostics(z, zj, z, zj, zj, jnp.zeros((num_aux,), jnp.int32))


def _f32(leaves):
    return [jnp.asarray(x, jnp.float32) for x in leaves]


def sq_norm(leaves, axis_keep: bool = False) -> jax.Array:
    """Squared L2 norm over all leaves (over all but the leading axis if ``axis_keep``)."""
    total = jnp.zeros((), jnp.float32)
    for x in _f32(leaves):
        if axis_keep:
            total = total + jnp.sum(x.reshape(x.shape[0], -1) ** 2, axis=1)
        else:
            total = total + jnp.sum(x**2)
    return total


def norm(leaves) -> jax.Array:
    """L2 norm over all entries of all leaves, in float32."""
    return jnp.sqrt(sq_norm(leaves))


def vdot(a_leaves, b_leaves) -> jax.Array:
    """Inner product of two equally shaped lists of leaves, in float32."""
    total = jnp.zeros((), jnp.float32)
    for a, b in zip(_f32(a_leaves), _f32(b_leaves), strict=True):
        total = total + jnp.vdot(a, b)
    return total


def cosine(dot, norm_a, norm_b, eps=EPS):
    """cos = <a, b> / max(||a|| ||b||, eps); a zero vector gives 0, never NaN."""
    return dot / jnp.maximum(norm_a * norm_b, eps)


def norm_scale(norm_primary, norm_other, gamma, eps=EPS):
    """Eq. R1's scale [clip(||g1'|| / ||other||, 0, 1)]^gamma; 0 when ||other|| = 0.

    NaN when gamma is not > 0 (e.g. a schedule reaching 0, a negative value or
    NaN at run time), so the step is non-finite and the training guard skips it.
    """
    ratio = jnp.clip(norm_primary / jnp.maximum(norm_other, eps), 0.0, 1.0)
    scale = jnp.where(norm_other > 0, ratio**gamma, 0.0)
    return jnp.where(jnp.asarray(gamma) > 0, scale, jnp.nan)


def route(g_dedicated, g_shared, g_aux, *, gamma=1.0, pairing="consistent", eps=EPS):
    """The DRGrad router (paper Eq. R1-R2) on lists of leaves.

    See docs/drgrad.md, *The router*, *Pairing of cosines and ratios*, *Degenerate
    norms* and *Several tasks*.

    With g1' the primary task's gradient through its dedicated branch, g1'' its
    gradient through the shared branch and g2j each auxiliary task's gradient
    (``consistent`` pairing; ``as_printed`` swaps which gradient defines xi1, lam1
    and xi2, lam2 and needs exactly one auxiliary task):

        xi1 = cos(g1', g1''),   lam1 = clip(||g1'|| / ||g1''||, 0, 1)^gamma
        xi_j = cos(g1', g2j),   lam_j = clip(||g1'|| / ||g2j||, 0, 1)^gamma
        g_R'  = (1 - 1{xi1 < 0} xi1) lam1 g1''  +  sum_j 1{xi_j >= 0} lam_j g2j
        g_R'' = - sum_j 1{xi1 xi_j < 0} xi1 xi_j g1''

    Validity is decided by the sign of the cosine alone (threshold exactly 0).
    Zero vectors give cos = 0 and lam = 0: no NaN ever.

    Args:
      g_dedicated: list of leaves of g1'.
      g_shared: list of leaves of g1'', shaped like ``g_dedicated``.
      g_aux: list of leaves with a leading axis J stacking the g2j, each
        ``[J, *shape]`` matching ``g_dedicated``.
      gamma: the exponent of the norm ratio (gamma > 0; default 1).
      pairing: ``"consistent"`` (default) or ``"as_printed"``.
      eps: floor of cosine denominators.

    Returns:
      ``(g_route_dedicated, g_route_shared, diagnostics)``: the two lists of
      leaves g_R', g_R'' (float32, to be ADDED to g1' and g1'') and a
      ``RouterDiagnostics``.

    Example:
      >>> import jax.numpy as jnp
      >>> g1p, g1pp = [jnp.array([1.0, 0.0])], [jnp.array([1.0, 1.0])]
      >>> g2 = [jnp.array([[0.0, -2.0]])]
      >>> r_ded, r_sh, diag = route(g1p, g1pp, g2)
      >>> int(diag.case[0])  # xi1 >= 0, xi2 = 0 >= 0: Table 1 row 1
      0
      >>> [round(float(v), 4) for v in r_ded[0]]  # lam1 g1'' + lam2 g2, lam = 1/sqrt(2), 1/2
      [0.7071, -0.2929]

    References:
      Liu, Miao, Xia, "Direct Routing Gradient (DRGrad): A Personalized
      Information Surgery for Multi-Task Learning (MTL) Recommendations",
      AAAI 2025. https://arxiv.org/abs/2510.09643
    """
    if pairing not in PAIRINGS:
        raise ValueError(f"pairing must be one of {PAIRINGS}; got {pairing!r}.")
    g1p, g1pp, g2 = _f32(g_dedicated), _f32(g_shared), _f32(g_aux)
    num_aux = g2[0].shape[0] if g2 else 0
    if pairing == "as_printed" and num_aux != 1:
        raise ValueError(
            f"pairing='as_printed' is defined for exactly one auxiliary task; got {num_aux}."
        )
    n1p, n1pp = norm(g1p), norm(g1pp)
    n2 = jnp.sqrt(sq_norm(g2, axis_keep=True)) if g2 else jnp.zeros((0,), jnp.float32)
    xi_shared = cosine(vdot(g1p, g1pp), n1p, n1pp, eps)
    dots2 = sum(
        (jnp.einsum("j...,...->j", b, a) for a, b in zip(g1p, g2, strict=True)),
        jnp.zeros((num_aux,), jnp.float32),
    )
    xi_aux = cosine(dots2, n1p, n2, eps)
    lam_shared = norm_scale(n1p, n1pp, gamma, eps)
    lam_aux = norm_scale(n1p, n2, gamma, eps)
    ratio_aux = n1p / jnp.maximum(n2, eps)

    if pairing == "consistent":
        coef_shared = (1.0 - jnp.where(xi_shared < 0, xi_shared, 0.0)) * lam_shared
        coef_aux = jnp.where(xi_aux >= 0, lam_aux, 0.0)
        coef_route_shared = -jnp.sum(jnp.where(xi_shared * xi_aux < 0, xi_shared * xi_aux, 0.0))
    else:  # Eq. 1 as printed: (xi1, lam1) from g2, (xi2, lam2) from g1''.
        xi1, lam1 = xi_aux[0], lam_aux[0]
        xi2, lam2 = xi_shared, lam_shared
        coef_shared = (1.0 - jnp.where(xi1 < 0, xi1, 0.0)) * lam1
        coef_aux = jnp.where(xi2 >= 0, lam2, 0.0)[None]
        coef_route_shared = -jnp.where(xi1 * xi2 < 0, xi1 * xi2, 0.0)

    g_route_dedicated = [
        coef_shared * b + jnp.einsum("j,j...->...", coef_aux, c)
        for b, c in zip(g1pp, g2, strict=True)
    ]
    g_route_shared = [coef_route_shared * b for b in g1pp]
    case = (2 * (xi_shared < 0) + (xi_aux < 0)).astype(jnp.int32)
    diag = RouterDiagnostics(xi_shared, xi_aux, lam_shared, lam_aux, ratio_aux, case)
    return g_route_dedicated, g_route_shared, diag


def released_code_route(g_a, g_b, *, eps=EPS):
    """The authors' released Census routing rule between two heads.

    See docs/drgrad.md, *The authors' released rule*.

    With g_a, g_b the gradients of the two heads' first kernels, all from the
    original (pre-routing) gradients:

        c = cos(g_a, g_b),   f = 1{c > 0}
        s_a = sum_k (g_a / ||g_a||)_k,   s_b = sum_k (g_b / ||g_b||)_k
        w_ab = clip(s_a / s_b, 0.1, 5),  w_ba = clip(s_b / s_a, 0.1, 5)
              (a ratio with a zero denominator is 0, hence 0.1)
        head a += w_ab (g_b - (1 - f) c g_b),   head b += w_ba (g_a - (1 - f) c g_a)

    Args:
      g_a: list of leaves of head a's gradient.
      g_b: list of leaves of head b's gradient, shaped like ``g_a``.
      eps: floor of cosine denominators.

    Returns:
      ``(added_a, added_b, diagnostics)``: float32 lists of leaves to ADD to the
      two heads' gradients, and ``RouterDiagnostics`` with ``xi_shared = c``,
      ``lam_shared = w_ab``, ``lam_aux = [w_ba]``, ``case = [0 if c > 0 else 1]``.

    References:
      github.com/logwhistle/drgrad_for_aaai25 (TensorFlow 1).
    """
    ga, gb = _f32(g_a), _f32(g_b)
    na, nb = norm(ga), norm(gb)
    c = cosine(vdot(ga, gb), na, nb, eps)
    conflict = jnp.where(c > 0, 0.0, 1.0)

    def unit_sum(leaves, n):
        s = sum(jnp.sum(x) for x in leaves)
        return jnp.where(n > 0, s / jnp.maximum(n, eps), 0.0)

    s_a, s_b = unit_sum(ga, na), unit_sum(gb, nb)

    def ratio(num, den):
        r = jnp.where(den != 0, num / jnp.where(den != 0, den, 1.0), 0.0)
        return jnp.clip(r, 0.1, 5.0)

    w_ab, w_ba = ratio(s_a, s_b), ratio(s_b, s_a)
    keep = 1.0 - conflict * c  # (1 + |c|) under conflict, 1 under cooperation
    added_a = [w_ab * keep * b for b in gb]
    added_b = [w_ba * keep * a for a in ga]
    z = jnp.zeros((1,), jnp.float32)
    diag = RouterDiagnostics(
        xi_shared=c,
        xi_aux=c[None],
        lam_shared=w_ab,
        lam_aux=w_ba[None],
        ratio_aux=z,
        case=conflict.astype(jnp.int32)[None],
    )
    return added_a, added_b, diag
