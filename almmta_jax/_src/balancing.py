"""DRGrad balancing of ALM-MTA's two heads on their shared backbone (docs/almmta.md, *Head balancing*).

The outcome head (L_y) and the proxy head (α L_p) read the same backbone; with
``balancer="drgrad"`` their two gradients on it are routed by the released-code
DRGrad rule instead of summed.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import optax

from drgrad_jax import drgrad_released, tree

SHARED_BACKBONE = ("touch_embed", "user_encoder", "encoder", "mediator_mlp")
"""θ_G subtrees read by both the outcome loss L_y and the proxy loss L_p (what
``balancer="drgrad"`` routes between the two heads)."""


def head_balancer() -> optax.GradientTransformationExtraArgs:
    """The DRGrad transformation routing the outcome and proxy heads' shared gradients.

    ``drgrad_jax.drgrad_released`` with ``"head:0"`` the outcome
    head's (L_y) and ``"head:1"`` the proxy head's (α L_p) view of the shared
    backbone; ``balance_heads`` builds those views.
    """
    return drgrad_released({"head:0": "outcome", "head:1": "proxy"})


def balance_heads(task_grads, balancer_state, prefixes: tuple[str, ...] = SHARED_BACKBONE):
    """DRGrad balancing of L_y and α L_p on the shared backbone (docs/almmta.md, *Head balancing*).

    ``task_grads`` are θ_G's per-term gradients with a leading axis of three
    rows: ``g_y = ∇L_y``, ``g_p = α ∇L_p`` and ``g_r`` (every other term: β L_cl
    and the adversarial term). On the shared backbone (``prefixes``) the two
    heads' gradients are routed by the released-code rule of DRGrad
    (``drgrad_jax.drgrad_released``), with c = cos(g_y, g_p) and
    s = the sum of a unit-normalized gradient's entries, all over the whole
    backbone::

        κ = 1 − 1{c <= 0} c,   w_yp = clip(s_y / s_p, 0.1, 5),   w_py = clip(s_p / s_y, 0.1, 5)
        g_shared = (g_y + w_yp κ g_p) + (g_p + w_py κ g_y) + g_r

    Every other leaf receives the plain sum ``g_y + g_p + g_r``. The result
    goes through the player's optimizer as before.

    Args:
      task_grads: θ_G-shaped pytree with leaves ``[3, *param_shape]``.
      balancer_state: the ``DRGradState`` of ``head_balancer()``.
      prefixes: ``/``-joined path prefixes of the shared backbone.

    Returns:
      ``(grads, balancer_state)``: θ_G-shaped gradients and the new state.

    Example:
      >>> import jax.numpy as jnp
      >>> g = {"encoder": jnp.array([[1.0, 0.0], [1.0, 1.0], [0.0, 0.0]]),
      ...      "head": jnp.array([[2.0], [0.0], [1.0]])}
      >>> out, _ = balance_heads(g, head_balancer().init(None), ("encoder",))
      >>> out["head"].tolist()  # not shared: the plain sum
      [3.0]
      >>> [round(v, 4) for v in out["encoder"].tolist()]  # w_yp = 1/√2, w_py = √2
      [4.1213, 1.7071]

    References:
      Liu, Miao, Xia, "Direct Routing Gradient (DRGrad): A Personalized
      Information Surgery for Multi-Task Learning (MTL) Recommendations",
      AAAI 2025, https://arxiv.org/abs/2510.09643 (rule of the released code,
      https://github.com/logwhistle/drgrad_for_aaai25).
    """
    leaves, treedef = jax.tree_util.tree_flatten(task_grads)
    for leaf in leaves:
        if jnp.ndim(leaf) < 1 or jnp.shape(leaf)[0] != 3:
            raise ValueError(
                f"task_grads leaves must be [3, *param_shape] (rows L_y, α L_p, rest); got "
                f"shape {jnp.shape(leaf)}."
            )
    shared = tree.match_prefix(tree.leaf_paths(task_grads), tuple(prefixes))
    if not shared:
        raise ValueError(f"no task_grads leaf lies under the shared prefixes {prefixes}.")
    zero = lambda g: jnp.zeros_like(g[0])
    views = {
        "outcome": [jnp.stack([leaves[i][0], zero(leaves[i])]) for i in shared],
        "proxy": [jnp.stack([zero(leaves[i]), leaves[i][1]]) for i in shared],
    }
    routed, balancer_state = head_balancer().update(views, balancer_state)
    out = [tree.sum_rows(g) for g in leaves]
    for n, i in enumerate(shared):
        out[i] = (routed["outcome"][n] + routed["proxy"][n] + leaves[i][2]).astype(leaves[i].dtype)
    return jax.tree_util.tree_unflatten(treedef, out), balancer_state
