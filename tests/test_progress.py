"""Progress of long runs: the on/off rule, the tqdm bar fed per chunk, both trainers, host rows."""

import dataclasses
import functools
import io
import re

import jax
import optax
import pytest

import almmta_jax as am
import drgrad_jax as dj
from drgrad_jax import data, loop, models
from tests.almmta_tiny import tiny_model

ETA = re.compile(r"\d\d:\d\d<\d\d:\d\d")  # tqdm's [elapsed<remaining]


class _Stream(io.StringIO):
    def __init__(self, tty: bool):
        super().__init__()
        self.tty = tty

    def isatty(self):
        return self.tty


def _bar_states(text: str) -> list[str]:
    """Every state a tqdm bar drew (it rewrites its line after a carriage return)."""
    return [s.strip() for s in text.replace("\n", "\r").split("\r") if s.strip()]


# ----------------------------------------------------------------------------
# The on/off rule.
# ----------------------------------------------------------------------------


def test_progress_is_off_under_pytest_by_default(monkeypatch):
    monkeypatch.delenv("DRGRAD_PROGRESS", raising=False)
    assert loop.progress_enabled() is False
    assert loop.progress_enabled(file=_Stream(True)) is False  # even on a terminal
    assert loop.progress_enabled(True) is True


@pytest.mark.parametrize("tty", [True, False])
def test_progress_follows_the_terminal_outside_pytest(monkeypatch, tty):
    monkeypatch.delenv("PYTEST_CURRENT_TEST")
    monkeypatch.delenv("DRGRAD_PROGRESS", raising=False)
    monkeypatch.delitem(__import__("sys").modules, "ipykernel", raising=False)
    assert loop.progress_enabled(file=_Stream(tty)) is tty
    assert loop.progress_enabled(False, file=_Stream(True)) is False


@pytest.mark.parametrize("value, want", [("0", False), ("off", False), ("1", True), ("yes", True)])
def test_the_environment_variable_decides_the_default(monkeypatch, value, want):
    monkeypatch.setenv("DRGRAD_PROGRESS", value)
    assert loop.progress_enabled(file=_Stream(not want)) is want
    assert loop.progress_enabled(not want) is (not want)  # an explicit choice still wins


def test_a_bad_environment_value_says_what_is_expected(monkeypatch):
    monkeypatch.setenv("DRGRAD_PROGRESS", "maybe")
    with pytest.raises(ValueError, match=r"DRGRAD_PROGRESS='maybe': expected 1 .* or 0"):
        loop.progress_enabled()


# ----------------------------------------------------------------------------
# The bar.
# ----------------------------------------------------------------------------


def test_bar_counts_steps_from_its_first_chunk_and_closes_at_the_end():
    out = io.StringIO()
    bar = loop.ProgressBar(30, lambda loss: f"loss {loss:.2f}", name="toy", file=out)
    for step, loss in ((10, 0.9), (20, 0.7), (30, 0.5)):
        bar(step, loss)
    states = _bar_states(out.getvalue())
    assert states[0].startswith("toy:  33%") and "10/30" in states[0] and "loss 0.90" in states[0]
    assert "30/30" in states[-1] and "loss 0.50" in states[-1] and ETA.search(states[-1])
    assert out.getvalue().endswith("\n")  # closed: the next line starts clean


def test_bar_under_vmap_moves_once_per_step_and_restarts_for_a_new_run():
    out = io.StringIO()
    bar = loop.ProgressBar(20, lambda loss: f"loss {loss:.1f}", file=out)
    for step in (10, 20):
        for seed_loss in (1.0, 2.0):  # two seeds report the same step
            bar(step, seed_loss)
    states = _bar_states(out.getvalue())
    assert all(re.search(r"\b(10|20)/20\b", s) for s in states), states
    assert sum("20/20" in s for s in states) >= 1 and out.getvalue().count("\n") == 1
    bar(10, 3.0)  # a second run
    assert _bar_states(out.getvalue())[-1].startswith("train:  50%")
    assert out.getvalue().count("\n") == 1  # the new bar is open


# ----------------------------------------------------------------------------
# Both trainers.
# ----------------------------------------------------------------------------


def _drgrad_config(**kw):
    d = data.mmoe_synthetic(64, 32, 32, dim=4, num_sines=0, seed=0)
    model = functools.partial(
        models.MMoE, d.vocab_sizes, d.num_dense, d.num_tasks, num_experts=2, expert_hidden=(4,)
    )
    return dj.TrainConfig(model, optax.adam(1e-2), batch_size=16, num_epochs=3, **kw), d


def test_drgrad_trainer_shows_steps_loss_auc_and_eta_per_epoch(capsys):
    config, d = _drgrad_config(progress=True, name="drgrad")
    jax.jit(dj.make_train(config, d))(jax.random.key(0))
    jax.effects_barrier()
    captured = capsys.readouterr()
    states = _bar_states(captured.err)
    assert captured.out == ""  # the bar is on standard error only
    assert [re.search(r"(\d+)/12", s).group(1) for s in states] == ["4", "8", "12", "12"], states
    assert all(re.search(r"loss \d\.\d{4} \d\.\d{4} val AUC \d\.\d{4}", s) for s in states)
    assert ETA.search(states[-1]) and "step/s" in states[-1]


def test_drgrad_step_wise_runs_report_per_run_call(capsys):
    config, d = _drgrad_config(progress=True, log_every=1)
    trainer = dj.make_train(config, d)
    state = trainer.init(jax.random.key(0))
    for _ in range(3):
        state, _ = trainer.run(state, 4)
    jax.effects_barrier()
    captured = capsys.readouterr()
    states = _bar_states(captured.err)
    assert [re.search(r"(\d+)/12", s).group(1) for s in states] == ["4", "8", "12", "12"], states
    assert all(re.search(r"loss \d\.\d{4} \d\.\d{4}\]", s) for s in states), states
    assert captured.out == ""  # run chunks have no evaluation line to print


def test_almmta_trainer_shows_losses_and_auc_per_epoch(capsys):
    config = am.TrainConfig(
        tiny_model(), batch_size=4, num_epochs=2, queue_size=8, eval_size=8, progress=True
    )
    journeys = am.testing.random_journeys(jax.random.key(0), 8, config.model)
    jax.jit(am.make_train(config, journeys))(jax.random.key(1))
    jax.effects_barrier()
    states = _bar_states(capsys.readouterr().err)
    assert [re.search(r"(\d)/4", s).group(1) for s in states] == ["2", "4", "4"], states
    assert all(re.search(r"L_y \d\.\d{4} L_adv \d\.\d{4} AUC \d\.\d{4}", s) for s in states)


def test_tests_stay_quiet_by_default(capsys):
    config, d = _drgrad_config()
    jax.jit(dj.make_train(config, d))(jax.random.key(0))
    am_config = am.TrainConfig(tiny_model(), batch_size=4, num_epochs=1, queue_size=8)
    journeys = am.testing.random_journeys(jax.random.key(0), 8, am_config.model)
    jax.jit(am.make_train(am_config, journeys))(jax.random.key(1))
    jax.effects_barrier()
    captured = capsys.readouterr()
    assert captured.out == "" and captured.err == ""


# ----------------------------------------------------------------------------
# Rows of a host loop (benchmarks).
# ----------------------------------------------------------------------------


def test_rows_show_i_of_n_on_stderr_and_keep_stdout_a_table(capsys):
    for name in loop.progress_rows(["a", "b", "c"], desc="methods", enabled=True):
        print(f"| {name} |")
    captured = capsys.readouterr()
    assert captured.out == "| a |\n| b |\n| c |\n"
    states = _bar_states(captured.err)
    assert states[0].startswith("methods:   0%") and "0/3" in states[0]
    assert "3/3" in states[-1] and ETA.search(states[-1])


def test_rows_are_quiet_by_default_in_tests(capsys):
    assert list(loop.progress_rows(range(3), desc="rows")) == [0, 1, 2]
    assert capsys.readouterr().err == ""


def test_progress_is_not_part_of_the_checkpoint_signature():
    config = am.TrainConfig(tiny_model(), batch_size=4, num_epochs=1, queue_size=8)
    journeys = am.testing.random_journeys(jax.random.key(0), 8, config.model)
    signatures = [
        am.make_train(dataclasses.replace(config, progress=p), journeys).recipe.signature
        for p in (None, True, False)
    ]
    assert signatures[0] == signatures[1] == signatures[2]
    base = am.BaselineConfig((7, 3), d_x=3, max_len=5, batch_size=4, num_epochs=1, hidden=8)
    signatures = [
        am.make_baseline_train(
            lambda r: am.LogisticMTA(base, rngs=r), dataclasses.replace(base, progress=p), journeys
        ).recipe.signature
        for p in (None, True)
    ]
    assert signatures[0] == signatures[1]
