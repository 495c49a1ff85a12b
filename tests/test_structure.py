"""Tests for starlight_jax.structure: known answers for white, box-filtered and channel-mixed Gaussian noise.

Shapes are [M, H, W, C] = [8, 64, 64, 3] (32,768 pixels per channel) unless said otherwise; tolerances are a
few standard errors of that sample size, derived in each test.
"""
import numpy as np
import pytest

from starlight_jax import structure

SHAPE = (8, 64, 64, 3)
N_PIX = SHAPE[0] * SHAPE[1] * SHAPE[2]  # per channel


def _white(seed, shape=SHAPE, sigma=0.01):
    return sigma * np.random.default_rng(seed).standard_normal(shape)


def _box(x):
    """Circular 2x2 box sum / 2: per-pixel variance kept, transfer |H|^2 = 4 cos^2(pi fy) cos^2(pi fx)."""
    return (x + np.roll(x, 1, 1) + np.roll(x, 1, 2) + np.roll(np.roll(x, 1, 1), 1, 2)) / 2


def _gauss_kl(r):
    """KL(N(0, r s^2) || N(0, s^2))."""
    return 0.5 * (r - 1 - np.log(r))


# ------------------------------------------------------------------------------------------------------
# Block sums
# ------------------------------------------------------------------------------------------------------
def test_block_variance_ratio_white_and_box_filtered():
    # Block sum of the box field = 1/2 sum of x with weights w(u) w(v), w = (1, 2, 1) at block 2 and
    # (1, 2, 2, 2, 1) at block 4: Var = (sum w^2)^2 / 4 = 9 and 49 pixel variances, ratios 9/4 and 49/16.
    white, box = _white(0), _box(_white(1))
    n_blocks = N_PIX // 4
    se = np.sqrt(2 / n_blocks) * 2.25 * 2  # sample-variance error of the block sums, x2 for their overlap
    assert abs(structure.block_variance_ratio(white, 2).mean() - 1.0) < 4 * np.sqrt(2 / n_blocks)
    np.testing.assert_allclose(structure.block_variance_ratio(box, 2), 2.25, atol=4 * se)
    assert abs(structure.block_variance_ratio(box, 4).mean() - 49 / 16) < 4 * np.sqrt(2 / (N_PIX // 16)) * 3.06 * 2
    d = structure.describe_residual(box, ["R", "G", "B"])
    assert d["xcorr_pairs"] == ["RG", "RB", "GB"] and d["block2_var_ratio"] == pytest.approx(2.25, abs=4 * se)


def test_block_sums_values():
    x = np.arange(2 * 5 * 4 * 1, dtype=np.float64).reshape(2, 5, 4, 1)
    s = structure.block_sums(x, 2)
    assert s.shape == (2, 2, 2, 1)  # the fifth row is dropped
    assert s[0, 0, 0, 0] == 0 + 1 + 4 + 5 and s[1, 1, 1, 0] == x[1, 2:4, 2:4].sum()


def test_block_kld_white_against_white_is_near_its_floor():
    # Two independent histograms of N values over K = 103 bins: E[KL] ~ (K - 1) / N (each side's
    # multinomial noise contributes (K - 1) / 2N); the add-one smoothing only lowers it.
    a, b = _white(2), _white(3)
    for block in (1, 2, 4):
        n = N_PIX // block ** 2
        kl = structure.block_kld(a, b, block)
        assert kl.per_channel.shape == (3,) and np.all(kl.per_channel >= 0)
        assert kl.value < 2 * 102 / n, (block, kl.value)
    assert structure.block_kld(a, a, 2).value == pytest.approx(0.0, abs=1e-12)


@pytest.mark.parametrize("block, r", [(2, 4 / 9), (4, 16 / 49)])
def test_block_kld_sees_spatial_correlation_that_block_1_misses(block, r):
    """Real white, model box-filtered: the same per-pixel marginals, block sums with variance ratio r.

    The KL of the block-sum Gaussians is analytic; the model is wider than the real data, so its bins cover
    the real tails and the histogram estimate is close. Tolerance: the smoothing bias K / N plus 4 standard
    errors of the plug-in mean of log(p/q), whose variance under N(0, r) vs N(0, 1) is (r - 1)^2 / 2.
    """
    real, model = _white(4), _box(_white(5))
    n = N_PIX // block ** 2
    assert structure.block_kld(real, model, 1).value < 2 * 102 / N_PIX  # blind at the pixel scale
    got = structure.block_kld(real, model, block).value
    tol = 103 / n + 4 * np.sqrt((r - 1) ** 2 / 2 / n)
    assert abs(got - _gauss_kl(r)) < tol, (got, _gauss_kl(r), tol)
    assert got > 5 * structure.block_kld(real, _white(6), block).value  # far above the floor


def test_block_kld_lattice_bins_ignore_rounding_to_the_lattice():
    """8-bit residuals (std 1.5 DN): with the lattice step, rounding a continuous model changes nothing at
    block 1 and a continuous model scores near the floor; with fixed bins of 0.15 DN, the lattice real
    data fill one bin in seven and the KL is ~log 7."""
    step = 1 / 255
    real = np.round(_white(7, sigma=1.5 * step) / step) * step
    model = _white(8, sigma=1.5 * step)
    assert structure.lattice_step(real, step) == step and structure.lattice_step(model, step) is None
    rounded = np.round(model / step) * step  # rounding moves no value across a lattice-aligned edge
    assert (structure.block_kld(real, model, 1, step=step).value
            == structure.block_kld(real, rounded, 1, step=step).value)
    for block in (1, 2, 4):
        # Summed, the real lattice values and the continuous ones differ by the real rounding noise only
        # (variance + 1/12 step^2 per pixel, 3.7 %: KL ~ 3e-4).
        assert structure.block_kld(real, model, block, step=step).value < 2 * 102 * block ** 2 / N_PIX + 1e-3
    assert structure.block_kld(real, model, 1).value > 1.0


# ------------------------------------------------------------------------------------------------------
# Power spectrum
# ------------------------------------------------------------------------------------------------------
def _ring_counts(h, w):
    f = np.sqrt(np.fft.fftfreq(h)[:, None] ** 2 + np.fft.fftfreq(w)[None, :] ** 2)
    ring = np.rint(f * min(h, w))
    return np.array([(ring == k).sum() for k in range(1, min(h, w) // 2 + 1)]), ring, f


def test_radial_spectrum_of_white_and_box_filtered_noise():
    m, h, w, _ = SHAPE
    counts, ring, _ = _ring_counts(h, w)
    radii, p = structure.radial_power_spectrum(_white(9, sigma=1.0))
    assert radii[0] == 1 / 64 and radii[-1] == 0.5 and p.shape == (32, 3)
    # |FFT|^2 / HW of white noise is exponential with mean sigma^2; a ring averages count / 2 independent ones.
    se = 1 / np.sqrt(m * counts / 2)
    assert np.all(np.abs(p - 1.0) < 5 * se[:, None])
    # Box filter: the ring mean of the transfer function over the full frequency plane.
    fy, fx = np.meshgrid(np.fft.fftfreq(h), np.fft.fftfreq(w), indexing="ij")
    gain = 4 * np.cos(np.pi * fy) ** 2 * np.cos(np.pi * fx) ** 2
    want = np.array([gain[ring == k].mean() for k in range(1, 33)])
    _, p = structure.radial_power_spectrum(_box(_white(10, sigma=1.0)))
    assert np.all(np.abs(p / want[:, None] - 1.0) < 5 * se[:, None])
    assert want[0] > 3.9 and want[-1] < 0.5  # it is far from flat


def test_radial_spectrum_of_cosines_matches_the_full_plane():
    """Deterministic: a cosine of k cycles puts P = HW/4 at +-k (HW at a Nyquist frequency, its own
    mirror); the ring holds ``count`` frequencies of the full plane. Along y the power sits in rfft
    column 0 (both signs), along x in one interior column standing for two, at Nyquist in the last."""
    h = w = 64
    counts = _ring_counts(h, w)[0]
    y, x = np.meshgrid(np.arange(h), np.arange(w), indexing="ij")
    for field, k, total in ((np.cos(2 * np.pi * 3 * y / h), 3, h * w / 2),
                            (np.cos(2 * np.pi * 3 * x / w), 3, h * w / 2),
                            (np.cos(np.pi * x), 32, h * w)):
        _, p = structure.radial_power_spectrum(field[None, :, :, None])
        want = np.zeros(32)
        want[k - 1] = total / counts[k - 1]
        np.testing.assert_allclose(p[:, 0], want, atol=1e-9)


def test_spectrum_distance_known_answers():
    a = _white(11)
    s = structure.spectrum_distance_db(a, 1.1 * a)
    np.testing.assert_allclose(s.per_channel, 20 * np.log10(1.1), rtol=1e-12)  # 0.83 dB at every radius
    # Independent white draws: per ring, 10 log10 of a ratio of two means of M count / 2 exponentials,
    # ~ N(0, (10 / ln 10)^2 2 / (M count / 2)); its mean absolute value is sqrt(2 / pi) of that std.
    m, h, w, _ = SHAPE
    counts = _ring_counts(h, w)[0]
    expected = np.mean(10 / np.log(10) * np.sqrt(2 / (m * counts / 2)) * np.sqrt(2 / np.pi))
    floor = structure.spectrum_distance_db(a, _white(12)).value
    assert 0.6 * expected < floor < 1.4 * expected, (floor, expected)
    assert structure.spectrum_distance_db(a, _box(_white(13))).value > 5 * floor


# ------------------------------------------------------------------------------------------------------
# Cross-channel correlation
# ------------------------------------------------------------------------------------------------------
def test_cross_channel_corr_of_a_known_mixing_matrix():
    mix = np.array([[1.0, 0.5, 0.0], [0.0, 1.0, 0.5], [0.3, 0.0, 1.0]])
    cov = mix @ mix.T
    want = np.array([cov[i, j] / np.sqrt(cov[i, i] * cov[j, j]) for i, j in [(0, 1), (0, 2), (1, 2)]])
    mixed = _white(14) @ mix.T  # y_c = sum_k M_ck x_k per pixel
    got = structure.cross_channel_corr(mixed)
    np.testing.assert_allclose(got, want, atol=4 * np.max(1 - want ** 2) / np.sqrt(N_PIX))
    white = _white(15)
    assert np.all(np.abs(structure.cross_channel_corr(white)) < 4 / np.sqrt(N_PIX))
    err = structure.cross_channel_error(mixed, white)
    assert err == pytest.approx(np.mean(np.abs(want)), abs=8 / np.sqrt(N_PIX))
    assert structure.channel_pairs(4) == [(0, 1), (0, 2), (0, 3), (1, 2), (1, 3), (2, 3)]
    assert structure.pair_names(["R", "G1", "G2", "B"])[:2] == ["R-G1", "R-G2"]


# ------------------------------------------------------------------------------------------------------
# Noise level function
# ------------------------------------------------------------------------------------------------------
def test_nlf_error_of_a_ten_percent_scale_error():
    rng = np.random.default_rng(16)
    clean = rng.uniform(0, 1, SHAPE)
    std = np.sqrt(0.01 * clean + 1e-4)
    real = std * rng.standard_normal(SHAPE)
    model = 1.1 * std * rng.standard_normal(SHAPE)
    # Per bin the std ratio has relative error ~ sqrt(1 / 2N_b + 1 / 2N_b); the count-weighted mean over
    # every bin and channel ~ 1 / sqrt(N) of all pixels.
    se = 1.1 / np.sqrt(real.size)
    score = structure.nlf_error(real, model, clean)
    assert score.value == pytest.approx(0.10, abs=4 * se)
    assert np.all(np.abs(score.per_channel - 0.10) < 4 * se * np.sqrt(3))
    assert structure.nlf_error(real, 1.1 * real, clean).value == pytest.approx(0.10, abs=1e-12)
    floor = structure.nlf_error(real, std * rng.standard_normal(SHAPE), clean).value
    n_bin = N_PIX / 16
    assert floor < 2 * np.sqrt(2 / (np.pi * n_bin))  # E|N(0, 1 / N_b)| = sqrt(2 / (pi N_b))


def test_nlf_error_skips_noiseless_bins():
    rng = np.random.default_rng(17)
    clean = np.where(rng.uniform(size=SHAPE) < 0.5, 0.3, 1.0)  # two bins; the bright one saturated
    real = np.where(clean < 1, 0.01 * rng.standard_normal(SHAPE), 0.0)
    model = np.where(clean < 1, 0.012 * rng.standard_normal(SHAPE), 0.01)
    assert structure.nlf_error(real, model, clean).value == pytest.approx(0.2, abs=4 * 1.2 / np.sqrt(real.size / 2))


# ------------------------------------------------------------------------------------------------------
# Together
# ------------------------------------------------------------------------------------------------------
def test_structure_metrics_and_log_metrics():
    real, model, clean = _white(18), _box(_white(19)), np.full(SHAPE, 0.5)
    m = structure.structure_metrics(real, model, clean)
    assert set(m) == {*structure.METRIC_NAMES, "per_channel"}
    floor = structure.structure_metrics(real, _white(20), clean)
    for name in ("block2_kld", "block4_kld", "spectrum_db"):
        assert m[name] > 5 * floor[name], name
    assert m["block1_kld"] < 3 * floor["block1_kld"] + 1e-3  # the marginals agree
    logged = structure.log_metrics(clean + real, clean + model, clean[:, :1], step=1 / 255)
    assert set(logged) == {f"test_{k}" for k in structure.METRIC_NAMES}
    assert logged["test_block2_kld"] == pytest.approx(m["block2_kld"])  # the residuals are not on the lattice


def test_tiny_images_give_nan_for_blocks_that_do_not_fit():
    x = _white(21, shape=(2, 3, 3, 1))
    m = structure.structure_metrics(x, _white(22, shape=(2, 3, 3, 1)), np.full(x.shape, 0.5))
    assert np.isnan(m["block4_kld"]) and np.isfinite(m["block2_kld"]) and np.isnan(m["xcorr_err"])


@pytest.mark.parametrize("call, name", [
    (lambda x: structure.block_kld(x, x[..., :2], 2), "model_res"),
    (lambda x: structure.block_kld(x.astype(np.int32), x, 2), "real_res"),
    (lambda x: structure.block_kld(x, x, 0), "block"),
    (lambda x: structure.block_kld(x, x, 32), "block"),
    (lambda x: structure.nlf_error(x, x, x[:1]), "clean"),
    (lambda x: structure.nlf_error(x, x, x, min_count=1), "min_count"),
    (lambda x: structure.spectrum_distance_db(x, x[..., :1, :]), "model_res"),
])
def test_bad_inputs_raise_value_error_naming_argument(call, name):
    x = _white(23, shape=(2, 16, 16, 3))
    with pytest.raises(ValueError, match=f"^{name} "):
        call(x)
