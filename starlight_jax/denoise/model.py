"""A compact DnCNN-style denoiser for any channel count.

The network (Zhang et al., "Beyond a Gaussian denoiser", TIP 2017, without batch norm) is ``depth``
3x3 convolutions with ``width`` features and ReLU between them, on ``[..., H, W, C]`` images in [0, 1]:

.. math::

   \\hat x = y - f_\\theta(y) \\quad (\\text{``residual=True``, default: the net predicts the noise}),
   \\qquad \\hat x = f_\\theta(y) \\quad (\\text{``residual=False``: it predicts the clean image}).

Convolutions are zero-padded ('SAME'), so any H, W works and the output has the input's shape
(`DenoiserConfig.multiple` is 1: nothing needs padding).

.. note::
   DnCNN has batch norm after its middle convolutions; it is left out here so the params are one plain
   pytree with no ``batch_stats`` to thread, and training/eval behave the same. With Adam and the
   residual output, these shallow nets train well without it.
"""
from __future__ import annotations

import dataclasses

import flax.linen as nn
import jax
import jax.numpy as jnp

from starlight_jax.validation import check_array

ARCHITECTURES = ("dncnn",)


@dataclasses.dataclass(frozen=True)
class DenoiserConfig:
    """Everything static about a denoiser.

    Attributes:
      channels: C of the images it denoises (1 grey, 3 sRGB, 4 packed raw, ...).
      depth: number of 3x3 convolutions (>= 2); DnCNN-S uses 17, 8 is enough for small benchmarks.
      width: features of the hidden convolutions.
      residual: True: predict the noise and subtract it from the input; False: predict the clean image.
      architecture: ``"dncnn"`` (the only one so far).
    """

    channels: int = 4
    depth: int = 8
    width: int = 32
    residual: bool = True
    architecture: str = "dncnn"

    def __post_init__(self):
        if self.architecture not in ARCHITECTURES:
            raise ValueError(f"architecture must be one of {ARCHITECTURES}, got {self.architecture!r}")
        for name, low in (("channels", 1), ("depth", 2), ("width", 1)):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < low:
                raise ValueError(f"DenoiserConfig.{name} must be an int >= {low}, got {v!r}")

    @property
    def multiple(self) -> int:
        """H and W must be multiples of this (1: any size)."""
        return 1


class DnCNN(nn.Module):
    """The network of the module docstring; ``__call__(noisy [..., H, W, C]) -> [..., H, W, C]``."""

    config: DenoiserConfig

    @nn.compact
    def __call__(self, noisy):
        cfg = self.config
        lead, (h, w, c) = noisy.shape[:-3], noisy.shape[-3:]
        x = noisy.reshape((-1, h, w, c))
        feat = x
        for i in range(cfg.depth - 1):
            feat = nn.relu(nn.Conv(cfg.width, (3, 3), padding="SAME", name=f"conv{i}")(feat))
        out = nn.Conv(c, (3, 3), padding="SAME", name=f"conv{cfg.depth - 1}")(feat)
        out = x - out if cfg.residual else out
        return out.reshape((*lead, h, w, c))


def check_input(noisy, config: DenoiserConfig) -> None:
    """Static checks of a denoiser input ``[..., H, W, C]`` (works on tracers)."""
    check_array("noisy", noisy, min_rank=3, unit=True, values=False)
    c = noisy.shape[-1]
    if c != config.channels:
        raise ValueError(f"noisy has {c} channel(s) but the denoiser was built for {config.channels}; "
                         f"use a denoiser trained on {c}-channel images")


def init_denoiser(key, config: DenoiserConfig):
    """Initial params (a plain pytree) of the denoiser described by ``config``."""
    x = jnp.zeros((1, 16, 16, config.channels), jnp.float32)
    return DnCNN(config).init(key, x)["params"]


def apply_denoiser(params, noisy, config: DenoiserConfig):
    """The raw network output (not clipped) on ``noisy`` ``[..., H, W, C]``; same shape."""
    check_input(noisy, config)
    return DnCNN(config).apply({"params": params}, noisy)


def denoise(params, noisy, config: DenoiserConfig):
    """Denoised images ``clip(apply_denoiser(...), 0, 1)``, ``[..., H, W, C]``. Jittable."""
    return jnp.clip(apply_denoiser(params, noisy, config), 0.0, 1.0)


def count_params(params) -> int:
    """Number of scalars in ``params``."""
    return int(sum(x.size for x in jax.tree_util.tree_leaves(params)))
