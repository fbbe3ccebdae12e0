"""Float hyperparameters of the transformations outside their domains.

A number outside the domain is refused at construction, naming the factory, the
argument and the domain; an injected (JAX array) value outside it makes the
update NaN, so ``optax.apply_if_finite`` and the trainers' guard skip the step.
"""

from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx
from hypothesis import given, settings
from hypothesis import strategies as st

import drgrad_jax as dj
from drgrad_jax import data, models

K = 3
INF = math.inf
# (low, high, low_closed, high_closed), written out here rather than imported.
POS = (0, INF, False, False)
NONNEG = (0, INF, True, False)
UNIT = (0, 1, True, True)
UNIT_OPEN = (0, 1, True, False)
TOWERS = {"dedicated": "d", "shared": "s", "aux:1": "a"}

# name -> (factory, valid kwargs, {hyperparameter: domain})
METHODS = {
    "drgrad": (
        dj.drgrad,
        {"towers": TOWERS, "num_tasks": 2},
        {"gamma": POS, "temperature": POS, "ema_decay": UNIT_OPEN},
    ),
    "cagrad": (dj.cagrad, {"c": 0.5}, {"c": NONNEG}),
    "cr_mogm": (dj.cr_mogm, {"alpha": 0.9, "num_tasks": K}, {"alpha": UNIT}),
    "db_mtl": (
        dj.db_mtl,
        {"beta": 0.9, "beta_sigma": 0.5, "num_tasks": K},
        {"beta": UNIT_OPEN, "beta_sigma": NONNEG},
    ),
    "gradvac": (dj.gradvac, {"beta": 0.5, "num_tasks": K}, {"beta": UNIT}),
    "dwa": (dj.dwa, {"temperature": 2.0, "num_tasks": K}, {"temperature": POS}),
    "uncertainty_weighting": (
        dj.uncertainty_weighting,
        {"learning_rate": 0.1, "num_tasks": K},
        {"learning_rate": POS},
    ),
    "imtl_l": (dj.imtl_l, {"learning_rate": 0.1, "num_tasks": K}, {"learning_rate": POS}),
    "famo": (
        dj.famo,
        {"learning_rate": 0.025, "weight_decay": 1e-3, "num_tasks": K},
        {"learning_rate": POS, "weight_decay": NONNEG},
    ),
    "gradnorm": (
        dj.gradnorm,
        {"alpha": 1.5, "learning_rate": 0.025, "num_tasks": K, "layer": ("w",)},
        {"alpha": NONNEG, "learning_rate": POS},
    ),
    "moco": (
        dj.moco,
        {
            "beta": 0.5,
            "gamma": 0.1,
            "rho": 0.0,
            "beta_sigma": 0.5,
            "gamma_sigma": 0.5,
            "num_tasks": K,
        },
        {"beta": UNIT, "gamma": POS, "rho": NONNEG, "beta_sigma": NONNEG, "gamma_sigma": NONNEG},
    ),
    "modo": (
        dj.modo,
        {"gamma": 0.1, "rho": 0.1, "num_tasks": K},
        {"gamma": POS, "rho": NONNEG},
    ),
    "nash_mtl": (dj.nash_mtl, {"eps": 1e-6}, {"eps": NONNEG}),
    "fairgrad": (dj.fairgrad, {"alpha": 2.0, "eps": 1e-6}, {"alpha": NONNEG, "eps": NONNEG}),
    "sdmgrad": (
        dj.sdmgrad,
        {"lam": 0.3, "learning_rate": 10.0, "momentum": 0.5, "num_tasks": K},
        {"lam": NONNEG, "learning_rate": POS, "momentum": UNIT_OPEN},
    ),
    "excess_mtl": (
        dj.excess_mtl,
        {"robust_step_size": 0.5, "num_tasks": K},
        {"robust_step_size": POS},
    ),
    "stch": (dj.stch, {"mu": 0.5, "num_tasks": K}, {"mu": POS}),
}
CASES = [(m, h) for m, (_, _, doms) in METHODS.items() for h in doms]


def _inside(x: float, domain) -> bool:
    """The value the update computes with, a float32, is finite and in the domain."""
    low, high, lc, hc = domain
    with np.errstate(over="ignore"):
        x = float(np.float32(x))  # beyond float32: Inf; 1 + 1e-12: 1.0; 1e-300: 0.0
    if not math.isfinite(x):
        return False
    return (x >= low if lc else x > low) and (x <= high if hc else x < high)


def _outside_values(domain):
    low, high, lc, hc = domain
    out = [float("nan"), -INF, INF, low - 1.0]
    if not lc:
        out.append(low)
    if high != INF:
        out.append(high + 0.5)
        if not hc:
            out.append(high)
    return out


def _inputs(method):
    k = 2 if method == "drgrad" else K
    rng = np.random.default_rng(0)
    if method == "drgrad":
        params = {n: jnp.ones((3,)) for n in ("d", "s", "a")}
    else:
        params = {"w": jnp.ones((4, 2)), "b": jnp.zeros((3,))}
    grads = jax.tree.map(lambda p: jnp.asarray(rng.normal(size=(k, *p.shape)), p.dtype), params)
    return params, grads, {"losses": jnp.linspace(0.5, 1.5, k)}


@pytest.mark.parametrize("method,name", CASES)
def test_numbers_outside_the_domain_are_refused_naming_factory_and_argument(method, name):
    factory, kwargs, domains = METHODS[method]
    for value in _outside_values(domains[name]):
        with pytest.raises(ValueError, match=rf"^{method}: {name} must be .*; got"):
            factory(**{**kwargs, name: value})
    factory(**kwargs)  # the valid configuration is accepted


@pytest.mark.parametrize("method,name", CASES)
def test_injected_values_outside_the_domain_make_the_update_nan(method, name):
    factory, kwargs, domains = METHODS[method]
    params, grads, extra = _inputs(method)
    static = tuple(k for k in kwargs if k != name)
    tx = optax.inject_hyperparams(factory, static_args=static)(**kwargs)
    state = tx.init(params)
    update = jax.jit(lambda g, s, p: tx.update(g, s, p, **extra))
    good, _ = update(grads, state, params)
    assert all(bool(jnp.all(jnp.isfinite(u))) for u in jax.tree.leaves(good))
    for value in _outside_values(domains[name]):
        hp = dict(state.hyperparams, **{name: jnp.asarray(value, jnp.float32)})
        bad, _ = update(grads, state._replace(hyperparams=hp), params)
        assert all(bool(jnp.all(jnp.isnan(u))) for u in jax.tree.leaves(bad)), (name, value)


def test_an_injected_bad_temperature_is_skipped_by_the_trainers_guard():
    """The run-time path end to end: an injected temperature of -1 is not refused at
    construction; each step's update is NaN, so the guard skips and counts it."""
    d = data.drgrad_synthetic("conflict", 32, 16, 16, dim=4, num_sines=0, seed=2)
    model = functools.partial(models.SplitMMoE, d.vocab_sizes, d.num_dense, 2, num_experts=2)
    towers = model(rngs=nnx.Rngs(0)).drgrad_towers("params")
    inject = optax.inject_hyperparams(dj.drgrad, static_args=("towers", "num_tasks"))
    for temperature, skipped in ((1.0, 0), (-1.0, 2)):
        tx = inject(towers=towers, num_tasks=2, temperature=temperature)
        cfg = dj.TrainConfig(model, optax.sgd(0.1), tx, batch_size=16, num_epochs=1)
        trainer = dj.make_train(cfg, d)
        state = trainer.init(jax.random.key(0))
        new, _ = trainer.run(state, 2)
        assert int(new.skipped) == skipped
        changed = not all(
            np.array_equal(a, b)
            for a, b in zip(jax.tree.leaves(new.params), jax.tree.leaves(state.params))
        )
        assert changed == (skipped == 0)


def test_numpy_scalars_are_checked_like_python_numbers():
    with pytest.raises(ValueError, match=r"cagrad: c must be >= 0 \(a finite float32\); got -1\.0"):
        dj.cagrad(c=np.float32(-1.0))
    with pytest.raises(ValueError, match=r"dwa: temperature must be > 0"):
        dj.dwa(temperature=np.array(0.0), num_tasks=K)
    with pytest.raises(TypeError, match=r"dwa: temperature must be a number"):
        dj.dwa(temperature="warm", num_tasks=K)


GENERATED = {"n": 0}


@settings(max_examples=150, deadline=None)
@given(
    case=st.sampled_from(CASES),
    value=st.one_of(
        st.floats(allow_nan=True, allow_infinity=True),
        st.sampled_from([0.0, -0.0, 1.0, 1e-300, -1e-300, 1.0 + 1e-12, 3.4e38, 3.5e38, 1e300]),
    ),
)
def test_generated_values_are_refused_iff_outside_the_domain(case, value):
    GENERATED["n"] += 1
    method, name = case
    factory, kwargs, domains = METHODS[method]
    if _inside(value, domains[name]):
        factory(**{**kwargs, name: value})
    else:
        with pytest.raises(ValueError, match=rf"{method}: {name} must be"):
            factory(**{**kwargs, name: value})
