"""The DRGrad tour notebook executes end to end at small size (DRGRAD_TOUR_SMALL=1).

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

ROOT = pathlib.Path(__file__).resolve().parent.parent
NOTEBOOK = ROOT / "notebooks" / "drgrad_tour.ipynb"
NUMBER = r"[-+]?\d*\.?\d+(?:e[-+]?\d+)?"
MAX_PNG_BYTES, MAX_NOTEBOOK_BYTES = 60_000, 400_000


def _outputs(nb) -> list[dict]:
    return [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])]


def check_tour_outputs(nb) -> None:
    """Bounds on what the tour prints and draws (small configuration)."""
    outputs = "".join(o.get("text", "") for o in _outputs(nb))
    mu = np.array([float(v) for v in re.findall(NUMBER, re.search(r"mu \[([^\]]*)\]", outputs)[1])])
    assert mu.size >= 1 and np.all((mu >= 0) & (mu <= 1)), mu  # mixing weights
    aucs = {
        name: (float(a1), float(a2))
        for name, a1, a2 in re.findall(
            rf"^(\S+)\s+task-1 AUC ({NUMBER})  task-2 AUC ({NUMBER})$", outputs, re.M
        )
    }
    assert set(aucs) == {"DRGrad", "PCGrad"}, outputs[-500:]
    # Even 30 small steps rank both tasks' held-out labels better than chance.
    for name, (a1, a2) in aucs.items():
        assert 0.55 < a1 <= 1.0 and 0.55 < a2 <= 1.0, (name, a1, a2)
    images = [o["data"]["image/png"] for o in _outputs(nb) if "image/png" in o.get("data", {})]
    assert images, "the cosine / mu plot was not produced"
    assert all(len(png) < MAX_PNG_BYTES * 4 / 3 for png in images)  # base64 of a small PNG


def test_drgrad_tour_executes(monkeypatch):
    nb = notebook_run.execute(NOTEBOOK, monkeypatch, "DRGRAD_TOUR_SMALL", ROOT, timeout=300)
    check_tour_outputs(nb)
    notebook_run.save_if_asked(nb, NOTEBOOK)


def test_saved_notebook_shows_a_small_run():
    """The committed outputs are a small run's: every code cell ran, in order, and drew small."""
    nb = notebook_run.saved_in_order(NOTEBOOK)
    check_tour_outputs(nb)
    assert NOTEBOOK.stat().st_size < MAX_NOTEBOOK_BYTES
