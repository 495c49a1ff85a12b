"""Denoise an image with a saved denoiser (one written by experiments/denoise_benchmark.py).

    python experiments/denoise.py --checkpoint checkpoints/<run>/denoise_benchmark/denoisers/model \\
        --input noisy.png --output clean.png

Input: an 8- or 16-bit PNG (or TIFF/JPEG) with the denoiser's channel count (1 grey, 3 RGB), or a
``.npy`` float array ``[H, W, C]`` in [0, 1] for other counts (4-channel packed raw). Any H, W. Output:
PNG at the input's bit depth (16-bit input gives 16-bit output), or ``.npy`` (float32) when ``--output``
ends in ``.npy`` (required for channel counts a PNG cannot hold). The logic lives in `starlight_jax.denoise`.
"""
from __future__ import annotations

import argparse
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
    ap.add_argument("--checkpoint", required=True, help="a saved denoiser folder (config.json + params.npz)")
    ap.add_argument("--input", required=True, help="noisy image (.png/.tif/.jpg, or .npy)")
    ap.add_argument("--output", required=True, help="where to write the denoised image (.png or .npy)")
    ap.add_argument("--bits", type=int, default=None, choices=[8, 16], help="PNG bit depth (default: the input's)")
    add_compilation_cache_flag(ap)
    return ap.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    setup_compilation_cache(args.compilation_cache)
    import numpy as np

    from starlight_jax import files
    from starlight_jax.denoise import io
    from starlight_jax.denoise.train import denoise_images

    t0 = time.time()
    out = pathlib.Path(args.output)
    if out.suffix.lower() not in (".png", ".npy"):
        fail(f"--output {out} must end in .png or .npy")
    if os.path.exists(args.input) and os.path.exists(out) and os.path.samefile(args.input, out):  # links too
        fail(f"--output {out} is the --input file: choose another name (the input would be overwritten)")
    try:
        files.check_output_file(out, "--output")
        params, config, meta = io.load_denoiser(args.checkpoint)
        image, bits = io.read_image(args.input)
    except (FileNotFoundError, ValueError) as e:
        fail(str(e))
    if image.shape[-1] != config.channels:
        fail(f"{args.input} has {image.shape[-1]} channel(s) but the denoiser {args.checkpoint} was trained on "
             f"{config.channels}-channel images ({meta.get('dataset', 'unknown data')}); use a denoiser trained "
             f"on {image.shape[-1]}-channel data" + (", or pass a .npy [H, W, 4] packed raw array"
                                                      if config.channels == 4 else ""))
    if out.suffix.lower() == ".png" and config.channels not in (1, 3):
        fail(f"a PNG holds 1 or 3 channels but this denoiser outputs {config.channels}: use --output <name>.npy")
    padded, (h, w) = io.pad_to_multiple(image, config.multiple)
    den = denoise_images(params, padded[None], config)[0, :h, :w]
    try:
        io.write_image(out, den, bits=args.bits or (16 if bits == 16 else 8))
    except ValueError as e:
        fail(str(e))
    print(f"[denoise] {args.input} {image.shape} -> {out} ({time.time() - t0:.1f} s)")
    return np.asarray(den)


if __name__ == "__main__":
    run_main(main)
