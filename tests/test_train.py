"""Tests for drgrad_jax.make_train: seeds under vmap, gradient paths agree, DRGrad wiring."""

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

import drgrad_jax
from drgrad_jax import data, models


def mtl_sum():
    """A tiny multi-task transform: the plain sum over the task axis."""

    def init_fn(params):
        del params
        return optax.EmptyState()

    def update_fn(task_grads, state, params=None):
        del params
        return jax.tree.map(lambda g: jnp.sum(g, axis=0), task_grads), state

    return optax.GradientTransformation(init_fn, update_fn)


@pytest.fixture(scope="module")
def synth():
    return data.mmoe_synthetic(384, 256, 256, correlation=0.5, dim=8, num_sines=0, seed=0)


@pytest.fixture(scope="module")
def personalized():
    return data.drgrad_synthetic(
        "personalized", 256, 128, 128, num_users=4, dim=6, num_sines=0, seed=0
    )


def mmoe(d):
    return functools.partial(
        models.MMoE, d.vocab_sizes, d.num_dense, d.num_tasks, num_experts=2, expert_hidden=(8,)
    )


@pytest.fixture(scope="module")
def five_seeds(synth):
    config = drgrad_jax.TrainConfig(mmoe(synth), optax.adam(1e-2), batch_size=64, num_epochs=8)
    train = drgrad_jax.make_train(config, synth)
    keys = jax.random.split(jax.random.key(0), 5)
    return jax.jit(jax.vmap(train, in_axes=(0, None)))(keys, drgrad_jax.device_splits(synth))


def test_five_seeds_in_one_vmapped_program(five_seeds):
    out = five_seeds
    assert out.val_auc.shape == (5, 8, 2) and out.test_auc.shape == (5, 8, 2)
    assert out.train_loss.shape == (5, 8, 2)
    assert np.all(np.isfinite(out.val_auc)) and np.all(np.isnan(out.mu))
    # Seeds differ (initialization and shuffling), and the easy linear tasks are learnt.
    assert len({round(float(v), 6) for v in out.val_auc[:, -1, 0]}) == 5
    assert np.all(out.val_auc[:, -1] > 0.8)
    assert np.all(out.train_loss[:, -1] < out.train_loss[:, 0])
    leaf = jax.tree.leaves(out.params)[0]
    assert leaf.shape[0] == 5


def test_learning_rate_grid_is_one_program_equal_to_separate_runs(synth, five_seeds):
    """Each (rate, seed) lane of the sweep equals its own make_train run (up to rounding)."""
    config = drgrad_jax.TrainConfig(mmoe(synth), optax.adam(1.0), batch_size=64, num_epochs=8)
    keys = jax.random.split(jax.random.key(0), 5)
    out = drgrad_jax.sweep_learning_rates(config, synth, [3e-3, 1e-2], keys)
    assert out.val_auc.shape == (2, 5, 8, 2)
    np.testing.assert_array_equal(out.val_auc[1], five_seeds.val_auc)  # lr 1e-2, same keys
    np.testing.assert_allclose(out.train_loss[1], five_seeds.train_loss, rtol=2e-4)
    assert not np.array_equal(out.train_loss[0], out.train_loss[1])
    epoch, test = drgrad_jax.select_by_validation(out, rule=0)
    assert epoch.shape == (2, 5) and test.shape == (2, 5, 2)
    for bad in ([], [1e-3, -1.0], [[1e-3]], [float("nan")]):
        with pytest.raises(ValueError, match="learning_rates must be"):
            drgrad_jax.sweep_learning_rates(config, synth, bad, keys)
    with pytest.raises(ValueError, match="keys must be a 1-D array"):
        drgrad_jax.sweep_learning_rates(config, synth, [1e-3], jax.random.key(0))


def test_learning_rate_grid_runs_the_activation_space_probe_inside_the_trace():
    """make_train's host-side probes (check_shared_layer) stay concrete under the sweep's vmap."""
    d = data.conflict_world(128, 32, 32, dim=4, seed=0)
    split = functools.partial(
        models.SplitMMoE, d.vocab_sizes, d.num_dense, 2, num_experts=2, expert_hidden=(4,),
        tower=(4,),
    )  # fmt: skip
    towers = split(rngs=nnx.Rngs(0)).drgrad_towers("activations")
    tx = drgrad_jax.drgrad(towers, space="activations", num_tasks=2)
    config = drgrad_jax.TrainConfig(
        split, optax.adam(1e-2), mtl_transform=tx, space="activations", batch_size=32, num_epochs=1
    )
    keys = jax.random.split(jax.random.key(0), 2)
    out = drgrad_jax.sweep_learning_rates(config, d, [1e-2, 3e-2], keys)
    one = jax.jit(jax.vmap(drgrad_jax.make_train(config, d), (0, None)))(
        keys, drgrad_jax.device_splits(d)
    )
    np.testing.assert_allclose(out.val_auc[0], one.val_auc, atol=1e-6)
    assert np.all(np.isfinite(out.mu))


def test_histories_match_metrics_on_returned_params(five_seeds, synth):
    """The last recorded test AUC is the AUC of the returned params' predictions."""
    graphdef, _ = nnx.split(nnx.eval_shape(lambda: mmoe(synth)(rngs=nnx.Rngs(0))))
    params = jax.tree.map(lambda x: x[2], five_seeds.params)
    logits = nnx.merge(graphdef, params)(synth.test.cat, synth.test.dense)
    for k in range(2):
        want = drgrad_jax.metrics.auc(synth.test.labels[:, k], logits[:, k])
        np.testing.assert_allclose(five_seeds.test_auc[2, -1, k], want, rtol=1e-5)
    val = np.asarray(five_seeds.val_auc)
    for rule, score in (
        ("mean", val.mean(axis=2)),
        (0, val[:, :, 0]),
        (1, val[:, :, 1]),
        (lambda v: v.min(axis=-1), val.min(axis=2)),
    ):
        epoch, test = drgrad_jax.select_by_validation(five_seeds, rule)
        assert epoch.shape == (5,) and test.shape == (5, 2)
        best = np.argmax(score, axis=1)
        np.testing.assert_array_equal(epoch, best)
        np.testing.assert_allclose(test, np.asarray(five_seeds.test_auc)[np.arange(5), best])
    # The default is the mean of tasks.
    default, _ = drgrad_jax.select_by_validation(five_seeds)
    np.testing.assert_array_equal(default, np.argmax(val.mean(axis=2), axis=1))


def test_select_by_validation_rules_and_seesaw():
    """Task 0 alone picks the epoch where task 1 collapses; the mean of tasks does not."""
    val = jnp.array([[0.90, 0.50], [0.88, 0.80], [0.70, 0.90]])  # [epochs, tasks]
    test = val - 0.01
    result = drgrad_jax.TrainResult(None, None, val, test, None, None, None, None)
    assert int(drgrad_jax.select_by_validation(result, 0)[0]) == 0
    epoch, auc = drgrad_jax.select_by_validation(result)
    assert int(epoch) == 1
    np.testing.assert_allclose(auc, test[1])
    # A single-class task (NaN AUC) is left out of the mean.
    with_nan = val.at[:, 1].set(jnp.nan)
    nan_result = result._replace(val_auc=with_nan)
    assert int(drgrad_jax.select_by_validation(nan_result)[0]) == 0
    with pytest.raises(ValueError, match="task index"):
        drgrad_jax.select_by_validation(result, 2)
    with pytest.raises(ValueError, match="rule must be"):
        drgrad_jax.select_by_validation(result, "median")
    with pytest.raises(ValueError, match="one score per epoch"):
        drgrad_jax.select_by_validation(result, lambda v: v)


def test_one_full_batch_sgd_step_matches_manual_step(synth):
    """Oracle for the loop: one epoch of one full batch equals one hand-written SGD step."""
    config = drgrad_jax.TrainConfig(mmoe(synth), optax.sgd(0.5), batch_size=384, num_epochs=1)
    key = jax.random.key(3)
    out = jax.jit(drgrad_jax.make_train(config, synth))(key)
    init_key, _ = jax.random.split(key)
    graphdef, params = models.params_of(mmoe(synth)(rngs=nnx.Rngs(init_key)))
    tr = synth.train

    def loss(p):
        z = nnx.merge(graphdef, p)(tr.cat, tr.dense)
        return jnp.sum(jnp.mean(optax.sigmoid_binary_cross_entropy(z, tr.labels), axis=0))

    grads = jax.jit(jax.grad(loss))(params)
    manual = jax.tree.map(lambda p, g: p - 0.5 * g, params, grads)
    for a, b in zip(jax.tree.leaves(out.params), jax.tree.leaves(manual)):
        np.testing.assert_allclose(a, b, rtol=2e-4, atol=1e-6)


def split_mmoe(d):
    return functools.partial(
        models.SplitMMoE, d.vocab_sizes, d.num_dense, 2, num_experts=2, expert_hidden=(6,),
        ppnet="single", num_users=d.num_users,
    )  # fmt: skip


@pytest.fixture(scope="module")
def plain_run(personalized):
    config = drgrad_jax.TrainConfig(
        split_mmoe(personalized), optax.adam(1e-2), batch_size=64, num_epochs=2
    )
    return jax.jit(drgrad_jax.make_train(config, personalized))(jax.random.key(1))


@pytest.mark.parametrize("space", ["params", "activations"])
def test_summing_transform_equals_plain_summed_loss(personalized, plain_run, space):
    """Per-task gradients + a summing transform give the plain summed-loss run."""
    summed = drgrad_jax.TrainConfig(
        split_mmoe(personalized), optax.adam(1e-2), mtl_sum(), space=space, batch_size=64,
        num_epochs=2,
    )  # fmt: skip
    b = jax.jit(drgrad_jax.make_train(summed, personalized))(jax.random.key(1))
    for x, y in zip(jax.tree.leaves(plain_run.params), jax.tree.leaves(b.params)):
        np.testing.assert_allclose(x, y, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(plain_run.val_auc, b.val_auc, atol=1e-5)


def test_drgrad_split_mmoe_reads_mu_and_learns(personalized, capsys):
    d = personalized
    m = models.SplitMMoE(d.vocab_sizes, d.num_dense, 2, num_experts=2, rngs=nnx.Rngs(0))
    model = functools.partial(models.SplitMMoE, d.vocab_sizes, d.num_dense, 2, num_experts=2)
    tx = drgrad_jax.drgrad(m.drgrad_towers("params"), updater="ema", num_tasks=2)
    config = drgrad_jax.TrainConfig(
        model, optax.adam(1e-2), tx, batch_size=64, num_epochs=2, log_every=1, name="drgrad"
    )
    out = jax.jit(drgrad_jax.make_train(config, d))(jax.random.key(0))
    jax.effects_barrier()
    printed = capsys.readouterr().out
    assert "[drgrad] epoch 1/2" in printed and "[drgrad] epoch 2/2" in printed and " mu " in printed
    mu = np.asarray(out.mu)
    assert mu.shape == (2, 2) and np.all(np.isfinite(mu))
    np.testing.assert_allclose(mu.sum(1), 1.0, rtol=1e-5)
    assert not np.allclose(mu, 0.5)  # the updater moved and the forward pass saw it
    assert np.all(np.isfinite(out.val_auc)) and np.all(out.val_auc[-1] > 0.6)
    for leaf in jax.tree.leaves(out.params):
        assert np.all(np.isfinite(leaf))
    # DRGrad in parameter space only sums shared leaves: the one-backward path agrees.
    fast = dataclasses.replace(config, shared_grads="summed", log_every=0)
    out_fast = jax.jit(drgrad_jax.make_train(fast, d))(jax.random.key(0))
    for x, y in zip(jax.tree.leaves(out.params), jax.tree.leaves(out_fast.params)):
        np.testing.assert_allclose(x, y, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(out.mu, out_fast.mu, rtol=1e-5)


def test_bad_configs(synth):
    model = mmoe(synth)
    with pytest.raises(ValueError, match="space"):
        drgrad_jax.make_train(drgrad_jax.TrainConfig(model, space="reps"), synth)
    with pytest.raises(ValueError, match="needs a config.mtl_transform"):
        drgrad_jax.make_train(drgrad_jax.TrainConfig(model, space="activations"), synth)
    with pytest.raises(ValueError, match="batch_size=1000 exceeds"):
        drgrad_jax.make_train(drgrad_jax.TrainConfig(model, batch_size=1000), synth)
    with pytest.raises(ValueError, match="num_epochs"):
        drgrad_jax.make_train(drgrad_jax.TrainConfig(model, num_epochs=0), synth)
    with pytest.raises(ValueError, match="task_weights has 3"):
        drgrad_jax.make_train(drgrad_jax.TrainConfig(model, task_weights=(1, 1, 1)), synth)
    three = functools.partial(models.MMoE, (), synth.num_dense, 3)
    with pytest.raises(ValueError, match=r"expected \(2, 2\)"):
        drgrad_jax.make_train(drgrad_jax.TrainConfig(three), synth)
    with pytest.raises(TypeError, match="TrainConfig"):
        drgrad_jax.make_train({"model": model}, synth)
    with pytest.raises(ValueError, match="shared_grads"):
        drgrad_jax.make_train(drgrad_jax.TrainConfig(model, shared_grads="sum"), synth)
    with pytest.raises(dataclasses.FrozenInstanceError):
        drgrad_jax.TrainConfig(model).batch_size = 3


def test_drgrad_routes_in_activation_space_by_default_and_make_train_follows():
    """The default towers are v1 / v_s; TrainConfig.space=None takes the transform's space
    (docs/drgrad.md, *Ablations*), and the run equals the explicit activation-space run."""
    d = data.conflict_world(128, 32, 32, dim=4, seed=0)
    split = functools.partial(
        models.SplitMMoE, d.vocab_sizes, d.num_dense, 2, num_experts=2, expert_hidden=(4,),
        tower=(4,),
    )  # fmt: skip
    model = split(rngs=nnx.Rngs(0))
    assert model.drgrad_towers() == {"dedicated": "v1", "shared": "vs"}
    tx = drgrad_jax.drgrad(model.drgrad_towers(), num_tasks=2)
    assert drgrad_jax.transform_space(tx) == "activations"
    assert drgrad_jax.transform_space(drgrad_jax.drgrad(model.drgrad_towers("params"))) == "params"
    released = drgrad_jax.drgrad_released({"head:0": "a", "head:1": "b"})
    assert drgrad_jax.transform_space(released) == "params"
    assert drgrad_jax.transform_space(drgrad_jax.pcgrad()) is None
    base = drgrad_jax.TrainConfig(
        split, optax.adam(1e-2), mtl_transform=tx, batch_size=32, num_epochs=1
    )
    trainer = drgrad_jax.make_train(base, d)
    assert trainer.config.space == "activations"
    explicit = drgrad_jax.make_train(dataclasses.replace(base, space="activations"), d)
    key = jax.random.key(3)
    a, b = jax.jit(trainer)(key), jax.jit(explicit)(key)
    np.testing.assert_array_equal(np.asarray(a.val_auc), np.asarray(b.val_auc))
    np.testing.assert_array_equal(np.asarray(a.mu), np.asarray(b.mu))
    # Other transforms (and none) keep per-task parameter gradients.
    for other in (None, drgrad_jax.pcgrad()):
        cfg = dataclasses.replace(base, mtl_transform=other)
        assert drgrad_jax.make_train(cfg, d).config.space == "params"
    # A space that contradicts the transform's towers is refused before anything compiles.
    with pytest.raises(
        ValueError, match=r"routes in 'activations' space.*drgrad_towers\('params'\)"
    ):
        drgrad_jax.make_train(dataclasses.replace(base, space="params"), d)


def test_tasks_at_once_changes_speed_not_the_run(synth):
    # The K = 2 backward passes through the shared experts run one after another
    # (default), or vmapped together: the same PCGrad run, up to float rounding.
    def run(**kw):
        config = drgrad_jax.TrainConfig(
            mmoe(synth), optax.adam(1e-2), drgrad_jax.pcgrad(), batch_size=64, num_epochs=2, **kw
        )
        return drgrad_jax.make_train(config, synth)(jax.random.key(3))

    loop_run, vmap_run = run(), run(tasks_at_once=None)
    np.testing.assert_allclose(loop_run.train_loss, vmap_run.train_loss, rtol=1e-5)
    for a, b in zip(jax.tree.leaves(loop_run.params), jax.tree.leaves(vmap_run.params)):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)
    with pytest.raises(ValueError, match="config.tasks_at_once must be a positive int"):
        run(tasks_at_once=0)


def test_tasks_at_once_reaches_per_task_grads(synth, monkeypatch):
    from drgrad_jax._src import train as train_module

    seen = []

    def spy(*args, **kwargs):
        seen.append(kwargs.get("tasks_at_once", 1))
        return drgrad_jax.per_task_grads(*args, **kwargs)

    monkeypatch.setattr(train_module, "per_task_grads", spy)
    for at_once in (None, 2):
        config = drgrad_jax.TrainConfig(
            mmoe(synth),
            mtl_transform=drgrad_jax.mgda(),
            batch_size=64,
            num_epochs=1,
            tasks_at_once=at_once,
        )
        jax.eval_shape(drgrad_jax.make_train(config, synth), jax.random.key(0))
        assert seen[-1] == at_once
