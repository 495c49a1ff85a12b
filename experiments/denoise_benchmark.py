"""Does a learned noise model train a better denoiser? The downstream benchmark of issue #8.

    python experiments/denoise_benchmark.py          # newest noise run under checkpoints/, its dataset
                                                     # (none yet: the shipped starlight_jax/assets/default)
    python experiments/denoise_benchmark.py --noise_checkpoint checkpoints/<run> --seeds 3 --steps 1000
    python experiments/denoise_benchmark.py --noise_checkpoint none --methods poisson_gaussian,binned_gaussian,real \\
        --dataset pairs --data_dir ../shared/data/srgb_pairs/polyu --test_data_dir ../shared/data/srgb_pairs/nam

Trains the same DnCNN (for a given seed: same init, crops, batch order, steps and step keys) on pairs made
from the train split's clean crops by (a) the learned noise model, (b) a fitted Gaussian, (c) a fitted
Poisson-Gaussian, (e) a fitted binned (per channel, per intensity) Gaussian, (d) the real noisy images,
``--seeds`` times each, and scores each on real held-out pairs (the test split; with ``--test_data_dir B``,
every pair of B). Prints a table (PSNR and SSIM means over seeds with their spread, max - min; gaps to (d)
and to the noisy input, marked ``tie`` when inside the larger spread), writes ``--json`` (default
``<out>/benchmark.json``, with every seed's numbers), the figure ``<out>/denoised.png`` and the denoisers
``<out>/denoisers/<method>/`` (first seed; ``<method>_seed<s>`` for the others; for ``experiments/denoise.py``).
``--out`` defaults to ``<noise run>/denoise_benchmark/``.

Sizes come from ``--preset`` (``standard``, the default: 300 steps of an 8-layer, 32-wide DnCNN on 8 crops of
64 px, cosine learning rate; ``tiny``: a smoke test) and any size flag overrides its value; see
docs/denoise_benchmark.md for why and what it measures. Dataset, data folder and dataset options default to
the noise run's config.json. The logic lives in `starlight_jax.denoise`.
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

from starlight_jax.cli import add_compilation_cache_flag, fail, run_main  # noqa: E402
from starlight_jax.cli import setup_compilation_cache  # noqa: E402


def parse_args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--noise_checkpoint", default=None,
                    help="noise-model run folder (default: the newest under --root); 'none' for no learned model")
    ap.add_argument("--root", default=str(REPO / "checkpoints"), help="where to look for noise runs")
    ap.add_argument("--which", default="latest", help="latest, best or a step number")
    ap.add_argument("--dataset", default=None, choices=["synthetic", "pairs", "sidd", "starlight"],
                    help="default: the noise run's")
    ap.add_argument("--data_dir", default=None, help="default: the noise run's")
    ap.add_argument("--frame_size", type=int, default=None, help="synthetic only: frame side (default: the run's)")
    ap.add_argument("--test_data_dir", default=None,
                    help="test on every pair of this folder instead of the test split (same --dataset type)")
    ap.add_argument("--methods", default="model,poisson_gaussian,binned_gaussian,real",
                    help="comma-separated subset of model, gaussian, poisson_gaussian, binned_gaussian, real")
    ap.add_argument("--preset", default="standard", help="named sizes: standard (default), long (1000 steps) or tiny; the size "
                    "flags below (default: the preset's) override it")
    ap.add_argument("--seeds", type=int, default=2, help="denoisers per method (seeds --seed, --seed + 1, ...); "
                    "ties need >= 2")
    ap.add_argument("--steps", type=int, default=None, help="training steps per denoiser")
    ap.add_argument("--crop", "--crop_size", dest="crop", type=int, default=None, help="training crop (multiple of 64)")
    ap.add_argument("--batch_images", type=int, default=None, help="images per step (bursts x frames)")
    ap.add_argument("--frames", type=int, default=None, help="frames per training burst (default min(4, data's))")
    ap.add_argument("--test_frames", type=int, default=2, help="frames scored per test burst")
    ap.add_argument("--max_test", type=int, default=None, help="score only the first N test bursts")
    ap.add_argument("--max_train_bursts", type=int, default=None, help="fit the baselines on N train bursts")
    ap.add_argument("--depth", type=int, default=None, help="DnCNN convolutions")
    ap.add_argument("--width", type=int, default=None, help="DnCNN features")
    ap.add_argument("--predict_clean", action="store_true", help="predict the clean image, not the noise")
    ap.add_argument("--lr", type=float, default=None, help="(peak) Adam learning rate")
    ap.add_argument("--schedule", default=None, choices=["constant", "cosine"], help="learning-rate schedule")
    ap.add_argument("--warmup_steps", type=int, default=None, help="linear warm-up steps (cosine)")
    ap.add_argument("--seed", type=int, default=0, help="first seed")
    ap.add_argument("--no_fixed_pattern", action="store_true",
                    help="do not add the data's fixed pattern to synthetic pairs (baselines fit the raw residual)")
    ap.add_argument("--parallel", default="shard", choices=["shard", "pmap"])
    ap.add_argument("--devices", type=int, default=None, help="use the first N local devices")
    ap.add_argument("--log_every", type=int, default=50)
    ap.add_argument("--out", default=None, help="output folder (default <noise run>/denoise_benchmark)")
    ap.add_argument("--json", default=None, help="output JSON (default <out>/benchmark.json)")
    add_compilation_cache_flag(ap)
    return ap.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    methods = tuple(m.strip() for m in args.methods.split(",") if m.strip())
    no_model = args.noise_checkpoint is not None and args.noise_checkpoint.lower() == "none"
    if no_model and "model" in methods:
        fail("--noise_checkpoint none leaves no learned model: drop 'model' from --methods")
    if no_model and args.dataset is None:
        fail("--noise_checkpoint none needs --dataset (and --data_dir)")
    for d in (args.data_dir, args.test_data_dir):
        if d is not None and not os.path.isdir(d):
            fail(f"{d} does not exist or is not a folder")
    setup_compilation_cache(args.compilation_cache)

    from starlight_jax import files
    from starlight_jax.checkpoint import load_noise_model, load_run_config, output_dir, resolve_run, run_or_default
    from starlight_jax.data import load_dataset
    from starlight_jax.data.batches import is_srgb, run_dataset
    from starlight_jax.denoise import benchmark as bench
    from starlight_jax.denoise.benchmark_config import preset_config
    from starlight_jax.denoise.benchmark_report import plot_denoised, results_table

    t0 = time.time()
    run_dir = None
    if not no_model:
        checkpoint, note = run_or_default(args.noise_checkpoint, args.root)
        if note:
            print(f"[benchmark] {note}")
        try:
            run_dir = resolve_run(checkpoint, args.root)
        except FileNotFoundError as e:
            fail(str(e))
    if args.out is not None:
        out = pathlib.Path(args.out)
    elif run_dir is not None:
        out = output_dir(run_dir, args.root) / "denoise_benchmark"
    else:
        out = REPO / "outputs" / "denoise_benchmark"
    try:
        out = files.check_output_dir(out, "--out")
        files.check_output_dir(out / "denoisers", "--out")
        files.check_output_file(out / "denoised.png", "--out")
        json_path = files.check_output_file(args.json or out / "benchmark.json", "--json")
    except ValueError as e:
        fail(str(e))
    try:
        config = preset_config(
            args.preset, steps=args.steps, crop_size=args.crop, batch_images=args.batch_images, frames=args.frames,
            test_frames=args.test_frames, max_test=args.max_test, max_train_bursts=args.max_train_bursts,
            seed=args.seed, seeds=args.seeds, fixed_pattern=not args.no_fixed_pattern, methods=methods,
            depth=args.depth, width=args.width, residual=not args.predict_clean, lr=args.lr,
            schedule=args.schedule, warmup_steps=args.warmup_steps, parallel=args.parallel, devices=args.devices,
            log_every=args.log_every)
    except ValueError as e:
        fail(f"{e} (check --preset and the size flags)")

    model, info, options = None, None, None
    if args.frame_size:
        options = {"frame_size": (args.frame_size, args.frame_size)}
    if not no_model:
        try:
            model, _, info = load_noise_model(run_dir, args.which)
            _, run = load_run_config(info["run_dir"])
        except (FileNotFoundError, ValueError) as e:
            fail(str(e))
        try:
            train_data, ds_name, data_dir, opts = run_dataset(run, args.dataset, args.data_dir, options)
        except (FileNotFoundError, ValueError, TypeError) as e:
            fail(f"dataset: {e}")
        info.update(noiselist=model.config.noise.noiselist, network=model.config.network)
        print(f"[benchmark] noise model {info['run_dir']} step {info['step']} ({args.which}); noiselist "
              f"{model.config.noise.noiselist}, {model.config.network}")
    else:
        ds_name, data_dir, opts = args.dataset, args.data_dir, options or {}
        try:
            train_data = load_dataset(ds_name, data_dir, **opts)
        except (FileNotFoundError, ValueError, TypeError) as e:
            fail(f"dataset: {e}")
    test_data = None
    if args.test_data_dir is not None:
        if data_dir is not None and os.path.realpath(args.test_data_dir) == os.path.realpath(data_dir):
            fail("--test_data_dir is the training folder; leave it out to test on its test split")
        try:
            test_data = load_dataset(ds_name, args.test_data_dir)
        except (FileNotFoundError, ValueError, TypeError) as e:
            fail(f"test dataset: {e}")
    print(f"[benchmark] train data {ds_name} {opts or ''} data_dir={data_dir}; test "
          f"{args.test_data_dir or 'its test split'}; methods {', '.join(methods)}")

    meta = {"noise_checkpoint": info, "dataset": ds_name, "data_dir": data_dir,
            "dataset_options": {k: list(v) if isinstance(v, tuple) else v for k, v in (opts or {}).items()}}
    try:
        result, images = bench.run_benchmark(train_data, model=model, test_data=test_data, config=config,
                                             save_dir=out / "denoisers", meta=meta)
    except ValueError as e:
        fail(str(e))
    result["noise_checkpoint"] = info
    result["setup"].update(data_dir=data_dir, test_data_dir=args.test_data_dir, dataset_options=meta["dataset_options"])

    test_ds = test_data or train_data
    raw = not is_srgb(test_ds)
    fig = plot_denoised(images, result, channel_names=test_ds.channel_names, raw=raw, n=config.n_figure)
    out.mkdir(parents=True, exist_ok=True)
    fig_path = out / "denoised.png"
    fig.savefig(fig_path, dpi=110)
    result["figure"] = str(fig_path)
    result["seconds"] = time.time() - t0
    json_path.parent.mkdir(parents=True, exist_ok=True)
    json_path.write_text(json.dumps(result, indent=1))
    print()
    print(results_table(result))
    for note in result["notes"]:
        print(f"note: {note}")
    print(f"[benchmark] wrote {json_path}, {fig_path}, denoisers in {out / 'denoisers'} ({result['seconds']:.0f} s)")
    return result


if __name__ == "__main__":
    run_main(main)
