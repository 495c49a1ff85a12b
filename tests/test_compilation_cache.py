"""The CLIs' persistent compilation cache (`starlight_jax.cli.setup_compilation_cache`): on by default, a
second process of the same call reads its programs from the folder, and ``none`` turns it off."""
import os
import pathlib
import subprocess
import sys

import jax
import numpy as np
import pytest

import starlight_jax as sj
from starlight_jax import cli
from starlight_jax.checkpoint import save_config
from starlight_jax.generator import save_generator
from starlight_jax.noiselist import parse_noiselist
from starlight_jax.run_config import RunConfig
from starlight_jax.training import TrainConfig
from clis import load_cli

REPO = pathlib.Path(__file__).resolve().parents[1]
HIT = "Persistent compilation cache hit"


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory):
    """A 1-channel read-noise model in the exported layout (generator files + config.json): little to compile."""
    folder = tmp_path_factory.mktemp("model")
    cfg = TrainConfig(noiselist="read", channels=1, quantize=None, decay_steps=None)
    save_generator(sj.init_generator(jax.random.key(0), sj.GeneratorConfig(noise=parse_noiselist("read", channels=1))),
                   folder, {"step": 0})
    save_config(folder, cfg, RunConfig(workdir=str(folder)))
    from PIL import Image

    Image.fromarray(np.full((32, 32), 100, np.uint8)).save(folder / "grey.png")
    return folder


def _sample(model, out, cache_args, env_cache=None):
    env = {k: v for k, v in os.environ.items() if k != cli.CACHE_ENV}
    if env_cache is not None:
        env[cli.CACHE_ENV] = env_cache
    env.update(JAX_LOG_COMPILES="1", PYTHONPATH=str(REPO))  # log_compiles makes JAX log each cache hit
    return subprocess.run([sys.executable, str(REPO / "experiments" / "sample.py"), "--checkpoint", str(model),
                           "--input", str(model / "grey.png"), "--out", str(out), *cache_args],
                          capture_output=True, text=True, env=env, timeout=300)


def test_second_process_reads_the_programs_the_first_wrote(tiny_model, tmp_path):
    cache = tmp_path / "cache"
    first = _sample(tiny_model, tmp_path / "out1", ["--compilation_cache", str(cache)])
    assert first.returncode == 0, first.stderr[-2000:]
    entries = sorted(p.name for p in cache.iterdir())
    assert entries and HIT not in first.stderr
    second = _sample(tiny_model, tmp_path / "out2", ["--compilation_cache", str(cache)])
    assert second.returncode == 0, second.stderr[-2000:]
    # Every program of the second run came from the folder: as many hits as entries, none written anew.
    assert second.stderr.count(HIT) == len(entries)
    assert sorted(p.name for p in cache.iterdir()) == entries


@pytest.fixture
def restore_cache_config():
    keys = ("jax_compilation_cache_dir", "jax_persistent_cache_min_compile_time_secs")
    before = {k: getattr(jax.config, k) for k in keys}
    yield
    for k, v in before.items():
        jax.config.update(k, v)


def test_default_folder_precedence_and_none(tmp_path, monkeypatch, restore_cache_config):
    # In this process JAX has compiled already, so turning the cache on here changes no behaviour.
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    monkeypatch.delenv(cli.CACHE_ENV, raising=False)
    jax.config.update("jax_compilation_cache_dir", None)
    default = tmp_path / "xdg" / "starlight_jax" / "jax"
    assert cli.setup_compilation_cache(None) == default and default.is_dir()
    assert jax.config.jax_compilation_cache_dir == str(default)
    assert jax.config.jax_persistent_cache_min_compile_time_secs == 0.0
    monkeypatch.setenv(cli.CACHE_ENV, str(tmp_path / "env"))
    assert cli.setup_compilation_cache(None) == tmp_path / "env"
    assert cli.setup_compilation_cache(str(tmp_path / "flag")) == tmp_path / "flag"  # the flag wins
    jax.config.update("jax_compilation_cache_dir", None)
    assert cli.setup_compilation_cache("none") is None and cli.setup_compilation_cache("None") is None
    assert jax.config.jax_compilation_cache_dir is None
    monkeypatch.setenv(cli.CACHE_ENV, "none")
    assert cli.setup_compilation_cache(None) is None


def test_unwritable_explicit_folder_is_refused(tmp_path, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(SystemExit) as e:
        cli.setup_compilation_cache(str(blocker / "cache"))
    assert e.value.code == 2
    assert f"--compilation_cache {blocker / 'cache'}: {blocker} is a file" in capsys.readouterr().err


def _module(name):
    return load_cli(name, "cache_cli")


@pytest.mark.parametrize("name", ["train", "sample", "evaluate", "export", "denoise", "denoise_benchmark"])
def test_every_cli_has_the_flag(name, capsys):
    module = _module(name)
    with pytest.raises(SystemExit):
        (module.parse_args if hasattr(module, "parse_args") else module.main)(["--help"])
    assert "--compilation_cache DIR|none" in capsys.readouterr().out
