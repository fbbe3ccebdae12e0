"""Common misuses of the multi-task transformations get an error that says the fix."""

import dataclasses

import jax
import jax.numpy as jnp
import optax
import pytest

import drgrad_jax as dj

PARAMS = {"b": jnp.ones(3), "w": jnp.ones((4, 3))}


def _list_of_grads(k=3):
    return [jax.tree.map(lambda p, i=i: p * (i + 1.0), PARAMS) for i in range(k)]


@pytest.mark.parametrize("with_params", [False, True])
@pytest.mark.parametrize("method", [dj.pcgrad, dj.mgda, dj.cagrad])
def test_list_of_grad_pytrees_says_how_to_stack(method, with_params):
    tx = method()
    state = tx.init(PARAMS)
    params = PARAMS if with_params else None
    with pytest.raises(ValueError, match=r"jax\.tree\.map\(lambda \*g: jnp\.stack\(g\), \*grads\)"):
        tx.update(_list_of_grads(), state, params)
    # The advice works as written.
    grads = _list_of_grads()
    task_grads = jax.tree.map(lambda *g: jnp.stack(g), *grads)
    updates, _ = tx.update(task_grads, state, params)
    assert jax.tree.map(jnp.shape, updates) == jax.tree.map(jnp.shape, PARAMS)


def test_length_mismatch_names_both_leaves():
    bad = {"b": jnp.ones((2, 3)), "w": jnp.ones((3, 4, 3))}
    with pytest.raises(
        ValueError,
        match=r"task_grads\['w'\] has task-axis length 3 but "
        r"task_grads\['b'\] has 2",
    ):
        dj.pcgrad().update(bad, optax.EmptyState(), None)
    with pytest.raises(ValueError, match=r"num_tasks=2 .*leaf task_grads\['b'\]"):
        dj.gradvac(num_tasks=2).update(
            {"b": jnp.ones((3, 3)), "w": jnp.ones((3, 4, 3))},
            dj.gradvac(num_tasks=2).init(PARAMS),
            PARAMS,
        )


def test_optimizer_chained_before_the_transform_is_detected_when_params_shaped():
    # Leaves whose first axes agree pass the task-axis check; the params check
    # then sees a params-shaped update where a task axis is expected.
    params = {"b": jnp.ones(3), "w": jnp.ones((3, 2))}
    tx = optax.chain(optax.adam(1e-3), dj.pcgrad())
    state = tx.init(params)
    with pytest.raises(ValueError, match=r"params' shapes.*put the multi-task transform first"):
        tx.update(params, state, params)
    # Leaves with different first axes say the same through the length check.
    with pytest.raises(ValueError, match="put the multi-task transform first"):
        optax.chain(optax.adam(1e-3), dj.pcgrad()).update(PARAMS, tx.init(PARAMS), PARAMS)


STATEFUL = [
    "gradvac",
    "dwa",
    "uncertainty_weighting",
    "imtl_l",
    "famo",
    "gradnorm",
    "moco",
    "modo",
    "sdmgrad",
    "db_mtl",
    "excess_mtl",
    "cr_mogm",
]


@pytest.mark.parametrize("name", STATEFUL)
def test_num_tasks_needed_at_init_has_one_message(name):
    with pytest.raises(ValueError, match=rf"^{name} keeps per-task state .* num_tasks=K\)"):
        getattr(dj, name)()
    with pytest.raises(ValueError, match="num_tasks must be a positive int"):
        getattr(dj, name)(num_tasks=0)
    tx = getattr(dj, name)(num_tasks=2)
    assert tx.init(PARAMS) is not None


INFERRED = {
    "pcgrad": (),
    "mgda": (),
    "cagrad": (0.4,),
    "aligned_mtl": (),
    "conflict_free": (),
    "dualproj": (),
    "fairgrad": (),
    "graddrop": (),
    "imtl_g": (),
    "krum": (1, 1),
    "linear_scalarization": (),
    "constant": (jnp.ones(4),),
    "mean": (),
    "nash_mtl": (),
    "random_weighting": (),
    "rlw": (),
    "stch": (),
    "trimmed_mean": (0,),
    "upgrad": (),
}


def _task_grads(k):
    scale = jnp.linspace(1.0, -0.5, k)
    return jax.tree.map(lambda p: scale.reshape(-1, *[1] * p.ndim) * p[None], PARAMS)


@pytest.mark.parametrize("name", sorted(INFERRED))
def test_num_tasks_is_optional_and_checked_where_it_can_be_inferred(name):
    args = INFERRED[name]
    factory = getattr(dj, name)
    k = 4
    extra = {"losses": jnp.ones(k)}  # read by stch, ignored by the others
    for tx in (factory(*args), factory(*args, num_tasks=k)):
        updates, _ = tx.update(_task_grads(k), tx.init(PARAMS), PARAMS, **extra)
        assert jax.tree.map(jnp.shape, updates) == jax.tree.map(jnp.shape, PARAMS)
    tx = factory(*args, num_tasks=k)
    with pytest.raises(ValueError, match=rf"task-axis length {k + 1} but num_tasks={k}"):
        tx.update(_task_grads(k + 1), tx.init(PARAMS), PARAMS, losses=jnp.ones(k + 1))
    with pytest.raises(ValueError, match="num_tasks must be a positive int"):
        factory(*args, num_tasks=0)


# ----------------------------------------------------------------------------
# make_train: shared_grads="summed" with a method that compares tasks.
# ----------------------------------------------------------------------------


def _tiny_data():
    from drgrad_jax import data

    return data.mmoe_synthetic(64, 32, 32, dim=4, num_sines=0, seed=0)


def _mmoe(d):
    import functools

    from drgrad_jax import models

    return functools.partial(
        models.MMoE, d.vocab_sizes, d.num_dense, d.num_tasks, num_experts=2, expert_hidden=(4,)
    )


@pytest.mark.parametrize(
    "make_tx, state",
    [
        (dj.pcgrad, "PCGradState"),
        (dj.mgda, "MGDAState"),
        (dj.cagrad, "CAGradState"),
        (lambda: optax.chain(dj.pcgrad(), optax.identity()), "PCGradState"),
    ],
)
def test_summed_shared_grads_with_a_comparing_method_says_use_per_task(make_tx, state):
    d = _tiny_data()
    config = dj.TrainConfig(_mmoe(d), mtl_transform=make_tx(), shared_grads="summed", batch_size=16)
    with pytest.raises(
        ValueError,
        match=rf"shared_grads='summed' keeps only the task sum .*\({state}\) compares the tasks"
        r".*Use shared_grads='per_task'",
    ):
        dj.make_train(config, d)
    # The advice works as written.
    dj.make_train(dataclasses.replace(config, shared_grads="per_task"), d)


def test_summed_shared_grads_with_unequal_linear_weights_says_use_task_weights():
    d = _tiny_data()
    config = dj.TrainConfig(
        _mmoe(d),
        mtl_transform=dj.linear_scalarization(jnp.array([1.0, 0.5])),
        shared_grads="summed",
        batch_size=16,
    )
    with pytest.raises(
        ValueError, match=r"weights the tasks unequally \(\[1\.0, 0\.5\]\).*task_weights"
    ):
        dj.make_train(config, d)
    fixed = dataclasses.replace(
        config, mtl_transform=dj.linear_scalarization(), task_weights=(1.0, 0.5)
    )
    dj.make_train(fixed, d)


@pytest.mark.parametrize("make_tx", [dj.linear_scalarization, dj.mean, lambda: None])
def test_summed_shared_grads_with_a_summing_method_is_accepted(make_tx):
    d = _tiny_data()
    dj.make_train(
        dj.TrainConfig(_mmoe(d), mtl_transform=make_tx(), shared_grads="summed", batch_size=16), d
    )


# ----------------------------------------------------------------------------
# almmta_jax.attribute / build_reference_pool given the run instead of the network.
# ----------------------------------------------------------------------------


def test_attribute_given_the_trainer_or_its_state_says_pass_trainer_model():
    import almmta_jax as am
    from almmta_jax.testing import random_journeys
    from tests.almmta_tiny import tiny_model

    config = am.TrainConfig(tiny_model(), batch_size=4, num_epochs=1, queue_size=8)
    journeys = random_journeys(jax.random.key(0), 8, config.model)
    trainer = am.make_train(config, journeys)
    state = trainer.init(jax.random.key(1))
    advice = r"pass the trained network, trainer\.model\(state\)"
    with pytest.raises(
        TypeError, match=rf"attribute takes the trained ALMMTA network, not the Trainer: {advice}"
    ):
        am.attribute(trainer, journeys)
    with pytest.raises(TypeError, match=rf"not a TrainState: {advice}"):
        am.attribute(state, journeys)
    with pytest.raises(TypeError, match=rf"model must be an ALMMTA network; got dict\. .*{advice}"):
        am.attribute({"params": 1}, journeys)
    clusters = journeys.touch_ids[..., 0]
    with pytest.raises(
        TypeError, match=rf"build_reference_pool takes .* not the Trainer: {advice}"
    ):
        am.build_reference_pool(trainer, journeys, clusters)
    # The advice works as written.
    model = trainer.model(state)
    assert am.attribute(model, journeys).uplift.shape == journeys.touch_mask.shape
    am.build_reference_pool(model, journeys, clusters)
