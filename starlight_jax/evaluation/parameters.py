"""The noise model's physical parameters in `starlight_jax.evaluation` results, and the ground truth they
estimate on synthetic data (`physical_parameters`), with the fitted baselines' parameters."""
from __future__ import annotations

from typing import Optional

import numpy as np

from starlight_jax.evaluation.report import to_json
from starlight_jax.evaluation.samples import Baselines
from starlight_jax.generator import NoiseModel
from starlight_jax.noise import MAP_PARAMS, scales


def learned_parameters(model: NoiseModel) -> dict:
    """The learned physical scalars in the units the formulas use (`starlight_jax.noise.scales`)."""
    values = scales(model.params["noise"], model.config.noise)
    return {k: to_json(np.asarray(v, np.float64)) for k, v in values.items()
            if k not in MAP_PARAMS}


def _periodic_variance(p) -> np.ndarray:
    # Physics periodic term p0 a + 2 p1 b cos - 2 p2 c sin: per-pixel variance p0^2 + 2 p1^2 + 2 p2^2.
    p = np.asarray(p, np.float64)
    return p[..., 0] ** 2 + 2 * p[..., 1] ** 2 + 2 * p[..., 2] ** 2


def _entry(learned, truth, truth_key: str, meaning: str) -> dict:
    learned = np.asarray(learned, np.float64)
    truth = np.asarray(truth, np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        rel = np.where(truth != 0, (learned - truth) / np.abs(truth), np.nan)
    return {"learned": to_json(learned), "truth": to_json(truth), "truth_key": truth_key,
            "relative_error": to_json(rel), "abs_error": to_json(learned - truth), "meaning": meaning}


def physical_parameters(model: NoiseModel, truth: dict) -> dict:
    """Learned physical parameters next to the synthetic dataset's ground truth.

    Only ``compat="physics"`` parameters have the truth's meaning (variances in [0, 1] units); under
    ``compat="starlight"`` the result says so and holds no comparison. Per parameter: ``learned`` (as
    stored: one value for all channels), ``truth`` (per channel), ``truth_key`` (the ``dataset.truth`` entry
    compared with), the signed ``relative_error`` = (learned - truth) / |truth| (None where the truth is 0)
    and the ``abs_error``.

    Which truth: ``read`` is compared with ``truth["read"]`` (the read variance alone) when the noiselist
    has ``uniform`` (the model then has its own quantisation term), else with
    ``truth["read_with_quantisation"]``. The extra entry ``variance_intercept`` is the model's whole
    signal-independent per-pixel variance, read + q^2/12 + column^2 + column_t^2 + row^2 + periodic
    variance (the terms the noiselist has), against ``truth["variance_law_b"]``: the intercept b of
    Var[noisy - clean | x] = a x + b, the number a Poisson-Gaussian fit estimates.
    """
    cfg = model.config.noise
    if cfg.starlight:
        return {"note": "compat='starlight' parameters (std a*x + b, one-sided uniform, rectified periodic) do "
                        "not share the ground truth's units; no comparison"}
    s = {k: np.asarray(v, np.float64) for k, v in scales(model.params["noise"], cfg).items()}
    out = {}
    if "shot" in s:
        out["shot"] = _entry(s["shot"], truth["shot"], "shot", "a: shot variance per unit signal")
    if "read" in s:
        key = "read" if cfg.uniform else "read_with_quantisation"
        out["read"] = _entry(s["read"], truth[key], key, "b: read-noise variance")
    if "uniform" in s:
        out["uniform"] = _entry(s["uniform"], truth["uniform"], "uniform", "q: quantisation step")
    for name, meaning in (("column", "std of per-column offsets, new per frame"),
                          ("column_t", "std of per-column offsets, constant over a burst"),
                          ("row", "std of per-row offsets, new per frame")):
        if name in s and name in truth:
            out[name] = _entry(s[name], truth[name], name, meaning)
    if "periodic" in s and "periodic_p" in truth:
        out["periodic"] = _entry(np.broadcast_to(s["periodic"], np.shape(truth["periodic_p"])),
                                 truth["periodic_p"], "periodic_p", "(p0, p1, p2) of the period-4 pattern")
    if "read" in s or "shot" in s:
        b = s.get("read", 0.0) + (s["uniform"] ** 2 / 12 if "uniform" in s else 0.0)
        for name in ("column", "column_t", "row"):
            b = b + s.get(name, 0.0) ** 2
        if "periodic" in s:
            b = b + _periodic_variance(s["periodic"])
        out["variance_intercept"] = _entry(b, truth["variance_law_b"], "variance_law_b",
                                           "b of Var = a x + b: every signal-independent variance term")
    return out


def baseline_parameters(baselines: Baselines, truth: Optional[dict] = None) -> dict:
    """The fitted baselines' parameters, and for the synthetic data the truth they estimate."""
    out = {"fixed_pattern_subtracted": baselines.fixed_pattern, "n_train_bursts": baselines.n_bursts,
           "gaussian": baselines.gaussian.to_dict(), "poisson_gaussian": baselines.poisson_gaussian.to_dict(),
           "binned_gaussian": baselines.binned_gaussian.to_dict()}
    if truth is not None:
        out["poisson_gaussian"]["truth"] = {"a": to_json(truth["shot"]), "a_key": "shot",
                                            "b": to_json(truth["variance_law_b"]), "b_key": "variance_law_b"}
    return out


__all__ = ["learned_parameters", "physical_parameters", "baseline_parameters"]
