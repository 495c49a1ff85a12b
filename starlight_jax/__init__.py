"""starlight-jax: the physics-informed GAN camera-noise model of Monakhova et al. (CVPR 2022) in JAX.

Public API (everything else is an implementation detail):

* `synthesize(key, clean, params=None, *, noiselist=..., compat=...)`: add learned camera noise.
* `parse_noiselist`, `NoiseConfig`: the `--noiselist` string as a frozen config.
* `init_params`, `sample_components`: the physical noise components, separately.
* `GeneratorConfig`, `NoiseModel`, `init_generator`, `generate`: the full generator (noise + U-Net).
"""
from starlight_jax.generator import (GeneratorConfig, NoiseModel, generate, init_generator,
                                     synthesize)
from starlight_jax.noise import add_noise, sample_components, scales
from starlight_jax.noiselist import DEFAULT_NOISELIST, NoiseConfig, parse_noiselist
from starlight_jax.torch_import import load_torch_checkpoint, load_torch_discriminator


def init_params(noiselist=DEFAULT_NOISELIST, compat: str = "physics", channels: int = 4, **kwargs):
    """Initial noise parameters of ``noiselist`` (a dict of float32 arrays; see `starlight_jax.noise`).

    Keyword arguments ``fixed_pattern`` / ``learned_fixed`` give ``[Hf, Wf, C]`` maps; ``fixed_shape`` and
    ``shot_sampler`` go to `parse_noiselist`.
    """
    from starlight_jax import noise

    maps = {k: kwargs.pop(k) for k in ("fixed_pattern", "learned_fixed") if k in kwargs}
    cfg = parse_noiselist(noiselist, compat=compat, channels=channels, **kwargs)
    return noise.init_params(cfg, **maps)


__all__ = ["synthesize", "parse_noiselist", "NoiseConfig", "init_params", "sample_components", "add_noise",
           "scales", "GeneratorConfig", "NoiseModel", "init_generator", "generate", "DEFAULT_NOISELIST",
           "load_torch_checkpoint", "load_torch_discriminator"]
__version__ = "0.1.0"
