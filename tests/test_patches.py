"""Tests for starlight_jax.patches."""

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from starlight_jax import patches as patches_lib
from starlight_jax.patches import (discriminator_channels, discriminator_input, fourier, from_patches,
                                   mean_augment, to_patches)


def _burst(shape, seed=0):
    return np.asarray(jax.random.uniform(jax.random.key(seed), shape))


def _loop_patches(x, p):
    """The original's loop: tile row, then tile column, then all frames of that tile."""
    t, h, w, _ = x.shape
    out = []
    for r, c in itertools.product(range(h // p), range(w // p)):
        for f in range(t):
            out.append(x[f, r * p:(r + 1) * p, c * p:(c + 1) * p])
    return np.stack(out)


def test_to_patches_matches_loop_order():
    x = np.arange(3 * 8 * 12 * 2, dtype=np.float32).reshape(3, 8, 12, 2)
    np.testing.assert_array_equal(to_patches(x, patch=4), _loop_patches(x, 4))


def test_to_patches_default_size():
    x = _burst((2, 128, 192, 4))
    p = to_patches(x)
    assert p.shape == (2 * 2 * 3, 64, 64, 4)
    np.testing.assert_array_equal(p, _loop_patches(x, 64))


def test_leading_axes_fold_burst_outermost():
    x = _burst((2, 3, 3, 8, 4, 1))  # two axes of bursts, each (T=3, H=8, W=4, C=1)
    p = to_patches(x, patch=4)
    per_burst = [_loop_patches(b, 4) for b in x.reshape(6, 3, 8, 4, 1)]
    np.testing.assert_array_equal(p, np.concatenate(per_burst))


@pytest.mark.parametrize("shape", [(3, 8, 12, 2), (2, 1, 4, 8, 4, 3)])
def test_round_trip(shape):
    x = _burst(shape)
    p = to_patches(x, patch=4)
    np.testing.assert_array_equal(from_patches(p, x.shape), x)
    np.testing.assert_array_equal(to_patches(from_patches(p, x.shape), patch=4), p)


@pytest.mark.parametrize("shape,match", [
    ((2, 65, 64, 4), "H=65"),
    ((2, 64, 96, 4), "W=96"),
    ((64, 64, 4), r"\[\.\.\., T, H, W, C\]"),
])
def test_to_patches_rejects_bad_shapes(shape, match):
    with pytest.raises(ValueError, match=match):
        to_patches(jnp.zeros(shape))


def test_from_patches_rejects_mismatch():
    p = to_patches(jnp.zeros((2, 8, 8, 1)), patch=4)
    with pytest.raises(ValueError, match="do not tile"):
        from_patches(p, (3, 8, 8, 1))
    with pytest.raises(ValueError, match="divisible by patch=4"):
        from_patches(p, (2, 8, 6, 1))


def test_fourier_of_constant_patch_is_centred_dc():
    means = np.array([0.1, 0.5, 0.9], np.float32)
    x = np.broadcast_to(means, (2, 64, 64, 3))
    f = np.asarray(fourier(x))
    expected = np.zeros(f.shape, np.complex64)
    expected[:, 32, 32, :] = means * 64  # orthonormal DC = sum / sqrt(64 * 64) = mean * 64
    np.testing.assert_allclose(f, expected, atol=1e-4)


def test_fourier_matches_numpy_spatial_shift():
    x = _burst((3, 8, 6, 2))
    ref = np.fft.fftshift(np.fft.fft2(x, axes=(1, 2), norm="ortho"), axes=(1, 2))
    np.testing.assert_allclose(fourier(x), ref, rtol=1e-4, atol=1e-5)


def test_fourier_shift_all_rolls_patch_and_channel_axes():
    x = _burst((4, 8, 8, 4), seed=1)
    spectrum = np.fft.fft2(x, axes=(1, 2), norm="ortho")
    shifted_all = np.asarray(fourier(x, shift_all=True))
    np.testing.assert_allclose(shifted_all, np.fft.fftshift(spectrum), rtol=1e-4, atol=1e-5)  # axes=None
    spatial = np.asarray(fourier(x))
    np.testing.assert_allclose(shifted_all, np.roll(spatial, (2, 2), axis=(0, 3)), rtol=1e-4, atol=1e-5)
    assert not np.allclose(shifted_all, spatial)


@pytest.mark.parametrize("mode", patches_lib.DISCRIMINATOR_MODES)
def test_discriminator_input_channels(mode):
    burst = _burst((5, 16, 8, 4))
    if mode == "mean":  # the whole burst is augmented before tiling
        burst = mean_augment(burst)
    out = discriminator_input(to_patches(burst, patch=8), mode)
    assert out.shape == (10, 8, 8, discriminator_channels(mode, 4))
    assert out.dtype == jnp.float32


def test_discriminator_input_values():
    x = _burst((4, 8, 8, 2), seed=2)
    f = np.asarray(fourier(x))
    np.testing.assert_array_equal(discriminator_input(x, "real"), x)
    np.testing.assert_allclose(discriminator_input(x, "fourier"), np.abs(f), rtol=1e-6)
    mixed = np.asarray(discriminator_input(x, "mixed"))
    np.testing.assert_array_equal(mixed[..., :2], x)
    np.testing.assert_allclose(mixed[..., 2:], np.abs(f), rtol=1e-6)
    complex_ = np.asarray(discriminator_input(x, "complex"))
    np.testing.assert_allclose(complex_, np.concatenate([f.real, f.imag], -1), rtol=1e-6, atol=1e-7)


def test_mixed_with_shift_all_pairs_unaligned_patches():
    # The original's bug: the Fourier half of patch k comes from patch (k + N/2) mod N.
    x = _burst((4, 8, 8, 2), seed=3)
    mixed = np.asarray(discriminator_input(x, "mixed", shift_all=True))
    f = np.abs(np.asarray(fourier(x)))
    np.testing.assert_array_equal(mixed[..., :2], x)
    np.testing.assert_allclose(mixed[..., 2:], np.roll(f, (2, 1), axis=(0, 3)), rtol=1e-6)


def test_discriminator_input_jit_matches_eager():
    x = _burst((4, 8, 8, 2), seed=4)
    for mode in patches_lib.DISCRIMINATOR_MODES:
        fn = jax.jit(lambda x, mode=mode: discriminator_input(x, mode, shift_all=True))
        np.testing.assert_allclose(fn(x), discriminator_input(x, mode, shift_all=True), rtol=1e-5, atol=1e-6)


def test_unknown_mode_raises():
    with pytest.raises(ValueError, match=r"\['real', 'fourier', 'mixed', 'complex', 'mean'\]"):
        discriminator_input(jnp.zeros((1, 8, 8, 4)), "wavelet")
    with pytest.raises(ValueError, match="wavelet"):
        discriminator_channels("wavelet", 4)


def test_discriminator_channels():
    assert [discriminator_channels(m, 4) for m in patches_lib.DISCRIMINATOR_MODES] == [4, 4, 8, 8, 8]


def test_mean_augment():
    x = _burst((2, 3, 8, 8, 4), seed=5)  # two bursts of T=3
    out = np.asarray(mean_augment(x))
    assert out.shape == (2, 3, 8, 8, 8)
    np.testing.assert_array_equal(out[..., 4:], x)
    for b, t in itertools.product(range(2), range(3)):
        np.testing.assert_allclose(out[b, t, ..., :4], x[b].mean(axis=0), rtol=1e-6)
    with pytest.raises(ValueError, match="T, H, W, C"):
        mean_augment(jnp.zeros((8, 8, 4)))
