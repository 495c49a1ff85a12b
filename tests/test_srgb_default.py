"""The shipped sRGB default (starlight_jax/assets/srgb): what `synthesize` uses for 3-channel images."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import starlight_jax as sj
from starlight_jax import generator, structure

SRGB = generator.DEFAULT_MODEL_DIRS[3]
pytestmark = [pytest.mark.usefixtures("fast_compiles"), pytest.mark.skipif(not (SRGB / "generator.json").is_file(), reason=f"no sRGB default in {SRGB}")]


def test_three_channel_images_get_the_trained_srgb_model():
    generator.default_model.cache_clear()
    shipped = generator.load_generator(SRGB)
    assert shipped.config.noise.isp and shipped.config.channels == 3
    clean = jnp.full((4, 64, 64, 3), 0.4, jnp.float32)
    got = sj.synthesize(jax.random.key(0), clean)
    want = sj.synthesize(jax.random.key(0), clean, shipped)
    np.testing.assert_array_equal(np.asarray(got), np.asarray(want))
    # Not white: sRGB noise as the camera pipeline makes it, correlated in space and across channels
    # (on real pairs the 2x2 block ratio is 2.2-3.2 and the channel correlations 0.2-0.7).
    res = np.asarray(got - clean, np.float64)
    stats = structure.describe_residual(res)
    assert stats["block2_var_ratio"] > 1.5
    assert np.all(np.asarray(stats["xcorr"]) > 0.15)
    # Rounded to 8-bit steps, as the files it was trained on.
    np.testing.assert_allclose(np.asarray(got) * 255, np.round(np.asarray(got) * 255), atol=1e-3)


def test_srgb_default_answers_to_gain():
    clean = jnp.full((4, 64, 64, 3), 0.4, jnp.float32)
    base = float(jnp.var(sj.synthesize(jax.random.key(0), clean) - clean))
    louder = float(jnp.var(sj.synthesize(jax.random.key(0), clean, gain=4.0) - clean))
    assert louder > 2.5 * base  # shot variance x4, read x16, through the tone curve's slope
