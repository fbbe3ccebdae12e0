"""Per-task (vector) hyperparameters of the transformations: shape, length, domain.

A vector given as numbers is refused when it is not one-dimensional, when its
length differs from ``num_tasks`` (at construction when ``num_tasks`` is given,
when the update is traced otherwise) or when an entry lies outside its domain;
every message names the factory, the argument and the entry or both lengths. A
JAX array with an entry outside makes the update NaN, so the trainers' guard
skips the step. The property tests generate malformed vectors (wrong length,
NaN, Inf, negative, beyond float32) and check that each gets the documented
error, or, when valid, exactly the update of the same values given as an array.
"""

from __future__ import annotations

import functools
import inspect
import math
import re

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import drgrad_jax as dj

K = 3
INF = math.inf
# (low, high, low_closed, high_closed, text), written out here rather than imported.
POS = (0, INF, False, False, "> 0")
NONNEG = (0, INF, True, False, ">= 0")
UNIT = (0, 1, True, True, "in [0, 1]")
REAL = (-INF, INF, True, False, "real")

# case -> (factory, argument, domain, a valid vector, other kwargs)
VECTORS = {
    "graddrop": (dj.graddrop, "leak", UNIT, [0.1, 0.5, 1.0], {}),
    "stch/preference": (dj.stch, "preference", POS, [0.2, 0.3, 0.5], {}),
    "stch/ideal": (dj.stch, "ideal", REAL, [0.0, -0.1, 0.05], {}),
    "linear_scalarization": (dj.linear_scalarization, "weights", NONNEG, [1.0, 0.0, 2.0], {}),
    "constant": (dj.constant, "weights", NONNEG, [0.5, 1.0, 2.0], {}),
    "famo": (dj.famo, "min_losses", REAL, [0.0, -1.0, 0.1], {"num_tasks": K}),
    "cr_mogm": (dj.cr_mogm, "initial_weights", REAL, [0.5, -0.2, 0.7], {"num_tasks": K}),
    # learning_rate=1: at the default 10 the inner solve may cycle, so eager and jitted
    # runs can stop at different points of the cycle.
    "sdmgrad": (
        dj.sdmgrad,
        "pref_vector",
        NONNEG,
        [0.2, 0.0, 0.8],
        {"num_tasks": K, "learning_rate": 1.0},
    ),
    "conflict_free": (dj.conflict_free, "pref_vector", NONNEG, [1.0, 0.5, 0.0], {}),
    "dualproj": (dj.dualproj, "pref_vector", NONNEG, [0.2, 0.3, 0.5], {}),
}
PER_TASK_NAMES = {"leak", "preference", "ideal", "weights", "min_losses", "initial_weights"}
GENERATED = {"shapes": 0}


def _inside(x: float, domain) -> bool:
    """The float32 the update computes with is finite and in the domain."""
    low, high, lc, hc, _ = domain
    with np.errstate(over="ignore"):
        x = float(np.float32(x))
    if not math.isfinite(x):
        return False
    return (x >= low if lc else x > low) and (x <= high if hc else x < high)


def _outside_values(domain):
    low, high, lc, _, _ = domain
    out = [float("nan"), -INF, INF, 1e39, -1e39]
    if low != -INF:
        out += [low - 1.0, -1e-9] + ([] if lc else [low, 1e-300])
    if high != INF:
        out.append(high + 0.5)
    return out


def _float32(vector):
    with np.errstate(over="ignore"):
        return np.asarray(vector, np.float64).astype(np.float32)


def _inputs():
    rng = np.random.default_rng(0)
    params = {"w": jnp.ones((4, 2)), "b": jnp.zeros((3,))}
    grads = jax.tree.map(lambda p: jnp.asarray(rng.normal(size=(K, *p.shape)), p.dtype), params)
    return params, grads, {"losses": jnp.linspace(0.5, 1.5, K)}


def _leaves(tree):
    return np.concatenate([np.ravel(np.asarray(u)) for u in jax.tree.leaves(tree)])


@functools.cache
def _injected(case):
    """The case's first update with the vector injected (traced), compiled once:
    ``update(vector) -> flat update``."""
    factory, arg, _, valid, extra = VECTORS[case]
    params, grads, losses = _inputs()
    inject = optax.inject_hyperparams(factory, static_args=tuple(extra))
    tx = inject(**{arg: jnp.asarray(valid, jnp.float32)}, **extra)
    step = jax.jit(lambda s: tx.update(grads, s, params, **losses)[0])

    def update(vector):
        # init from the vector itself: cr_mogm's initial_weights are read by init.
        state = inject(**{arg: jnp.asarray(_float32(vector))}, **extra).init(params)
        return _leaves(step(state))

    return update


def _eager(case, vector, num_tasks=None):
    """The case's update from ``vector`` given as Python numbers."""
    factory, arg, _, _, extra = VECTORS[case]
    kwargs = {**extra, arg: list(vector)}
    if num_tasks is not None:
        kwargs["num_tasks"] = num_tasks
    tx = factory(**kwargs)
    params, grads, losses = _inputs()
    return _leaves(tx.update(grads, tx.init(params), params, **losses)[0])


def test_every_per_task_argument_of_the_zoo_is_covered():
    covered = {(f.__name__, arg) for f, arg, *_ in VECTORS.values()}
    found = set()
    for name in dj.__all__:
        f = getattr(dj, name)
        if inspect.isfunction(f) and "Gradient" in str(inspect.signature(f).return_annotation):
            params = inspect.signature(f).parameters
            found |= {(name, p) for p in params if p in PER_TASK_NAMES or p == "pref_vector"}
    assert found == covered


@pytest.mark.parametrize("case", sorted(VECTORS))
def test_valid_numbers_give_the_update_of_the_same_array(case):
    valid = VECTORS[case][3]
    np.testing.assert_allclose(_eager(case, valid), _injected(case)(valid), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("case", sorted(VECTORS))
def test_an_entry_outside_the_domain_is_refused_naming_factory_argument_and_entry(case):
    factory, arg, domain, valid, extra = VECTORS[case]
    for index in range(K):
        for value in _outside_values(domain):
            vector = list(valid)
            vector[index] = value
            pattern = (
                rf"^{factory.__name__}: {arg} must be {re.escape(domain[4])} in every entry "
                rf"\(a finite float32\); got {arg}\[{index}\] = "
            )
            with pytest.raises(ValueError, match=pattern):
                factory(**extra, **{arg: vector})
            with pytest.raises(ValueError, match=pattern):  # a NumPy vector alike
                factory(**extra, **{arg: np.asarray(vector)})


@pytest.mark.parametrize("case", sorted(VECTORS))
def test_an_injected_entry_outside_the_domain_makes_the_update_nan(case):
    _, _, domain, valid, _ = VECTORS[case]
    update = _injected(case)
    assert np.all(np.isfinite(update(valid)))
    for value in _outside_values(domain):
        vector = list(valid)
        vector[1] = value
        assert np.all(np.isnan(update(vector))), (case, value)


def test_an_out_of_domain_array_given_directly_makes_the_update_nan():
    params, grads, losses = _inputs()
    for tx in (
        dj.graddrop(jnp.array([0.1, 2.0, 0.3])),
        dj.linear_scalarization(jnp.array([1.0, -1.0, 1.0])),
        dj.famo(min_losses=jnp.array([0.0, jnp.nan, 0.0]), num_tasks=K),
    ):
        d, _ = jax.jit(lambda s, tx=tx: tx.update(grads, s, params, **losses))(tx.init(params))
        assert np.all(np.isnan(_leaves(d)))


@pytest.mark.parametrize("case", sorted(VECTORS))
def test_a_wrong_length_is_refused_naming_both_lengths(case):
    factory, arg, _, valid, extra = VECTORS[case]
    params, grads, losses = _inputs()
    for n in (0, 1, K - 1, K + 1):
        vector = (valid * 2)[:n]
        with pytest.raises(ValueError) as info:
            factory(**{**extra, "num_tasks": K, arg: vector})
        assert str(info.value) == (
            f"{factory.__name__}: {arg} has shape ({n},) but num_tasks={K}; pass one value "
            f"per task (a vector of length {K}), or set num_tasks to the number of tasks."
        )
        if "num_tasks" in extra:
            continue  # the method needs num_tasks: nothing is left to trace time
        tx = factory(**extra, **{arg: jnp.asarray(vector, jnp.float32)})
        with pytest.raises(ValueError) as info:
            jax.eval_shape(lambda tx=tx: tx.update(grads, tx.init(params), params, **losses))
        assert str(info.value) == (
            f"{factory.__name__}: {arg} has shape ({n},) but the task axis of task_grads has "
            f"length {K}; pass one value per task (a vector of length {K})."
        )


def test_the_messages_word_for_word():
    cases = [
        (
            lambda: dj.graddrop([0.1, 1.5, 0.2]),
            "graddrop: leak must be in [0, 1] in every entry (a finite float32); "
            "got leak[1] = 1.5.",
        ),
        (
            lambda: dj.stch(preference=[0.5, 0.0, 0.5]),
            "stch: preference must be > 0 in every entry (a finite float32); "
            "got preference[1] = 0.0.",
        ),
        (
            lambda: dj.linear_scalarization([1.0, 1e39]),
            "linear_scalarization: weights must be >= 0 in every entry (a finite float32); "
            "got weights[1] = 1e+39, which is inf in float32.",
        ),
        (
            lambda: dj.cr_mogm(initial_weights=[0.5, float("nan"), 0.5], num_tasks=3),
            "cr_mogm: initial_weights must be real in every entry (a finite float32); "
            "got initial_weights[1] = nan.",
        ),
        (
            lambda: dj.conflict_free(np.ones((3, 1))),
            "conflict_free: pref_vector must be a vector [num_tasks], one value per task; "
            "got shape (3, 1).",
        ),
    ]
    for make, message in cases:
        with pytest.raises(ValueError) as info:
            make()
        assert str(info.value) == message
    with pytest.raises(TypeError) as info:
        dj.dualproj([1.0, [2.0]])
    assert (
        str(info.value)
        == "dualproj: pref_vector must be a vector of numbers; got a ragged sequence."
    )


ENTRY = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True),
    st.floats(-0.5, 1.5),  # mostly inside, so that valid vectors are generated too
    st.sampled_from(
        [0.0, -0.0, 0.5, 1.0, -1e-9, 1e-300, 1.0 + 1e-12, 1.0 - 1e-12, 3.4e38, 3.5e38, 1e39, -1e39]
    ),
)


@settings(max_examples=50, deadline=None)
@given(
    case=st.sampled_from(sorted(VECTORS)),
    vector=st.one_of(st.lists(ENTRY, min_size=K, max_size=K), st.lists(ENTRY, max_size=K + 2)),
    give_num_tasks=st.booleans(),
)
def test_generated_vectors_get_the_documented_error_or_the_arrays_update(
    case, vector, give_num_tasks
):
    factory, arg, domain, _, extra = VECTORS[case]
    name, n = factory.__name__, len(vector)
    given_k = give_num_tasks or "num_tasks" in extra
    outside = [i for i, v in enumerate(vector) if not _inside(v, domain)]
    if n != K and given_k:  # the shape is checked first, against num_tasks
        kind, match = "length", rf"^{name}: {arg} has shape \({n},\) but num_tasks={K}"
    elif outside:
        text = re.escape(domain[4])
        kind = "domain"
        match = rf"^{name}: {arg} must be {text} in every entry .* {arg}\[{outside[0]}\] ="
    elif n != K:  # valid entries, K unknown until the update is traced
        kind = "traced length"
        match = rf"^{name}: {arg} has shape \({n},\) but the task axis of task_grads"
    else:
        kind = "valid"
    GENERATED[kind] = GENERATED.get(kind, 0) + 1
    if kind == "valid":
        got = _eager(case, vector, K if given_k else None)
        np.testing.assert_allclose(got, _injected(case)(vector), rtol=1e-5, atol=1e-6)
        return
    with pytest.raises(ValueError, match=match):
        _eager(case, vector, K if given_k else None)
    if n == K:  # the same values as a JAX array: every leaf of the update is NaN
        assert np.all(np.isnan(_injected(case)(vector)))


@settings(max_examples=30, deadline=None)
@given(
    case=st.sampled_from(sorted(VECTORS)),
    shape=st.sampled_from([(), (K, 1), (1, K), (K, K), (1, 1, K)]),
    kind=st.sampled_from(["list", "numpy", "jax"]),
)
def test_generated_non_vectors_are_refused_at_construction(case, shape, kind):
    GENERATED["shapes"] += 1
    factory, arg, _, valid, extra = VECTORS[case]
    value = np.resize(np.asarray(valid, np.float32), shape)
    value = {"list": value.tolist(), "numpy": value, "jax": jnp.asarray(value)}[kind]
    with pytest.raises(ValueError) as info:
        factory(**extra, **{arg: value})
    assert str(info.value) == (
        f"{factory.__name__}: {arg} must be a vector [num_tasks], one value per task; "
        f"got shape {shape}."
    )


@pytest.fixture(scope="module", autouse=True)
def _report_generated_cases():
    yield
    print(f"\ngenerated cases: {GENERATED}")
