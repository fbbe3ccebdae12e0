"""Coordinate-wise trimmed mean of the task gradients."""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import optax

from drgrad_jax._src.task_grads import check_matches_params, check_task_grads, require_num_tasks


class TrimmedMeanState(NamedTuple):
    """State of ``trimmed_mean``: only a step counter."""

    count: jax.Array


# Up to this many tasks the rows are sorted by compare-exchanges (elementwise min and
# max that XLA fuses into one pass); XLA's CPU sort of a short axis runs a comparator
# per coordinate and cost 3x a plain step on the benchmark MMoE at K = 2 (docs/drgrad.md,
# *Method table*).
NETWORK_MAX_TASKS = 16


def sorted_rows(x: jax.Array) -> jax.Array:
    """``jnp.sort(x, axis=0)`` for a short leading axis, by odd-even transposition.

    K rounds of compare-exchanges between neighbouring rows sort any input
    (Knuth, TAOCP vol. 3, 5.3.4); each round is elementwise. Above
    ``NETWORK_MAX_TASKS`` rows it is ``jnp.sort``. NaN coordinates come out in
    no particular order (callers mask them).
    """
    k = x.shape[0]
    if k > NETWORK_MAX_TASKS:
        return jnp.sort(x, axis=0)
    rows = list(x)
    for r in range(k):
        for i in range(r % 2, k - 1, 2):
            lo, hi = jnp.minimum(rows[i], rows[i + 1]), jnp.maximum(rows[i], rows[i + 1])
            rows[i], rows[i + 1] = lo, hi
    return jnp.stack(rows) if rows else x


def trimmed_mean(
    trim_number: int, *, num_tasks: int | None = None
) -> optax.GradientTransformationExtraArgs:
    r"""Coordinate-wise trimmed mean: drop the extremes of every coordinate, average the rest.

    Yin et al. (2018), Definition 2: for every coordinate ``j``, sort the K task
    values ``g_{1j}, ..., g_{Kj}``, remove the ``b = trim_number`` largest and
    the ``b`` smallest, and average the ``K - 2b`` that remain,

    .. math::
      d_j = \frac{1}{K - 2b} \sum_{k=b+1}^{K-b} g_{(k)j},

    a robust aggregate that ignores up to ``b`` outlying tasks per coordinate.
    Works leaf by leaf on the task axis, in each leaf's dtype. Same as TorchJD's
    ``TrimmedMean``; ``trim_number=0`` is the mean.

    Degenerate inputs: ``K = 1`` with ``b = 0`` gives ``g_1``; identical
    gradients give that gradient; a coordinate with a NaN in any task gives NaN
    (sorting would trim it away as an extreme, as TorchJD does; here a broken
    task gradient is not hidden, so ``optax.apply_if_finite`` can skip the step).

    Args:
      trim_number: ``b >= 0``, values removed at each end of every coordinate
        (static; needs ``K >= 2b + 1``).
      num_tasks: optional ``K``, the length of the task axis; inferred from the
        gradients when ``None``, checked against them when given.

    Returns:
      An ``optax.GradientTransformationExtraArgs`` mapping per-task gradients
      (leaves ``[K, *param_shape]``) to a params-shaped update; extra keyword
      arguments are ignored.

    Raises:
      ValueError: ``trim_number`` is negative or not an int; at the first
        update, ``K < 2 * trim_number + 1``.

    Example:
      >>> import jax.numpy as jnp
      >>> tx = trimmed_mean(1)
      >>> g = {"w": jnp.array([[1.0, -9.0], [2.0, 0.0], [100.0, 1.0]])}
      >>> tx.update(g, tx.init(None))[0]["w"].tolist()
      [2.0, 0.0]

    References:
      Yin, Chen, Ramchandran & Bartlett, *Byzantine-Robust Distributed Learning:
      Towards Optimal Statistical Rates*, ICML 2018,
      https://arxiv.org/abs/1803.01498.
    """
    if num_tasks is not None:
        require_num_tasks(num_tasks, "trimmed_mean")
    if not isinstance(trim_number, int) or isinstance(trim_number, bool) or trim_number < 0:
        raise ValueError(f"trim_number must be a non-negative int; got {trim_number!r}.")

    def init_fn(params):
        del params
        return TrimmedMeanState(count=jnp.zeros([], jnp.int32))

    def update_fn(task_grads, state, params=None, **extra_args):
        del extra_args
        k = check_task_grads(task_grads, num_tasks)
        check_matches_params(task_grads, params)
        if k < 2 * trim_number + 1:
            raise ValueError(
                f"trimmed_mean(trim_number={trim_number}) needs at least {2 * trim_number + 1} "
                f"tasks (2 * trim_number + 1); task_grads has {k}."
            )

        def leaf(g):
            gf = g.astype(jnp.float32)
            kept = sorted_rows(gf)[trim_number : k - trim_number]
            out = jnp.where(jnp.any(jnp.isnan(gf), axis=0), jnp.nan, jnp.mean(kept, axis=0))
            return out.astype(g.dtype)

        return jax.tree.map(leaf, task_grads), TrimmedMeanState(
            count=optax.safe_increment(state.count)
        )

    return optax.GradientTransformationExtraArgs(init_fn, update_fn)
