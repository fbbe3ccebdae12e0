"""Runtime dependencies are honest: each one is imported by the packages, and
checkpointing (part of both trainers) needs no extra."""

import pathlib
import re

import tomllib

ROOT = pathlib.Path(__file__).resolve().parents[1]
# Distribution name -> top-level module it provides.
MODULE = {"orbax-checkpoint": "orbax"}


def _runtime_deps():
    deps = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    return [re.split(r"[<>=!~ \[;]", d, maxsplit=1)[0].strip().lower() for d in deps]


def test_checkpointing_is_a_runtime_dependency():
    assert "orbax-checkpoint" in _runtime_deps()


def test_the_progress_bar_is_a_runtime_dependency():
    assert "tqdm" in _runtime_deps()


def test_every_runtime_dependency_is_imported_by_the_packages():
    sources = "\n".join(
        p.read_text() for pkg in ("drgrad_jax", "almmta_jax") for p in (ROOT / pkg).rglob("*.py")
    )
    for dist in _runtime_deps():
        module = MODULE.get(dist, dist.replace("-", "_"))
        pattern = rf"^\s*(import|from)\s+{re.escape(module)}\b"
        assert re.search(pattern, sources, re.MULTILINE), f"{dist} is declared but never imported"
