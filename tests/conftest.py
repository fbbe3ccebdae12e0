"""Test configuration: strict JAX numerics and eight fake CPU devices for sharding tests."""

import os

# Must be set before JAX initializes its backends. Eight fake CPU devices for the
# sharding tests; LLVM optimization off, because the suite's programs are tiny and
# compiling them, not running them, is most of its time (half the compile time).
_FLAGS = ("--xla_force_host_platform_device_count=8", "--xla_backend_optimization_level=0")
_given = os.environ.get("XLA_FLAGS", "")
os.environ["XLA_FLAGS"] = " ".join(
    [_given] + [f for f in _FLAGS if f.split("=")[0] not in _given]
).strip()
os.environ.setdefault("JAX_PLATFORMS", "cpu")

import pathlib  # noqa: E402

import jax  # noqa: E402
import pytest  # noqa: E402

# Identical programs built by different tests compile once: a persistent
# compilation cache (kept between runs under .pytest_cache unless
# JAX_COMPILATION_CACHE_DIR says otherwise).
jax.config.update(
    "jax_compilation_cache_dir",
    os.environ.get(
        "JAX_COMPILATION_CACHE_DIR",
        str(pathlib.Path(__file__).resolve().parent.parent / ".pytest_cache" / "jax"),
    ),
)
jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
jax.config.update("jax_numpy_rank_promotion", "raise")
jax.config.update("jax_numpy_dtype_promotion", "standard")

REPO_ROOT = pathlib.Path(__file__).resolve().parent.parent
SHARED_DATA = REPO_ROOT.parent / "shared" / "data"


def _data_dir(name: str) -> pathlib.Path:
    root = pathlib.Path(os.environ.get("DRGRAD_DATA", SHARED_DATA))
    return root / name


@pytest.fixture(scope="session")
def census_dir() -> pathlib.Path:
    """Directory holding the Census-Income (KDD) files; skips when absent."""
    path = _data_dir("census-income-kdd")
    if not (path / "census-income.test.gz").exists():
        pytest.skip(
            f"Census-Income data not found at {path} (set DRGRAD_DATA or provide ../shared/data)"
        )
    return path


@pytest.fixture(scope="session")
def criteo_dir() -> pathlib.Path:
    """Directory holding the shipped Criteo attribution journeys; skips when absent."""
    path = _data_dir("criteo-attribution-causalmta")
    if not (path / "train.npz").exists():
        pytest.skip(
            f"Criteo attribution data not found at {path} (set DRGRAD_DATA or provide ../shared/data)"
        )
    return path


# The slowest files first (docs/testing.md, *Suite time*): under ``-n 2 --dist
# loadfile`` a worker takes whole files in this order, so the long ones start early
# and the short ones fill in at the end. The order within a file is unchanged.
SLOW_FIRST = (
    "test_readme.py",
    "test_notebooks_almmta.py",
    "test_almmta_train.py",
    "test_conformance_zoo.py",
    "test_docstrings.py",
    "test_shared_representation.py",
    "test_train.py",
    "test_progress.py",
    "test_notebooks_drgrad.py",
)


def pytest_collection_modifyitems(session, config, items):
    rank = {name: i for i, name in enumerate(SLOW_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(SLOW_FIRST)))
