"""Smoke test of ``python -m benchmarks.zoo_agreement``: rows, deviations, cost columns."""

from __future__ import annotations

import json

import numpy as np
import pytest

from benchmarks import mtl_speed, zoo_agreement
from tests import zoo_checks
from tests.zoo_cases import Check


def test_every_public_method_has_a_check():
    zoo = set(mtl_speed.methods(4)) | {"constant", "krum"}
    assert set(zoo_checks.METHODS) == zoo


def test_table_has_a_row_per_method_within_tolerance(tmp_path):
    speed = tmp_path / "speed.json"
    speed.write_text(json.dumps({"ratios": {"mean_K2_params": 2.5, "mean_K4_rep": 1.1}}))
    out = tmp_path / "zoo.json"
    methods = ["mean", "trimmed_mean"]
    payload = zoo_agreement.main(
        ["--methods", *methods, "--json", str(out), "--speed-json", str(speed)]
    )
    assert json.loads(out.read_text())["methods"] == sorted(methods)
    rows = payload["rows"]
    # One NumPy and one TorchJD check each.
    assert [r["method"] for r in rows] == ["mean", "mean", "trimmed_mean", "trimmed_mean"]
    assert {r["reference"].split(",")[0].split(" 0.")[0] for r in rows} == {"NumPy", "TorchJD"}
    for r in rows:
        assert r["inputs"] > 0 and r["within_tol"], r
        assert 0.0 <= r["max_abs"] <= r["tol"] * 10 and r["max_scaled"] <= r["tol"], r
    lines = payload["markdown"].splitlines()
    assert len(lines) == 2 + len(rows)
    assert "| mean | NumPy, 1/K sum of the task gradients | 2, 3, 4 |" in lines[2]
    assert lines[2].endswith("| yes | 2.50 | – | – | 1.10 |")
    assert lines[4].endswith("| yes | – | – | – | – |")
    assert payload["all_within_tol"]


def test_a_wrong_update_is_reported_out_of_tolerance():
    """A method off by 1e-3 (relative) exceeds its 1e-5 tolerance and says so."""

    def run(k):
        g = np.random.default_rng(k).normal(size=(k, 7))
        return [(1.001 * g.mean(0), g.mean(0))]

    row = zoo_agreement.measure(Check("mean", "NumPy, test", 1e-5, run, (2, 3)))
    assert not row["within_tol"] and row["inputs"] == 2
    assert row["max_rel"] == pytest.approx(1e-3, rel=1e-6)


def test_unknown_method_is_rejected_by_name():
    with pytest.raises(SystemExit):
        zoo_agreement.main(["--methods", "nope"])
