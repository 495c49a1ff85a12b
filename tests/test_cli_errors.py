"""Nothing lost at the CLIs: outputs refused before any work, inputs never overwritten, non-finite images
refused, ``--root`` honoured, and a fresh checkout's commands falling back to the shipped default model."""
import json
import os
import pathlib

import jax
import numpy as np
import pytest

from starlight_jax import generator
from legacy import train_config
from clis import load_cli

pytestmark = pytest.mark.usefixtures("fast_compiles")
REPO = pathlib.Path(__file__).resolve().parents[1]
needs_default = pytest.mark.skipif(not (generator.DEFAULT_MODEL_DIR / "config.json").is_file(),
                                   reason="no starlight_jax/assets/default in this checkout")


class Stop(Exception):
    """Raised by a stubbed stage: the CLI got that far."""


def _cli(name):
    return load_cli(name, "cli_errors")


def _refused(name, argv, capsys) -> str:
    """Runs the CLI, expects exit 2 and returns its stderr."""
    with pytest.raises(SystemExit) as exit_info:
        _cli(name).main(argv)
    assert exit_info.value.code == 2
    return capsys.readouterr().err


def _stop(*_args, **_kwargs):
    raise Stop


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    """A noise-model run folder as experiments/train.py writes it (config.json + latest/1), untrained."""
    from starlight_jax.generator import init_generator
    from starlight_jax.train_loop import RunConfig, _save, _save_config, checkpoint_managers

    workdir = tmp_path_factory.mktemp("runs") / "noise_run"
    cfg = train_config(noiselist="shot_read_uniform", network="noUnet", crop_size=64, frames=2)
    run = RunConfig(workdir=str(workdir), dataset="synthetic", dataset_options=(("frame_size", (64, 64)),))
    _save_config(workdir, cfg, run)
    latest, _ = checkpoint_managers(workdir, 1)
    _save(latest, 1, {"g_params": init_generator(jax.random.key(0), cfg.generator).params}, {"epoch": 0})
    return workdir


@pytest.fixture(scope="module")
def denoiser(tmp_path_factory):
    from starlight_jax.denoise import DenoiserConfig, init_denoiser, save_denoiser

    cfg = DenoiserConfig(channels=4, depth=2, width=4)
    return save_denoiser(tmp_path_factory.mktemp("den") / "d", init_denoiser(jax.random.key(0), cfg), cfg)


def _npy(path, value=0.3):
    np.save(path, np.full((16, 16, 4), value, np.float32))
    return path


# ------------------------------------------------------------------------------------------------------
# denoise.py
# ------------------------------------------------------------------------------------------------------
def test_denoise_refuses_to_overwrite_its_input(denoiser, tmp_path, capsys):
    src = _npy(tmp_path / "in.npy")
    before = src.read_bytes()
    os.link(src, tmp_path / "hard.npy")
    for out in (src, tmp_path / "." / "in.npy", tmp_path / "hard.npy"):
        err = _refused("denoise", ["--checkpoint", str(denoiser), "--input", str(src), "--output", str(out)], capsys)
        assert "is the --input file" in err
    assert src.read_bytes() == before


def test_denoise_refuses_non_finite_input(denoiser, tmp_path, capsys):
    src = _npy(tmp_path / "nan.npy", np.nan)
    err = _refused("denoise", ["--checkpoint", str(denoiser), "--input", str(src), "--output",
                               str(tmp_path / "out.npy")], capsys)
    assert "nan.npy" in err and "NaN or inf" in err
    assert not (tmp_path / "out.npy").exists()


@pytest.mark.parametrize("output,match", [("folder.png", "is a folder"), ("afile/out.npy", "is a file, not a folder"),
                                          ("out.jpg", "must end in .png or .npy")])
def test_denoise_checks_the_output_before_denoising(denoiser, tmp_path, capsys, monkeypatch, output, match):
    from starlight_jax.denoise import train

    (tmp_path / "folder.png").mkdir()
    (tmp_path / "afile").write_text("")
    monkeypatch.setattr(train, "denoise_images", _stop)
    err = _refused("denoise", ["--checkpoint", str(denoiser), "--input", str(_npy(tmp_path / "in.npy")),
                               "--output", str(tmp_path / output)], capsys)
    assert match in err and "--output" in err


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders")
def test_denoise_refuses_a_read_only_folder(denoiser, tmp_path, capsys):
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o500)
    try:
        err = _refused("denoise", ["--checkpoint", str(denoiser), "--input", str(_npy(tmp_path / "in.npy")),
                                   "--output", str(ro / "out.npy")], capsys)
    finally:
        ro.chmod(0o700)
    assert "not writable" in err


# ------------------------------------------------------------------------------------------------------
# export.py
# ------------------------------------------------------------------------------------------------------
def test_export_uses_the_newest_run_under_root(run_dir, tmp_path, capsys):
    out = tmp_path / "exported"
    _cli("export").main(["--root", str(run_dir.parent), "--out", str(out)])
    assert json.loads((out / "generator.json").read_text())["info"]["step"] == 1
    assert "noise_run" in capsys.readouterr().out
    err = _refused("export", ["--root", str(tmp_path / "empty"), "--out", str(tmp_path / "x")], capsys)
    assert str(tmp_path / "empty") in err


def test_export_refuses_an_out_that_is_a_file_before_loading(run_dir, tmp_path, capsys, monkeypatch):
    from starlight_jax import checkpoint

    monkeypatch.setattr(checkpoint, "load_noise_model", _stop)
    (tmp_path / "f").write_text("")
    err = _refused("export", ["--checkpoint", str(run_dir), "--out", str(tmp_path / "f")], capsys)
    assert "--out" in err and "is a file; expected a folder" in err


def test_export_names_a_truncated_run_config(run_dir, tmp_path, capsys):
    import shutil

    broken = tmp_path / "broken"
    shutil.copytree(run_dir, broken)
    (broken / "config.json").write_text((broken / "config.json").read_text()[:30])
    err = _refused("export", ["--checkpoint", str(broken), "--out", str(tmp_path / "x")], capsys)
    assert "broken/config.json is not valid JSON" in err


# ------------------------------------------------------------------------------------------------------
# evaluate.py, sample.py, denoise_benchmark.py
# ------------------------------------------------------------------------------------------------------
def test_evaluate_checks_json_before_evaluating(run_dir, tmp_path, capsys, monkeypatch):
    from starlight_jax import evaluation

    monkeypatch.setattr(evaluation, "evaluate_model", _stop)
    err = _refused("evaluate", ["--checkpoint", str(run_dir), "--json", str(tmp_path)], capsys)
    assert "--json" in err and "is a folder" in err


def test_sample_checks_out_before_drawing(run_dir, tmp_path, capsys, monkeypatch):
    from starlight_jax import plots

    monkeypatch.setattr(plots, "write_figures", _stop)
    (tmp_path / "f").write_text("")
    err = _refused("sample", ["--checkpoint", str(run_dir), "--out", str(tmp_path / "f")], capsys)
    assert "--out" in err and "is a file" in err


def test_benchmark_checks_json_and_out_before_training(run_dir, tmp_path, capsys, monkeypatch):
    from starlight_jax.denoise import benchmark

    monkeypatch.setattr(benchmark, "run_benchmark", _stop)
    base = ["--root", str(run_dir.parent)]
    err = _refused("denoise_benchmark", base + ["--out", str(tmp_path / "o"), "--json", str(tmp_path)], capsys)
    assert "--json" in err and "is a folder" in err
    (tmp_path / "f").write_text("")
    err = _refused("denoise_benchmark", base + ["--out", str(tmp_path / "f")], capsys)
    assert "--out" in err and "is a file" in err


@needs_default
def test_evaluate_falls_back_to_the_shipped_default(tmp_path, capsys, monkeypatch):
    from starlight_jax import evaluation

    monkeypatch.setattr(evaluation, "evaluate_model", _stop)
    with pytest.raises(Stop):
        _cli("evaluate").main(["--root", str(tmp_path / "no_runs"), "--json", str(tmp_path / "e.json")])
    first = capsys.readouterr().out.splitlines()[0]
    assert "no trained run under" in first and "shipped default model" in first
    assert str(generator.DEFAULT_MODEL_DIR) in first


@needs_default
def test_benchmark_falls_back_to_the_shipped_default(tmp_path, capsys, monkeypatch):
    from starlight_jax.denoise import benchmark

    monkeypatch.setattr(benchmark, "run_benchmark", _stop)
    with pytest.raises(Stop):
        _cli("denoise_benchmark").main(["--root", str(tmp_path / "no_runs"), "--out", str(tmp_path / "b")])
    lines = capsys.readouterr().out.splitlines()
    assert "shipped default model" in lines[0]
    assert any("noise model" in line and "shot_read_uniform_row_periodic" in line for line in lines)


@needs_default
def test_sample_falls_back_to_the_shipped_default(tmp_path, capsys):
    from PIL import Image

    png = tmp_path / "photo.png"
    Image.fromarray(np.full((32, 32, 3), 128, np.uint8)).save(png)
    _cli("sample").main(["--root", str(tmp_path / "no_runs"), "--input", str(png), "--pack_rggb",
                         "--out", str(tmp_path / "s")])
    assert "shipped default model" in capsys.readouterr().out.splitlines()[0]
    assert np.load(tmp_path / "s" / "photo_noisy.npy").shape == (16, 16, 4)


# ------------------------------------------------------------------------------------------------------
# Ctrl-C in every CLI
# ------------------------------------------------------------------------------------------------------
def test_run_main_turns_a_ctrl_c_into_one_line_and_exit_130(monkeypatch, capsys):
    """Seen: a Ctrl-C of sample.py during its start-up printed a KeyboardInterrupt traceback."""
    import signal

    from starlight_jax import cli

    class Exited(Exception):
        pass

    def fake_exit(code):
        raise Exited(code)

    def interrupted_main():
        raise KeyboardInterrupt

    monkeypatch.setattr(os, "_exit", fake_exit)
    monkeypatch.setattr("sys.argv", ["experiments/sample.py"])
    with pytest.raises(Exited) as exit_info:
        try:
            cli.run_main(interrupted_main)
        except KeyboardInterrupt:
            pytest.fail("run_main let the KeyboardInterrupt through (a traceback)")
    assert exit_info.value.args == (128 + signal.SIGINT,)
    assert capsys.readouterr().err == "interrupted by SIGINT; sample.py stopped (its outputs may be incomplete)\n"
    assert cli.run_main(lambda: None) is None  # a normal return exits normally


@pytest.mark.parametrize("name", ["train", "sample", "evaluate", "export", "denoise", "denoise_benchmark"])
def test_every_cli_runs_its_main_through_run_main(name):
    text = (REPO / "experiments" / f"{name}.py").read_text()
    assert text.rstrip().splitlines()[-1].strip() in ("run_main(main)", "cli.run_main(main)"), name
