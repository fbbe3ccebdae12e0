"""Krum and Multi-Krum: keep the task gradients closest to their neighbours."""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import optax

from drgrad_jax._src.gramian import gramian_weighting
from drgrad_jax._src.task_grads import require_num_tasks


class KrumState(NamedTuple):
    """State of ``krum``: only a step counter."""

    count: jax.Array


def krum_weights(
    gram: jax.typing.ArrayLike,
    n_byzantine: int,
    n_selected: int = 1,
    *,
    squared: bool = True,
) -> jax.Array:
    r"""Krum's task weights from the Gramian: ``1 / n_selected`` on the selected tasks.

    Pairwise squared distances are ``M_ii + M_jj - 2 M_ij``. Each task's score
    sums its distances to its ``K - n_byzantine - 2`` nearest other tasks; the
    ``n_selected`` lowest scores are kept (ties go to the lower index).

    Args:
      gram: ``[K, K]`` Gramian of the task gradients.
      n_byzantine: ``f``, the number of tasks that may be adversarial.
      n_selected: ``m``, how many tasks are averaged (Multi-Krum; 1 is Krum).
      squared: sum squared distances (the paper) or distances (TorchJD).

    Returns:
      ``[K]`` float32 weights.
    """
    gram = jnp.asarray(gram, jnp.float32)
    k = gram.shape[0]
    _check_counts(k, n_byzantine, n_selected)
    sq = jnp.diagonal(gram)
    dist = jnp.maximum(sq[:, None] + sq[None, :] - 2.0 * gram, 0.0)
    if not squared:
        dist = jnp.sqrt(dist)
    # The task itself sits at distance 0; masking it with inf keeps that true
    # when rounding makes a distance to a copy of the task come out below 0.
    dist = jnp.where(jnp.eye(k, dtype=bool), jnp.inf, dist)
    nearest = -jax.lax.top_k(-dist, k - n_byzantine - 2)[0]
    scores = jnp.sum(nearest, axis=1)
    selected = jax.lax.top_k(-scores, n_selected)[1]
    return jnp.zeros((k,), jnp.float32).at[selected].set(1.0 / n_selected)


def _check_counts(k: int, n_byzantine: int, n_selected: int) -> None:
    if k < n_byzantine + 3:
        raise ValueError(
            f"krum(n_byzantine={n_byzantine}) needs at least {n_byzantine + 3} tasks "
            f"(n_byzantine + 3); task_grads has {k}."
        )
    if k < n_selected:
        raise ValueError(
            f"krum(n_selected={n_selected}) needs at least {n_selected} tasks; got {k}."
        )


def krum(
    n_byzantine: int, n_selected: int = 1, *, squared: bool = True, num_tasks: int | None = None
) -> optax.GradientTransformationExtraArgs:
    r"""Krum / Multi-Krum: average the task gradients that sit closest to the others.

    Blanchard et al. (2017), Sec. 4: with ``f = n_byzantine`` and the score

    .. math::
      s(i) = \sum_{j \in N_i} \|g_i - g_j\|^2,

    where ``N_i`` holds the ``K - f - 2`` tasks closest to ``i``, Krum returns
    the gradient with the smallest score; Multi-Krum (``n_selected = m``)
    averages the ``m`` lowest-scoring gradients. Distances come from the
    Gramian. ``squared=False`` sums plain distances, as TorchJD's ``Krum`` does
    (the selections may differ; the paper squares them).

    Degenerate inputs: ties between scores (identical gradients) select the
    lower task index; zero task gradients are ordinary points.

    Args:
      n_byzantine: ``f >= 0`` (static; needs ``K >= f + 3``).
      n_selected: ``m >= 1`` gradients averaged (static; ``K >= m``).
      squared: score with squared distances (paper, default) or distances.
      num_tasks: optional ``K``, the length of the task axis; inferred from the
        gradients when ``None``, checked against them when given.

    Returns:
      An ``optax.GradientTransformationExtraArgs`` mapping per-task gradients
      (leaves ``[K, *param_shape]``) to a params-shaped update; extra keyword
      arguments are ignored.

    Raises:
      ValueError: a negative ``n_byzantine``, ``n_selected < 1``; at the first
        update, too few tasks.

    Example:
      >>> import jax.numpy as jnp
      >>> tx = krum(n_byzantine=1)
      >>> g = {"w": jnp.array([[1.0, 0.0], [1.1, 0.0], [0.9, 0.1], [50.0, 0.0]])}
      >>> tx.update(g, tx.init(None))[0]["w"].tolist()
      [1.0, 0.0]

    References:
      Blanchard, El Mhamdi, Guerraoui & Stainer, *Machine Learning with
      Adversaries: Byzantine Tolerant Gradient Descent*, NeurIPS 2017,
      https://papers.nips.cc/paper/6617-machine-learning-with-adversaries-byzantine-tolerant-gradient-descent.
    """
    if num_tasks is not None:
        require_num_tasks(num_tasks, "krum")
    for name, value, low in (("n_byzantine", n_byzantine, 0), ("n_selected", n_selected, 1)):
        if not isinstance(value, int) or isinstance(value, bool) or value < low:
            raise ValueError(f"{name} must be an int >= {low}; got {value!r}.")
    return gramian_weighting(
        lambda gram: krum_weights(gram, n_byzantine, n_selected, squared=squared),
        KrumState,
        num_tasks=num_tasks,
    )
