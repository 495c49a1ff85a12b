"""Tests for starlight_jax.compare: the paired, scene-by-scene comparison of two noise models."""
from __future__ import annotations

import numpy as np
import pytest
from scipy import stats

from starlight_jax import compare


def test_paired_difference_known_answer():
    # d = 1, 2, 3: mean 2, se = 1/sqrt(3), half-width t(0.975, 2) * se = 4.303 * 0.577 = 2.484: a tie.
    out = compare.paired_difference([2.0, 4.0, 6.0], [1.0, 2.0, 3.0])
    assert out["mean_diff"] == pytest.approx(2.0) and out["se"] == pytest.approx(1 / np.sqrt(3))
    half = stats.t.ppf(0.975, 2) / np.sqrt(3)
    assert out["low"] == pytest.approx(2 - half) and out["high"] == pytest.approx(2 + half)
    assert half == pytest.approx(2.484, abs=1e-3) and out["verdict"] == "tie" and out["n"] == 3


def test_paired_difference_verdicts_and_nan_scenes():
    b = np.array([1.0, 2.0, 3.0, 4.0, np.nan])
    worse = compare.paired_difference(b + 1.0 + np.array([0.0, 0.1, -0.1, 0.05, 0.0]), b)
    assert worse["verdict"] == "b" and worse["n"] == 4  # the NaN scene is left out
    better = compare.paired_difference(b - 1.0, b + np.array([0.0, 0.01, 0.0, 0.02, 0.0]))
    assert better["verdict"] == "a" and better["high"] < 0
    one = compare.paired_difference([1.0], [2.0])
    assert one["se"] is None and one["verdict"] == "tie" and one["mean_diff"] == -1.0
    with pytest.raises(ValueError, match="one length"):
        compare.paired_difference([1.0, 2.0], [1.0])


def _correlated(rng, n, mix):
    white = rng.normal(size=(n, 1, 64, 64, 3)) * 0.01
    return white @ mix.T


def test_compare_models_sees_the_cross_channel_correlation():
    rng = np.random.default_rng(0)
    mix = np.array([[1.0, 0.6, 0.6], [0.6, 1.0, 0.6], [0.6, 0.6, 1.0]]) / np.sqrt(1.72)
    clean = rng.uniform(0.2, 0.8, size=(6, 1, 64, 64, 3))
    real = _correlated(rng, 6, mix)
    same = _correlated(rng, 6, mix)  # another draw of the real noise
    white = rng.normal(size=real.shape) * 0.01  # right level, no correlation
    out = compare.compare_models(real, same, white, clean)
    # The correlation of the mixed noise is (2*0.6 + 0.36)/1.72 = 0.907 per pair; white gives 0: the per-scene
    # error of white is ~0.9 with a scene spread of ~0.01, so the interval is far from 0.
    assert out["xcorr_err"]["verdict"] == "a"
    assert out["xcorr_err"]["mean_b"] == pytest.approx(0.907, abs=0.03)
    assert out["xcorr_err"]["mean_a"] < 0.03
    assert len(out["xcorr_err"]["per_scene_a"]) == 6
    # Both have the real level: the noise-level error is a tie or small for both.
    assert abs(out["nlf_err"]["mean_diff"]) < 0.05


def test_per_scene_metrics_checks_shapes():
    x = np.zeros((2, 1, 8, 8, 3))
    with pytest.raises(ValueError, match="one shape"):
        compare.per_scene_metrics(x, x[:1], x)
    with pytest.raises(ValueError, match="scene axis"):
        compare.per_scene_metrics(x[0, 0], x[0, 0], x[0, 0])
