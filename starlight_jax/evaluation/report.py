"""Reporting of `starlight_jax.evaluation` results: plain-text tables and JSON-ready values."""
from __future__ import annotations

import math

import jax
import numpy as np

from starlight_jax import compare
from starlight_jax.evaluation.samples import LABELS, MODELS


def to_json(x):
    """``x`` (a result, or any value) with every value JSON-serialisable: NumPy / JAX values to JSON types
    (NaN and inf become None)."""
    if isinstance(x, dict):
        return {str(k): to_json(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [to_json(v) for v in x]
    if isinstance(x, (jax.Array, np.ndarray)):
        return to_json(np.asarray(x).tolist())
    if isinstance(x, (bool, np.bool_)):
        return bool(x)
    if isinstance(x, (int, np.integer)):
        return int(x)
    if isinstance(x, (float, np.floating)):
        return float(x) if math.isfinite(x) else None
    return x


def nlf_to_dict(curves: dict) -> dict:
    """`nlf_curves` as JSON-ready lists (``[n_bins][C]``; empty bins are None)."""
    return {k: {"mean_intensity": to_json(v.mean_intensity), "variance": to_json(v.variance),
                "counts": to_json(v.counts)} for k, v in curves.items()}


# ----------------------------------------------------------------------------------------------------
# Text output
# ----------------------------------------------------------------------------------------------------
def format_value(v) -> str:
    if v is None:
        return "-"
    if isinstance(v, (list, tuple)):
        if len(v) > 1 and all(isinstance(r, (list, tuple)) and list(r) == list(v[0]) for r in v):
            return format_value(v[0])  # the same row for every channel
        flat = np.asarray(v, dtype=object).ravel()
        if all(x is None for x in flat):
            return "-"
        if all(x is not None for x in flat) and np.allclose(np.asarray(flat, float), float(flat[0]), rtol=1e-6):
            return format_value(float(flat[0]))
        return "[" + ", ".join(format_value(x) for x in flat) + "]"
    if isinstance(v, float):
        return f"{v:.4g}"
    return str(v)


def format_table(header: list[str], rows: list[list]) -> str:
    """A plain-text table with aligned columns (a markdown pipe table)."""
    cells = [[str(h) for h in header]] + [[format_value(c) for c in r] for r in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(header))]
    line = lambda r: "| " + " | ".join(c.ljust(w) for c, w in zip(r, widths)) + " |"  # noqa: E731
    return "\n".join([line(cells[0]), "|" + "|".join("-" * (w + 2) for w in widths) + "|",
                      *[line(r) for r in cells[1:]]])


def metrics_table(result: dict) -> str:
    """The metrics of `evaluate_model` as a table: one row per model."""
    kld = result["setup"]["residual_kld"]
    header = ["", "KLD starlight (mean)", "KLD starlight (sum)", kld.replace("kld_", "KLD "), "AKLD",
              "AKLD floor (2 draws)", "residual mean", "residual std", "n_images"]
    rows = [[LABELS[m], result[m]["kld_starlight_mean"], result[m]["kld_starlight_sum"], result[m][kld],
             result[m]["akld"], result[m]["akld_floor"], result[m]["residual_mean"], result[m]["residual_std"],
             result[m]["n_images"]] for m in MODELS]
    rows.append(["(real data)", None, None, None, None, None, result["real"]["residual_mean"],
                 result["real"]["residual_std"], None])
    return format_table(header, rows)


STRUCTURE_COLUMNS = (("block1_kld", "block-1 KLD"), ("block2_kld", "block-2 KLD"), ("block4_kld", "block-4 KLD"),
                     ("spectrum_db", "spectrum dB"), ("xcorr_err", "xcorr err"), ("nlf_err", "NLF err"))


def structure_table(result: dict) -> str:
    """The structure metrics of `evaluate_model`: a row per model, each followed by its sampling floor
    (the metric between two independent draws of that model: what a perfect model would score)."""
    header = [""] + [label for _, label in STRUCTURE_COLUMNS]
    rows = []
    for m in MODELS:
        rows.append([LABELS[m]] + [result[m]["structure"][k] for k, _ in STRUCTURE_COLUMNS])
        floor = result[m].get("structure_floor")
        rows.append(["  floor (2 draws)"] + [floor[k] if floor else None for k, _ in STRUCTURE_COLUMNS])
    return format_table(header, rows)


def comparison_table(result: dict) -> str:
    """`evaluate_model`'s ``comparison``: per structure metric, both models pooled, the mean per-scene
    difference a - b with its t interval, and the verdict."""
    header = ["metric", "a pooled", "b pooled", "mean a - b (per scene)", "95% interval", "scenes", "verdict"]
    rows = []
    for k, label in STRUCTURE_COLUMNS:
        c = result["comparison"]["metrics"][k]
        interval = None if c["low"] is None else f"[{c['low']:.3g}, {c['high']:.3g}]"
        rows.append([label, result["model"]["structure"][k], result["compared_model"]["structure"][k],
                     c["mean_diff"], interval, c["n"], compare.verdict_label(c["verdict"], "a", "b")])
    return format_table(header, rows)


def residual_structure_table(result: dict) -> str:
    """Block-variance ratios and channel correlations of the real residuals and of each model's (white
    per-channel noise: ratios 1, correlations 0)."""
    real = result["real"]["residual_structure"]
    pairs = list(real["xcorr_pairs"])
    header = ["residuals", "block-2 var ratio", "block-4 var ratio"] + [f"corr {p}" for p in pairs]
    rows = []
    for name, label in [("real", "(real data)")] + [(m, LABELS[m]) for m in MODELS]:
        d = result[name]["residual_structure"]
        rows.append([label, d["block2_var_ratio"], d["block4_var_ratio"]] + [_num(v) for v in d["xcorr"]])
    return format_table(header, rows)


def _num(v):
    return None if v is None or not math.isfinite(float(v)) else float(v)


def parameter_rows(result: dict) -> tuple[list[str], list[list]]:
    """Header and rows of the parameter table: learned (and fitted baseline) values, truth when known."""
    header = ["parameter", "learned", "truth", "truth key", "rel. error"]
    rows = []
    phys = result.get("physical_parameters")
    if phys and "note" not in phys:
        for name, e in phys.items():
            rows.append([name, e["learned"], e["truth"], e["truth_key"], e["relative_error"]])
    else:
        for name, v in result["learned_parameters"].items():
            rows.append([name, v, None, None, None])
    base = result["baselines"]
    pg_truth = base["poisson_gaussian"].get("truth", {})
    rows.append(["Gaussian sigma (fit)", base["gaussian"]["sigma"], None, None, None])
    for p in ("a", "b"):
        t = pg_truth.get(p)
        rel = None
        if t is not None:
            rel = [(x - y) / abs(y) if y else None for x, y in zip(base["poisson_gaussian"][p], t)]
        rows.append([f"Poisson-Gaussian {p} (fit)", base["poisson_gaussian"][p], t, pg_truth.get(f"{p}_key"), rel])
    return header, rows


def parameter_table(result: dict) -> str:
    """`parameter_rows` as a text table."""
    return format_table(*parameter_rows(result))


__all__ = ["to_json", "nlf_to_dict", "format_value", "format_table", "metrics_table", "structure_table",
           "comparison_table", "residual_structure_table", "parameter_rows", "parameter_table", "STRUCTURE_COLUMNS"]
