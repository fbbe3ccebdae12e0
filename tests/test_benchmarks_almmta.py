"""Plumbing of the ALM-MTA truth benchmark: its RESULTS.md span and the line read from it."""

import re

import numpy as np
import pytest

pytest.importorskip("scipy")
from benchmarks import almmta_truth  # noqa: E402

MAIN_HEADER = (
    "| setting | Spearman ipw_simple | Spearman explicit top-8 | pooled Spearman ipw_simple | "
    "RMSE ipw_simple | outcome AUC | adversary AUC |"
)
DETAILS = (
    "<details><summary>Hyperparameters (λ_max, β, proxy on negatives, balancer), "
    "explicit over the whole pool and explicit top-8's pooled Spearman and RMSE</summary>"
)


def _seed(ipw, top8, all_=None, auc=0.95, adv=0.6):
    reading = lambda rho: {
        "spearman": rho,
        "pooled_spearman": rho / 2,
        "rmse": 0.05,
        "mean_abs_uplift": 0.01,
    }
    rec = {
        "ipw_simple": reading(ipw),
        "explicit_top8": reading(top8),
        "test": {"outcome_auc": auc, "adversary_auc": adv, "proxy_auc": 0.7},
        "finite": True,
    }
    if all_ is not None:
        rec["explicit_all"] = reading(all_)
    return rec


def _payload():
    settings = {
        "default / full": (almmta_truth.Setting("default / full", 0.3, 0.1, False), 0.60, 0.50),
        "default / ablation": (
            almmta_truth.Setting("default / ablation", 0.0, 0.0, False),
            0.70,
            0.58,
        ),
        "leak / full": (
            almmta_truth.Setting("leak / full", 0.3, 0.1, True, score_all=False),
            0.65,
            0.62,
        ),
    }
    results = {}
    for name, (setting, ipw, top8) in settings.items():
        per_seed = [
            _seed(ipw + d, top8 - d, top8 if setting.score_all else None) for d in (-0.01, 0.01)
        ]
        results[name] = {
            "setting": setting._asdict(),
            "summary": almmta_truth.summarize(per_seed),
            "per_seed": per_seed,
        }
    payload = dict(
        results=results, quick=True, study=False, seed=0, seeds=2, epochs=1, batch_size=8,
        pool_size=16, train_journeys=64, scored_journeys=32, d_model=8, num_layers=1,
    )  # fmt: skip
    payload["answers"] = almmta_truth.answers(results)
    return payload


def test_main_table_is_narrow_and_the_rest_sits_in_a_details_block():
    text = almmta_truth.results_section(_payload())
    lines = text.splitlines()
    main = lines.index(MAIN_HEADER)
    assert lines[main + 1] == "|---|---|---|---|---|---|---|"
    assert lines[main + 2] == (
        "| default / full | 0.600 ± 0.010 | 0.500 ± 0.010 | 0.300 ± 0.005 | 0.0500 ± 0.0000 "
        "| 0.950 ± 0.000 | 0.600 ± 0.000 |"
    )
    opened, closed = lines.index(DETAILS), lines.index("</details>")
    assert main < opened < closed < lines.index("### Measured answers")
    detail = lines[opened + 2 : closed - 1]
    assert detail[0] == (
        "| setting | λ_max | β | proxy on negatives | balancer | Spearman explicit all | "
        "pooled Spearman explicit top-8 | RMSE explicit top-8 |"
    )
    assert detail[2] == (
        "| default / full | 0.3 | 0.1 | no | none | 0.500 ± 0.000 | 0.250 ± 0.005 | 0.0500 ± 0.0000 |"
    )
    assert detail[4].startswith("| leak / full | 0.3 | 0.1 | yes | none | – | ")
    # No hyperparameter column is left in the main table.
    assert "λ_max" not in "\n".join(lines[main:opened])


def test_a_run_saved_before_the_level_scores_renders_them_as_missing():
    payload = _payload()
    for res in payload["results"].values():
        for key in [k for k in res["summary"] if "pooled" in k]:
            del res["summary"][key]
    lines = almmta_truth.results_section(payload).splitlines()
    row = lines[lines.index(MAIN_HEADER) + 2].split(" | ")
    assert row[3] == "–" and row[4] == "0.0500 ± 0.0000"


def test_truth_scores_see_what_per_journey_spearman_cannot():
    """Each journey shifted by its own amount: per-journey Spearman 1, the level scores not."""
    rng = np.random.default_rng(0)
    truth = rng.uniform(0.0, 0.1, (40, 5))
    mask = np.ones(truth.shape, bool)
    mask[0, 3:] = False
    est = truth + rng.uniform(-0.3, 0.3, (40, 1))
    got = almmta_truth._score(est, truth, mask)
    assert got["spearman"] == pytest.approx(1.0) and got["journeys_scored"] == 40
    assert got["pooled_spearman"] < 0.5 and got["rmse"] > 0.05
    d = est - truth
    assert got["rmse"] == pytest.approx(np.sqrt(np.mean(d[mask] ** 2)))


def test_reading_is_computed_from_the_numbers():
    payload = _payload()
    line = next(
        ln
        for ln in almmta_truth.results_section(payload).splitlines()
        if ln.startswith("*Reading:*")
    )
    assert "default / ablation leads on Spearman ipw_simple (0.700)" in line
    assert "leak / full leads on Spearman explicit top-8 (0.620)" in line
    assert "full method minus the ablation is ipw_simple -0.100, explicit top-8 -0.080" in line
    # Another world, another line: nothing in it is fixed prose about a winner.
    full = payload["results"]["default / full"]["summary"]
    full["ipw_simple_spearman"]["mean"] = 0.9
    line = almmta_truth.reading(payload["results"])
    assert "default / full leads on Spearman ipw_simple (0.900)" in line
    assert re.search(r"ipw_simple \+0\.200", line)
    # Without both default rows the difference is left out, not guessed.
    del payload["results"]["default / ablation"]
    assert "minus" not in almmta_truth.reading(payload["results"])


def test_the_span_replaces_only_its_own_markers(tmp_path):
    path = tmp_path / "RESULTS.md"
    path.write_text("# Benchmark results\n\n<!-- drgrad:begin -->\nkept\n<!-- drgrad:end -->\n")
    almmta_truth.write_results_section(almmta_truth.results_section(_payload()), path)
    almmta_truth.write_results_section(almmta_truth.results_section(_payload()), path)
    text = path.read_text()
    assert text.count(almmta_truth.BEGIN) == 1 and text.count(MAIN_HEADER) == 1
    assert "<!-- drgrad:begin -->\nkept\n<!-- drgrad:end -->" in text


# ------------------------------------------- simulator: per-bucket grouped AUUC gains


def _world(per_bucket: dict) -> dict:
    """Aggregated records holding only each method's per-seed per-bucket AUUCs."""
    return {m: {"per_seed": {"grouped_auuc_per_bucket": v}} for m, v in per_bucket.items()}


def _ref_gain(x, y):
    """Mean paired difference, 95 % t interval and two-sided paired t p, from the formulas."""
    stats = pytest.importorskip("scipy.stats")
    d = [a - b for a, b in zip(x, y)]
    n = len(d)
    mean = sum(d) / n
    sd = (sum((v - mean) ** 2 for v in d) / (n - 1)) ** 0.5
    se = sd / n**0.5
    half = stats.t.ppf(0.975, n - 1) * se
    p = 2 * stats.t.sf(abs(mean / se), n - 1)
    return mean, mean - half, mean + half, p


def test_bucket_gains_pick_the_best_baseline_per_bucket_and_pair_the_seeds():
    from benchmarks import almmta_simulator as sim

    alm = [[0.90, 0.70, None], [0.80, 0.75, 0.6], [0.85, 0.60, 0.7], [0.95, 0.72, 0.5]]
    dml = [[0.70, 0.80, None], [0.72, 0.70, 0.5], [0.74, 0.66, 0.5], [0.69, 0.75, 0.4]]
    lr = [[0.60, 0.60, None], [0.82, 0.50, None], [0.70, 0.55, 0.8], [0.80, 0.52, 0.55]]
    truth = [[1.0, 1.0, None]] * 4
    g = sim.bucket_gains(_world({sim.TRUTH: truth, "alm_mta": alm, "dml": dml, "lr": lr}))
    assert g["baselines"] == ["lr", "dml"]
    b0, b1, b2 = g["buckets"]
    col = lambda rows, b: [r[b] for r in rows]
    # Bucket 0: lr's mean 0.73 beats dml's 0.7125; bucket 1: dml; bucket 2: lr (2 seeds).
    assert (b0["best_baseline"], b1["best_baseline"], b2["best_baseline"]) == ("lr", "dml", "lr")
    assert b0["auuc"]["alm_mta"] == pytest.approx(0.875) and b0["auuc"][sim.TRUTH] == 1.0
    for rec, x, y in ((b0, col(alm, 0), col(lr, 0)), (b1, col(alm, 1), col(dml, 1))):
        mean, lo, hi, p = _ref_gain(x, y)
        assert rec["n"] == 4 and rec["higher"] == sum(a > b for a, b in zip(x, y))
        assert (rec["gain"], rec["ci_low"], rec["ci_high"], rec["p_value"]) == pytest.approx(
            (mean, lo, hi, p), abs=1e-12
        )
    # Seeds where either side skipped bucket 2 leave its pairs: 2 seeds, not 4 (nor 3).
    mean, lo, hi, p = _ref_gain(col(alm, 2)[2:], col(lr, 2)[2:])
    assert b2["n"] == 2 and b2["gain"] == pytest.approx(mean) and b2["p_value"] == pytest.approx(p)
    # Mean gains: +0.145 (bucket 0), -0.035 (bucket 1), -0.075 (bucket 2).
    assert (g["compared"], g["higher_in"], g["ci_above_zero_in"]) == (3, 1, int(b0["ci_low"] > 0))
    assert g["largest_gain"] == pytest.approx(max(b0["gain"], b1["gain"], b2["gain"]))
    # Without a baseline, or with records saved before the per-bucket values, nothing.
    assert sim.bucket_gains(_world({"alm_mta": alm, "proxy_direct": dml})) is None
    assert sim.bucket_gains({"alm_mta": {"per_seed": {}}, "dml": {"per_seed": {}}}) is None


def test_bucket_table_is_compact_and_names_the_best_baseline():
    from benchmarks import almmta_simulator as sim

    alm = [[0.9, 0.7], [0.8, 0.75], [0.85, 0.6]]
    dml = [[0.7, 0.8], [0.72, 0.7], [0.74, 0.66]]
    gains = {"default": sim.bucket_gains(_world({"alm_mta": alm, "dml": dml}))}
    lines = sim.bucket_table(gains, 3)
    header = lines.index(
        "| world | bucket | ALM-MTA | best baseline | gain [95% CI] | paired t p | higher in |"
    )
    row = lines[header + 2]
    assert row.startswith("| default | 0 | 0.8500 | dml 0.7200 | +0.1300 [")
    assert row.endswith(" | 3/3 |")
    assert "above the best baseline's in 1 of 2 buckets" in lines[-2]
