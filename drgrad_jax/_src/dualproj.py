"""DualProj: the mean gradient projected onto the dual cone of the task gradients."""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import optax

from drgrad_jax._src.domains import NON_NEGATIVE, check_task_vector, with_domains
from drgrad_jax._src.gramian import gramian_weighting
from drgrad_jax._src.min_norm import box_qp_weights
from drgrad_jax._src.task_grads import require_num_tasks


class DualProjState(NamedTuple):
    """State of ``dualproj``: only a step counter."""

    count: jax.Array


def dualproj_weights(
    gram: jax.typing.ArrayLike, pref: jax.typing.ArrayLike | None = None
) -> jax.Array:
    r"""DualProj's task weights: ``argmin_{w >= u} w^T M w`` with ``u`` the preference.

    Args:
      gram: ``[K, K]`` Gramian of the task gradients.
      pref: ``[K]`` non-negative preference ``u``; ``None`` for ``1 / K``.

    Returns:
      ``[K]`` float32 weights ``w >= u`` with update ``d = sum_k w_k g_k``.
    """
    gram = jnp.asarray(gram, jnp.float32)
    k = gram.shape[0]
    if pref is None:
        u = jnp.full((k,), 1.0 / k, jnp.float32)
    else:
        u = jnp.asarray(pref, jnp.float32)
        if u.shape != (k,):
            raise ValueError(
                f"pref_vector has shape {u.shape}; expected [{k}] to match the task axis."
            )
    return box_qp_weights(gram, u)


def dualproj(
    pref_vector: jax.typing.ArrayLike | None = None, *, num_tasks: int | None = None
) -> optax.GradientTransformationExtraArgs:
    r"""DualProj: project the (weighted) mean gradient onto the dual cone.

    With ``u`` the preference (``1 / K`` by default), ``G^T u`` is projected onto
    the dual cone ``C = {v : <g_j, v> >= 0 for all j}`` of the task gradients
    (the projection of Lopez-Paz & Ranzato 2017, Eq. 11, used for every task at
    once). By Quinton & Rey (2024), Prop. 1, the projection is ``G^T w`` with

    .. math::
      w = \arg\min_{w \ge u} w^\top G G^\top w, \qquad d = \sum_k w_k g_k,

    so ``<g_j, d> >= 0`` for every task, and ``d`` is the weighted mean when the
    tasks do not conflict. The box QP is solved exactly from the Gramian
    (``box_qp_weights``, shared with ``upgrad``, which averages K such
    projections). TorchJD solves the same QP with quadprog after dividing the
    Gramian by its trace and adding ``1e-4 I``; that ridge moves its answer by
    up to ``~1e-3`` relative on small random problems, the only deliberate
    difference (with the same ridge the two agree to float32 rounding).

    Degenerate inputs: ``K = 1`` gives ``u_1 g_1``; identical gradients give
    ``sum(u) g``; exactly opposite gradients give zero; zero task gradients
    impose no constraint.

    Args:
      pref_vector: ``[K]`` preference ``u``, each entry ``>= 0`` (a float
        array, so ``optax.inject_hyperparams`` can schedule it; ``G^T u`` is the
        weighted mean that is projected), or ``None`` for ``1 / K``. Not
        normalised: the update scales with ``u``, and all zeros give a zero
        update. Numbers outside, or a vector of the wrong length, are refused;
        a JAX array outside makes the update NaN (docs/drgrad.md, *Using the
        transformations*).
      num_tasks: optional ``K``, the length of the task axis; inferred from the
        gradients when ``None``, checked against them when given.

    Returns:
      An ``optax.GradientTransformationExtraArgs`` mapping per-task gradients
      (leaves ``[K, *param_shape]``) to a params-shaped update; extra keyword
      arguments are ignored.

    Example:
      >>> import jax.numpy as jnp
      >>> tx = dualproj()
      >>> g = {"w": jnp.array([[1.0, 0.0], [-1.0, 1.0]])}
      >>> [round(v, 3) for v in tx.update(g, tx.init(None))[0]["w"].tolist()]
      [0.0, 0.5]

    References:
      Lopez-Paz & Ranzato, *Gradient Episodic Memory for Continual Learning*,
      NeurIPS 2017, https://arxiv.org/abs/1706.08840;
      Quinton & Rey, *Jacobian Descent for Multi-Objective Optimization*, 2024,
      https://arxiv.org/abs/2406.16232 (TorchJD's ``DualProj``).
    """
    if num_tasks is not None:
        require_num_tasks(num_tasks, "dualproj")
    check_task_vector("dualproj", "pref_vector", pref_vector, num_tasks)

    def weights_fn(gram):
        check_task_vector("dualproj", "pref_vector", pref_vector, gram.shape[0], axis=True)
        return dualproj_weights(gram, pref_vector)

    tx = gramian_weighting(weights_fn, DualProjState, num_tasks=num_tasks)
    return with_domains(tx, "dualproj", pref_vector=(pref_vector, NON_NEGATIVE))
