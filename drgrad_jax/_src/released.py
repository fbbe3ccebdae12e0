"""The routing rule of the DRGrad authors' released Census code, as an optax transformation."""

from __future__ import annotations

from collections.abc import Mapping

import jax
import jax.numpy as jnp
import optax

from drgrad_jax._src import routing, transform
from drgrad_jax._src import task_grads as tg


def drgrad_released(
    towers: Mapping[str, str | tuple[str, ...]], *, num_tasks: int | None = None
) -> optax.GradientTransformationExtraArgs:
    """The authors' released DRGrad rule: symmetric routing between two task heads.

    Takes per-task gradients (leaves ``[num_tasks, *shape]``) and returns one
    update with the params' shape. Every leaf receives the plain sum over tasks;
    the two heads named by ``towers`` (task a's head ``"head:<a>"`` and task b's
    ``"head:<b>"``, equally shaped subtrees) additionally receive, from their
    own tasks' gradients g_a and g_b before any routing::

        c = cos(g_a, g_b),   f = 1{c > 0}
        s_a = sum_k (g_a / ||g_a||)_k,   s_b = sum_k (g_b / ||g_b||)_k
        w_ab = clip(s_a / s_b, 0.1, 5),  w_ba = clip(s_b / s_a, 0.1, 5)
        head a += w_ab (g_b - (1 - f) c g_b),   head b += w_ba (g_a - (1 - f) c g_a)

    Unlike the paper's ``drgrad`` both heads receive the other's gradient, even
    under conflict (then amplified by 1 + |c|), and there is no split tower and
    no updater: ``mixing_weights`` of the state stays (0.5, 0.5). See
    docs/drgrad.md, *The authors' released rule*.

    Args:
      towers: ``{"head:<a>": prefix_a, "head:<b>": prefix_b}``, each prefix a
        ``/``-joined path (or a tuple of them) into the gradient pytree.
      num_tasks: declared number of tasks; the task axis must match. ``None``
        infers it.

    Returns:
      An ``optax.GradientTransformationExtraArgs`` whose state is a
      ``DRGradState`` (``diagnostics.xi_shared`` holds c, ``lam_shared`` w_ab,
      ``lam_aux`` [w_ba]). Unknown extra arguments to ``update`` are ignored.

    Raises:
      ValueError: roles other than exactly two ``"head:<task>"``, or a head
        beyond a declared ``num_tasks`` (one task has no pair to route); at trace
        time, a task axis that disagrees with ``num_tasks`` or the roles, heads
        of unequal shapes, non-floating gradients.

    Example:
      >>> import jax.numpy as jnp
      >>> tx = drgrad_released({"head:0": "a", "head:1": "b"})
      >>> g = {"a": jnp.array([[1.0, 1.0], [0.0, 0.0]]),
      ...      "b": jnp.array([[0.0, 0.0], [1.0, 0.0]])}
      >>> updates, state = tx.update(g, tx.init(None))
      >>> [round(v, 4) for v in updates["a"].tolist()]  # w_ab = clip(sqrt(2), 0.1, 5)
      [2.4142, 1.0]
      >>> [round(v, 4) for v in updates["b"].tolist()]  # w_ba = 1 / sqrt(2)
      [1.7071, 0.7071]

    References:
      Liu, Miao, Xia, "Direct Routing Gradient (DRGrad): A Personalized
      Information Surgery for Multi-Task Learning (MTL) Recommendations",
      AAAI 2025, https://arxiv.org/abs/2510.09643; released code
      https://github.com/logwhistle/drgrad_for_aaai25 (TensorFlow 1).
    """
    num_tasks = transform.static_num_tasks(num_tasks)
    roles = transform.parse_roles(towers, ("head",), "drgrad_released")
    heads = sorted(i for _, i in roles)
    if len(heads) != 2:
        raise ValueError(
            f"drgrad_released needs exactly two roles 'head:<task>'; got {sorted(roles)}."
        )
    a, b = heads
    if num_tasks is not None and b >= num_tasks:
        raise ValueError(
            "drgrad_released routes between two task heads; towers names 'head:"
            f"{b}' but num_tasks={num_tasks}."
        )

    def init_fn(params):
        del params
        return transform.init_state(1, 1)

    def update_fn(updates, state, params=None, **extra_args):
        del extra_args
        k_tasks = tg.check_task_grads(updates, num_tasks, name="task_grads")
        if params is not None:
            tg.check_matches_params(updates, params, name="task_grads")
        leaves, treedef = jax.tree_util.tree_flatten(updates)
        paths = tg.leaf_paths(updates)
        out = [tg.sum_rows(g, jnp.float32) for g in leaves]
        transform.check_role_tasks(roles, k_tasks)
        ia = transform.role_indices(roles, paths, "head", a)
        ib = transform.role_indices(roles, paths, "head", b)
        transform.check_same_shapes(f"head:{a}", ia, f"head:{b}", ib, leaves)
        add_a, add_b, diag = routing.released_code_route(
            [leaves[i][a] for i in ia], [leaves[i][b] for i in ib]
        )
        for i, r in zip(ia, add_a):
            out[i] = out[i] + r
        for i, r in zip(ib, add_b):
            out[i] = out[i] + r
        new_state = transform.next_state(
            state,
            jnp.zeros((1, 2), jnp.float32),
            [diag],
            updater="fixed",
            ema_decay=0.0,
            temperature=1.0,
        )
        new_leaves = [o.astype(g.dtype) for o, g in zip(out, leaves)]
        return jax.tree_util.tree_unflatten(treedef, new_leaves), new_state

    return transform.mark_space(optax.GradientTransformationExtraArgs(init_fn, update_fn), "params")
