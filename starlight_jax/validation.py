"""Checks at the API boundary: static shapes and dtypes always, values only when they are concrete.

They run before tracing (or on tracers' static shapes inside `jax.jit`), so a bad input gives a
`ValueError` naming the argument and what was expected instead of an error from deep inside XLA.
"""
from __future__ import annotations

import math
from typing import Mapping

import jax
import jax.numpy as jnp
import numpy as np

from starlight_jax.noiselist import NoiseConfig


def is_concrete(x) -> bool:
    return not isinstance(x, jax.core.Tracer)


# How far outside [0, 1] a clean image may reach (about a quarter of an 8-bit step): rounding and float
# arithmetic pass, while 0-255 data, [-1, 1]-normalised data or a resize's overshoot do not.
RANGE_TOLERANCE = 1e-3


def check_array(name: str, x, *, dtype: str = "float", min_rank: int = 0, channels: int | None = None,
                min_hw: int = 1, nonempty: bool = False, unit: bool = False, values: bool = True,
                host: bool = False):
    """The one validator of image-like arrays ``[..., H, W, C]``: every check names ``name``.

    Static checks (dtype, rank, channels, size) always run, on tracers too; the values are checked only
    when concrete: under `jax.jit` there are none to check.

    Args:
      name: the argument's name, the first word of every message.
      x: the array. With ``host`` anything `np.asarray` takes; else an array (a list is refused).
      dtype: ``"float"`` (a floating dtype), ``"float_or_uint8"`` or ``"real"`` (float or integer).
      min_rank: the fewest axes.
      channels: the size the last axis must have (NHWC), or None.
      min_hw: the smallest H and W.
      nonempty: refuse an array without elements.
      unit: the array is an image in [0, 1]: the messages say so and ``values`` checks the range.
      values: check that concrete values are finite (and within [0, 1] ± `RANGE_TOLERANCE` with ``unit``).
      host: convert with `np.asarray` and return a NumPy array (host-side metrics) instead of a JAX one.

    Returns:
      ``x`` as a NumPy (``host``) or JAX array.
    """
    if host:
        x = np.asarray(x)
    elif isinstance(x, (list, tuple)):
        raise ValueError(f"{name} must be an array [..., H, W, C], got a {type(x).__name__}")
    elif not hasattr(x, "shape") or not hasattr(x, "dtype"):
        raise ValueError(f"{name} must be an array [..., H, W, C], got {type(x).__name__}")
    shape = tuple(x.shape)
    if len(shape) < min_rank:
        raise ValueError(f"{name} must have rank >= {min_rank} ([..., H, W, C]), got shape {shape}")
    _check_dtype(name, x.dtype, dtype, unit)
    if channels is not None:
        check_channels(name, shape, channels)
    if min_hw > 1 and min(shape[-3:-1]) < min_hw:
        raise ValueError(f"{name} must have H, W >= {min_hw}; got shape {shape}")
    if nonempty and not math.prod(shape):
        raise ValueError(f"{name} must be non-empty; got shape {shape}")
    if values and is_concrete(x) and jnp.issubdtype(x.dtype, jnp.floating):
        if unit:
            check_unit_range(name, np.asarray(x, np.float32))
        elif not bool(np.all(np.isfinite(np.asarray(x)))):
            raise ValueError(f"{name} contains NaN or inf values")
    return x if host else jnp.asarray(x)


def _check_dtype(name: str, dt, kind: str, unit: bool) -> None:
    if jnp.issubdtype(dt, jnp.floating):
        return
    if kind == "float_or_uint8" and dt == np.uint8:
        return
    if kind == "real" and jnp.issubdtype(dt, jnp.integer):
        return
    expected = {"float": "a floating dtype", "float_or_uint8": "a floating dtype or uint8",
                "real": "a real numeric dtype"}[kind]
    msg = f"{name} must be a float array in [0, 1]" if unit else f"{name} must have {expected}"
    hint = ("; convert integer images first, e.g. x.astype('float32') / 255 for 8-bit data"
            if kind == "float" and (unit or jnp.issubdtype(dt, jnp.integer)) else "")
    raise ValueError(f"{msg}, got dtype {dt}{hint}")


def check_same_shape(name: str, shape, ref_name: str, ref_shape) -> None:
    """``shape`` (of ``name``) must equal ``ref_shape`` (of ``ref_name``)."""
    if tuple(shape) != tuple(ref_shape):
        raise ValueError(f"{name} must have the same shape as {ref_name} {tuple(ref_shape)}; got {tuple(shape)}")


def check_image(name: str, x, channels: int | None = None, min_rank: int = 3) -> jax.Array:
    """Validates a float image or burst ``[..., H, W, C]`` in [0, 1] and returns it as a JAX array.

    The values (finite, within [0, 1] ± `RANGE_TOLERANCE`) are checked only when concrete (`check_array`).
    """
    return check_array(name, x, min_rank=min_rank, channels=channels, unit=True)


def check_channels(name: str, shape, channels: int) -> None:
    """The last axis of ``shape`` must be ``channels`` (NHWC)."""
    if shape[-1] != channels:
        raise ValueError(f"{name} has {shape[-1]} channels (last axis of shape {tuple(shape)}), but the "
                         f"noise model expects {channels}; channels are the last axis (NHWC)")


def check_unit_range(name: str, x: np.ndarray) -> None:
    """``x`` must be finite and within [0, 1] ± `RANGE_TOLERANCE`; the message suggests the conversion."""
    if not bool(np.all(np.isfinite(x))):
        raise ValueError(f"{name} contains NaN or inf values")
    if not x.size:
        return
    lo, hi = float(x.min()), float(x.max())
    if lo >= -RANGE_TOLERANCE and hi <= 1 + RANGE_TOLERANCE:
        return
    if hi > 255 + RANGE_TOLERANCE:
        hint = "divide by the white level first (e.g. / 65535 for 16-bit data)"
    elif hi > 1 + RANGE_TOLERANCE and lo >= -RANGE_TOLERANCE:
        hint = "it looks like 0-255 data: divide by 255 first"
    elif lo >= -1 - RANGE_TOLERANCE and hi <= 1 + RANGE_TOLERANCE:
        hint = "it looks like [-1, 1] data: use (x + 1) / 2"
    else:
        hint = "rescale it to [0, 1]"
    raise ValueError(f"{name} must hold values in [0, 1] (± {RANGE_TOLERANCE:g}), got [{lo:.4g}, {hi:.4g}]; "
                     f"{hint}, or clip small overshoots with jnp.clip({name}, 0, 1)")


def check_noise_params(params: Mapping, cfg: NoiseConfig, expected: Mapping, height: int, width: int):
    """Checks the noise parameter dict against the one `init_params` builds for ``cfg``."""
    if not isinstance(params, Mapping):
        raise ValueError(f"params must be a dict of noise parameters, got {type(params).__name__}")
    missing = sorted(set(expected) - set(params))
    unexpected = sorted(set(params) - set(expected))
    if missing or unexpected:
        raise ValueError(f"params do not match noiselist {cfg.noiselist!r} (compat={cfg.compat!r}): "
                         f"missing keys {missing}, unexpected keys {unexpected}; pass the noiselist the params were "
                         f"made for (synthesize(..., noiselist=...)) or build them with init_params")
    for key, ref in expected.items():
        shape = tuple(jnp.shape(params[key]))
        if key in ("fixed_pattern", "learned_fixed"):
            if len(shape) != 3 or shape[-1] != cfg.channels:
                raise ValueError(f"params[{key!r}] must be a map [Hf, Wf, {cfg.channels}], got shape {shape}")
            if shape[0] < height or shape[1] < width:
                raise ValueError(f"params[{key!r}] is {shape[0]}x{shape[1]}, smaller than the {height}x{width} "
                                 f"image it is cropped for; give a map at least as large as the image")
        elif shape != tuple(jnp.shape(ref)):
            raise ValueError(f"params[{key!r}] must have shape {tuple(jnp.shape(ref))}, got {shape}")
        if is_concrete(params[key]) and not bool(np.all(np.isfinite(np.asarray(params[key])))):
            raise ValueError(f"params[{key!r}] contains NaN or inf values")


def check_offset(fixed_offset, cfg: NoiseConfig, params: Mapping, height: int, width: int):
    """Checks a (row, column) crop offset into the fixed-pattern map; bounds when it is concrete
    (`jax.lax.dynamic_slice` would silently clamp an out-of-range offset)."""
    if fixed_offset is None:
        return None
    if tuple(jnp.shape(fixed_offset)) != (2,):
        raise ValueError(f"fixed_offset must be a (row, column) pair of shape (2,), got shape "
                         f"{tuple(jnp.shape(fixed_offset))}")
    if not (cfg.fixed or cfg.learned_fixed):
        raise ValueError(f"fixed_offset was given but noiselist {cfg.noiselist!r} has no fixed pattern "
                         f"(fixed1 or learnedfixed)")
    if is_concrete(fixed_offset):
        offset = np.asarray(fixed_offset)
        if not np.issubdtype(offset.dtype, np.integer):
            raise ValueError(f"fixed_offset must be integers, got dtype {offset.dtype}")
        fmap = params["fixed_pattern" if cfg.fixed else "learned_fixed"]
        limit = (fmap.shape[0] - height, fmap.shape[1] - width)
        if offset.min() < 0 or offset[0] > limit[0] or offset[1] > limit[1]:
            raise ValueError(f"fixed_offset {offset.tolist()} is outside the fixed-pattern map: a "
                             f"{height}x{width} crop of a {fmap.shape[0]}x{fmap.shape[1]} map needs "
                             f"0 <= row <= {limit[0]} and 0 <= column <= {limit[1]}")
    return fixed_offset
