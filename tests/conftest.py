"""Test configuration: strict JAX numerics and eight fake CPU devices for sharding tests."""

import os

# Must be set before JAX initializes its backends.
os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=8")
os.environ.setdefault("JAX_PLATFORMS", "cpu")

import pathlib  # noqa: E402

import jax  # noqa: E402
import pytest  # noqa: E402

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
