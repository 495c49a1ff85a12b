"""The full generator: noise + U-Net mode + clip, as one pure function."""
import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import starlight_jax as sj
from starlight_jax.models import TINY_WIDTHS
from starlight_jax.noiselist import parse_noiselist

pytestmark = pytest.mark.usefixtures("fast_compiles")


def config(network, patches="patches_after", compat="physics", opts="residualTrue_conv_tconv_selu"):
    return sj.GeneratorConfig(noise=parse_noiselist("shot_read_uniform_row1", compat=compat), network=network,
                              unet_opts=opts, unet_widths=TINY_WIDTHS, patches=patches)


def clean(shape=(2, 64, 128, 4), seed=1):
    return jax.random.uniform(jax.random.key(seed), shape, minval=0.1, maxval=0.9)


def jit_generate(cfg, train=False):
    """`generate` compiled for ``cfg``: op by op, a U-Net generator compiles each of its ops apart."""
    return jax.jit(lambda params, key, x: sj.generate(params, key, x, cfg, train=train))


# Every network with both patch modes, and each (network, compat) and (patch mode, compat) pair: the full
# 4 x 2 x 2 product compiled 16 U-Net generators (a minute of the suite) for no further pair.
SHAPE_CASES = [(net, patches, ("physics", "starlight")[(i + j) % 2])
               for i, net in enumerate(sj.generator.NETWORKS) for j, patches in enumerate(sj.generator.PATCH_MODES)]


@pytest.mark.parametrize("network,patches,compat", SHAPE_CASES)
def test_shapes_and_range(network, patches, compat):
    cfg = config(network, patches, compat)
    model = sj.init_generator(jax.random.key(0), cfg)
    x = clean((1, 2, 64, 64, 4))
    out = jax.jit(lambda p, k, x: sj.generate(p, k, x, cfg, train=True))(model.params, jax.random.key(2), x)
    assert out.shape == x.shape and out.dtype == x.dtype
    assert float(out.min()) >= 0 and float(out.max()) <= 1
    assert float(jnp.abs(out - x).mean()) > 1e-3  # something happened


@pytest.mark.parametrize("network", ["Unet_cat", "Unet_first"])
def test_jit_equals_eager(network):
    cfg = config(network, compat="starlight")
    model = sj.init_generator(jax.random.key(0), cfg)
    x = clean()
    eager = sj.generate(model.params, jax.random.key(2), x, cfg, train=True)
    jitted = jax.jit(lambda p, k, x: sj.generate(p, k, x, cfg, train=True))(model.params, jax.random.key(2), x)
    np.testing.assert_allclose(np.asarray(jitted), np.asarray(eager), atol=2e-5)


def test_unet_cat_sees_the_clean_channels_first():
    # Zero the weights that read the second half of the U-Net input in both first convs. Each block adds its
    # input's first C channels (block residual), so the output then depends on the first half only: if that
    # half is the clean image, the noise key stops mattering.
    cfg = config("Unet_cat")
    model = sj.init_generator(jax.random.key(0), cfg)
    params = jax.tree_util.tree_map(lambda v: v, model.params)
    for block in ("conv1", "convres"):
        kernel = params["net"][block]["conv1"]["kernel"]
        params["net"][block]["conv1"]["kernel"] = kernel.at[:, :, 4:, :].set(0.0)
    x = clean()
    a = sj.generate(params, jax.random.key(1), x, cfg)
    b = sj.generate(params, jax.random.key(2), x, cfg)
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), atol=1e-6)
    # The same surgery on the first half leaves the noisy half in play: outputs differ across keys.
    params["net"]["conv1"]["conv1"]["kernel"] = model.params["net"]["conv1"]["conv1"]["kernel"].at[:, :, :4, :].set(0.0)
    params["net"]["convres"]["conv1"]["kernel"] = model.params["net"]["convres"]["conv1"]["kernel"].at[:, :, :4, :].set(0.0)
    c = sj.generate(params, jax.random.key(1), x, cfg)
    d = sj.generate(params, jax.random.key(2), x, cfg)
    assert float(jnp.abs(c - d).mean()) > 1e-4


def test_dropout_only_in_train_mode():
    cfg = config("Unet", compat="starlight", opts="residualFalse_conv_tconv_selu")  # Dropout2d 0.05
    model = sj.init_generator(jax.random.key(0), cfg)
    x = clean()
    # Same noise key, so only dropout can differ: generate() splits (noise, dropout) from one key, so
    # compare two calls of train=False (deterministic) and train=True against train=False.
    off1 = sj.generate(model.params, jax.random.key(5), x, cfg, train=False)
    off2 = sj.generate(model.params, jax.random.key(5), x, cfg, train=False)
    on = sj.generate(model.params, jax.random.key(5), x, cfg, train=True)
    np.testing.assert_array_equal(np.asarray(off1), np.asarray(off2))
    assert float(jnp.abs(on - off1).max()) > 1e-4


def test_patches_before_tiles_the_unet_input():
    """With patches_before, each 64x64 tile is processed alone: equal to running the U-Net per tile."""
    cfg_before = config("Unet", "patches_before", opts="residualFalse_conv_tconv_selu")
    model = sj.init_generator(jax.random.key(0), cfg_before)
    noise_only = sj.GeneratorConfig(noise=cfg_before.noise)
    x = clean((2, 64, 128, 4))
    out = jit_generate(cfg_before)(model.params, jax.random.key(3), x)
    noisy = jit_generate(noise_only)({"noise": model.params["noise"]}, jax.random.key(3), x)
    # noise_only clips; the U-Net input is unclipped, so recompute it without the clip:
    noise_key = jax.random.split(jax.random.key(3))[0]
    y = jax.jit(lambda k, p, x: sj.add_noise(k, p, x, cfg_before.noise))(noise_key, model.params["noise"], x)
    unet = sj.generator._unet(cfg_before)
    right_tile = jax.jit(lambda p, y: unet.apply({"params": p}, y, train=False))(model.params["net"], y[:, :, 64:])
    np.testing.assert_allclose(np.asarray(out[:, :, 64:]), np.clip(np.asarray(right_tile), 0, 1), atol=1e-5)
    assert noisy.shape == out.shape


def test_bad_configs_raise():
    with pytest.raises(ValueError, match="network"):
        sj.GeneratorConfig(network="UNet")
    with pytest.raises(ValueError, match="patches"):
        sj.GeneratorConfig(patches="before")
    with pytest.raises(ValueError, match="unet_opts"):
        sj.GeneratorConfig(network="Unet", unet_opts="residualMaybe_conv_tconv_selu")
    for network in ("noUnet", "Unet_first"):
        with pytest.raises(ValueError, match="unet_skip needs network"):
            sj.GeneratorConfig(network=network, unet_skip=True)


@pytest.mark.parametrize("network", ["Unet", "Unet_cat"])
def test_unet_skip_starts_at_the_physical_model_and_learns_through_the_gate(network):
    import dataclasses

    cfg = dataclasses.replace(config(network), unet_skip=True)
    model = sj.init_generator(jax.random.key(0), cfg)
    np.testing.assert_array_equal(model.params["gate"], np.zeros(4))
    physics = dataclasses.replace(cfg, network="noUnet", unet_skip=False)
    x, key = clean(), jax.random.key(3)
    # Eager, both: the equality is exact, which two separately compiled programs need not keep.
    out = sj.generate(model.params, key, x, cfg, train=False)
    # The same noise key draws the same physical noise: at init the U-Net contributes exactly nothing.
    np.testing.assert_array_equal(out, sj.generate({"noise": model.params["noise"]}, key, x, physics))

    def loss(params):
        return jnp.mean(sj.generate(params, key, x, cfg) ** 2)

    grads = jax.jit(jax.grad(loss))(model.params)
    assert float(jnp.abs(grads["gate"]).min()) > 0  # the gate opens from its first step
    # With the gate open, the U-Net's output is added to the physical model's.
    opened = {**model.params, "gate": jnp.full((4,), 0.5)}
    assert not np.allclose(jit_generate(cfg)(opened, key, x), out, atol=1e-3)


def test_quantize_rounds_the_output_with_a_straight_through_gradient():
    cfg = sj.GeneratorConfig(noise=parse_noiselist("shot_read_uniform", channels=3), quantize=1 / 255)
    model = sj.init_generator(jax.random.key(0), cfg)
    x = clean((2, 32, 32, 3))
    y = np.asarray(jit_generate(cfg)(model.params, jax.random.key(1), x), np.float64)
    np.testing.assert_allclose(y * 255, np.round(y * 255), atol=1e-4)
    plain = dataclasses.replace(cfg, quantize=None)
    y0 = np.asarray(jit_generate(plain)(model.params, jax.random.key(1), x), np.float64)
    assert np.abs(y - y0).max() <= 0.5 / 255 + 1e-6 and np.abs(y - y0).max() > 0.1 / 255
    # The gradient is that of the unrounded output (not zero, as round's own gradient is).
    loss = lambda c: lambda p: jnp.mean((sj.generate(p, jax.random.key(1), x, c) - x) ** 2)  # noqa: E731
    g, g0 = jax.jit(jax.grad(loss(cfg)))(model.params), jax.jit(jax.grad(loss(plain)))(model.params)
    np.testing.assert_allclose(g["noise"]["read"], g0["noise"]["read"], rtol=0.05)
    assert float(g["noise"]["read"]) != 0
    # A step that does not divide 1: a saturated pixel still reads exactly 1.
    top = sj.generate(model.params, jax.random.key(1), jnp.ones((1, 8, 8, 3)), dataclasses.replace(cfg, quantize=0.3))
    assert float(top.max()) == 1.0
    for bad in (0.0, 1.5, "1/255"):
        with pytest.raises(ValueError, match="quantize"):
            dataclasses.replace(cfg, quantize=bad)


def test_gain_scales_shot_and_read_as_the_physics_says():
    """At gain g the noise variance a·x + b becomes g·a·x + g²·b: checked on a flat image per level."""
    import starlight_jax as sj

    cfg = sj.parse_noiselist("shot_read")
    params = {"shot": jnp.log(jnp.float32(1e-4)), "read": jnp.log(jnp.float32(1e-5))}
    g = 3.0
    for level in (0.3, 0.6):  # many stds from the clip at 0 and 1
        clean = jnp.full((64, 64, 64, 4), level, jnp.float32)
        out = sj.synthesize(jax.random.key(0), clean, params, noiselist=cfg, gain=g)
        var = float(jnp.var(out - clean))
        want = g * 1e-4 * level + g * g * 1e-5
        n = clean.size
        assert abs(var / want - 1) < 5 * np.sqrt(2 / n), (level, var, want)
    with pytest.raises(ValueError, match="gain"):
        sj.synthesize(jax.random.key(0), clean, params, noiselist=cfg, gain=-1.0)
    # Traceable: the same numbers under jit with gain as an argument.
    f = jax.jit(lambda k, c, gain: sj.synthesize(k, c, params, noiselist=cfg, gain=gain))
    np.testing.assert_allclose(np.asarray(f(jax.random.key(0), clean, g)),
                               np.asarray(sj.synthesize(jax.random.key(0), clean, params, noiselist=cfg, gain=g)),
                               atol=1e-6)
