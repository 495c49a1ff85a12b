"""Named training presets: the one place where the training defaults live.

A preset is a function returning a flat dict of every configurable field: the fields of
`training.TrainConfig` and `run_config.RunConfig` (with the exceptions in `FIELD_ONLY`) and the data
options (`DATA_FIELDS`). ``experiments/train.py --config NAME`` starts from ``get_config(NAME)``; each
flag given replaces the field of the same name (`FLAG_ONLY` lists the flags that are not fields). Like
big_vision's and flax's ``configs/``, each preset's docstring gives its command and run time.

Some values are resolved against the dataset and the run's length (`resolve`), the same way for every
preset:

* ``channels`` None: the dataset's channel count;
* ``frames``: cut to the dataset's shortest burst when that is shorter (a given ``--frames`` longer than
  it is refused);
* ``quantize`` ``"auto"``: the dataset's quantisation step under ``compat="physics"``, None under
  ``"starlight"``; ``"none"``: None; a number: that step;
* ``critic_scale`` ``"auto"``: 1 / the std of the residual (noisy - clean) of up to `SCALE_BURSTS` training
  bursts at the run's crop, so that the residual critic sees unit-scale noise; a number: that factor;
* ``critic_warmup``: the preset's warm-up is cut to 1/`WARMUP_FRACTION` of the run's critic steps (a given
  one is kept, and refused if the generator would never step);
* ``lr_decay`` ``"cosine"``: ``TrainConfig.decay_steps`` = the run's generator updates after the
  warm-up; ``"none"``: None.

The fields that follow ``compat`` (`MODE`) are replaced by the other mode's when ``--compat`` names a mode
other than the preset's, before the explicit flags apply.

`training.TrainConfig()` is the ``cpu`` preset resolved on the embedded synthetic dataset (128-px frames,
one device), i.e. what the CLI trains with no flags on a CPU; its field defaults are literals there (this
module sits above `training`), and tests/test_configs.py checks them against `resolve`.
"""
from __future__ import annotations

import dataclasses
from typing import Callable, Optional

import numpy as np

from starlight_jax.noiselist import DEFAULT_NOISELIST

# The default warm-up is at most this fraction of the run's critic steps, so a short run trains the generator.
WARMUP_FRACTION = 4
# Training bursts whose residual std sets critic_scale "auto".
SCALE_BURSTS = 16

# Defaults that follow --compat (docs/compat.md, docs/training_notes.md): the physics mode's critic sees the
# residual beside the clean patch, its scalars start from the data and have their own rate, and the level
# term holds the noise power; starlight keeps the original's unconditional Fourier critic, fixed inits, one
# constant Adam rate and the LPIPS term.
MODE = {
    "physics": dict(discriminator_loss="real", critic_condition="residual", critic_warmup=200, lr_decay="cosine",
                    init_from_data=True, physics_lr=2e-2, generator_loss="none", level_weight=10.0),
    "starlight": dict(discriminator_loss="fourier", critic_condition="none", critic_warmup=0, lr_decay="none",
                      init_from_data=False, physics_lr=None, generator_loss="lpips", level_weight=0.0),
}

# Data options: preset keys and flags, not fields of TrainConfig or RunConfig (they become
# RunConfig.dataset_options).
DATA_FIELDS = ("frame_size",)
# Preset keys and flags that are not config fields, each with why.
FLAG_ONLY = {
    "lr_decay": "resolved into TrainConfig.decay_steps (the run's generator updates, or None)",
}
# Config fields without a preset key or flag of their own, each with why.
FIELD_ONLY = {
    "decay_steps": "from --lr_decay and the run's length (`resolve`)",
    "workdir": "from --save_path/--run_name/--notes (where the run folder goes, not what is trained)",
    "dataset_options": "from the data options (--frame_size)",
    "progress": "--no_progress (a session setting; a flag that turns a default off)",
    "max_seconds": "--max_minutes (a session setting, in minutes on the command line)",
}

_COMMON = dict(
    # TrainConfig
    noiselist=DEFAULT_NOISELIST, compat="physics", unet_opts="residualFalse_conv_tconv_selu", unet_widths=None,
    unet_skip=False, per_channel=False, quantize="auto", sigmoid=False, lpips_weight=1.0, structure_weight=0.0,
    critic_scale=1.0, freeze_tone=False, level_bins=1,
    lr=2e-4, b1=0.5, b2=0.999, physics_optimizer="nsgd", decay_floor=0.05, lambda_gp=10.0, batch_size=1,
    channels=None, seed=0, precision="float32",
    # RunConfig
    dataset="synthetic", data_dir=None, steps=None, log_every=10, keep=3, parallel="shard", devices=None,
    test_bursts=4,
)


def cpu() -> dict:
    """The CPU-sized default (what the CLI trains on a CPU backend with no --config).

        python experiments/train.py --noiselist shot_read_uniform_row_periodic_fixed1   # ~5 min on 2 cores

    Crop 64, 8 frames, no U-Net, critic width 16, one critic step per generator step, 40 epochs of the
    embedded 128-px synthetic frames (~1400 critic steps): ~20x cheaper per step than the original's shape.
    Physics mode: residual critic, data init, 200-step warm-up (cut for short runs), cosine decay, nsgd
    physical rate 2e-2, level term 10, output quantised to the dataset's step.
    """
    return {**_COMMON, **MODE["physics"], "network": "noUnet", "crop_size": 64, "frames": 8, "critic_width": 16,
            "n_critic": 1, "epochs": 40, "eval_every": 200, "frame_size": 128}


def gpu() -> dict:
    """The original's full-size shape in physics mode (what the CLI trains on a GPU with no --config).

        python experiments/train.py --config gpu   # ~1 h on one H100-class GPU for 200 epochs

    Crop 256, 16 frames, U-Net, critic width 64, n_critic 5, 200 epochs of 256-px synthetic frames.
    """
    return {**_COMMON, **MODE["physics"], "network": "Unet", "crop_size": 256, "frames": 16, "critic_width": 64,
            "n_critic": 5, "epochs": 200, "eval_every": 100, "frame_size": 256}


def srgb() -> dict:
    """The sRGB-pairs recipe: a camera-pipeline model with per-channel scalars on clean/noisy 8-bit pairs.

        python experiments/train.py --config srgb --data_dir ../shared/data/srgb_pairs/nam   # ~10 min on 2 cores

    noiselist shot_read_isp_tone, per_channel, 1 frame, crop 64, 8 pairs per batch, 600 critic steps,
    100-step warm-up, structure term 1, level term 10, no U-Net, critic width 16, n_critic 1, critic scale
    auto (the residual critic sees unit-scale noise; docs/srgb.md). The tone curves train with the rest:
    ``--freeze_tone`` tied this recipe per scene on all six structure metrics on both sets (session 8).
    """
    return {**cpu(), "noiselist": "shot_read_isp_tone", "per_channel": True, "frames": 1, "batch_size": 8,
            "steps": 600, "critic_warmup": 100, "structure_weight": 1.0, "dataset": "pairs", "frame_size": None,
            "critic_scale": "auto"}


def starlight() -> dict:
    """The original's exact behaviour (``compat="starlight"``, docs/compat.md) at its shapes.

        python experiments/train.py --config starlight   # GPU; ~90 s per iteration on a 2-core CPU

    Unconditional Fourier critic of width 64, fixed initial scalars, one constant Adam rate for all of G,
    the AlexNet-LPIPS generator term, n_critic 5 by the per-epoch batch index, crop 256, 16 frames, U-Net,
    200 epochs (the original hard-codes 5000) of 256-px synthetic frames.
    """
    return {**gpu(), "compat": "starlight", **MODE["starlight"]}


PRESETS: dict[str, Callable[[], dict]] = {"cpu": cpu, "gpu": gpu, "srgb": srgb, "starlight": starlight}


def get_config(name: str) -> dict:
    """The preset ``name``'s fields (a fresh dict). Raises ValueError for an unknown name."""
    if name not in PRESETS:
        raise ValueError(f"unknown config {name!r}; the presets are {sorted(PRESETS)}")
    return PRESETS[name]()


def default_preset(backend: str) -> tuple[str, str]:
    """The preset used without ``--config``, and why: ``cpu`` on a CPU backend, ``gpu`` otherwise."""
    if backend == "cpu":
        return "cpu", "no --config given and the JAX backend is cpu"
    return "gpu", f"no --config given and the JAX backend is {backend}"


def apply(values: dict, overrides: dict) -> dict:
    """``values`` with ``overrides`` (explicit flags) on top; a ``compat`` other than the preset's first
    brings that mode's `MODE` fields."""
    out = dict(values)
    compat = overrides.get("compat")
    if compat is not None and compat != values["compat"]:
        out.update(MODE[compat])
    unknown = set(overrides) - set(values)
    if unknown:
        raise ValueError(f"not config fields: {sorted(unknown)}")
    out.update(overrides)
    return out


def resolve(values: dict, dataset, *, devices: int, explicit=(), stored_warmup: Optional[int] = None,
            log=print) -> dict:
    """The `TrainConfig` fields of ``values`` resolved against ``dataset`` (see the module docstring).

    Args:
      values: a preset's fields with the flags applied (`apply`).
      dataset: the loaded `BurstDataset`.
      devices: data-parallel devices (the global batch is ``batch_size * devices``).
      explicit: names given on the command line (their values are kept as given, or refused).
      stored_warmup: a resumed run's warm-up, kept over the preset's.
      log: where the notes of cut defaults go.

    Raises:
      ValueError: naming the flag, when an explicit value does not fit the dataset or the run.
    """
    from starlight_jax.training import TrainConfig  # the fields; training imports JAX

    v = dict(values)
    longest = dataset.min_frames or 1
    if v["frames"] > longest:
        if "frames" in explicit:
            raise ValueError(f"--frames {v['frames']}: the shortest burst of --dataset {v['dataset']} has "
                             f"{longest} frame(s)")
        log(f"[starlight-jax] frames {longest}: the dataset's bursts hold {longest} frame(s) (default "
            f"{v['frames']}; --frames sets it)")
        v["frames"] = longest
    q = v["quantize"]
    if q == "auto":
        v["quantize"] = dataset.info.get("quantization_step") if v["compat"] == "physics" else None
    elif q == "none" or q is None:
        v["quantize"] = None
    else:
        try:
            v["quantize"] = float(q)
        except ValueError:
            raise ValueError(f"--quantize must be 'auto', 'none' or a step such as 0.00392, got {q!r}") from None
    v["channels"] = v["channels"] or dataset.channels
    v["critic_scale"] = _critic_scale(v, dataset)
    total = v["steps"] or v["epochs"] * (len(dataset.train) // (v["batch_size"] * devices))
    if "critic_warmup" in explicit:
        if total and v["critic_warmup"] >= total:
            raise ValueError(f"--critic_warmup {v['critic_warmup']} >= the run's {total} critic steps: the "
                             f"generator would never train (lower it, or raise --steps/--epochs)")
    elif stored_warmup is not None:
        v["critic_warmup"] = stored_warmup  # a resumed run keeps its warm-up
    elif v["critic_warmup"] > total // WARMUP_FRACTION:
        cap = total // WARMUP_FRACTION
        log(f"[starlight-jax] critic warm-up cut from {v['critic_warmup']} to {cap} steps (1/{WARMUP_FRACTION} "
            f"of the run's {total} critic steps, so that the generator trains; --critic_warmup sets it)")
        v["critic_warmup"] = cap
    v["decay_steps"] = (max(1, (total - v["critic_warmup"]) // v["n_critic"]) if v["lr_decay"] == "cosine"
                        else None)
    return {f.name: v[f.name] for f in dataclasses.fields(TrainConfig)}


def _critic_scale(v: dict, dataset) -> float:
    scale = v["critic_scale"]
    if scale != "auto":
        try:
            return float(scale)
        except (TypeError, ValueError):
            raise ValueError(f"--critic_scale must be 'auto' or a number > 0, got {scale!r}") from None
    from starlight_jax.data.batches import load_batches

    batches = load_batches(dataset, "train", crop_size=v["crop_size"], frames=v["frames"], seed=v["seed"],
                           max_bursts=SCALE_BURSTS)
    std = float(np.std(np.concatenate([b["noisy"] - b["clean"] for b in batches])))
    if not std > 0:
        raise ValueError(f"--critic_scale auto: the training pairs of --dataset {v['dataset']} have no noise "
                         f"(residual std {std}); give a number")
    return 1.0 / std
