"""A run folder, written and read in one place: its ``config.json``, its Orbax checkpoints, its generator.

A run folder (trained by `starlight_jax.train_loop`) holds ``config.json`` (`save_config` /
`load_config`: the `TrainConfig` and `RunConfig`), ``latest/<step>/``, ``best/<step>/`` and ``init/0/``
(`checkpoint_managers`, `save_checkpoint`, `restore_state`: the train state and the loader's position).
`load_noise_model(run_dir, which)` returns the `NoiseModel` (generator config + params) of the checkpoint picked by ``which``, as the
original's `load_from_checkpoint_ab` did: ``"latest"`` (default), ``"best"`` (lowest mean test KLD),
``"init"`` or a step number; or that of a folder `experiments/export.py` wrote.

The slim generator files (`save_generator`, `load_generator`, `without_sensor_maps`) are defined in
`starlight_jax.generator`, which reads the shipped defaults with them, and re-exported here.
"""
from __future__ import annotations

import dataclasses
import json
import pathlib
from typing import Optional, Union

import jax
import jax.numpy as jnp
import orbax.checkpoint as ocp

from starlight_jax import files, training
from starlight_jax.generator import (ASSETS, DEFAULT_MODEL_DIR, DEFAULT_MODEL_DIRS, NoiseModel, init_generator,
                                     load_generator, save_generator, without_sensor_maps)
from starlight_jax.run_config import RunConfig

Which = Union[str, int]


def find_runs(root) -> list[pathlib.Path]:
    """Run folders below ``root`` (those with a ``config.json`` and a checkpoint), newest first."""
    root = pathlib.Path(root)
    runs = [p.parent for p in root.glob("*/config.json")
            if (p.parent / "latest").is_dir() and any(d.name.isdigit() for d in (p.parent / "latest").iterdir())]
    return sorted(runs, key=lambda p: (p / "latest").stat().st_mtime, reverse=True)


def resolve_run(path, root="checkpoints") -> pathlib.Path:
    """``path`` itself if it is a run folder, else the newest run under ``root`` when ``path`` is None."""
    if path is None:
        runs = find_runs(root)
        if not runs:
            raise FileNotFoundError(f"no trained run under {pathlib.Path(root).resolve()}; train one first with "
                                    f"python experiments/train.py, or pass --checkpoint")
        return runs[0]
    path = pathlib.Path(path)
    if not path.exists() and path.parent.name == "checkpoints" and path.name in ("default", "srgb"):
        moved = ASSETS / path.name
        raise FileNotFoundError(f"{path} does not exist: the shipped default models are package data now, "
                                f"pass --checkpoint {moved}")
    if not (path / "config.json").is_file():
        raise FileNotFoundError(f"{path} is not a run folder (no config.json); expected the folder that "
                                f"experiments/train.py printed, e.g. checkpoints/<run name>")
    return path


def run_or_default(path, root="checkpoints"):
    """For the CLIs: ``(path, None)``; or, when ``path`` is None and no run lies under ``root``, the shipped
    default model's folder and a note to print first, so that a fresh checkout's commands work.

    The default folder (``starlight_jax/assets/default``) holds the run's ``config.json``, which names the
    dataset it was trained on (the embedded synthetic data), so it stands in for a run folder.
    """
    if path is not None or find_runs(root) or not (DEFAULT_MODEL_DIR / "config.json").is_file():
        return path, None
    return DEFAULT_MODEL_DIR, (f"no trained run under {pathlib.Path(root).resolve()}: using the shipped "
                               f"default model {DEFAULT_MODEL_DIR} (train one with experiments/train.py, or "
                               f"pass --checkpoint)")


def output_dir(run_dir, root="checkpoints") -> pathlib.Path:
    """The folder the CLIs write what they make of the model in ``run_dir`` into by default.

    The run folder itself; for a shipped default model (``starlight_jax/assets/...``), ``<root>/shipped_<name>``
    instead: package data is not written into (an installed package may not be writable, and a checkout's
    assets are tracked files).
    """
    run_dir = pathlib.Path(run_dir)
    if run_dir.resolve().is_relative_to(ASSETS.resolve()):
        return pathlib.Path(root) / f"shipped_{run_dir.name}"
    return run_dir


# ------------------------------------------------------------------------------------------------------
# config.json and the train-state checkpoints, as the training loop writes and resumes them
# ------------------------------------------------------------------------------------------------------
def config_dict(cfg: training.TrainConfig, run: RunConfig) -> dict:
    """What ``config.json`` holds: ``{"train": cfg, "run": run}`` as plain JSON-able dicts."""
    return {"train": dataclasses.asdict(cfg), "run": dataclasses.asdict(run)}


def save_config(workdir: pathlib.Path, cfg: training.TrainConfig, run: RunConfig, preset=None):
    """Writes ``config.json`` of a run folder (`config_dict`, and ``"preset"``: how it was chosen, when
    given), replaced whole: an interrupt mid-write must not leave half a config."""
    workdir = pathlib.Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    tmp = workdir / "config.json.tmp"
    data = config_dict(cfg, run) if preset is None else {"preset": preset, **config_dict(cfg, run)}
    tmp.write_text(json.dumps(data, indent=2, default=list))
    tmp.replace(workdir / "config.json")


def load_config(workdir) -> tuple[training.TrainConfig, RunConfig]:
    """Reads ``config.json`` of a run folder."""
    path = pathlib.Path(workdir) / "config.json"
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: {workdir} is not a starlight-jax run folder")
    data = json.loads(path.read_text())
    train = data["train"]
    if train.get("unet_widths") is not None:
        train["unet_widths"] = tuple(train["unet_widths"])
    run = data["run"]
    run["dataset_options"] = tuple(tuple(x) for x in run.get("dataset_options", ()))
    return training.TrainConfig(**train), RunConfig(**run)


def checkpoint_managers(workdir: pathlib.Path, keep: int, with_best: bool = True):
    """The Orbax managers of ``<workdir>/latest`` (the last ``keep``) and ``<workdir>/best`` (lowest
    ``test_kld_mean``; None when ``with_best`` is False: no test split), synchronous: no thread is left
    writing when the process exits."""
    opts = dict(enable_async_checkpointing=False)
    latest = ocp.CheckpointManager(workdir / "latest", options=ocp.CheckpointManagerOptions(
        max_to_keep=keep, **opts), item_names=("state", "loader"))
    best = ocp.CheckpointManager(workdir / "best", options=ocp.CheckpointManagerOptions(
        max_to_keep=1, best_fn=lambda m: m["test_kld_mean"], best_mode="min", **opts),
        item_names=("state", "loader")) if with_best else None
    return latest, best


def save_checkpoint(manager, step: int, state, loader_state: dict, metrics=None):
    """Saves the train state and the loader's position at ``step`` (``metrics`` rank it in ``best/``)."""
    args = ocp.args.Composite(state=ocp.args.StandardSave(jax.device_get(state)),
                              loader=ocp.args.JsonSave(loader_state))
    manager.save(step, args=args, metrics=metrics, force=True)
    manager.wait_until_finished()


def restore_state(workdir, template: training.TrainState, which: str = "latest", step: Optional[int] = None):
    """Restores ``(state, loader_state, step)`` from ``<workdir>/<which>``; ``which`` is latest, best or init."""
    folder = pathlib.Path(workdir).resolve() / which
    if not folder.is_dir():  # checked first: the manager would create it
        raise FileNotFoundError(f"no checkpoint in {folder} (the folder does not exist"
                                + ("; a run without a test split keeps no best/)" if which == "best" else ")"))
    manager = ocp.CheckpointManager(folder, item_names=("state", "loader"))
    step = manager.latest_step() if step is None else step
    if step is None:
        raise FileNotFoundError(f"no checkpoint in {pathlib.Path(workdir) / which}")
    abstract = jax.tree_util.tree_map(ocp.utils.to_shape_dtype_struct, jax.device_get(template))
    restored = manager.restore(step, args=ocp.args.Composite(state=ocp.args.StandardRestore(abstract),
                                                             loader=ocp.args.JsonRestore()))
    return restored.state, restored.loader, step


def is_which(which) -> bool:
    """Whether ``which`` names a checkpoint of a run: ``"latest"``, ``"best"``, ``"init"`` or a step."""
    return which in ("latest", "best", "init") or isinstance(which, int) or (isinstance(which, str)
                                                                           and which.isdigit())


def _pick_step(manager: ocp.CheckpointManager, which: Which, folder: pathlib.Path) -> int:
    steps = manager.all_steps()
    if not steps:
        raise FileNotFoundError(f"no checkpoint in {folder}")
    if which in ("latest", "best", "init"):
        return max(steps)
    if is_which(which):
        if int(which) not in steps:
            raise FileNotFoundError(f"no checkpoint at step {which} in {folder}; available steps: {sorted(steps)}")
        return int(which)
    raise ValueError(f"which must be 'latest', 'best', 'init' or a step number, got {which!r}")


def load_noise_model(run_dir=None, which: Which = "latest", *, root="checkpoints"):
    """Loads a trained generator.

    Args:
      run_dir: a run folder, or a folder written by ``experiments/export.py`` (``generator.json`` +
        ``generator.npz`` + the run's ``config.json``: ``which`` is then ignored); None picks the newest
        run under ``root``.
      which: ``"latest"``, ``"best"``, ``"init"`` (the untrained model of step 0, after the data init) or a
        step number.
      root: where to look when ``run_dir`` is None.

    Returns:
      ``(model, train_config, info)``: the `NoiseModel`, the `TrainConfig` it was trained with, and
      ``{"run_dir", "step", "which"}``.

    Raises:
      FileNotFoundError: no run folder / checkpoint; ValueError: the checkpoint does not match its config
        (e.g. a different noiselist or U-Net), naming the differing parameters.
    """
    run_dir = resolve_run(run_dir, root).resolve()
    cfg, _ = load_run_config(run_dir)
    if (run_dir / "generator.npz").is_file() and not (run_dir / "latest").is_dir():
        # An exported generator (experiments/export.py) beside its run's config.json: one model, no steps.
        model = load_generator(run_dir)
        step = files.read_json(run_dir / "generator.json").get("info", {}).get("step")
        return model, cfg, {"run_dir": str(run_dir), "step": step, "which": "exported"}
    folder = run_dir / (which if which in ("best", "init") else "latest")
    if not folder.is_dir():  # checked first: the manager would create it
        raise FileNotFoundError(f"no checkpoint in {folder} (the folder does not exist"
                                + ("; a run without a test split keeps no best/, use latest)" if which == "best"
                                   else ")"))
    manager = ocp.CheckpointManager(folder, item_names=("state", "loader"))
    step = _pick_step(manager, which, folder)
    restored = manager.restore(step, args=ocp.args.Composite(state=ocp.args.StandardRestore(),
                                                             loader=ocp.args.JsonRestore()))
    params = jax.tree_util.tree_map(jnp.asarray, restored.state["g_params"])
    gen_cfg = cfg.generator
    expected = jax.eval_shape(lambda: init_generator(jax.random.key(0), gen_cfg).params)
    _check_same_tree(expected, params, run_dir, step)
    return NoiseModel(params=params, config=gen_cfg), cfg, {"run_dir": str(run_dir), "step": step, "which": which}


def load_run_config(run_dir):
    """`load_config` of ``run_dir``, with a `ValueError` naming its ``config.json`` for invalid JSON, a
    missing section, unknown keys (all listed) or values the configs refuse."""
    path = pathlib.Path(run_dir) / "config.json"
    data = files.read_json(path)
    for key, cls in (("train", training.TrainConfig), ("run", RunConfig)):
        if key not in data:
            raise ValueError(f"{path} has no {key!r} section (keys: {sorted(data)}); expected the config.json "
                             f"that experiments/train.py writes")
        files.check_fields(cls, data[key], f"{path} key {key!r}")
    try:
        return load_config(run_dir)
    except (TypeError, ValueError, KeyError, AttributeError) as e:
        raise ValueError(f"{path}: {type(e).__name__}: {e}") from None


def _check_same_tree(expected, got, run_dir, step):
    def paths(tree):
        flat = jax.tree_util.tree_flatten_with_path(tree)[0]
        return {jax.tree_util.keystr(p): tuple(x.shape) for p, x in flat}

    want, have = paths(expected), paths(got)
    missing, unexpected = sorted(set(want) - set(have)), sorted(set(have) - set(want))
    shapes = sorted(k for k in set(want) & set(have)
                    if want[k] != have[k] and not k.endswith(("['fixed_pattern']", "['learned_fixed']")))
    if missing or unexpected or shapes:
        raise ValueError(f"checkpoint {run_dir} step {step} does not match its config.json (different noiselist "
                         f"or U-Net options?): missing {missing}, unexpected {unexpected}, shape mismatch {shapes}")


__all__ = ["find_runs", "resolve_run", "run_or_default", "load_noise_model", "load_run_config", "save_config",
           "load_config", "checkpoint_managers", "save_checkpoint", "restore_state", "save_generator",
           "load_generator", "without_sensor_maps", "RunConfig", "DEFAULT_MODEL_DIRS", "Which"]
