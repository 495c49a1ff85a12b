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
   adds). A learned model whose noiselist has no ``fixed1`` cannot produce that offset; the result then
   carries a note saying so. ``subtract_fixed_pattern=False`` fits the baselines to the raw residual.
"""
from __future__ import annotations

import functools
import math
from typing import NamedTuple, Optional

import jax
import jax.numpy as jnp
import numpy as np

from starlight_jax import compare
from starlight_jax import metrics as metrics_lib
from starlight_jax import structure
from starlight_jax.baselines import (BinnedGaussianBaseline, GaussianBaseline, PoissonGaussianBaseline,
                                     baseline_mean, fit_binned_gaussian, fit_gaussian,
                                     fit_poisson_gaussian_censored, sample_baseline)
from starlight_jax.data.batches import (fixed_crop as _fixed_crop, is_srgb, largest_crop, load_batches, max_frames,
                                        residual_arrays, run_dataset)
from starlight_jax.generator import NoiseModel, generate
from starlight_jax.noise import MAP_PARAMS, scales

# New models go last: model m's sample keys fold in its index, so the others' numbers stay as they were.
MODELS = ("model", "gaussian", "poisson_gaussian", "binned_gaussian")
BINNED_BINS = 16
LABELS = {"model": "learned model", "gaussian": "Gaussian", "poisson_gaussian": "Poisson-Gaussian",
          "binned_gaussian": f"binned Gaussian ({BINNED_BINS} bins)"}


# ----------------------------------------------------------------------------------------------------
# Baselines
# ----------------------------------------------------------------------------------------------------
class Baselines(NamedTuple):
    """The fitted baselines and what they were fitted on."""
    gaussian: GaussianBaseline
    poisson_gaussian: PoissonGaussianBaseline
    binned_gaussian: BinnedGaussianBaseline
    fixed_pattern: bool  # fitted to noisy - clean - fixed_pattern, and add the pattern back when sampling
    n_bursts: int  # train bursts used


def fit_baselines(dataset, *, crop_size: int, frames: int, seed: int = 0, max_bursts: Optional[int] = None,
                  subtract_fixed_pattern: bool = True, censoring_margin: Optional[float] = 3.0) -> Baselines:
    r"""Fits `GaussianBaseline`, `PoissonGaussianBaseline` and `BinnedGaussianBaseline` on the train split.

    The Poisson-Gaussian fit is `fit_poisson_gaussian_censored`: redone away from the clipping when over
    0.01 % of the noisy values sit at 0 or 1. The Gaussian and binned fits use every pixel.

    Args:
      dataset: a `BurstDataset`.
      crop_size: crop side (as in training).
      frames: frames per burst.
      seed: loader seed (crops and windows of epoch 0).
      max_bursts: use only the first N train bursts.
      subtract_fixed_pattern: fit to ``noisy - fixed_pattern`` when the dataset has a fixed pattern (see
        the module note).
      censoring_margin: k of `fit_poisson_gaussian_censored`; None fits every pixel.

    Returns:
      `Baselines`.
    """
    batches = load_batches(dataset, "train", crop_size=crop_size, frames=frames, seed=seed,
                           max_bursts=max_bursts)
    use_fp = bool(subtract_fixed_pattern and dataset.fixed_pattern is not None)
    noisy, clean, noisy_raw = residual_arrays(dataset, batches, use_fp)
    pg = fit_poisson_gaussian_censored(noisy, clean, clipped=noisy_raw, margin=censoring_margin)
    binned = fit_binned_gaussian(noisy, clean, n_bins=BINNED_BINS)
    return Baselines(fit_gaussian(noisy, clean), pg, binned, use_fp, len(batches))


# One sampler for the baselines (`baselines.sample_baseline`); jitted here, where it runs per burst.
_sample_baseline = jax.jit(sample_baseline)


@functools.partial(jax.jit, static_argnames=("use_offset",))
def _sample_model(model: NoiseModel, key, clean, offset, use_offset: bool):
    return generate(model.params, key, clean, model.config, train=False,
                    fixed_offset=offset if use_offset else None)


def _uses_offset(model: NoiseModel) -> bool:
    return bool(model.config.noise.fixed or model.config.noise.learned_fixed)


# ----------------------------------------------------------------------------------------------------
# Samples
# ----------------------------------------------------------------------------------------------------
class EvalSamples(NamedTuple):
    """Test bursts and what each model made of them (numpy, float32)."""
    clean: np.ndarray  # [N, T, h, w, C]
    real: np.ndarray  # [N, T, h, w, C] real noisy
    generated: dict  # name -> [L, N, T, h, w, C]; sample 0 is the one the histogram metrics use
    offsets: np.ndarray  # [N, 2] crop offsets in the full frame
    names: tuple  # [N] burst names
    offset_map: np.ndarray  # [N, 1, h, w, C] the dataset's fixed pattern at each crop (zeros if not used)

    @property
    def reference(self) -> np.ndarray:
        """``clean + offset_map`` ``[N, T, h, w, C]``: what residuals are measured from."""
        return self.clean + self.offset_map

    def residual(self, noisy) -> np.ndarray:
        """``noisy - clean - offset_map`` for ``noisy`` ``[..., N, T, h, w, C]``."""
        return np.asarray(noisy, np.float32) - self.reference


def draw_samples(model: NoiseModel, dataset, baselines: Baselines, *, crop_size: int, frames: int,
                 seed: int = 0, max_bursts: Optional[int] = None, n_samples: int = 4,
                 split="test", models=MODELS) -> EvalSamples:
    """Noises every burst of ``split`` (a split's name, or several: ``("train", "test")`` for every burst of
    another dataset) with the learned model and every baseline, ``n_samples`` times. ``models``: the names
    of `MODELS` to draw (each keeps its keys whatever the others)."""
    check_channels(model, dataset)
    if isinstance(n_samples, bool) or int(n_samples) < 1:
        raise ValueError(f"n_samples must be a positive int, got {n_samples!r}")
    batches, names = [], []
    for name in ((split,) if isinstance(split, str) else tuple(split)):
        if not len(dataset.split(name)):
            continue
        more = load_batches(dataset, name, crop_size=crop_size, frames=frames, seed=seed, max_bursts=max_bursts)
        batches += more
        names += list(dataset.split(name).names[:len(more)])
    if max_bursts is not None:
        batches, names = batches[:int(max_bursts)], names[:int(max_bursts)]
    names = tuple(names)
    base_key = jax.random.key(seed)
    use_offset = _uses_offset(model)
    out = {m: [] for m in models}
    maps = []
    for i, batch in enumerate(batches):
        clean = jnp.asarray(batch["clean"][0])
        offset = jnp.asarray(batch["offset"][0])
        maps.append(_fixed_crop(dataset, batch, baselines.fixed_pattern))
        fp = jnp.asarray(maps[-1][0])
        for m_idx, m in enumerate(MODELS):
            if m not in models:
                continue
            keys = [jax.random.fold_in(jax.random.fold_in(jax.random.fold_in(base_key, i), m_idx), l)
                    for l in range(int(n_samples))]
            if m == "model":
                draws = [_sample_model(model, k, clean, offset, use_offset) for k in keys]
            else:
                draws = [_sample_baseline(getattr(baselines, m), k, clean, fp, model.config.quantize)
                         for k in keys]
            out[m].append(np.stack([np.asarray(d) for d in draws]))
    generated = {m: np.stack(v, axis=1) for m, v in out.items()}
    return EvalSamples(np.concatenate([b["clean"] for b in batches]),
                       np.concatenate([b["noisy"] for b in batches]), generated,
                       np.concatenate([b["offset"] for b in batches]), names, np.concatenate(maps))


def check_channels(model: NoiseModel, dataset) -> None:
    """Raises ValueError when the dataset's channel count differs from the model's."""
    if dataset.channels != model.config.channels:
        raise ValueError(
            f"dataset {dataset.name!r} has {dataset.channels} channels {tuple(dataset.channel_names)} but the "
            f"model was trained on {model.config.channels}-channel data; evaluate it on data like its training "
            f"data (see the run's config.json)")


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
        kld = metrics_lib.kld_starlight_per_burst(gen[0], samples.real)
        res = {"kld_starlight_mean": kld.mean, "kld_starlight_sum": kld.sum}
        if srgb:
            res["kld_srgb"] = float(np.mean([metrics_lib.kld_srgb(samples.real[i], samples.clean[i], gen[0, i])
                                             for i in range(n)]))
        else:
            res["kld_noiseflow"] = float(np.mean([
                metrics_lib.kld_noiseflow(samples.real[i], ref[i], gen[0, i]) for i in range(n)]))
        res["akld"] = float(np.mean([metrics_lib.akld(samples.real[i], ref[i], gen[:, i]) for i in range(n)]))
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
    return metrics_lib.noise_level_function(samples.clean + res, samples.clean, n_bins=n_bins)


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


def _jsonable(x):
    """NumPy / JAX values to JSON types (NaN and inf become None)."""
    if isinstance(x, dict):
        return {str(k): _jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_jsonable(v) for v in x]
    if isinstance(x, (jax.Array, np.ndarray)):
        return _jsonable(np.asarray(x).tolist())
    if isinstance(x, (bool, np.bool_)):
        return bool(x)
    if isinstance(x, (int, np.integer)):
        return int(x)
    if isinstance(x, (float, np.floating)):
        return float(x) if math.isfinite(x) else None
    return x


def nlf_to_dict(curves: dict) -> dict:
    """`nlf_curves` as JSON-ready lists (``[n_bins][C]``; empty bins are None)."""
    return {k: {"mean_intensity": _jsonable(v.mean_intensity), "variance": _jsonable(v.variance),
                "counts": _jsonable(v.counts)} for k, v in curves.items()}


# ----------------------------------------------------------------------------------------------------
# Physical parameters
# ----------------------------------------------------------------------------------------------------
def learned_parameters(model: NoiseModel) -> dict:
    """The learned physical scalars in the units the formulas use (`starlight_jax.noise.scales`)."""
    values = scales(model.params["noise"], model.config.noise)
    return {k: _jsonable(np.asarray(v, np.float64)) for k, v in values.items()
            if k not in MAP_PARAMS}


def _periodic_variance(p) -> np.ndarray:
    # Physics periodic term p0 a + 2 p1 b cos - 2 p2 c sin: per-pixel variance p0^2 + 2 p1^2 + 2 p2^2.
    p = np.asarray(p, np.float64)
    return p[..., 0] ** 2 + 2 * p[..., 1] ** 2 + 2 * p[..., 2] ** 2


def _entry(learned, truth, truth_key: str, meaning: str) -> dict:
    learned = np.asarray(learned, np.float64)
    truth = np.asarray(truth, np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        rel = np.where(truth != 0, (learned - truth) / np.abs(truth), np.nan)
    return {"learned": _jsonable(learned), "truth": _jsonable(truth), "truth_key": truth_key,
            "relative_error": _jsonable(rel), "abs_error": _jsonable(learned - truth), "meaning": meaning}


def physical_parameters(model: NoiseModel, truth: dict) -> dict:
    """Learned physical parameters next to the synthetic dataset's ground truth.

    Only ``compat="physics"`` parameters have the truth's meaning (variances in [0, 1] units); under
    ``compat="starlight"`` the result says so and holds no comparison. Per parameter: ``learned`` (as
    stored: one value for all channels), ``truth`` (per channel), ``truth_key`` (the ``dataset.truth`` entry
    compared with), the signed ``relative_error`` = (learned - truth) / |truth| (None where the truth is 0)
    and the ``abs_error``.

    Which truth: ``read`` is compared with ``truth["read"]`` (the read variance alone) when the noiselist
    has ``uniform`` (the model then has its own quantisation term), else with
    ``truth["read_with_quantisation"]``. The extra entry ``variance_intercept`` is the model's whole
    signal-independent per-pixel variance, read + q^2/12 + column^2 + column_t^2 + row^2 + periodic
    variance (the terms the noiselist has), against ``truth["variance_law_b"]``: the intercept b of
    Var[noisy - clean | x] = a x + b, the number a Poisson-Gaussian fit estimates.
    """
    cfg = model.config.noise
    if cfg.starlight:
        return {"note": "compat='starlight' parameters (std a*x + b, one-sided uniform, rectified periodic) do "
                        "not share the ground truth's units; no comparison"}
    s = {k: np.asarray(v, np.float64) for k, v in scales(model.params["noise"], cfg).items()}
    out = {}
    if "shot" in s:
        out["shot"] = _entry(s["shot"], truth["shot"], "shot", "a: shot variance per unit signal")
    if "read" in s:
        key = "read" if cfg.uniform else "read_with_quantisation"
        out["read"] = _entry(s["read"], truth[key], key, "b: read-noise variance")
    if "uniform" in s:
        out["uniform"] = _entry(s["uniform"], truth["uniform"], "uniform", "q: quantisation step")
    for name, meaning in (("column", "std of per-column offsets, new per frame"),
                          ("column_t", "std of per-column offsets, constant over a burst"),
                          ("row", "std of per-row offsets, new per frame")):
        if name in s and name in truth:
            out[name] = _entry(s[name], truth[name], name, meaning)
    if "periodic" in s and "periodic_p" in truth:
        out["periodic"] = _entry(np.broadcast_to(s["periodic"], np.shape(truth["periodic_p"])),
                                 truth["periodic_p"], "periodic_p", "(p0, p1, p2) of the period-4 pattern")
    if "read" in s or "shot" in s:
        b = s.get("read", 0.0) + (s["uniform"] ** 2 / 12 if "uniform" in s else 0.0)
        for name in ("column", "column_t", "row"):
            b = b + s.get(name, 0.0) ** 2
        if "periodic" in s:
            b = b + _periodic_variance(s["periodic"])
        out["variance_intercept"] = _entry(b, truth["variance_law_b"], "variance_law_b",
                                           "b of Var = a x + b: every signal-independent variance term")
    return out


def baseline_parameters(baselines: Baselines, truth: Optional[dict] = None) -> dict:
    """The fitted baselines' parameters, and for the synthetic data the truth they estimate."""
    out = {"fixed_pattern_subtracted": baselines.fixed_pattern, "n_train_bursts": baselines.n_bursts,
           "gaussian": baselines.gaussian.to_dict(), "poisson_gaussian": baselines.poisson_gaussian.to_dict(),
           "binned_gaussian": baselines.binned_gaussian.to_dict()}
    if truth is not None:
        out["poisson_gaussian"]["truth"] = {"a": _jsonable(truth["shot"]), "a_key": "shot",
                                            "b": _jsonable(truth["variance_law_b"]), "b_key": "variance_law_b"}
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
    if dataset.fixed_pattern is not None and not _uses_offset(model):
        fp = np.asarray(dataset.fixed_pattern, np.float64)
        notes.append(
            f"the data carry an additive fixed pattern (mean {fp.mean():.4g}, column/channel spread "
            f"{fp.std():.3g} in [0, 1] units) that this model's noiselist ({model.config.noise.noiselist}) "
            f"cannot produce (no fixed1)" + ("; the baselines add the dataset's pattern" if baselines.fixed_pattern
                                             else ""))
    return notes


# ----------------------------------------------------------------------------------------------------
# Text output
# ----------------------------------------------------------------------------------------------------
def _fmt(v) -> str:
    if v is None:
        return "-"
    if isinstance(v, (list, tuple)):
        if len(v) > 1 and all(isinstance(r, (list, tuple)) and list(r) == list(v[0]) for r in v):
            return _fmt(v[0])  # the same row for every channel
        flat = np.asarray(v, dtype=object).ravel()
        if all(x is None for x in flat):
            return "-"
        if all(x is not None for x in flat) and np.allclose(np.asarray(flat, float), float(flat[0]), rtol=1e-6):
            return _fmt(float(flat[0]))
        return "[" + ", ".join(_fmt(x) for x in flat) + "]"
    if isinstance(v, float):
        return f"{v:.4g}"
    return str(v)


def format_table(header: list[str], rows: list[list]) -> str:
    """A plain-text table with aligned columns (a markdown pipe table)."""
    cells = [[str(h) for h in header]] + [[_fmt(c) for c in r] for r in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(header))]
    line = lambda r: "| " + " | ".join(c.ljust(w) for c, w in zip(r, widths)) + " |"  # noqa: E731
    return "\n".join([line(cells[0]), "|" + "|".join("-" * (w + 2) for w in widths) + "|",
                      *[line(r) for r in cells[1:]]])


def metrics_table(result: dict) -> str:
    """The metrics of `evaluate_model` as a table: one row per model."""
    kld = result["setup"]["residual_kld"]
    header = ["", "KLD starlight (mean)", "KLD starlight (sum)", kld.replace("kld_", "KLD "), "AKLD",
              "residual mean", "residual std", "n_images"]
    rows = [[LABELS[m], result[m]["kld_starlight_mean"], result[m]["kld_starlight_sum"], result[m][kld],
             result[m]["akld"], result[m]["residual_mean"], result[m]["residual_std"], result[m]["n_images"]]
            for m in MODELS]
    rows.append(["(real data)", None, None, None, None, result["real"]["residual_mean"],
                 result["real"]["residual_std"], None])
    return format_table(header, rows)


STRUCTURE_COLUMNS = (("block1_kld", "block-1 KLD"), ("block2_kld", "block-2 KLD"), ("block4_kld", "block-4 KLD"),
                     ("spectrum_db", "spectrum dB"), ("xcorr_err", "xcorr err"), ("nlf_err", "NLF err"))


def structure_table(result: dict) -> str:
    """The structure metrics of `evaluate_model`: a row per model, each followed by its sampling floor
    (the metric between two independent draws of that model: what a perfect model would score)."""
    header = [""] + [label for _, label in STRUCTURE_COLUMNS]
    rows = []
    for m in MODELS:
        rows.append([LABELS[m]] + [result[m]["structure"][k] for k, _ in STRUCTURE_COLUMNS])
        floor = result[m].get("structure_floor")
        rows.append(["  floor (2 draws)"] + [floor[k] if floor else None for k, _ in STRUCTURE_COLUMNS])
    return format_table(header, rows)


def comparison_table(result: dict) -> str:
    """`evaluate_model`'s ``comparison``: per structure metric, both models pooled, the mean per-scene
    difference a - b with its t interval, and the verdict."""
    header = ["metric", "a pooled", "b pooled", "mean a - b (per scene)", "95% interval", "scenes", "verdict"]
    rows = []
    for k, label in STRUCTURE_COLUMNS:
        c = result["comparison"]["metrics"][k]
        interval = None if c["low"] is None else f"[{c['low']:.3g}, {c['high']:.3g}]"
        rows.append([label, result["model"]["structure"][k], result["compared_model"]["structure"][k],
                     c["mean_diff"], interval, c["n"], compare.verdict_label(c["verdict"], "a", "b")])
    return format_table(header, rows)


def residual_structure_table(result: dict) -> str:
    """Block-variance ratios and channel correlations of the real residuals and of each model's (white
    per-channel noise: ratios 1, correlations 0)."""
    real = result["real"]["residual_structure"]
    pairs = list(real["xcorr_pairs"])
    header = ["residuals", "block-2 var ratio", "block-4 var ratio"] + [f"corr {p}" for p in pairs]
    rows = []
    for name, label in [("real", "(real data)")] + [(m, LABELS[m]) for m in MODELS]:
        d = result[name]["residual_structure"]
        rows.append([label, d["block2_var_ratio"], d["block4_var_ratio"]] + [_num(v) for v in d["xcorr"]])
    return format_table(header, rows)


def _num(v):
    return None if v is None or not math.isfinite(float(v)) else float(v)


def parameter_rows(result: dict) -> tuple[list[str], list[list]]:
    """Header and rows of the parameter table: learned (and fitted baseline) values, truth when known."""
    header = ["parameter", "learned", "truth", "truth key", "rel. error"]
    rows = []
    phys = result.get("physical_parameters")
    if phys and "note" not in phys:
        for name, e in phys.items():
            rows.append([name, e["learned"], e["truth"], e["truth_key"], e["relative_error"]])
    else:
        for name, v in result["learned_parameters"].items():
            rows.append([name, v, None, None, None])
    base = result["baselines"]
    pg_truth = base["poisson_gaussian"].get("truth", {})
    rows.append(["Gaussian sigma (fit)", base["gaussian"]["sigma"], None, None, None])
    for p in ("a", "b"):
        t = pg_truth.get(p)
        rel = None
        if t is not None:
            rel = [(x - y) / abs(y) if y else None for x, y in zip(base["poisson_gaussian"][p], t)]
        rows.append([f"Poisson-Gaussian {p} (fit)", base["poisson_gaussian"][p], t, pg_truth.get(f"{p}_key"), rel])
    return header, rows


def parameter_table(result: dict) -> str:
    """`parameter_rows` as a text table."""
    return format_table(*parameter_rows(result))


def to_json(result: dict) -> dict:
    """``result`` with every value JSON-serialisable."""
    return _jsonable(result)


__all__ = ["evaluate_model", "largest_crop", "fit_baselines", "residual_arrays", "Baselines", "draw_samples",
           "EvalSamples", "score_samples", "nlf_curves", "physical_parameters", "learned_parameters",
           "baseline_parameters", "load_batches", "is_srgb", "check_channels", "metrics_table", "parameter_table",
           "parameter_rows", "format_table", "to_json", "run_dataset", "max_frames", "MODELS", "LABELS",
           "structure_scores", "structure_table", "residual_structure_table", "baseline_mean", "comparison_table"]
