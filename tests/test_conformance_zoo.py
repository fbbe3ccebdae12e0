"""The conformance battery (tests/conformance.py) on every method of the zoo."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import pytest

import drgrad_jax as dj
from tests import conformance

K = 3

# name -> (factory, kwargs, float hyperparameter for inject_hyperparams)
ZOO = {
    "linear_scalarization": (
        dj.linear_scalarization,
        {"weights": jnp.array([1.0, 0.5, 2.0])},
        "weights",
    ),
    "pcgrad": (dj.pcgrad, {"seed": 0}, None),
    "gradvac": (dj.gradvac, {"beta": 0.5, "num_tasks": K}, "beta"),
    "cagrad": (dj.cagrad, {"c": 0.5}, "c"),
    "mgda": (dj.mgda, {}, None),
    "nash_mtl": (dj.nash_mtl, {"eps": 1e-6}, "eps"),
    "imtl_g": (dj.imtl_g, {}, None),
    "aligned_mtl": (dj.aligned_mtl, {}, None),
    "upgrad": (dj.upgrad, {}, None),
    "dwa": (dj.dwa, {"temperature": 2.0, "num_tasks": K}, "temperature"),
    "uncertainty_weighting": (
        dj.uncertainty_weighting,
        {"learning_rate": 0.1, "num_tasks": K},
        "learning_rate",
    ),
    "mean": (dj.mean, {}, None),
    "constant": (dj.constant, {"weights": jnp.array([1.0, 0.5, 2.0])}, "weights"),
    "random_weighting": (dj.random_weighting, {"seed": 0}, None),
    "rlw": (dj.rlw, {"seed": 1}, None),
    "dualproj": (dj.dualproj, {"pref_vector": jnp.array([0.2, 0.3, 0.5])}, "pref_vector"),
    "conflict_free": (
        dj.conflict_free,
        {"pref_vector": jnp.array([1.0, 2.0, 1.0])},
        "pref_vector",
    ),
    "trimmed_mean": (dj.trimmed_mean, {"trim_number": 1}, None),
    "krum": (dj.krum, {"n_byzantine": 0, "n_selected": 2}, None),
    "graddrop": (dj.graddrop, {"leak": jnp.array([0.0, 0.2, 0.5]), "seed": 0}, "leak"),
    "fairgrad": (dj.fairgrad, {"alpha": 2.0, "eps": 1e-6}, "alpha"),
    "imtl_l": (dj.imtl_l, {"learning_rate": 0.1, "num_tasks": K}, "learning_rate"),
    "geometric_mean": (dj.geometric_mean, {"num_tasks": K}, None),
    "stch": (dj.stch, {"mu": 0.5, "preference": jnp.array([0.2, 0.3, 0.5])}, "mu"),
    "famo": (
        dj.famo,
        {"learning_rate": 0.025, "weight_decay": 1e-3, "num_tasks": K},
        "learning_rate",
    ),
    "db_mtl": (dj.db_mtl, {"beta": 0.9, "beta_sigma": 0.5, "num_tasks": K}, "beta"),
    "gradnorm": (
        dj.gradnorm,
        {"alpha": 1.5, "learning_rate": 0.025, "num_tasks": K, "layer": ("w", "trunk")},
        # Not alpha: L_grad is an L1 loss, so over three steps a halved alpha
        # moves the targets without flipping any sign, and the weights agree.
        "learning_rate",
    ),
    "moco": (dj.moco, {"beta": 0.5, "gamma": 0.1, "num_tasks": K}, "gamma"),
    "modo": (dj.modo, {"gamma": 0.1, "rho": 0.1, "num_tasks": K}, "gamma"),
    "sdmgrad": (dj.sdmgrad, {"lam": 0.3, "num_tasks": K}, "lam"),
    "excess_mtl": (dj.excess_mtl, {"robust_step_size": 0.5, "num_tasks": K}, "robust_step_size"),
    "cr_mogm": (dj.cr_mogm, {"alpha": 0.9, "num_tasks": K}, "alpha"),
}


@pytest.fixture(scope="module")
def inputs():
    k1, k2 = jax.random.split(jax.random.key(0))
    params = {"w": jnp.ones((4, 2)), "b": jnp.zeros((3,))}
    task_grads = {
        "w": jax.random.normal(k1, (K, 4, 2)),
        "b": jax.random.normal(k2, (K, 3)),
    }
    return params, task_grads, {"losses": jnp.array([0.7, 1.3, 0.2])}


@pytest.mark.parametrize("check", sorted(conformance.CHECKS))
@pytest.mark.parametrize("name", sorted(ZOO))
def test_conformance(name, check, inputs):
    params, task_grads, extra_args = inputs
    factory, kwargs, hyperparam = ZOO[name]
    conformance.run_check(
        check,
        factory,
        params,
        task_grads,
        kwargs=kwargs,
        hyperparam=hyperparam,
        extra_args=extra_args,
    )
