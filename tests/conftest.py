"""Test set-up: four fake CPU devices so multi-device code paths run on any machine.

XLA_FLAGS must be set before jax is first imported, which is why this lives in conftest.py.
"""
import os

os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=4")
os.environ.setdefault("JAX_PLATFORMS", "cpu")
# No persistent compilation cache in the tests (the CLIs turn it on by default): tests must not write into
# the user's cache folder, nor depend on what an earlier run left there.
os.environ.setdefault("STARLIGHT_JAX_CACHE", "none")

import pathlib  # noqa: E402

import pytest  # noqa: E402

SHARED_DATA = pathlib.Path(__file__).resolve().parents[2] / "shared" / "data"


@pytest.fixture(scope="session")
def shared_data():
    """Path to ../shared/data, or skip: that data stays outside the repository (licences)."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"real reference data not found at {SHARED_DATA} (it lives outside the repository)")
    return SHARED_DATA


@pytest.fixture(scope="module")
def fast_compiles():
    """For modules that check values, not speed: skip most XLA optimisations, which dominate CPU test time.

    Use with ``pytestmark = pytest.mark.usefixtures("fast_compiles")``.
    """
    import jax

    previous = jax.config.read("jax_disable_most_optimizations")
    jax.config.update("jax_disable_most_optimizations", True)
    yield
    jax.config.update("jax_disable_most_optimizations", previous)
