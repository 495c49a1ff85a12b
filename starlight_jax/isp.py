r"""A small differentiable camera pipeline (ISP) for the ``isp`` noise token: where sRGB noise is made.

A processed (sRGB) image is not the sensor's image plus white noise. The camera adds Poisson–Gaussian noise
to a Bayer mosaic of linear values, then demosaicks it (each output pixel mixes its neighbours), applies a
3×3 colour matrix (which mixes the channels), smooths the chroma (and a little the luma) and applies a tone
curve whose slope falls with the intensity. The ``isp`` component runs that pipeline on the noise, after
the unprocessing literature (Brooks et al., "Unprocessing images for learned raw denoising", CVPR 2019):

.. math::
   l = M^{-1}\,T^{-1}(x), \qquad r = \mathrm{mosaic}(l), \qquad n \sim \mathcal N(0,\, a\,r + b), \\
   \text{noise} = S\big(T(M\,D(r + n)) - T(M\,D(r))\big),

with ``x`` the clean sRGB image, ``M`` the colour matrix (camera RGB → linear sRGB, white balance folded in;
its rows sum to 1 so grey stays grey), ``T`` the tone curve, ``D`` bilinear demosaicking of an RGGB mosaic,
and ``S`` a Gaussian smoothing of the luma and of the chroma (BT.601 YCbCr), the chroma then scaled by a
saturation gain (camera picture styles boost it; smoothing alone would leave sRGB noise almost grey). The noise is the pipeline's
response to the raw noise, so spatial correlation (D, S), cross-channel correlation (M, S) and the
rise-and-fall of the noise level with intensity (T' falls while a·r + b rises) follow from the physics,
with parameters a person can read:

=====================  ==========================================  ================================
key                    meaning                                     stored as
=====================  ==========================================  ================================
``shot``, ``read``     raw variance a·r + b (``[3]``: per CFA colour  log (as the other components)
                       with ``per_channel``)
``isp_matrix``         ``[3, 3]`` colour matrix before projection  as is (rows re-projected to sum 1)
``isp_gamma``          γ of the tone curve                         log
``isp_toe``            c: the curve's linear toe near black        log
``isp_shoulder``       s ∈ (0, 1): weight of a smoothstep shoulder  logit
``isp_luma_sigma``     σ (px) of the luma smoothing                log
``isp_chroma_sigma``   σ (px) of the chroma smoothing              log
``isp_saturation``     gain of the chroma after its smoothing      log
                       (a picture style's saturation boost)
=====================  ==========================================  ================================

The tone curve is :math:`T = (1-s)\,G + s\,(3G^2 - 2G^3)` with
:math:`G(l) = ((l + c)^{1/\gamma} - c^{1/\gamma}) / ((1 + c)^{1/\gamma} - c^{1/\gamma})`: a gamma curve with a
finite slope at black (the toe) and a shoulder that compresses the highlights, as camera curves do; outside
[0, 1] it continues linearly with its end slopes (noise below black or above white). Its inverse (to
unprocess the clean image) is exact for G and a few Newton steps for the cubic.
"""
from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np

# Parameters stored as logs / logits (see the table above); `noise.scales` turns them into used values.
LOG_PARAMS = ("isp_gamma", "isp_toe", "isp_luma_sigma", "isp_chroma_sigma", "isp_saturation")
LOGIT_PARAMS = ("isp_shoulder",)

# Initial values: an sRGB-like curve (γ 2.2, a short toe), a mild shoulder, an identity colour matrix
# and the smoothing of a typical in-camera JPEG (chroma smoothed over a few pixels, luma barely).
INIT = dict(isp_gamma=2.2, isp_toe=0.01, isp_shoulder=0.3, isp_luma_sigma=0.5, isp_chroma_sigma=1.5,
            isp_saturation=1.0)

SMOOTH_RADIUS = 6  # taps each side of the separable Gaussian: 3σ of the widest chroma smoothing seen (σ≈2)

# BT.601 full-range RGB → YCbCr (rows Y, Cb, Cr) and back.
_YCBCR = np.array([[0.299, 0.587, 0.114],
                   [-0.168736, -0.331264, 0.5],
                   [0.5, -0.418688, -0.081312]], np.float32)
_YCBCR_INV = np.linalg.inv(_YCBCR).astype(np.float32)

# Bilinear demosaicking kernels (applied to each zero-filled colour plane of the mosaic).
_K_GREEN = np.array([[0, 1, 0], [1, 4, 1], [0, 1, 0]], np.float32) / 4
_K_RED_BLUE = np.array([[1, 2, 1], [2, 4, 2], [1, 2, 1]], np.float32) / 4


def init_params() -> dict:
    """Initial stored values of the ISP parameters (`INIT`, identity colour matrix)."""
    out = {"isp_matrix": jnp.eye(3, dtype=jnp.float32)}
    for k, v in INIT.items():
        out[k] = jnp.float32(math.log(v / (1 - v)) if k in LOGIT_PARAMS else math.log(v))
    return out


def used_values(params) -> dict:
    """The ISP's used values from stored ``params`` (only the ``isp_*`` keys are read)."""
    out = {}
    for k, v in params.items():
        if k in LOG_PARAMS:
            out[k] = jnp.exp(v)
        elif k in LOGIT_PARAMS:
            out[k] = jax.nn.sigmoid(v)
        elif k == "isp_matrix":
            out[k] = colour_matrix(v)
    return out


def stored_values(values: dict) -> dict:
    """Inverse of `used_values` for the scalar ISP parameters (``isp_matrix`` is stored as given)."""
    out = {}
    for k, v in values.items():
        v = np.asarray(v, np.float32)
        if k in LOG_PARAMS:
            out[k] = jnp.asarray(np.log(v))
        elif k in LOGIT_PARAMS:
            out[k] = jnp.asarray(np.log(v / (1 - v)))
        elif k == "isp_matrix":
            out[k] = jnp.asarray(v)
    return out


def colour_matrix(stored):
    """``stored`` ``[3, 3]`` with each row shifted to sum to 1 (grey in, grey out)."""
    return stored + (1.0 - jnp.sum(stored, axis=-1, keepdims=True)) / stored.shape[-1]


# ------------------------------------------------------------------------------------------------------
# The tone curve and its inverse
# ------------------------------------------------------------------------------------------------------
def _gamma_parts(gamma, toe):
    p = 1.0 / gamma
    c0 = toe ** p
    return p, c0, (1.0 + toe) ** p - c0


def _tone_inside(l, gamma, toe, shoulder):
    p, c0, span = _gamma_parts(gamma, toe)
    g = ((jnp.clip(l, 0.0, 1.0) + toe) ** p - c0) / span
    return (1 - shoulder) * g + shoulder * g * g * (3 - 2 * g)


def _tone_slope_inside(l, gamma, toe, shoulder):
    p, c0, span = _gamma_parts(gamma, toe)
    l = jnp.clip(l, 0.0, 1.0)
    g = ((l + toe) ** p - c0) / span
    dg = p * (l + toe) ** (p - 1) / span
    return ((1 - shoulder) + shoulder * 6 * g * (1 - g)) * dg


def tone(l, gamma, toe, shoulder):
    """The tone curve ``T(l)`` (linear → display), continued linearly outside [0, 1]."""
    inside = _tone_inside(l, gamma, toe, shoulder)
    low = _tone_slope_inside(0.0, gamma, toe, shoulder) * jnp.minimum(l, 0.0)
    high = _tone_slope_inside(1.0, gamma, toe, shoulder) * jnp.maximum(l - 1.0, 0.0)
    return inside + low + high


def tone_slope(l, gamma, toe, shoulder):
    """``T'(l)`` (for tests and plots; the pipeline differences T itself)."""
    inside = (l >= 0) & (l <= 1)
    return jnp.where(inside, _tone_slope_inside(l, gamma, toe, shoulder),
                     jnp.where(l < 0, _tone_slope_inside(0.0, gamma, toe, shoulder),
                               _tone_slope_inside(1.0, gamma, toe, shoulder)))


def inverse_tone(x, gamma, toe, shoulder, newton_steps: int = 8):
    """``T⁻¹(x)`` for ``x`` in [0, 1] (clipped there): Newton on the cubic shoulder, then G⁻¹ exactly."""
    x = jnp.clip(x, 0.0, 1.0)
    g = x
    for _ in range(newton_steps):
        f = (1 - shoulder) * g + shoulder * g * g * (3 - 2 * g) - x
        df = (1 - shoulder) + shoulder * 6 * g * (1 - g)
        g = jnp.clip(g - f / jnp.maximum(df, 1e-3), 0.0, 1.0)
    p, c0, span = _gamma_parts(gamma, toe)
    return jnp.maximum(g * span + c0, 0.0) ** (1.0 / p) - toe


# ------------------------------------------------------------------------------------------------------
# Mosaic, demosaic and smoothing
# ------------------------------------------------------------------------------------------------------
def cfa_mask(height: int, width: int, dtype=jnp.float32):
    """One-hot ``[H, W, 3]`` RGGB mask: R at (even, even), G at (even, odd) and (odd, even), B at (odd, odd)."""
    y = np.arange(height)[:, None] % 2
    x = np.arange(width)[None, :] % 2
    colour = np.where((y == 0) & (x == 0), 0, np.where((y == 1) & (x == 1), 2, 1))
    return jnp.asarray(np.eye(3, dtype=np.float32)[colour], dtype)


def _reflect(i, n: int):
    """Index ``i`` reflected into [0, n) about the border pixels (…, 2, 1, 0, 1, 2, …): keeps the CFA parity."""
    period = 2 * (n - 1)
    i = np.abs(i) % period
    return np.where(i >= n, period - i, i)


def _correlate_const(x, kernel: np.ndarray):
    """'Same' correlation of every channel of ``x`` ``[..., H, W, C]`` with a constant ``kernel``
    ``[kh, kw, C]`` on a reflected border: a sum of shifted slices, zero taps skipped (XLA fuses it into one
    loop)."""
    kh, kw, _ = kernel.shape
    h, w = x.shape[-3], x.shape[-2]
    pad = [(0, 0)] * (x.ndim - 3) + [(kh // 2, kh // 2), (kw // 2, kw // 2), (0, 0)]
    padded = jnp.pad(x, pad, mode="reflect")
    out = 0.0
    for i in range(kh):
        for j in range(kw):
            if np.any(kernel[i, j]):
                out = out + jnp.asarray(kernel[i, j], x.dtype) * padded[..., i:i + h, j:j + w, :]
    return out


def _blur_matrix(taps, n: int):
    """The ``[n, n]`` matrix of a 'same' correlation with ``taps`` ``[2R + 1]`` on a reflected border:
    ``(x @ M)[i] = Σ_t taps[t] · x[reflect(i + t − R)]``. A blur as one matmul compiles in a fraction of the
    time of its unrolled taps and runs as fast on a CPU; its gradient in the taps is a scatter."""
    radius = (taps.shape[0] - 1) // 2
    out_idx = np.repeat(np.arange(n), taps.shape[0])
    tap_idx = np.tile(np.arange(taps.shape[0]), n)
    src_idx = _reflect(out_idx + tap_idx - radius, n)
    return jnp.zeros((n, n), taps.dtype).at[src_idx, out_idx].add(taps[tap_idx])


def demosaic(mosaic3):
    """Bilinear demosaicking of a zero-filled mosaic ``[..., H, W, 3]`` (each plane holds its CFA sites)."""
    return _correlate_const(mosaic3, np.stack([_K_RED_BLUE, _K_GREEN, _K_RED_BLUE], axis=-1))


def gaussian_taps(sigma, radius: int = SMOOTH_RADIUS):
    """Normalised 1-D Gaussian taps ``[2·radius + 1]`` of std ``sigma`` pixels (differentiable in sigma)."""
    x = jnp.arange(-radius, radius + 1, dtype=jnp.float32)
    w = jnp.exp(-0.5 * (x / jnp.maximum(sigma, 1e-3)) ** 2)
    return w / jnp.sum(w)


def smooth_luma_chroma(x, luma_sigma, chroma_sigma, saturation=1.0):
    """Separable Gaussian smoothing of the luma (σ ``luma_sigma``) and the chroma (σ ``chroma_sigma``) of
    ``x`` ``[..., H, W, 3]`` in BT.601 YCbCr (reflected border), the chroma then multiplied by
    ``saturation``; returns RGB."""
    h, w = x.shape[-3], x.shape[-2]
    ycc = x @ jnp.asarray(_YCBCR.T, x.dtype)
    planes = []
    for c, sigma in enumerate((luma_sigma, chroma_sigma, chroma_sigma)):
        taps = gaussian_taps(sigma).astype(x.dtype)
        plane = ycc[..., c] @ _blur_matrix(taps, w)  # along W
        plane = jnp.swapaxes(jnp.swapaxes(plane, -1, -2) @ _blur_matrix(taps, h), -1, -2)  # along H
        planes.append(plane * (1.0 if c == 0 else jnp.asarray(saturation, x.dtype)))
    return jnp.stack(planes, axis=-1) @ jnp.asarray(_YCBCR_INV.T, x.dtype)


# ------------------------------------------------------------------------------------------------------
# The pipeline
# ------------------------------------------------------------------------------------------------------
def raw_estimate(clean, values):
    """The linear camera-RGB image ``M⁻¹ T⁻¹(x)`` behind a clean sRGB image ``[..., H, W, 3]``."""
    curve = (values["isp_gamma"], values["isp_toe"], values["isp_shoulder"])
    linear = inverse_tone(clean, *curve)
    return linear @ jnp.linalg.inv(values["isp_matrix"]).T.astype(clean.dtype)


def develop(raw3, values):
    """``T(M · D(mosaic))`` of a zero-filled mosaic ``[..., H, W, 3]``: the camera's rendering."""
    curve = (values["isp_gamma"], values["isp_toe"], values["isp_shoulder"])
    return tone(demosaic(raw3) @ values["isp_matrix"].T.astype(raw3.dtype), *curve)


def isp_noise(key, clean, values, shot, read, smooth: bool = True):
    """The noise the pipeline adds to ``clean`` ``[..., H, W, 3]`` (see the module docstring).

    Args:
      key: PRNG key of the raw noise (one normal draw per raw pixel).
      clean: clean sRGB images in [0, 1].
      values: used ISP values (`used_values`).
      shot, read: raw variance law a·r + b: scalars or ``[3]`` per CFA colour (``None``: absent).
      smooth: apply the luma/chroma smoothing S (off only for tests of the stages before it).

    Returns:
      The noise, shape of ``clean``.
    """
    height, width = clean.shape[-3], clean.shape[-2]
    mask = cfa_mask(height, width, clean.dtype)
    # Barriers keep XLA from fusing each stage into all of its shifted readers (the demosaic reads every
    # value five times): recomputing the inverse tone curve there multiplied the compile time by three.
    mosaic = jax.lax.optimization_barrier(raw_estimate(clean, values) * mask)
    variance = jnp.zeros((), clean.dtype)
    if shot is not None:
        variance = variance + jnp.asarray(shot, clean.dtype) * jnp.maximum(mosaic, 0.0)
    if read is not None:
        variance = variance + jnp.asarray(read, clean.dtype)
    eps = jax.random.normal(key, (*clean.shape[:-1], 1), clean.dtype)
    raw_noise = jax.lax.optimization_barrier(jnp.sqrt(jnp.maximum(variance, 1e-12)) * eps * mask)
    # D and M are linear: develop(mosaic + n) - develop(mosaic) needs one demosaic of each, no more.
    matrix = values["isp_matrix"].T.astype(clean.dtype)
    linear, noise_linear = jax.lax.optimization_barrier((demosaic(mosaic) @ matrix, demosaic(raw_noise) @ matrix))
    curve = (values["isp_gamma"], values["isp_toe"], values["isp_shoulder"])
    noise = tone(linear + noise_linear, *curve) - tone(linear, *curve)
    if smooth:
        noise = smooth_luma_chroma(noise, values["isp_luma_sigma"], values["isp_chroma_sigma"],
                                   values["isp_saturation"])
    return noise
