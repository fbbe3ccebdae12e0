"""STCH: smooth Tchebycheff scalarization of the task losses."""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import optax

from drgrad_jax._src.domains import POSITIVE, REAL, check_task_vector, with_domains
from drgrad_jax._src.loss_weighting import _losses_arg
from drgrad_jax._src.task_grads import (
    check_matches_params,
    check_task_grads,
    combine,
    require_num_tasks,
)


class STCHState(NamedTuple):
    """State of ``stch``: only a step counter."""

    count: jax.Array


def stch_weights(
    losses: jax.typing.ArrayLike,
    mu: jax.typing.ArrayLike,
    preference: jax.typing.ArrayLike | None = None,
    ideal: jax.typing.ArrayLike | None = None,
) -> jax.Array:
    r"""The gradient of ``mu logsumexp(lambda (L - z) / mu)`` w.r.t. the losses ``L``.

    Returns ``lambda * softmax(lambda (L - z) / mu)``; ``lambda = 1/K`` and
    ``z = 0`` by default.
    """
    losses = jnp.asarray(losses, jnp.float32)
    k = losses.shape[0]
    lam = jnp.full((k,), 1.0 / k, jnp.float32) if preference is None else preference
    lam = jnp.asarray(lam, jnp.float32)
    shifted = losses if ideal is None else losses - jnp.asarray(ideal, jnp.float32)
    return lam * jax.nn.softmax(lam * shifted / jnp.asarray(mu, jnp.float32))


def stch(
    mu: jax.typing.ArrayLike = 0.1,
    preference: jax.typing.ArrayLike | None = None,
    ideal: jax.typing.ArrayLike | None = None,
    *,
    num_tasks: int | None = None,
) -> optax.GradientTransformationExtraArgs:
    r"""Smooth Tchebycheff scalarization (STCH): descend a smoothed worst weighted loss.

    Lin et al. (2024), Eq. (7): with preference ``lambda`` and ideal point ``z*``,

    .. math::
      g_\mu(L) = \mu \log \sum_k \exp\Big(\frac{\lambda_k (L_k - z^*_k)}{\mu}\Big),
      \qquad
      d = \sum_k \lambda_k\, \mathrm{softmax}_k\Big(\frac{\lambda (L - z^*)}{\mu}\Big) g_k,

    a smooth upper bound of ``max_k lambda_k (L_k - z*_k)`` that tightens as
    ``mu -> 0``: the task furthest from its ideal value gets most of the
    weight. Same scalarization as TorchJD's ``STCH`` (``lambda = 1/K`` and
    ``z* = 0`` by default). LibMTL's ``STCH`` also divides the losses by a nadir
    vector averaged over warm-up epochs and takes their log; pass normalised
    losses (or set ``ideal``) to reproduce that.

    Degenerate inputs: the weights are a scaled softmax, finite for finite
    losses; ``K = 1`` gives ``lambda_1 g_1``. Hyperparameters outside their
    domains, and vectors of the wrong length, are refused as numbers; as JAX
    arrays they make the update NaN (docs/drgrad.md, *Using the transformations*).

    Args:
      mu: smoothing ``mu > 0`` (a float, so ``optax.inject_hyperparams`` can
        schedule it).
      preference: ``[K]`` preference ``lambda``, every entry ``> 0``, or
        ``None`` for ``1/K``. The paper takes ``lambda`` on the simplex and
        needs every ``lambda_k > 0`` for its solutions to be Pareto optimal (a
        zero entry drops its task from the maximum). It is not normalised here:
        ``c lambda`` is the scalarization of ``lambda`` at ``mu / c``, times ``c``.
      ideal: ``[K]`` ideal point ``z*`` (any finite values), or ``None`` for zeros.
      num_tasks: optional ``K``, the length of the task axis; inferred from the
        gradients when ``None``, checked against them when given.

    Returns:
      An ``optax.GradientTransformationExtraArgs``; ``update`` requires the
      extra argument ``losses`` (shape ``[K]``) and ignores other extra args.

    Example:
      >>> import jax.numpy as jnp
      >>> tx = stch(mu=1e-3)
      >>> d, _ = tx.update({"w": jnp.eye(2)}, tx.init(None), losses=jnp.array([2.0, 1.0]))
      >>> d["w"].tolist()
      [0.5, 0.0]

    References:
      Lin, Zhang, Chen, Zhang & Zhang, *Smooth Tchebycheff Scalarization for
      Multi-Objective Optimization*, ICML 2024, https://arxiv.org/abs/2402.19078.
    """
    if num_tasks is not None:
        require_num_tasks(num_tasks, "stch")
    vectors = {"preference": (preference, POSITIVE), "ideal": (ideal, REAL)}
    for name, (value, _) in vectors.items():
        check_task_vector("stch", name, value, num_tasks)

    def init_fn(params):
        del params
        return STCHState(count=jnp.zeros([], jnp.int32))

    def update_fn(task_grads, state, params=None, **extra_args):
        k = check_task_grads(task_grads, num_tasks)
        check_matches_params(task_grads, params)
        losses = _losses_arg(extra_args, k, "stch")
        for name, (value, _) in vectors.items():
            check_task_vector("stch", name, value, k, axis=True)
        weights = stch_weights(losses, mu, preference, ideal)
        return combine(weights, task_grads), STCHState(count=optax.safe_increment(state.count))

    tx = optax.GradientTransformationExtraArgs(init_fn, update_fn)
    return with_domains(tx, "stch", mu=(mu, POSITIVE), **vectors)
