"""Tests of the embedded synthetic dataset: offline scenes, record format, determinism, noise statistics."""

import dataclasses
import math
import pathlib
import socket

import numpy as np
import pytest

from starlight_jax.data import SensorModel, load_dataset
from starlight_jax.data import synthetic as syn

# The files behind each scene inside the scikit-image wheel.
_SCENE_FILES = {"astronaut": "astronaut.png", "coffee": "coffee.png", "chelsea": "chelsea.png",
                "rocket": "rocket.jpg", "immunohistochemistry": "ihc.png", "motorcycle": "motorcycle_left.png",
                "camera": "camera.png", "brick": "brick.png", "grass": "grass.png", "gravel": "gravel.png",
                "moon": "moon.png"}


@pytest.fixture(scope="module")
def small():
    """128x128 frames, 16-frame bursts, one burst per scene; a 32 DN pedestal keeps dark pixels off the clip
    at 0, so the variance law holds in every intensity bin."""
    return load_dataset("synthetic", frame_size=(128, 128), bursts_per_scene=1, seed=7,
                        sensor=SensorModel(pedestal_dn=32.0))


def test_scenes_load_offline(monkeypatch):
    import skimage.data

    data_dir = pathlib.Path(skimage.data.__file__).parent
    assert set(_SCENE_FILES) == set(syn.SCENES)
    for f in _SCENE_FILES.values():
        assert (data_dir / f).is_file(), f"{f} is not shipped in the scikit-image wheel"

    def no_network(*args, **kwargs):
        raise AssertionError("a scene loader tried to use the network")

    monkeypatch.setattr(socket.socket, "connect", no_network)
    for name in syn.SCENES:
        img = syn.clean_scene(name, (32, 48), exposure=0.5)
        assert img.shape == (32, 48, 4) and img.dtype == np.float32
        assert img.min() >= 0.0 and img.max() == pytest.approx(0.5, rel=1e-6)


def test_record_format_and_splits(small):
    ds = small
    assert ds.channels == 4 and ds.channel_names == ("R", "G1", "G2", "B") and ds.frame_shape == (128, 128)
    assert ds.fixed_pattern.shape == (128, 128, 4) and ds.fixed_pattern.dtype == np.float32
    assert len(ds.train) == 9 and len(ds.test) == 2
    assert all(n.split("/")[0] in syn.TEST_SCENES for n in ds.test.names)
    assert not set(ds.train.names) & set(ds.test.names)
    rec = ds.test[0]
    for k in ("clean", "noisy"):
        assert rec[k].shape == (16, 128, 128, 4) and rec[k].dtype == np.float32
        assert 0.0 <= rec[k].min() and rec[k].max() <= 1.0
    assert np.all(rec["clean"] == rec["clean"][0])  # one clean image for the whole burst
    assert rec["clean"].max() == pytest.approx(0.55, rel=1e-6)
    step = ds.info["quantization_step"]  # integer DN / D: every noisy value is a multiple of the step
    assert step == pytest.approx(float(np.ravel(ds.truth["uniform"])[0]))
    np.testing.assert_allclose(rec["noisy"] / step, np.round(rec["noisy"] / step), atol=1e-3)


def test_deterministic_by_seed(small):
    opts = dict(frame_size=(128, 128), bursts_per_scene=1, sensor=SensorModel(pedestal_dn=32.0))  # as `small`
    again = load_dataset("synthetic", seed=7, **opts)
    other = load_dataset("synthetic", seed=8, **opts)
    a = small.train.read(3, 0, 2)["noisy"]
    np.testing.assert_array_equal(a, again.train.read(3, 0, 2)["noisy"])
    assert np.mean(a != other.train.read(3, 0, 2)["noisy"]) > 0.5
    np.testing.assert_array_equal(small.fixed_pattern, again.fixed_pattern)
    assert not np.array_equal(small.fixed_pattern, other.fixed_pattern)
    cached = load_dataset("synthetic", seed=7, cache=True, **opts)
    for _ in range(2):  # generated, then served from the cache: identical to the uncached dataset
        np.testing.assert_array_equal(cached.train.read(3, 0, 2)["noisy"], a)
    # A window equals the same frames of the whole burst; frames differ from each other.
    np.testing.assert_array_equal(small.train.read(3, 1, 1)["noisy"][0], a[1])
    assert np.mean(a[0] != a[1]) > 0.5


def test_read_noise_options():
    """ELD's two read-noise fits: the truth holds each one's variance, and dark frames show its shape (the
    Tukey-lambda data have heavy tails: excess kurtosis ~1.4, the Gaussian ones ~0; SE sqrt(24/n) = 0.02)."""
    tukey = syn.SensorModel.eld_sony_a7s2(1.0, read_noise="tukey")
    gauss = syn.SensorModel.eld_sony_a7s2(1.0)
    assert gauss == syn.SensorModel()
    assert tukey.read_scale_dn == pytest.approx(1.7607, rel=1e-4)
    cols = np.zeros((128, 4))
    d = gauss.dn_per_unit
    t = syn.ground_truth(tukey, cols, (128, 128))
    np.testing.assert_allclose(t["read"], (1.7607 * 2.12482) ** 2 / d**2, rtol=1e-3)  # sigma_TL * std(TL)
    no_structure = dict(row_std_dn=0.0, periodic_dn=0.0, column_fpn_dn=0.0)
    kurtosis = {}
    for name, sensor in (("gaussian", gauss), ("tukey", tukey)):
        sensor = dataclasses.replace(sensor, **no_structure)
        dn = np.concatenate([syn.simulate_frame_dn(np.random.default_rng(i), np.zeros((128, 128, 4)), sensor, cols)
                             for i in range(4)]).astype(np.float64).ravel()
        z = dn - dn.mean()
        np.testing.assert_allclose(z.var(), sensor.read_scale_dn ** 2 * (2.12482 ** 2 if name == "tukey" else 1)
                                   + 1 / 12, rtol=4 * np.sqrt(2 / z.size) + 0.01)  # + rounding, 1 DN steps
        kurtosis[name] = np.mean(z**4) / z.var() ** 2 - 3
    assert abs(kurtosis["gaussian"]) < 0.1
    assert kurtosis["tukey"] > 0.8
    with pytest.raises(ValueError, match="read_noise"):
        syn.SensorModel(read_noise="laplace")


def test_tukey_variance_matches_scipy():
    from scipy import stats

    for lam in (-0.2, -0.0857, 0.0, 0.14, 1.0):
        assert syn.tukey_lambda_variance(lam) == pytest.approx(float(stats.tukeylambda.var(lam)), rel=1e-6)


def test_truth_in_learned_terms(small):
    t, s = small.truth, syn.SensorModel()
    d = s.dn_per_unit
    assert d == pytest.approx((16383 - 512) / 100)
    np.testing.assert_allclose(t["shot"], 1.0 / d)
    np.testing.assert_allclose(t["uniform"], 1.0 / d)
    np.testing.assert_allclose(t["read"], 3.3812 ** 2 / d**2, rtol=1e-4)  # ELD's Gaussian sigma_G at K = 1
    np.testing.assert_allclose(t["row"], 0.55339 / d, rtol=1e-4)
    np.testing.assert_allclose(t["variance_law_b"], t["read"] + t["uniform"] ** 2 / 12 + t["row"] ** 2
                               + t["periodic"] ** 2)
    assert np.all(t["column"] == 0) and np.all(t["column_t"] == 0)
    np.testing.assert_allclose(t["periodic"], 0.5 / d)
    np.testing.assert_allclose(t["periodic_p"], np.tile([0, 0.25 / d, 0.25 / d], (4, 1)))
    assert t["fixed_pattern"] is small.fixed_pattern


def _residual(ds, index=0):
    rec = ds.train[index]  # astronaut: clean values spread over [0, 0.55]
    return rec["clean"], rec["noisy"] - rec["clean"] - ds.fixed_pattern


def test_variance_follows_shot_read_law(small):
    """Var[noisy | clean = x] = a x + b_total per intensity bin, within 4.5 standard errors.

    Row and periodic noise correlate pixels within one frame, so the standard error of each bin's variance
    comes from the spread of the 16 per-frame estimates (frames are independent).
    """
    clean, res = _residual(small)
    a, b = small.truth["shot"][0], small.truth["variance_law_b"][0]
    x, r = clean.reshape(16, -1), res.reshape(16, -1)
    edges = np.linspace(0.0, 0.5, 11)
    checked = 0
    for lo, hi in zip(edges[:-1], edges[1:]):
        m = (x[0] >= lo) & (x[0] < hi)
        if m.sum() < 2000:
            continue
        per_frame = r[:, m].var(axis=1)
        se = per_frame.std(ddof=1) / math.sqrt(len(per_frame))
        pred = a * x[0, m].mean() + b
        assert se < 0.03 * pred, "the bin is too small to detect a 10% error in the law"
        assert abs(per_frame.mean() - pred) < 4.5 * se, (lo, hi, per_frame.mean(), pred, se)
        checked += 1
    assert checked >= 6
    assert abs(r.mean()) < 5 * r.std() / math.sqrt(16 * 128)  # zero mean (<= one row draw per frame row)


def test_column_fixed_pattern_mean_equals_map(small):
    _, res = _residual(small, index=6)
    col = res.mean(axis=1)  # [T, W, C]: mean over rows of each frame
    fp = small.fixed_pattern
    np.testing.assert_array_equal(fp, np.broadcast_to(fp[:1], fp.shape))  # constant along H
    se = col.std(axis=0, ddof=1) / math.sqrt(col.shape[0])  # frames are independent
    z = np.abs(col.mean(axis=0)) / se
    assert np.mean(z < 4.5) >= 0.99 and z.max() < 8, z.max()
    # The map's column structure has the advertised std (2W sensor columns, 2 channel pairs share them).
    fpn = fp[0] - fp[0].mean(axis=0)
    assert np.std(fpn[:, 0]) == pytest.approx(small.truth["column_fpn"][0], rel=4 / math.sqrt(2 * 128))
    # Removing the map matters: without it the column means are far off.
    assert np.abs((res + fp).mean(axis=(0, 1))).mean() > 20 * se.mean()


def test_row_noise_std(small):
    clean, res = _residual(small, index=6)
    t = small.truth
    row_means = res.mean(axis=2)  # [T, H, C]: per frame, packed row, channel
    # Per-pixel noise averaged over W; the period-4 pattern averages to exactly 0 over 128 columns.
    var_pix = t["shot"][0] * clean[..., 0].mean() + t["read_with_quantisation"][0]
    expect = t["row"][0] ** 2 + var_pix / res.shape[2]
    n = row_means[..., 0].size  # channel 0 only: channels 0/1 share the row value
    got = row_means[..., 0].var()
    assert got == pytest.approx(expect, rel=4 * math.sqrt(2 / n) + 0.05)
    # R and G1 sit on the same sensor rows: their row means correlate; R and B do not.
    rg = np.corrcoef(row_means[..., 0].ravel(), row_means[..., 1].ravel())[0, 1]
    rb = np.corrcoef(row_means[..., 0].ravel(), row_means[..., 3].ravel())[0, 1]
    assert rg > 0.3 and abs(rb) < 4 / math.sqrt(n)


def test_bad_config():
    with pytest.raises(ValueError, match="test_scenes"):
        load_dataset("synthetic", test_scenes=("lena",))
    with pytest.raises(ValueError, match="exposure"):
        load_dataset("synthetic", exposure=0.0)
    with pytest.raises(ValueError, match="calibrated range"):
        syn.SensorModel.eld_sony_a7s2(50.0)
    with pytest.raises(ValueError, match="no data_dir"):
        load_dataset("synthetic", data_dir="/tmp")
    with pytest.raises(ValueError, match="unknown dataset"):
        load_dataset("imagenet")


def test_periodic_amplitude(small):
    """Projecting column means on cos/sin(pi w / 2) recovers A: E[u^2] = A^2 (+ a tiny pixel-noise term)."""
    _, res = _residual(small, index=6)
    col = res.mean(axis=1)  # [T, W, C]; row noise and the fixed pattern are gone or cancel in the projection
    w = np.arange(col.shape[1])
    u = 2 * np.einsum("twc,w->tc", col, np.cos(np.pi * w / 2)) / len(w)
    v = 2 * np.einsum("twc,w->tc", col, np.sin(np.pi * w / 2)) / len(w)
    est = np.concatenate([u.ravel(), v.ravel()]) ** 2
    a2 = small.truth["periodic"][0] ** 2
    assert est.mean() == pytest.approx(a2, rel=4 * math.sqrt(2 / est.size))
