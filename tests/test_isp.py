"""The camera pipeline of the ``isp`` component: each stage against its formula, the whole against the
linear theory of its noise, and the method-of-moments fit against a known pipeline."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import starlight_jax as sj
from starlight_jax import isp, isp_fit, noise

pytestmark = pytest.mark.usefixtures("fast_compiles")  # values, not speed: compiles dominate here


def _values(**over):
    values = isp.used_values(isp.init_params())
    values.update({k: jnp.asarray(v, jnp.float32) for k, v in over.items()})
    return values


def test_tone_curve_ends_monotone_and_inverse():
    v = _values()
    curve = (v["isp_gamma"], v["isp_toe"], v["isp_shoulder"])
    l = jnp.linspace(0.0, 1.0, 1001)
    t = np.asarray(isp.tone(l, *curve))
    assert abs(t[0]) < 1e-6 and abs(t[-1] - 1) < 1e-6
    assert np.all(np.diff(t) > 0)
    np.testing.assert_allclose(np.asarray(isp.inverse_tone(jnp.asarray(t), *curve)), np.asarray(l), atol=2e-5)
    # The slope is the derivative (central differences), and the curve continues linearly outside [0, 1].
    h = 1e-3
    mid = jnp.linspace(0.05, 0.95, 19)
    fd = (isp.tone(mid + h, *curve) - isp.tone(mid - h, *curve)) / (2 * h)
    np.testing.assert_allclose(np.asarray(isp.tone_slope(mid, *curve)), np.asarray(fd), rtol=2e-3)
    below = isp.tone(jnp.float32(-0.1), *curve)
    np.testing.assert_allclose(float(below), -0.1 * float(isp.tone_slope(jnp.float32(0.0), *curve)), rtol=1e-5)


def test_tone_curve_formula():
    gamma, toe, s = 2.4, 0.02, 0.5
    l = np.linspace(0, 1, 11)
    g = ((l + toe) ** (1 / gamma) - toe ** (1 / gamma)) / ((1 + toe) ** (1 / gamma) - toe ** (1 / gamma))
    want = (1 - s) * g + s * (3 * g ** 2 - 2 * g ** 3)
    np.testing.assert_allclose(np.asarray(isp.tone(jnp.asarray(l, jnp.float32), gamma, toe, s)), want, atol=1e-6)


def test_colour_matrix_keeps_grey():
    m = isp.colour_matrix(jnp.asarray([[2.0, 0.1, -0.3], [0.0, 1.0, 0.5], [0.2, 0.2, 0.2]]))
    np.testing.assert_allclose(np.asarray(m).sum(axis=1), 1.0, atol=1e-6)
    # Off-diagonal structure is kept: only each row's sum moves.
    np.testing.assert_allclose(np.asarray(m)[0, 1] - np.asarray(m)[0, 2], 0.4, atol=1e-6)


def test_cfa_mask_is_rggb():
    m = np.asarray(isp.cfa_mask(4, 4))
    assert m.sum(-1).min() == 1 and m.sum(-1).max() == 1
    assert m[0, 0, 0] == 1 and m[0, 1, 1] == 1 and m[1, 0, 1] == 1 and m[1, 1, 2] == 1
    assert m[..., 1].sum() == 8 and m[..., 0].sum() == 4 and m[..., 2].sum() == 4


def test_demosaic_reproduces_smooth_images():
    h = w = 16
    y, x = np.meshgrid(np.arange(h), np.arange(w), indexing="ij")
    # Constant colour: exact everywhere (the reflected border keeps the CFA's parity).
    const = jnp.broadcast_to(jnp.asarray([0.2, 0.5, 0.7], jnp.float32), (h, w, 3))
    out = isp.demosaic(const * isp.cfa_mask(h, w))
    np.testing.assert_allclose(np.asarray(out), np.asarray(const), atol=1e-6)
    # A linear ramp: exact away from the border (bilinear interpolation of a plane).
    ramp = jnp.asarray(np.stack([0.01 * x + 0.1, 0.02 * y + 0.1, 0.01 * (x + y)], -1), jnp.float32)
    out = isp.demosaic(ramp * isp.cfa_mask(h, w))
    np.testing.assert_allclose(np.asarray(out)[2:-2, 2:-2], np.asarray(ramp)[2:-2, 2:-2], atol=1e-5)


def test_gaussian_taps_and_smoothing_variance():
    taps = np.asarray(isp.gaussian_taps(1.5))
    assert abs(taps.sum() - 1) < 1e-6
    x = np.arange(-isp.SMOOTH_RADIUS, isp.SMOOTH_RADIUS + 1)
    np.testing.assert_allclose(np.sum(taps * x ** 2), 1.5 ** 2, rtol=0.02)  # its variance is σ² (truncated)
    # White noise through a luma-only smoothing: Y's variance falls by (Σ taps²)², the chroma's stays.
    key = jax.random.key(0)
    n = jax.random.normal(key, (8, 64, 64, 3))
    out = np.asarray(isp.smooth_luma_chroma(n, 1.0, 1e-3))
    ycc = lambda a: a @ isp._YCBCR.T  # noqa: E731
    factor = np.sum(np.asarray(isp.gaussian_taps(1.0)) ** 2) ** 2
    var_in, var_out = ycc(np.asarray(n))[..., 0].var(), ycc(out)[..., 0].var()
    se = np.sqrt(2 / out[..., 0].size) / factor  # the variance's relative standard error, loosened by the blur
    assert abs(var_out / (var_in * factor) - 1) < 5 * se
    np.testing.assert_allclose(ycc(out)[..., 1:].var(axis=(0, 1, 2)), ycc(np.asarray(n))[..., 1:].var(axis=(0, 1, 2)),
                               rtol=1e-5)


def test_noise_matches_linear_theory_per_cfa_site():
    """With an identity curve, matrix and no smoothing, the pipeline is linear: at an R site, R has the
    raw variance v, G is the mean of 4 G neighbours (v/4) and B of 4 B neighbours (v/4)."""
    v_raw = 1e-4
    values = _values(isp_gamma=1.0, isp_toe=1e3, isp_shoulder=1e-6)  # a huge toe makes G linear
    clean = jnp.full((64, 32, 32, 3), 0.5, jnp.float32)
    out = np.asarray(jax.jit(lambda c, v: isp.isp_noise(jax.random.key(1), c, v, None, v_raw, smooth=False))(clean, values))
    inner = out[:, 2:-2, 2:-2]  # R sites at even (y, x) of the interior
    r_site = inner[:, ::2, ::2]
    want = np.array([1.0, 0.25, 0.25]) * v_raw
    n = r_site[..., 0].size
    np.testing.assert_allclose(r_site.var(axis=(0, 1, 2)), want, rtol=5 * np.sqrt(2 / n) * 2)
    # Cross-channel covariance at an R site is 0 (disjoint raw pixels), within the sampling error.
    cc = np.corrcoef(r_site.reshape(-1, 3).T)
    assert np.all(np.abs(cc[np.triu_indices(3, 1)]) < 5 / np.sqrt(n))


def test_matrix_mixes_channels_as_predicted():
    """A colour matrix M turns per-pixel-independent channel noise into covariance M Σ Mᵀ (at G sites of
    a linear pipeline the three demosaicked values come from disjoint raw pixels)."""
    m = np.array([[1.5, -0.3, -0.2], [-0.2, 1.4, -0.2], [0.1, -0.6, 1.5]], np.float32)
    values = _values(isp_gamma=1.0, isp_toe=1e3, isp_shoulder=1e-6)
    values["isp_matrix"] = jnp.asarray(m)
    v_raw = 1e-4
    clean = jnp.full((64, 32, 32, 3), 0.5, jnp.float32)
    out = np.asarray(jax.jit(lambda c, v: isp.isp_noise(jax.random.key(2), c, v, None, v_raw, smooth=False))(clean, values))
    g_site = out[:, 2:-2:2, 3:-2:2]  # G sites (even y, odd x): R from 2 neighbours, G own, B from 2
    sigma = np.diag([0.5, 1.0, 0.5]) * v_raw
    want = m @ sigma @ m.T
    got = np.cov(g_site.reshape(-1, 3).T)
    n = g_site[..., 0].size
    se = np.sqrt((want ** 2 + np.outer(np.diag(want), np.diag(want))) / n)  # s.e. of a sample covariance
    np.testing.assert_array_less(np.abs(got - want), 5 * se)


def test_isp_component_in_the_generator():
    cfg = sj.parse_noiselist("shot_read_isp", channels=3, per_channel=True)
    assert cfg.components == ("isp",)
    params = noise.init_params(cfg)
    assert params["shot"].shape == (3,) and params["isp_matrix"].shape == (3, 3)
    clean = jax.random.uniform(jax.random.key(0), (2, 16, 16, 3))
    # (jitted: the pipeline's hundreds of small ops take far longer one by one than compiled)
    out = jax.jit(sj.synthesize, static_argnames="noiselist")(jax.random.key(1), clean, params, noiselist=cfg)
    assert out.shape == clean.shape and bool(jnp.all(jnp.isfinite(out)))
    assert float(jnp.std(out - clean)) > 0
    # Gradients reach every ISP parameter.
    grads = jax.jit(jax.grad(lambda p: jnp.sum((noise.add_noise(jax.random.key(1), p, clean, cfg) - clean) ** 2)))(params)
    for k in isp_fit.FIT_KEYS:
        assert float(jnp.sum(jnp.abs(grads[k]))) > 0, k


def test_isp_config_errors():
    with pytest.raises(ValueError, match="3 channels"):
        sj.parse_noiselist("shot_read_isp", channels=4)
    with pytest.raises(ValueError, match="shot"):
        sj.parse_noiselist("uniform_isp", channels=3)
    with pytest.raises(ValueError, match="one of them"):
        sj.parse_noiselist("shot_read_corr_isp", channels=3)
    with pytest.raises(ValueError, match="physics"):
        sj.parse_noiselist("shot_read_isp", compat="starlight", channels=3)


def test_moments_of_white_noise():
    r = jax.random.normal(jax.random.key(0), (16, 64, 64, 3)) * 0.1
    bins = jnp.asarray(isp_fit.intensity_bins(jax.random.uniform(jax.random.key(1), r.shape)))
    var, count, corr = jax.jit(isp_fit.moments)(r, bins)
    assert int(count.sum()) == r.size
    per_bin = r.size / 3 / isp_fit.N_BINS
    np.testing.assert_allclose(np.asarray(var), 0.01, rtol=5 * np.sqrt(2 / per_bin))
    np.testing.assert_allclose(np.asarray(corr[0]), np.eye(3), atol=5 / np.sqrt(r.size / 3))
    assert np.abs(np.asarray(corr[1:])).max() < 5 / np.sqrt(r.size / 3)


def test_fit_recovers_a_known_pipeline():
    """Data made by the pipeline at known values: the moment fit, started at the initial values, brings the
    moment loss near its floor and the raw level and smoothing back near the truth."""
    cfg = sj.parse_noiselist("shot_read_isp", channels=3)
    truth = {"shot": 4e-3, "read": 4e-5, "isp_gamma": 2.2, "isp_toe": 0.01, "isp_shoulder": 0.3,
             "isp_luma_sigma": 0.8, "isp_chroma_sigma": 2.0}
    params = {**noise.init_params(cfg), **{k: noise.stored_value(k, v, cfg) for k, v in truth.items()}}
    yy, xx = np.meshgrid(np.linspace(0, 1, 64), np.linspace(0, 1, 64), indexing="ij")
    base = np.stack([xx, 0.5 * (xx + yy), yy], -1).astype(np.float32)
    clean = jnp.asarray(np.stack([np.roll(base, 8 * i, axis=1) for i in range(16)]))
    noisy = jax.jit(lambda p, c: noise.add_noise(jax.random.key(5), p, c, cfg))(params, clean)
    fit = isp_fit.fit_isp(cfg, noisy, clean, steps=150, batch=4, lr=0.05, seed=1, tile=32)
    assert fit.loss < 0.25 * fit.initial_loss
    np.testing.assert_allclose(fit.values["isp_chroma_sigma"], 2.0, rtol=0.25)


def test_tone_init_accounts_for_the_pipelines_own_mean():
    """A concave tone curve gives T(l + n) − T(l) a negative mean; data made by that very pipeline need no
    tone offset, so the init's offset must be ~0, not the data's (negative) mean."""
    from starlight_jax.data_init import tone_init

    cfg = sj.parse_noiselist("shot_read_isp_tone", channels=3)
    plain = sj.parse_noiselist("shot_read_isp", channels=3)
    values = {"shot": 2e-2, "read": 1e-4, "isp_gamma": 2.4}
    params = {**noise.init_params(plain), **{k: noise.stored_value(k, v, plain) for k, v in values.items()}}
    clean = jax.random.uniform(jax.random.key(0), (32, 64, 64, 3), minval=0.05, maxval=0.95)
    noisy = jax.jit(lambda p, c: noise.add_noise(jax.random.key(1), p, c, plain))(params, clean)
    data_mean = float(jnp.mean(noisy - clean))
    assert data_mean < -1e-3  # the pipeline's own bias, many standard errors from 0
    out = tone_init(cfg, values, np.asarray(noisy), np.asarray(clean))
    # Per knot: the offset's error is about the residual's std / sqrt(pixels per knot).
    se = float(jnp.std(noisy - clean)) / np.sqrt(clean.size / 3 / 16)
    assert np.abs(out["tone_offset"][1:-1]).max() < 6 * se < abs(data_mean)
    np.testing.assert_allclose(out["tone_gain"][1:-1], 1.0, atol=0.1)


def test_fit_rate_decays_to_its_final_fraction(monkeypatch):
    """The moment fit's Adam rate is a cosine decay from ``lr`` to ``final_lr * lr`` (a constant rate left
    the PolyU fit wherever its last noisy steps put it, isp_fit.FINAL_LR); ``final_lr=1`` keeps it constant.
    The fit stops once its optimiser is built (compiling its steps would take half a minute)."""
    rates = []

    class Built(Exception):
        pass

    def adam(rate):
        rates.append(rate)
        raise Built

    monkeypatch.setattr(isp_fit.optax, "adam", adam)
    cfg = sj.parse_noiselist("shot_read_isp", channels=3)
    clean = jnp.full((1, 32, 32, 3), 0.5)
    for final in (0.05, 1.0):
        with pytest.raises(Built):
            isp_fit.fit_isp(cfg, clean, clean, steps=2, batch=1, lr=0.05, tile=32, final_lr=final)
    decayed, constant = rates
    np.testing.assert_allclose([decayed(0), decayed(1), decayed(2)], [0.05, 0.05 * (0.05 + 0.95 / 2), 0.0025],
                               rtol=1e-6)
    assert constant == 0.05


def test_tone_init_leaves_knots_where_the_plain_model_has_no_noise_at_their_neighbours_gain(monkeypatch):
    """Where the plain model makes (almost) no noise but the data have some (the white end under a
    camera's shoulder), sqrt(Var[r] / Var[n]) is noise over nothing: PolyU got a gain of 6404 there; where
    the data's fitted variance is nearly nothing (PolyU's black end), a gain of 0.01. Such knots take their
    neighbours' gain, as unmeasured knots do, and every gain lies in [1/MAX_TONE_GAIN, MAX_TONE_GAIN]."""
    from starlight_jax import data_init

    sigma = 0.01
    plain_noise = lambda key, params, clean, cfg: clean + sigma * jnp.where(  # noqa: E731
        clean < 0.85, 1.0, 1e-4) * jax.random.normal(key, clean.shape)
    monkeypatch.setattr(data_init.noise_lib, "add_noise", plain_noise)
    clean = np.asarray(jax.random.uniform(jax.random.key(7), (16, 64, 64, 3)))  # not tone_init's key(0)
    quiet = np.where(clean < 0.06, 1e-2, 1.0)  # data with 1 % of the noise below 0.06: knot 0's support
    noisy = clean + sigma * quiet * np.asarray(jax.random.normal(jax.random.key(1), clean.shape))
    out = data_init.tone_init(sj.parse_noiselist("shot_read_isp_tone", channels=3), {}, noisy, clean)
    gain = out["tone_gain"]
    assert 1 / data_init.MAX_TONE_GAIN <= gain.min() and gain.max() <= data_init.MAX_TONE_GAIN
    # Knots 2..11 (knot k sits at k / 15) see the same noise in both: measured, gain ~1 (error ~1 %).
    np.testing.assert_allclose(gain[2:12], 1.0, atol=0.05)
    np.testing.assert_array_equal(gain[0], gain[1])  # knot 0 (1 % of the model's std) holds knot 1's
    # Knot 13 (0.867) straddles the edge and is still measured (its gain ~1.8 < 4); 14 and 15 (0.93, 1.0),
    # where the model has 1e-4 of the data's std, hold knot 13's gain.
    assert 1.2 < gain[13].min() and gain[13].max() < data_init.MAX_TONE_GAIN
    np.testing.assert_array_equal(gain[14:], np.broadcast_to(gain[13], (2, 3)))
