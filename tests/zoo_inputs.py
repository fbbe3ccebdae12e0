"""The inputs the zoo's oracle tests feed every method, shared with ``benchmarks.zoo_agreement``.

Task gradients are ``[K, 7]`` matrices split over a two-leaf pytree (a ``[3]``
leaf and a ``[2, 2]`` leaf), so every method also sees more than one leaf.
TorchJD's recorded outputs are read from ``tests/fixtures/torchjd_outputs.npz``.
"""

from __future__ import annotations

import functools
import pathlib

import jax
import jax.numpy as jnp
import numpy as np

import drgrad_jax as dj

SHAPES = {"a": (3,), "b": (2, 2)}  # two leaves, 7 coordinates per task
DIM = 7
FIXTURE = pathlib.Path(__file__).parent / "fixtures" / "torchjd_outputs.npz"


def tree(flat):
    """[K, 7] -> the two-leaf per-task pytree."""
    flat = jnp.asarray(flat, jnp.float32)
    return {"a": flat[:, :3], "b": flat[:, 3:].reshape(-1, 2, 2)}


def flat(tree_):
    """The two-leaf update pytree -> a float vector of 7 entries."""
    return np.concatenate([np.asarray(tree_["a"]).ravel(), np.asarray(tree_["b"]).ravel()])


def params():
    """Zero parameters with the two leaves' shapes."""
    return {"a": jnp.zeros(SHAPES["a"]), "b": jnp.zeros(SHAPES["b"])}


def random_g(rng, k):
    """Random task gradients with a spread of norms, rounded to float32."""
    g = rng.normal(size=(k, DIM)) * rng.uniform(0.3, 2.0, size=(k, 1))
    return g.astype(np.float32).astype(np.float64)


@functools.cache
def jitted(name, **kwargs):
    """One jitted update per method configuration (compiled once per K)."""
    tx = getattr(dj, name)(**kwargs)

    @jax.jit
    def run(task_grads, state, extra):
        return tx.update(task_grads, state, params(), **extra)

    return tx, run


def apply(name, g, state=None, extra=None, **kwargs):
    """One update of ``drgrad_jax.<name>(**kwargs)`` on ``g``: ``(flat update, new state)``."""
    tx, run = jitted(name, **kwargs)
    if state is None:
        state = tx.init(params())
    d, state = run(tree(g), state, extra or {})
    return flat(d), state


def once(tx, g, **extra):
    """One jitted update of ``tx`` from its initial state on the [K, 7] matrix ``g``."""
    d, _ = jax.jit(lambda t, s: tx.update(t, s, params(), **extra))(tree(g), tx.init(params()))
    return flat(d)


def sequence(name, g_seq, **kwargs):
    """The updates and states of ``drgrad_jax.<name>(**kwargs)`` over [K, 7] matrices."""
    tx = getattr(dj, name)(**kwargs)
    step = jax.jit(lambda t, s: tx.update(t, s, params()))
    state = tx.init(params())
    out, states = [], []
    for g in g_seq:
        d, state = step(tree(g), state)
        out.append(flat(d))
        states.append(state)
    return out, states


def torchjd_cases(method):
    """``{case: {field: array}}`` recorded for one TorchJD method."""
    data = np.load(FIXTURE)
    cases: dict[str, dict[str, np.ndarray]] = {}
    for key in data.files:
        parts = key.split("/")
        if len(parts) == 3 and parts[0] == method:
            cases.setdefault(parts[1], {})[parts[2]] = data[key]
    assert cases, f"no recorded TorchJD cases for {method}"
    return cases


def scaled_error(actual, expected):
    """``max |actual - expected|`` over ``max(1, max |expected|)``: what the tolerances bound."""
    expected = np.asarray(expected, np.float64)
    scale = max(1.0, float(np.max(np.abs(expected))))
    return float(np.max(np.abs(np.asarray(actual, np.float64) - expected))) / scale


def close(actual, expected, tol=1e-5):
    """Elementwise ``|actual - expected| <= tol * (max(1, max |expected|) + |expected|)``."""
    scale = max(1.0, float(np.max(np.abs(expected))))
    np.testing.assert_allclose(actual, expected, rtol=tol, atol=tol * scale)
