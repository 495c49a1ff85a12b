"""The closed-form starting values of a training run's physical parameters, fitted to its pairs.

`data_init` is what ``TrainConfig.init_from_data`` runs on the first training batches
(`starlight_jax.train_loop`): least-squares and moment fits in numpy (float64), no gradient step, so a run
starts near the data's noise level and the GAN only refines it. Each noise component has its own fit:

* ``shot``/``read``: a per-channel Poisson-Gaussian fit of the noise level function (the baselines' fit);
* ``corr``: a kernel whose autocorrelation is the residuals' (`correlation_kernel`);
* ``isp``: the raw shot/read and the camera pipeline's parameters by the method of moments
  (`starlight_jax.isp_fit`);
* ``tone``: gain and offset curves that match the model's level and mean to the data's at every
  intensity (`tone_init`, a piecewise-linear least-squares fit).
"""
from __future__ import annotations

import dataclasses
from typing import Optional

import jax
import jax.numpy as jnp
import numpy as np

from starlight_jax import noise as noise_lib
from starlight_jax.baselines import fit_poisson_gaussian_censored
from starlight_jax.isp_fit import fit_isp


DATA_INIT_FLOOR = 1e-2  # of noise.PHYSICS_INIT, see data_init


def data_init(cfg, noisy, clean, *, clipped=None, tone_pairs=None) -> dict:
    """Initial shot and read scales ``{"shot": a, "read": b}`` (those in ``cfg``'s noiselist) from a
    per-channel Poisson-Gaussian fit of ``noisy`` vs ``clean`` (the baselines' fit,
    `fit_poisson_gaussian_censored`: away from the clipping when the data are clipped; ``clipped``: the
    values to test for it, default ``noisy``), averaged over channels (kept per channel,
    as ``[C]`` arrays, when the noise model has ``per_channel``); with ``corr``, also ``corr_kernel`` from
    the residuals' spectrum (`correlation_kernel`); with ``isp``, the raw shot/read and the camera pipeline's
    parameters by the method of moments (`isp_fit.fit_isp`); with ``tone``, also ``tone_gain``/``tone_offset``
    from the residuals' level and mean against the clean intensity (`tone_init`), on ``tone_pairs``
    ``(noisy, clean)`` when given (the training loop passes whole images: see `tone_init`).

    A fit can return 0 (sRGB data often fit a = 0), whose log is not a usable start: each value is floored
    at 1 % of its fixed initial value, small enough not to add noise the data do not have (flooring at the
    fixed value itself gave sRGB runs a shot term of 1e-3, ~0.02 of noise std at mid-grey).

    ``cfg`` is a `starlight_jax.training.TrainConfig` (its noise config, ``quantize`` and ``seed`` are read);
    it is not imported here because this module sits below `training` in the layering.
    """
    floor = {k: DATA_INIT_FLOOR * noise_lib.PHYSICS_INIT[k] for k in ("shot", "read")}
    fit = fit_poisson_gaussian_censored(noisy, clean, clipped=clipped)
    noise = cfg.generator.noise
    if noise.per_channel:
        values = {"shot": np.asarray(fit.a, np.float64), "read": np.asarray(fit.b, np.float64)}
        out = {k: np.maximum(v, floor[k]) for k, v in values.items() if getattr(noise, k)}
    else:
        values = {"shot": float(jnp.mean(fit.a)), "read": float(jnp.mean(fit.b))}
        out = {k: max(v, floor[k]) for k, v in values.items() if getattr(noise, k)}
    if noise.correlated:
        out["corr_kernel"] = correlation_kernel(np.asarray(noisy) - np.asarray(clean))
    if noise.isp:  # shot/read live on the raw mosaic: the sRGB fit above does not apply to them
        out.update(fit_isp(noise, noisy, clean, quantize=cfg.quantize, seed=cfg.seed).values)
    if noise.tone:
        out.update(tone_init(noise, out, *(tone_pairs if tone_pairs is not None else (noisy, clean))))
    return out


MAX_TONE_GAIN = 4.0  # a knot whose gain would leave [1/4, 4] is not measured (see tone_init)


def tone_init(noise_cfg, init_values: dict, noisy, clean, *, min_weight: float = 1024.0) -> dict:
    """The ``tone`` curves that make the noise model's level and mean match the data's at every intensity.

    The model without ``tone`` (at ``init_values``, other parameters at their initial values) is sampled
    once on ``clean``. Per channel, the data's squared residual, its residual and the model's squared noise
    are each fitted by least squares as piecewise-linear functions of the clean value on the curves' knots
    (the interpolation `noise.tone_curve` uses, with a second-difference penalty); the gain is
    ``sqrt(Var[r] / Var[n])`` and the offset ``E[r] − gain · E[n]`` at each knot. Knots with less than
    ``min_weight`` pixels take the nearest well-measured knots' values, and so do knots whose gain would be
    over ``MAX_TONE_GAIN`` or under its inverse: there the ratio of two fitted variances is one noisy
    estimate over nearly nothing. At PolyU's white end (the shoulder and the clip leave the plain model
    almost no noise) one knot got a gain of 6404, the initial model a residual std of 1.68 in its bin
    (the data's: 0.011) and 1.8× the data's overall; at its black end the end knot's fitted data variance
    undershot and the red gain was 0.01 (model 0.59 DN against the data's 1.58 below 1/32).

    The level of a real pair depends on its content as well as on its intensity (texture and edges, where
    the clean image is an average of misaligned frames), so the curves want as many of the training
    pixels as can be had: fitted on 256² crops of PolyU's training pairs, the step-0 model's level was 4 %
    low over the middle intensities of the whole training images (NLF error 0.040 there, 0.117 on the test
    split); fitted on the whole images, 0.024 and 0.107 (the binned Gaussian, fitted on the whole images
    too: 0.018 and 0.108).

    Returns:
      ``{"tone_gain": [K, C] gains (not logs), "tone_offset": [K, C]}``.
    """
    plain = dataclasses.replace(noise_cfg, tone=False)
    params = {**noise_lib.init_params(plain),
              **{k: noise_lib.stored_value(k, v, plain) for k, v in init_values.items()}}
    clean32 = jnp.asarray(clean, jnp.float32)
    model = np.asarray(noise_lib.add_noise(jax.random.key(0), params, clean32, plain) - clean32, np.float64)
    residual = np.asarray(noisy, np.float64) - np.asarray(clean, np.float64)
    knots = noise_lib.TONE_KNOTS
    t = np.clip(np.asarray(clean, np.float64), 0, 1) * (knots - 1)
    gain, offset = np.ones((knots, noise_cfg.channels)), np.zeros((knots, noise_cfg.channels))
    for c in range(noise_cfg.channels):
        fit, weight = _piecewise_linear_fit(t[..., c].ravel(), knots)
        ok = weight >= min_weight
        r, n = residual[..., c].ravel(), model[..., c].ravel()
        mean, second = fit(r), fit(r * r)
        # The model's own mean: zero for the additive components, not for `isp` (a concave tone curve
        # lowers the mean of T(l + n) - T(l)); the offset adds what the gained model lacks.
        model_mean = fit(n)
        model_var = np.maximum(fit(n * n) - model_mean ** 2, 1e-12)
        data_var = second - mean ** 2
        g = np.sqrt(np.clip(data_var / model_var, 1e-4, None))
        ok &= (model_var * MAX_TONE_GAIN ** 2 >= data_var) & (data_var * MAX_TONE_GAIN ** 2 >= model_var)
        if not ok.any():
            continue
        k = np.flatnonzero(ok)
        gain[:, c] = np.interp(np.arange(knots), k, g[ok])
        offset[:, c] = np.interp(np.arange(knots), k, (mean - g * model_mean)[ok])
    return {"tone_gain": gain.astype(np.float32), "tone_offset": offset.astype(np.float32)}


def _piecewise_linear_fit(t, knots: int):
    """Least squares in the hat basis on knots 0..K−1 at positions ``t`` in [0, K−1]: returns
    ``(fit, weight)`` where ``fit(y)`` gives the K knot values and ``weight`` each knot's total hat weight."""
    lo = np.clip(np.floor(t), 0, knots - 2).astype(np.int64)
    w1 = t - lo
    w0 = 1 - w1
    normal = np.zeros((knots, knots))
    np.add.at(normal, (np.arange(knots), np.arange(knots)),
              np.bincount(lo, w0 * w0, knots) + np.bincount(lo + 1, w1 * w1, knots))
    cross = np.bincount(lo, w0 * w1, knots)[:-1]
    normal[np.arange(knots - 1), np.arange(1, knots)] += cross
    normal[np.arange(1, knots), np.arange(knots - 1)] += cross
    # A second-difference penalty (10 % of a typical knot's weight) keeps sparsely seen knots, the end
    # ones above all, on their neighbours' line instead of fitting a handful of pixels.
    second_diff = np.diff(np.eye(knots), 2, axis=0)
    normal += 0.1 * np.median(np.diag(normal)) * second_diff.T @ second_diff
    normal += 1e-9 * np.trace(normal) / knots * np.eye(knots)  # keeps empty knots solvable
    weight = np.bincount(lo, w0, knots) + np.bincount(lo + 1, w1, knots)

    def fit(y):
        return np.linalg.solve(normal, np.bincount(lo, w0 * y, knots) + np.bincount(lo + 1, w1 * y, knots))

    return fit, weight


def correlation_kernel(residual, size: Optional[int] = None) -> np.ndarray:
    """A ``[size, size, C]`` kernel whose autocorrelation is that of ``residual`` ``[..., h, w, C]`` near
    lag 0: the zero-phase square root of the residuals' mean power spectrum, centred and cropped (the
    data init of the ``corr`` component; `noise.correlate` normalises it)."""
    size = size or noise_lib.CORR_SIZE
    r = np.asarray(residual, np.float64)
    r = r.reshape(-1, *r.shape[-3:])
    r = r - r.mean(axis=(1, 2), keepdims=True)
    psd = np.mean(np.abs(np.fft.fft2(r, axes=(1, 2))) ** 2, axis=0)
    kernel = np.fft.fftshift(np.real(np.fft.ifft2(np.sqrt(psd), axes=(0, 1))), axes=(0, 1))
    h0, w0, half = r.shape[1] // 2, r.shape[2] // 2, size // 2
    return kernel[h0 - half:h0 + half + 1, w0 - half:w0 + half + 1].astype(np.float32)
