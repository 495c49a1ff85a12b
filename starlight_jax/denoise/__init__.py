"""Denoisers trained on noise-model pairs: the downstream test of a learned noise model (issue #8).

* :mod:`.model`: `DenoiserConfig`, the DnCNN-style `DnCNN`, `init_denoiser`, `denoise`.
* :mod:`.train`: `train_step` / `eval_step` (pure, jitted, data-parallel via `DataParallel`), noise sources
  (learned model, fitted baselines, real pairs) and the `train_denoiser` loop.
* :mod:`.io`: `save_denoiser` / `load_denoiser` (a folder of ``config.json`` + ``params.npz``) and image I/O.
* :mod:`.benchmark`: `run_benchmark` (learned model vs Gaussian vs Poisson-Gaussian vs real pairs), with its
  methods and presets in :mod:`.benchmark_config` and its table and figure in :mod:`.benchmark_report`.
"""
from starlight_jax.denoise.io import load_denoiser, read_image, save_denoiser, write_image
from starlight_jax.denoise.model import (DenoiserConfig, DnCNN, apply_denoiser, count_params, denoise,
                                         init_denoiser)
from starlight_jax.denoise.train import (DenoiserState, DenoiseTrainConfig, NoiseSource, baseline_source,
                                         create_train_state, eval_step, learned_source, train_denoiser,
                                         train_step)

__all__ = ["DenoiserConfig", "DnCNN", "init_denoiser", "apply_denoiser", "denoise", "count_params",
           "DenoiseTrainConfig", "DenoiserState", "create_train_state", "train_step", "eval_step",
           "NoiseSource", "learned_source", "baseline_source", "train_denoiser", "save_denoiser",
           "load_denoiser", "read_image", "write_image"]
