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
import shutil  # noqa: E402
import tempfile  # noqa: E402

import pytest  # noqa: E402

# One persistent compilation cache for this pytest run, shared by its xdist workers and removed at its end:
# some tests compile the same programs as others (the same tiny configs' steps, the same U-Nets), and one
# read back from the cache takes 0.02-0.3 s instead of its compile. The gain is small (in the generator,
# U-Net and isp modules: 18 hits, ~10 s). Nothing from an earlier run is read (a fresh folder), and nothing
# is written outside the run's temporary folder.
TEST_CACHE_ENV = "STARLIGHT_JAX_TEST_CACHE"


def pytest_configure(config):
    if not hasattr(config, "workerinput") and TEST_CACHE_ENV not in os.environ:  # the controller, before workers
        os.environ[TEST_CACHE_ENV] = tempfile.mkdtemp(prefix="starlight_jax_test_cache_")
        config._starlight_test_cache = os.environ[TEST_CACHE_ENV]
    import jax

    jax.config.update("jax_compilation_cache_dir", os.environ[TEST_CACHE_ENV])
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.2)


# The longest tests (over ~30 s each on 2 cores: compiles of several critic steps, trainings in child
# processes) run first. xdist's worksteal scheduler hands each worker a contiguous half of the collection
# and lets an idle worker take the tail of the other's queue: a long test left at the end of one queue
# would run alone while the other worker idles.
LONG_FIRST = ("tests/test_multihost.py::test_two_processes_stop_together_and_resume_to_the_losses_of_one",
              "tests/test_training.py::test_multi_device_losses_match_single_device",
              "tests/test_compat_training.py::test_spectral_norm_advances_per_d_call",
              "tests/test_precision.py::test_bfloat16_critic_step_matches_float32_to_its_precision")


def pytest_collection_modifyitems(config, items):
    def rank(item):
        return next((i for i, prefix in enumerate(LONG_FIRST) if item.nodeid.startswith(prefix)), len(LONG_FIRST))

    items.sort(key=rank)  # stable: the rest keep their order


def pytest_unconfigure(config):
    folder = getattr(config, "_starlight_test_cache", None)
    if folder:
        shutil.rmtree(folder, ignore_errors=True)

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
