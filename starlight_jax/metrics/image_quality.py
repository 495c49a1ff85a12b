"""Image similarity, pure JAX: PSNR and SSIM per image.

Both take ``[..., H, W, C]`` float images, reduce over H, W and C, and can be used under
``jax.jit``/``jax.vmap``: they check static shapes only (`starlight_jax.validation.check_array`).
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from starlight_jax.validation import check_array, check_same_shape


def gaussian_window(size: int, sigma: float) -> np.ndarray:
    """Normalised sampled 1-D Gaussian of ``size`` taps (centred) and std ``sigma`` pixels."""
    x = np.arange(size) - (size - 1) / 2
    k = np.exp(-0.5 * (x / sigma) ** 2)
    return k / k.sum()


def _check_pair(a, b, name_a: str, name_b: str, min_hw: int = 1) -> tuple[jax.Array, jax.Array]:
    """Static checks (work on tracers): floating dtype, rank >= 3, equal shapes, H, W >= ``min_hw``."""
    a = check_array(name_a, jnp.asarray(a), min_rank=3, min_hw=min_hw, values=False)
    b = check_array(name_b, jnp.asarray(b), min_rank=3, values=False)
    check_same_shape(name_b, b.shape, name_a, a.shape)
    return a, b


def psnr(a, b, max_val: float = 1.0) -> jax.Array:
    """Peak signal-to-noise ratio per image.

    .. math::

          \\mathrm{PSNR} = 10 \\log_{10} \\frac{\\text{max\\_val}^2}
              {\\operatorname{mean}_{h,w,c} (a - b)^2}.

    Identical images give ``inf``. The original's logged PSNR (SPEC §6.2) is the
    mean of this over the batch.

    Args:
        a: [..., H, W, C] float images.
        b: [..., H, W, C] float images.
        max_val: the dynamic range (peak value).

    Returns:
        [...] PSNR in dB, one value per image.

    Raises:
        ValueError: on a non-floating dtype, rank < 3 or shape mismatch.
    """
    a, b = _check_pair(a, b, "a", "b")
    mse = jnp.mean(jnp.square(a - b), axis=(-3, -2, -1))
    return 10.0 * jnp.log10(max_val ** 2 / mse)


def _filter_valid(x: jax.Array, k: jax.Array) -> jax.Array:
    """Separable 'valid' filtering of [..., H, W, C] over H and W."""
    n = k.shape[0]
    h, w = x.shape[-3], x.shape[-2]
    rows = sum(k[i] * x[..., i:i + h - n + 1, :, :] for i in range(n))
    return sum(k[i] * rows[..., :, i:i + w - n + 1, :] for i in range(n))


def ssim(a, b, max_val: float = 1.0, *, filter_size: int = 11,
                  filter_sigma: float = 1.5, k1: float = 0.01, k2: float = 0.03) -> jax.Array:
    """Structural similarity (Wang et al., 2004) per image, pure JAX.

    Local statistics use a ``filter_size`` x ``filter_size`` Gaussian window
    (sigma ``filter_sigma``) without padding ('valid' positions only):

    .. math::

          \\mathrm{SSIM} = \\operatorname{mean}_{h,w,c}
              \\frac{(2\\mu_a\\mu_b + C_1)(2\\sigma_{ab} + C_2)}
                        {(\\mu_a^2 + \\mu_b^2 + C_1)(\\sigma_a^2 + \\sigma_b^2 + C_2)},
          \\quad C_i = (k_i \\cdot \\text{max\\_val})^2,

    i.e. the mean SSIM map per channel, averaged over channels. Jittable.

    Args:
        a: [..., H, W, C] float images, H, W >= ``filter_size``.
        b: [..., H, W, C] float images.
        max_val: the dynamic range.
        filter_size: Gaussian window side.
        filter_sigma: Gaussian window sigma in pixels.
        k1: luminance constant.
        k2: contrast constant.

    Returns:
        [...] SSIM, one value per image (1 for identical images).

    Raises:
        ValueError: on a non-floating dtype, rank < 3, shape mismatch or images
            smaller than the window.
    """
    a, b = _check_pair(a, b, "a", "b", min_hw=filter_size)
    k = jnp.asarray(gaussian_window(filter_size, filter_sigma), a.dtype)
    c1, c2 = (k1 * max_val) ** 2, (k2 * max_val) ** 2
    mu_a, mu_b = _filter_valid(a, k), _filter_valid(b, k)
    var_a = _filter_valid(a * a, k) - mu_a ** 2
    var_b = _filter_valid(b * b, k) - mu_b ** 2
    cov = _filter_valid(a * b, k) - mu_a * mu_b
    num = (2 * mu_a * mu_b + c1) * (2 * cov + c2)
    den = (mu_a ** 2 + mu_b ** 2 + c1) * (var_a + var_b + c2)
    return jnp.mean(num / den, axis=(-3, -2, -1))
