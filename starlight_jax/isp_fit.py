"""Data init of the ``isp`` component: its physical parameters fitted to the second moments of the data.

A GAN started far from the data spends its steps finding the noise level; one started at the data's
moments only has to refine the shape. `fit_isp` matches, by gradient descent through the pipeline
(the noise is reparameterised, so the moments are differentiable in every parameter):

* the residual variance per channel and per clean-intensity bin (the noise-level function),
* the residual's correlation between every pair of channels at a set of spatial lags (`LAGS`, lag 0
  included: the cross-channel correlation; the lags: the demosaicking and the smoothing).

The raw gain and read variance, the colour matrix, the tone curve and the two smoothing widths all move;
the estimate is a method-of-moments fit, so it needs no critic and takes seconds.
"""
from __future__ import annotations

import dataclasses
from typing import Optional

import jax
import jax.numpy as jnp
import numpy as np
import optax

from starlight_jax import noise as noise_lib
from starlight_jax.generator import quantize as round_to_step

# Spatial lags (dy, dx) whose cross-channel correlations are matched; lag (0, 0) is the cross-channel one.
LAGS = ((0, 0), (0, 1), (1, 0), (1, 1), (1, -1), (0, 2), (2, 0), (2, 2), (0, 4), (4, 0))
N_BINS = 16
MIN_BIN_PIXELS = 256  # bins of a channel with fewer pixels do not enter the level term
# Weight of the squared correlation errors (summed over lags and channel pairs) against the mean squared log
# error of the per-bin variances: a correlation off by 0.1 costs about as much as a level 10 % off.
CORR_WEIGHT = 10.0
# The rate decays (cosine) to this fraction of its start: each step's moments come from a few crops and one
# noise draw, so at a constant rate the fit ends wherever the last steps' noise put it. On PolyU's training
# pairs, two seeds at a constant rate ended at moment losses 3.1 / 3.6 (saturation 0.76 / 0.90); decayed to
# 5 %, at 1.12 / 1.19 (saturation 0.94 / 0.97), and the held-out scenes' loss fell from 9.6–12.5 to 5.4–5.9.
FINAL_LR = 0.05

FIT_KEYS = ("shot", "read", "isp_matrix", "isp_gamma", "isp_toe", "isp_shoulder", "isp_luma_sigma",
            "isp_chroma_sigma", "isp_saturation")


def _shift(x, dy: int, dx: int):
    """The overlapping parts ``(a, b)`` of ``x`` ``[N, H, W, C]`` and of ``x`` shifted by (dy, dx)."""
    h, w = x.shape[1], x.shape[2]
    a = x[:, dy:, max(dx, 0):w + min(dx, 0)]
    b = x[:, :h - dy, max(-dx, 0):w - max(dx, 0)]
    return a, b


def moments(residual, bins, n_bins: int = N_BINS):
    """Second moments of ``residual`` ``[N, H, W, C]``: per-bin variances ``[n_bins, C]``, pixel counts
    ``[n_bins, C]`` and lagged correlation matrices ``[len(LAGS), C, C]``.

    ``bins`` ``[N, H, W, C]`` int: the clean intensity's bin of each value (fixed data, not traced)."""
    r = residual - jnp.mean(residual, axis=(1, 2), keepdims=True)
    c = r.shape[-1]
    segment = (bins * c + jnp.arange(c)).ravel()  # one segment per (bin, channel)
    total = lambda v: jax.ops.segment_sum(v.ravel(), segment, num_segments=n_bins * c).reshape(n_bins, c)  # noqa: E731
    count = total(jnp.ones_like(r))
    mean = total(r) / jnp.maximum(count, 1)
    var = total(r * r) / jnp.maximum(count, 1) - mean ** 2
    return var, count, lagged_correlations(r)


def lagged_correlations(residual, axis_name=None):
    """``[len(LAGS), C, C]``: the correlation of channel i at (y, x) with channel j at (y + dy, x + dx), for
    the (dy, dx) of `LAGS`, over ``residual`` ``[N, H, W, C]`` (zero-mean; under ``pmap``/``shard_map``
    with ``axis_name``, over the global batch)."""
    mean = (lambda x: x) if axis_name is None else (lambda x: jax.lax.pmean(x, axis_name))  # noqa: E731
    r = residual
    std = jnp.sqrt(mean(jnp.mean(r * r, axis=(0, 1, 2))))
    corr = []
    for dy, dx in LAGS:
        a, b = _shift(r, dy, dx)
        cov = mean(jnp.einsum("nhwi,nhwj->ij", a, b) / (a.shape[0] * a.shape[1] * a.shape[2]))
        corr.append(cov / (std[:, None] * std[None, :] + 1e-12))
    return jnp.stack(corr)


def intensity_bins(clean, n_bins: int = N_BINS) -> np.ndarray:
    """The bin of each clean value: ``n_bins`` equal bins of [0, 1]."""
    return np.clip((np.asarray(clean) * n_bins).astype(np.int32), 0, n_bins - 1)


@dataclasses.dataclass(frozen=True)
class FitResult:
    values: dict  # used values (variances, γ, ...), as `create_train_state`'s ``init_values`` take them
    loss: float  # final moment loss
    initial_loss: float


def tiles(x, tile: int) -> np.ndarray:
    """``x`` ``[..., H, W, C]`` cut into ``[N, tile, tile, C]`` (the remainder of H and W dropped)."""
    x = np.asarray(x)
    h, w, c = x.shape[-3:]
    if h < tile or w < tile:
        raise ValueError(f"the isp fit needs images of at least {tile}x{tile} pixels, got {h}x{w}")
    x = x.reshape(-1, h, w, c)[:, :h // tile * tile, :w // tile * tile]
    x = x.reshape(x.shape[0], h // tile, tile, w // tile, tile, c).swapaxes(2, 3)
    return x.reshape(-1, tile, tile, c)


def fit_isp(noise_cfg, noisy, clean, *, steps: int = 600, batch: int = 4, lr: float = 0.05, seed: int = 0,
            quantize: Optional[float] = None, start: Optional[dict] = None, tile: int = 64,
            corr_weight: float = CORR_WEIGHT, final_lr: float = FINAL_LR) -> FitResult:
    """Fits the ``isp`` component's parameters (`FIT_KEYS`) to the moments of ``noisy − clean``.

    Each Adam step compares the moments of ``batch`` training crops (drawn at random) with those of the
    model's noise on the same clean crops (a fresh draw each step): a stochastic method of moments, ~0.1 s
    a step for 64² crops on a CPU core.

    Args:
      noise_cfg: a `NoiseConfig` with ``isp`` (other components are held at their initial values and
        left out of the fit; ``tone`` is off during it).
      noisy, clean: ``[..., H, W, 3]`` training pairs in [0, 1], cut into ``tile``² crops.
      steps, batch, lr: Adam steps, crops per step and initial rate on the stored (log / logit) parameters.
      final_lr: the rate's cosine decay ends at ``final_lr * lr`` (`FINAL_LR`; 1: a constant rate).
      corr_weight: weight of the correlation term (see `CORR_WEIGHT`).
      seed: the crops and noise draws of the fit.
      quantize: the data's quantisation step (the model's output is rounded as the data were), or None.
      start: optional used values to start from (default: the component's initial values).

    Returns:
      A `FitResult` whose ``values`` hold the used values of `FIT_KEYS`; ``loss`` and ``initial_loss``
      are the moment loss on (up to) 64 crops spread over the pairs, at the end and at the start.
    """
    cfg = dataclasses.replace(noise_cfg, tone=False, uniform=False, column=False, column_t=False, row=False,
                              fixed=False, learned_fixed=False, periodic=False)
    clean = jnp.asarray(tiles(clean, tile), jnp.float32)
    residual = jnp.asarray(tiles(noisy, tile), jnp.float32) - clean
    bins = jnp.asarray(intensity_bins(clean))
    params = noise_lib.init_params(cfg)
    if start:
        params.update({k: noise_lib.stored_value(k, v, cfg) for k, v in start.items() if k in params})
    fit_keys = [k for k in FIT_KEYS if k in params]
    theta = {k: params[k] for k in fit_keys}

    def loss_fn(theta, key, clean, residual, bins):
        real_var, count, real_corr = moments(residual, bins)
        used = count >= MIN_BIN_PIXELS * clean.shape[0] / max(batch, 1)
        weight = jnp.where(used, 1.0, 0.0) / jnp.maximum(jnp.sum(used), 1)
        noisy_model = noise_lib.add_noise(key, {**params, **theta}, clean, cfg)
        if quantize is not None:
            noisy_model = round_to_step(noisy_model, quantize)
        var, _, corr = moments(noisy_model - clean, bins)
        level = jnp.sum(weight * (jnp.log(jnp.maximum(var, 1e-12)) - jnp.log(jnp.maximum(real_var, 1e-12))) ** 2)
        shape = jnp.sum((corr - real_corr) ** 2)
        return level + corr_weight * shape

    tx = optax.adam(optax.cosine_decay_schedule(lr, steps, alpha=final_lr) if final_lr < 1 else lr)
    opt = tx.init(theta)
    n = clean.shape[0]
    batch = min(batch, n)

    # The data go in as arguments, not closure constants: XLA would spend seconds constant-folding them.
    @jax.jit
    def step(theta, opt, key, clean, residual, bins):
        pick_key, noise_key = jax.random.split(key)
        idx = jax.random.choice(pick_key, n, (batch,), replace=False)
        loss, grads = jax.value_and_grad(loss_fn)(theta, noise_key, clean[idx], residual[idx], bins[idx])
        updates, opt = tx.update(grads, opt)
        return optax.apply_updates(theta, updates), opt, loss

    full_loss = jax.jit(loss_fn)
    key = jax.random.key(seed)
    held = np.unique(np.linspace(0, n - 1, min(n, 64)).astype(int))  # the crops the reported loss is on
    held = (clean[held], residual[held], bins[held])
    initial = float(full_loss(theta, key, *held))
    for i in range(steps):
        theta, opt, _ = step(theta, opt, jax.random.fold_in(key, i), clean, residual, bins)
    final = float(full_loss(theta, key, *held))
    values = noise_lib.scales({**params, **theta}, cfg)
    return FitResult(values={k: np.asarray(values[k]) for k in fit_keys}, loss=final, initial_loss=initial)
