"""Tiling of bursts into discriminator patches, and the discriminator's input transforms (SPEC §1, §4.4).

A burst is ``[T, H, W, C]`` (NHWC frames); patches are ``[P, p, p, C]`` with ``p = 64`` by default. The
tile order is the original's: outer loop over tile rows, then tile columns, inner loop over frames, so
patch ``k = (row * n_cols + col) * T + t``.

.. note::
   The original applies ``fftshift`` with no axis argument (SPEC §12.10), which also rolls the patch axis
   by ``P // 2`` and the channel axis by ``C // 2``. ``shift_all=True`` replicates that (use it under
   ``compat="starlight"``); the default shifts only the spatial axes.
"""

from __future__ import annotations

from collections.abc import Sequence

import jax
import jax.numpy as jnp

PATCH_SIZE = 64
DISCRIMINATOR_MODES = ("real", "fourier", "mixed", "complex", "mean")
# Modes whose discriminator input has twice the image channels.
_DOUBLE_CHANNEL_MODES = ("mixed", "complex", "mean")


def _check_mode(mode: str) -> None:
    if mode not in DISCRIMINATOR_MODES:
        raise ValueError(f"mode must be one of {list(DISCRIMINATOR_MODES)}, got {mode!r}.")


def _check_tiling(shape: Sequence[int], patch: int) -> None:
    if len(shape) < 4:
        raise ValueError(f"x must have shape [..., T, H, W, C], got shape {tuple(shape)}.")
    if patch < 1:
        raise ValueError(f"patch must be a positive int, got {patch!r}.")
    h, w = shape[-3], shape[-2]
    if h % patch or w % patch:
        raise ValueError(
            f"H and W must be divisible by patch={patch}, got H={h}, W={w} (shape {tuple(shape)}).")


def to_patches(x: jax.Array, patch: int = PATCH_SIZE) -> jax.Array:
    """Cuts bursts into non-overlapping square tiles, in the original order.

    Leading batch axes are folded into the patch axis outermost: burst ``b`` contributes the patches
    ``b * n_per_burst`` … ``(b + 1) * n_per_burst - 1``, each burst tiled in the original order. This is
    the order one gets by tiling the bursts one at a time and concatenating.

    Args:
      x: [..., T, H, W, C] with H and W divisible by ``patch``.
      patch: tile side.

    Returns:
      [B·(H/patch)·(W/patch)·T, patch, patch, C] with B the product of the leading axes (1 if none).

    Raises:
      ValueError: if ``x`` has fewer than 4 axes or H, W are not divisible by ``patch``.
    """
    _check_tiling(x.shape, patch)
    t, h, w, c = x.shape[-4:]
    x = x.reshape(-1, t, h // patch, patch, w // patch, patch, c)
    x = jnp.transpose(x, (0, 2, 4, 1, 3, 5, 6))  # [B, rows, cols, T, p, p, C]
    return x.reshape(-1, patch, patch, c)


def from_patches(patches: jax.Array, shape: Sequence[int]) -> jax.Array:
    """Inverse of :func:`to_patches`.

    Args:
      patches: [P, p, p, C] as returned by :func:`to_patches`.
      shape: the shape ``(..., T, H, W, C)`` of the tiled array.

    Returns:
      [..., T, H, W, C].

    Raises:
      ValueError: if ``shape`` cannot be tiled by these patches or their number does not match.
    """
    shape = tuple(int(s) for s in shape)
    if patches.ndim != 4 or patches.shape[1] != patches.shape[2]:
        raise ValueError(f"patches must have shape [P, p, p, C], got shape {patches.shape}.")
    patch = patches.shape[1]
    _check_tiling(shape, patch)
    t, h, w, c = shape[-4:]
    b = 1
    for s in shape[:-4]:
        b *= s
    expected = (b * (h // patch) * (w // patch) * t, patch, patch, c)
    if patches.shape != expected:
        raise ValueError(f"patches of shape {patches.shape} do not tile shape {shape}: expected {expected}.")
    x = patches.reshape(b, h // patch, w // patch, t, patch, patch, c)
    x = jnp.transpose(x, (0, 3, 1, 4, 2, 5, 6))  # [B, T, rows, p, cols, p, C]
    return x.reshape(shape)


def fourier(x: jax.Array, *, shift_all: bool = False) -> jax.Array:
    """Centred orthonormal 2-D spectrum of NHWC patches.

    Args:
      x: [N, H, W, C] real patches ([..., H, W, C] when ``shift_all`` is False).
      shift_all: fftshift every axis, as the original did (rolls N by N // 2 and C by C // 2 as well);
        otherwise only H and W.

    Returns:
      [N, H, W, C] complex: ``fftshift(FFT2(x) / sqrt(H·W))``; a constant patch gives a single peak of
      ``mean · sqrt(H·W)`` at ``(H // 2, W // 2)``.
    """
    if x.ndim < 3:
        raise ValueError(f"x must have shape [..., H, W, C], got shape {x.shape}.")
    f = jnp.fft.fft2(x, axes=(-3, -2), norm="ortho")
    return jnp.fft.fftshift(f, axes=None if shift_all else (-3, -2))


def discriminator_input(patches: jax.Array, mode: str, *, shift_all: bool = False) -> jax.Array:
    """Maps image patches to what the discriminator sees (SPEC §4.4).

    Args:
      patches: [N, p, p, C] real patches.
      mode: ``'real'`` (X), ``'fourier'`` (``|F(X)|``), ``'mixed'`` (``concat(X, |F(X)|)``), ``'complex'``
        (``concat(Re F(X), Im F(X))``) or ``'mean'`` (X unchanged: that mode's transform,
        :func:`mean_augment`, acts on the whole burst before tiling, so X already has its 2C channels).
      shift_all: see :func:`fourier`.

    Returns:
      [N, p, p, C'] with ``C' = discriminator_channels(mode, C)`` for C image channels (``C' = C`` for
      ``'real'`` and ``'mean'``, whose patches are returned as given).

    Raises:
      ValueError: for an unknown ``mode``.
    """
    _check_mode(mode)
    if mode in ("real", "mean"):
        return patches
    f = fourier(patches, shift_all=shift_all)
    if mode == "fourier":
        return jnp.abs(f)
    if mode == "mixed":
        return jnp.concatenate([patches, jnp.abs(f)], axis=-1)
    return jnp.concatenate([f.real, f.imag], axis=-1)


def mean_augment(stack: jax.Array) -> jax.Array:
    """The ``'mean'`` mode transform: prepends the burst mean to every frame, on the channel axis.

    Args:
      stack: [..., T, H, W, C] bursts, before :func:`to_patches`.

    Returns:
      [..., T, H, W, 2C]: ``concat(mean over T repeated T times, stack)``.
    """
    if stack.ndim < 4:
        raise ValueError(f"stack must have shape [..., T, H, W, C], got shape {stack.shape}.")
    mean = jnp.broadcast_to(jnp.mean(stack, axis=-4, keepdims=True), stack.shape)
    return jnp.concatenate([mean, stack], axis=-1)


def discriminator_channels(mode: str, channels: int) -> int:
    """Input channels of the discriminator for ``mode`` and ``channels`` image channels."""
    _check_mode(mode)
    return 2 * channels if mode in _DOUBLE_CHANNEL_MODES else channels
