"""Test-set evaluation of a learned noise model against three classical baselines (the public API).

* :mod:`.samples`: `fit_baselines` (Gaussian, Poisson-Gaussian, binned Gaussian on the train split) and
  `draw_samples` (every test burst noised by each model, reproducible keys) into `EvalSamples`.
* :mod:`.scoring`: `evaluate_model` (the metrics, structure metrics, parameters and notes of one model on
  a test set; the module docstring lists every entry), `score_samples`, `structure_scores`, `nlf_curves`.
* :mod:`.parameters`: `learned_parameters`, `physical_parameters` (against the synthetic ground truth),
  `baseline_parameters`.
* :mod:`.report`: the text tables (`metrics_table`, `structure_table`, ...) and `to_json`.
"""
from starlight_jax.baselines import baseline_mean
from starlight_jax.data.batches import is_srgb, largest_crop, load_batches, max_frames, residual_arrays, run_dataset
from starlight_jax.evaluation.parameters import baseline_parameters, learned_parameters, physical_parameters
from starlight_jax.evaluation.report import (comparison_table, format_table, metrics_table, nlf_to_dict,
                                             parameter_rows, parameter_table, residual_structure_table,
                                             structure_table, to_json)
from starlight_jax.evaluation.samples import (BINNED_BINS, LABELS, MODELS, Baselines, EvalSamples, check_channels,
                                              draw_samples, fit_baselines)
from starlight_jax.evaluation.scoring import evaluate_model, nlf_curves, score_samples, structure_scores

__all__ = ["evaluate_model", "largest_crop", "fit_baselines", "residual_arrays", "Baselines", "draw_samples",
           "EvalSamples", "score_samples", "nlf_curves", "physical_parameters", "learned_parameters",
           "baseline_parameters", "load_batches", "is_srgb", "check_channels", "metrics_table", "parameter_table",
           "parameter_rows", "format_table", "to_json", "run_dataset", "max_frames", "MODELS", "LABELS",
           "BINNED_BINS", "structure_scores", "structure_table", "residual_structure_table", "baseline_mean",
           "comparison_table", "nlf_to_dict"]
