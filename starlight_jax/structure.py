"""Noise-structure metrics: the spatial and cross-channel correlation that the histogram KLDs cannot see.

Real sRGB noise is correlated in space and across channels (demosaicking, colour matrix, chroma smoothing,
tone curve): on the sRGB pairs the variance of a 2x2 block sum is 2.2-3.0 times that of four independent
pixels and the channels correlate by 0.3-0.7, where white per-channel noise gives 1 and 0. Every KLD of
`starlight_jax.metrics.kld` histograms single pixels, so it scores a white model with the right marginals as
perfect. The metrics here compare a *real* residual set with a *model* residual set drawn on the same clean
images:

* `block_kld`: KL(real || model) of the histograms of residuals summed over block x block tiles;
* `spectrum_distance_db`: mean |dB| difference of the radially averaged power spectra;
* `cross_channel_error`: mean absolute difference of the channel correlation coefficients;
* `nlf_error`: count-weighted relative error of the per-intensity noise std (the noise level function).

Conventions: residuals are ``noisy - clean``, ``[..., H, W, C]`` floats in the data's [0, 1] units (leading
axes are flattened into images), computed in float64 on the host. Every metric is 0 for identical sets
but not for two independent draws of the same noise: the **sampling floor**, the value of the metric
between two draws of one model on the same clean images, is the number a metric has to be read against
(`starlight_jax.evaluation` reports it beside each metric).
"""
from __future__ import annotations

import itertools
from typing import NamedTuple, Optional, Sequence

import numpy as np

from starlight_jax.metrics.residual_stats import noise_level_function
from starlight_jax.validation import check_array, check_same_shape

BLOCKS = (1, 2, 4)
METRIC_NAMES = ("block1_kld", "block2_kld", "block4_kld", "spectrum_db", "xcorr_err", "nlf_err")


class ChannelScore(NamedTuple):
    """A metric and its per-channel values."""
    value: float  # mean over channels (NaN when no channel could be scored)
    per_channel: np.ndarray  # [C] float64


def _images(x, name: str) -> np.ndarray:
    """``[..., H, W, C]`` floats -> float64 ``[M, H, W, C]``."""
    arr = check_array(name, x, min_rank=3, nonempty=True, host=True)
    return arr.astype(np.float64).reshape((-1, *arr.shape[-3:]))


def _pair(real_res, model_res) -> tuple[np.ndarray, np.ndarray]:
    real = _images(real_res, "real_res")
    model = _images(model_res, "model_res")
    check_same_shape("model_res", model.shape, "real_res", real.shape)
    return real, model


def _score(per_channel) -> ChannelScore:
    per_channel = np.asarray(per_channel, np.float64)
    finite = per_channel[np.isfinite(per_channel)]
    return ChannelScore(float(finite.mean()) if finite.size else float("nan"), per_channel)


def _check_block(block, h: int, w: int) -> int:
    if isinstance(block, bool) or not isinstance(block, (int, np.integer)) or block < 1:
        raise ValueError(f"block must be a positive int; got {block!r}.")
    if block > min(h, w):
        raise ValueError(f"block must be <= H and W ({h}, {w}); got {block}.")
    return int(block)


# ----------------------------------------------------------------------------------------------------
# Block sums
# ----------------------------------------------------------------------------------------------------
def block_sums(res, block: int) -> np.ndarray:
    """Sums of ``res`` over non-overlapping ``block`` x ``block`` tiles, per channel.

    Rows and columns beyond the last whole tile are dropped.

    Args:
      res: [..., H, W, C] float residuals.
      block: tile side.

    Returns:
      float64 [M, H // block, W // block, C].
    """
    x = _images(res, "res")
    m, h, w, c = x.shape
    b = _check_block(block, h, w)
    nh, nw = h // b, w // b
    return x[:, :nh * b, :nw * b].reshape(m, nh, b, nw, b, c).sum(axis=(2, 4))


def block_variance_ratio(res, block: int = 2) -> np.ndarray:
    """Var(block sum) / (block² Var(pixel)) per channel: 1 for white noise.

    For a stationary field with correlation :math:`\\rho(\\Delta)` between pixels :math:`\\Delta` apart,
    the ratio is :math:`\\sum_{\\Delta} (1 - |\\Delta_y|/b)(1 - |\\Delta_x|/b)\\, \\rho(\\Delta)` over
    :math:`|\\Delta_{y,x}| < b`: above 1 when neighbours correlate positively (e.g. 2.25 for white noise
    filtered by a normalised 2x2 box at ``block=2``). Both variances are about the global mean.

    Args:
      res: [..., H, W, C] float residuals.
      block: tile side.

    Returns:
      float64 [C] (NaN for a channel without variance).
    """
    x = _images(res, "res")
    sums = block_sums(x, block).reshape(-1, x.shape[-1])
    with np.errstate(invalid="ignore", divide="ignore"):
        return sums.var(axis=0) / (block ** 2 * x.reshape(-1, x.shape[-1]).var(axis=0))


def lattice_step(res, step: Optional[float], tol: float = 1e-3) -> Optional[float]:
    """``step`` when (nearly) every residual is a multiple of it, else None.

    Residuals of 8-bit pairs are multiples of 1/255; those of raw data against a continuous clean image
    (the synthetic data) are not, even though the noisy values are quantised.
    """
    if step is None:
        return None
    r = np.asarray(res, np.float64) / float(step)
    return float(step) if np.mean(np.abs(r - np.round(r)) < tol) > 0.999 else None


def _edges(real: np.ndarray, step: Optional[float], n_bins: int, span: float) -> np.ndarray:
    """Inner bin edges for one channel's real block sums (see `block_kld`)."""
    mu, s = real.mean(), real.std()
    width = 2.0 * span * s / n_bins
    if step is not None:
        # Whole lattice points per bin, edges half a step off the lattice: rounding a continuous sample to
        # the lattice then never moves a value across an edge.
        k = max(1, int(np.ceil(width / step - 1e-9)))
        lo = np.floor((mu - span * s) / (k * step))
        hi = np.ceil((mu + span * s) / (k * step)) + 1
        return (np.arange(lo, hi + 1) * k - 0.5) * step
    width = max(width, 1e-12 * max(abs(mu), 1.0))
    return mu + width * (np.arange(n_bins + 1) - n_bins / 2)


def _kl_smoothed(a: np.ndarray, b: np.ndarray, edges: np.ndarray) -> float:
    """KL(hist a || hist b) over ``edges`` plus two overflow bins, with add-one smoothing."""
    k = edges.size + 1
    p = np.bincount(np.searchsorted(edges, a, side="right"), minlength=k) + 1.0
    q = np.bincount(np.searchsorted(edges, b, side="right"), minlength=k) + 1.0
    p, q = p / p.sum(), q / q.sum()
    return float(np.sum(p * np.log(p / q)))


def block_kld(real_res, model_res, block: int, *, step: Optional[float] = None, n_bins: int = 101,
              span: float = 5.0) -> ChannelScore:
    """KL(real || model) of the block-sum histograms, per channel, in nats.

    Residuals are summed over non-overlapping ``block`` x ``block`` tiles (`block_sums`; ``block=1`` is the
    per-pixel histogram). Per channel, with :math:`\\mu, s` the mean and std of the *real* block sums:

    * without ``step``: ``n_bins`` equal bins on :math:`\\mu \\pm` ``span`` :math:`s`;
    * with ``step`` (residuals on a lattice, see `lattice_step`): bins of :math:`k` whole lattice points,
      :math:`k = \\lceil 2\\,\\mathrm{span}\\, s / (\\mathrm{n\\_bins}\\cdot\\mathrm{step}) \\rceil \\ge 1`,
      edges half a step between lattice points, covering at least :math:`\\mu \\pm` ``span`` :math:`s`
      (so about ``n_bins`` bins unless the lattice is coarser). Fixed-width bins finer than the lattice
      would leave every other bin empty in the real histogram and full in a continuous model's.

    Plus one overflow bin on each side, so all mass counts. Counts get add-one (Laplace) smoothing,
    :math:`p_k = (n_k + 1) / (N + K)`, so the KL is finite when the model misses a bin the real data fill;
    the smoothing bias is :math:`O(K/N)`, negligible beside the sampling floor for the sizes scored.

    Args:
      real_res: [..., H, W, C] real residuals.
      model_res: model residuals of the same shape (on the same clean images).
      block: tile side (1, 2, 4: the scales `structure_metrics` reports).
      step: the residuals' lattice step, or None.
      n_bins: bins over ±``span`` real std (without ``step``; approximately with it).
      span: half-width of the binned range, in real block-sum stds.

    Returns:
      `ChannelScore` in nats (0 for identical histograms).
    """
    real, model = _pair(real_res, model_res)
    if isinstance(n_bins, bool) or not isinstance(n_bins, (int, np.integer)) or n_bins < 1:
        raise ValueError(f"n_bins must be a positive int; got {n_bins!r}.")
    if not span > 0:
        raise ValueError(f"span must be > 0; got {span!r}.")
    r, m = block_sums(real, block), block_sums(model, block)
    c = r.shape[-1]
    r, m = r.reshape(-1, c), m.reshape(-1, c)
    return _score([_kl_smoothed(r[:, i], m[:, i], _edges(r[:, i], step, n_bins, span)) for i in range(c)])


# ----------------------------------------------------------------------------------------------------
# Power spectrum
# ----------------------------------------------------------------------------------------------------
def radial_power_spectrum(res) -> tuple[np.ndarray, np.ndarray]:
    """Radially averaged power spectrum of the residuals, per channel, averaged over images.

    :math:`P_c(f) = |\\mathcal F[n_c](f)|^2 / (HW)` (white noise of variance :math:`\\sigma^2` gives a
    flat :math:`\\sigma^2`), averaged over images and over the frequencies of each ring
    :math:`\\mathrm{round}(|f| \\min(H, W)) = k`, :math:`k = 1 \\dots \\min(H, W) / 2` (|f| in cycles per
    pixel; DC and the corners beyond the Nyquist circle are left out). No window: a noise residual has
    no edges for the periodic extension to cut, and a window would only cost variance (residual image
    structure from misaligned pairs would leak, but then its power is real too).

    Args:
      res: [..., H, W, C] float residuals.

    Returns:
      ``(radii, power)``: [R] ring radii in cycles per pixel and float64 [R, C].
    """
    x = _images(res, "res")
    _, h, w, c = x.shape
    n = min(h, w)
    if n < 2:
        raise ValueError(f"res must have H, W >= 2 for a spectrum; got {x.shape}.")
    power = np.mean(np.abs(np.fft.rfft2(x, axes=(1, 2))) ** 2, axis=0) / (h * w)  # [H, W//2+1, C]
    fy, fx = np.fft.fftfreq(h)[:, None], np.fft.rfftfreq(w)[None, :]
    ring = np.rint(np.sqrt(fy ** 2 + fx ** 2) * n).astype(np.int64)
    # rfft keeps half the plane: interior columns stand for f and -f, columns 0 and W/2 for themselves.
    weight = np.full(fx.shape, 2.0)
    weight[:, 0] = 1.0
    if w % 2 == 0:
        weight[:, -1] = 1.0
    weight = np.broadcast_to(weight, ring.shape)
    rings = n // 2
    use = (ring >= 1) & (ring <= rings)
    idx = ring[use] - 1
    total_w = np.bincount(idx, weights=weight[use], minlength=rings)
    out = np.stack([np.bincount(idx, weights=(weight * power[..., i])[use], minlength=rings) / total_w
                    for i in range(c)], axis=-1)
    return np.arange(1, rings + 1) / n, out


def spectrum_distance_db(real_res, model_res) -> ChannelScore:
    """Mean over rings of :math:`|10 \\log_{10}(P_\\text{real} / P_\\text{model})|`, per channel, in dB.

    `radial_power_spectrum` of each set. It sees the level as well as the shape: a model whose noise std
    is 10 % high everywhere scores :math:`20 \\log_{10} 1.1 = 0.83` dB. Powers are floored at 1e-12 of the
    real channel's mean power so that a channel without noise gives a finite value.

    Args:
      real_res: [..., H, W, C] real residuals.
      model_res: model residuals of the same shape.

    Returns:
      `ChannelScore` in dB.
    """
    real, model = _pair(real_res, model_res)
    _, pr = radial_power_spectrum(real)
    _, pm = radial_power_spectrum(model)
    floor = np.maximum(1e-12 * pr.mean(axis=0), 1e-300)
    return _score(np.mean(np.abs(10.0 * np.log10(np.maximum(pr, floor) / np.maximum(pm, floor))), axis=0))


# ----------------------------------------------------------------------------------------------------
# Cross-channel correlation
# ----------------------------------------------------------------------------------------------------
def channel_pairs(channels: int) -> list[tuple[int, int]]:
    """The channel pairs the correlation coefficients are listed for: (0, 1), (0, 2), (1, 2), ..."""
    return list(itertools.combinations(range(channels), 2))


def pair_names(channel_names: Sequence[str]) -> list[str]:
    """Labels of `channel_pairs`, e.g. ``["RG", "RB", "GB"]`` (``"G1-G2"`` when a name is longer)."""
    names = list(channel_names)
    sep = "" if all(len(n) == 1 for n in names) else "-"
    return [f"{names[i]}{sep}{names[j]}" for i, j in channel_pairs(len(names))]


def cross_channel_corr(res) -> np.ndarray:
    """Pearson correlation of every channel pair over all pixels (RG, RB, GB for C = 3).

    Args:
      res: [..., H, W, C] float residuals.

    Returns:
      float64 [C (C - 1) / 2] in `channel_pairs` order (empty for C = 1; NaN for a constant channel).
      Its standard error for n pixels is about :math:`(1 - \\rho^2) / \\sqrt{n}` (independent pixels).
    """
    x = _images(res, "res")
    x = x.reshape(-1, x.shape[-1])
    x = x - x.mean(axis=0)
    cov = x.T @ x / x.shape[0]
    sd = np.sqrt(np.diag(cov))
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.array([cov[i, j] / (sd[i] * sd[j]) for i, j in channel_pairs(x.shape[-1])], np.float64)


def cross_channel_error(real_res, model_res) -> float:
    """Mean over channel pairs of :math:`|\\rho_\\text{real} - \\rho_\\text{model}|` (NaN for C = 1)."""
    real, model = _pair(real_res, model_res)
    diff = np.abs(cross_channel_corr(real) - cross_channel_corr(model))
    return float(diff.mean()) if diff.size else float("nan")


# ----------------------------------------------------------------------------------------------------
# Noise level function
# ----------------------------------------------------------------------------------------------------
def nlf_error(real_res, model_res, clean, *, n_bins: int = 16, min_count: int = 64) -> ChannelScore:
    """Relative error of the per-intensity noise std, :math:`|\\sigma_\\text{model} / \\sigma_\\text{real} - 1|`.

    Pixels are binned by their clean value into ``n_bins`` equal bins on [0, 1]
    (`~starlight_jax.metrics.noise_level_function`); :math:`\\sigma` is the residual std about the bin mean.
    Bins with fewer than ``min_count`` pixels, or where the real std is 0 (e.g. saturated pixels), are
    skipped; the others are averaged weighted by their pixel count. A model 10 % high everywhere scores 0.10.

    Args:
      real_res: [..., H, W, C] real residuals.
      model_res: model residuals of the same shape.
      clean: the clean images both were drawn on, same shape.
      n_bins: intensity bins.
      min_count: the fewest pixels a bin needs to count.

    Returns:
      `ChannelScore` (a fraction; NaN for a channel without a usable bin).
    """
    real, model = _pair(real_res, model_res)
    x = _images(clean, "clean")
    check_same_shape("clean", x.shape, "real_res", real.shape)
    if isinstance(min_count, bool) or not isinstance(min_count, (int, np.integer)) or min_count < 2:
        raise ValueError(f"min_count must be an int >= 2; got {min_count!r}.")
    nr = noise_level_function(x + real, x, n_bins=n_bins)
    nm = noise_level_function(x + model, x, n_bins=n_bins)
    with np.errstate(invalid="ignore", divide="ignore"):
        rel = np.abs(np.sqrt(nm.variance / nr.variance) - 1.0)
    use = (nr.counts >= min_count) & (nr.variance > 0) & np.isfinite(rel)
    w = np.where(use, nr.counts, 0).astype(np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        per_channel = np.sum(np.where(use, rel, 0.0) * w, axis=0) / w.sum(axis=0)
    return _score(per_channel)


# ----------------------------------------------------------------------------------------------------
# Everything together
# ----------------------------------------------------------------------------------------------------
def structure_metrics(real_res, model_res, clean, *, step: Optional[float] = None, nlf_bins: int = 16) -> dict:
    """Every metric of the module for one real and one model residual set.

    Args:
      real_res: [..., H, W, C] real residuals.
      model_res: model residuals of the same shape.
      clean: the clean images, same shape.
      step: lattice step for `block_kld` (pass it through `lattice_step` first).
      nlf_bins: intensity bins of `nlf_error`.

    Returns:
      ``{"block1_kld", "block2_kld", "block4_kld"`` (nats), ``"spectrum_db"`` (dB), ``"xcorr_err"``
      (correlation units), ``"nlf_err"`` (fraction) ``: float, "per_channel": {name: [C]}}``; a block
      larger than the images gives NaN.
    """
    real, model = _pair(real_res, model_res)
    out, per = {}, {}
    for b in BLOCKS:
        name = f"block{b}_kld"
        if b > min(real.shape[1:3]):
            out[name], per[name] = float("nan"), np.full(real.shape[-1], np.nan)
            continue
        out[name], per[name] = block_kld(real, model, b, step=step)
    out["spectrum_db"], per["spectrum_db"] = spectrum_distance_db(real, model)
    out["xcorr_err"] = cross_channel_error(real, model)
    out["nlf_err"], per["nlf_err"] = nlf_error(real, model, clean, n_bins=nlf_bins)
    out["per_channel"] = per
    return out


def describe_residual(res, channel_names: Optional[Sequence[str]] = None) -> dict:
    """Descriptive structure of one residual set: block-variance ratios and channel correlations.

    Returns:
      ``{"block2_var_ratio", "block4_var_ratio": float (mean over channels), "block2_var_ratio_per_channel",
      "block4_var_ratio_per_channel": [C], "xcorr": [P] (`cross_channel_corr`), "xcorr_pairs": [P] labels}``.
      White per-channel noise gives ratios 1 and correlations 0.
    """
    x = _images(res, "res")
    c = x.shape[-1]
    out = {}
    for b in (2, 4):
        ratio = block_variance_ratio(x, b) if b <= min(x.shape[1:3]) else np.full(c, np.nan)
        out[f"block{b}_var_ratio"] = _score(ratio).value
        out[f"block{b}_var_ratio_per_channel"] = ratio
    out["xcorr"] = cross_channel_corr(x)
    out["xcorr_pairs"] = pair_names(channel_names if channel_names is not None else [str(i) for i in range(c)])
    return out


def log_metrics(real_noisy, model_noisy, clean, *, step: Optional[float] = None, prefix: str = "test_") -> dict:
    """`structure_metrics` as flat floats for a training log, from noisy images rather than residuals.

    ``clean`` broadcasts to the noisy shape (e.g. ``[B, 1, H, W, C]`` against ``[B, T, H, W, C]``); ``step``
    is used only when the real residuals lie on its lattice.
    """
    real_noisy = check_array("real_noisy", real_noisy, min_rank=3, nonempty=True, host=True)
    clean = np.broadcast_to(np.asarray(clean, np.float64), real_noisy.shape)
    real = real_noisy - clean
    model = np.asarray(model_noisy, np.float64) - clean
    m = structure_metrics(real, model, clean, step=lattice_step(real, step))
    return {f"{prefix}{k}": m[k] for k in METRIC_NAMES}


__all__ = ["ChannelScore", "block_sums", "block_variance_ratio", "lattice_step", "block_kld",
           "radial_power_spectrum", "spectrum_distance_db", "channel_pairs", "pair_names", "cross_channel_corr",
           "cross_channel_error", "nlf_error", "structure_metrics", "describe_residual", "log_metrics",
           "BLOCKS", "METRIC_NAMES"]
