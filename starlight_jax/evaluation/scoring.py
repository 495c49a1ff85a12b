"""Test-set evaluation of a learned noise model against three classical baselines.

`evaluate_model(model, dataset, crop_size=..., frames=...)` noises every test burst four ways and scores
each against the real noisy burst:

* ``"model"``: the learned generator (``train=False``, the crop's offset for the fixed pattern);
* ``"gaussian"``: `fit_gaussian` on the train split;
* ``"poisson_gaussian"``: `fit_poisson_gaussian_censored` on the train split;
* ``"binned_gaussian"``: `fit_binned_gaussian` (16 intensity bins, mean and std per bin) on the train split.

The test bursts are those of the training loop's evaluation: the test split in sorted order, frames
``[0, T)``, the fixed crop at (10, 10). The baselines are fitted on the train split as the training loop
reads it in epoch 0 (seeded random crops and windows). Sample ``l`` of model ``m`` on burst ``i`` uses
``fold_in(fold_in(fold_in(key(seed), i), m), l)``, so results are reproducible.

Metrics per model (all in `starlight_jax.metrics`):

* ``kld_starlight_mean`` / ``kld_starlight_sum``: the original's image-histogram KLD, per burst, then the
  mean and the sum over bursts (the sum is what the original logged as test/kld);
* ``kld_noiseflow`` (raw data) or ``kld_srgb`` (sRGB data: the ``pairs`` source and SIDD sRGB): residual
  histogram KLD, averaged over bursts;
* ``akld``: DANet's AKLD over ``n_samples`` independent samples, averaged over bursts;
* ``akld_floor``: the AKLD of the model's sample 0 against its sample 1 in the real data's place (None with
  ``n_samples=1``): what the model would score if the real noise were its own. AKLD compares 7×7 local
  variances, whose sampling scatter grows with the noise's spatial correlation, so a model with the data's
  correlation scores higher than a white one of the same level (`starlight_jax.metrics.akld`); this floor
  says how much of a model's AKLD is that scatter;
* ``residual_mean`` / ``residual_std`` of sample 0 (also given for the real data, key ``"real"``);
* ``n_bursts``, ``n_images`` (= bursts x frames: the number of noisy images scored) and ``n_samples``.

Structure metrics per model (`starlight_jax.structure`, sample 0 against the real residuals of all test
images; `structure_scores`): ``"structure"`` holds ``block1_kld`` / ``block2_kld`` / ``block4_kld`` (nats),
``spectrum_db`` (dB), ``xcorr_err`` and ``nlf_err`` (per channel under ``per_channel``);
``"structure_floor"`` the same metrics between the model's samples 1 and 0, two independent draws on the
same clean images: the value a perfect model would score on this test set (None with ``n_samples=1``);
``"residual_structure"`` the block-variance ratios and channel correlations of sample 0 (also for the real
data). The block histograms are lattice-aligned when the real residuals lie on the dataset's quantisation
step (`structure.lattice_step`).

When the model rounds its output to the data's quantisation step (`GeneratorConfig.quantize`), the
baselines' samples are rounded to the same step, so that the comparison is of the noise, not of the lattice
(the image-histogram KLD of SPEC §6.1 has 1000 bins: real 8-bit data fill one in four, a continuous sample
all of them).

The residual metrics (``kld_noiseflow``, ``akld``, residual statistics, noise level functions) measure
residuals from clean + the dataset's fixed pattern when the baselines use it (`score_samples`).

.. note::
   **Baselines and the fixed pattern.** When the dataset knows its additive fixed pattern (the mean dark
   frame: black-level pedestal, per-channel offset, column pattern; `BurstDataset.fixed_pattern`), the
   baselines are fitted to ``noisy - clean - fixed_pattern`` and add the cropped pattern back when they
   sample, as a calibrated classical model would (it is the same map the learned ``fixed1`` component
   adds). A learned model whose noiselist has no ``fixed1``/``learnedfixed`` cannot produce that offset
   (the shipped default is exported without its map): it gets the same cropped pattern added to its
   samples, as the denoiser benchmark does (`starlight_jax.denoise.train`), so every source is scored on
   its random noise alike; the result carries a note saying so. ``subtract_fixed_pattern=False`` fits the
   baselines to the raw residual and adds no pattern to anything.
"""
from __future__ import annotations

from typing import Optional

import numpy as np

from starlight_jax import compare, structure
from starlight_jax.data.batches import is_srgb
from starlight_jax.evaluation.parameters import baseline_parameters, learned_parameters, physical_parameters
from starlight_jax.evaluation.report import nlf_to_dict
from starlight_jax.evaluation.samples import (MODELS, Baselines, EvalSamples, check_channels, draw_samples,
                                              fit_baselines, uses_offset)
from starlight_jax.generator import NoiseModel
from starlight_jax.metrics.kld import akld, kld_noiseflow, kld_srgb, kld_starlight_per_burst
from starlight_jax.metrics.residual_stats import noise_level_function


# ----------------------------------------------------------------------------------------------------
# Metrics
# ----------------------------------------------------------------------------------------------------
def score_samples(samples: EvalSamples, *, srgb: bool) -> dict:
    """The metrics of the module docstring for every model in ``samples.generated``.

    The residual metrics (``kld_noiseflow``, ``akld``) measure residuals from ``samples.reference`` =
    clean + the dataset's fixed pattern (when the baselines use it), for the real data and every model
    alike: Noise Flow's bins span only [-0.1, 0.1], and data that keep a black-level pedestal would
    otherwise put every residual in the overflow bin. ``kld_srgb`` uses the clean image (sRGB data have
    no fixed pattern).
    """
    n, t = samples.real.shape[:2]
    ref = np.broadcast_to(samples.reference, samples.real.shape)
    r = samples.residual(samples.real)
    out = {"real": {"residual_mean": float(r.mean()), "residual_std": float(r.std())}}
    for m, gen in samples.generated.items():
        kld = kld_starlight_per_burst(gen[0], samples.real)
        res = {"kld_starlight_mean": kld.mean, "kld_starlight_sum": kld.sum}
        if srgb:
            res["kld_srgb"] = float(np.mean([kld_srgb(samples.real[i], samples.clean[i], gen[0, i])
                                             for i in range(n)]))
        else:
            res["kld_noiseflow"] = float(np.mean([
                kld_noiseflow(samples.real[i], ref[i], gen[0, i]) for i in range(n)]))
        res["akld"] = float(np.mean([akld(samples.real[i], ref[i], gen[:, i]) for i in range(n)]))
        res["akld_floor"] = (float(np.mean([akld(gen[1, i], ref[i], gen[0, i]) for i in range(n)]))
                             if gen.shape[0] > 1 else None)
        r = samples.residual(gen[0])
        res["residual_mean"], res["residual_std"] = float(r.mean()), float(r.std())
        res["n_bursts"], res["n_images"], res["n_samples"] = int(n), int(n * t), int(gen.shape[0])
        out[m] = res
    return out


def nlf_curves(samples: EvalSamples, *, n_bins: int = 32) -> dict:
    """Noise level functions (residual variance vs clean intensity, per channel) of the real data and
    of sample 0 of every model: ``{"real": NoiseLevelFunction, "model": ..., ...}``."""
    curves = {"real": _nlf(samples.real, samples, n_bins)}
    for m, gen in samples.generated.items():
        curves[m] = _nlf(gen[0], samples, n_bins)
    return curves


def _nlf(noisy, samples: EvalSamples, n_bins: int):
    # Binned by the clean value; residuals from the reference (clean + fixed pattern), as in score_samples.
    res = samples.residual(noisy)
    return noise_level_function(samples.clean + res, samples.clean, n_bins=n_bins)


def structure_scores(samples: EvalSamples, *, step: Optional[float] = None,
                     channel_names=None) -> dict:
    """The structure metrics of the module docstring for every model in ``samples.generated``.

    Residuals are from ``samples.reference`` as in `score_samples`; all test images are pooled (leading
    axes flattened). ``step`` is the dataset's quantisation step: the block histograms use its lattice when
    the real residuals lie on it.

    Returns:
      ``{"real": {"residual_structure": ...}, "setup": {"step": lattice step or None}, m: {"structure",
      "structure_floor", "residual_structure"}}`` (see the module docstring).
    """
    clean = np.broadcast_to(samples.clean, samples.real.shape)
    real = samples.residual(samples.real)
    step = structure.lattice_step(real, step)
    out = {"real": {"residual_structure": structure.describe_residual(real, channel_names)},
           "setup": {"step": step}}
    for m, gen in samples.generated.items():
        res = samples.residual(gen[0])
        out[m] = {"structure": structure.structure_metrics(real, res, clean, step=step),
                  "structure_floor": (structure.structure_metrics(samples.residual(gen[1]), res, clean, step=step)
                                      if gen.shape[0] > 1 else None),
                  "residual_structure": structure.describe_residual(res, channel_names)}
    return out


# ----------------------------------------------------------------------------------------------------
# Everything together
# ----------------------------------------------------------------------------------------------------
def evaluate_model(model: NoiseModel, dataset, *, crop_size: int, frames: int, seed: int = 0,
                   max_bursts: Optional[int] = None, n_samples: int = 4, baselines: Optional[Baselines] = None,
                   subtract_fixed_pattern: bool = True, max_train_bursts: Optional[int] = None,
                   return_samples: bool = False, test_data=None, compare_with: Optional[NoiseModel] = None):
    """Scores the learned model and the baselines on the test split (or on every burst of ``test_data``).

    Args:
      model: the learned `NoiseModel` (e.g. from `checkpoint.load_noise_model`).
      dataset: a `BurstDataset` with the model's channel count.
      crop_size: test crop side (a multiple of 64; use the training crop).
      frames: frames per test burst.
      seed: seed of the sample keys and of the train loader the baselines are fitted on.
      max_bursts: score only the first N test bursts.
      n_samples: samples per burst and model for AKLD (L).
      baselines: already fitted `Baselines`; default: fitted here on the train split.
      subtract_fixed_pattern: see the module note (used only when fitting here).
      max_train_bursts: fit the baselines on the first N train bursts only.
      return_samples: also return the `EvalSamples` (for plots).
      test_data: another `BurstDataset` (e.g. another camera's pairs) whose every burst is scored; the
        baselines are still fitted on ``dataset``'s train split, as the model was: a cross-set test.
      compare_with: a second `NoiseModel` (e.g. the run's step-0 model) drawn on the same scenes with the
        same sample keys; ``result["comparison"]`` then holds `compare.compare_models` of the two (a = the
        model, b = this one) and ``result["compared_model"]`` its pooled metrics.

    Returns:
      A JSON-ready dict: one entry per name in `MODELS` (each the metrics and structure metrics of the
      module docstring), ``"real"`` (residual mean and std and ``residual_structure`` of the real data),
      ``"baselines"`` (fitted parameters), ``"learned_parameters"``,
      ``"noise_level_function"`` (per model, for plots), ``"setup"``, ``"notes"`` and, when the dataset
      has a ground truth (synthetic), ``"physical_parameters"`` (see `physical_parameters`). With
      ``return_samples``, ``(result, samples)``.

    Raises:
      ValueError: channel mismatch between model and dataset, an empty split or bad options.
    """
    check_channels(model, dataset)
    if baselines is None:
        baselines = fit_baselines(dataset, crop_size=crop_size, frames=frames, seed=seed,
                                  max_bursts=max_train_bursts, subtract_fixed_pattern=subtract_fixed_pattern)
    if test_data is not None:
        check_channels(model, test_data)
        split, scored = ("train", "test"), test_data
    else:
        split, scored = ("test" if len(dataset.test) else "train"), dataset
    samples = draw_samples(model, scored, baselines, crop_size=crop_size, frames=frames, seed=seed,
                           max_bursts=max_bursts, n_samples=n_samples, split=split)
    srgb = is_srgb(scored)
    result = score_samples(samples, srgb=srgb)
    struct = structure_scores(samples, step=scored.info.get("quantization_step"),
                              channel_names=scored.channel_names)
    for m in result:
        result[m].update(struct[m])
    result["baselines"] = baseline_parameters(baselines, dataset.truth)
    result["learned_parameters"] = learned_parameters(model)
    if dataset.truth is not None:
        result["physical_parameters"] = physical_parameters(model, dataset.truth)
    result["noise_level_function"] = nlf_to_dict(nlf_curves(samples))
    result["setup"] = {"dataset": dataset.name, "test_dataset": scored.name,
                       "split": split if isinstance(split, str) else list(split), "bursts": list(samples.names),
                       "crop_size": int(crop_size), "frames": int(frames), "seed": int(seed),
                       "n_samples": int(n_samples), "residual_kld": "kld_srgb" if srgb else "kld_noiseflow",
                       "noiselist": model.config.noise.noiselist, "compat": model.config.noise.compat,
                       "network": model.config.network, "structure_lattice_step": struct["setup"]["step"]}
    result["notes"] = _notes(model, dataset, baselines, samples, split)
    if compare_with is not None:
        result.update(_comparison(compare_with, scored, baselines, samples, crop_size=crop_size, frames=frames,
                                  seed=seed, max_bursts=max_bursts, split=split,
                                  step=struct["setup"]["step"]))
    if samples.generated["model"].shape[0] < 2:
        result["notes"].append("n_samples = 1: no second draw, so no sampling floor for the structure metrics")
    if any(result[m].get("kld_noiseflow", 1.0) <= 0 for m in MODELS):
        result["notes"].append(
            "a kld_noiseflow <= 0: the metric (as Noise Flow's) keeps only bins that both histograms populate, "
            "so residuals that miss the real ones score near 0 or below; check residual_mean/std and the "
            "histograms")
    return (result, samples) if return_samples else result


def _comparison(other: NoiseModel, scored, baselines, samples: EvalSamples, *, step, **draw) -> dict:
    """``{"compared_model": its pooled structure metrics, "comparison": compare.compare_models(...)}``."""
    check_channels(other, scored)
    # The same keys as the model's draws (model index 0): the paired differences then see the models only.
    b = draw_samples(other, scored, baselines, n_samples=1, models=("model",), **draw).generated["model"][0]
    clean = np.broadcast_to(samples.clean, samples.real.shape)
    real, a_res, b_res = samples.residual(samples.real), samples.residual(samples.generated["model"][0]), \
        samples.residual(b)
    return {"compared_model": {"structure": structure.structure_metrics(real, b_res, clean, step=step)},
            "comparison": {"metrics": compare.compare_models(real, a_res, b_res, clean, step=step),
                           "confidence": compare.CONFIDENCE, "scenes": list(samples.names)}}


def _notes(model, dataset, baselines, samples, split) -> list[str]:
    notes = []
    if not isinstance(split, str):
        notes.append("cross-set: every burst of the test data is scored; the baselines were fitted on the "
                     f"train split of {dataset.name!r}, as the model was trained")
    elif split != "test":
        notes.append(f"dataset {dataset.name!r} has no test split: scored on the train split")
    if dataset.fixed_pattern is not None and not uses_offset(model):
        fp = np.asarray(dataset.fixed_pattern, np.float64)
        notes.append(
            f"the data carry an additive fixed pattern (mean {fp.mean():.4g}, column/channel spread "
            f"{fp.std():.3g} in [0, 1] units) that this model's noiselist ({model.config.noise.noiselist}) "
            f"cannot produce (no fixed1)" + ("; it is added to this model's samples, as the baselines add it"
                                             if baselines.fixed_pattern else ""))
    return notes


__all__ = ["score_samples", "nlf_curves", "structure_scores", "evaluate_model"]
