"""Presets (`starlight_jax.configs`): one source of training defaults, one flag per field, and the CLI's
default behaviour unchanged by the move."""
import dataclasses
import json
import pathlib

import pytest

from starlight_jax import configs, training
from starlight_jax.run_config import RunConfig
from clis import load_cli

REPO = pathlib.Path(__file__).resolve().parents[1]

# Flags that are not config fields, each with why (configs.FLAG_ONLY holds those that are preset keys).
CONTROL_FLAGS = {
    "help": "argparse's own",
    "config": "picks the preset the fields come from",
    "print_config": "an action (print and exit), not part of a run",
    "resume": "an action on an existing run folder",
    "allow_config_change": "what --resume may accept, not part of a run",
    "coordinator_address": "multi-host wiring (jax.distributed.initialize), not part of what is trained",
    "num_processes": "multi-host wiring",
    "process_id": "multi-host wiring",
    "save_path": "where the run folder goes (RunConfig.workdir)",
    "run_name": "the run folder's name (RunConfig.workdir)",
    "notes": "appended to the run folder's name (RunConfig.workdir)",
    "max_minutes": "a session's time budget (RunConfig.max_seconds), may change on every resume",
    "no_progress": "a session's progress bar (RunConfig.progress)",
    "compilation_cache": "where compiled programs are kept between runs, not part of what is trained",
}

# What the code before the presets produced (train.py on main at ab8e0fd, with a monkeypatched
# train_and_evaluate capturing its arguments; workdir dropped), on a CPU with one device.
OLD_RUN = {"dataset": "synthetic", "data_dir": None, "dataset_options": [["frame_size", [128, 128]]], "steps": None,
           "epochs": 40, "eval_every": 200, "log_every": 10, "keep": 3, "parallel": "shard", "devices": 1,
           "test_bursts": 4, "progress": True, "max_seconds": None}
OLD_DEFAULT = {
    "noiselist": "shot_read_uniform_row_periodic_fixed1", "compat": "physics", "network": "noUnet",
    "unet_opts": "residualFalse_conv_tconv_selu", "unet_widths": None, "unet_skip": False, "per_channel": False,
    "quantize": 0.0063008002016256065, "discriminator_loss": "real", "sigmoid": False, "critic_condition": "residual",
    "critic_width": 16, "generator_loss": "none", "lpips_weight": 1.0, "level_weight": 10.0, "structure_weight": 0.0,
    "lr": 0.0002, "b1": 0.5, "b2": 0.999, "physics_lr": 0.02, "physics_optimizer": "nsgd", "decay_steps": 1240,
    "decay_floor": 0.05, "init_from_data": True, "n_critic": 1, "critic_warmup": 200, "lambda_gp": 10.0,
    "batch_size": 1, "frames": 8, "crop_size": 64, "channels": 4, "seed": 0}
# Fields added since, at the values that keep the old behaviour.
NEW_NEUTRAL = {"critic_scale": 1.0, "precision": "float32", "freeze_tone": False, "level_bins": 1}
OLD_STARLIGHT = {
    **OLD_DEFAULT, "noiselist": "shot_read_uniform_row1_rowt_fixed1_periodic", "compat": "starlight",
    "quantize": None, "discriminator_loss": "fourier", "critic_condition": "none", "generator_loss": "lpips",
    "level_weight": 0.0, "physics_lr": None, "decay_steps": None, "init_from_data": False, "critic_warmup": 0}


def _train_cli():
    return load_cli("train", "configs")


def _print_config(argv, tmp_path, capsys):
    _train_cli().main([*argv, "--print_config", "--save_path", str(tmp_path)])
    out = capsys.readouterr().out
    first = out.splitlines()[0]
    return first, json.loads(out[out.index("\n{") + 1:])


def _flat_fields():
    return {f.name for cls in (training.TrainConfig, RunConfig) for f in dataclasses.fields(cls)}


def test_every_flag_is_one_field_and_every_field_one_flag():
    dests = {a.dest for a in _train_cli().build_parser()._actions}
    keys = set(configs.cpu())
    assert dests - set(CONTROL_FLAGS) == keys, "flags without a preset key / preset keys without a flag"
    assert set(CONTROL_FLAGS) <= dests, f"stale exceptions: {set(CONTROL_FLAGS) - dests}"
    fields = _flat_fields() | set(configs.DATA_FIELDS)
    assert keys - set(configs.FLAG_ONLY) == fields - set(configs.FIELD_ONLY)
    assert set(configs.FLAG_ONLY) <= keys and set(configs.FIELD_ONLY) <= fields  # no stale exceptions
    for name in configs.PRESETS:  # every preset gives every field
        assert set(configs.get_config(name)) == keys, name


def test_default_cli_config_is_unchanged(tmp_path, capsys):
    # conftest fakes 4 CPU devices; the old values were taken on one (--devices 1 is what that resolved to)
    first, got = _print_config(["--noiselist", "shot_read_uniform_row_periodic_fixed1", "--devices", "1"],
                               tmp_path, capsys)
    assert first.startswith("[starlight-jax] config cpu (no --config given and the JAX backend is cpu")
    run = {k: v for k, v in got["run"].items() if k != "workdir"}
    assert (got["train"], run) == ({**OLD_DEFAULT, **NEW_NEUTRAL}, OLD_RUN)
    assert got["config"] == {"name": "cpu", "reason": "no --config given and the JAX backend is cpu",
                             "flags": ["devices", "noiselist"]}


def test_compat_starlight_on_the_cpu_preset_is_unchanged(tmp_path, capsys):
    _, got = _print_config(["--noiselist", "shot_read_uniform_row1_rowt_fixed1_periodic", "--compat", "starlight",
                            "--devices", "1"], tmp_path, capsys)
    assert got["train"] == {**OLD_STARLIGHT, **NEW_NEUTRAL}


def test_train_config_defaults_are_the_cli_default():
    from starlight_jax.data import load_dataset

    dataset = load_dataset("synthetic", frame_size=(128, 128))
    resolved = configs.resolve(configs.cpu(), dataset, devices=1, log=lambda *_: None)
    assert resolved == dataclasses.asdict(training.TrainConfig())
    assert training.TrainConfig() == training.TrainConfig(**{**OLD_DEFAULT, "noiselist": configs.cpu()["noiselist"]})


def test_run_config_defaults_are_the_cli_default(tmp_path, capsys):
    # On one device, as TrainConfig() (conftest fakes 4 CPU devices; a plain CPU has one): the workdir is
    # the one field the CLI does not take from the preset (it names the folder after the run).
    _, got = _print_config(["--devices", "1"], tmp_path, capsys)
    default = json.loads(json.dumps(dataclasses.asdict(RunConfig())))
    assert default.pop("workdir") == "checkpoints/run"
    assert default == {k: v for k, v in got["run"].items() if k != "workdir"} == OLD_RUN


def test_presets_hold_their_recipes():
    gpu, srgb, star = configs.gpu(), configs.srgb(), configs.starlight()
    assert (gpu["crop_size"], gpu["frames"], gpu["network"], gpu["critic_width"], gpu["n_critic"], gpu["epochs"],
            gpu["frame_size"]) == (256, 16, "Unet", 64, 5, 200, 256)
    assert {k: srgb[k] for k in ("noiselist", "per_channel", "frames", "crop_size", "batch_size", "steps",
                                 "critic_warmup", "structure_weight", "level_weight", "network", "critic_width",
                                 "n_critic", "dataset")} == dict(
        noiselist="shot_read_isp_tone", per_channel=True, frames=1, crop_size=64, batch_size=8, steps=600,
        critic_warmup=100, structure_weight=1.0, level_weight=10.0, network="noUnet", critic_width=16, n_critic=1,
        dataset="pairs")
    assert {k: star[k] for k in configs.MODE["starlight"]} == configs.MODE["starlight"]
    assert (star["compat"], star["crop_size"], star["n_critic"], star["physics_lr"]) == ("starlight", 256, 5, None)
    # a compat other than the preset's brings that mode's fields; explicit ones still win
    v = configs.apply(configs.srgb(), {"compat": "starlight", "level_weight": 3.0})
    assert (v["discriminator_loss"], v["critic_warmup"], v["level_weight"]) == ("fourier", 0, 3.0)
    assert configs.apply(configs.srgb(), {"compat": "physics"})["critic_warmup"] == 100


def test_config_flag_and_its_refusals(tmp_path, capsys):
    first, got = _print_config(["--config", "gpu", "--epochs", "1", "--frame_size", "128"], tmp_path, capsys)
    assert first.startswith("[starlight-jax] config gpu (--config gpu")
    assert (got["train"]["crop_size"], got["train"]["network"], got["train"]["n_critic"]) == (256, "Unet", 5)
    with pytest.raises(SystemExit) as e:
        _train_cli().main(["--config", "srgb", "--print_config", "--save_path", str(tmp_path)])
    assert e.value.code == 2 and "--dataset pairs needs --data_dir (--config srgb)" in capsys.readouterr().err
    with pytest.raises(SystemExit) as e:
        _train_cli().main(["--config", "nope"])
    assert e.value.code == 2


def test_config_json_records_the_preset(tmp_path):
    from starlight_jax.checkpoint import config_dict, save_config
    from starlight_jax.run_folder import check_resume_config

    preset = {"name": "cpu", "reason": "no --config given and the JAX backend is cpu", "flags": []}
    save_config(tmp_path, training.TrainConfig(), RunConfig(), preset=preset)
    stored = json.loads((tmp_path / "config.json").read_text())
    assert stored["preset"] == preset
    # the record is not part of the compared configuration
    assert check_resume_config(tmp_path, stored, config_dict(training.TrainConfig(), RunConfig()), 1) == {}
