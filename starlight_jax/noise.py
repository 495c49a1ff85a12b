"""Physical noise components: pure functions of an explicit PRNG key, the parameters and the clean image.

Every component has the signature ``component(key, params, clean, cfg, **kw) -> noise`` with ``noise`` of
``clean``'s dtype and a shape that broadcasts to ``clean`` ``[..., H, W, C]`` (a burst is the axis before
``H``: ``[..., T, H, W, C]``): structured components keep their singleton axes (a column pattern is
``[..., 1, W, C]``) so the sum never materialises them at full size; `sample_components` broadcasts them
for display. They compose with `jax.jit`, `jax.vmap` and `jax.grad`. ``params`` is one flat dict; the
same keys mean the same physical quantity in both compat modes, but the stored value differs:

=================  =========================================  =========================================
key                ``compat="starlight"`` (stored = used)      ``compat="physics"`` (used = exp(stored))
=================  =========================================  =========================================
``shot``           a, std = a·x + b                            a, variance = a·x + b
``read``           b (a std)                                   b (a variance)
``uniform``        u, noise = u·U[0, 1)                        q, noise = q·(U[0, 1) − ½)
``column``         σ of per-column offsets (``row1``)          same
``column_t``       σ of ``rowt`` offsets                       same
``row``            σ of per-row offsets                        same
``periodic``       (p0, p1, p2) of SPEC §2.2                   same, no abs, no 1/√(HW)
``learned_fixed``  trainable (Hf, Wf, C) map                   same
``fixed_pattern``  constant (Hf, Wf, C) map (not trained)      same
``corr_kernel``    –                                          (5, 5, C) kernel of ``corr`` (see `correlate`)
``tone_gain``      –                                          (K, C) log gain at K knots (see `tone_curve`)
``tone_offset``    –                                          (K, C) offset at K knots, in units of 1e-3
``isp_*``          –                                          the camera pipeline of ``isp`` (`starlight_jax.isp`)
=================  =========================================  =========================================

With ``isp``, ``shot`` and ``read`` are the variance law of the *raw* mosaic (the pipeline turns it into sRGB
noise), ``[3]`` per CFA colour with ``per_channel``.

With ``NoiseConfig.per_channel`` the scalars of `PER_CHANNEL_PARAMS` are ``[C]`` arrays (one per channel) that
broadcast against ``[..., C]``; every formula is unchanged.

`scales` turns stored parameters into the used values; `init_params` gives each mode's initial values.
"""
from __future__ import annotations

import math
from typing import Callable, Mapping, Optional

import jax
import jax.numpy as jnp
import numpy as np

from starlight_jax import isp as isp_lib
from starlight_jax.noiselist import NoiseConfig

Params = Mapping[str, jax.Array]

# Scalars that the physics mode stores as logarithms (always positive when used, SPEC §12.9).
LOG_PARAMS = ("shot", "read", "uniform", "column", "column_t", "row", "periodic", "tone_gain")
# Signed parameters stored in a unit (used = stored × unit), so that an optimiser step of ~1e-2 moves them
# as little as it moves a log parameter: the tone offset in steps of 1e-3 (a quarter of an 8-bit DN).
UNIT_PARAMS = {"tone_offset": 1e-3}

# Initial values. Starlight: the scaled inits of the ablation class (SPEC §2.1), used as they are.
STARLIGHT_INIT = dict(shot=0.2, read=0.02, uniform=0.1, column=0.002, column_t=0.002, row=0.002,
                      periodic=(0.5, 0.5, 0.5))
# Physics: plausible values for a raw frame normalised to [0, 1] (a 10–14-bit sensor at moderate gain):
# shot variance 1e-3 per unit signal, read std ≈ 3e-3, 10-bit quantisation step, 1e-3 stripes.
PHYSICS_INIT = dict(shot=1e-3, read=1e-5, uniform=1.0 / 1024, column=1e-3, column_t=1e-3, row=1e-3,
                    periodic=(1e-3, 1e-3, 1e-3))

CORR_SIZE = 5  # side of the `correlate` kernel
# Knots of the `tone` curves, evenly spaced on [0, 1]: 17 DN apart in 8 bits, a few noise stds, so the
# curves cannot follow the image itself, only its level.
TONE_KNOTS = 16

# Parameters that are maps, kernels or curves, not physical scalars: left out of the scalar logs and tables.
MAP_PARAMS = ("fixed_pattern", "learned_fixed", "corr_kernel", "tone_gain", "tone_offset", "isp_matrix")

# Scalars that become one value per channel with NoiseConfig.per_channel (periodic stays shared).
PER_CHANNEL_PARAMS = ("shot", "read", "uniform", "column", "column_t", "row")

# One key per possible component, split in this fixed order, so that switching one component on or off
# never changes the random draws of the others.
_KEY_ORDER = ("shot_read", "shot", "read", "uniform", "column", "column_t", "row", "fixed",
              "learned_fixed", "periodic", "isp")

_TINY_VARIANCE = 1e-12  # keeps sqrt differentiable where a·x + b touches 0


def scales(params: Params, cfg: NoiseConfig) -> dict:
    """The values the formulas use: ``params`` as stored (starlight) or ``exp`` of them (physics; the
    `UNIT_PARAMS` times their unit)."""
    if cfg.starlight:
        return dict(params)
    out = {k: (jnp.exp(v) if k in LOG_PARAMS else v * UNIT_PARAMS[k] if k in UNIT_PARAMS else v)
           for k, v in params.items()}
    out.update(isp_lib.used_values(params))
    return out


def stored_value(name: str, value, cfg: NoiseConfig) -> jax.Array:
    """Inverse of `scales` for one parameter: the stored value whose used value is ``value``."""
    if not cfg.starlight and name in UNIT_PARAMS:
        return jnp.asarray(np.asarray(value, np.float32) / UNIT_PARAMS[name])
    if not cfg.starlight and name.startswith("isp_"):
        return isp_lib.stored_values({name: value})[name]
    if cfg.starlight or name not in LOG_PARAMS:
        return jnp.asarray(value, jnp.float32)
    value = np.asarray(value, np.float32)
    if np.any(value <= 0):
        raise ValueError(f"params[{name!r}] must be > 0 under compat='physics' (stored as a log), got {value}")
    return jnp.log(value)


# How each stored (log) parameter moves when the sensor's analogue gain is multiplied by g: a signal of
# S electrons read at gain g has shot variance g·(g S) ∝ g per unit of output signal and read / row / column
# variance ∝ g² (their std ∝ g); quantisation, fixed maps and the pipeline do not change.
GAIN_EXPONENTS = {"shot": 1.0, "read": 2.0, "column": 1.0, "column_t": 1.0, "row": 1.0}


def with_gain(params: Params, cfg: NoiseConfig, gain) -> dict:
    """``params`` at ``gain`` times the analogue gain they were learned at (a higher ISO).

    Shot variance scales by ``gain``, read variance by ``gain²``, the std of row and column offsets by
    ``gain``; the other parameters stay. Physics mode only (the original's linear std law has no such
    reading). ``gain`` is a positive scalar (traceable, differentiable)."""
    if cfg.starlight:
        raise ValueError("gain needs compat='physics': the original's std = a*x + b law has no analogue-gain reading")
    log_gain = jnp.log(jnp.asarray(gain, jnp.float32))
    return {k: (v + GAIN_EXPONENTS[k] * log_gain if k in GAIN_EXPONENTS else v) for k, v in params.items()}


def init_params(cfg: NoiseConfig, *, fixed_pattern=None, learned_fixed=None) -> dict:
    """Initial parameters of every enabled component (only those: the tree holds nothing unused).

    Args:
      cfg: the noise configuration.
      fixed_pattern: optional ``[Hf, Wf, C]`` map for ``fixed1`` (e.g. a mean dark frame in [0, 1]
        units). Default: zeros of ``cfg.fixed_shape``, i.e. no fixed pattern until one is given.
      learned_fixed: optional initial ``[Hf, Wf, C]`` map for ``learnedfixed``; default zeros.

    Returns:
      A flat dict of float32 arrays (see the module docstring for keys and meaning).
    """
    init = dict(STARLIGHT_INIT if cfg.starlight else PHYSICS_INIT)
    if cfg.per_channel:
        init.update({k: np.full(cfg.channels, init[k], np.float32) for k in PER_CHANNEL_PARAMS})
    params = {}
    # Only what is used: under starlight, "shot" without "read" adds nothing, so it gets no parameter.
    if cfg.shot and (cfg.read or not cfg.starlight):
        params["shot"] = stored_value("shot", init["shot"], cfg)
    if cfg.read:
        params["read"] = stored_value("read", init["read"], cfg)
    for name in ("uniform", "column", "column_t", "row", "periodic"):
        if getattr(cfg, name):
            params[name] = stored_value(name, init[name], cfg)
    if cfg.correlated:  # a centred delta: white noise until training says otherwise
        delta = np.zeros((CORR_SIZE, CORR_SIZE, cfg.channels), np.float32)
        delta[CORR_SIZE // 2, CORR_SIZE // 2] = 1.0
        params["corr_kernel"] = jnp.asarray(delta)
    if cfg.isp:
        params.update(isp_lib.init_params())
    if cfg.tone:  # gain 1 (log 0) and offset 0: the untouched physical noise until training says otherwise
        params["tone_gain"] = jnp.zeros((TONE_KNOTS, cfg.channels), jnp.float32)
        params["tone_offset"] = jnp.zeros((TONE_KNOTS, cfg.channels), jnp.float32)
    for name, flag, given in (("fixed_pattern", cfg.fixed, fixed_pattern),
                              ("learned_fixed", cfg.learned_fixed, learned_fixed)):
        if flag:
            shape = (*cfg.fixed_shape, cfg.channels)
            params[name] = (jnp.zeros(shape, jnp.float32) if given is None
                            else jnp.asarray(given, jnp.float32))
    return params


# ------------------------------------------------------------------------------------------------------
# Per-pixel components
# ------------------------------------------------------------------------------------------------------
def shot_read_noise(key, params: Params, clean, cfg: NoiseConfig):
    r"""Signal-dependent plus read noise, i.i.d. per pixel, frame and channel.

    .. math::
       \text{starlight: } n = (a x + b)\,\varepsilon, \qquad
       \text{physics: } n = \sqrt{a x + b}\,\varepsilon \;\; (\operatorname{Var} = a x + b),

    with :math:`\varepsilon \sim \mathcal N(0, 1)`. With ``cfg.shot_sampler == "poisson"`` the shot part
    is exact: :math:`n = a\,\mathrm{Poisson}(x / a) - x + \sqrt{b}\,\varepsilon` (``a`` is the gain in
    [0, 1] units per electron; not differentiable in ``a``).

    .. note:: The original uses the linear *std* a·x + b (SPEC §12.3); ``compat="starlight"`` keeps it.
    """
    s = scales(params, cfg)
    a, b = s["shot"].astype(clean.dtype), s["read"].astype(clean.dtype)
    if cfg.starlight:
        return (a * clean + b) * jax.random.normal(key, clean.shape, clean.dtype)
    if cfg.shot_sampler == "poisson":
        k_shot, k_read = jax.random.split(key)
        signal = jnp.maximum(clean, 0)
        electrons = jax.random.poisson(k_shot, jax.lax.stop_gradient(signal / a), clean.shape)
        return (a * electrons.astype(clean.dtype) - signal
                + jnp.sqrt(b) * jax.random.normal(k_read, clean.shape, clean.dtype))
    variance = jnp.maximum(a * clean + b, _TINY_VARIANCE)
    return jnp.sqrt(variance) * jax.random.normal(key, clean.shape, clean.dtype)


def shot_noise(key, params: Params, clean, cfg: NoiseConfig):
    """Shot noise alone (``shot`` without ``read``, physics only): Var = a·x.

    .. note:: Under ``compat="starlight"`` "shot" without "read" adds nothing (SPEC §2.1), so this
       component is never called there.
    """
    return shot_read_noise(key, {**params, "read": jnp.float32(-jnp.inf)}, clean, cfg)  # exp(-inf) = 0


def read_noise(key, params: Params, clean, cfg: NoiseConfig):
    """Read noise alone: std b (starlight) or variance b (physics), i.i.d. per pixel."""
    b = scales(params, cfg)["read"].astype(clean.dtype)
    std = b if cfg.starlight else jnp.sqrt(b)
    return std * jax.random.normal(key, clean.shape, clean.dtype)


def uniform_noise(key, params: Params, clean, cfg: NoiseConfig):
    r"""Quantisation noise, i.i.d. per pixel: :math:`u\,U[0,1)` (starlight) or :math:`q\,(U[0,1) - ½)`.

    .. note:: The original's one-sided draw adds a bias of u/2 (SPEC §12.4); physics is zero-mean with
       variance q²/12.
    """
    u = scales(params, cfg)["uniform"].astype(clean.dtype)
    eta = jax.random.uniform(key, clean.shape, clean.dtype)
    return u * eta if cfg.starlight else u * (eta - 0.5)


# ------------------------------------------------------------------------------------------------------
# Structured components
# ------------------------------------------------------------------------------------------------------
def column_noise(key, params: Params, clean, cfg: NoiseConfig):
    """Per-column offsets σ·ρ[..., w, c], constant along H, new per frame and channel (``row1``).

    .. note:: The original calls this "row" noise; it is one value per column (SPEC §12.6).
    """
    sigma = scales(params, cfg)["column"].astype(clean.dtype)
    draws = jax.random.normal(key, (*clean.shape[:-3], 1, *clean.shape[-2:]), clean.dtype)
    return sigma * draws


def column_t_noise(key, params: Params, clean, cfg: NoiseConfig):
    """Per-column offsets shared by all channels (``rowt``).

    Physics: one draw per burst, shared by every frame (the frame axis is -4 of ``[..., T, H, W, C]``;
    a single ``[H, W, C]`` frame gets its own draw). Starlight: a new draw per frame, as the original did
    under frames-as-batch (SPEC §12.7).
    """
    sigma = scales(params, cfg)["column_t"].astype(clean.dtype)
    lead = clean.shape[:-3]
    if not cfg.starlight and lead:
        lead = (*lead[:-1], 1)
    draws = jax.random.normal(key, (*lead, 1, clean.shape[-2], 1), clean.dtype)
    return sigma * draws


def row_noise(key, params: Params, clean, cfg: NoiseConfig):
    """Per-row offsets σ·ρ[..., h, c], constant along W, new per frame and channel (true row noise)."""
    sigma = scales(params, cfg)["row"].astype(clean.dtype)
    draws = jax.random.normal(key, (*clean.shape[:-2], 1, clean.shape[-1]), clean.dtype)
    return sigma * draws


def periodic_noise(key, params: Params, clean, cfg: NoiseConfig):
    r"""A column pattern with a 4-pixel period along W (SPEC §2.2), new per frame and channel.

    With α, β, γ ~ N(0, 1) per frame and channel, the original builds a spectrum on row 0 with
    ``S[0,0] = p0 α``, ``S[0,W//4] = p1 β + i p2 γ``, ``S[0,3W//4] = p1 β − i p2 γ`` and returns
    ``|ifft2_ortho(S)|``. Since S is zero off row 0, that is a 1-D inverse FFT along W:

    .. math::
       P[w] = \frac{1}{\sqrt{HW}}\Big|\sum_k S_k e^{2\pi i k w/W}\Big| \quad\text{(starlight)}, \qquad
       P[w] = \operatorname{Re}\sum_k S_k e^{2\pi i k w/W}
            = p_0\alpha + 2 p_1\beta\cos\tfrac{2\pi k_1 w}{W} - 2 p_2\gamma\sin\tfrac{2\pi k_1 w}{W}
       \quad\text{(physics)},

    with :math:`k_1 = \lfloor W/4 \rfloor`; physics puts the conjugate at :math:`W - k_1` (the original's
    :math:`\lfloor 3W/4 \rfloor` is the same when 4 divides W).

    .. note:: Physics drops the rectifying abs (which adds a positive mean) and the 1/√(HW) factor
       (which made the amplitude depend on the crop size, SPEC §12.5).

    Returns:
      ``[..., 1, W, C]``, constant along H.
    """
    p = scales(params, cfg)["periodic"].astype(clean.dtype)
    height, width = clean.shape[-3], clean.shape[-2]
    alpha, beta, gamma = jax.random.normal(key, (3, *clean.shape[:-3], clean.shape[-1]), clean.dtype)
    k1 = width // 4
    k2 = (3 * width) // 4 if cfg.starlight else (width - k1) % width
    spectrum = jnp.zeros((*alpha.shape, width), jnp.complex64)
    spectrum = spectrum.at[..., 0].set(p[0] * alpha)
    spectrum = spectrum.at[..., k1].set(jax.lax.complex(p[1] * beta, p[2] * gamma))
    spectrum = spectrum.at[..., k2].set(jax.lax.complex(p[1] * beta, -p[2] * gamma))
    # The FFT is not fused into the per-pixel sum, so the pattern is computed once per column rather
    # than re-evaluated (with its random transforms) for every pixel, as an elementwise formula would be.
    signal = width * jnp.fft.ifft(spectrum, axis=-1)  # [..., C, W] = sum_k S_k exp(2 pi i k w / W)
    if cfg.starlight:
        pattern = jnp.abs(signal) / math.sqrt(height * width)
    else:
        pattern = jnp.real(signal)
    return jnp.swapaxes(pattern, -1, -2)[..., None, :, :].astype(clean.dtype)


def _fixed_crop(key, fixed_map, clean, cfg: NoiseConfig, offset):
    """Crops ``[H, W]`` of the full-frame map at ``offset`` (or a random one drawn from ``key``).

    The offset is shared by every frame of the call, like the crop of the clean image it belongs to.
    The original drew it from numpy's global RNG with an exclusive upper bound (crashing when the crop
    equals the frame, SPEC §12.8); here the bound is inclusive, except under ``compat="starlight"``
    where a crop smaller than the frame keeps the exclusive bound.
    """
    height, width = clean.shape[-3], clean.shape[-2]
    if offset is None:
        span = jnp.array([fixed_map.shape[0] - height, fixed_map.shape[1] - width])
        maxval = jnp.maximum(span + (0 if cfg.starlight else 1), 1)
        offset = jax.random.randint(key, (2,), 0, maxval)
    return crop_map(fixed_map, offset, height, width).astype(clean.dtype)


def crop_map(fixed_map, offset, height: int, width: int):
    """The ``[height, width, C]`` window of a full-frame ``[Hf, Wf, C]`` map whose top-left corner is
    ``offset`` ``[2]`` (row, column): where the pipeline cut the clean crop from its frame.

    The one JAX crop of a fixed-pattern map (the noise components here, the denoiser's synthetic pairs):
    under jit the offset is traced, hence `jax.lax.dynamic_slice`. Its numpy twin,
    `starlight_jax.data.pipeline.crop_fixed_pattern`, cuts the same window ``[r, r + height) × [c, c + width)``
    on the host, from the data layer's numpy batches, where JAX is not imported.
    """
    offset = jnp.asarray(offset, jnp.int32)
    return jax.lax.dynamic_slice(fixed_map, (offset[0], offset[1], 0), (height, width, fixed_map.shape[-1]))


def fixed_pattern_noise(key, params: Params, clean, cfg: NoiseConfig, offset=None):
    """The constant fixed-pattern map cropped like the image (``fixed1``); no gradient flows into it."""
    return _fixed_crop(key, jax.lax.stop_gradient(params["fixed_pattern"]), clean, cfg, offset)


def learned_fixed_noise(key, params: Params, clean, cfg: NoiseConfig, offset=None):
    """The learnable fixed-pattern map cropped like the image (``learnedfixed``)."""
    return _fixed_crop(key, params["learned_fixed"], clean, cfg, offset)


# ------------------------------------------------------------------------------------------------------
# The tone curve
# ------------------------------------------------------------------------------------------------------
def tone_curve(table, clean):
    r"""Evaluates per-channel curves at the clean intensity: ``table`` ``[K, C]`` holds each channel's
    values at the knots :math:`k/(K-1)`, interpolated linearly in ``clip(clean, 0, 1)`` ``[..., H, W, C]``.

    The ``tone`` component uses two: the gain :math:`g_c(x) = \exp(\text{tone\_gain})` and the offset
    :math:`o_c(x)`. A tone curve T maps linear signal to the output; to first order
    :math:`T(l + n) = T(l) + T'(l)\,n`, so the noise of an sRGB pixel is the linear-domain noise times the
    curve's slope, a function of the clean value; the offset takes the mean shift that the curvature and
    the camera's processing leave (Nam's residual mean is +0.3 to +1.2 DN).
    """
    knots = table.shape[0]
    t = jnp.clip(clean, 0.0, 1.0) * (knots - 1)
    lo = jnp.clip(jnp.floor(t), 0, knots - 2).astype(jnp.int32)
    frac = t - lo
    channel = jnp.arange(table.shape[1])
    table = table.astype(clean.dtype)
    return table[lo, channel] * (1 - frac) + table[lo + 1, channel] * frac


def isp_noise(key, params: Params, clean, cfg: NoiseConfig):
    """The shot/read noise made on the raw mosaic behind ``clean`` and developed by the camera pipeline
    (``isp``; `starlight_jax.isp.isp_noise`)."""
    s = scales(params, cfg)
    return isp_lib.isp_noise(key, clean, s, s.get("shot"), s.get("read"))


def tone_offset(key, params: Params, clean, cfg: NoiseConfig):
    """The ``tone`` component's offset :math:`o_c(x)` (deterministic: ``key`` is unused)."""
    del key
    return tone_curve(scales({"tone_offset": params["tone_offset"]}, cfg)["tone_offset"], clean)


COMPONENTS: dict[str, Callable] = {
    "shot_read": shot_read_noise,
    "shot": shot_noise,
    "read": read_noise,
    "uniform": uniform_noise,
    "column": column_noise,
    "column_t": column_t_noise,
    "row": row_noise,
    "fixed": fixed_pattern_noise,
    "learned_fixed": learned_fixed_noise,
    "periodic": periodic_noise,
    "tone_offset": tone_offset,
    "isp": isp_noise,
}


def sample_components(key, params: Params, clean, cfg: NoiseConfig, *,
                      fixed_offset: Optional[jax.Array] = None) -> dict:
    """Draws every enabled component separately (for plots and tests).

    Args:
      key: a PRNG key; split into one key per possible component in a fixed order.
      params: the noise parameters (`init_params`).
      clean: ``[..., H, W, C]`` float array.
      cfg: the noise configuration.
      fixed_offset: optional ``[2]`` int (row, column) of the crop inside the fixed-pattern map; default
        random from the key.

    Returns:
      ``{component name: noise [..., H, W, C]}`` in ``cfg.components`` order; their sum is the noise
      that `add_noise` adds.
    """
    parts = _draw_components(key, params, clean, cfg, fixed_offset)
    return {name: jnp.broadcast_to(value, clean.shape) for name, value in parts.items()}


def correlate(noise, kernel):
    r"""Correlates per-pixel noise between neighbours: a depthwise 'same' convolution of ``noise``
    ``[..., H, W, C]`` with ``kernel`` ``[K, K, C]`` divided by its per-channel L2 norm.

    For white noise of per-pixel variance v the result has variance :math:`\sum_{ij} k_{ij}^2 v / \|k\|^2 = v`
    where v is locally constant, and autocorrelation :math:`\sum_{ij} k_{ij} k_{i+\delta, j+\epsilon} /
    \|k\|^2` at lag (δ, ε): the kernel shapes the noise spectrum, the physical scalars keep the level.
    """
    k = kernel.astype(noise.dtype)
    k = k / jnp.sqrt(jnp.sum(k * k, axis=(0, 1), keepdims=True) + 1e-12)
    *lead, h, w, c = noise.shape
    out = jax.lax.conv_general_dilated(noise.reshape(-1, h, w, c), k[:, :, None, :], (1, 1), "SAME",
                                       dimension_numbers=("NHWC", "HWIO", "NHWC"), feature_group_count=c)
    return out.reshape(noise.shape)


def _draw_components(key, params, clean, cfg, fixed_offset):
    keys = dict(zip(_KEY_ORDER, jax.random.split(key, len(_KEY_ORDER))))
    gain = tone_curve(scales(params, cfg)["tone_gain"], clean) if cfg.tone else None
    out = {}
    for name in cfg.components:
        if name == "tone_offset":
            out[name] = tone_offset(None, params, clean, cfg)
            continue
        kwargs = {"offset": fixed_offset} if name in ("fixed", "learned_fixed") else {}
        out[name] = COMPONENTS[name](keys[name], params, clean, cfg, **kwargs)
        if cfg.correlated and name in ("shot_read", "shot", "read"):
            out[name] = correlate(out[name], params["corr_kernel"])
        if gain is not None:
            out[name] = gain * out[name]
    return out


def add_noise(key, params: Params, clean, cfg: NoiseConfig, *, fixed_offset=None):
    """``clean`` plus the sum of the enabled components, not clipped: ``[..., H, W, C]``."""
    parts = _draw_components(key, params, clean, cfg, fixed_offset)
    noisy = clean
    for value in parts.values():
        noisy = noisy + value
    return noisy
