"""The leak study of ``benchmarks/almmta_leakstudy.py``: its worlds, its ceiling row, its tests."""

import dataclasses
import types

import numpy as np
import pytest
from scipy.stats import ttest_rel

from almmta_jax import ModelConfig
from almmta_jax.simulate import SimConfig, sim_to_batch, simulate_cdp
from benchmarks import almmta_leakstudy as ls
from tests.test_confounded_ceiling import TINY, _reference


def test_the_four_worlds_differ_only_in_the_two_switches():
    base = SimConfig.preset("default", n_users=300, n_items=50, max_len=4)
    worlds = ls.study_worlds(base)
    switches = {(c.outcome_leak, c.confounder_alignment) for c in worlds.values()}
    assert switches == {(0.0, 1.0), (ls.LEAK, 1.0), (0.0, 0.0), (ls.LEAK, 0.0)}
    assert len(worlds) == 4
    for label, cfg in worlds.items():
        assert ("no leak" in label) == (cfg.outcome_leak == 0.0)
        assert label.endswith(f"rho={cfg.confounder_alignment:g}")
        same = dataclasses.replace(cfg, outcome_leak=0.0, confounder_alignment=1.0)
        assert same == base  # nothing else moved
    assert worlds["no leak, rho=1"] == base
    # Defaults stay the old world and the old model.
    assert (SimConfig().outcome_leak, SimConfig().confounder_alignment) == (0.0, 1.0)
    assert ModelConfig(vocab_sizes=(3,), d_x=1, max_len=2).post_outcome_fields == ()


def test_the_leak_worlds_log_a_fifth_column_and_the_others_do_not():
    base = SimConfig.preset("unit_test", n_users=200, n_rct=20, n_items=40, max_len=4)
    for label, cfg in ls.study_worlds(base).items():
        sim = simulate_cdp(cfg, seed=1)
        cols = sim_to_batch(sim, "all").touch_ids.shape[-1]
        assert cols == (5 if cfg.outcome_leak else 4), label
        assert sim.leak.any() == bool(cfg.outcome_leak), label


def test_the_ceiling_row_scores_the_slow_reference_on_eval_and_randomized_rows(monkeypatch):
    cfg = dataclasses.replace(TINY, confounder_alignment=0.0)
    sim = simulate_cdp(cfg, seed=3)
    world = types.SimpleNamespace(
        sim=sim, sim_cfg=cfg, eval_rows=np.array([3, 11]), rct_rows=np.array([44])
    )
    monkeypatch.setattr(ls, "CEILING_QUADRATURE", dict(w_grid=81, laguerre_nodes=160))
    u, p, u_rct, extra = ls._StudyMethods(ls.STUDY).run(ls.CEILING, world, seed=0)
    assert extra == {} and u.shape == (2, 3) and u_rct.shape == (1, 3)
    for got_u, got_p, row in [(u[0], p[0], 3), (u[1], p[1], 11), (u_rct[0], None, 44)]:
        ref_p, ref_d = _reference(sim, cfg, row)
        np.testing.assert_allclose(got_u, ref_d, atol=1e-7)
        if got_p is not None:
            np.testing.assert_allclose(got_p, ref_p, atol=1e-6)  # stored as float32


def test_paired_tests_are_alm_mta_minus_the_ablation():
    rng = np.random.default_rng(0)
    per_seed = [
        {m: {k: float(rng.random()) for k in ls.TESTED} for m in ls.METHODS} for _ in range(5)
    ]
    tests = ls.paired_tests(per_seed)
    assert len(tests) == len(ls.COMPARISONS) * len(ls.TESTED)
    t = next(t for t in tests if t["b"] == "alm_mta_lambda0" and t["metric"] == "auc")
    a = np.array([r["alm_mta"]["auc"] for r in per_seed])
    b = np.array([r["alm_mta_lambda0"]["auc"] for r in per_seed])
    assert t["gain"] == pytest.approx((a - b).mean())
    assert t["p_value"] == pytest.approx(ttest_rel(a, b).pvalue)
    assert t["ci_low"] < t["gain"] < t["ci_high"]
