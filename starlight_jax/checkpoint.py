"""Loading trained generators from run folders, as the original's `load_from_checkpoint_ab` did.

A run folder (written by `starlight_jax.train_loop`) holds ``config.json``, ``latest/<step>/`` and
``best/<step>/``. `load_noise_model(run_dir, which)` returns the `NoiseModel` (generator config + params)
of the checkpoint picked by ``which``: ``"latest"`` (default), ``"best"`` (lowest mean test KLD) or a step
number.
"""
from __future__ import annotations

import pathlib
from typing import Union

import jax
import jax.numpy as jnp
import orbax.checkpoint as ocp

from starlight_jax.generator import NoiseModel, init_generator

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
    if not (path / "config.json").is_file():
        raise FileNotFoundError(f"{path} is not a run folder (no config.json); expected the folder that "
                                f"experiments/train.py printed, e.g. checkpoints/<run name>")
    return path


def _pick_step(manager: ocp.CheckpointManager, which: Which, folder: pathlib.Path) -> int:
    steps = manager.all_steps()
    if not steps:
        raise FileNotFoundError(f"no checkpoint in {folder}")
    if which in ("latest", "best"):
        return max(steps)
    if isinstance(which, int) or (isinstance(which, str) and which.isdigit()):
        if int(which) not in steps:
            raise FileNotFoundError(f"no checkpoint at step {which} in {folder}; available steps: {sorted(steps)}")
        return int(which)
    raise ValueError(f"which must be 'latest', 'best' or a step number, got {which!r}")


def load_noise_model(run_dir=None, which: Which = "latest", *, root="checkpoints"):
    """Loads a trained generator.

    Args:
      run_dir: a run folder, or a folder written by ``experiments/export.py`` (``generator.json`` +
        ``generator.npz`` + the run's ``config.json``: ``which`` is then ignored); None picks the newest
        run under ``root``.
      which: ``"latest"``, ``"best"`` or a step number.
      root: where to look when ``run_dir`` is None.

    Returns:
      ``(model, train_config, info)``: the `NoiseModel`, the `TrainConfig` it was trained with, and
      ``{"run_dir", "step", "which"}``.

    Raises:
      FileNotFoundError: no run folder / checkpoint; ValueError: the checkpoint does not match its config
        (e.g. a different noiselist or U-Net), naming the differing parameters.
    """
    from starlight_jax.train_loop import load_config

    run_dir = resolve_run(run_dir, root).resolve()
    cfg, _ = load_config(run_dir)
    if (run_dir / "generator.npz").is_file() and not (run_dir / "latest").is_dir():
        # An exported generator (experiments/export.py) beside its run's config.json: one model, no steps.
        import json

        model = load_generator(run_dir)
        step = json.loads((run_dir / "generator.json").read_text()).get("info", {}).get("step")
        return model, cfg, {"run_dir": str(run_dir), "step": step, "which": "exported"}
    folder = run_dir / ("best" if which == "best" else "latest")
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


# ------------------------------------------------------------------------------------------------------
# Slim generator files: what `synthesize` ships with (no critic, no optimiser state)
# ------------------------------------------------------------------------------------------------------
def save_generator(model: NoiseModel, folder, info: dict | None = None) -> pathlib.Path:
    """Writes ``generator.npz`` (params, flattened by key path) and ``generator.json`` (config + ``info``)."""
    import dataclasses
    import json

    import numpy as np

    folder = pathlib.Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    flat = {jax.tree_util.keystr(p): np.asarray(x) for p, x in jax.tree_util.tree_flatten_with_path(model.params)[0]}
    np.savez_compressed(folder / "generator.npz", **flat)
    config = dataclasses.asdict(model.config)
    (folder / "generator.json").write_text(json.dumps({"config": config, "info": info or {}}, indent=2,
                                                      default=list))
    return folder


def without_sensor_maps(model: NoiseModel) -> NoiseModel:
    """The same model without its ``fixed1``/``learnedfixed`` maps and its output rounding, for use on
    images of any size and bit depth.

    A fixed-pattern map belongs to one sensor and one frame size, the quantisation step
    (`GeneratorConfig.quantize`) to one ADC or file format; the random components (shot, read, row, …) are
    what transfers to other images. Only valid for noise-only generators (``noUnet``): a U-Net trained with
    the map in its input would see a different input without it.
    """
    import dataclasses

    if model.config.network != "noUnet" and (model.config.noise.fixed or model.config.noise.learned_fixed):
        raise ValueError(f"cannot drop the fixed-pattern maps of a {model.config.network} generator: its U-Net "
                         f"was trained on noise that contained them")
    noise_cfg = dataclasses.replace(model.config.noise, fixed=False, learned_fixed=False)
    noise = {k: v for k, v in model.params["noise"].items() if k not in ("fixed_pattern", "learned_fixed")}
    return NoiseModel(params={**model.params, "noise": noise},
                      config=dataclasses.replace(model.config, noise=noise_cfg, quantize=None))


def load_generator(folder) -> NoiseModel:
    """Reads a folder written by `save_generator`."""
    import json

    import numpy as np

    from starlight_jax.generator import GeneratorConfig
    from starlight_jax.noiselist import NoiseConfig

    folder = pathlib.Path(folder)
    if not (folder / "generator.json").is_file() or not (folder / "generator.npz").is_file():
        raise FileNotFoundError(f"{folder} holds no generator.json + generator.npz (see save_generator)")
    config = json.loads((folder / "generator.json").read_text())["config"]
    noise = config.pop("noise")
    noise["fixed_shape"] = tuple(noise["fixed_shape"])
    if config.get("unet_widths") is not None:
        config["unet_widths"] = tuple(config["unet_widths"])
    gen_cfg = GeneratorConfig(noise=NoiseConfig(**noise), **config)
    template = jax.eval_shape(lambda: init_generator(jax.random.key(0), gen_cfg).params)
    with np.load(folder / "generator.npz") as data:
        stored = dict(data)
    paths, treedef = jax.tree_util.tree_flatten_with_path(template)
    names = [jax.tree_util.keystr(p) for p, _ in paths]
    missing, unexpected = sorted(set(names) - set(stored)), sorted(set(stored) - set(names))
    if missing or unexpected:
        raise ValueError(f"{folder / 'generator.npz'} does not match {folder / 'generator.json'}: missing "
                         f"{missing}, unexpected {unexpected}")
    params = jax.tree_util.tree_unflatten(treedef, [jnp.asarray(stored[n]) for n in names])
    return NoiseModel(params=params, config=gen_cfg)
