"""Score a trained noise model on the test split against Gaussian, Poisson-Gaussian and binned-Gaussian baselines.

    python experiments/evaluate.py                       # the newest run under checkpoints/, latest step
                                                         # (none yet: the shipped starlight_jax/assets/default)
    python experiments/evaluate.py --checkpoint checkpoints/<run> --which best --json eval.json
    python experiments/evaluate.py --max_bursts 2 --samples 2   # quicker

Dataset, data folder, dataset options and frames default to the run's config.json; the test crop to the
whole test image where it fits (the largest multiple of 64 up to 512; ``--crop_size`` to choose). Prints a table
(one row per model: KLD starlight mean/sum, KLD noiseflow or sRGB, AKLD, images scored), the structure
table (block-sum KLDs, spectrum, cross-channel and noise-level errors, each model's sampling floor below it),
the residuals' block-variance ratios and channel correlations, the parameter table (learned vs ground
truth on the synthetic data) and writes everything as JSON (default
``<run>/evaluation.json``). The logic lives in `starlight_jax.evaluation`.
"""
from __future__ import annotations

import argparse
import json
import os
import pathlib
import sys
import time

REPO = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from starlight_jax.cli import add_checkpoint_flags, add_compilation_cache_flag, fail  # noqa: E402
from starlight_jax.cli import run_main, setup_compilation_cache  # noqa: E402


def parse_args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_checkpoint_flags(ap, REPO / "checkpoints")
    ap.add_argument("--dataset", default=None, choices=["synthetic", "pairs", "sidd", "starlight"],
                    help="default: the run's")
    ap.add_argument("--data_dir", default=None, help="default: the run's")
    ap.add_argument("--frame_size", type=int, default=None, help="synthetic only: frame side (default: the run's)")
    ap.add_argument("--crop_size", type=int, default=None,
                    help="test crop (default: the largest multiple of 64 <= 512 that fits the frames: whole "
                         "test images where they fit)")
    ap.add_argument("--frames", type=int, default=None, help="frames per test burst (default: the run's)")
    ap.add_argument("--max_bursts", type=int, default=None, help="score only the first N test bursts")
    ap.add_argument("--max_train_bursts", type=int, default=None, help="fit the baselines on N train bursts")
    ap.add_argument("--samples", type=int, default=4, help="samples per burst for AKLD (L)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--keep_fixed_pattern", action="store_true",
                    help="fit the baselines to the raw residual, without subtracting the dataset's fixed pattern")
    ap.add_argument("--test_data_dir", default=None,
                    help="score every pair of this folder (same --dataset type) instead of the test split; the "
                         "baselines are still fitted on the run's training data (a cross-set test)")
    ap.add_argument("--compare_with", default=None, metavar="WHICH_OR_RUN",
                    help="also score a second model on the same scenes with the same sample keys and compare the "
                         "two scene by scene (paired t interval per structure metric): a checkpoint of this run "
                         "(init, best, latest or a step) or another run folder; e.g. --compare_with init asks "
                         "whether training improved on the step-0 model")
    ap.add_argument("--json", default=None, help="output JSON (default <run>/evaluation.json; for a shipped model --root/shipped_<name>/evaluation.json)")
    add_compilation_cache_flag(ap)
    return ap.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    for name in ("max_bursts", "max_train_bursts", "samples", "frames"):
        if getattr(args, name) is not None and getattr(args, name) < 1:
            fail(f"--{name} must be >= 1, got {getattr(args, name)}")
    if args.crop_size is not None and (args.crop_size < 64 or args.crop_size % 64):
        fail(f"--crop_size must be a positive multiple of 64, got {args.crop_size}")
    for flag in ("data_dir", "test_data_dir"):
        if getattr(args, flag) is not None and not os.path.isdir(getattr(args, flag)):
            fail(f"--{flag} {getattr(args, flag)} does not exist or is not a folder")
    setup_compilation_cache(args.compilation_cache)

    from starlight_jax import evaluation, files
    from starlight_jax.data.batches import largest_crop, max_frames, run_dataset
    from starlight_jax.evaluation import report
    from starlight_jax.checkpoint import (is_which, load_noise_model, load_run_config, output_dir, resolve_run,
                                          run_or_default)

    t0 = time.time()
    checkpoint, note = run_or_default(args.checkpoint, args.root)
    if note:
        print(f"[evaluate] {note}")
    try:
        run_dir = resolve_run(checkpoint, args.root)
        out = files.check_output_file(args.json or output_dir(run_dir, args.root) / "evaluation.json", "--json")
        model, cfg, info = load_noise_model(run_dir, args.which)
        _, run = load_run_config(info["run_dir"])
        other = other_info = None
        if args.compare_with is not None:
            other, _, other_info = load_noise_model(*((run_dir, args.compare_with) if is_which(args.compare_with)
                                                      else (resolve_run(args.compare_with, args.root), "latest")))
    except (FileNotFoundError, ValueError) as e:
        fail(str(e))
    options = {"frame_size": (args.frame_size, args.frame_size)} if args.frame_size else None
    try:
        dataset, ds_name, data_dir, opts = run_dataset(run, args.dataset, args.data_dir, options)
    except (FileNotFoundError, ValueError, TypeError) as e:
        fail(f"dataset: {e}")
    test_data = None
    if args.test_data_dir is not None:
        try:
            test_data, *_ = run_dataset(run, ds_name, args.test_data_dir, options)
        except (FileNotFoundError, ValueError, TypeError) as e:
            fail(f"--test_data_dir: {e}")
    crop = args.crop_size or largest_crop(test_data or dataset, cfg.crop_size)
    frames = args.frames or cfg.frames
    if args.frames is None and frames > max_frames(dataset):
        frames = max_frames(dataset)
        print(f"[evaluate] the dataset's bursts have {frames} frame(s): scoring {frames} instead of the run's "
              f"{cfg.frames}")
    print(f"[evaluate] run {info['run_dir']} step {info['step']} ({args.which}); noiselist "
          f"{model.config.noise.noiselist}, {model.config.network}")
    print(f"[evaluate] dataset {ds_name} {opts or ''} data_dir={data_dir}; crop {crop}, {frames} frames, "
          f"{args.samples} samples/burst" + (f"; scoring every pair of {args.test_data_dir}" if test_data else ""))
    try:
        result = evaluation.evaluate_model(
            model, dataset, crop_size=crop, frames=frames, seed=args.seed, max_bursts=args.max_bursts,
            n_samples=args.samples, subtract_fixed_pattern=not args.keep_fixed_pattern,
            max_train_bursts=args.max_train_bursts, test_data=test_data, compare_with=other)
    except ValueError as e:
        fail(str(e))
    result["checkpoint"] = {**info, "data_dir": data_dir, "dataset_options": opts}
    if other_info is not None:
        result["comparison"]["b_checkpoint"] = other_info
    print()
    print(report.metrics_table(result))
    print()
    print(report.structure_table(result))
    print()
    print(report.residual_structure_table(result))
    print()
    print(report.parameter_table(result))
    if other_info is not None:
        print()
        print(f"[evaluate] paired comparison, a = {info['which']} (step {info['step']}), b = "
              f"{other_info['which']} (step {other_info['step']}) of {other_info['run_dir']}: per-scene "
              f"differences a - b, 95% t interval; lower is better")
        print(report.comparison_table(result))
    for note in result["notes"]:
        print(f"note: {note}")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.parent.mkdir(parents=True, exist_ok=True)  # checkpoints/shipped_default/ for a shipped model
    out.write_text(json.dumps(report.to_json(result), indent=1))
    print(f"[evaluate] wrote {out} ({time.time() - t0:.0f} s)")
    return result


if __name__ == "__main__":
    run_main(main)
