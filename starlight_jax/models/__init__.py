"""Flax networks: the generator's U-Net and the spectral-norm patch discriminator."""

from starlight_jax.models.discriminator import (
    LAYERS as DISCRIMINATOR_LAYERS,
    SN_COLLECTION,
    Discriminator,
    apply_discriminator,
    init_discriminator,
    normalized_kernels,
    power_iteration,
)
from starlight_jax.models.unet import (
    DEFAULT_UNET_OPTS,
    TINY_WIDTHS,
    ConvBlock,
    UNet,
    UNetConfig,
    count_params,
    parse_unet_opts,
)

__all__ = [
    "DEFAULT_UNET_OPTS",
    "DISCRIMINATOR_LAYERS",
    "SN_COLLECTION",
    "TINY_WIDTHS",
    "ConvBlock",
    "Discriminator",
    "UNet",
    "UNetConfig",
    "apply_discriminator",
    "count_params",
    "init_discriminator",
    "normalized_kernels",
    "parse_unet_opts",
    "power_iteration",
]
