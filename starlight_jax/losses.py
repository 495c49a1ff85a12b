"""The WGAN-GP objective's pieces: what the critic sees, the critic, and the terms of both losses.

* `prepare`: bursts → the critic's 64×64 input patches (real, Fourier, mixed, ... domain; with a
  conditional critic, the clean patches beside them, `critic_input`);
* `critic` / `advance_spectral_norm`: the spectral-norm critic as a function of its input, and one power
  iteration of its norms;
* `gradient_penalty`: WGAN-GP's penalty at interpolates of real and generated patches;
* `level_term` / `structure_term`: the generator's extra terms, holding its residual power and its lagged
  correlations to the real batch's.

The ``cfg`` of these functions is a `starlight_jax.training.TrainConfig`, which is not imported here: the
steps of `training` are built from these pieces. Means over the batch are over the *global* batch
(``axis_name``: the pmap axis, if any), so the losses do not depend on how the batch is split.
"""
from __future__ import annotations

from typing import Optional

import jax
import jax.numpy as jnp

from starlight_jax import patches as patches_lib
from starlight_jax.isp_fit import lagged_correlations
from starlight_jax.models.discriminator import apply_discriminator


def prepare(cfg, stacks, clean=None):
    """Bursts ``[B, T, H, W, C]`` → discriminator input patches ``[B·P, 64, 64, C']`` (SPEC §1, §4.4).

    With a conditional critic (``cfg.critic_condition != 'none'``) ``clean`` is required and the result is
    ``(x, condition)``: the transformed noisy (or residual) patches and the clean patches in real space,
    which the critic sees concatenated on the channel axis; otherwise ``(x, None)``.
    """
    if cfg.critic_condition == "residual":
        stacks = (stacks - clean) * cfg.critic_scale

    def one(stack):
        if cfg.discriminator_loss == "mean":
            stack = patches_lib.mean_augment(stack)
        mode = "real" if cfg.discriminator_loss == "mean" else cfg.discriminator_loss
        return patches_lib.discriminator_input(patches_lib.to_patches(stack), mode, shift_all=cfg.shift_all)

    flat = lambda out: out.reshape(-1, *out.shape[2:])  # noqa: E731
    x = flat(jax.vmap(one)(stacks))
    if cfg.critic_condition == "none":
        return x, None
    return x, flat(jax.vmap(patches_lib.to_patches)(jnp.broadcast_to(clean, stacks.shape)))


def critic_input(condition, x):
    """What the critic sees: ``x`` with the conditioning patches (if any) prepended on the channel axis."""
    return x if condition is None else jnp.concatenate([condition, x], axis=-1)


def critic(cfg, d_params, sn_state, condition):
    """``x ↦ D(x)`` (scores per patch) on `critic_input`; the gradient penalty differentiates this
    with respect to ``x`` only."""
    def apply(x):
        return apply_discriminator(d_params, sn_state, critic_input(condition, x), update_stats=False,
                                   sigmoid=cfg.sigmoid, dtype=jnp.dtype(cfg.precision))[0]
    return apply


def advance_spectral_norm(cfg, d_params, sn_state, example):
    """``sn_state`` after one power iteration on the critic's weights (``example``: any critic input; the
    iteration does not depend on it)."""
    return apply_discriminator(d_params, sn_state, example, update_stats=True, sigmoid=cfg.sigmoid)[1]


def global_mean(x, axis_name: Optional[str] = None):
    """The mean of ``x`` over the global batch (under pmap, averaged over ``axis_name``)."""
    m = jnp.mean(x)
    return m if axis_name is None else jax.lax.pmean(m, axis_name)


def gradient_penalty(d_apply, real, fake, eps):
    r"""WGAN-GP: :math:`\mathrm{mean}_k (\lVert\nabla_{\hat x} D(\hat x)_k\rVert_2 - 1)^2`,
    :math:`\hat x = \epsilon r + (1-\epsilon) f` with one ε ~ U[0, 1) per patch. Returns per-patch terms."""
    eps = eps.reshape(-1, *([1] * (real.ndim - 1)))
    xhat = eps * real + (1 - eps) * fake
    grads = jax.grad(lambda x: jnp.sum(d_apply(x)))(xhat)
    norms = jnp.sqrt(jnp.sum(grads.reshape(grads.shape[0], -1) ** 2, axis=-1))
    return (norms - 1.0) ** 2


def level_term(fake_residual, real_residual, axis_name: Optional[str] = None, *, clean=None, bins: int = 1,
               min_count: int = 64):
    r"""Mean over channels of :math:`(\log \overline{r_f^2} - \log \overline{r_r^2})^2`, the squared log ratio
    of the generated and real residual power per channel over the (global) batch.

    The adversarial loss alone lets the noise level drift: in our runs it ended 3 % (in std) below the data
    on the embedded data, and up to 4× below on Nam's sRGB pairs in 3-minute GPU runs, where the data init
    had put it within 1 %. The pairs are at hand, so the level is held to them; the shape of the noise is
    left to the critic.

    With ``bins`` > 1 the powers are taken per channel and per bin of the clean intensity (``bins`` equal
    bins on [0, 1]; ``clean`` broadcasts to the residuals), and the squared log ratios are averaged
    weighted by each bin's pixel count, over the bins with at least ``min_count`` pixels in the global
    batch: the term then holds the noise level function, not only the overall power."""
    if bins == 1:
        axes = tuple(range(fake_residual.ndim - 1))
        fake_power = _mean_over(jnp.mean(fake_residual ** 2, axis=axes), axis_name)
        real_power = _mean_over(jnp.mean(jax.lax.stop_gradient(real_residual) ** 2, axis=axes), axis_name)
        return jnp.mean((jnp.log(fake_power + 1e-12) - jnp.log(real_power + 1e-12)) ** 2)
    if clean is None:
        raise ValueError("level_term with bins > 1 needs the clean images to bin by")
    clean = jnp.broadcast_to(clean, real_residual.shape)
    onehot = jax.nn.one_hot(jnp.clip(jnp.floor(clean * bins), 0, bins - 1).astype(jnp.int32), bins,
                            dtype=fake_residual.dtype)  # [..., C, bins]
    axes = tuple(range(onehot.ndim - 2))

    def total(x):  # over the pixels of every device
        x = jnp.sum(x, axis=axes)
        return x if axis_name is None else jax.lax.psum(x, axis_name)

    count = total(onehot)
    fake_power = total(onehot * (fake_residual ** 2)[..., None]) / jnp.maximum(count, 1.0)
    real_power = total(onehot * (jax.lax.stop_gradient(real_residual) ** 2)[..., None]) / jnp.maximum(count, 1.0)
    weight = jnp.where(count >= min_count, count, 0.0)
    sq = (jnp.log(fake_power + 1e-12) - jnp.log(real_power + 1e-12)) ** 2
    return jnp.sum(weight * sq) / jnp.maximum(jnp.sum(weight), 1.0)


def structure_term(fake_residual, real_residual, axis_name: Optional[str] = None):
    r""":math:`\sum_{\text{lags}} \sum_{ij} (\rho^f_{ij} - \rho^r_{ij})^2`: the squared errors of the generated
    residual's lagged cross-channel correlations (`isp_fit.lagged_correlations`: lag 0 across channels,
    and the near lags in space) against the real batch's.

    A 64-px critic of width 16 moved an isp model's cross-channel and spatial correlation away from the
    method-of-moments init in our runs (the per-pixel fit improved, the structure got worse); like the level
    term, this holds the second-order structure to the pairs at hand and leaves the rest to the critic."""
    def flat(r):
        return r.reshape(-1, *r.shape[-3:])

    fake = flat(fake_residual - jnp.mean(fake_residual, axis=(-3, -2), keepdims=True))
    real = jax.lax.stop_gradient(flat(real_residual - jnp.mean(real_residual, axis=(-3, -2), keepdims=True)))
    return jnp.sum((lagged_correlations(fake, axis_name) - lagged_correlations(real, axis_name)) ** 2)


def _mean_over(x, axis_name):
    return x if axis_name is None else jax.lax.pmean(x, axis_name)
