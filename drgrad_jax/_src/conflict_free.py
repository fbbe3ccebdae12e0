"""ConFIG: a conflict-free update with equal cosine to every task gradient."""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import optax

from drgrad_jax._src.domains import NON_NEGATIVE, check_task_vector, with_domains
from drgrad_jax._src.gramian import gramian_weighting
from drgrad_jax._src.task_grads import require_num_tasks


class ConflictFreeState(NamedTuple):
    """State of ``conflict_free``: only a step counter."""

    count: jax.Array


def conflict_free_weights(
    gram: jax.typing.ArrayLike, pref: jax.typing.ArrayLike | None = None
) -> jax.Array:
    r"""ConFIG's task weights from the Gramian.

    With ``D = diag(||g_k||)`` and the unit gradients' Gramian
    ``U U^T = D^+ M D^+``, the direction ``U^+ p = U^T (U U^T)^+ p`` equals
    ``G^T c`` with ``c = D^+ (U U^T)^+ p``; the update rescales its unit vector
    to the sum of the task gradients' projections on it:
    ``w = c (1^T M c) / (c^T M c)``.

    Args:
      gram: ``[K, K]`` Gramian of the task gradients.
      pref: ``[K]`` preference ``p`` (the target cosines, up to scale); ``None``
        for all ones.

    Returns:
      ``[K]`` float32 weights with update ``d = sum_k w_k g_k``.
    """
    gram = jnp.asarray(gram, jnp.float32)
    k = gram.shape[0]
    p = jnp.ones((k,), jnp.float32) if pref is None else jnp.asarray(pref, jnp.float32)
    if p.shape != (k,):
        raise ValueError(f"pref_vector has shape {p.shape}; expected [{k}] to match the task axis.")
    norms = jnp.sqrt(jnp.maximum(jnp.diagonal(gram), 0.0))
    inv_norms = jnp.where(norms > 0, 1.0 / jnp.where(norms > 0, norms, 1.0), 0.0)
    unit_gram = gram * inv_norms[:, None] * inv_norms[None, :]
    c = inv_norms * (jnp.linalg.pinv(unit_gram, hermitian=True) @ p)
    sq_norm = c @ gram @ c
    length = jnp.sum(gram @ c)
    return jnp.where(sq_norm > 0, c * length / jnp.where(sq_norm > 0, sq_norm, 1.0), 0.0)


def conflict_free(
    pref_vector: jax.typing.ArrayLike | None = None, *, num_tasks: int | None = None
) -> optax.GradientTransformationExtraArgs:
    r"""ConFIG: conflict-free gradient combination.

    Liu, Chu, Thuerey (2025), Eq. (2): the update direction is the one whose
    cosine with every task gradient is equal (more generally, proportional to
    the preference ``p``), found with the pseudo-inverse of the matrix ``U`` of
    unit task gradients, and its length is the sum of the task gradients'
    projections on it:

    .. math::
      \hat d = \frac{U^{+} p}{\|U^{+} p\|}, \qquad
      d = \Big(\sum_{k=1}^K \langle g_k, \hat d\rangle\Big)\, \hat d .

    Everything runs on the K x K Gramian (``conflict_free_weights``). This is
    TorchJD's ``ConFIG`` (default preference all ones); the pseudo-inverse is
    taken of ``U U^T`` with JAX's default cutoff (relative ``10 K eps`` on its
    eigenvalues) instead of TorchJD's cutoff on the singular values of ``U``, so
    the two differ only for nearly collinear task gradients.

    Degenerate inputs: zero task gradients get zero weight; ``K = 1`` gives
    ``g_1``; identical gradients give ``K g``; exactly opposite gradients give a
    zero update.

    Args:
      pref_vector: ``[K]`` preference ``p``, each entry ``>= 0`` (a float
        array, so ``optax.inject_hyperparams`` can schedule it), or ``None`` for
        all ones. Only its direction matters. The cosine of the update with
        ``g_k`` is proportional to ``p_k``, so ``p >= 0`` keeps the update
        conflict-free (``p_k = 0``: orthogonal to ``g_k``; all zeros: a zero
        update); a negative entry would ask for a conflict. Numbers outside, or
        a vector of the wrong length, are refused; a JAX array outside makes
        the update NaN (docs/drgrad.md, *Using the transformations*).
      num_tasks: optional ``K``, the length of the task axis; inferred from the
        gradients when ``None``, checked against them when given.

    Returns:
      An ``optax.GradientTransformationExtraArgs`` mapping per-task gradients
      (leaves ``[K, *param_shape]``) to a params-shaped update; extra keyword
      arguments are ignored.

    Example:
      >>> import jax.numpy as jnp
      >>> tx = conflict_free()
      >>> g = {"w": jnp.array([[2.0, 0.0], [0.0, 1.0]])}
      >>> [round(v, 3) for v in tx.update(g, tx.init(None))[0]["w"].tolist()]
      [1.5, 1.5]

    References:
      Liu, Chu & Thuerey, *ConFIG: Towards Conflict-free Training of Physics
      Informed Neural Networks*, ICLR 2025, https://arxiv.org/abs/2408.11104.
    """
    if num_tasks is not None:
        require_num_tasks(num_tasks, "conflict_free")
    check_task_vector("conflict_free", "pref_vector", pref_vector, num_tasks)

    def weights_fn(gram):
        check_task_vector("conflict_free", "pref_vector", pref_vector, gram.shape[0], axis=True)
        return conflict_free_weights(gram, pref_vector)

    tx = gramian_weighting(weights_fn, ConflictFreeState, num_tasks=num_tasks)
    return with_domains(tx, "conflict_free", pref_vector=(pref_vector, NON_NEGATIVE))
