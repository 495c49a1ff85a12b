"""Tests for starlight_jax.models.unet."""

import dataclasses
import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from starlight_jax.models import unet as unet_lib
from starlight_jax.models.unet import (ConvBlock, Downsample, UNet, UNetConfig, Upsample, count_params,
                                       parse_unet_opts)

TINY = unet_lib.TINY_WIDTHS


def _tiny(compat="starlight", opts=unet_lib.DEFAULT_UNET_OPTS, **overrides):
    cfg = parse_unet_opts(opts, compat)
    return dataclasses.replace(cfg, widths=TINY, **overrides)


pytestmark = pytest.mark.usefixtures("fast_compiles")


@pytest.fixture(scope="module")
def starlight_tiny():
    """A tiny compat="starlight" U-Net (dropout on), its variables and jitted train/eval applies."""
    model = UNet(out_channels=4, config=_tiny())
    variables = jax.jit(lambda k: model.init(k, jnp.zeros((1, 16, 16, 4)), train=False))(jax.random.key(0))
    apply_train = jax.jit(lambda v, x, k: model.apply(v, x, train=True, rngs={"dropout": k}))
    apply_eval = jax.jit(lambda v, x: model.apply(v, x, train=False))
    return model, variables, apply_train, apply_eval


@pytest.mark.parametrize(
    "down,up,activation,norm",
    list(itertools.product(unet_lib.DOWN_MODES, unet_lib.UP_MODES, unet_lib.ACTIVATIONS, unet_lib.NORMS)))
def test_output_shape_every_option(down, up, activation, norm):
    cfg = UNetConfig(down=down, up=up, activation=activation, norm=norm, dropout=0.1, residual=True,
                     widths=TINY)
    model = UNet(out_channels=5, config=cfg)
    x = jax.ShapeDtypeStruct((2, 1, 16, 16, 3), jnp.float32)
    init = lambda k, x: model.init_with_output({"params": k, "dropout": k}, x, train=True)  # noqa: E731
    y, variables = jax.eval_shape(init, jax.random.key(0), x)
    assert y.shape == (2, 1, 16, 16, 5)
    assert ("batch_stats" in variables) == (norm == "batch")
    has_updown_params = "down1" in variables["params"], "up1" in variables["params"]
    assert has_updown_params == (down == "conv", up == "tconv")
    assert "convres" in variables["params"]


@pytest.mark.parametrize("down,up,activation,norm", [
    ("maxpool", "bilinear", "selu", "instance"),
    ("avgpool", "nearest", "elu", "batch"),
])
def test_forward_is_finite(down, up, activation, norm):
    cfg = UNetConfig(down=down, up=up, activation=activation, norm=norm, widths=TINY, residual=True)
    model = UNet(out_channels=4, config=cfg)
    x = jax.random.uniform(jax.random.key(1), (2, 16, 16, 4))

    @jax.jit
    def run(key, x):
        variables = model.init(key, x, train=False)
        return model.apply(variables, x, train=True, mutable=["batch_stats"])

    y, state = run(jax.random.key(0), x)
    assert y.shape == (2, 16, 16, 4)
    assert np.all(np.isfinite(y)) and np.std(y) > 0
    if norm == "batch":  # running statistics moved off their init
        assert not np.allclose(state["batch_stats"]["conv1"]["norm1"]["mean"], 0)


def test_leading_axes_and_levels():
    # One level (widths (4, 8)): sizes need only be even, and compiles stay cheap.
    model = UNet(out_channels=2, config=UNetConfig(widths=(4, 8), residual=True))
    x = jax.random.uniform(jax.random.key(1), (2, 3, 6, 10, 2))
    variables = model.init(jax.random.key(0), x, train=False)
    y = model.apply(variables, x, train=False)
    assert y.shape == (2, 3, 6, 10, 2)
    # Leading axes are a plain batch: same result as the flattened call.
    y_flat = model.apply(variables, x.reshape(6, 6, 10, 2), train=False)
    np.testing.assert_allclose(np.asarray(y).reshape(6, 6, 10, 2), y_flat, rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="divisible by 2"):
        model.apply(variables, jnp.zeros((1, 5, 10, 2)), train=False)


@pytest.mark.parametrize("c_in,opts,compat,expected", [
    (4, "residualFalse_conv_tconv_selu", "starlight", 3_328_384),
    (8, "residualFalse_conv_tconv_selu", "starlight", 3_329_680),
    (4, "residualFalse_conv_tconv_selu", "physics", 3_328_088),
    (4, "residualTrue_conv_tconv_selu", "physics", 3_328_384),
])
def test_pinned_parameter_counts(c_in, opts, compat, expected):
    model = UNet(out_channels=4, config=parse_unet_opts(opts, compat))
    variables = jax.eval_shape(lambda k: model.init(k, jnp.zeros((1, 16, 16, c_in)), train=False),
                               jax.random.key(0))
    assert count_params(variables["params"]) == expected


def test_per_block_parameter_counts():
    model = UNet(out_channels=4, config=parse_unet_opts(compat="starlight"))
    params = jax.eval_shape(lambda k: model.init(k, jnp.zeros((1, 16, 16, 4)), train=False),
                            jax.random.key(0))["params"]
    expected = {"conv1": 10_432, "conv2": 55_424, "conv3": 221_440, "conv4": 885_248, "conv5": 1_180_160,
                "conv6": 737_536, "conv7": 184_448, "conv8": 46_144, "conv9": 2_456, "convres": 296}
    assert {name: count_params(params[name]) for name in expected} == expected
    assert sum(count_params(params[f"down{i}"]) for i in range(1, 5)) == 2_400
    assert sum(count_params(params[f"up{i}"]) for i in range(1, 5)) == 2_400


def test_count_params_on_arrays():
    tree = {"a": jnp.zeros((2, 3)), "b": [jnp.zeros(4), jnp.zeros(())]}
    assert count_params(tree) == 11


def test_parse_default_physics():
    cfg = parse_unet_opts("residualFalse_conv_tconv_selu", "physics")
    assert (cfg.residual, cfg.activation, cfg.dropout, cfg.norm, cfg.block_residual) == (
        False, "selu", 0.0, "none", True)
    assert (cfg.down, cfg.up) == ("conv", "tconv")


def test_parse_default_starlight_replicates_bugs():
    cfg = parse_unet_opts("residualFalse_conv_tconv_selu", "starlight")
    assert cfg.residual is True  # bool("False")
    assert (cfg.activation, cfg.dropout, cfg.norm, cfg.block_residual, cfg.init) == (
        "leakyrelu", 0.05, "none", True, "pytorch")


def test_parse_other_options():
    cfg = parse_unet_opts("residualTrue_maxpool_bilinear_relu", "physics")
    assert (cfg.residual, cfg.down, cfg.up, cfg.activation) == (True, "maxpool", "bilinear", "relu")
    cfg = parse_unet_opts("residualTrue_avgpool_nearest_elu", "starlight")
    assert (cfg.down, cfg.up, cfg.activation) == ("avgpool", "nearest", "leakyrelu")
    assert parse_unet_opts("residual_conv_tconv_selu", "starlight").residual is False  # bool("")


@pytest.mark.parametrize("opts,compat,match", [
    ("residualMaybe_conv_tconv_selu", "physics", "residual flag"),
    ("residual_conv_tconv_selu", "physics", "residual flag"),
    ("resFalse_conv_tconv_selu", "physics", "residualTrue"),
    ("residualFalse_stride_tconv_selu", "physics", r"down must be one of \['conv', 'maxpool', 'avgpool'\]"),
    ("residualFalse_conv_pixelshuffle_selu", "starlight", "up must be one of"),
    ("residualFalse_conv_tconv_gelu", "starlight", "activation must be one of"),
    ("residualFalse_conv_tconv", "physics", "4 '_'-separated fields"),
    ("residualFalse_conv_tconv_selu", "torch", "compat must be one of"),
])
def test_parse_rejects_bad_strings(opts, compat, match):
    with pytest.raises(ValueError, match=match):
        parse_unet_opts(opts, compat)


@pytest.mark.parametrize("overrides,match", [
    ({"norm": "layer"}, "norm"),
    ({"down": "stride"}, "down"),
    ({"dropout": 1.0}, "dropout"),
    ({"init": "xavier"}, "init"),
    ({"widths": (8,)}, "widths"),
])
def test_config_validation(overrides, match):
    with pytest.raises(ValueError, match=match):
        UNetConfig(**overrides)


def _module_params(model_params, name):
    return {"params": model_params[name]}


def test_compat_down_conv_is_near_average_pool(starlight_tiny):
    params = starlight_tiny[1]["params"]
    h = jax.random.uniform(jax.random.key(4), (3, 8, 8, TINY[0]))  # values in [0, 1)
    y = Downsample("conv", "pytorch").apply(_module_params(params, "down1"), h)
    avg = np.asarray(h).reshape(3, 4, 2, 4, 2, TINY[0]).mean(axis=(2, 4))
    # weights 0.25 ± 0.005 on 4 inputs in [0, 1) and bias within ±0.005.
    diff = np.abs(np.asarray(y) - avg)
    assert diff.max() <= 4 * 0.005 + 0.005
    assert diff.max() > 1e-4  # the 0.01 perturbation is there


def test_compat_up_conv_is_near_quarter_nearest(starlight_tiny):
    params = starlight_tiny[1]["params"]
    h = jax.random.uniform(jax.random.key(5), (3, 4, 4, TINY[-1]))
    y = Upsample("tconv", "pytorch").apply(_module_params(params, "up1"), h)
    nearest = np.repeat(np.repeat(np.asarray(h), 2, axis=1), 2, axis=2)
    diff = np.abs(np.asarray(y) - 0.25 * nearest)
    assert y.shape == (3, 8, 8, TINY[-1])
    assert diff.max() <= 0.005 + 0.005
    assert diff.max() > 1e-4


def test_depthwise_down_matches_grouped_conv():
    c = 3
    x = jax.random.normal(jax.random.key(0), (2, 6, 4, c))
    variables = Downsample("conv", "pytorch").init(jax.random.key(1), x)
    kernel, bias = variables["params"]["kernel"], variables["params"]["bias"]
    ref = jax.lax.conv_general_dilated(x, kernel[:, :, None, :], (2, 2), "VALID",
                                       dimension_numbers=("NHWC", "HWIO", "NHWC"), feature_group_count=c)
    y = Downsample("conv", "pytorch").apply(variables, x)
    np.testing.assert_allclose(y, ref + bias, rtol=1e-5, atol=1e-6)


def test_depthwise_up_matches_loop():
    c = 3
    x = np.asarray(jax.random.normal(jax.random.key(0), (2, 3, 2, c)))
    variables = Upsample("tconv", "pytorch").init(jax.random.key(1), x)
    k, b = (np.asarray(variables["params"][n]) for n in ("kernel", "bias"))
    ref = np.zeros((2, 6, 4, c), np.float32)
    for i, j, a, bb in itertools.product(range(3), range(2), range(2), range(2)):
        ref[:, 2 * i + a, 2 * j + bb] = x[:, i, j] * k[a, bb] + b
    y = Upsample("tconv", "pytorch").apply(variables, x)
    np.testing.assert_allclose(y, ref, rtol=1e-5, atol=1e-6)


def test_flax_init_down_up_are_exact_pool_and_quarter_nearest():
    x = jax.random.uniform(jax.random.key(0), (1, 4, 4, 2))
    down = Downsample("conv", "flax")
    y = down.apply(down.init(jax.random.key(1), x), x)
    avg = Downsample("avgpool").apply({}, x)
    np.testing.assert_allclose(y, avg, rtol=1e-6, atol=1e-6)
    up = Upsample("tconv", "flax")
    z = up.apply(up.init(jax.random.key(1), x), x)
    np.testing.assert_allclose(z, 0.25 * Upsample("nearest").apply({}, x), rtol=1e-6, atol=1e-6)


def test_bilinear_matches_half_pixel_convention():
    # torch F.interpolate(scale_factor=2, mode='bilinear', align_corners=False) of [0, 1] is
    # [0, 0.25, 0.75, 1] along each axis.
    x = jnp.array([0.0, 1.0]).reshape(1, 1, 2, 1) * jnp.ones((1, 2, 2, 1))
    y = Upsample("bilinear").apply({}, x)
    np.testing.assert_allclose(y[0, 0, :, 0], [0.0, 0.25, 0.75, 1.0], atol=1e-6)
    np.testing.assert_allclose(y[0, :, 1, 0], [0.25] * 4, atol=1e-6)


@pytest.mark.parametrize("c_in,features", [(3, 5), (5, 3), (4, 4)])
def test_block_residual_adds_first_min_channels(c_in, features):
    block = ConvBlock(features, activation="relu", residual=True)
    x = jax.random.uniform(jax.random.key(0), (1, 4, 4, c_in), minval=0.1, maxval=1.0)
    params = block.init(jax.random.key(1), x, train=False)
    zero = jax.tree.map(jnp.zeros_like, params)  # both convs output 0: only the residual remains
    y = np.asarray(block.apply(zero, x, train=False))
    m = min(c_in, features)
    np.testing.assert_allclose(y[..., :m], np.asarray(x)[..., :m])
    assert np.all(y[..., m:] == 0)
    no_res = ConvBlock(features, activation="relu", residual=False).apply(zero, x, train=False)
    assert np.all(np.asarray(no_res) == 0)


@pytest.mark.parametrize("shape", [(1, 24, 16, 4), (1, 16, 40, 4)])
def test_size_not_divisible_raises(shape, starlight_tiny):
    model, params, _, _ = starlight_tiny
    with pytest.raises(ValueError, match="divisible by 16"):
        model.apply(params, jnp.zeros(shape), train=False)
    with pytest.raises(ValueError, match="divisible by 16"):
        jax.jit(lambda p, x: model.apply(p, x, train=False))(params, jnp.zeros(shape))


def test_dropout_train_flag_and_keys(starlight_tiny):
    model, variables, apply_train, apply_eval = starlight_tiny
    x = jax.random.uniform(jax.random.key(0), (2, 16, 16, 4))
    eval_a = apply_eval(variables, x)
    np.testing.assert_array_equal(eval_a, apply_eval(variables, x))
    t0, t0_again, t1 = (apply_train(variables, x, jax.random.key(k)) for k in (0, 0, 1))
    np.testing.assert_array_equal(t0, t0_again)
    assert not np.allclose(t0, t1)
    assert not np.allclose(t0, eval_a)


@pytest.mark.parametrize("rate", [0.0, 0.5])
def test_block_dropout_drops_whole_channels(rate):
    block = ConvBlock(16, activation="relu", residual=False, dropout=rate)
    x = jax.random.uniform(jax.random.key(0), (2, 8, 8, 3))
    params = block.init(jax.random.key(1), x, train=False)
    params = jax.tree.map(jnp.abs, params)  # positive weights: no channel is zero unless dropped
    deterministic = block.apply(params, x, train=False)
    dropped = block.apply(params, x, train=True, rngs={"dropout": jax.random.key(3)})
    if rate == 0:
        np.testing.assert_array_equal(dropped, deterministic)
        return
    # After conv2 the dropout mask is the last op before relu: a dropped channel is zero everywhere.
    zero = np.all(np.asarray(dropped) == 0, axis=(1, 2))
    partly_zero = np.any(np.asarray(dropped) == 0, axis=(1, 2))
    assert 0 < zero.sum() < zero.size
    np.testing.assert_array_equal(zero, partly_zero)


def test_jit_matches_eager(starlight_tiny):
    model, variables, apply_train, _ = starlight_tiny
    x = jax.random.uniform(jax.random.key(0), (2, 16, 16, 4))
    key = jax.random.key(2)
    eager = model.apply(variables, x, train=True, rngs={"dropout": key})
    np.testing.assert_allclose(eager, apply_train(variables, x, key), rtol=1e-5, atol=1e-5)


def test_pytorch_init_bounds(starlight_tiny):
    params = starlight_tiny[1]["params"]
    kernel, bias = params["conv2"]["conv1"]["kernel"], params["conv2"]["conv1"]["bias"]
    bound = 1 / np.sqrt(9 * TINY[0])
    assert 0.9 * bound < np.abs(kernel).max() <= bound
    assert np.abs(bias).max() <= bound
    down = params["down2"]["kernel"]
    assert np.all(np.abs(down - 0.25) <= 0.005) and np.std(down) > 0
