"""A conformance battery for multi-task gradient transformations.

Every transformation of the library takes per-task gradients (leaves
``[K, *param_shape]``) and returns one params-shaped update. This module checks
that such a transformation behaves like any optax transformation: it runs under
``jax.jit`` without retracing, inside ``lax.scan``, under
``optax.inject_hyperparams``, keeps float32 / bfloat16 dtypes, ignores unknown
extra arguments and composes with ``optax.chain``, ``optax.clip_by_global_norm``,
``optax.apply_if_finite`` and ``flax.nnx.Optimizer``.

It is a plain module, not a test file: test files parametrize over ``CHECKS``::

    @pytest.mark.parametrize("check", sorted(conformance.CHECKS))
    def test_conformance(check):
        conformance.run_check(check, drgrad_jax.pcgrad, params, task_grads)

``factory(**kwargs)`` must return an ``optax.GradientTransformationExtraArgs``.
``extra_args`` (e.g. ``{"losses": losses}``) is passed to every ``update`` call.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import flax.nnx as nnx
import jax
import jax.numpy as jnp
import numpy as np
import optax

Check = Callable[..., None]


def _leaves(tree):
    return jax.tree_util.tree_leaves(tree)


def _num_tasks(task_grads) -> int:
    return int(jnp.shape(_leaves(task_grads)[0])[0])


def _assert_params_like(updates, params, what: str) -> None:
    u_struct = jax.tree_util.tree_structure(updates)
    p_struct = jax.tree_util.tree_structure(params)
    assert u_struct == p_struct, f"{what}: update structure {u_struct} != params {p_struct}"
    for u, p in zip(_leaves(updates), _leaves(params)):
        assert jnp.shape(u) == jnp.shape(p), (
            f"{what}: update shape {jnp.shape(u)} != {jnp.shape(p)}"
        )
        assert jnp.result_type(u) == jnp.result_type(p), (
            f"{what}: update dtype {jnp.result_type(u)} != params dtype {jnp.result_type(p)}"
        )


def _assert_finite(tree, what: str) -> None:
    for leaf in _leaves(tree):
        if not jnp.issubdtype(jnp.result_type(leaf), jnp.inexact):
            continue  # counts, PRNG keys
        arr = np.asarray(jnp.asarray(leaf, jnp.float32))
        assert np.all(np.isfinite(arr)), f"{what}: non-finite values {arr}"


def _perturbed(task_grads, step):
    """Task gradients that differ from step to step (same shapes and dtypes)."""
    # Uneven over the task axis, so that the direction between tasks changes too
    # (a uniform rescaling leaves every scale-invariant weighting where it was).

    def change(g):
        k = g.shape[0]
        ramp = jnp.arange(1, k + 1, dtype=jnp.float32).reshape((k,) + (1,) * (g.ndim - 1)) / k
        scale = 1.0 + 0.1 * jnp.asarray(step, jnp.float32) * ramp
        return (g.astype(jnp.float32) * scale).astype(g.dtype)

    return jax.tree.map(change, task_grads)


def _perturbed_extra(extra_args, step):
    """Extra arguments whose float vectors (e.g. losses) change unevenly from step to step."""

    def change(v):
        if not (hasattr(v, "ndim") and v.ndim == 1 and jnp.issubdtype(v.dtype, jnp.floating)):
            return v
        ramp = jnp.arange(1, v.shape[0] + 1, dtype=v.dtype) / v.shape[0]
        return v * (1.0 - 0.2 * step * ramp)

    return {k: change(v) for k, v in extra_args.items()}


def check_jit(factory, params, task_grads, kwargs, hyperparam, extra_args) -> None:
    """Init and update run under ``jax.jit`` and give finite params-shaped updates."""
    tx = factory(**kwargs)
    state = jax.jit(tx.init)(params)
    updates, state = jax.jit(lambda g, s, p: tx.update(g, s, p, **extra_args))(
        task_grads, state, params
    )
    _assert_params_like(updates, params, "jit")
    _assert_finite(updates, "jit")
    _assert_finite(state, "jit state")


def check_no_recompile(factory, params, task_grads, kwargs, hyperparam, extra_args) -> None:
    """A jitted step is traced once and reused on later steps with new values."""
    tx = factory(**kwargs)
    traces = []

    @jax.jit
    def step(g, s, p):
        traces.append(1)
        u, s = tx.update(g, s, p, **extra_args)
        return optax.apply_updates(p, u), s

    state = tx.init(params)
    p = params
    for t in range(3):
        p, state = step(_perturbed(task_grads, t), state, p)
    jax.block_until_ready(p)
    assert len(traces) == 1, f"update was traced {len(traces)} times over 3 steps; expected 1"


def check_scan(factory, params, task_grads, kwargs, hyperparam, extra_args) -> None:
    """Works as the body of ``lax.scan`` and agrees with a Python loop of jitted steps."""
    tx = factory(**kwargs)
    steps = 3
    grads_seq = jax.tree.map(
        lambda *xs: jnp.stack(xs), *[_perturbed(task_grads, t) for t in range(steps)]
    )

    def body(carry, g):
        p, s = carry
        u, s = tx.update(g, s, p, **extra_args)
        return (optax.apply_updates(p, u), s), None

    (p_scan, _), _ = jax.jit(lambda p, gs: jax.lax.scan(body, (p, tx.init(p)), gs))(
        params, grads_seq
    )
    step = jax.jit(lambda c, g: body(c, g)[0])
    carry = (params, tx.init(params))
    for t in range(steps):
        carry = step(carry, _perturbed(task_grads, t))
    _assert_params_like(p_scan, params, "scan")
    _assert_finite(p_scan, "scan")
    for a, b in zip(_leaves(p_scan), _leaves(carry[0])):
        np.testing.assert_allclose(
            np.asarray(a, np.float32), np.asarray(b, np.float32), rtol=1e-4, atol=1e-5
        )


def check_inject_hyperparams(factory, params, task_grads, kwargs, hyperparam, extra_args) -> None:
    """``optax.inject_hyperparams`` can schedule the named float hyperparameter.

    A transformation without one (``hyperparam=None``) must still wrap: the
    wrapped update, with every argument static, equals the bare one.
    """
    if hyperparam is None:
        tx = optax.inject_hyperparams(factory, static_args=tuple(kwargs))(**kwargs)
        bare = factory(**kwargs)
        state = tx.init(params)
        assert not state.hyperparams, f"unexpected hyperparameters {state.hyperparams}"
        u, _ = jax.jit(lambda g, s, p: tx.update(g, s, p, **extra_args))(task_grads, state, params)
        want, _ = jax.jit(lambda g, s, p: bare.update(g, s, p, **extra_args))(
            task_grads, bare.init(params), params
        )
        _assert_params_like(u, params, "inject_hyperparams")
        for a, b in zip(_leaves(u), _leaves(want)):
            np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
        return
    if hyperparam not in kwargs:
        raise ValueError(f"hyperparam={hyperparam!r} must be given a value in kwargs={kwargs}")
    static = tuple(k for k in kwargs if k != hyperparam)
    tx = optax.inject_hyperparams(factory, static_args=static)(**kwargs)
    state = tx.init(params)
    assert hyperparam in state.hyperparams, f"{hyperparam} not injected: {state.hyperparams}"
    traces = []

    @jax.jit
    def step(g, s, p, extra):
        traces.append(1)
        return tx.update(g, s, p, **extra)

    injected = state.hyperparams[hyperparam]
    runs = {}
    for name, factor in (("given", 1.0), ("half", 0.5)):
        # A vector hyperparameter changes unevenly: halving every entry of a
        # preference vector is a no-op for scale-invariant methods (ConFIG).
        given = jnp.asarray(kwargs[hyperparam])
        if given.ndim and factor != 1.0:
            factor = jnp.linspace(factor, 1.0, given.shape[-1], dtype=jnp.float32)
        s = state._replace(hyperparams={**state.hyperparams, hyperparam: injected * factor})
        bare = factory(**{**kwargs, hyperparam: given * factor})
        bare_state = bare.init(params)
        bare_step = jax.jit(lambda g, s, p, e, bare=bare: bare.update(g, s, p, **e))
        seq = []
        # Three steps: some hyperparameters act through the state first (DWA from step 3).
        for t in range(3):
            g, extra = _perturbed(task_grads, t), _perturbed_extra(extra_args, t)
            u, s = step(g, s, params, extra)
            want, bare_state = bare_step(g, bare_state, params, extra)
            _assert_params_like(u, params, "inject_hyperparams")
            # The injected value acts exactly as the bare transform built with it.
            _assert_trees_close(u, want, f"inject_hyperparams {name} step {t}", rtol=1e-6)
            _assert_trees_close(s.inner_state, bare_state, f"inject state {name}", rtol=1e-6)
            seq.append((u, s.inner_state))
        runs[name] = seq
    assert len(traces) == 1, "changing an injected hyperparameter retraced the update"
    moved = [
        not np.array_equal(np.asarray(a, np.float32), np.asarray(b, np.float32))
        for (ua, sa), (ub, sb) in zip(runs["given"], runs["half"])
        for a, b in zip(_leaves((ua, sa)), _leaves((ub, sb)))
        if jnp.issubdtype(jnp.result_type(a), jnp.inexact)
    ]
    assert any(moved), f"halving {hyperparam} changed neither the updates nor the state"


def _assert_trees_close(actual, expected, what: str, rtol: float, atol: float = 0.0) -> None:
    assert jax.tree_util.tree_structure(actual) == jax.tree_util.tree_structure(expected), what
    for a, b in zip(_leaves(actual), _leaves(expected)):
        if not jnp.issubdtype(jnp.result_type(a), jnp.inexact):
            if jnp.issubdtype(jnp.result_type(a), jnp.integer):
                np.testing.assert_array_equal(np.asarray(a), np.asarray(b), err_msg=what)
            continue  # PRNG keys
        a32, b32 = np.asarray(a, np.float32), np.asarray(b, np.float32)
        scale = float(np.max(np.abs(b32), initial=0.0))
        np.testing.assert_allclose(a32, b32, rtol=rtol, atol=atol * scale + 1e-12, err_msg=what)


BF16_TOLERANCE = 1e-2
"""Largest bfloat16-vs-float32 update error allowed, relative to the update's largest
entry: bfloat16 keeps 8 significant bits (relative rounding 2^-9 = 0.002 per operation);
the zoo's worst case measured on the battery's inputs is given in docs/testing.md."""


def _dtype_check(dtype):
    def check(factory, params, task_grads, kwargs, hyperparam, extra_args) -> None:
        p = jax.tree.map(lambda x: jnp.asarray(x, dtype), params)
        g = jax.tree.map(lambda x: jnp.asarray(x, dtype), task_grads)
        tx = factory(**kwargs)
        state = tx.init(p)
        updates, state = jax.jit(lambda g, s, p: tx.update(g, s, p, **extra_args))(g, state, p)
        _assert_params_like(updates, p, f"dtype {jnp.dtype(dtype).name}")
        _assert_finite(updates, f"dtype {jnp.dtype(dtype).name}")
        # The values: float32 maths on the same (rounded) inputs, within the input
        # dtype's resolution (BF16_TOLERANCE of the update's largest entry for bfloat16).
        f32 = lambda t: jax.tree.map(lambda x: jnp.asarray(x, jnp.float32), t)
        ref, _ = jax.jit(lambda g, s, p: tx.update(g, s, p, **extra_args))(
            f32(g), tx.init(f32(p)), f32(p)
        )
        tol = BF16_TOLERANCE if jnp.dtype(dtype) == jnp.bfloat16 else 1e-6
        _assert_trees_close(updates, ref, f"dtype {jnp.dtype(dtype).name}", rtol=0, atol=tol)

    check.__doc__ = (
        f"{jnp.dtype(dtype).name} params and task gradients give {jnp.dtype(dtype).name} updates"
        " equal to float32 maths on the same inputs within the dtype's resolution."
    )
    return check


def check_unknown_extra_args(factory, params, task_grads, kwargs, hyperparam, extra_args) -> None:
    """Unknown keyword arguments to ``update`` are accepted and ignored."""
    tx = factory(**kwargs)
    state = tx.init(params)
    more = {"conformance_unknown": jnp.ones(3), "another_unknown": "text", **extra_args}

    @jax.jit
    def both(g, s, p):
        return tx.update(g, s, p, **extra_args)[0], tx.update(g, s, p, **more)[0]

    u_ref, u = both(task_grads, state, params)
    for a, b in zip(_leaves(u), _leaves(u_ref)):
        np.testing.assert_allclose(np.asarray(a, np.float32), np.asarray(b, np.float32))


def check_chain_adam(factory, params, task_grads, kwargs, hyperparam, extra_args) -> None:
    """Composes with ``optax.adam`` in ``optax.chain``; params move and stay finite."""
    tx = optax.chain(factory(**kwargs), optax.adam(1e-2))
    state = tx.init(params)
    step = jax.jit(lambda g, s, p: tx.update(g, s, p, **extra_args))
    p = params
    for t in range(2):
        u, state = step(_perturbed(task_grads, t), state, p)
        _assert_params_like(u, params, "chain adam")
        p = optax.apply_updates(p, u)
    _assert_finite(p, "chain adam params")


def check_clip_by_global_norm(factory, params, task_grads, kwargs, hyperparam, extra_args) -> None:
    """Composes with ``optax.clip_by_global_norm``: the bare update, rescaled to the cap.

    The chained update must equal the transform's own update times
    ``max_norm / ||update||`` (computed here in NumPy): a transform that is not a
    function of its state and inputs (a random draw outside the state, a mutated
    argument) gives a different direction inside the chain.
    """
    max_norm = 1e-3
    tx = optax.chain(factory(**kwargs), optax.clip_by_global_norm(max_norm))
    state = tx.init(params)
    u, _ = jax.jit(lambda g, s, p: tx.update(g, s, p, **extra_args))(task_grads, state, params)
    _assert_params_like(u, params, "clip_by_global_norm")
    bare = factory(**kwargs)
    raw, _ = jax.jit(lambda g, s, p: bare.update(g, s, p, **extra_args))(
        task_grads, bare.init(params), params
    )
    raw = [np.asarray(x, np.float64) for x in _leaves(raw)]
    norm = np.sqrt(sum(np.sum(x**2) for x in raw))
    assert norm > max_norm, f"the bare update's norm {norm} is below the cap; pick larger inputs"
    for a, b in zip(_leaves(u), raw):
        np.testing.assert_allclose(np.asarray(a, np.float64), b * max_norm / norm, rtol=1e-4)


def check_apply_if_finite(factory, params, task_grads, kwargs, hyperparam, extra_args) -> None:
    """After the transform, ``optax.apply_if_finite`` turns a NaN task gradient into no step.

    ``apply_if_finite`` cannot wrap the transform itself (its rejected update has
    the input's shape, here the per-task shape), so it guards the params-shaped
    part of the chain: the transform must propagate the NaN, and must not store
    it in its own state (a finite step afterwards must be finite again).
    """
    tx = optax.chain(factory(**kwargs), optax.apply_if_finite(optax.sgd(0.1), 3))
    state = tx.init(params)
    first = True

    def poison(g):
        nonlocal first
        if first:
            first = False
            return g.at[(0,) * g.ndim].set(jnp.nan)
        return g

    bad = jax.tree.map(poison, task_grads)
    step = jax.jit(lambda g, s, p: tx.update(g, s, p, **extra_args))
    u, state = step(bad, state, params)
    p = optax.apply_updates(params, u)
    _assert_finite(p, "apply_if_finite params")
    for a, b in zip(_leaves(p), _leaves(params)):
        np.testing.assert_array_equal(np.asarray(a, np.float32), np.asarray(b, np.float32))
    u, state = step(task_grads, state, params)
    _assert_finite(u, "first finite step after a NaN step")
    p2 = optax.apply_updates(params, u)
    moved = [
        not np.array_equal(np.asarray(a), np.asarray(b))
        for a, b in zip(_leaves(p2), _leaves(params))
    ]
    assert any(moved), "the finite step after a NaN step did not move the params"


class _TinyModel(nnx.Module):
    def __init__(self, num_tasks: int, *, rngs: nnx.Rngs):
        self.trunk = nnx.Linear(3, 4, rngs=rngs)
        self.head = nnx.Linear(4, num_tasks, rngs=rngs)

    def __call__(self, x):
        return self.head(jnp.tanh(self.trunk(x)))


def check_nnx_optimizer(factory, params, task_grads, kwargs, hyperparam, extra_args) -> None:
    """Drives ``flax.nnx.Optimizer`` on a tiny NNX model with per-task gradients."""
    k = _num_tasks(task_grads)
    model = _TinyModel(k, rngs=nnx.Rngs(0))
    optimizer = nnx.Optimizer(model, factory(**kwargs), wrt=nnx.Param)
    x = jax.random.normal(jax.random.key(1), (8, 3))
    y = jax.random.normal(jax.random.key(2), (8, k))
    graphdef, state = nnx.split(model, nnx.Param)

    def task_losses(state):
        out = nnx.merge(graphdef, state)(x)
        return jnp.mean((out - y) ** 2, axis=0)

    per_task = jax.jit(jax.jacrev(task_losses))(state)
    before = jax.tree.map(np.asarray, nnx.to_pure_dict(nnx.state(model, nnx.Param)))

    @nnx.jit
    def update(optimizer, model, per_task, extra_args):
        optimizer.update(model, per_task, **extra_args)

    for _ in range(2):
        update(optimizer, model, per_task, extra_args)
    after = nnx.to_pure_dict(nnx.state(model, nnx.Param))
    moved = [not np.allclose(np.asarray(a), b) for a, b in zip(_leaves(after), _leaves(before))]
    assert any(moved), "nnx.Optimizer.update left every parameter unchanged"
    # Two plain optax steps on the pure params give the same parameters.
    tx = factory(**kwargs)
    p = jax.tree.map(jnp.asarray, before)
    per_task_pure = nnx.to_pure_dict(per_task)
    s = tx.init(p)
    for _ in range(2):
        u, s = jax.jit(lambda g, s, p: tx.update(g, s, p, **extra_args))(per_task_pure, s, p)
        p = optax.apply_updates(p, u)
    _assert_trees_close(after, p, "nnx.Optimizer vs optax", rtol=1e-6, atol=1e-7)


CHECKS: dict[str, Check] = {
    "jit": check_jit,
    "no_recompile": check_no_recompile,
    "scan": check_scan,
    "inject_hyperparams": check_inject_hyperparams,
    "dtype_float32": _dtype_check(jnp.float32),
    "dtype_bfloat16": _dtype_check(jnp.bfloat16),
    "unknown_extra_args": check_unknown_extra_args,
    "chain_adam": check_chain_adam,
    "clip_by_global_norm": check_clip_by_global_norm,
    "apply_if_finite": check_apply_if_finite,
    "nnx_optimizer": check_nnx_optimizer,
}
"""Every conformance check by name; each takes
``(factory, params, task_grads, kwargs, hyperparam, extra_args)``."""


def run_check(
    name: str,
    factory: Callable[..., optax.GradientTransformationExtraArgs],
    params: Any,
    task_grads: Any,
    *,
    kwargs: dict | None = None,
    hyperparam: str | None = None,
    extra_args: dict | None = None,
) -> None:
    """Runs one conformance check by name (raises ``AssertionError`` on failure).

    Args:
      name: a key of ``CHECKS``.
      factory: ``factory(**kwargs)`` returns the transformation under test.
      params: a small parameter pytree.
      task_grads: per-task gradients matching ``params`` (leaves ``[K, *shape]``).
      kwargs: keyword arguments for ``factory``.
      hyperparam: name of one float hyperparameter in ``kwargs`` for the
        ``inject_hyperparams`` check (``None``: the wrapped transformation must equal the bare one).
      extra_args: keyword arguments passed to every ``update`` call (e.g. losses).
    """
    if name not in CHECKS:
        raise ValueError(f"unknown conformance check {name!r}; choose from {sorted(CHECKS)}")
    CHECKS[name](
        factory, params, task_grads, dict(kwargs or {}), hyperparam, dict(extra_args or {})
    )
