"""The ALM-MTA tour notebook executes end to end at small size (ALMMTA_TOUR_SMALL=1).

The notebook is committed with the outputs of that small run, so its figure shows when
browsing the repository; ``WRITE_NOTEBOOKS=1`` saves the executed notebook back after the
checks pass (the only way its outputs are refreshed).
"""

import pathlib
import re

import numpy as np
import pytest

nbclient = pytest.importorskip("nbclient")
nbformat = pytest.importorskip("nbformat")

from tests import notebook_run  # noqa: E402

NOTEBOOK = pathlib.Path(__file__).resolve().parent.parent / "notebooks" / "almmta_tour.ipynb"
NUMBER = r"[-+]?\d*\.?\d+(?:e[-+]?\d+)?"
MAX_PNG_BYTES, MAX_NOTEBOOK_BYTES = 60_000, 400_000


def _floats(text):
    return np.array([float(v) for v in re.findall(NUMBER, text)])


def test_almmta_tour_executes(monkeypatch, tmp_path):
    nb = notebook_run.execute(NOTEBOOK, monkeypatch, "ALMMTA_TOUR_SMALL", tmp_path, timeout=600)
    check_tour_outputs(_text(nb))
    check_tour_images(nb)
    notebook_run.save_if_asked(nb, NOTEBOOK)


def test_saved_notebook_shows_a_small_run():
    """The committed outputs are a small run's: every code cell ran, in order, and drew small."""
    nb = notebook_run.saved_in_order(NOTEBOOK)
    check_tour_outputs(_text(nb))
    check_tour_images(nb)
    assert NOTEBOOK.stat().st_size < MAX_NOTEBOOK_BYTES


def _text(nb) -> str:
    return "".join(
        o.get("text", "") for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])
    )


def check_tour_images(nb) -> None:
    """The uplift curves are drawn inline, as one small PNG."""
    images = [
        o["data"]["image/png"]
        for c in nb.cells
        if c.cell_type == "code"
        for o in c.get("outputs", [])
        if "image/png" in o.get("data", {})
    ]
    assert images, "the uplift-curve plot was not produced"
    assert all(len(png) < MAX_PNG_BYTES * 4 / 3 for png in images)  # base64 of a small PNG


def check_tour_outputs(outputs: str) -> None:
    """Bounds on the numbers the tour prints (small configuration)."""
    # The kernel saw the switch (it prints which configuration it runs).
    assert "small configuration" in outputs, outputs[:500]
    held_out = _floats(re.search(r"held-out AUC per epoch: \[([^\]]*)\]", outputs).group(1))
    adversary = _floats(re.search(r"does not leak y\): \[([^\]]*)\]", outputs).group(1))
    assert held_out.size == adversary.size == 2
    assert np.all((adversary >= 0.0) & (adversary <= 1.0)), adversary
    # Two small epochs: the outcome head ends better than chance and than it started.
    assert 0.5 < held_out[-1] <= 1.0 and held_out[-1] > held_out[0], held_out
    rows = {
        name: (float(auc), float(auuc), float(rmse))
        for name, auc, auuc, rmse in re.findall(
            rf"^(\S+)\s+AUC ({NUMBER})  avg grouped AUUC ({NUMBER}|nan)  buckets \d+"
            rf"  RMSE vs true Δ ({NUMBER})",
            outputs,
            re.M,
        )
    }
    assert set(rows) == {"truth", "ALM-MTA", "DML"}, outputs[-800:]
    # The simulator's own probabilities and effects: a strong ranking, zero error.
    truth_auc, truth_auuc, truth_rmse = rows["truth"]
    assert truth_auc > 0.8 and truth_auuc > 0.8 and truth_rmse == 0.0, rows
    for auc, auuc, rmse in rows.values():
        assert 0.5 < auc <= 1.0 and 0.0 <= auuc <= 1.0 and rmse >= 0.0, rows
    # The attribution table: shares are the positive part of the uplifts, normalized.
    table = re.findall(rf"^\s+\d+\s+\d+\s+({NUMBER})\s+{NUMBER}\s+({NUMBER})$", outputs, re.M)
    uplift, share = (np.array([float(r[i]) for r in table]) for i in (0, 1))
    assert uplift.size >= 1, outputs
    assert np.all(share[uplift <= 0] == 0) and np.all((share >= 0) & (share <= 1))
    assert share.sum() == pytest.approx(1.0 if (uplift > 0).any() else 0.0, abs=5e-3)
