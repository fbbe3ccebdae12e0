"""The task Gramian ``G G^T``, formed in one pass and safely scaled, and the weighting on it.

Every method that only needs the K x K matrix of inner products between task
gradients (MGDA, UPGrad, IMTL-G, Nash-MTL, CAGrad, ...) goes through
``gramian_weighting``; how the Gramian is formed is in docs/drgrad.md, *Cost of
the K backward passes*.
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np

from drgrad_jax._src.task_grads import stateless_weighting

ONE_PASS_MIN_SIZE = 1 << 16
"""Leaves with at least this many elements per task take ``_gramian_one_pass``."""

ONE_PASS_MAX_PRODUCTS = 136
"""Most products ``g_i * g_j`` one reduction carries (all pairs of 16 tasks at one scale,
of 9 tasks at ``scaled_gramian``'s three); beyond it, leaves go through matrix products."""


def gramian(task_grads) -> jax.Array:
    """The K x K Gramian ``G G^T`` of task gradients, summed leaf by leaf.

    ``G[i, j] = sum over leaves <g_i, g_j>`` computed in float32 without ever
    flattening the whole Jacobian into one matrix. Small leaves go through one
    ``[K, n] x [n, K]`` product; large ones (``n >= 2**16`` elements per task,
    K <= 16) through one pass that reads each task's gradient once and
    accumulates all ``K (K + 1) / 2`` products together (see
    ``_gramian_one_pass``), which on CPU is several times faster than the
    matrix product for cotangents of activations (e.g. ``[4, 2048, 8, 128]``).

    Args:
      task_grads: pytree with leaves ``[K, *shape]``.

    Returns:
      A float32 array of shape ``[K, K]``.

    Example:
      >>> import jax.numpy as jnp
      >>> g = {"w": jnp.array([[1.0, 0.0], [0.0, 2.0]])}
      >>> gramian(g).tolist()
      [[1.0, 0.0], [0.0, 4.0]]
    """
    return _gramians(task_grads, (1.0,))[0]


def _gramians(task_grads, scales: tuple[float, ...]) -> jax.Array:
    """``[len(scales), K, K]``: the Gramian of ``c * task_grads`` for each scale ``c``.

    Each gradient is multiplied by ``c`` before the products are formed, so
    every scale sees its own range of float32 overflow and underflow; all
    scales come from one pass over the gradients.
    """
    total = None
    for g in jax.tree_util.tree_leaves(task_grads):
        k, n = g.shape[0], int(np.prod(g.shape[1:], dtype=np.int64))
        if n >= ONE_PASS_MIN_SIZE and len(scales) * k * (k + 1) // 2 <= ONE_PASS_MAX_PRODUCTS:
            part = _gramian_one_pass(g, scales)
        else:
            part = _matrix_gramians(g.reshape(k, n), scales)
        total = part if total is None else total + part
    return total


def _gramian_one_pass(g: jax.Array, scales: tuple[float, ...], width: int = 1024) -> jax.Array:
    """``_gramians`` of one large leaf ``g [K, ...]`` as ONE variadic reduction.

    With ``flat = g.reshape(K, n)``, the first ``width * (n // width)`` entries
    of each task row are viewed as ``[n // width, width]``; a single
    ``lax.reduce`` over the ``width`` axis carries, for every scale ``c``, the
    K (K + 1) / 2 products ``(c g_i) * (c g_j)`` (i <= j) as separate outputs,
    so XLA reads every row once and sums short contiguous runs; the partial sums
    are added afterwards and the remaining ``n % width`` entries go through a
    small matrix product. Entries ``(i, j)`` and ``(j, i)`` read the same sum,
    so each Gramian is exactly symmetric. Each task's row is taken as ``g[i]``
    before any reshape: when ``g`` is a stack of K separately computed
    gradients, XLA then reads those K arrays, not a stacked copy of them.
    """
    k, n = g.shape[0], int(np.prod(g.shape[1:], dtype=np.int64))
    flat = [g[i].reshape(n).astype(jnp.float32) for i in range(k)]
    body = width * (n // width)
    rows = [f[:body].reshape(body // width, width) for f in flat]
    pairs = [(i, j) for i in range(k) for j in range(i, k)]
    products = []
    for c in scales:
        scaled = [r if c == 1.0 else c * r for r in rows]
        products += [scaled[i] * scaled[j] for i, j in pairs]
    zero = jnp.zeros((), jnp.float32)
    partial = jax.lax.reduce(
        tuple(products),
        (zero,) * len(products),
        lambda a, b: tuple(x + y for x, y in zip(a, b, strict=True)),
        (1,),
    )
    sums = jnp.stack([jnp.sum(p) for p in partial]).reshape(len(scales), len(pairs))
    index = np.zeros((k, k), np.int32)
    for p, (i, j) in enumerate(pairs):
        index[i, j] = index[j, i] = p
    full = sums[:, index]
    if body < n:
        full = full + _matrix_gramians(jnp.stack([f[body:] for f in flat]), scales)
    return full


def _matrix_gramians(flat: jax.Array, scales: tuple[float, ...]) -> jax.Array:
    """``_gramians`` of ``flat [K, m]`` by one batched matrix product over the scales."""
    scaled = jnp.stack([c * flat.astype(jnp.float32) for c in scales])
    return jnp.einsum("skn,sln->skl", scaled, scaled)


GRAMIAN_SCALE_EXPONENTS = (0, -64, 64)
"""``scaled_gramian`` forms the Gramian at scales ``2**e``, in this order of preference."""

SAFE_GRAMIAN_RANGE = (2.0**-60, 2.0**100)
"""Largest diagonal entries of a float32 Gramian taken as accurate as formed."""


def scaled_gramian(task_grads) -> tuple[jax.Array, jax.Array]:
    """``(gramian(task_grads / s), s)`` with ``s`` a power of two, for any finite gradients.

    One pass over the gradients forms the Gramian of ``2**e * task_grads`` for
    each ``e`` in ``GRAMIAN_SCALE_EXPONENTS``; the first whose largest diagonal
    entry lies in ``SAFE_GRAMIAN_RANGE`` is kept: nothing in it overflowed, and
    underflow cost it at most ``2**-36`` of that entry (up to ``2**30`` entries
    per task). Above 9 tasks, large leaves take three matrix products instead
    (``ONE_PASS_MAX_PRODUCTS``). Together the three scales cover squared
    task-gradient norms from ``2**-188`` to float32's largest. ``s`` is the
    power of two nearest the largest task-gradient norm, and dividing by
    ``s**2`` is exact. When no scale qualifies (all gradients
    zero, or non-finite), the Gramian as formed is returned with ``s = 1``. No
    branch: the cost is the same under ``vmap``.

    Args:
      task_grads: pytree with leaves ``[K, *shape]``.

    Returns:
      The float32 ``[K, K]`` Gramian of ``task_grads / s``, and ``s`` (float32).

    Example:
      >>> import jax.numpy as jnp
      >>> gram, s = scaled_gramian({"w": jnp.array([[3e20, 0.0], [0.0, 4e20]])})
      >>> float(s) == 2.0 ** 68, bool(jnp.all(jnp.isfinite(gram)))
      (True, True)
    """
    exponents = GRAMIAN_SCALE_EXPONENTS
    grams = _gramians(task_grads, tuple(2.0**e for e in exponents))
    top = jnp.max(jnp.diagonal(grams, axis1=1, axis2=2), axis=1)
    lo, hi = SAFE_GRAMIAN_RANGE
    ok = jnp.all(jnp.isfinite(grams), axis=(1, 2)) & (top >= lo) & (top <= hi)
    found = jnp.any(ok)
    pick = jnp.where(found, jnp.argmax(ok), 0)
    # Exponents as integers: ldexp gives exact powers of two where exp2 may not.
    half = jnp.round(jnp.log2(jnp.where(found, top[pick], 1.0)) / 2).astype(jnp.int32)
    one = jnp.ones((), jnp.float32)
    gram = grams[pick] * jnp.ldexp(one, -2 * half)
    return gram, jnp.ldexp(one, half - jnp.asarray(exponents, jnp.int32)[pick])


def gramian_weighting(
    weights_fn: Callable[[jax.Array], jax.Array],
    state_cls,
    num_tasks: int | None = None,
    *,
    scale_power=0.0,
):
    """An optax transformation whose update is ``sum_k w_k g_k`` with ``w = weights_fn(G G^T)``.

    The shared body of every method that only needs the K x K Gramian (MGDA,
    IMTL-G, UPGrad, Aligned-MTL, Nash-MTL, CAGrad): validate the per-task gradients,
    form the Gramian leaf by leaf, solve for the task weights, combine.

    The weights are solved on ``G / s**2`` (``scaled_gramian``), with ``s`` a
    power of two near the largest task-gradient norm, so a float32 Gramian
    neither overflows nor underflows for any finite gradients (norms 1e-20 and
    1e20 together give a finite update), and mapped back with
    ``w(G) = s ** (2 * scale_power) * weights_fn(G / s**2)``, which is exact
    when ``weights_fn(c M) = c ** scale_power * weights_fn(M)``.

    Args:
      weights_fn: maps the ``[K, K]`` float32 Gramian to ``[K]`` task weights.
      state_cls: a NamedTuple class with a single int32 ``count`` field.
      num_tasks: optional ``K`` the task axis is checked against.
      scale_power: the homogeneity degree of ``weights_fn`` in the Gramian (0 for
        scale-free weights such as MGDA's; -1/2 for Nash-MTL).

    Returns:
      An ``optax.GradientTransformationExtraArgs``; extra arguments are ignored.
    """

    def weights_of(task_grads, k):
        del k
        gram, s = scaled_gramian(task_grads)
        return weights_fn(gram) * s ** (2 * jnp.asarray(scale_power, jnp.float32))

    return stateless_weighting(weights_of, state_cls, num_tasks)
