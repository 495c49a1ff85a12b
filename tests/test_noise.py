"""Statistics of each noise component against its formula.

Tolerances are derived from the sample size: a sample mean is within 5 standard errors (σ/√n), a sample
variance within 5·σ²·√(2/n) (Gaussian) of the formula, with fixed seeds.
"""
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from starlight_jax import noise
from starlight_jax.noiselist import parse_noiselist

pytestmark = pytest.mark.usefixtures("fast_compiles")  # values, not speed: compiles dominate CPU time

KEY = jax.random.key(0)
LEVELS = (0.05, 0.3, 0.8)


def components(noiselist, clean, compat="physics", params=None, key=KEY, **kw):
    cfg = parse_noiselist(noiselist, compat=compat, channels=clean.shape[-1], **kw.pop("cfg_kw", {}))
    params = noise.init_params(cfg) if params is None else params
    return noise.sample_components(key, params, jnp.asarray(clean), cfg, **kw), params, cfg


def flat(level, shape=(8, 32, 32, 4)):
    return jnp.full(shape, level, jnp.float32)


@pytest.mark.parametrize("level", LEVELS)
def test_starlight_shot_read_std_is_linear_in_signal(level):
    out, params, _ = components("shot_read", flat(level), compat="starlight")
    n = np.asarray(out["shot_read"], np.float64)
    expected = float(params["shot"]) * level + float(params["read"])  # 0.2 x + 0.02
    se = expected / math.sqrt(2 * n.size)
    assert abs(n.std() - expected) < 5 * se
    assert abs(n.mean()) < 5 * expected / math.sqrt(n.size)


@pytest.mark.parametrize("level", LEVELS)
def test_physics_shot_read_variance_law(level):
    params = {"shot": jnp.log(jnp.float32(4e-3)), "read": jnp.log(jnp.float32(1e-4))}
    out, _, _ = components("shot_read", flat(level), params=params)
    n = np.asarray(out["shot_read"], np.float64)
    var = 4e-3 * level + 1e-4
    assert abs(n.var() - var) < 5 * var * math.sqrt(2 / n.size)
    assert abs(n.mean()) < 5 * math.sqrt(var / n.size)


@pytest.mark.parametrize("level", (0.02, 0.3))
def test_physics_poisson_sampler_mean_and_variance(level):
    a, b = 2e-3, 1e-5
    params = {"shot": jnp.log(jnp.float32(a)), "read": jnp.log(jnp.float32(b))}
    out, _, cfg = components("shot_read", flat(level), params=params, cfg_kw={"shot_sampler": "poisson"})
    n = np.asarray(out["shot_read"], np.float64)
    var = a * level + b
    assert abs(n.mean()) < 5 * math.sqrt(var / n.size)
    # Poisson counts are not Gaussian: use the Poisson fourth moment for the variance's standard error.
    lam = level / a
    kurt_term = a**4 * (lam + 3 * lam**2) - var**2 + 2 * b**2
    assert abs(n.var() - var) < 5 * math.sqrt(max(kurt_term, 2 * var**2) / n.size)
    # Counts are integers: noisy/a is on a lattice offset by clean/a (up to the small read term).
    assert cfg.shot_sampler == "poisson"


def test_shot_without_read():
    clean = flat(0.5)
    out, params, _ = components("shot", clean, compat="starlight")
    assert out == {} and params == {}, "the original adds nothing for 'shot' without 'read'"
    out, params, _ = components("shot", clean, compat="physics")
    n = np.asarray(out["shot"], np.float64)
    var = float(jnp.exp(params["shot"])) * 0.5
    assert abs(n.var() - var) < 5 * var * math.sqrt(2 / n.size)


@pytest.mark.parametrize("compat", ["physics", "starlight"])
def test_read_only(compat):
    out, params, _ = components("read", flat(0.7), compat=compat)
    n = np.asarray(out["read"], np.float64)
    std = float(params["read"]) if compat == "starlight" else math.sqrt(math.exp(float(params["read"])))
    assert abs(n.std() - std) < 5 * std / math.sqrt(2 * n.size)


@pytest.mark.parametrize("compat", ["physics", "starlight"])
def test_uniform_range_and_mean(compat):
    out, params, _ = components("uniform", flat(0.5), compat=compat)
    u = float(noise.scales(params, parse_noiselist("uniform", compat=compat))["uniform"])
    n = np.asarray(out["uniform"], np.float64)
    lo, mean = (0.0, u / 2) if compat == "starlight" else (-u / 2, 0.0)
    assert n.min() >= lo and n.max() < lo + u
    assert abs(n.mean() - mean) < 5 * u / math.sqrt(12 * n.size)
    assert abs(n.var() - u * u / 12) < 5 * (u * u / math.sqrt(180)) / math.sqrt(n.size)


def test_column_noise_constant_along_h_independent_across_w():
    params = {"column": jnp.log(jnp.float32(0.01))}
    out, _, _ = components("row1", flat(0.5, (16, 32, 64, 4)), params=params)
    n = np.asarray(out["column"], np.float64)
    np.testing.assert_array_equal(n, np.broadcast_to(n[:, :1], n.shape))  # constant along H
    cols = n[:, 0]  # [T, W, C]
    assert abs(cols.std() - 0.01) < 5 * 0.01 / math.sqrt(2 * cols.size)
    x, y = cols[:, :-1].ravel(), cols[:, 1:].ravel()
    assert abs(np.corrcoef(x, y)[0, 1]) < 5 / math.sqrt(x.size)  # neighbours uncorrelated
    assert abs(np.corrcoef(cols[..., 0].ravel(), cols[..., 1].ravel())[0, 1]) < 5 / math.sqrt(cols[..., 0].size)


def test_row_noise_constant_along_w():
    params = {"row": jnp.log(jnp.float32(0.01))}
    out, _, _ = components("row", flat(0.5, (16, 64, 32, 4)), params=params)
    n = np.asarray(out["row"], np.float64)
    np.testing.assert_array_equal(n, np.broadcast_to(n[:, :, :1], n.shape))
    rows = n[:, :, 0]
    assert abs(rows.std() - 0.01) < 5 * 0.01 / math.sqrt(2 * rows.size)


def test_rowt_starlight_is_per_frame_and_shared_by_channels():
    out, _, _ = components("rowt", flat(0.5, (2, 16, 8, 64, 4)), compat="starlight")
    n = np.asarray(out["column_t"])
    np.testing.assert_array_equal(n, np.broadcast_to(n[..., :1, :, :1], n.shape))  # along H and C
    assert not np.allclose(n[:, 0], n[:, 1]), "a new draw per frame under frames-as-batch"


def test_rowt_physics_is_shared_by_the_frames_of_a_burst():
    out, params, _ = components("rowt", flat(0.5, (64, 16, 8, 32, 4)))
    n = np.asarray(out["column_t"], np.float64)
    np.testing.assert_array_equal(n, np.broadcast_to(n[:, :1, :1, :, :1], n.shape))  # over T, H, C
    assert not np.allclose(n[0], n[1]), "independent across bursts"
    per_burst = n[:, 0, 0, :, 0]
    sigma = math.exp(float(params["column_t"]))
    assert abs(per_burst.std() - sigma) < 5 * sigma / math.sqrt(2 * per_burst.size)


def _periodic_by_fft(p, coeffs, height, width):
    """The original's |ifft2_ortho(S)| with S on spectral row 0, via an actual FFT."""
    a, b, g = coeffs
    spec = np.zeros(a.shape + (height, width), np.complex128)
    spec[..., 0, 0] = p[0] * a
    spec[..., 0, width // 4] = p[1] * b + 1j * p[2] * g
    spec[..., 0, 3 * width // 4] = p[1] * b - 1j * p[2] * g
    return np.abs(np.fft.ifft2(spec, norm="ortho"))


@pytest.mark.parametrize("width", [64, 66])  # 66: W not divisible by 4, where the abs matters
def test_periodic_starlight_matches_the_fft_definition(width):
    height = 32
    clean = flat(0.5, (3, height, width, 4))
    p = jnp.array([0.5, 0.3, 0.7])
    out, _, _ = components("periodic", clean, compat="starlight", params={"periodic": p})
    keys = dict(zip(noise._KEY_ORDER, jax.random.split(KEY, len(noise._KEY_ORDER))))
    coeffs = np.asarray(jax.random.normal(keys["periodic"], (3, 3, 1, 1, 4)), np.float64)
    coeffs = coeffs[:, :, 0, 0, :]  # (3, T, C): leading dims for the FFT reference
    ref = _periodic_by_fft(np.asarray(p), coeffs, height, width)  # [T, C, H, W]
    np.testing.assert_allclose(np.asarray(out["periodic"]), ref.transpose(0, 2, 3, 1), atol=2e-6)


def test_periodic_starlight_amplitude_scales_with_crop_size():
    p = {"periodic": jnp.array([0.5, 0.5, 0.5])}
    small, _, _ = components("periodic", flat(0.5, (4, 64, 64, 4)), compat="starlight", params=p)
    large, _, _ = components("periodic", flat(0.5, (4, 256, 64, 4)), compat="starlight", params=p)
    # Same key, same draws, same W: only the 1/sqrt(HW) factor differs (a factor 2 here).
    np.testing.assert_allclose(np.asarray(small["periodic"][:, 0]), 2 * np.asarray(large["periodic"][:, 0]),
                               rtol=1e-5)


def test_periodic_physics_period_4_and_amplitude_law():
    p = np.array([0.01, 0.02, 0.03])
    params = {"periodic": jnp.log(jnp.asarray(p, jnp.float32))}
    out, _, _ = components("periodic", flat(0.5, (4096, 4, 16, 2)), params=params)
    n = np.asarray(out["periodic"], np.float64)
    np.testing.assert_allclose(n[:, :, :-4], n[:, :, 4:], atol=1e-6)  # period 4 along W
    np.testing.assert_array_equal(n, np.broadcast_to(n[:, :1], n.shape))  # constant along H
    samples = n[:, 0, :4, :].transpose(1, 0, 2).reshape(4, -1)  # [w, samples]
    # Var P[w] = p0² + 4 p1² cos²(πw/2) + 4 p2² sin²(πw/2); zero mean (no rectifying abs).
    expected = p[0] ** 2 + 4 * np.array([p[1] ** 2, p[2] ** 2, p[1] ** 2, p[2] ** 2])
    se = expected * math.sqrt(2 / samples.shape[1])
    np.testing.assert_array_less(np.abs(samples.var(axis=1) - expected), 5 * se)
    np.testing.assert_array_less(np.abs(samples.mean(axis=1)), 5 * np.sqrt(expected / samples.shape[1]))


def test_periodic_physics_amplitude_is_crop_size_independent():
    params = {"periodic": jnp.log(jnp.array([0.01, 0.02, 0.03]))}
    small, _, _ = components("periodic", flat(0.5, (4, 64, 64, 4)), params=params)
    large, _, _ = components("periodic", flat(0.5, (4, 256, 64, 4)), params=params)
    np.testing.assert_allclose(np.asarray(small["periodic"][:, 0]), np.asarray(large["periodic"][:, 0]),
                               rtol=1e-6)


@pytest.mark.parametrize("token,param", [("fixed1", "fixed_pattern"), ("learnedfixed", "learned_fixed")])
def test_fixed_pattern_is_the_right_crop(token, param):
    fmap = jax.random.uniform(jax.random.key(3), (40, 50, 4))
    cfg = parse_noiselist(token, fixed_shape=(40, 50))
    params = noise.init_params(cfg, **{param: fmap})
    clean = flat(0.5, (3, 16, 32, 4))
    out = noise.sample_components(KEY, params, clean, cfg, fixed_offset=jnp.array([7, 11]))
    name = "fixed" if token == "fixed1" else "learned_fixed"
    np.testing.assert_array_equal(np.asarray(out[name]),
                                  np.broadcast_to(np.asarray(fmap)[7:23, 11:43], (3, 16, 32, 4)))
    # Random offsets come from the key, stay inside the map and are shared by all frames.
    for seed in range(5):
        rand = np.asarray(noise.sample_components(jax.random.key(seed), params, clean, cfg)[name])
        np.testing.assert_array_equal(rand, np.broadcast_to(rand[:1], rand.shape))
        fm = np.asarray(fmap)
        hits = [(i, j) for i in range(40 - 16 + 1) for j in range(50 - 32 + 1)
                if np.array_equal(fm[i:i + 16, j:j + 32], rand[0])]
        assert len(hits) == 1


def test_fixed_pattern_gets_no_gradient_but_learned_fixed_does():
    cfg = parse_noiselist("fixed1_learnedfixed", fixed_shape=(16, 16))
    params = noise.init_params(cfg, fixed_pattern=jnp.ones((16, 16, 4)))
    grads = jax.grad(lambda p: jnp.sum(noise.add_noise(KEY, p, flat(0.5, (2, 16, 16, 4)), cfg) ** 2))(params)
    assert float(jnp.abs(grads["fixed_pattern"]).sum()) == 0.0
    assert float(jnp.abs(grads["learned_fixed"]).sum()) > 0.0


def test_components_sum_to_add_noise_and_keys_are_independent_per_component():
    clean = flat(0.4, (2, 16, 16, 4))
    cfg = parse_noiselist("shot_read_uniform_row1_rowt_periodic")
    params = noise.init_params(cfg)
    parts = noise.sample_components(KEY, params, clean, cfg)
    total = noise.add_noise(KEY, params, clean, cfg)
    np.testing.assert_allclose(np.asarray(total), np.asarray(clean + sum(parts.values())), atol=1e-6)
    # Switching periodic off leaves the other components' draws unchanged.
    cfg2 = parse_noiselist("shot_read_uniform_row1_rowt")
    parts2 = noise.sample_components(KEY, {k: v for k, v in params.items() if k != "periodic"}, clean, cfg2)
    for name, value in parts2.items():
        np.testing.assert_array_equal(np.asarray(value), np.asarray(parts[name]))


def test_starlight_inits_are_the_originals():
    params = noise.init_params(parse_noiselist("shot_read_uniform_row1_rowt_periodic", compat="starlight"))
    expected = dict(shot=0.2, read=0.02, uniform=0.1, column=0.002, column_t=0.002, periodic=[0.5, 0.5, 0.5])
    assert sorted(params) == sorted(expected)
    for name, value in expected.items():
        np.testing.assert_allclose(np.asarray(params[name]), value, rtol=1e-6, err_msg=name)


def test_physics_stores_logs_and_rejects_non_positive_values():
    cfg = parse_noiselist("shot_read")
    params = noise.init_params(cfg)
    assert float(noise.scales(params, cfg)["shot"]) == pytest.approx(noise.PHYSICS_INIT["shot"], rel=1e-6)
    with pytest.raises(ValueError, match="read"):
        noise.stored_value("read", -1.0, cfg)


def test_per_channel_scalars_have_one_value_per_channel_and_each_channel_follows_its_own_law():
    cfg = parse_noiselist("shot_read_uniform_row", channels=3, per_channel=True)
    params = noise.init_params(cfg)
    for name in ("shot", "read", "uniform", "row"):
        assert params[name].shape == (3,), name
    a, b = np.array([4e-3, 1e-3, 2e-3]), np.array([2e-4, 5e-5, 1e-4])
    params = {"shot": jnp.log(jnp.asarray(a, jnp.float32)), "read": jnp.log(jnp.asarray(b, jnp.float32))}
    level = 0.4
    cfg = parse_noiselist("shot_read", channels=3, per_channel=True)
    n = np.asarray(noise.sample_components(KEY, params, flat(level, (8, 32, 32, 3)), cfg)["shot_read"], np.float64)
    for c in range(3):
        var, got = a[c] * level + b[c], n[..., c]
        assert abs(got.var() - var) < 5 * var * math.sqrt(2 / got.size), c
    # Composes with jit and grad: the gradient of the total variance reaches every channel's value.
    grads = jax.grad(lambda p: jnp.mean(noise.add_noise(KEY, p, flat(level, (2, 16, 16, 3)), cfg) ** 2))(params)
    assert grads["shot"].shape == (3,) and np.all(np.asarray(grads["shot"]) != 0)
    with pytest.raises(ValueError, match="per_channel needs compat='physics'"):
        parse_noiselist("shot_read", compat="starlight", per_channel=True)


def test_corr_starts_white_and_a_kernel_correlates_neighbours_at_the_same_variance():
    cfg = parse_noiselist("shot_read_corr", channels=2)
    params = noise.init_params(cfg)
    assert params["corr_kernel"].shape == (noise.CORR_SIZE, noise.CORR_SIZE, 2)
    clean = flat(0.3, (4, 64, 64, 2))
    white_cfg = parse_noiselist("shot_read", channels=2)
    white = {k: v for k, v in params.items() if k != "corr_kernel"}
    np.testing.assert_array_equal(noise.add_noise(KEY, params, clean, cfg),
                                  noise.add_noise(KEY, white, clean, white_cfg))
    # A horizontal pair [1, 1]: lag-1 correlation 1/2 along W, none along H, variance unchanged.
    kernel = np.zeros((noise.CORR_SIZE, noise.CORR_SIZE, 2), np.float32)
    kernel[2, 2:4] = 1.0
    params = {**params, "corr_kernel": jnp.asarray(kernel)}
    n = np.asarray(noise.sample_components(KEY, params, clean, cfg)["shot_read"], np.float64)[:, 2:-2, 2:-2]
    var = float(np.exp(params["shot"])) * 0.3 + float(np.exp(params["read"]))
    assert abs(n.var() - var) < 5 * var * math.sqrt(2 / n.size)
    rho_w = np.mean(n[:, :, 1:] * n[:, :, :-1]) / var
    rho_h = np.mean(n[:, 1:] * n[:, :-1]) / var
    tol = 5 / math.sqrt(n.size)
    assert abs(rho_w - 0.5) < tol and abs(rho_h) < tol
    grads = jax.grad(lambda p: jnp.mean(noise.add_noise(KEY, p, clean, cfg)[:, :, 1:] *
                                        noise.add_noise(KEY, p, clean, cfg)[:, :, :-1]))(params)
    assert float(jnp.abs(grads["corr_kernel"]).max()) > 0
    with pytest.raises(ValueError, match="corr"):
        parse_noiselist("uniform_corr")


def test_tone_starts_as_the_plain_model_and_its_curves_set_level_and_mean_per_intensity():
    cfg = parse_noiselist("shot_read_uniform_tone", channels=2)
    assert cfg.components[-1] == "tone_offset" and cfg.noiselist == "shot_read_uniform_tone"
    params = noise.init_params(cfg)
    assert params["tone_gain"].shape == params["tone_offset"].shape == (noise.TONE_KNOTS, 2)
    plain_cfg = parse_noiselist("shot_read_uniform", channels=2)
    plain = {k: v for k, v in params.items() if not k.startswith("tone")}
    ramp = jnp.broadcast_to(jnp.linspace(0, 1, 64)[None, :, None], (4, 64, 64, 2))
    np.testing.assert_array_equal(noise.add_noise(KEY, params, ramp, cfg), noise.add_noise(KEY, plain, ramp, plain_cfg))

    # Channel 0: gain rising linearly from 1 to 3 (log stored), offset constant 0.01; channel 1 untouched.
    knots = np.linspace(0, 1, noise.TONE_KNOTS)
    gain = np.ones((noise.TONE_KNOTS, 2), np.float32)
    gain[:, 0] = 1 + 2 * knots
    offset = np.zeros((noise.TONE_KNOTS, 2), np.float32)
    offset[:, 0] = 0.01
    params = {**params, "tone_gain": noise.stored_value("tone_gain", gain, cfg),
              "tone_offset": noise.stored_value("tone_offset", offset, cfg)}
    np.testing.assert_allclose(params["tone_offset"][:, 0], 0.01 / noise.UNIT_PARAMS["tone_offset"], rtol=1e-6)
    np.testing.assert_allclose(noise.tone_curve(jnp.asarray(gain), jnp.asarray([[0.0, 0.0], [0.5, 0.5],
                                                                                 [2.0, -1.0]])),
                               [[1, 1], [2, 1], [3, 1]], rtol=1e-6)  # interpolates, clips outside [0, 1]
    a, b, q = (float(np.exp(params[k])) for k in ("shot", "read", "uniform"))
    for level in (0.2, 0.7):
        clean = flat(level, (8, 64, 64, 2))
        n = np.asarray(noise.add_noise(KEY, params, clean, cfg) - clean, np.float64)
        var = a * level + b + q * q / 12
        for c, (g, o) in enumerate(((1 + 2 * level, 0.01), (1.0, 0.0))):
            x = n[..., c]
            assert abs(x.mean() - o) < 5 * g * math.sqrt(var / x.size)
            assert abs(x.var() - g * g * var) < 5 * g * g * var * math.sqrt(2 / x.size)
    parts = noise.sample_components(KEY, params, flat(0.5, (2, 16, 16, 2)), cfg)
    np.testing.assert_allclose(sum(parts.values()), noise.add_noise(KEY, params, flat(0.5, (2, 16, 16, 2)), cfg)
                               - 0.5, atol=1e-6)
    grads = jax.grad(lambda p: jnp.mean(noise.add_noise(KEY, p, ramp, cfg) ** 2))(params)
    assert np.all(np.abs(np.asarray(grads["tone_gain"])) > 0) and np.all(np.abs(np.asarray(grads["tone_offset"])) > 0)
    with pytest.raises(ValueError, match="tone"):
        parse_noiselist("tone", channels=2)
    with pytest.raises(ValueError, match="tone"):
        parse_noiselist("shot_read_tone", compat="starlight")
