"""Residual statistics of noisy/clean pairs: the noise level function and the 2-D power spectrum.

Conventions: images are ``[..., H, W, C]`` (NHWC with free leading axes); a *residual* is ``noisy -
clean``, computed in float64 on the host (NumPy). `residual` is the validated difference every host-side
metric and fit starts from (`starlight_jax.metrics.kld`, `starlight_jax.baselines`,
`starlight_jax.structure`).
"""
from __future__ import annotations

from typing import NamedTuple

import numpy as np

from starlight_jax.validation import check_array, check_same_shape


def residual(noisy, clean, noisy_name: str = "noisy", clean_name: str = "clean") -> np.ndarray:
    """``noisy - clean`` in float64 after validating both images (finite floats ``[..., H, W, C]``)."""
    noisy = check_array(noisy_name, noisy, min_rank=3, nonempty=True, host=True)
    clean = check_array(clean_name, clean, min_rank=3, nonempty=True, host=True)
    check_same_shape(noisy_name, noisy.shape, clean_name, clean.shape)
    return noisy.astype(np.float64) - clean.astype(np.float64)


class NoiseLevelFunction(NamedTuple):
    """Binned residual statistics against clean intensity, per channel."""
    bin_centers: np.ndarray  # [n_bins] centre of each intensity bin
    mean_intensity: np.ndarray  # [n_bins, C] mean clean value in the bin (NaN if empty)
    variance: np.ndarray  # [n_bins, C] residual variance, ddof=1 (NaN if count < 2)
    counts: np.ndarray  # [n_bins, C] int64 number of pixels in the bin


def noise_level_function(noisy, clean, *, n_bins: int = 32,
                                                  value_range: tuple[float, float] = (0.0, 1.0)
                                                  ) -> NoiseLevelFunction:
    """Residual variance as a function of clean intensity, per channel.

    Pixels are binned by their clean value into ``n_bins`` equal bins on
    ``value_range`` (last bin closed; clean values outside are dropped). For
    channel c and bin b with residuals :math:`n_i = y_i - x_i`,

    .. math::

          \\hat v_{b,c} = \\frac{1}{N_{b,c} - 1} \\sum_{i \\in b}
              (n_i - \\bar n_{b,c})^2 ,

    the unbiased sample variance about the bin mean. For a noise model
    :math:`\\mathrm{Var}[n \\mid x] = a x + b` it estimates
    :math:`a \\bar x_{b,c} + b` with :math:`\\bar x_{b,c}` = ``mean_intensity``
    and relative standard error :math:`\\sqrt{2 / (N_{b,c} - 1)}` (Gaussian noise).

    Args:
        noisy: [..., H, W, C] float noisy images.
        clean: [..., H, W, C] float clean images.
        n_bins: number of intensity bins.
        value_range: (low, high) range of clean intensities to bin.

    Returns:
        A :class:`NoiseLevelFunction`.

    Raises:
        ValueError: on shape/dtype mismatch, non-finite values, bad ``n_bins`` or
            ``value_range``.
    """
    if isinstance(n_bins, bool) or not isinstance(n_bins, (int, np.integer)) or n_bins < 1:
        raise ValueError(f"n_bins must be a positive int; got {n_bins!r}.")
    try:
        lo, hi = (float(v) for v in value_range)
    except (TypeError, ValueError):
        lo, hi = np.nan, np.nan
    if not (np.isfinite(lo) and np.isfinite(hi) and lo < hi):
        raise ValueError(
            f"value_range must be finite (low, high) with low < high; got {value_range!r}.")
    res = residual(noisy, clean)
    c = res.shape[-1]
    x = np.asarray(clean, np.float64).reshape(-1, c)
    res = res.reshape(-1, c)
    edges = np.linspace(lo, hi, n_bins + 1)
    b = np.searchsorted(edges, x, side="right") - 1
    b[x == hi] = n_bins - 1
    valid = (b >= 0) & (b < n_bins)
    flat = (b * c + np.arange(c))[valid]  # one histogram slot per (bin, channel)
    size = n_bins * c

    def bin_sum(values):
        return np.bincount(flat, weights=values[valid], minlength=size).reshape(n_bins, c)

    counts = np.bincount(flat, minlength=size).reshape(n_bins, c)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean_x = bin_sum(x) / counts
        mean_n = bin_sum(res) / counts
        # Two-pass variance: subtracting the bin mean first avoids the cancellation
        # of E[n^2] - E[n]^2 when the noise is small relative to any bias.
        centred = res - np.where(valid, mean_n[np.clip(b, 0, n_bins - 1), np.arange(c)], 0.0)
        var = bin_sum(centred ** 2) / (counts - 1)
    var = np.where(counts >= 2, var, np.nan)
    return NoiseLevelFunction(0.5 * (edges[:-1] + edges[1:]), mean_x, var, counts)


def residual_power_spectrum(noisy, clean) -> np.ndarray:
    """Mean 2-D power spectrum of the residuals, per channel, DC at the centre.

    .. math::

          P_c(k) = \\operatorname{mean}_{\\text{images}}
              \\frac{|\\mathcal F_{hw}[n_c](k)|^2}{H W}, \\qquad n = y - x,

    so white noise of variance :math:`\\sigma^2` gives a flat :math:`P = \\sigma^2`
    (Parseval: :math:`\\operatorname{mean}_k P = \\operatorname{mean}_{hw} n^2`).
    Row/column-correlated noise shows up as lines through the centre and periodic
    noise as off-centre peaks. The mean residual is not removed (it is the DC bin).
    ``np.fft.fftshift`` is applied over H and W only.

    Args:
        noisy: [..., H, W, C] float noisy images.
        clean: [..., H, W, C] float clean images.

    Returns:
        [H, W, C] float64 power spectrum.

    Raises:
        ValueError: on shape/dtype mismatch or non-finite values.
    """
    res = residual(noisy, clean)
    h, w, c = res.shape[-3:]
    spec = np.fft.fft2(res.reshape(-1, h, w, c), axes=(1, 2))
    power = np.mean(np.abs(spec) ** 2, axis=0) / (h * w)
    return np.fft.fftshift(power, axes=(0, 1))
