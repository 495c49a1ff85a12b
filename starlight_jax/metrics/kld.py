"""The papers' KLD metrics of camera-noise models: histogram divergences of real and model data.

Conventions: images are ``[..., H, W, C]`` (NHWC with free leading axes); a
*residual* is ``noisy - clean``. Every KLD is NumPy and runs in float64 on the
host: they are evaluation-time statistics, and NumPy's ``searchsorted`` makes the
bin boundaries bit-for-bit those of the original ``np.histogram`` code.

Which KLD to report:

* :func:`kld_starlight` is the number the original Starlight code prints (SPEC
    §6.1): a symmetric KL between *image intensity* histograms on [0, 1].
* :func:`kld_noiseflow` is the standard raw-SIDD noise-model metric (Noise
    Flow): forward KL between *residual* histograms, averaged over patches.
* :func:`kld_srgb` is the sRGB variant on 8-bit residuals.
* :func:`akld` is DANet's per-pixel Gaussian KL between local variance maps.
"""
from __future__ import annotations

from typing import NamedTuple

import numpy as np

from starlight_jax.metrics.image_quality import gaussian_window
from starlight_jax.metrics.residual_stats import residual
from starlight_jax.validation import check_array, check_same_shape

# SPEC §6.1: the original builds its edges with np.arange(0, 1 + bw, bw); the
# same expression is kept so that values on a bin boundary land where they did.
_STARLIGHT_BW = 1.0 / 1000
STARLIGHT_BIN_EDGES = np.arange(0.0, 1.0 + _STARLIGHT_BW, _STARLIGHT_BW)  # 1001 edges

# Noise Flow (Abdelhamed et al., ICCV 2019) raw-data binning: 64 bins of width
# 0.2/64 on [-0.1, 0.1] plus one overflow bin on each side; 67 edges.
_NOISEFLOW_BW = 0.2 / 64
NOISEFLOW_BIN_EDGES = np.concatenate(
        ([-1000.0], np.arange(-0.1, 0.1 + 1e-9, _NOISEFLOW_BW), [1000.0]))

# sRGB residuals in 8-bit units are integers in [-255, 255]; 1-DN bins [k, k+1).
SRGB_BIN_EDGES = np.arange(-256.0, 257.0)  # 513 edges, 512 bins

# DANet's window: cv2.getGaussianKernel(7, sigma=-1). For odd sizes <= 7 and a
# non-positive sigma OpenCV returns a fixed table instead of sampling a Gaussian;
# for size 7 it is [1, 3.5, 7, 9, 7, 3.5, 1] / 32 (close to a Gaussian, sigma ~1.4).
_OPENCV_SMALL_KERNELS = {
        1: (1.0,),
        3: (0.25, 0.5, 0.25),
        5: (0.0625, 0.25, 0.375, 0.25, 0.0625),
        7: (0.03125, 0.109375, 0.21875, 0.28125, 0.21875, 0.109375, 0.03125),
}


# ----------------------------------------------------------------------------
# Histogram and KL helpers.
# ----------------------------------------------------------------------------


def _row_histograms(rows: np.ndarray, edges: np.ndarray) -> np.ndarray:
    """Normalised histograms of every row of ``rows``.

    Same bin rule as ``np.histogram`` with explicit edges: bin ``k`` is
    ``[e_k, e_{k+1})`` except the last, which is closed. Values outside
    ``[e_0, e_K]`` are dropped but still count in the normaliser.

    Args:
        rows: [N, M] values.
        edges: [K + 1] increasing bin edges.

    Returns:
        [N, K] bin counts divided by M (the total element count of each row).
    """
    n_rows, n_per_row = rows.shape
    n_bins = edges.size - 1
    idx = np.searchsorted(edges, rows, side="right") - 1
    idx[rows == edges[-1]] = n_bins - 1  # the last bin is closed on the right
    valid = (idx >= 0) & (idx < n_bins)
    flat = (np.arange(n_rows)[:, None] * n_bins + idx)[valid]
    counts = np.bincount(flat, minlength=n_rows * n_bins).reshape(n_rows, n_bins)
    return counts / n_per_row


def _kl_forward_and_inverse(p: np.ndarray, q: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Σ p log(p/q) and Σ q log(q/p) over the last axis, on bins where p, q > 0."""
    keep = (p > 0) & (q > 0)
    # Dummy 1s in dropped bins keep log() finite; their terms are then zeroed.
    logp = np.log(np.where(keep, p, 1.0))
    logq = np.log(np.where(keep, q, 1.0))
    fwd = np.sum(np.where(keep, p * (logp - logq), 0.0), axis=-1)
    inv = np.sum(np.where(keep, q * (logq - logp), 0.0), axis=-1)
    return fwd, inv


# ----------------------------------------------------------------------------
# KLD variants.
# ----------------------------------------------------------------------------


def kld_starlight(generated, real) -> float:
    """Symmetric KL between [0, 1] intensity histograms, exactly as the original.

    Both inputs are flattened (any shapes, sizes may differ). With 1000 equal bins
    on [0, 1] (1001 edges, bin ``k`` = ``[k/1000, (k+1)/1000)``, the last closed),

    .. math::

          p_k = \\frac{\\#\\{g \\in \\text{bin}_k\\}}{N_g}, \\quad
          q_k = \\frac{\\#\\{r \\in \\text{bin}_k\\}}{N_r}, \\quad
          \\mathrm{KLD} = \\tfrac12 \\Big[\\sum_{k \\in S} p_k \\log\\frac{p_k}{q_k}
              + \\sum_{k \\in S} q_k \\log\\frac{q_k}{p_k}\\Big],
          \\quad S = \\{k : p_k > 0, q_k > 0\\}.

    :math:`N_g, N_r` are the *total* element counts, so values outside [0, 1]
    are dropped from the bins but still count (the histograms may sum to < 1).

    .. note::
          This measures the distribution of noisy *image intensities*, not of the
          noise residual, and ignores mass in bins that only one side populates
          (SPEC §12.13). It is reported for comparability with the paper; prefer
          :func:`kld_noiseflow` as a noise-model metric.

    Args:
        generated: [...] model samples (p in the original's ``cal_kld(p, q)``).
        real: [...] real samples (q).

    Returns:
        The symmetric KL divergence (a Python float, >= 0).

    Raises:
        ValueError: if an input is empty, non-numeric or has NaN/inf.
    """
    g = check_array("generated", generated, dtype="real", nonempty=True, host=True).astype(np.float64).reshape(1, -1)
    r = check_array("real", real, dtype="real", nonempty=True, host=True).astype(np.float64).reshape(1, -1)
    p = _row_histograms(g, STARLIGHT_BIN_EDGES)
    q = _row_histograms(r, STARLIGHT_BIN_EDGES)
    fwd, inv = _kl_forward_and_inverse(p, q)
    return float(0.5 * (fwd[0] + inv[0]))


class KLDPerBurst(NamedTuple):
    """Per-burst :func:`kld_starlight` values and their two reductions."""
    mean: float  # mean over bursts: comparable across test-set sizes
    sum: float  # sum over bursts: what the original logs as test/kld (SPEC §12.13)
    per_burst: np.ndarray  # [B] float64


def kld_starlight_per_burst(generated, real) -> KLDPerBurst:
    """:func:`kld_starlight` for each burst along the leading axis.

    Burst ``b`` compares ``generated[b]`` with ``real[b]`` (all their elements
    flattened). The original sums these values over its data shard; the mean is
    the size-independent number to report.

    Args:
        generated: [B, ...] model samples, e.g. [B, T, H, W, C].
        real: [B, ...] real samples with the same leading size B (the trailing
            shapes may differ).

    Returns:
        ``KLDPerBurst(mean, sum, per_burst)``.

    Raises:
        ValueError: if the leading sizes differ or an input is invalid.
    """
    g = check_array("generated", generated, dtype="real", min_rank=1, nonempty=True, host=True)
    r = check_array("real", real, dtype="real", min_rank=1, nonempty=True, host=True)
    if g.shape[0] != r.shape[0]:
        raise ValueError(
                f"real must have the same number of bursts (leading axis) as generated "
                f"({g.shape[0]}); got {r.shape[0]}.")
    if g[0].size == 0 or r[0].size == 0:
        raise ValueError("generated and real must have non-empty bursts.")
    p = _row_histograms(g.reshape(g.shape[0], -1).astype(np.float64), STARLIGHT_BIN_EDGES)
    q = _row_histograms(r.reshape(r.shape[0], -1).astype(np.float64), STARLIGHT_BIN_EDGES)
    fwd, inv = _kl_forward_and_inverse(p, q)
    per_burst = 0.5 * (fwd + inv)
    return KLDPerBurst(float(per_burst.mean()), float(per_burst.sum()), per_burst)


def _patch_rows(x: np.ndarray, patch: int | None) -> np.ndarray:
    """[..., H, W, C] -> [N_patches, patch * patch * C]; H, W cropped to multiples."""
    h, w, c = x.shape[-3:]
    x = x.reshape((-1, h, w, c))
    if patch is None:
        return x.reshape(x.shape[0], -1)
    nh, nw = h // patch, w // patch
    x = x[:, :nh * patch, :nw * patch]
    x = x.reshape(x.shape[0], nh, patch, nw, patch, c).transpose(0, 1, 3, 2, 4, 5)
    return x.reshape(-1, patch * patch * c)


def kld_noiseflow(real_noisy, real_clean, model_noisy, model_clean=None, *,
                                    patch: int | None = 32) -> float:
    """Noise Flow's raw-data KLD: forward KL of residual histograms, patch-averaged.

    Residuals :math:`n = \\text{noisy} - \\text{clean}` are histogrammed with
    Noise Flow's 67 edges: :math:`[-1000, -0.1)`, 64 bins of width 0.2/64 on
    :math:`[-0.1, 0.1)`, and :math:`[0.1, 1000]`. For every non-overlapping
    ``patch`` x ``patch`` spatial window of every image (leading axes flattened),
    all ``patch**2 * C`` residuals of the window (all channels pooled, as Noise
    Flow pools the 4 packed Bayer channels of its 32x32 patches) give one
    histogram for real (p) and one for the model (q), each normalised by the
    window's element count, and

    .. math::

          \\mathrm{KLD} = \\frac{1}{N_\\text{patch}} \\sum_{\\text{patches}}
              \\sum_{k : p_k > 0, q_k > 0} p_k \\log\\frac{p_k}{q_k}.

    Rows/columns beyond the last whole patch are ignored. Window ``i`` of the
    model is paired with window ``i`` of the real data, so both must have the same
    shape.

    Args:
        real_noisy: [..., H, W, C] float real noisy images.
        real_clean: [..., H, W, C] float clean images for ``real_noisy``.
        model_noisy: [..., H, W, C] float model samples.
        model_clean: clean images that ``model_noisy`` was generated from; defaults
            to ``real_clean`` (the usual case: the model noised the same clean frames).
        patch: window side; ``None`` pools each whole image into one histogram.

    Returns:
        The patch-averaged forward KL(real || model) (a Python float).

    Raises:
        ValueError: on shape/dtype mismatch, non-finite values, or a bad ``patch``.
    """
    n_real = residual(real_noisy, real_clean, "real_noisy", "real_clean")
    if model_clean is None:
        model_clean, clean_name = real_clean, "real_clean"
    else:
        clean_name = "model_clean"
    n_model = residual(model_noisy, model_clean, "model_noisy", clean_name)
    check_same_shape("model_noisy", n_model.shape, "real_noisy", n_real.shape)
    if patch is not None:
        if isinstance(patch, bool) or not isinstance(patch, (int, np.integer)) or patch < 1:
            raise ValueError(f"patch must be a positive int or None; got {patch!r}.")
        if patch > min(n_real.shape[-3:-1]):
            raise ValueError(
                    f"patch must be <= H and W {n_real.shape[-3:-1]}; got {patch}.")
    p = _row_histograms(_patch_rows(n_real, patch), NOISEFLOW_BIN_EDGES)
    q = _row_histograms(_patch_rows(n_model, patch), NOISEFLOW_BIN_EDGES)
    fwd, _ = _kl_forward_and_inverse(p, q)
    return float(fwd.mean())


def _to_dn(x, name: str) -> np.ndarray:
    """8-bit digital numbers (float64 integers) from uint8 or [0, 1] floats."""
    arr = check_array(name, x, dtype="float_or_uint8", min_rank=3, nonempty=True, host=True)
    if arr.dtype == np.uint8:
        return arr.astype(np.float64)
    if arr.min() < 0.0 or arr.max() > 1.0:
        raise ValueError(
                f"{name} must lie in [0, 1] when floating; got range "
                f"[{arr.min()}, {arr.max()}].")
    # Round to the 8-bit image the metric is defined on: x*255 is rarely an exact
    # integer (e.g. 13/255*255 = 12.999...), and flooring into 1-DN bins would
    # shift such values by one bin.
    return np.round(arr.astype(np.float64) * 255.0)


def kld_srgb(real_noisy, clean, model_noisy) -> float:
    """sRGB KLD: forward KL between 8-bit residual histograms, averaged over images.

    Inputs are uint8 or floats in [0, 1]; floats are converted to 8-bit values
    :math:`\\mathrm{round}(255 x)`. Residuals :math:`d = \\text{noisy} -
    \\text{clean}` are integers in [-255, 255], histogrammed in 1-DN bins
    :math:`[k, k+1)` on [-256, 256]. Per image (leading axes flattened; H, W, C
    pooled), with p the real and q the model histogram,

    .. math::

          \\mathrm{KLD} = \\frac{1}{N} \\sum_{\\text{images}}
              \\sum_{k : p_k > 0, q_k > 0} p_k \\log\\frac{p_k}{q_k}.

    Args:
        real_noisy: [..., H, W, C] real noisy sRGB images.
        clean: [..., H, W, C] clean images (used for both residuals).
        model_noisy: [..., H, W, C] model samples generated from ``clean``.

    Returns:
        The image-averaged forward KL(real || model) (a Python float).

    Raises:
        ValueError: on shape mismatch, a wrong dtype, non-finite values or floats
            outside [0, 1].
    """
    real = _to_dn(real_noisy, "real_noisy")
    c = _to_dn(clean, "clean")
    model = _to_dn(model_noisy, "model_noisy")
    check_same_shape("clean", c.shape, "real_noisy", real.shape)
    check_same_shape("model_noisy", model.shape, "real_noisy", real.shape)
    p = _row_histograms(_patch_rows(real - c, None), SRGB_BIN_EDGES)
    q = _row_histograms(_patch_rows(model - c, None), SRGB_BIN_EDGES)
    fwd, _ = _kl_forward_and_inverse(p, q)
    return float(fwd.mean())


def _window_1d(window: int, sigma: float | None) -> np.ndarray:
    """Normalised 1-D smoothing window (OpenCV's rule when ``sigma`` is None)."""
    if sigma is None:
        if window in _OPENCV_SMALL_KERNELS:
            return np.asarray(_OPENCV_SMALL_KERNELS[window])
        sigma = 0.3 * ((window - 1) * 0.5 - 1) + 0.8  # cv2.getGaussianKernel default
    return gaussian_window(window, sigma)


def _blur_reflect(x: np.ndarray, k: np.ndarray) -> np.ndarray:
    """Separable 'same' filtering of [N, H, W, C] over H and W, reflect padding.

    Reflect excludes the edge sample (``d c b | a b c d``), like PyTorch's
    ``F.pad(mode='reflect')`` that DANet uses.
    """
    r = k.size // 2
    xp = np.pad(x, ((0, 0), (r, r), (r, r), (0, 0)), mode="reflect")
    h, w = x.shape[1:3]
    rows = sum(k[i] * xp[:, i:i + h] for i in range(k.size))
    return sum(k[i] * rows[:, :, i:i + w] for i in range(k.size))


def akld(real_noisy, clean, model_noisy_samples, *, window: int = 7,
                  sigma: float | None = None) -> float:
    """DANet's average KL divergence (AKLD, Yue et al., ECCV 2020).

    Local variances come from smoothing the squared residuals,
    :math:`v = \\max(G * (y - x)^2, 10^{-10})` per pixel and channel, where G is a
    ``window`` x ``window`` separable window applied with reflect padding. With
    ``sigma=None`` G is DANet's ``cv2.getGaussianKernel(7, -1)``, which OpenCV
    returns as the fixed table [1, 3.5, 7, 9, 7, 3.5, 1] / 32 (about a Gaussian of
    sigma 1.4, not 3); pass ``sigma`` to use a sampled Gaussian instead. For each
    model sample, the ratio :math:`r = v_\\text{model} / v_\\text{real}` is clamped
    to [0.1, 10] (the clamp applies to this variance ratio, before the log), and

    .. math::

          \\mathrm{AKLD} = \\frac{1}{L} \\sum_{l=1}^{L} \\operatorname{mean}_{n,h,w,c}
              \\tfrac12 \\big(r - 1 - \\log r\\big),

    where :math:`\\tfrac12(r - 1 - \\log r) = \\mathrm{KL}(\\mathcal N(0, v_\\text{model})
    \\,\\|\\, \\mathcal N(0, v_\\text{real}))`. The clamp caps each pixel's term at
    :math:`\\tfrac12(10 - 1 - \\log 10) \\approx 3.35` (ratio 10) or
    :math:`\\tfrac12(0.1 - 1 + \\log 10) \\approx 0.70` (ratio 0.1).

    AKLD does not reach 0 for a perfect model: each local variance averages about 25 pixels (the window's
    :math:`1 / (\\sum k_i^2)^2`), fewer effective ones when the noise is spatially correlated, and the
    real and the model's local variances scatter independently. A model with the data's correlation
    therefore scores *higher* than white noise of the same level, whose local variances scatter less: for
    noise blurred by a 3-tap binomial kernel (2×2 block-variance ratio 2.8, as in sRGB pairs) an exact model
    scores 0.14 and white noise 0.097 (`tests/test_metrics.py`). Read AKLD beside the model's own floor
    (`starlight_jax.evaluation`'s ``akld_floor``) and the block-sum KLDs, not alone.

    Args:
        real_noisy: [..., H, W, C] float real noisy images.
        clean: [..., H, W, C] float clean images.
        model_noisy_samples: [L, ..., H, W, C] L model samples generated from
            ``clean`` (a single sample may be given with the shape of ``clean``).
            DANet clamps its samples to [0, 1] before this step; do so beforehand if
            the model does not.
        window: odd window size (7 in DANet).
        sigma: Gaussian sigma in pixels, or None for OpenCV's default window.

    Returns:
        The AKLD (a Python float, >= 0).

    Raises:
        ValueError: on shape/dtype mismatch, non-finite values, a bad ``window`` or
            ``sigma``.
    """
    if isinstance(window, bool) or not isinstance(window, (int, np.integer)) or (
            window < 1 or window % 2 == 0):
        raise ValueError(f"window must be a positive odd int; got {window!r}.")
    if sigma is not None and not (np.isfinite(sigma) and sigma > 0):
        raise ValueError(f"sigma must be a positive float or None; got {sigma!r}.")
    res_real = residual(real_noisy, clean, "real_noisy", "clean")
    samples = check_array("model_noisy_samples", model_noisy_samples, min_rank=3, nonempty=True,
                          host=True).astype(np.float64)
    if samples.shape == res_real.shape:
        samples = samples[None]
    if samples.shape[1:] != res_real.shape:
        raise ValueError(
                f"model_noisy_samples must have shape [L, *{res_real.shape}] or "
                f"{res_real.shape}; got {samples.shape}.")
    h, w, c = res_real.shape[-3:]
    if window // 2 >= min(h, w):
        raise ValueError(f"window must be < 2 * min(H, W) = {2 * min(h, w)}; got {window}.")
    k = _window_1d(window, sigma)
    clean64 = np.asarray(clean, np.float64).reshape(-1, h, w, c)
    v_real = np.maximum(_blur_reflect(res_real.reshape(-1, h, w, c) ** 2, k), 1e-10)
    per_sample = []
    for sample in samples:
        res_model = sample.reshape(-1, h, w, c) - clean64
        v_model = np.maximum(_blur_reflect(res_model ** 2, k), 1e-10)
        ratio = np.clip(v_model / v_real, 0.1, 10.0)
        per_sample.append(np.mean(0.5 * (ratio - 1.0 - np.log(ratio))))
    return float(np.mean(per_sample))
