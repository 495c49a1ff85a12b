"""The samples `starlight_jax.evaluation` scores: test bursts noised by the learned model and the baselines.

`fit_baselines` fits the three classical baselines on the train split as the training loop reads it in
epoch 0 (seeded random crops and windows); `draw_samples` noises every burst of a split with each model.
Sample ``l`` of model ``m`` on burst ``i`` uses ``fold_in(fold_in(fold_in(key(seed), i), m), l)``, so
results are reproducible, and a model keeps its keys whatever the others drawn. The fixed pattern and the
quantisation step are handled as described in `starlight_jax.evaluation.scoring`.
"""
from __future__ import annotations

import functools
from typing import NamedTuple, Optional

import jax
import jax.numpy as jnp
import numpy as np

from starlight_jax.baselines import (BinnedGaussianBaseline, GaussianBaseline, PoissonGaussianBaseline,
                                     fit_binned_gaussian, fit_gaussian, fit_poisson_gaussian_censored,
                                     sample_baseline)
from starlight_jax.data.batches import fixed_crop, load_batches, residual_arrays
from starlight_jax.generator import NoiseModel, generate, quantize

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
def _sample_model(model: NoiseModel, key, clean, offset, use_offset: bool, fixed_map=None):
    y = generate(model.params, key, clean, model.config, train=False, fixed_offset=offset if use_offset else None)
    if fixed_map is None:
        return y
    step = model.config.quantize  # the map moves the output off the lattice it was rounded to: round again
    return jnp.clip(y + fixed_map if step is None else quantize(y + fixed_map, step), 0.0, 1.0)


def uses_offset(model: NoiseModel) -> bool:
    """Whether ``model`` draws a fixed pattern, which then needs the crop's offset."""
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
    use_offset = uses_offset(model)
    out = {m: [] for m in models}
    maps = []
    for i, batch in enumerate(batches):
        clean = jnp.asarray(batch["clean"][0])
        offset = jnp.asarray(batch["offset"][0])
        maps.append(fixed_crop(dataset, batch, baselines.fixed_pattern))
        fp = jnp.asarray(maps[-1][0])
        for m_idx, m in enumerate(MODELS):
            if m not in models:
                continue
            keys = [jax.random.fold_in(jax.random.fold_in(jax.random.fold_in(base_key, i), m_idx), l)
                    for l in range(int(n_samples))]
            if m == "model":
                # A model without its own map gets the data's, as the baselines do (scoring's module note).
                add = None if use_offset or not baselines.fixed_pattern else fp
                draws = [_sample_model(model, k, clean, offset, use_offset, add) for k in keys]
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


__all__ = ["MODELS", "BINNED_BINS", "LABELS", "Baselines", "fit_baselines", "EvalSamples", "draw_samples",
           "check_channels", "uses_offset"]
