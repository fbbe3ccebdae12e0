"""Plumbing of the DRGrad benchmarks: the RESULTS.md span, the paired t-test, paired timing."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.stats

pytest.importorskip("scipy")
from benchmarks import drgrad_census  # noqa: E402


def test_results_md_replaces_only_the_drgrad_span(tmp_path):
    path = tmp_path / "RESULTS.md"
    drgrad_census.write_results_md("first table", path)
    assert "first table" in path.read_text()
    other = "<!-- almmta:begin -->\nALM table kept\n<!-- almmta:end -->"
    path.write_text(path.read_text() + "\n" + other + "\n")
    drgrad_census.write_results_md("second table", path)
    text = path.read_text()
    assert "second table" in text and "first table" not in text
    assert "ALM table kept" in text
    assert text.count(drgrad_census.BEGIN) == 1 and text.count(drgrad_census.END) == 1


def test_results_md_appends_to_a_file_without_markers(tmp_path):
    path = tmp_path / "RESULTS.md"
    path.write_text("# existing\nkeep me\n")
    drgrad_census.write_results_md("table", path)
    text = path.read_text()
    assert text.startswith("# existing\nkeep me\n") and "table" in text


def test_paired_t_matches_numpy_formula():
    rng = np.random.default_rng(0)
    a = rng.normal(0.95, 0.01, (6, 2))
    b = a + rng.normal(-0.002, 0.003, (6, 2))
    got = drgrad_census.paired({"test_auc_per_seed": a}, {"test_auc_per_seed": b}, task=0)
    diff = a[:, 0] - b[:, 0]
    t = diff.mean() / (diff.std(ddof=1) / np.sqrt(len(diff)))
    assert got["t"] == pytest.approx(t, rel=1e-9)
    assert got["mean_diff"] == pytest.approx(diff.mean())
    # Two-sided p-value of Student's t with n - 1 degrees of freedom.
    assert got["p_value"] == pytest.approx(2 * scipy.stats.t.sf(abs(t), df=5), rel=1e-6)
    assert got["n"] == 6


def test_from_json_rerenders_only_a_full_run(tmp_path):
    import json

    import pytest

    md = tmp_path / "RESULTS.md"
    full = tmp_path / "full.json"
    full.write_text(json.dumps({"quick": False, "markdown": "| full table |"}))
    drgrad_census.main(["--from-json", str(full), "--results", str(md)])
    assert "| full table |" in md.read_text()
    quick = tmp_path / "quick.json"
    quick.write_text(json.dumps({"quick": True, "markdown": "| quick |"}))
    with pytest.raises(ValueError, match="quick-mode run"):
        drgrad_census.main(["--from-json", str(quick), "--results", str(md)])
    assert "| quick |" not in md.read_text()


def test_cached_run_reuses_a_row_only_with_the_same_settings(tmp_path, monkeypatch):
    calls = []

    def fake_run(method, d, **kw):
        calls.append(kw["lrs"])
        return {"task1_auc_mean": 0.5 + len(calls)}

    monkeypatch.setattr(drgrad_census, "run_method", fake_run)
    row = drgrad_census.Method("MMoE", None)
    kw = dict(seeds=2, epochs=1, batch_size=8, lrs=(1e-3,))
    first = drgrad_census.cached_run(row, None, kw, tmp_path, "split A")
    again = drgrad_census.cached_run(row, None, kw, tmp_path, "split A")
    assert first == again and len(calls) == 1
    drgrad_census.cached_run(row, None, {**kw, "lrs": (3e-3,)}, tmp_path, "split A")
    drgrad_census.cached_run(row, None, kw, tmp_path, "split B")
    assert len(calls) == 3


def test_paired_timing_cancels_machine_drift(monkeypatch):
    """Each step timed next to a plain step: a machine slowing 3x mid-run leaves the ratios right."""
    from benchmarks import _common

    clock = {"now": 0.0}

    class FakeTime:
        @staticmethod
        def perf_counter():
            return clock["now"]

    def step(cost):
        def run(*args):
            # The machine slows down as the run goes on: 1x at the start, 3x later.
            clock["now"] += cost * (1.0 + 2.0 * min(clock["now"] / 50.0, 1.0))
            return args

        return run

    monkeypatch.setattr(_common, "time", FakeTime)
    steps = {"plain": (step(1.0), ()), "a": (step(1.1), ()), "b": (step(2.0), ())}
    recs = _common.time_paired(steps, rounds=6)
    assert "pair_ratios" not in recs["plain"] and len(recs["plain"]["times_s"]) == 12
    for name, want in (("a", 1.1), ("b", 2.0)):
        assert len(recs[name]["pair_ratios"]) == 6
        # The drift within one pair is tiny next to the drift over the run ...
        assert _common.summarize_paired(recs[name])["ratio"] == pytest.approx(want, rel=0.05)
    # ... while the ratio of minima compares calls made at different machine speeds.
    minima = (
        _common.summarize_paired(recs["b"])["min_s"]
        / _common.summarize_paired(recs["plain"])["min_s"]
    )
    assert abs(minima - 2.0) > 0.1


def test_mtl_speed_table_from_json(tmp_path, monkeypatch):
    """A saved full run re-renders into its own RESULTS.md span, one row per method."""
    import json

    from benchmarks import _common, mtl_speed

    ratios = {"floor_K2": 1.8, "floor_K4": 3.1}
    for name in ("mgda", "pcgrad"):
        for k in (2, 4):
            ratios[f"{name}_K{k}_params"] = ratios[f"floor_K{k}"] + 0.1
            ratios[f"{name}_K{k}_rep"] = 1.01 + k / 100
    payload = {
        "ratios": ratios,
        "tasks": [2, 4],
        "batch": 2048,
        "backend": "cpu",
        "pairs_per_step": 12,
        "median_step_s": {"plain_K2": 0.2, "plain_K4": 0.25},
        "targets_met": True,
    }
    path, results = tmp_path / "run.json", tmp_path / "RESULTS.md"
    path.write_text(json.dumps(payload))
    monkeypatch.setattr(_common, "RESULTS_MD", results)
    mtl_speed.main(["--from-json", str(path)])
    text = results.read_text()
    assert (
        "| mgda | 1.90 | 1.03 | 3.20 | 1.05 |" in text and "| floor | 1.80 | – | 3.10 | – |" in text
    )
    assert text.count("<!-- mtl-speed:begin -->") == 1
    assert "Missed" not in text
    # A representation-level ratio above 1.2 and a parameter-level one above 1.1 x floor.
    ratios["pcgrad_K4_rep"], ratios["mgda_K2_params"] = 1.25, 1.99
    assert mtl_speed.missed(payload) == [("mgda_K2_params", 1.99), ("pcgrad_K4_rep", 1.25)]
    ratios["mgda_K2_params"] = 1.98  # = 1.1 x the floor 1.80: met
    assert mtl_speed.missed(payload) == [("pcgrad_K4_rep", 1.25)]


def test_mtl_speed_rep_rows_cut_at_the_models_shared_representation():
    """The representation-level steps use ``MMoE.trunk``: summing there is the plain step."""
    import jax

    from benchmarks import mtl_speed

    _, steps = mtl_speed.build(2, 16, ["linear_scalarization", "pcgrad"])
    (plain, plain_args), (summed, summed_args) = steps["plain"], steps["linear_scalarization_rep"]
    want, got = plain(*plain_args)[0], summed(*summed_args)[0]
    # One Adam step (lr 1e-3): agreement to 1% of a step, since Adam rescales near-zero gradients.
    for a, b in zip(jax.tree.leaves(want), jax.tree.leaves(got)):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)
    pcgrad, pcgrad_args = steps["pcgrad_rep"]
    assert all(np.all(np.isfinite(x)) for x in jax.tree.leaves(pcgrad(*pcgrad_args)[0]))


def test_drgrad_speed_activation_step_routes_at_the_drgrad_split():
    """The activation-space step cuts where DRGrad's tower roles are (v1 / v_s) and steps."""
    from benchmarks import drgrad_speed

    _, steps = drgrad_speed.build(8)
    fn, (params, state) = steps["drgrad_activations"]
    new, _ = fn(params, state)
    leaves = jax.tree.leaves(jax.tree.map(lambda a, b: jnp.any(a != b), params, new))
    assert all(bool(jnp.all(jnp.isfinite(x))) for x in jax.tree.leaves(new))
    assert any(bool(x) for x in leaves)  # the step moved the parameters
