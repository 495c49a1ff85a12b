"""The denoiser benchmark's methods, named size presets and `BenchmarkConfig` (`starlight_jax.denoise.benchmark`)."""
from __future__ import annotations

import dataclasses
from typing import Optional

from starlight_jax.denoise.model import DenoiserConfig
from starlight_jax.denoise.train import DenoiseTrainConfig

METHODS = ("model", "gaussian", "poisson_gaussian", "binned_gaussian", "real")
LABELS = {"model": "(a) learned noise model", "gaussian": "(b) Gaussian", "poisson_gaussian": "(c) Poisson-Gaussian",
          "binned_gaussian": "(e) binned Gaussian", "real": "(d) real pairs"}
SHORT = {m: LABELS[m].split()[0] for m in METHODS}  # "(a)", ...
BASELINES = ("gaussian", "poisson_gaussian", "binned_gaussian")
# A denoiser whose final train L1 is within 2 % of its input's has (nearly) become the identity: with the
# residual output and ReLUs, too large a step can kill every hidden unit, after which only the output
# bias (the mean residual, ~0) is learned.
COLLAPSE = 0.98


# Flat sizes of the named presets. "standard" is BenchmarkConfig's default, chosen by measurement on a 2-core
# CPU (docs/denoise_benchmark.md): 4 methods x 2 seeds in ~10 minutes of two cores. A peak lr of 2e-3 killed
# whole denoisers (see COLLAPSE); 1e-3 with a warm-up and a cosine decay to 0 did not. "tiny" checks plumbing.
PRESETS = {
    "tiny": {"steps": 3, "crop_size": 64, "batch_images": 4, "depth": 2, "width": 4, "lr": 1e-3,
             "schedule": "constant", "warmup_steps": 0},
    "standard": {"steps": 300, "crop_size": 64, "batch_images": 8, "depth": 8, "width": 32, "lr": 1e-3,
                 "schedule": "cosine", "warmup_steps": 30},
}
_STD = PRESETS["standard"]
# "long": the standard net trained 1000 steps (~7 minutes a denoiser on 2 cores). Real pairs then beat the
# noisy input by 1.6 dB on PolyU instead of 1.3, and sources the standard size ties start to separate.
PRESETS["long"] = {**_STD, "steps": 1000}


@dataclasses.dataclass(frozen=True)
class BenchmarkConfig:
    """Sizes and options of one benchmark run.

    Attributes:
      steps: training steps per denoiser.
      crop_size: training crop side (a multiple of 64, as the data pipeline requires).
      batch_images: images per step = bursts per step x ``frames``.
      frames: frames per training burst (None: min(4, the fewest frames of any train burst)).
      test_frames: frames scored per test burst (raw bursts; sRGB pairs have 1).
      max_test: score only the first N test bursts (None: all).
      max_train_bursts: fit the baselines on the first N train bursts of epoch 0 (None: all).
      seed: the first seed (loader, init and step keys; the same for every method).
      seeds: denoisers per method, with seeds ``seed, ..., seed + seeds - 1`` (the module docstring's
        spread and ties need >= 2).
      fit_seed: the loader seed of the crops the baselines are fitted on; apart from the denoisers' seeds,
        so that the noise sources under test stay the same whatever ``seed`` (like a learned model).
      fixed_pattern: add the data's fixed pattern to synthetic pairs (see the module docstring).
      methods: which of `METHODS` to train.
      denoiser: the network (its ``channels`` is set from the data).
      train: the optimiser.
      parallel: ``"shard"`` or ``"pmap"`` (`starlight_jax.parallel.DataParallel`).
      devices: use the first N local devices (None: all); bursts per step must divide over them.
      log_every: print the training loss every N steps (0: never).
      n_figure: test images shown in the figure.
    """

    steps: int = _STD["steps"]
    crop_size: int = _STD["crop_size"]
    batch_images: int = _STD["batch_images"]
    frames: Optional[int] = None
    test_frames: int = 2
    max_test: Optional[int] = None
    max_train_bursts: Optional[int] = None
    seed: int = 0
    seeds: int = 2
    fit_seed: int = 0
    fixed_pattern: bool = True
    methods: tuple = METHODS
    denoiser: DenoiserConfig = DenoiserConfig(depth=_STD["depth"], width=_STD["width"])
    train: DenoiseTrainConfig = DenoiseTrainConfig(lr=_STD["lr"], schedule=_STD["schedule"],
                                                   warmup_steps=_STD["warmup_steps"])
    parallel: str = "shard"
    devices: Optional[int] = None
    log_every: int = 50
    n_figure: int = 2

    def __post_init__(self):
        for name in ("steps", "batch_images", "test_frames", "seeds"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ValueError(f"{name} must be a positive int, got {v!r}")
        for name in ("frames", "max_test", "max_train_bursts", "devices"):
            v = getattr(self, name)
            if v is not None and (isinstance(v, bool) or not isinstance(v, int) or v < 1):
                raise ValueError(f"{name} must be a positive int or None, got {v!r}")
        if self.crop_size < 64 or self.crop_size % 64:
            raise ValueError(f"crop_size must be a positive multiple of 64, got {self.crop_size}")
        for name in ("seed", "fit_seed"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 0:
                raise ValueError(f"{name} must be an int >= 0, got {v!r}")
        bad = [m for m in self.methods if m not in METHODS]
        if bad or not self.methods or len(set(self.methods)) != len(self.methods):
            raise ValueError(f"methods must be distinct names from {METHODS}, got {self.methods}")


_DENOISER_KEYS = ("depth", "width", "residual")
_TRAIN_KEYS = ("lr", "schedule", "warmup_steps")


def preset_config(preset: str = "standard", **overrides) -> BenchmarkConfig:
    """A `BenchmarkConfig` from the sizes of ``PRESETS[preset]`` with ``overrides`` on top.

    Args:
      preset: a key of `PRESETS`.
      **overrides: `BenchmarkConfig` fields, or the preset's flat keys ``depth``, ``width``, ``residual``
        (the `DenoiserConfig`) and ``lr``, ``schedule``, ``warmup_steps`` (the `DenoiseTrainConfig`). A value
        of None keeps the preset's (so CLI flags left unset can be passed as they are).

    Raises:
      ValueError: an unknown preset or key, or a bad value (from the configs' checks).
    """
    if preset not in PRESETS:
        raise ValueError(f"preset must be one of {sorted(PRESETS)}, got {preset!r}")
    fields = {f.name for f in dataclasses.fields(BenchmarkConfig)}
    bad = sorted(set(overrides) - fields - set(_DENOISER_KEYS) - set(_TRAIN_KEYS))
    if bad:
        raise ValueError(f"unknown benchmark option(s) {bad}")
    flat = {**PRESETS[preset], **{k: v for k, v in overrides.items() if v is not None}}
    den = {k: flat.pop(k) for k in _DENOISER_KEYS if k in flat}
    tr = {k: flat.pop(k) for k in _TRAIN_KEYS if k in flat}
    flat["denoiser"] = dataclasses.replace(flat.get("denoiser", DenoiserConfig()), **den)
    flat["train"] = dataclasses.replace(flat.get("train", DenoiseTrainConfig()), **tr)
    return BenchmarkConfig(**flat)


__all__ = ["METHODS", "LABELS", "SHORT", "BASELINES", "COLLAPSE", "PRESETS", "BenchmarkConfig", "preset_config"]
