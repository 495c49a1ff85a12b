"""The CLIs of ``experiments/`` imported as modules, for tests that call their ``main`` in-process."""
import importlib.util
import pathlib

REPO = pathlib.Path(__file__).resolve().parents[1]


def load_cli(name: str, tag: str):
    """A fresh module of ``experiments/<name>.py``, named ``<tag>_<name>``: each test file gets its own
    copy (its module state and monkeypatches stay apart from the other files')."""
    spec = importlib.util.spec_from_file_location(f"{tag}_{name}", REPO / "experiments" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
