"""GradVac: gradient vaccine, adaptive cosine-similarity targets."""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import optax

from drgrad_jax._src.domains import UNIT, with_domains
from drgrad_jax._src.gramian import gramian
from drgrad_jax._src.pcgrad import random_task_orders
from drgrad_jax._src.task_grads import (
    check_matches_params,
    check_task_grads,
    combine,
    require_num_tasks,
)


class GradVacState(NamedTuple):
    """State of ``gradvac``.

    Attributes:
      count: int32 step counter.
      key: draws each step's task orders.
      targets: ``[K, K]`` EMA cosine targets ``phi_hat_ij`` (start at 0).
    """

    count: jax.Array
    key: jax.Array
    targets: jax.Array


def _safe_div(num, den):
    return jnp.where(den > 0, num / jnp.where(den > 0, den, 1.0), 0.0)


def gradvac_weights(
    gram: jax.typing.ArrayLike,
    targets: jax.typing.ArrayLike,
    orders: jax.typing.ArrayLike,
    beta: jax.typing.ArrayLike,
) -> tuple[jax.Array, jax.Array]:
    r"""GradVac's task weights and updated cosine targets from the Gramian.

    Args:
      gram: ``[K, K]`` Gramian of the task gradients.
      targets: ``[K, K]`` current EMA targets ``phi_hat``.
      orders: ``[K, K]`` ints, row ``i`` the visiting order for task ``i``.
      beta: EMA rate of the targets.

    Returns:
      ``(weights [K], new_targets [K, K])``.
    """
    gram = jnp.asarray(gram, jnp.float32)
    targets = jnp.asarray(targets, jnp.float32)
    orders = jnp.asarray(orders, jnp.int32)
    beta = jnp.asarray(beta, jnp.float32)
    k = gram.shape[0]
    rows = jnp.arange(k)
    norms = jnp.sqrt(jnp.maximum(jnp.diagonal(gram), 0.0))

    def body(pos, carry):
        coef, tgt = carry
        j = orders[:, pos]
        cm = coef @ gram
        norm_i = jnp.sqrt(jnp.maximum(jnp.sum(cm * coef, axis=1), 0.0))
        norm_j = norms[j]
        valid = (j != rows) & (norm_i > 0) & (norm_j > 0)
        rho = jnp.clip(_safe_div(cm[rows, j], norm_i * norm_j), -1.0, 1.0)
        phi = tgt[rows, j]
        sin_phi = jnp.sqrt(jnp.maximum(1.0 - phi * phi, 0.0))
        sin_rho = jnp.sqrt(jnp.maximum(1.0 - rho * rho, 0.0))
        w = _safe_div(norm_i * (phi * sin_rho - rho * sin_phi), norm_j * sin_phi)
        coef = coef.at[rows, j].add(jnp.where(valid & (rho < phi), w, 0.0))
        tgt = tgt.at[rows, j].set(jnp.where(valid, (1.0 - beta) * phi + beta * rho, phi))
        return coef, tgt

    coef, targets = jax.lax.fori_loop(0, k, body, (jnp.eye(k, dtype=jnp.float32), targets))
    return jnp.sum(coef, axis=0), targets


def gradvac(
    beta: jax.typing.ArrayLike = 0.5, *, num_tasks: int | None = None, seed: int = 0
) -> optax.GradientTransformationExtraArgs:
    r"""Gradient Vaccine (GradVac): raise pairwise cosines to adaptive targets.

    Wang et al. (2021), Eq. (3) and Algorithm 1: for each task ``i`` and the other
    tasks ``j`` in random order, with ``phi_ij = cos(g_i^PC, g_j)`` and an EMA
    target ``phi_hat_ij`` (initially 0), when ``phi_ij < phi_hat_ij``

    .. math::
      g_i^{PC} \leftarrow g_i^{PC} + \frac{\|g_i^{PC}\|\,(\hat\phi_{ij}\sqrt{1-\phi_{ij}^2}
        - \phi_{ij}\sqrt{1-\hat\phi_{ij}^2})}{\|g_j\|\sqrt{1-\hat\phi_{ij}^2}}\, g_j,

    and always ``phi_hat_ij <- (1 - beta) phi_hat_ij + beta phi_ij``; the update
    is ``d = sum_i g_i^PC``. The paper applies this per layer and per language
    pair; here (as in LibMTL's default) the whole gradient is one vector. Runs on
    the Gramian; orders come from a key in the state.

    Degenerate inputs: a pair with a zero gradient is skipped (its target is
    left unchanged); ``K = 1`` gives ``g_1``; identical gradients (cosine 1)
    never fall below a target; exactly opposite gradients are moved towards the
    target only once it is above -1. Non-finite gradients give a non-finite
    update and leave the targets unchanged.

    Args:
      beta: EMA rate of the cosine targets (0.5 as in LibMTL; the paper uses 1e-2).
      num_tasks: ``K``, the length of the task axis (static; sizes the targets).
      seed: seeds the key that draws the task orders.

    Returns:
      An ``optax.GradientTransformationExtraArgs`` mapping per-task gradients
      (leaves ``[K, *param_shape]``) to a params-shaped update (the scale of the
      sum); extra keyword arguments are ignored.

    Example:
      >>> import jax.numpy as jnp
      >>> tx = gradvac(num_tasks=2)
      >>> g = {"w": jnp.array([[1.0, 0.0], [-1.0, 1.0]])}
      >>> [round(v, 3) for v in tx.update(g, tx.init(None))[0]["w"].tolist()]
      [0.5, 1.5]

    References:
      Wang, Tsvetkov, Firat & Cao, *Gradient Vaccine: Investigating and Improving
      Multi-task Optimization in Massively Multilingual Models*, ICLR 2021,
      https://arxiv.org/abs/2010.05874.
    """
    require_num_tasks(num_tasks, "gradvac")

    def init_fn(params):
        del params
        return GradVacState(
            count=jnp.zeros([], jnp.int32),
            key=jax.random.key(seed),
            targets=jnp.zeros((num_tasks, num_tasks), jnp.float32),
        )

    def update_fn(task_grads, state, params=None, **extra_args):
        del extra_args
        check_task_grads(task_grads, num_tasks)
        check_matches_params(task_grads, params)
        key, sub = jax.random.split(state.key)
        gram = gramian(task_grads)
        weights, targets = gradvac_weights(
            gram, state.targets, random_task_orders(sub, num_tasks), beta
        )
        targets = jnp.where(jnp.all(jnp.isfinite(gram)), targets, state.targets)
        return combine(weights, task_grads), GradVacState(
            count=optax.safe_increment(state.count), key=key, targets=targets
        )

    tx = optax.GradientTransformationExtraArgs(init_fn, update_fn)
    return with_domains(tx, "gradvac", beta=(beta, UNIT))
