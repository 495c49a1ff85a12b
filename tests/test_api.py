"""The public API: synthesize under jit / vmap / grad, determinism, conventions and bad input."""
import inspect

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import starlight_jax as sj
from starlight_jax.noiselist import parse_noiselist

pytestmark = pytest.mark.usefixtures("fast_compiles")  # values, not speed: compiles dominate CPU time

NOISELIST = "shot_read_uniform_row1_rowt_periodic_row_learnedfixed"


def clean_burst(shape=(2, 4, 32, 32, 4), seed=0):
    return jax.random.uniform(jax.random.key(seed), shape, minval=0.2, maxval=0.8)


@pytest.fixture(params=["physics", "starlight"])
def setup(request):
    compat = request.param
    params = sj.init_params(NOISELIST, compat=compat, fixed_shape=(40, 40),
                            learned_fixed=0.01 * jax.random.normal(jax.random.key(9), (40, 40, 4)))
    return compat, params


def call(key, clean, params, compat, **kw):
    return sj.synthesize(key, clean, params, noiselist=NOISELIST, compat=compat, **kw)


def test_same_key_same_output_different_key_different_output(setup):
    compat, params = setup
    clean = clean_burst()
    a = call(jax.random.key(1), clean, params, compat)
    b = call(jax.random.key(1), clean, params, compat)
    c = call(jax.random.key(2), clean, params, compat)
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    assert float(jnp.abs(a - c).mean()) > 1e-4
    assert a.shape == clean.shape and a.dtype == clean.dtype
    assert float(a.min()) >= 0.0 and float(a.max()) <= 1.0


def test_jit_equals_eager(setup):
    compat, params = setup
    clean = clean_burst()
    eager = call(jax.random.key(3), clean, params, compat)
    jitted = jax.jit(lambda k, x, p: call(k, x, p, compat))(jax.random.key(3), clean, params)
    np.testing.assert_allclose(np.asarray(jitted), np.asarray(eager), atol=1e-6)


def test_vmap_over_images_and_keys_equals_loop(setup):
    compat, params = setup
    clean = clean_burst((3, 4, 32, 32, 4))
    keys = jax.random.split(jax.random.key(4), 3)
    batched = jax.vmap(lambda k, x: call(k, x, params, compat))(keys, clean)
    looped = jnp.stack([call(k, x, params, compat) for k, x in zip(keys, clean)])
    np.testing.assert_allclose(np.asarray(batched), np.asarray(looped), atol=1e-6)


def test_grad_is_finite_and_nonzero_for_every_learnable_parameter(setup):
    compat, params = setup
    clean = clean_burst()
    target = clean_burst(seed=7)

    def loss(p):
        return jnp.mean((call(jax.random.key(5), clean, p, compat) - target) ** 2)

    grads = jax.jit(jax.grad(loss))(params)
    assert sorted(grads) == sorted(params)
    for name, g in grads.items():
        g = np.asarray(g)
        assert np.all(np.isfinite(g)), name
        assert np.abs(g).sum() > 0, f"no gradient reaches {name}"


def test_default_call_and_noise_model():
    clean = clean_burst((4, 32, 32, 4))
    noisy = sj.synthesize(jax.random.key(0), clean)
    assert noisy.shape == clean.shape
    model = sj.init_generator(jax.random.key(0), sj.GeneratorConfig(noise=parse_noiselist("shot_read")))
    out = jax.jit(sj.synthesize)(jax.random.key(0), clean, model)
    ref = sj.synthesize(jax.random.key(0), clean, model.params["noise"], noiselist="shot_read")
    np.testing.assert_allclose(np.asarray(out), np.asarray(ref), atol=1e-6)


def test_sample_components_sum_to_synthesize():
    cfg = parse_noiselist("shot_read_uniform_row1")
    params = sj.init_params(cfg)
    clean = clean_burst((4, 32, 32, 4))
    parts = sj.sample_components(jax.random.key(0), params, clean, cfg)
    assert set(parts) == {"shot_read", "uniform", "column"}
    assert all(v.shape == clean.shape for v in parts.values())
    # generate() splits the key into (noise, dropout) keys; the noise key feeds the components.
    noise_key = jax.random.split(jax.random.key(0))[0]
    parts = sj.sample_components(noise_key, params, clean, cfg)
    noisy = sj.synthesize(jax.random.key(0), clean, params, noiselist=cfg)
    np.testing.assert_allclose(np.asarray(noisy), np.clip(np.asarray(clean + sum(parts.values())), 0, 1),
                               atol=1e-6)


def test_api_conventions():
    """dm-pix style: the random argument is `key`, it comes first, options are keyword-only."""
    for fn in (sj.synthesize,):
        sig = inspect.signature(fn)
        names = list(sig.parameters)
        assert names[0] == "key" and names[1] == "clean"
        for name, p in sig.parameters.items():
            if name not in ("key", "clean", "params"):
                assert p.kind is inspect.Parameter.KEYWORD_ONLY, name
    sig = inspect.signature(sj.sample_components)
    assert list(sig.parameters)[:3] == ["key", "params", "clean"]


# ------------------------------------------------------------------------------------------------------
# Bad input
# ------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("clean,match", [
    (np.zeros((32, 32), np.float32), "rank >= 3"),
    (np.zeros((32, 32, 4), np.uint8), "float"),
    (np.full((32, 32, 4), np.nan, np.float32), "NaN or inf"),
    ([[0.0]], "array"),
])
def test_bad_clean_raises(clean, match):
    with pytest.raises(ValueError, match=match):
        sj.synthesize(jax.random.key(0), clean)


def test_mismatched_channels_raise():
    params = sj.init_params("shot_read_learnedfixed", channels=4, fixed_shape=(64, 64))
    with pytest.raises(ValueError, match="params\\['learned_fixed'\\]"):
        sj.synthesize(jax.random.key(0), clean_burst((4, 32, 32, 3)), params, noiselist="shot_read_learnedfixed")
    model = sj.init_generator(jax.random.key(0), sj.GeneratorConfig(noise=parse_noiselist("shot_read")))
    with pytest.raises(ValueError, match="3 channels.*expects 4"):
        sj.synthesize(jax.random.key(0), clean_burst((4, 32, 32, 3)), model)


def test_fixed_pattern_smaller_than_crop_raises():
    params = sj.init_params("fixed1", fixed_shape=(16, 64))
    with pytest.raises(ValueError, match="smaller than the 32x32 image"):
        sj.synthesize(jax.random.key(0), clean_burst((4, 32, 32, 4)), params, noiselist="fixed1")


def test_out_of_range_offset_raises():
    params = sj.init_params("fixed1", fixed_shape=(40, 40))
    with pytest.raises(ValueError, match="fixed_offset"):
        sj.synthesize(jax.random.key(0), clean_burst((4, 32, 32, 4)), params, noiselist="fixed1",
                      fixed_offset=np.array([0, 9]))


def test_unknown_token_and_mismatched_params_raise():
    with pytest.raises(ValueError, match="unknown token.*perodic"):
        sj.synthesize(jax.random.key(0), clean_burst(), noiselist="shot_read_perodic")
    with pytest.raises(ValueError, match="missing keys \\['uniform'\\]"):
        sj.synthesize(jax.random.key(0), clean_burst(), sj.init_params("shot_read"),
                      noiselist="shot_read_uniform")


def test_shape_errors_fire_under_jit():
    params = sj.init_params("shot_read_learnedfixed", fixed_shape=(8, 8))
    with pytest.raises(ValueError, match="learned_fixed.*\\[Hf, Wf, 3\\]"):
        jax.jit(lambda k, x: sj.synthesize(k, x, params, noiselist="shot_read_learnedfixed"))(
            jax.random.key(0), jnp.zeros((4, 8, 8, 3)))


def test_shipped_default_model_recovers_the_embedded_truth():
    """starlight_jax/assets/default was trained on the embedded data: its shot and read scales are within 10 % of
    that data's truth (README: how it was produced). Fails if a worse model is shipped."""
    import numpy as np

    from starlight_jax import generator, noise
    from starlight_jax.data import SensorModel
    from starlight_jax.data.synthetic import ground_truth

    if not (generator.DEFAULT_MODEL_DIR / "generator.json").is_file():
        pytest.skip("no starlight_jax/assets/default in this checkout")
    model = generator.default_model()
    scales = noise.scales(model.params["noise"], model.config.noise)
    truth = ground_truth(SensorModel(), np.zeros((8, 4)), (8, 8))
    for name in ("shot", "read"):
        np.testing.assert_allclose(float(scales[name]), truth[name].mean(), rtol=0.10, err_msg=name)
    assert not model.config.noise.fixed  # exported without the sensor's map: any image size works
