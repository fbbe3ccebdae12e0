"""The DRGrad tour notebook executes end to end at small size (DRGRAD_TOUR_SMALL=1)."""

import pathlib
import re

import numpy as np
import pytest

nbclient = pytest.importorskip("nbclient")
nbformat = pytest.importorskip("nbformat")

ROOT = pathlib.Path(__file__).resolve().parent.parent
NOTEBOOK = ROOT / "notebooks" / "drgrad_tour.ipynb"
NUMBER = r"[-+]?\d*\.?\d+(?:e[-+]?\d+)?"


def test_drgrad_tour_executes(monkeypatch):
    monkeypatch.setenv("DRGRAD_TOUR_SMALL", "1")
    monkeypatch.setenv("JAX_PLATFORMS", "cpu")
    monkeypatch.delenv("MPLBACKEND", raising=False)  # the kernel's inline backend: PNG outputs
    nb = nbformat.read(NOTEBOOK, as_version=4)
    client = nbclient.NotebookClient(
        nb, timeout=300, kernel_name="python3", resources={"metadata": {"path": str(ROOT)}}
    )
    client.execute()
    outputs = "".join(
        o.get("text", "") for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])
    )
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
    images = [
        o
        for c in nb.cells
        if c.cell_type == "code"
        for o in c.get("outputs", [])
        if "image/png" in o.get("data", {})
    ]
    assert images, "the cosine / mu plot was not produced"
