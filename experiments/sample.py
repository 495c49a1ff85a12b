"""Look at a trained noise model: figures against real data, or its noise on your own image.

    python experiments/sample.py                          # newest run under checkpoints/, figures in <run>/samples/
                                                          # (none yet: the shipped starlight_jax/assets/default)
    python experiments/sample.py --checkpoint checkpoints/<run> --which best --out figs/
    python experiments/sample.py --input photo.png        # writes <out>/photo_noisy.png
    python experiments/sample.py --input photo.png --pack_rggb   # RGB photo into a packed-RGGB raw model

The original's ``viewnoise.py``/notebook (SPEC §8). Figures (PNG): ``images.png`` (clean / real noisy /
learned / Gaussian / Poisson-Gaussian), ``components.png`` (each physical noise component), ``histograms.png``
(residual histograms, log y), ``nlf.png`` (noise level functions), ``power_spectra.png`` (residual power
spectra) and ``parameters.png`` + ``parameters.md`` (learned parameters, truth when known). How channels are
shown is in `starlight_jax.plots`.

With ``--input`` only the image is processed: it must have the model's channel count (a PNG holds 1 or 3
channels; a 4-channel packed-raw model needs ``--pack_rggb``). Output: ``<name>_noisy.png`` (8-bit; 16-bit
for 16-bit grey input), plus ``<name>_noisy.npy`` (float32 values) for packed raw.
"""
from __future__ import annotations

import argparse
import os
import pathlib
import sys

REPO = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from starlight_jax.cli import add_checkpoint_flags, add_compilation_cache_flag, fail  # noqa: E402
from starlight_jax.cli import run_main, setup_compilation_cache  # noqa: E402


def parse_args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_checkpoint_flags(ap, REPO / "checkpoints")
    ap.add_argument("--out", default=None, help="output folder (default <run>/samples/; for a shipped model --root/shipped_<name>/samples/)")
    ap.add_argument("--input", default=None, help="add the model's noise to this 8/16-bit image instead")
    ap.add_argument("--gain", type=float, default=None,
                    help="with --input: noise at this many times the model's analogue gain (e.g. 2 for twice the "
                         "ISO: shot variance x2, read variance x4; physics models)")
    ap.add_argument("--pack_rggb", action="store_true",
                    help="with --input: mosaic an RGB image into packed RGGB raw (for R, G1, G2, B models)")
    ap.add_argument("--dataset", default=None, choices=["synthetic", "pairs", "sidd", "starlight"],
                    help="default: the run's")
    ap.add_argument("--data_dir", default=None, help="default: the run's")
    ap.add_argument("--crop_size", type=int, default=None,
                    help="crop of the figures (default: the largest multiple of 64 <= 256 that fits the frames)")
    ap.add_argument("--max_bursts", type=int, default=8, help="test bursts for the statistics plots")
    ap.add_argument("--burst", type=int, default=0, help="test burst shown in images.png / components.png")
    ap.add_argument("--frame", type=int, default=0, help="frame of that burst")
    ap.add_argument("--seed", type=int, default=0)
    add_compilation_cache_flag(ap)
    return ap.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    if args.input is not None and not os.path.isfile(args.input):
        fail(f"--input {args.input} is not a file")
    if args.pack_rggb and args.input is None:
        fail("--pack_rggb goes with --input")
    if args.gain is not None and (args.input is None or not args.gain > 0):
        fail(f"--gain goes with --input and must be > 0, got {args.gain}")
    if args.crop_size is not None and (args.crop_size < 64 or args.crop_size % 64):
        fail(f"--crop_size must be a positive multiple of 64, got {args.crop_size}")
    if args.max_bursts < 1:
        fail(f"--max_bursts must be >= 1, got {args.max_bursts}")
    if not 0 <= args.burst < args.max_bursts:  # the burst shown is one of the first --max_bursts drawn
        fail(f"--burst must be in [0, --max_bursts = {args.max_bursts}), got {args.burst}")
    if args.frame < 0:
        fail(f"--frame must be >= 0, got {args.frame}")
    setup_compilation_cache(args.compilation_cache)

    import jax
    import numpy as np

    from starlight_jax import files, plots
    from starlight_jax.data.batches import largest_crop, max_frames, run_dataset
    from starlight_jax.checkpoint import load_noise_model, load_run_config, output_dir, resolve_run, run_or_default

    checkpoint, note = run_or_default(args.checkpoint, args.root)
    if note:
        print(f"[sample] {note}")
    try:
        run_dir = resolve_run(checkpoint, args.root)
        out = files.check_output_dir(args.out or output_dir(run_dir, args.root) / "samples", "--out")
        if args.input is not None:
            stem = pathlib.Path(args.input).stem
            for suffix in ("_noisy.png", "_noisy.npy"):
                files.check_output_file(out / f"{stem}{suffix}", "--out")
        model, cfg, info = load_noise_model(run_dir, args.which)
        run_dir = pathlib.Path(info["run_dir"])
        _, run = load_run_config(run_dir)
    except (FileNotFoundError, ValueError) as e:
        fail(str(e))
    title = f"{run_dir.name} step {info['step']}"

    if args.input is not None:
        names = _channel_names(run, model.config.channels, args)
        raw = not (run.dataset == "pairs" or dict(run.dataset_options).get("variant") == "srgb")
        try:
            image = plots.load_user_image(args.input, model.config.channels, names, pack_rggb=args.pack_rggb)
            noisy, shown = plots.noise_user_image(jax.random.key(args.seed), model, image, gain=args.gain,
                                                  channel_names=names, raw=raw)
        except ValueError as e:
            fail(str(e))
        out.mkdir(parents=True, exist_ok=True)
        path = out / f"{stem}_noisy.png"
        from starlight_jax.data.images import probe_image

        bits = 16 if probe_image(args.input).bits == 16 and not args.pack_rggb else 8
        plots.save_png(path, shown, bits=bits)
        note = "" if noisy.shape[:2] == image.shape[:2] else " (cropped to the model's fixed-pattern map)"
        print(f"[sample] {args.input}: model input {image.shape}, noisy {noisy.shape}{note}")
        print(f"[sample] wrote {path}")
        if model.config.channels == 4:
            np.save(out / f"{stem}_noisy.npy", noisy)
            print(f"[sample] wrote {out / f'{stem}_noisy.npy'} (float32 [H, W, 4] packed raw)")
        return [path]

    try:
        dataset, _, _, _ = run_dataset(run, args.dataset, args.data_dir)
        crop = args.crop_size or largest_crop(dataset, cfg.crop_size, cap=256)
        frames = min(cfg.frames, max_frames(dataset))
        paths = plots.write_figures(model, dataset, out, crop_size=crop, frames=frames,
                                    train_crop=cfg.crop_size, seed=args.seed, max_bursts=args.max_bursts,
                                    burst=args.burst, frame=args.frame, title=title,
                                    log=lambda m: print(f"[sample] {m}"))
    except (FileNotFoundError, ValueError) as e:
        fail(str(e))
    print(f"[sample] wrote {len(paths)} files to {out}:")
    for p in paths:
        print(f"  {p}")
    return paths


def _channel_names(run, channels: int, args) -> tuple:
    """The run's dataset channel names without loading it (for --input)."""
    name = args.dataset or run.dataset
    table = {"synthetic": ("R", "G1", "G2", "B"), "starlight": ("R", "G", "B", "NIR")}
    if name in table and channels == 4:
        return table[name]
    if name == "sidd" and channels == 4:
        return ("R", "G1", "G2", "B")
    return {1: ("Y",), 3: ("R", "G", "B")}.get(channels, tuple(f"c{i}" for i in range(channels)))


if __name__ == "__main__":
    run_main(main)
