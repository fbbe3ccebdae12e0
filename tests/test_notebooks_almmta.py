"""The ALM-MTA tour notebook executes end to end at small size (ALMMTA_TOUR_SMALL=1)."""

import os
import pathlib

import pytest

nbclient = pytest.importorskip("nbclient")
nbformat = pytest.importorskip("nbformat")

NOTEBOOK = pathlib.Path(__file__).resolve().parent.parent / "notebooks" / "almmta_tour.ipynb"


def test_almmta_tour_executes(monkeypatch, tmp_path):
    monkeypatch.setenv("ALMMTA_TOUR_SMALL", "1")
    monkeypatch.setenv("JAX_PLATFORMS", "cpu")
    monkeypatch.setenv("MPLBACKEND", "Agg")
    nb = nbformat.read(NOTEBOOK, as_version=4)
    client = nbclient.NotebookClient(
        nb, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}
    )
    client.execute()
    outputs = "".join(
        o.get("text", "") for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])
    )
    assert "avg grouped AUUC" in outputs and "ALM-MTA" in outputs
    assert os.environ["ALMMTA_TOUR_SMALL"] == "1"
