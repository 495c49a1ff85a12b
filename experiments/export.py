"""Export a trained generator as the slim files `starlight_jax.synthesize` loads (no critic, no optimiser).

    python experiments/export.py --checkpoint checkpoints/<run> --out starlight_jax/assets/default --drop_fixed

``--out starlight_jax/assets/default`` replaces the model `synthesize(key, clean)` uses when given no params.
``--drop_fixed`` removes the ``fixed1``/``learnedfixed`` maps (they belong to one sensor and frame size) and
the rounding to the training data's quantisation step (one ADC or file format), so that the model applies
to images of any size and bit depth; only for ``noUnet`` generators. The command, run and step
are recorded in ``generator.json`` under ``info``, and the run's ``config.json`` is copied beside it, so
that ``evaluate.py``, ``sample.py`` and ``denoise_benchmark.py`` take the exported folder as ``--checkpoint``.
"""
from __future__ import annotations

import argparse
import json
import pathlib
import sys

REPO = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from starlight_jax.cli import add_checkpoint_flags, add_compilation_cache_flag, fail  # noqa: E402
from starlight_jax.cli import run_main, setup_compilation_cache  # noqa: E402


def _repo_relative(path) -> str:
    """``path`` relative to the repository when it lies inside it: no machine-specific paths in shipped files."""
    path = pathlib.Path(path)
    return str(path.relative_to(REPO)) if path.is_absolute() and path.is_relative_to(REPO) else str(path)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_checkpoint_flags(ap, REPO / "checkpoints")
    ap.add_argument("--out", required=True, help="folder for generator.json + generator.npz")
    ap.add_argument("--drop_fixed", action="store_true",
                    help="drop the sensor's fixed-pattern maps and output rounding")
    ap.add_argument("--note", default="", help="free text stored in generator.json")
    add_compilation_cache_flag(ap)
    args = ap.parse_args(argv)
    setup_compilation_cache(args.compilation_cache)

    from starlight_jax import files
    from starlight_jax.checkpoint import load_noise_model, save_generator, without_sensor_maps

    try:
        out = files.check_output_dir(args.out, "--out")
        for name in ("generator.json", "generator.npz", "config.json"):
            files.check_output_file(out / name, "--out")
        model, cfg, info = load_noise_model(args.checkpoint, args.which, root=args.root)
        if args.drop_fixed:
            model = without_sensor_maps(model)
        run_dir = pathlib.Path(info["run_dir"])
        config = files.read_json(run_dir / "config.json")
    except (FileNotFoundError, ValueError) as e:
        fail(str(e))
    info["run_dir"] = _repo_relative(run_dir)
    info = {**info, "trained_with": cfg.noiselist, "exported_noiselist": model.config.noise.noiselist,
            "command": " ".join(["python", "experiments/export.py", *(sys.argv[1:] if argv is None else argv)]),
            "note": args.note}
    folder = save_generator(model, args.out, info)
    # The run's config beside the generator: evaluate.py, sample.py and denoise_benchmark.py take the folder.
    config["run"]["workdir"] = _repo_relative(config["run"]["workdir"])
    (folder / "config.json").write_text(json.dumps(config, indent=2))
    print(f"[starlight-jax] wrote {folder / 'generator.json'} and generator.npz ({model.config.noise.noiselist}, "
          f"step {info['step']} of {info['run_dir']})")


if __name__ == "__main__":
    run_main(main)
