"""Paired comparison of two noise models scene by scene: which structure differences are real.

The sampling floor of `starlight_jax.structure` says how far two draws of one model lie apart on the same
clean images; it does not say how much a test-set number depends on *which* scenes are in the test split.
With 5 or 10 test scenes that dependence dominates: on Nam the channel correlations of the training scenes
are 0.40 / 0.42 / 0.37 and those of the five test scenes 0.25 / 0.34 / 0.18. Two models scored on the same
scenes are compared here the way a paired experiment is: every structure metric is computed per scene for
both, and the per-scene differences ``d_i = a_i - b_i`` give a mean, its standard error
``std(d, ddof=1) / sqrt(N)`` and a two-sided Student-t interval at 95 % with ``N - 1`` degrees of freedom.
The verdict is ``"a"`` or ``"b"`` (the lower, i.e. better, model) when the interval excludes 0, else
``"tie"``. Scenes with a NaN metric for either model (e.g. a block larger than the image) are left out.

Use the same sample keys for both models (common random numbers): the comparison then measures the models,
not two independent noise draws.
"""
from __future__ import annotations

from typing import Optional, Sequence

import numpy as np
from scipy import stats

from starlight_jax import structure

CONFIDENCE = 0.95


def per_scene_metrics(real_res, model_res, clean, *, step: Optional[float] = None) -> dict[str, np.ndarray]:
    """``{metric: [N]}``: `structure.structure_metrics` of each scene alone.

    Args:
      real_res, model_res, clean: ``[N, ..., H, W, C]`` arrays; axis 0 indexes scenes (all frames of a scene
        are scored together).
      step: the residuals' lattice step (`structure.lattice_step`), or None.
    """
    real, model, clean = (np.asarray(x) for x in (real_res, model_res, clean))
    if not real.shape == model.shape == clean.shape:
        raise ValueError(f"real_res, model_res and clean must have one shape; got {real.shape}, {model.shape}, "
                         f"{clean.shape}")
    if real.ndim < 4:
        raise ValueError(f"expected [N, ..., H, W, C] with a scene axis first; got shape {real.shape}")
    out = {k: np.empty(real.shape[0]) for k in structure.METRIC_NAMES}
    for i in range(real.shape[0]):
        scores = structure.structure_metrics(real[i], model[i], clean[i], step=step)
        for k in structure.METRIC_NAMES:
            out[k][i] = scores[k]
    return out


def paired_difference(a: Sequence[float], b: Sequence[float], confidence: float = CONFIDENCE) -> dict:
    """The mean of ``a - b`` over scenes, its standard error, the t interval and the verdict.

    Returns:
      ``{"mean_a", "mean_b", "mean_diff", "se", "low", "high", "n", "verdict"}``; ``verdict`` is ``"a"``
      when the whole interval is below 0 (a lower, better), ``"b"`` when above, else ``"tie"``. With fewer
      than 2 usable scenes ``se``/``low``/``high`` are None and the verdict is ``"tie"``.
    """
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    if a.shape != b.shape or a.ndim != 1:
        raise ValueError(f"a and b must be 1-D of one length; got {a.shape} and {b.shape}")
    use = np.isfinite(a) & np.isfinite(b)
    a, b = a[use], b[use]
    d = a - b
    n = int(d.size)
    out = {"mean_a": float(a.mean()) if n else None, "mean_b": float(b.mean()) if n else None,
           "mean_diff": float(d.mean()) if n else None, "se": None, "low": None, "high": None, "n": n,
           "verdict": "tie"}
    if n < 2:
        return out
    se = float(d.std(ddof=1) / np.sqrt(n))
    half = float(stats.t.ppf(0.5 + confidence / 2, n - 1)) * se
    out.update(se=se, low=out["mean_diff"] - half, high=out["mean_diff"] + half)
    if out["high"] < 0:
        out["verdict"] = "a"
    elif out["low"] > 0:
        out["verdict"] = "b"
    return out


def compare_models(real_res, a_res, b_res, clean, *, step: Optional[float] = None,
                   confidence: float = CONFIDENCE) -> dict:
    """Every structure metric of models ``a`` and ``b`` per scene and their `paired_difference`.

    Returns:
      ``{metric: paired_difference(...) plus "per_scene_a", "per_scene_b" lists}``.
    """
    per_a = per_scene_metrics(real_res, a_res, clean, step=step)
    per_b = per_scene_metrics(real_res, b_res, clean, step=step)
    out = {}
    for k in structure.METRIC_NAMES:
        out[k] = {**paired_difference(per_a[k], per_b[k], confidence),
                  "per_scene_a": per_a[k].tolist(), "per_scene_b": per_b[k].tolist()}
    return out


def verdict_label(verdict: str, name_a: str, name_b: str) -> str:
    return {"a": f"{name_a} better", "b": f"{name_b} better"}.get(verdict, "tie")


__all__ = ["per_scene_metrics", "paired_difference", "compare_models", "verdict_label", "CONFIDENCE"]
