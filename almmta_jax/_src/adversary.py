"""The adversary of ALM-MTA: gradient reversal, the λ ramp and the two-player inner loop.

The adversary ``D`` reads the mediator ``M̂`` and predicts the outcome ``y``;
the mediator branch (θ_G) is pushed to make that hard, so ``M̂`` carries the
touches' effect without leaking the label (docs/almmta.md, *Gradient reversal and the min-max step*). Three pieces:

* ``gradient_reversal``: the identity forward, ``−λ`` times the cotangent
  backward (one objective, one gradient: ``mode="grl"``);
* ``adversary_weight``: the DANN ramp of λ_t after a warm-up;
* ``adversary_updates``: ``k`` optimizer steps of θ_D on a fixed (stopped)
  mediator under ``lax.fori_loop`` (the two-player modes).

``split_model`` separates θ_D from θ_G once so each has its own optimizer.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import optax
from flax import nnx

from almmta_jax._src.networks import ALMMTA

ADVERSARY = nnx.PathContains("discriminator")
"""The NNX filter of the adversary's parameters θ_D (the ``discriminator`` subtree)."""


@jax.custom_vjp
def gradient_reversal(x: Any, lam: jax.Array) -> Any:
    """``GRL_λ``: the identity forward, cotangent times ``−λ`` backward (Ganin et al., 2016).

    ``λ`` itself receives a zero cotangent, so a schedule feeding it is never
    differentiated.

    Args:
      x: any pytree of arrays.
      lam: scalar reversal weight ``λ >= 0``.

    Returns:
      ``x`` unchanged.

    Example:
      >>> import jax, jax.numpy as jnp
      >>> float(jax.grad(lambda v: 3.0 * gradient_reversal(v, jnp.float32(0.5)))(2.0))
      -1.5

    References:
      Ganin et al., "Domain-Adversarial Training of Neural Networks", JMLR 17, 2016,
      https://arxiv.org/abs/1505.07818.
    """
    del lam
    return x


def _grl_fwd(x, lam):
    return x, lam


def _grl_bwd(lam, g):
    return jax.tree.map(lambda t: (-lam * t).astype(t.dtype), g), jnp.zeros_like(lam)


gradient_reversal.defvjp(_grl_fwd, _grl_bwd)


def adversary_weight(
    step: jax.Array, lambda_max: float, warmup_steps: int, total_steps: int
) -> jax.Array:
    """The DANN ramp of the adversary weight λ_t after a warm-up (docs/almmta.md, *Gradient reversal and the min-max step*).

    ``λ_t = λ_max (2 / (1 + e^{−10 p_t}) − 1) 1[step >= warmup]`` with
    ``p_t = clip((step − warmup) / (total − warmup), 0, 1)``.

    Args:
      step: int step counter (traced is fine).
      lambda_max: ``λ_max``.
      warmup_steps: steps before reversal starts.
      total_steps: steps at which the ramp reaches ``λ_max (2/(1+e^{-10}) − 1)``.

    Returns:
      A float32 scalar.

    Example:
      >>> float(adversary_weight(5, 0.3, 10, 20))
      0.0
      >>> round(float(adversary_weight(20, 0.3, 10, 20)), 5)
      0.29997
    """
    step = jnp.asarray(step, jnp.float32)
    span = max(total_steps - warmup_steps, 1)
    p = jnp.clip((step - warmup_steps) / span, 0.0, 1.0)
    ramp = 2.0 / (1.0 + jnp.exp(-10.0 * p)) - 1.0
    return jnp.where(step >= warmup_steps, lambda_max * ramp, 0.0).astype(jnp.float32)


def split_model(model: ALMMTA):
    """Splits an ``ALMMTA`` into ``(graphdef, adv_params, params)`` once (θ_D, θ_G)."""
    graphdef, adv_params, params, rest = nnx.split(model, ADVERSARY, nnx.Param, ...)
    if jax.tree.leaves(rest):
        raise ValueError("ALMMTA holds non-parameter state; it cannot be trained functionally.")
    return graphdef, adv_params, params


def adversary_graphdef(model_config) -> Any:
    """Graphdef of the adversary alone, from an abstract model (no parameters are built)."""
    abstract = nnx.eval_shape(lambda: ALMMTA(model_config, rngs=nnx.Rngs(0)))
    return nnx.graphdef(abstract.discriminator)


def discriminate(disc_graphdef, adv_params, mediator: jax.Array) -> jax.Array:
    """The adversary's logit of ``y`` from ``M̂``, rebuilt from θ_D alone (θ_G is not needed)."""
    return nnx.merge(disc_graphdef, adv_params["discriminator"])(mediator)[..., 0]


def adversary_updates(
    tx: optax.GradientTransformation,
    adv_params: Any,
    adv_opt_state: Any,
    loss_fn: Callable[[Any], jax.Array],
    num_steps: int,
) -> tuple[Any, Any]:
    """``num_steps`` descent steps of θ_D on ``loss_fn`` under ``lax.fori_loop``.

    The inner loop of the two-player modes: ``loss_fn(adv_params)`` is the
    adversary's loss on a stopped mediator, so only θ_D moves.

    Returns:
      ``(adv_params, adv_opt_state)`` after the steps.
    """

    def inner(_, carry):
        p, o = carry
        u, o = tx.update(jax.grad(loss_fn)(p), o, p)
        return optax.apply_updates(p, u), o

    return jax.lax.fori_loop(0, num_steps, inner, (adv_params, adv_opt_state))
