"""Evaluation metrics of camera-noise models, one concept per module:

* :mod:`.kld`: the papers' KLDs: `kld_starlight` (the original's image-histogram KLD, SPEC §6.1, and
  `kld_starlight_per_burst`), `kld_noiseflow` (raw residuals), `kld_srgb` (8-bit residuals), `akld` (DANet).
* :mod:`.residual_stats`: `residual` (the validated ``noisy - clean``), `noise_level_function` and
  `residual_power_spectrum` (NumPy, float64).
* :mod:`.image_quality`: `psnr` and `ssim` per image (pure JAX, jittable).

The noise-structure metrics (spatial and cross-channel correlation) are `starlight_jax.structure`.
"""
from starlight_jax.metrics.image_quality import gaussian_window, psnr, ssim
from starlight_jax.metrics.kld import (NOISEFLOW_BIN_EDGES, SRGB_BIN_EDGES, STARLIGHT_BIN_EDGES, KLDPerBurst, akld,
                                       kld_noiseflow, kld_srgb, kld_starlight, kld_starlight_per_burst)
from starlight_jax.metrics.residual_stats import (NoiseLevelFunction, noise_level_function, residual,
                                                  residual_power_spectrum)

__all__ = ["kld_starlight", "kld_starlight_per_burst", "KLDPerBurst", "kld_noiseflow", "kld_srgb", "akld",
           "STARLIGHT_BIN_EDGES", "NOISEFLOW_BIN_EDGES", "SRGB_BIN_EDGES", "residual", "NoiseLevelFunction",
           "noise_level_function", "residual_power_spectrum", "psnr", "ssim", "gaussian_window"]
