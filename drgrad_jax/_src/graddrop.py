"""GradDrop: gradient sign dropout, coordinate by coordinate."""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import optax

from drgrad_jax._src.domains import UNIT, check_task_vector, with_domains
from drgrad_jax._src.task_grads import check_matches_params, check_task_grads, require_num_tasks


class GradDropState(NamedTuple):
    """State of ``graddrop``: a step counter and the key that draws the thresholds."""

    count: jax.Array
    key: jax.Array


# Up to this many tasks ``graddrop_combine`` works row by row (elementwise, fused);
# above it, with reductions over the task axis.
UNROLL_MAX_TASKS = 16


def _purity(total: jax.Array, magnitude: jax.Array) -> jax.Array:
    """``P = (1 + sum_k g_k / sum_k |g_k|) / 2``; an all-zero coordinate keeps nothing, any P will do."""
    return 0.5 * (1.0 + total / jnp.where(magnitude > 0, magnitude, 1.0))


def graddrop_combine(task_grads, uniforms, leak: jax.typing.ArrayLike | None = None):
    r"""GradDrop's update for given uniform thresholds (one per coordinate).

    Args:
      task_grads: per-task gradients, leaves ``[K, *shape]``.
      uniforms: a params-shaped tree of thresholds ``U`` in ``[0, 1)``.
      leak: ``[K]`` leak ``l_k`` in ``[0, 1]``, or ``None`` for zeros.

    Returns:
      The params-shaped update
      ``d = sum_k (l_k + (1 - l_k) m_k) g_k`` with the keep masks
      ``m_k = [P > U] [g_k > 0] + [P < U] [g_k < 0]``,
      ``P = (1 + sum_k g_k / sum_k |g_k|) / 2``.
    """

    lk = None if leak is None else jnp.asarray(leak, jnp.float32)

    def leaf(g, u):
        combine = _by_rows if g.shape[0] <= UNROLL_MAX_TASKS else _by_reductions
        out, magnitude = combine(g.astype(jnp.float32), u)
        # XLA may turn factor * g into a select, which drops a NaN that a multiply by
        # a zero factor would keep: a non-finite task value makes the coordinate NaN,
        # so ``optax.apply_if_finite`` after the transform skips the step.
        return jnp.where(jnp.isfinite(magnitude), out, jnp.nan).astype(g.dtype)

    def _by_rows(gf, u):
        # Task rows one by one: every line is elementwise, so XLA fuses the leaf into
        # one pass (reductions over the leading task axis ran 50x slower on CPU).
        rows = list(gf)
        total, magnitude = rows[0], jnp.abs(rows[0])
        for r in rows[1:]:
            total, magnitude = total + r, magnitude + jnp.abs(r)
        above, below = (purity := _purity(total, magnitude)) > u, purity < u
        out = None
        for i, r in enumerate(rows):
            keep = (above & (r > 0)) | (below & (r < 0))
            factor = keep.astype(jnp.float32) if lk is None else lk[i] + (1.0 - lk[i]) * keep
            out = factor * r if out is None else out + factor * r
        return out, magnitude

    def _by_reductions(gf, u):
        magnitude = jnp.sum(jnp.abs(gf), axis=0)
        purity = _purity(jnp.sum(gf, axis=0), magnitude)
        keep = ((purity > u)[None] & (gf > 0)) | ((purity < u)[None] & (gf < 0))
        if lk is None:
            factor = keep.astype(jnp.float32)
        else:
            factor = lk.reshape((-1,) + (1,) * (gf.ndim - 1))
            factor = factor + (1.0 - factor) * keep
        return jnp.sum(factor * gf, axis=0), magnitude

    return jax.tree.map(leaf, task_grads, uniforms)


def graddrop(
    leak: jax.typing.ArrayLike | None = None, *, seed: int = 0, num_tasks: int | None = None
) -> optax.GradientTransformationExtraArgs:
    r"""GradDrop: keep, coordinate by coordinate, only the gradients of one sign.

    Chen et al. (2020), Algorithm 1, lines 10-15: the positive sign purity of
    every coordinate,

    .. math::
      P = \tfrac12\Big(1 + \frac{\sum_k g_k}{\sum_k |g_k|}\Big),

    is compared with a fresh uniform draw ``U``: where ``P > U`` only positive
    task gradients pass, where ``P < U`` only negative ones, and the update is
    ``d = sum_k (l_k + (1 - l_k) m_k) g_k`` with ``m_k`` that mask and ``l_k``
    the leak of task ``k``. The draws come from a key in the state (one per
    leaf, split every step). Same rule as TorchJD's ``GradDrop`` with the
    identity purity map; the paper computes ``P`` at a layer's activations after
    summing over the batch, which here is whatever the task gradients are
    (parameters, or a representation from ``per_task_rep_grads``).

    Degenerate inputs: all-zero coordinates give zero; ``K = 1`` passes ``g_1``
    through (``P`` is 0 or 1); identical gradients pass unchanged (``K g``);
    exactly opposite gradients (``P = 1/2``) keep one of the two at random.

    Args:
      leak: ``[K]`` leak values, each in ``[0, 1]`` as in the paper (a float
        array, so ``optax.inject_hyperparams`` can schedule it; ``1`` lets a
        task through unmasked, ``0`` masks it as plain GradDrop does), or
        ``None`` for no leak. Numbers outside, or a vector of the wrong length,
        are refused; a JAX array outside makes the update NaN (docs/drgrad.md,
        *Using the transformations*).
      seed: seeds the key in the state that draws the thresholds.
      num_tasks: optional ``K``, the length of the task axis; inferred from the
        gradients when ``None``, checked against them when given.

    Returns:
      An ``optax.GradientTransformationExtraArgs`` mapping per-task gradients
      (leaves ``[K, *param_shape]``) to a params-shaped update; extra keyword
      arguments are ignored.

    Example:
      >>> import jax.numpy as jnp
      >>> tx = graddrop()
      >>> g = {"w": jnp.array([[1.0, 2.0], [3.0, -1.0]])}
      >>> d, _ = tx.update(g, tx.init(None))
      >>> d["w"][0].tolist()
      4.0

    References:
      Chen, Ngiam, Huang, Luong, Kretzschmar, Chai & Anguelov, *Just Pick a
      Sign: Optimizing Deep Multitask Models with Gradient Sign Dropout*,
      NeurIPS 2020, https://arxiv.org/abs/2010.06808.
    """
    if num_tasks is not None:
        require_num_tasks(num_tasks, "graddrop")
    check_task_vector("graddrop", "leak", leak, num_tasks)

    def init_fn(params):
        del params
        return GradDropState(count=jnp.zeros([], jnp.int32), key=jax.random.key(seed))

    def update_fn(task_grads, state, params=None, **extra_args):
        del extra_args
        k = check_task_grads(task_grads, num_tasks)
        check_matches_params(task_grads, params)
        check_task_vector("graddrop", "leak", leak, k, axis=True)
        key, sub = jax.random.split(state.key)
        return graddrop_combine(task_grads, graddrop_uniforms(sub, task_grads), leak), (
            GradDropState(count=optax.safe_increment(state.count), key=key)
        )

    tx = optax.GradientTransformationExtraArgs(init_fn, update_fn)
    return with_domains(tx, "graddrop", leak=(leak, UNIT))


def graddrop_uniforms(key: jax.Array, task_grads):
    """The params-shaped tree of float32 thresholds ``U`` that ``graddrop`` draws from ``key``."""
    leaves, treedef = jax.tree_util.tree_flatten(task_grads)
    keys = jax.random.split(key, len(leaves))
    return jax.tree_util.tree_unflatten(
        treedef, [jax.random.uniform(kk, g.shape[1:], jnp.float32) for kk, g in zip(keys, leaves)]
    )
