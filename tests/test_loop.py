"""The shared training loop on a toy recipe: batch order, guard, history, progress, seeds."""

import dataclasses
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from drgrad_jax import loop
from drgrad_jax._src import loop as loop_src

N, D, B = 24, 3, 6  # 4 batches per epoch


class State(NamedTuple):
    step: jax.Array
    w: jax.Array
    data_key: jax.Array
    skipped: jax.Array
    seen: jax.Array  # [N] how often each row was in a batch (to check the order)


def _recipe(lr=0.1):
    """Least squares by SGD; the state also counts the rows it saw."""

    def init(key):
        w_key, data_key = jax.random.split(key)
        zero = jnp.zeros((), jnp.int32)
        w = jax.random.normal(w_key, (D,))
        return State(zero, w, jax.random.key_data(data_key), zero, jnp.zeros((N,), jnp.int32))

    def loss(w, batch):
        x, y, _ = batch
        return jnp.mean((x @ w - y) ** 2)

    def step(state, batch):
        value, g = jax.value_and_grad(loss)(state.w, batch)
        seen = state.seen.at[batch[2]].add(1)
        return state._replace(w=state.w - lr * g, seen=seen), value

    return loop.Recipe(
        init=init,
        step=step,
        evaluate=lambda state, data: loss(state.w, data),
        order_key=lambda state: jax.random.wrap_key_data(state.data_key),
    )


@pytest.fixture(scope="module")
def data():
    x = jax.random.normal(jax.random.key(0), (N, D))
    y = x @ jnp.array([1.0, -2.0, 0.5])
    return (x, y, jnp.arange(N))


def _trainer(data, num_epochs=3, **kw):
    return loop.Trainer(
        _recipe(), data, data, config=None, batch_size=B, num_epochs=num_epochs, **kw
    )


def test_batch_order_is_a_permutation_per_epoch_from_fold_in():
    key = jax.random.key(3)
    for epoch in (0, 1, 7):
        order = np.asarray(loop.batch_order(key, epoch, 10, 4))
        # The definition, written out: the first 8 rows of a fold_in permutation.
        ref = np.asarray(jax.random.permutation(jax.random.fold_in(key, epoch), 10))[:8]
        np.testing.assert_array_equal(order.ravel(), ref)
        assert len(set(order.ravel().tolist())) == 8
    assert not np.array_equal(loop.batch_order(key, 0, 10, 4), loop.batch_order(key, 1, 10, 4))


def test_each_epoch_visits_every_row_once_and_the_order_ignores_the_planned_length(data):
    short, long = _trainer(data, num_epochs=1), _trainer(data, num_epochs=5)
    a, _ = short.run(short.init(jax.random.key(1)), 4)
    b, _ = long.run(long.init(jax.random.key(1)), 4)
    np.testing.assert_array_equal(a.seen, np.ones(N, np.int32))
    np.testing.assert_array_equal(a.w, b.w)  # same batches whatever num_epochs says
    c, _ = long.run(b, 8)
    np.testing.assert_array_equal(c.seen, np.full(N, 3, np.int32))


def test_whole_run_equals_steps_in_pieces_and_records_each_epoch(data):
    trainer = _trainer(data)
    state, (mean_loss, eval_loss) = jax.jit(trainer)(jax.random.key(2))
    assert mean_loss.shape == (3,) and eval_loss.shape == (3,)
    assert float(eval_loss[-1]) < float(eval_loss[0])
    pieces = trainer.init(jax.random.key(2))
    for n in (5, 2, 5):  # crosses the epoch boundaries mid-piece
        pieces, _ = trainer.run(pieces, n)
    np.testing.assert_allclose(pieces.w, state.w, rtol=1e-6)
    assert int(state.step) == trainer.total_steps == 12
    # The history's last entry is the evaluation of the final state.
    np.testing.assert_allclose(trainer.evaluate(state), eval_loss[-1], rtol=1e-6)
    with pytest.raises(ValueError, match="passes total_steps=12"):
        trainer.run(pieces, 1)


def test_guard_keeps_the_old_state_counts_the_skip_and_averages_finite_steps(data):
    x, y, rows = data
    bad = (x.at[0, 0].set(jnp.nan), y, rows)  # row 0 poisons one batch per epoch
    trainer = _trainer(bad)
    state, (mean_loss, _) = trainer(jax.random.key(4))
    assert int(state.skipped) == 3 and int(state.step) == 12
    assert np.all(np.isfinite(state.w)) and np.all(np.isfinite(mean_loss))
    unguarded = _trainer(bad, skip_nonfinite=False)
    state, (mean_loss, _) = unguarded(jax.random.key(4))
    assert int(state.skipped) == 0 and not np.all(np.isfinite(state.w))
    # A single streamed step: the counter moves, the weights do not.
    s0 = trainer.init(jax.random.key(0))
    s1, value = trainer.step(s0, (bad[0][:B], y[:B], rows[:B]))
    assert not np.isfinite(float(value)) and int(s1.step) == 1 and int(s1.skipped) == 1
    np.testing.assert_array_equal(s1.w, s0.w)


def test_progress_is_called_once_per_epoch_not_per_step(data):
    calls = []
    trainer = _trainer(data, progress=lambda step, record: calls.append(int(step)))
    jax.block_until_ready(jax.jit(trainer)(jax.random.key(5)))
    jax.effects_barrier()
    assert calls == [4, 8, 12]
    calls.clear()
    state, _ = trainer.run(trainer.init(jax.random.key(5)), 7)
    jax.effects_barrier()
    assert calls == [7]


def test_seeds_under_vmap_match_single_runs(data):
    trainer = _trainer(data)
    keys = jax.random.split(jax.random.key(6), 3)
    states, _ = jax.jit(jax.vmap(trainer))(keys)
    for i in range(3):
        alone, _ = trainer(keys[i])
        np.testing.assert_allclose(states.w[i], alone.w, rtol=1e-5, atol=1e-6)
    assert trainer.compilations()["step"] == 0  # whole runs never call the step program


def test_bad_arguments(data):
    with pytest.raises(ValueError, match="batch_size=30 exceeds the 24"):
        loop.Trainer(_recipe(), data, data, config=None, batch_size=30, num_epochs=1)
    trainer = _trainer(data)
    with pytest.raises(TypeError, match="state must be"):
        trainer.run({"step": 0}, 1)
    with pytest.raises(ValueError, match="num_steps must be >= 0"):
        trainer.run(trainer.init(jax.random.key(0)), -1)
    with pytest.raises(TypeError, match="state must be a TrainState; got tuple"):
        trainer.run((jnp.zeros((), jnp.int32),), 1)
    with pytest.raises(ValueError, match="num_epochs must be >= 1"):
        trainer.run_epochs(trainer.init(jax.random.key(0)), 0)


def test_run_epochs_takes_whole_epochs_and_records_each(data):
    trainer = _trainer(data)
    state, (losses, _) = trainer.run_epochs(trainer.init(jax.random.key(2)), 2)
    assert int(state.step) == 8 and losses.shape == (2,)
    np.testing.assert_array_equal(state.seen, 2)


def test_mean_over_finite_steps_by_hand():
    ok = jnp.array([True, False, True, True])
    metrics = {
        "loss": jnp.array([1.0, jnp.nan, 3.0, 5.0]),
        "pair": jnp.array([[1.0, 2.0], [jnp.nan, jnp.inf], [3.0, 4.0], [5.0, 9.0]]),
    }
    got = loop_src._mean_where(ok, metrics)
    np.testing.assert_allclose(got["loss"], 3.0)
    np.testing.assert_allclose(got["pair"], [3.0, 5.0])
    assert np.isnan(loop_src._mean_where(jnp.zeros(4, bool), metrics)["loss"])


def test_a_checkpoint_extends_into_a_trainer_planned_longer(data, tmp_path):
    """``run`` stops at total_steps; restoring into a longer trainer continues the run."""
    short, long = _trainer(data, num_epochs=2), _trainer(data, num_epochs=5)
    done, _ = short.run(short.init(jax.random.key(4)), short.total_steps)
    short.save(tmp_path / "ckpt", done)
    extended, _ = long.run(long.restore(tmp_path / "ckpt"), long.total_steps - 8)
    straight, _ = long.run(long.init(jax.random.key(4)), long.total_steps)
    np.testing.assert_array_equal(extended.w, straight.w)
    np.testing.assert_array_equal(extended.seen, np.full(N, 5, np.int32))


def test_a_step_that_reads_the_planned_length_refuses_extension_and_says_why(data, tmp_path):
    recipe = dataclasses.replace(_recipe(), fixed_length="the schedule ramps over total_steps")
    build = lambda epochs: loop.Trainer(
        recipe, data, data, config=None, batch_size=B, num_epochs=epochs
    )
    short = build(2)
    short.save(tmp_path / "ckpt", short.init(jax.random.key(0)))
    with pytest.raises(ValueError, match=r"num_epochs: checkpoint 2, here 5 \(the schedule"):
        build(5).restore(tmp_path / "ckpt")
