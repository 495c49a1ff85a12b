"""A non-editable install carries the shipped default model: `synthesize(key, clean)` uses the trained one.

The default models are package data (``starlight_jax/assets/``, pyproject's package-data); were they left
out of the wheel, `synthesize` without params would fail in an installed package while every test of a
checkout passed. So the package is built and installed for real, away from the checkout, and run there.
"""
import json
import os
import pathlib
import shutil
import subprocess
import sys

import numpy as np
import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]

# Run by the installed package only (PYTHONPATH = the install, cwd elsewhere): which starlight_jax it is,
# where its default model lies, and synthesize's output without params and with the checkout's asset.
CHECK = """
import json, sys
import jax, jax.numpy as jnp, numpy as np
import starlight_jax as sj
from starlight_jax import generator

asset = sys.argv[1]
clean = jax.random.uniform(jax.random.key(0), (2, 32, 32, 4), minval=0.05, maxval=0.95)
default = np.asarray(sj.synthesize(jax.random.key(1), clean))
model = generator.default_model()
print(json.dumps({
    "file": sj.__file__, "default_dir": str(generator.DEFAULT_MODEL_DIRS[4]),
    "noiselist": model.config.noise.noiselist,
    "params": {k: np.asarray(v).tolist() for k, v in model.params["noise"].items()},
    "default": default.tolist(),
    "with_asset": np.asarray(sj.synthesize(jax.random.key(1), clean, generator.load_generator(asset))).tolist(),
    "untrained": np.asarray(sj.synthesize(jax.random.key(1), clean, noiselist=model.config.noise.noiselist)).tolist(),
}))
"""


@pytest.mark.slow
def test_a_non_editable_install_uses_the_shipped_trained_default(tmp_path):
    asset = ROOT / "starlight_jax" / "assets" / "default"
    assert (asset / "generator.npz").is_file(), f"{asset} is missing: the 4-channel default is not shipped"
    src, site, elsewhere = tmp_path / "src", tmp_path / "site", tmp_path / "elsewhere"
    # A copy of what the build reads, so that the build's by-products stay out of the checkout.
    src.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, src / name)
    shutil.copytree(ROOT / "starlight_jax", src / "starlight_jax", ignore=shutil.ignore_patterns("__pycache__"))
    build = subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "--target", str(site), str(src)],
                           capture_output=True, text=True, timeout=300)
    log = build.stdout + build.stderr
    if build.returncode and ("No matching distribution" in log or "Could not find a version" in log):
        pytest.skip(f"pip could not fetch the build backend (setuptools) for an isolated build:\n{log[-2000:]}")
    assert build.returncode == 0, log[-4000:]

    elsewhere.mkdir()
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env.update(PYTHONPATH=str(site), JAX_PLATFORMS="cpu")
    run = subprocess.run([sys.executable, "-c", CHECK, str(asset)], cwd=elsewhere, env=env, capture_output=True,
                         text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-4000:]
    out = json.loads(run.stdout.strip().splitlines()[-1])

    assert pathlib.Path(out["file"]).is_relative_to(site), out["file"]  # the install, not the checkout
    assert pathlib.Path(out["default_dir"]).is_relative_to(site), out["default_dir"]
    with np.load(asset / "generator.npz") as stored:  # the trained values, as shipped
        for name, value in out["params"].items():
            np.testing.assert_array_equal(np.asarray(value, np.float32), stored[f"['noise']['{name}']"], err_msg=name)
    default, with_asset = np.asarray(out["default"]), np.asarray(out["with_asset"])
    np.testing.assert_array_equal(default, with_asset)
    # Not the noiselist's initial values: those give other noise for the same key.
    assert np.abs(default - np.asarray(out["untrained"])).max() > 1e-4


def test_the_old_default_path_names_the_new_one(tmp_path, monkeypatch):
    # `--checkpoint checkpoints/default` of older docs and scripts: refused with the package-data path.
    from starlight_jax import checkpoint, generator

    monkeypatch.chdir(tmp_path)
    with pytest.raises(FileNotFoundError, match=f"pass --checkpoint {generator.ASSETS / 'default'}"):
        checkpoint.resolve_run("checkpoints/default")
    assert checkpoint.resolve_run(generator.DEFAULT_MODEL_DIRS[4]) == generator.DEFAULT_MODEL_DIRS[4]


def test_the_clis_write_a_shipped_models_outputs_outside_the_package(tmp_path):
    # On a fresh checkout sample.py, evaluate.py and denoise_benchmark.py fall back to the shipped default;
    # their outputs then go under --root, not into starlight_jax/assets/ (tracked files; read-only installs).
    from starlight_jax import checkpoint, generator

    for model in generator.DEFAULT_MODEL_DIRS.values():
        out = checkpoint.output_dir(model, tmp_path)
        assert out == tmp_path / f"shipped_{model.name}"
        assert not out.resolve().is_relative_to(generator.ASSETS.resolve())
    assert checkpoint.output_dir(tmp_path / "run", tmp_path) == tmp_path / "run"  # a run folder: itself
    for name in ("sample.py", "evaluate.py", "denoise_benchmark.py"):
        assert "output_dir(run_dir, args.root)" in (ROOT / "experiments" / name).read_text(), name
