"""Mixed precision (``TrainConfig.precision="bfloat16"``): the U-Net and the critic compute in bfloat16, their
parameters, the physical noise and the losses stay float32."""
import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from starlight_jax import training
from starlight_jax.models.discriminator import apply_discriminator, init_discriminator
from starlight_jax.models.unet import TINY_WIDTHS, UNet, UNetConfig

BF16 = jnp.bfloat16
# bfloat16 keeps 8 significant bits: a relative rounding of 2^-9 per value, which a few layers compound.
REL_TOL = 2 ** -9 * 20
# Values, not speed: each test compiles a U-Net or a critic, which would otherwise dominate (run op by op,
# the bfloat16 U-Net took minutes on CPU).
pytestmark = pytest.mark.usefixtures("fast_compiles")


def _rel_err(a, b):
    return float(jnp.linalg.norm(a.astype(jnp.float32) - b) / jnp.linalg.norm(b))


def test_critic_computes_in_bfloat16_and_scores_in_float32():
    params, sn = init_discriminator(jax.random.key(0), 4, width=4)
    x = jax.random.normal(jax.random.key(1), (3, 64, 64, 4))
    ref = jax.jit(lambda p, x: apply_discriminator(p, sn, x, update_stats=False)[0])(params, x)
    fn = jax.jit(lambda p, x: apply_discriminator(p, sn, x, update_stats=False, dtype=BF16)[0])
    out = fn(params, x)
    assert out.dtype == jnp.float32 and out.shape == (3,)
    assert 0 < _rel_err(out, ref) < REL_TOL  # not bit-equal: the convolutions did run in bfloat16
    hlo = fn.lower(params, x).as_text()
    # The layers' products: 5 convolutions (native, or matmuls over the windows on the CPU) and the dense
    # layer, the ops on the batch of 3; the spectral norms' power iterations stay float32.
    layers = [line for line in hlo.splitlines()
              if ("stablehlo.convolution" in line or "stablehlo.dot_general" in line) and "tensor<3x" in line]
    assert len(layers) == 6 and all("bf16" in line for line in layers), layers
    grads = jax.grad(lambda p: jnp.sum(fn(p, x)))(params)
    assert all(g.dtype == jnp.float32 for g in jax.tree_util.tree_leaves(grads))


def test_unet_bfloat16_keeps_float32_output_blocks():
    model = UNet(out_channels=4, config=UNetConfig(widths=TINY_WIDTHS, residual=True), dtype=BF16)
    x = 0.2 + 0.02 * jax.random.normal(jax.random.key(0), (2, 32, 32, 4))
    variables = jax.jit(lambda key, x: model.init(key, x, train=False))(jax.random.key(1), x)
    assert all(v.dtype == jnp.float32 for v in jax.tree_util.tree_leaves(variables))
    out = jax.jit(lambda v, x: model.apply(v, x, train=False))(variables, x)
    ref = jax.jit(lambda v, x: UNet(out_channels=4, config=model.config).apply(v, x, train=False))(variables, x)
    assert out.dtype == jnp.float32 and 0 < _rel_err(out, ref) < REL_TOL
    # The output block runs in float32: the output is not on bfloat16's grid (~1e-3 steps at 0.2).
    assert not bool(jnp.all(out == out.astype(BF16).astype(jnp.float32)))


def test_bfloat16_critic_step_matches_float32_to_its_precision():
    # noUnet: the U-Net's precision is tested above; a critic step with its penalty is what costs here.
    base = dict(crop_size=64, frames=1, critic_width=2, decay_steps=None, init_from_data=False, critic_warmup=0)
    clean = 0.2 * jax.random.uniform(jax.random.key(1), (1, 1, 64, 64, 4))
    batch = dict(clean=clean, noisy=jnp.clip(clean + 0.02 * jax.random.normal(jax.random.key(2), clean.shape), 0, 1))
    out = {}
    for precision in ("float32", "bfloat16"):
        cfg = training.TrainConfig(**base, precision=precision)
        assert cfg.generator.precision == precision
        state = training.create_train_state(jax.random.key(0), cfg)
        state, metrics = jax.jit(functools.partial(training.d_step, cfg))(state, batch)
        assert all(v.dtype == jnp.float32 for v in jax.tree_util.tree_leaves(state.d_params))
        out[precision] = metrics
    for name in ("d_real", "d_fake", "gp"):
        np.testing.assert_allclose(out["bfloat16"][name], out["float32"][name], rtol=0.05, err_msg=name)
    assert float(out["bfloat16"]["gp"]) != float(out["float32"]["gp"])  # the bfloat16 critic did run


def test_unknown_precision_is_refused():
    with pytest.raises(ValueError, match=r"precision must be one of \('float32', 'bfloat16'\), got 'fp8'"):
        training.TrainConfig(precision="fp8")
