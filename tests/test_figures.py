"""The RESULTS.md render paths: narrowed tables, a reading line under each, small figures.

Every payload here is made up (no training): the render paths must work from a saved
run alone, draw the PNGs the section links beside the RESULTS.md they write, and keep
those PNGs small enough to commit.
"""

import json
import re

import numpy as np
import pytest

pytest.importorskip("scipy")
pytest.importorskip("matplotlib")
import scipy.stats  # noqa: E402

from benchmarks import (  # noqa: E402
    almmta_criteo,
    almmta_simulator,
    drgrad_census,
    drgrad_synthetic,
    drgrad_traces,
)

PNG = b"\x89PNG\r\n\x1a\n"
MAX_PNG_BYTES = 60_000


def _is_small_png(path) -> bool:
    data = path.read_bytes()
    return data.startswith(PNG) and len(data) < MAX_PNG_BYTES


def _header(markdown: str) -> list[str]:
    """The column names of the first table of ``markdown``."""
    line = next(ln for ln in markdown.splitlines() if ln.startswith("| "))
    return [c.strip() for c in line.strip("|").split("|")]


def _line_after_table(markdown: str) -> str:
    """The first non-blank line after the first table of ``markdown``."""
    lines = markdown.splitlines()
    start = next(i for i, ln in enumerate(lines) if ln.startswith("| "))
    end = next(i for i in range(start, len(lines)) if not lines[i].startswith("|"))
    return next(ln for ln in lines[end:] if ln.strip())


# ----------------------------------------------------------------------------- Census


def _census_row(rng, mean, seeds=5):
    auc = np.stack([rng.normal(mean, 0.001, seeds), rng.normal(0.994, 0.0001, seeds)], 1)
    return {
        "test_auc_per_seed": auc.tolist(),
        "task1_auc_mean": float(auc[:, 0].mean()),
        "task1_auc_std": float(auc[:, 0].std()),
        "task2_auc_mean": float(auc[:, 1].mean()),
        "task2_auc_std": float(auc[:, 1].std()),
        "num_params": 40_000,
        "lr": 0.003,
    }


def _census_payload(rng):
    names = ("SharedBottom", "MMoE", "PCGrad", "DRGrad (paper mode)")
    results = {n: _census_row(rng, 0.944 + 0.0005 * i) for i, n in enumerate(names)}
    payload = {
        "quick": False,
        "results": results,
        "paired_tests": {
            "DRGrad (paper mode) vs MMoE": drgrad_census.paired(
                results["DRGrad (paper mode)"], results["MMoE"]
            )
        },
        "header": "### DRGrad Table 3\n\nSplit: made up.",
        "markdown": "unused when results are present",
    }
    return payload


def test_forest_rows_are_the_paired_t_intervals():
    rng = np.random.default_rng(0)
    results = _census_payload(rng)["results"]
    rows = {name: (m, lo, hi) for name, m, lo, hi in drgrad_census.forest_rows(results, "MMoE")}
    assert set(rows) == {"SharedBottom", "PCGrad", "DRGrad (paper mode)"}
    ref = np.asarray(results["MMoE"]["test_auc_per_seed"])[:, 0]
    for name, (mean, lo, hi) in rows.items():
        d = np.asarray(results[name]["test_auc_per_seed"])[:, 0] - ref
        # The interval excludes 0 exactly when the paired two-sided t-test has p < 0.05.
        p = scipy.stats.ttest_rel(d + ref, ref).pvalue
        assert mean == pytest.approx(d.mean())
        assert (lo > 0 or hi < 0) == (p < 0.05)
        half = scipy.stats.t.ppf(0.975, len(d) - 1) * d.std(ddof=1) / np.sqrt(len(d))
        assert (lo, hi) == pytest.approx((d.mean() - half, d.mean() + half))


def test_census_from_json_writes_narrow_table_reading_and_figures(tmp_path):
    path, md = tmp_path / "run.json", tmp_path / "bench" / "RESULTS.md"
    path.write_text(json.dumps(_census_payload(np.random.default_rng(1))))
    drgrad_census.main(["--from-json", str(path), "--results", str(md)])
    text = md.read_text()
    assert _header(text) == ["Method", "params", "income AUC", "marital AUC", "income − MMoE [95% CI]", "marital − MMoE [95% CI]", "paper (income / marital)"]  # fmt: skip
    assert re.search(r"\| PCGrad \|[^\n]*\| [+-]0\.\d{4} \[[+-]0\.\d{4}, [+-]0\.\d{4}\] \|", text)
    reading = _line_after_table(text)
    assert reading.startswith("*Reading:*") and "income AUC" in reading
    assert "income AUC minus MMoE's on the same seeds" in text  # the forest's reference
    assert "](figures/drgrad_census_forest.png)" in text
    assert _is_small_png(md.parent / "figures" / "drgrad_census_forest.png")


def test_census_rows_keep_the_table_order_after_a_json_round_trip(tmp_path):
    payload = json.loads(json.dumps(_census_payload(np.random.default_rng(6)), sort_keys=True))
    assert list(payload["results"])[0] == "DRGrad (paper mode)"  # sorted by the round trip
    text = drgrad_census.render(payload, tmp_path / "RESULTS.md")
    names = re.findall(r"^\| ([^|]+?) \| \d+ \|", text, re.M)
    assert names == ["SharedBottom", "MMoE", "PCGrad", "DRGrad (paper mode)"]


def test_census_forest_reference_is_the_best_baseline_without_mmoe(tmp_path):
    """The gradient traces are drgrad_traces' section: the Census section links none."""
    payload = _census_payload(np.random.default_rng(2))
    del payload["results"]["MMoE"]  # the best baseline is then the forest's reference
    text = drgrad_census.render(payload, tmp_path / "RESULTS.md")
    assert "drgrad_census_forest.png" in text and "traces" not in text
    assert not (tmp_path / "figures" / "drgrad_census_traces.png").exists()
    baselines = {n: r["task1_auc_mean"] for n, r in payload["results"].items() if "DRGrad" not in n}
    assert drgrad_census.reference_row(payload["results"]) == max(baselines, key=baselines.get)


def test_census_payload_saved_without_a_header_keeps_the_header_of_its_markdown(tmp_path):
    """Runs saved before the payload kept its header: the header is the markdown's first part."""
    payload = _census_payload(np.random.default_rng(5))
    header = payload.pop("header")
    payload["markdown"] = f"{header}\n\n| Method | params | lr | income AUC (ours) |\n|---|"
    text = drgrad_census.render(payload, tmp_path / "RESULTS.md")
    assert text.startswith(header + "\n\n| Method | params | income AUC |")


# -------------------------------------------------------------------------- simulator


def _sim_record(rng, seeds=3):
    per_seed = {m: rng.uniform(0.3, 0.9, seeds).tolist() for m in almmta_simulator.SCALARS}
    rec = {m: float(np.mean(v)) for m, v in per_seed.items()}
    rec |= {f"{m}_std": float(np.std(v, ddof=1)) for m, v in per_seed.items()}
    return rec | {"per_seed": per_seed, "buckets_scored": 2}


def _sim_payload(rng, curves=True):
    names = (almmta_simulator.TRUTH, "alm_mta", "dml")
    worlds = {
        "default": {n: _sim_record(rng) for n in names},
        "gamma_TY=1": {n: _sim_record(rng) for n in names},
    }
    payload = {
        "mode": "medium",
        "sizes": {"n_users": 8000, "n_items": 400},  # sorted as a JSON round trip leaves them
        "seeds": 3,
        "wall_seconds": 600.0,
        "worlds": worlds,
    }
    if curves:
        x = np.linspace(0, 1, 11).tolist()
        bucket = {"auuc": 0.8, "x": x, "gain": np.sqrt(x).tolist(), "oracle": x}
        payload["uplift_curves"] = {n: [bucket, None, bucket] for n in names}
    return payload


def test_simulator_render_writes_narrow_tables_readings_and_figures(tmp_path):
    md, path = tmp_path / "RESULTS.md", tmp_path / "run.json"
    path.write_text(json.dumps(_sim_payload(np.random.default_rng(3))))
    almmta_simulator.main(["--render", str(path), "--results", str(md)])
    text = md.read_text()
    assert "Mode: medium" in text
    assert "world: {'n_users': 8000, 'n_items': 400}" in text  # Sizes field order, not sorted
    main = [h for _, h in re.findall(r"### World `([^`]+)`\n\n(\| .*)", text)]
    assert len(main) == 2 and all(
        h
        == "| method | AUC | avg grouped AUUC | truth Spearman | pooled truth Spearman | truth RMSE "
        "| cluster-effect Spearman |"
        for h in main
    )
    assert text.count("<details>") == text.count("</details>") == 2
    assert text.count("| method | gAUC | RCT grouped AUUC |") == 2  # the other columns kept
    for world in ("default", "gamma_TY=1"):
        section = text.split(f"### World `{world}`")[1]
        assert _line_after_table(section).startswith("*Reading:* among the trained methods")
    for name in ("almmta_uplift_curves.png", "almmta_simulator_seeds.png"):
        assert f"](figures/{name})" in text
        assert _is_small_png(tmp_path / "figures" / name), name


def test_simulator_payload_without_curves_links_no_curve_figure(tmp_path):
    payload = _sim_payload(np.random.default_rng(4), curves=False)
    text = almmta_simulator.render(payload, tmp_path / "RESULTS.md")
    assert "almmta_uplift_curves.png" not in text and "almmta_simulator_seeds.png" in text


# ----------------------------------------------------------------------------- Criteo


def _by_conversion(auc_seen):
    return {
        "converted_in_train": {"auc": auc_seen, "journeys": 6338, "positives": 3490},
        "not_converted_in_train": {"auc": float("nan"), "journeys": 25575, "positives": 0},
    }


def test_criteo_table_is_narrow_with_a_reading_and_every_column_below(tmp_path):
    results = {
        name: {
            "auc": auc,
            "log_loss": 0.3,
            "avg_grouped_auuc": auuc,
            "gauc_users": 0.6,
            "cpa": [25.0, 21.0, 18.0, cpa],
            "buckets_scored": 1,
            "auc_by_train_conversion": _by_conversion(seen_auc),
        }
        for name, auc, auuc, cpa, seen_auc in (
            ("alm_mta", 0.70, 0.41, 14.9, 0.66),
            ("dml", 0.85, 0.73, 14.7, 0.61),
        )
    }
    refs = {
        "lr_campaign_time": {
            "auc": 0.84,
            "log_loss": 0.23,
            "auc_by_train_conversion": _by_conversion(0.77),
        },
        "user_converted_in_train": {
            "auc": 0.95,
            "log_loss": float("nan"),
            "auc_by_train_conversion": _by_conversion(0.5),
        },
    }
    md, path = tmp_path / "RESULTS.md", tmp_path / "run.json"
    payload = {"mode": "quick", "wall_seconds": 60.0, "sizes": {}, "results": results}
    path.write_text(json.dumps(dict(payload, references=refs)))
    almmta_criteo.main(["--render", str(path), "--results", str(md)])
    text = md.read_text().split("<!-- almmta-criteo:begin -->")[1]
    assert _header(text) == [
        "method",
        "AUC",
        "AUC, users converted in train",
        "log-loss",
        "avg grouped AUUC (buckets scored)",
        "CPA at 1/16 budget",
    ]
    assert "| dml | 0.8500 | 0.6100 | 0.3000 | 0.7300 (1) | 14.70 |" in text
    reading = _line_after_table(text)
    assert reading.startswith("*Reading:* dml predicts conversions best (AUC 0.8500)")
    assert "14.70 (dml) to 14.90 (alm_mta)" in reading
    assert "| user_converted_in_train | 0.9500 | 0.5000 | – |" in text
    assert "the other 25575 hold 0, so their AUC is undefined" in text
    # A run saved before the reference rows existed still renders.
    path.write_text(json.dumps(payload))
    almmta_criteo.main(["--render", str(path), "--results", str(md)])
    assert "user_converted_in_train" not in md.read_text()
    details = text.split("<details>")[1]
    assert "| alm_mta | 0.6000 | 25.00 | 21.00 | 18.00 | 14.90 | 0.9729 / – | – |" in details
    # A full run says how it trained and shows ALM-MTA's per-epoch trace.
    results["alm_mta"]["epoch_eval_auc"] = [0.85, 0.83, 0.964]
    sizes = {"train_journeys": None, "alm_epochs": 3, "baseline_epochs": 3, "user_lr_scale": 10.0}
    path.write_text(json.dumps(dict(payload, sizes=sizes, results=results)))
    almmta_criteo.main(["--render", str(path), "--results", str(md)])
    text = md.read_text()
    assert "Training: all 164,647 train journeys, ALM-MTA 3 epochs and the baselines 3" in text
    assert "the user-id tables at 10x that rate" in text
    assert "nothing is selected on it): alm_mta 0.850, 0.830, 0.964." in text
    # The leaky proxy-direct row is never read as the best predictor.
    leaky = dict(results, proxy_direct=dict(results["dml"], auc=1.0))
    line = almmta_criteo.reading(leaky)
    assert line.startswith("*Reading:* dml predicts conversions best (AUC 0.8500) (proxy_direct,")
    assert "scores 1.0000: the leak, not a prediction" in line


# ----------------------------------------------------------------------------- DRGrad traces


def _trace(rng, steps, cos_sign, mu_end, xi=True):
    """A made-up per-step trace whose cosine has the sign pattern ``cos_sign``."""
    return {
        "cos": cos_sign * rng.uniform(0.1, 0.4, steps),
        "ratio": np.exp(rng.normal(0.0, 0.5, steps)),
        "mu1": np.linspace(0.5, mu_end, steps),
        "xi_aux": (
            np.where(np.arange(steps) % 4 == 0, 1.0, -1.0) if xi else np.full(steps, np.nan)
        ),
    }


def test_trace_summary_counts_signs_and_reads_mu_after_s_updates():
    rng = np.random.default_rng(0)
    sign = np.where(np.arange(300) < 120, 1.0, -1.0)  # 40% of steps agree
    tr = _trace(rng, 300, sign, 1.0)
    got = drgrad_synthetic.trace_summary(tr)
    assert got["cos_nonneg"] == pytest.approx(0.4)
    assert got["xi_aux_nonneg"] == pytest.approx(0.25)  # every 4th step routes
    assert got["mean_abs_cos"] == pytest.approx(np.abs(tr["cos"]).mean())
    assert got["median_ratio"] == pytest.approx(np.median(tr["ratio"][150:]))
    # mu1[t] is read before update t, so the weight after 10 updates is mu1[10].
    assert got["mu1_after_10"] == tr["mu1"][10] and got["mu1_final"] == tr["mu1"][-1]
    assert "mu1_after_200" in got and "mu1_after_1000" not in got
    assert np.isnan(
        drgrad_synthetic.trace_summary(_trace(rng, 50, sign[:50], 0.5, xi=False))["xi_aux_nonneg"]
    )


def test_traces_from_json_writes_table_reading_and_figure(tmp_path):
    rng = np.random.default_rng(1)
    steps = 400
    runs = {
        "MMoE": [
            _trace(rng, steps, rng.choice([-1.0, 1.0], steps), 0.5, xi=False) for _ in range(2)
        ],
        "DRGrad (paper mode)": [_trace(rng, steps, np.ones(steps), 1.0) for _ in range(2)],
    }
    payload = {
        "data": "made up",
        "steps": steps,
        "seeds": 2,
        "lr": 0.003,
        "quick": False,
        "summaries": {n: [drgrad_synthetic.trace_summary(t) for t in r] for n, r in runs.items()},
        "series": {n: drgrad_traces.thin(r[0]) for n, r in runs.items()},
    }
    path, md = tmp_path / "run.json", tmp_path / "bench" / "RESULTS.md"
    path.write_text(json.dumps(payload))
    drgrad_traces.main(["--from-json", str(path), "--results", str(md)])
    text = md.read_text()
    assert _header(text)[:4] == [
        "method",
        "steps with cos ≥ 0",
        "mean abs cos",
        "steps with xi_aux ≥ 0",
    ]
    mmoe = next(ln for ln in text.splitlines() if ln.startswith("| MMoE"))
    assert mmoe.endswith("| – | – | – | – |")  # no split tower: no mu' column is filled
    reading = _line_after_table(text)
    # the linear mu' ramp 0.5 -> 1.0 over 400 steps passes 0.99 only after step 392: not in the
    # 1/10/20/200 columns, so the reading states the largest tabled value instead.
    assert reading == (
        "*Reading:* DRGrad routes task 2 into T1' on 25.0% of steps (xi_aux ≥ 0); "
        f"mu' stays at or below {0.5 + 0.5 * 200 / 399:.3f} over the traced steps."
    )
    assert _is_small_png(md.parent / "figures" / drgrad_traces.FIGURE)
    payload["quick"] = True
    path.write_text(json.dumps(payload))
    with pytest.raises(ValueError, match="a quick run"):
        drgrad_traces.main(["--from-json", str(path), "--results", str(md)])
