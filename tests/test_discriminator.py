"""Tests for starlight_jax.models.discriminator."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.sparse.linalg

from starlight_jax.models import count_params
from starlight_jax.models.discriminator import (LAYERS, SN_COLLECTION, Discriminator, apply_discriminator,
                                                conv_as_matmul, init_discriminator, normalized_kernels)


pytestmark = pytest.mark.usefixtures("fast_compiles")


@pytest.fixture(scope="module")
def critic():
    params, state = jax.jit(init_discriminator, static_argnums=1)(jax.random.key(0), 4)
    return params, state


@pytest.fixture(scope="module")
def step():
    """Jitted D call that advances the spectral-norm state."""
    return jax.jit(lambda p, s, x: apply_discriminator(p, s, x, update_stats=True))


# Jitted D scores without a state update (`sigmoid` static): op by op, the width-64 critic's forward
# compiles each of its ops apart, which dominated these tests.
score = jax.jit(lambda p, s, x, sigmoid=False: apply_discriminator(p, s, x, update_stats=False, sigmoid=sigmoid)[0],
                static_argnames="sigmoid")


def _patches(key, n=2, c=4):
    return jax.random.uniform(key, (n, 64, 64, c))


def _top_singular_value(kernel):
    """Largest singular value of the kernel as a (fan_in, out) matrix (same spectrum as torch's (out, -1))."""
    matrix = np.asarray(kernel, np.float64).reshape(-1, kernel.shape[-1])
    if min(matrix.shape) <= 256:
        return np.linalg.svd(matrix, compute_uv=False)[0]
    # A full SVD of conv5's 4608 x 1024 matrix takes tens of seconds on a small CPU; Lanczos needs ~1 s.
    return scipy.sparse.linalg.svds(matrix, k=1, return_singular_vectors=False)[0]


@pytest.mark.parametrize("channels,expected", [(4, 7_491_777), (8, 7_494_081)])
def test_pinned_parameter_count(channels, expected):
    params, state = jax.eval_shape(lambda k: init_discriminator(k, channels), jax.random.key(0))
    assert count_params(params) == expected
    # Only kernels and biases are trainable; the power-iteration vectors live in the state.
    assert {leaf for layer in params.values() for leaf in layer} == {"kernel", "bias"}
    assert {leaf for layer in state.values() for leaf in layer} == {"u"}
    assert set(params) == set(state) == set(LAYERS)
    assert {name: state[name]["u"].shape for name in LAYERS} == {
        "conv1": (64,), "conv2": (128,), "conv3": (256,), "conv4": (512,), "conv5": (1024,), "linear": (1,)}


def test_width_scales_every_layer_and_apply_reads_it_from_the_weights():
    width, channels = 16, 4
    params, state = init_discriminator(jax.random.key(0), channels, width=width)
    # (in, out, kernel) per conv: out = width × (1, 2, 4, 8, 16); the linear sees 16·width × 4 × 4 features.
    convs = [(channels, 16, 3), (16, 32, 4), (32, 64, 4), (64, 128, 4), (128, 256, 3)]
    expected = sum(k * k * c_in * c_out + c_out for c_in, c_out, k in convs) + 256 * 16 + 1
    assert count_params(params) == expected
    assert state["conv5"]["u"].shape == (16 * width,)
    x = jax.random.uniform(jax.random.key(1), (3, 64, 64, channels))
    scores = score(params, state, x)
    assert scores.shape == (3,) and np.all(np.isfinite(scores))
    with pytest.raises(ValueError, match="width"):
        init_discriminator(jax.random.key(0), channels, width=0)


def test_init_is_pytorch_uniform_and_unnormalised(critic):
    params, _ = critic
    kernel = params["conv2"]["kernel"]
    bound = 1 / np.sqrt(4 * 4 * 64)
    assert 0.9 * bound < np.abs(kernel).max() <= bound
    assert np.abs(params["linear"]["bias"]).max() <= 1 / np.sqrt(16384)
    # The stored kernel is the raw W, not W / sigma (flax.linen.SpectralNorm's init would store the latter).
    assert abs(_top_singular_value(kernel) - 1) > 0.1


def test_power_iteration_brings_sigma_to_one(step):
    # Width 16: the power iteration is the same per layer at any width; the 40 steps' forwards cost 16x less.
    params, state = init_discriminator(jax.random.key(0), 4, width=16)
    x = _patches(jax.random.key(1), n=1)
    sigma_at_init = {name: sigma for name, (_, sigma) in normalized_kernels(params, state).items()}
    for _ in range(40):
        _, state = step(params, state, x)
    for name, (w, sigma) in normalized_kernels(params, state).items():
        # Power iteration approaches sigma from below; the conv spectra are flat near the top, hence 3%.
        top = _top_singular_value(w)
        assert 1 - 1e-4 < top < 1.03, name
        # Without the updates the normalised weight would be far from 1 (the state, not luck, did it).
        if name != "linear":  # a 1-column matrix: one step is exact
            assert top * sigma / sigma_at_init[name] > 1.1, name


def test_update_stats_flag(critic, step):
    params, state = critic
    x = _patches(jax.random.key(2))
    # Without updates the state comes back as the very object passed in (checked while tracing: an
    # eager call of the width-64 critic compiles each of its ops apart, ~15 s).
    same = []
    jax.eval_shape(lambda s: same.append(apply_discriminator(params, s, x, update_stats=False)[1] is s), state)
    assert same == [True]
    scores = score(params, state, x)
    scores_upd, new = step(params, state, x)
    np.testing.assert_allclose(scores, scores_upd, rtol=1e-4, atol=1e-6)  # the forward is the same
    moved = [not np.allclose(new[n]["u"], state[n]["u"]) for n in LAYERS if n != "linear"]
    assert all(moved)
    np.testing.assert_allclose(jnp.linalg.norm(new["conv3"]["u"]), 1.0, rtol=1e-5)


def test_forward_uses_normalised_weights(critic):
    params, state = critic
    x = _patches(jax.random.key(3))
    scaled = dict(params, conv3=dict(params["conv3"], kernel=params["conv3"]["kernel"] * 7.0))
    a, b = score(params, state, x), score(scaled, state, x)
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)


def test_gradient_flows_through_sigma(critic):
    params, state = critic
    x = _patches(jax.random.key(4))
    grads = jax.jit(jax.grad(lambda p: score(p, state, x).sum()))(params)
    # W / sigma(W) is scale invariant, so with the gradient through sigma, <dD/dW, W> = 0 exactly.
    # Treating sigma as a constant would leave <dD/dW, W> = d/dc D(cW) at c=1, far from 0.
    for name in LAYERS:
        g, w = np.asarray(grads[name]["kernel"]), np.asarray(params[name]["kernel"])
        assert np.linalg.norm(g) > 0, name
        cosine = np.sum(g * w) / (np.linalg.norm(g) * np.linalg.norm(w))
        assert abs(cosine) < 1e-6, name  # ~1e-9 in float32; 5e-4 .. 3e-2 with sigma held constant


def test_input_gradient_for_penalty(critic):
    params, state = critic
    x = _patches(jax.random.key(5), n=3)
    grad_fn = jax.jit(jax.grad(lambda x: score(params, state, x).sum()))
    g = grad_fn(x)
    assert g.shape == x.shape
    assert np.all(np.linalg.norm(np.asarray(g).reshape(3, -1), axis=1) > 0)
    # Samples are independent in D: sample 1's gradient does not depend on the others.
    x_other = x.at[0].set(0.0).at[2].set(1.0)
    np.testing.assert_allclose(grad_fn(x_other)[1], g[1], rtol=1e-4, atol=1e-7)


def test_linear_sees_nchw_flattening(critic):
    params, state = critic
    x = _patches(jax.random.key(6))
    c, h, w = 5, 2, 3
    one_hot = jnp.zeros((16384, 1)).at[c * 16 + h * 4 + w, 0].set(1.0)  # torch index of (c, h, w)
    probe = dict(params, linear={"kernel": one_hot, "bias": jnp.zeros(1)})
    scores = score(probe, state, x)
    _, inter = jax.jit(lambda v, x: Discriminator().apply(v, x, update_stats=False, capture_intermediates=True))(
        {"params": params, SN_COLLECTION: state}, x)
    conv5 = inter["intermediates"]["conv5"]["__call__"][0]  # [N, 4, 4, 1024], before the activation
    # A one-hot kernel has sigma 1, so the score is that single LeakyReLU(0.1) feature.
    np.testing.assert_allclose(scores, jax.nn.leaky_relu(conv5[:, h, w, c], 0.1), rtol=1e-4, atol=1e-7)


def test_wrong_patch_size_raises(critic):
    params, state = critic
    with pytest.raises(ValueError, match=r"\(32, 32\)"):
        apply_discriminator(params, state, jnp.zeros((2, 32, 32, 4)), update_stats=False)
    with pytest.raises(ValueError, match=r"\(64, 32\)"):
        jax.jit(lambda x: apply_discriminator(params, state, x, update_stats=True))(jnp.zeros((2, 64, 32, 4)))


def test_sigmoid_bounds_scores(critic):
    params, state = critic
    x = 3.0 * _patches(jax.random.key(7), n=4)
    logits, probs = score(params, state, x), score(params, state, x, sigmoid=True)
    assert np.all((np.asarray(probs) > 0) & (np.asarray(probs) < 1))
    np.testing.assert_allclose(probs, jax.nn.sigmoid(logits), rtol=1e-5)


def test_leading_axes(critic, step):
    params, state = critic
    x = _patches(jax.random.key(8), n=4).reshape(2, 2, 64, 64, 4)
    scores, flat = score(params, state, x), score(params, state, x.reshape(4, 64, 64, 4))
    assert scores.shape == (2, 2)
    np.testing.assert_allclose(np.asarray(scores).reshape(4), flat, rtol=1e-5, atol=1e-7)


def test_jit_matches_eager(critic, step):
    params, state = critic
    x = _patches(jax.random.key(9))
    eager_scores, eager_state = apply_discriminator(params, state, x, update_stats=True)
    jit_scores, jit_state = step(params, state, x)
    np.testing.assert_allclose(eager_scores, jit_scores, rtol=1e-4, atol=1e-6)
    for name in LAYERS:
        np.testing.assert_allclose(eager_state[name]["u"], jit_state[name]["u"], rtol=1e-4, atol=1e-6)


def _native_conv(x, kernel, stride):
    return jax.lax.conv_general_dilated(x, kernel, (stride, stride), ((1, 1), (1, 1)),
                                        dimension_numbers=("NHWC", "HWIO", "NHWC"))


@pytest.mark.parametrize("size,k,stride", [(9, 3, 1), (8, 4, 2), (8, 3, 2)])  # conv1, conv2-4, conv5
def test_conv_as_matmul_equals_native_conv_to_second_order(size, k, stride):
    """The CPU formulation: same values, gradients, and the gradient penalty's double backward."""
    x = jax.random.normal(jax.random.key(0), (2, size, size, 3))
    kernel = jax.random.normal(jax.random.key(1), (k, k, 3, 5))

    def penalty(conv):  # an input gradient's norm, differentiated again: what the WGAN-GP penalty does
        inner = jax.grad(lambda x, w: jnp.sum(jnp.tanh(conv(x, w, stride))))
        return jax.grad(lambda x, w: jnp.sum(jnp.sqrt(jnp.sum(inner(x, w) ** 2))), argnums=(0, 1))

    def first(conv):
        return jax.grad(lambda x, w: jnp.sum(jnp.tanh(conv(x, w, stride))), argnums=(0, 1))

    np.testing.assert_allclose(conv_as_matmul(x, kernel, stride), _native_conv(x, kernel, stride),
                               rtol=1e-5, atol=1e-5)
    jit = jax.jit  # one compile per function instead of one per op of the double backward
    for ours, ref in [(jit(first(conv_as_matmul))(x, kernel), jit(first(_native_conv))(x, kernel)),
                      (jit(penalty(conv_as_matmul))(x, kernel), jit(penalty(_native_conv))(x, kernel))]:
        for a, b in zip(ours, ref):
            np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4 * float(jnp.abs(b).max()))


def test_compiled_init_equals_the_uncompiled_flax_init_bit_for_bit():
    """`init_discriminator` compiles the init for speed; its weights and power-iteration start vectors must
    still be the uncompiled init's to the bit (else every training run, the shipped default's included,
    would move in its last bits)."""
    from starlight_jax.models.discriminator import SN_COLLECTION, Discriminator

    key = jax.random.key(3)
    params, sn = init_discriminator(key, 4, width=8)
    eager = Discriminator(width=8).init(key, jnp.zeros((1, 64, 64, 4), jnp.float32), update_stats=False)
    for got, want in ((params, eager["params"]), (sn, eager[SN_COLLECTION])):
        for a, b in zip(jax.tree_util.tree_leaves(got), jax.tree_util.tree_leaves(want), strict=True):
            np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
