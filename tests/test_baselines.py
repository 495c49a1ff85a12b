"""Tests for starlight_jax.baselines: parameter recovery within sampling error, sampling contract."""
import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from starlight_jax import baselines


def test_fit_gaussian_recovers_sigma_per_channel():
    sigma = np.array([0.01, 0.02, 0.05])
    rng = np.random.default_rng(0)
    clean = rng.uniform(0.2, 0.8, (4, 32, 32, 3))
    noisy = clean + sigma * rng.standard_normal(clean.shape)
    fit = baselines.fit_gaussian(noisy, clean)
    assert fit.sigma.shape == (3,) and fit.sigma.dtype == jnp.float32
    n = clean.size // 3
    se = sigma / np.sqrt(2 * n)  # standard error of the ML sigma
    assert np.all(np.abs(np.asarray(fit.sigma) - sigma) < 3 * se)


def _heteroscedastic(rng, a, b, shape):
    clean = rng.uniform(0, 1, shape)
    return clean + np.sqrt(a * clean + b) * rng.standard_normal(shape), clean


def test_fit_poisson_gaussian_recovers_a_b():
    a, b = np.array([0.01, 0.002]), np.array([1e-4, 4e-4])
    n_bins = 16
    rng = np.random.default_rng(1)
    noisy, clean = _heteroscedastic(rng, a, b, (4, 64, 64, 2))
    fit = baselines.fit_poisson_gaussian(noisy, clean, n_bins=n_bins)
    # WLS standard errors at the true parameters: bin variance has variance 2 v^2 / (N - 1).
    n_per_bin = clean.size / 2 / n_bins
    x = (np.arange(n_bins) + 0.5) / n_bins
    for c in range(2):
        w = (n_per_bin - 1) / (2 * (a[c] * x + b[c]) ** 2)
        design = np.stack([x, np.ones_like(x)], axis=1)
        cov = np.linalg.inv(design.T @ (w[:, None] * design))
        se_a, se_b = np.sqrt(np.diag(cov))
        assert abs(float(fit.a[c]) - a[c]) < 4 * se_a
        assert abs(float(fit.b[c]) - b[c]) < 4 * se_b
    assert float(fit.a[0]) > 3 * float(fit.a[1])  # the two channels are told apart


def test_fit_poisson_gaussian_non_negative_constraint():
    n_bins = 8
    rng = np.random.default_rng(2)
    clean = rng.uniform(0, 1, (2, 64, 64, 2))
    # Channel 0: variance falls with intensity (a < 0 unconstrained).
    # Channel 1: variance 0.01 x - 0.001 where positive (b < 0 unconstrained).
    var = np.stack([0.02 - 0.015 * clean[..., 0], np.maximum(0.01 * clean[..., 1] - 0.001, 1e-8)], -1)
    noisy = clean + np.sqrt(var) * rng.standard_normal(clean.shape)
    fit = baselines.fit_poisson_gaussian(noisy, clean, n_bins=n_bins)
    # The exact constrained optima, from the true per-bin variances: on the face a = 0 the
    # reweighted fit has equal weights, so b = mean_k v_k; on b = 0 the weights are
    # proportional to 1 / x_k^2, so a = mean_k v_k / x_k. (Clamping the unconstrained
    # solution would give b ~ 0.02 and a ~ 0.011 instead.)
    bins = np.minimum((clean * n_bins).astype(int), n_bins - 1)
    v = np.array([[var[..., c][bins[..., c] == k].mean() for c in range(2)] for k in range(n_bins)])
    x = np.array([[clean[..., c][bins[..., c] == k].mean() for c in range(2)] for k in range(n_bins)])
    # Each bin variance has relative standard error sqrt(2 / 1023) ~ 4.4%; 5 SE of the mean.
    rel_se = np.sqrt(2 / (clean.size / 2 / n_bins - 1)) / np.sqrt(n_bins)
    assert float(fit.a[0]) == 0.0
    assert float(fit.b[0]) == pytest.approx(v[:, 0].mean(), rel=5 * rel_se)
    assert float(fit.b[1]) == 0.0
    assert float(fit.a[1]) == pytest.approx(np.mean(v[:, 1] / x[:, 1]), rel=5 * rel_se)


@pytest.mark.parametrize("model", [
    baselines.GaussianBaseline(jnp.array([0.05, 0.1, 0.2])),
    baselines.PoissonGaussianBaseline(jnp.array([0.02, 0.0, 0.05]), jnp.array([1e-4, 0.01, 0.0])),
    baselines.BinnedGaussianBaseline(jnp.linspace(-0.01, 0.01, 12).reshape(4, 3),
                                     jnp.linspace(0.01, 0.1, 12).reshape(4, 3)),
])
def test_sample_shape_range_and_jit(model):
    key = jax.random.PRNGKey(0)
    clean = jax.random.uniform(jax.random.PRNGKey(1), (2, 5, 16, 16, 3))
    eager = model.sample(key, clean)
    assert eager.shape == clean.shape and eager.dtype == clean.dtype
    assert float(eager.min()) >= 0.0 and float(eager.max()) <= 1.0
    assert not np.allclose(eager, clean)
    np.testing.assert_allclose(jax.jit(model.sample)(key, clean), eager, rtol=1e-6, atol=1e-7)
    # The models are pytrees, so they can also be traced arguments.
    as_arg = jax.jit(lambda m, k, x: m.sample(k, x))(model, key, clean)
    np.testing.assert_allclose(as_arg, eager, rtol=1e-6, atol=1e-7)
    assert not np.allclose(model.sample(jax.random.PRNGKey(2), clean), eager)


def test_sample_statistics_match_parameters():
    clean = jnp.full((64, 64, 2), 0.5)
    n = clean.size // 2
    gauss = baselines.GaussianBaseline(jnp.array([0.01, 0.03]))
    res = np.asarray(gauss.sample(jax.random.PRNGKey(3), clean)) - 0.5
    np.testing.assert_allclose(res.std(axis=(0, 1)), [0.01, 0.03], rtol=4 / np.sqrt(2 * n))
    pg = baselines.PoissonGaussianBaseline(jnp.array([0.002, 0.0]), jnp.array([0.0, 4e-4]))
    res = np.asarray(pg.sample(jax.random.PRNGKey(4), clean)) - 0.5
    np.testing.assert_allclose(res.var(axis=(0, 1)), [0.001, 4e-4], rtol=4 * np.sqrt(2 / n))


def test_to_dict_json_round_trip():
    rng = np.random.default_rng(5)
    noisy, clean = _heteroscedastic(rng, 0.01, 1e-4, (1, 32, 32, 2))
    fits = ((baselines.fit_gaussian(noisy, clean), baselines.GaussianBaseline),
            (baselines.fit_poisson_gaussian(noisy, clean, n_bins=4), baselines.PoissonGaussianBaseline),
            (baselines.fit_binned_gaussian(noisy, clean, n_bins=4), baselines.BinnedGaussianBaseline))
    for fit, cls in fits:
        d = json.loads(json.dumps(fit.to_dict()))
        back = cls.from_dict(d)
        for x, y in zip(back, fit):
            np.testing.assert_array_equal(x, y)
    assert baselines.fit_gaussian(noisy, clean).to_dict()["model"] == "gaussian"


@pytest.mark.parametrize("call, name", [
    (lambda x: baselines.fit_gaussian(x.astype(np.int32), x), "noisy"),
    (lambda x: baselines.fit_gaussian(x, x[..., :1]), "noisy"),
    (lambda x: baselines.fit_poisson_gaussian(x, x, n_bins=0), "n_bins"),
    (lambda x: baselines.fit_poisson_gaussian(x, x, min_count=1), "min_count"),
    (lambda x: baselines.fit_poisson_gaussian(x, np.full_like(x, 0.5)), "clean"),
    (lambda x: baselines.GaussianBaseline(jnp.ones(3)).sample(jax.random.PRNGKey(0), x), "clean"),
    (lambda x: baselines.fit_binned_gaussian(x, x, n_bins=0), "n_bins"),
    (lambda x: baselines.fit_binned_gaussian(x, x, min_count=1), "min_count"),
    (lambda x: baselines.fit_binned_gaussian(x, np.full_like(x, 2.0)), "clean"),
    (lambda x: baselines.BinnedGaussianBaseline(jnp.ones((4, 3)), jnp.ones((4, 3))).sample(
        jax.random.PRNGKey(0), x), "clean"),
    (lambda x: baselines.PoissonGaussianBaseline(jnp.ones(2), jnp.ones(2)).sample(
        jax.random.PRNGKey(0), x.astype(np.int32)), "clean"),
])
def test_bad_inputs_raise_value_error_naming_argument(call, name):
    x = np.random.default_rng(6).uniform(0, 1, (1, 16, 16, 2))
    with pytest.raises(ValueError, match=f"^{name} "):
        call(x)


# ------------------------------------------------------------------------------------------------------
# Binned Gaussian
# ------------------------------------------------------------------------------------------------------
def _binned_truth(x):
    """Residual mean and std per channel as functions of the clean value (both linear in x)."""
    return (np.stack([0.01 * (x[..., 0] - 0.5), -0.004 * x[..., 1]], -1),
            np.stack([0.01 + 0.02 * x[..., 0], 0.03 - 0.02 * x[..., 1]], -1))


def test_fit_binned_gaussian_recovers_bin_mean_and_std():
    n_bins = 16
    rng = np.random.default_rng(7)
    clean = rng.uniform(0, 1, (4, 64, 64, 2))
    mu, sd = _binned_truth(clean)
    noisy = clean + mu + sd * rng.standard_normal(clean.shape)
    fit = baselines.fit_binned_gaussian(noisy, clean, n_bins=n_bins)
    assert fit.mu.shape == fit.sigma.shape == (n_bins, 2) and fit.sigma.dtype == jnp.float32
    # Linear laws: the bin averages are the values at the centres (the spread of mu(x) inside a bin
    # adds (0.01 / 16)^2 / 12 to the variance: 4e-4 of the smallest std, far below its standard error).
    centres = (np.arange(n_bins) + 0.5) / n_bins
    mu_c, sd_c = _binned_truth(np.stack([centres, centres], -1))
    n_b = clean.size / 2 / n_bins
    assert np.all(np.abs(np.asarray(fit.mu) - mu_c) < 4 * sd_c / np.sqrt(n_b))
    assert np.all(np.abs(np.asarray(fit.sigma) - sd_c) < 4 * sd_c / np.sqrt(2 * n_b))


def test_binned_gaussian_interpolates_between_bin_centres():
    mu = jnp.array([[0.0], [0.01], [0.03], [0.03]])
    sigma = jnp.array([[0.01], [0.02], [0.04], [0.08]])
    model = baselines.BinnedGaussianBaseline(mu, sigma)
    # Centres at 1/8, 3/8, 5/8, 7/8; constant outside.
    x = jnp.array([0.0, 0.125, 0.25, 0.5, 0.8125, 1.0]).reshape(1, 6, 1, 1)
    m, s = model.mean_std(x)
    np.testing.assert_allclose(np.ravel(m), [0.0, 0.0, 0.005, 0.02, 0.03, 0.03], atol=1e-7)
    np.testing.assert_allclose(np.ravel(s), [0.01, 0.01, 0.015, 0.03, 0.07, 0.08], atol=1e-7)
    # Sampled on a flat image at 0.5: mean 0.02, std 0.03.
    clean = jnp.full((128, 128, 1), 0.5)
    res = np.asarray(model.sample(jax.random.PRNGKey(8), clean)) - 0.5
    n = res.size
    assert abs(res.mean() - 0.02) < 4 * 0.03 / np.sqrt(n)
    assert abs(res.std() - 0.03) < 4 * 0.03 / np.sqrt(2 * n)


def test_fit_binned_gaussian_fills_sparse_bins_from_neighbours():
    n_bins, min_count = 8, 16
    rng = np.random.default_rng(9)
    clean = rng.uniform(0, 0.5, (2, 64, 64, 1))  # bins 4..7 empty
    clean = np.where((clean >= 0.25) & (clean < 0.375), 0.1, clean)  # bin 2 empty too
    clean[0, 0, :10, 0] = 0.3  # bin 2 gets 10 pixels: below min_count
    mu, sd = _binned_truth(np.concatenate([clean, clean], -1))
    noisy = clean + mu[..., :1] + sd[..., :1] * rng.standard_normal(clean.shape)
    fit = baselines.fit_binned_gaussian(noisy, clean, n_bins=n_bins, min_count=min_count)
    m, s = np.asarray(fit.mu)[:, 0], np.asarray(fit.sigma)[:, 0]
    assert m[2] == pytest.approx((m[1] + m[3]) / 2, abs=1e-7) and s[2] == pytest.approx((s[1] + s[3]) / 2, rel=1e-6)
    np.testing.assert_array_equal(m[4:], m[3])
    np.testing.assert_array_equal(s[4:], s[3])
    with pytest.raises(ValueError, match="^clean must put at least"):
        baselines.fit_binned_gaussian(noisy[:, :1, :4], clean[:, :1, :4], n_bins=n_bins, min_count=min_count)
