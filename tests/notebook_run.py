"""Running a tour notebook the way CI does, and keeping its outputs when asked."""

import os
import pathlib

import nbclient
import nbformat


def execute(path: pathlib.Path, monkeypatch, small_env: str, cwd: pathlib.Path, timeout: int):
    """The notebook at ``path`` executed at its small size in ``cwd``, with the inline backend."""
    monkeypatch.setenv(small_env, "1")
    monkeypatch.setenv("JAX_PLATFORMS", "cpu")
    monkeypatch.delenv("MPLBACKEND", raising=False)  # the kernel's inline backend: PNG outputs
    nb = nbformat.read(path, as_version=4)
    client = nbclient.NotebookClient(
        nb,
        timeout=timeout,
        kernel_name="python3",
        record_timing=False,
        resources={"metadata": {"path": str(cwd)}},
    )
    client.execute()
    return nb


def save_if_asked(nb, path: pathlib.Path) -> None:
    """With ``WRITE_NOTEBOOKS=1``, writes the executed notebook back (checked before this call).

    Standard error (progress bars with their timings, the environment's warnings)
    differs per machine and is not kept; everything else is saved as it ran.
    """
    if os.environ.get("WRITE_NOTEBOOKS") != "1":
        return
    for c in nb.cells:
        if c.cell_type == "code":
            c.outputs = [o for o in c.outputs if o.get("name") != "stderr"]
    nbformat.write(nb, path)


def saved_in_order(path: pathlib.Path):
    """The committed notebook, asserting that every code cell ran once, in order."""
    nb = nbformat.read(path, as_version=4)
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert [c.execution_count for c in code] == list(range(1, len(code) + 1))
    return nb
