"""SDMGrad: stochastic direction-oriented multi-objective gradient descent."""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import optax
from optax.projections import projection_simplex

from drgrad_jax._src.domains import (
    NON_NEGATIVE,
    POSITIVE,
    UNIT_RIGHT_OPEN,
    check_task_vector,
    with_domains,
)
from drgrad_jax._src.gramian import gramian
from drgrad_jax._src.task_grads import (
    check_matches_params,
    check_task_grads,
    combine,
    require_num_tasks,
)


class SDMGradState(NamedTuple):
    """State of ``sdmgrad``.

    Attributes:
      count: int32 step counter.
      weights: ``[K]`` inner weights ``w`` on the simplex (start at ``1/K``), warm
        start of the next inner solve.
    """

    count: jax.Array
    weights: jax.Array


def sdmgrad_weights(
    weights: jax.typing.ArrayLike,
    matrix: jax.typing.ArrayLike,
    *,
    lam: jax.typing.ArrayLike,
    pref: jax.typing.ArrayLike,
    learning_rate: jax.typing.ArrayLike,
    momentum: jax.typing.ArrayLike,
    n_iter: int,
) -> tuple[jax.Array, jax.Array]:
    r"""SDMGrad's inner solve: ``n_iter`` projected momentum-SGD steps from ``weights``.

    ``A`` is divided by the squared mean of ``sqrt(max(diag A, 0))`` (plus
    ``1e-8``); each step moves ``w`` along ``A (w + lam * pref)`` with heavy-ball
    momentum and projects it on the simplex.

    Returns:
      ``(w, c)``: the new inner weights and the task weights
      ``c = (w + lam * pref) / (1 + lam)`` of the update.
    """
    w = jnp.asarray(weights, jnp.float32)
    matrix = jnp.asarray(matrix, jnp.float32)
    lam = jnp.asarray(lam, jnp.float32)
    pref = jnp.asarray(pref, jnp.float32)
    scale = jnp.mean(jnp.sqrt(jnp.maximum(jnp.diagonal(matrix), 0.0)))
    a = matrix / (scale * scale + 1e-8)
    lr = jnp.asarray(learning_rate, jnp.float32)
    mom = jnp.asarray(momentum, jnp.float32)

    def body(_, carry):
        w, velocity = carry
        grad = a @ (w + lam * pref)
        velocity = mom * velocity + grad  # starts at zero: the first step is plain SGD
        return projection_simplex(w - lr * velocity), velocity

    w, _ = jax.lax.fori_loop(0, n_iter, body, (w, jnp.zeros_like(w)))
    return w, (w + lam * pref) / (1.0 + lam)


def sdmgrad(
    lam: jax.typing.ArrayLike = 0.3,
    learning_rate: jax.typing.ArrayLike = 10.0,
    momentum: jax.typing.ArrayLike = 0.5,
    pref_vector: jax.typing.ArrayLike | None = None,
    *,
    num_tasks: int | None = None,
    n_iter: int = 20,
) -> optax.GradientTransformationExtraArgs:
    r"""SDMGrad: a min-norm direction pulled towards a preferred (mean) direction.

    Xiao, Ban & Ji (2023), Eqs. (3)-(4) and Algorithm 1: the task weights solve

    .. math::
      \min_{w \in \Delta} \tfrac12 \|G^\top (w + \lambda \tilde w)\|^2,
      \qquad d = \frac{G^\top (w + \lambda \tilde w)}{1 + \lambda},

    with ``tilde w`` the preference (``1/K``: the mean gradient), approximately,
    by ``n_iter`` projected momentum-SGD steps warm-started from the previous
    update's ``w`` (kept in the state). The matrix is first divided by the
    squared mean gradient norm, so ``learning_rate`` is scale-free. The paper
    uses two independent batches for the inner matrix; one-batch ``G G^T`` is
    used here (``sdmgrad_weights`` accepts any ``[K, K]`` matrix). Same solver,
    defaults and normalisation as TorchJD's ``SDMGradWeighting``. At the default
    ``learning_rate = 10`` the inner iterations may cycle instead of converging;
    where 20 iterations stop in the cycle then depends on rounding, so float32
    and float64 runs can differ by a few percent (at ``learning_rate = 1`` they
    agree to float32 precision).

    Degenerate inputs: ``K = 1`` gives ``g_1``; all-zero gradients keep ``w``;
    non-finite gradients give a non-finite update and leave ``w`` unchanged.

    Args:
      lam: pull ``lambda >= 0`` towards the preferred direction (0.3 as in the
        authors' experiments; a float, so ``optax.inject_hyperparams`` can
        schedule it).
      learning_rate: inner SGD step size.
      momentum: inner heavy-ball momentum in ``[0, 1)``.
      pref_vector: ``[K]`` preference ``tilde w``, each entry ``>= 0`` (the
        preferred direction ``G^T tilde w`` is a non-negative combination of
        the task gradients; ``1/K``, the mean, in the paper), or ``None`` for
        ``1/K``. Not normalised: its scale sets the pull along with ``lam``.
        Numbers outside, or a vector of the wrong length, are refused; a JAX
        array outside makes the update NaN (docs/drgrad.md, *Using the
        transformations*).
      num_tasks: ``K`` (static; sizes ``w``).
      n_iter: inner iterations per update (static).

    Returns:
      An ``optax.GradientTransformationExtraArgs`` mapping per-task gradients
      (leaves ``[K, *param_shape]``) to a params-shaped update; extra keyword
      arguments are ignored.

    Example:
      >>> import jax.numpy as jnp
      >>> tx = sdmgrad(lam=0.0, num_tasks=2)
      >>> g = {"w": jnp.array([[1.0, 0.0], [0.0, 1.0]])}
      >>> [round(v, 3) for v in tx.update(g, tx.init(None))[0]["w"].tolist()]
      [0.5, 0.5]

    References:
      Xiao, Ban & Ji, *Direction-oriented Multi-objective Learning: Simple and
      Provable Stochastic Algorithms*, NeurIPS 2023,
      https://arxiv.org/abs/2305.18409.
    """
    require_num_tasks(num_tasks, "sdmgrad")
    if isinstance(n_iter, int) and n_iter < 1:
        raise ValueError(f"n_iter must be a positive int; got {n_iter!r}.")
    check_task_vector("sdmgrad", "pref_vector", pref_vector, num_tasks)

    def init_fn(params):
        del params
        return SDMGradState(
            count=jnp.zeros([], jnp.int32),
            weights=jnp.full((num_tasks,), 1.0 / num_tasks, jnp.float32),
        )

    def update_fn(task_grads, state, params=None, **extra_args):
        del extra_args
        check_task_grads(task_grads, num_tasks)
        check_matches_params(task_grads, params)
        pref = (
            jnp.full((num_tasks,), 1.0 / num_tasks, jnp.float32)
            if pref_vector is None
            else pref_vector
        )
        gram = gramian(task_grads)
        w, c = sdmgrad_weights(
            state.weights,
            gram,
            lam=lam,
            pref=pref,
            learning_rate=learning_rate,
            momentum=momentum,
            n_iter=n_iter,
        )
        kept = jnp.where(jnp.all(jnp.isfinite(gram)), w, state.weights)
        return combine(c, task_grads), SDMGradState(
            count=optax.safe_increment(state.count), weights=kept
        )

    tx = optax.GradientTransformationExtraArgs(init_fn, update_fn)
    return with_domains(
        tx,
        "sdmgrad",
        lam=(lam, NON_NEGATIVE),
        learning_rate=(learning_rate, POSITIVE),
        momentum=(momentum, UNIT_RIGHT_OPEN),
        pref_vector=(pref_vector, NON_NEGATIVE),
    )
