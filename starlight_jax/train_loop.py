"""The training loop: data, compiled steps, evaluation, logging and Orbax checkpoints with exact resume.

`train_and_evaluate(cfg, run)` is what ``experiments/train.py`` calls. Layout of a run folder::

    <workdir>/config.json          TrainConfig + RunConfig (what `--resume` and `load_run` read)
    <workdir>/config_history.jsonl one line per configuration change accepted on resume (step, old, new)
    <workdir>/latest/<step>/       the last `keep` checkpoints: train state + loader position
    <workdir>/best/<step>/         the checkpoint with the lowest mean test KLD (image domain); not kept
                                   when the dataset has no test split
    <workdir>/init/0/              the initial state (after the data init), for measuring what training did
    <workdir>/metrics.jsonl        one JSON line per log / eval
    <workdir>/tb/                  TensorBoard event files
    <workdir>/.lock                held while a training runs (a second one is refused)

Orbax writes each checkpoint to a temporary folder and renames it when complete, so a crash mid-save
leaves the previous checkpoint intact; the next start removes the temporary folder
(`starlight_jax.run_folder` keeps the folder consistent across kills and resumes).

Without a test split (e.g. a pairs folder of fewer than 5 pairs) the KLD is measured on training bursts
and logged as ``train_kld_mean``/``train_kld_sum`` with ``"test_is_train": true``.

Several processes (`jax.distributed`, docs/multihost.md) train one model over a mesh of all their devices
(`starlight_jax.parallel.data_devices`); each feeds its rows of every global batch. Process 0 alone holds
the lock and writes ``config.json``, ``metrics.jsonl``, ``tb/`` and the messages; every process takes part
in the Orbax saves and restores (which need the folder on a file system they share) and evaluates the same
test bursts on its own host copy of the generator, so the best/latest decisions agree. Stops (signals, the
time budget) are agreed between the processes before each step, so all stop after the same one.
"""
from __future__ import annotations

import contextlib
import dataclasses
import functools
import json
import math
import pathlib
import signal
import time
from typing import Any, Optional

import jax
import numpy as np
import orbax.checkpoint as ocp

from starlight_jax import files, run_folder, training
from starlight_jax.data_init import data_init
from starlight_jax.checkpoint import (checkpoint_managers, load_config, restore_state,  # noqa: F401 (re-exported)
                                      config_dict as _config_dict, save_checkpoint as _save,
                                      save_config as _save_config)
from starlight_jax.metrics.kld import kld_starlight_per_burst
from starlight_jax.noise import MAP_PARAMS
from starlight_jax.parallel import DataParallel, all_processes, data_devices
from starlight_jax.run_config import RunConfig



class NonFiniteLoss(RuntimeError):
    pass


def _data_init(cfg: training.TrainConfig, dataset, global_batch: int, max_batches: int = 8) -> dict:
    """`data_init` on the first ``max_batches`` training batches of epoch 0 (deterministic in the
    seed): the loader's bursts depend on their position only, so these are the first bursts read one by one.
    With ``isp``, large crops of every training pair; with ``tone``, the level curves are fitted on the
    whole images (one frame each, at most ``TONE_BURSTS``)."""
    from starlight_jax.data.batches import largest_crop, load_batches, residual_arrays

    noise = cfg.generator.noise
    n_train = len(dataset.split("train"))
    n_bursts = max(1, min(max_batches, n_train // global_batch)) * global_batch
    crop = cfg.crop_size
    if noise.isp:  # moments of lagged correlations want many pixels: large crops of every pair
        crop = max(crop, largest_crop(dataset, cfg.crop_size, cap=256))
        n_bursts = min(n_train, 64)
    batches = load_batches(dataset, "train", crop_size=crop, frames=cfg.frames, seed=cfg.seed,
                           max_bursts=n_bursts)
    # The model adds the fixed1 map itself: fit the rest (as the baselines are fitted).
    noisy, clean, noisy_raw = residual_arrays(dataset, batches, noise.fixed)
    tone_pairs = None
    if noise.tone:
        whole = load_batches(dataset, "train", crop_size=max(cfg.crop_size, largest_crop(dataset, cfg.crop_size)),
                             frames=1, seed=cfg.seed, max_bursts=min(n_train, TONE_BURSTS))
        tone_pairs = residual_arrays(dataset, whole, noise.fixed)[:2]
    return data_init(cfg, noisy, clean, clipped=noisy_raw, tone_pairs=tone_pairs)


TONE_BURSTS = 64  # of whole (<= 512²) training images for the tone curves: 16.8 M pixels per channel at most


@functools.lru_cache(maxsize=4)
def _compiled_eval_step(cfg: training.TrainConfig):
    return jax.jit(functools.partial(training.eval_step, cfg))  # one compilation per config, not per eval


def evaluate(cfg: training.TrainConfig, g_params, test_batches, fixed_key) -> dict:
    """Mean and summed test KLD (SPEC §6.1, image domain, 64×64 patches) over the test bursts, and the
    noise-structure metrics of all test images pooled (`structure.log_metrics`: ``test_block2_kld``, ...)."""
    from starlight_jax import structure

    generate = _compiled_eval_step(cfg)
    gen, real, clean = [], [], []
    for i, batch in enumerate(test_batches):
        gen.append(np.asarray(generate(g_params, jax.random.fold_in(fixed_key, i), batch)))
        real.append(batch["noisy"])
        clean.append(np.broadcast_to(batch["clean"], batch["noisy"].shape))
    gen, real = np.concatenate(gen), np.concatenate(real)
    kld = kld_starlight_per_burst(gen, real)
    return {"test_kld_mean": float(kld.mean), "test_kld_sum": float(kld.sum),
            **structure.log_metrics(real, gen, np.concatenate(clean), step=cfg.quantize)}


def _physical_values(cfg: training.TrainConfig, g_params) -> dict:
    from starlight_jax.noise import MAP_PARAMS, scales

    values = scales(g_params["noise"], cfg.generator.noise)
    return {f"noise/{k}": float(np.asarray(v).ravel()[0]) if np.size(v) == 1 else [float(x) for x in np.ravel(v)]
            for k, v in values.items() if k not in MAP_PARAMS}


def generator_steps(cfg: training.TrainConfig, step: int, batches_per_epoch: Optional[int] = None) -> int:
    """How many generator steps the first ``step`` critic steps included (`training.generator_steps_at`)."""
    if cfg.compat == "starlight":
        s = np.arange(cfg.critic_warmup, step)
        return int(np.count_nonzero((s % batches_per_epoch) % cfg.n_critic == 0))
    return max(0, -(-(step - cfg.critic_warmup) // cfg.n_critic))


def train_and_evaluate(cfg: training.TrainConfig, run: RunConfig, *, resume: bool = False, dataset=None,
                       log=print, allow_config_change=(), stop_requested=None, preset=None) -> dict:
    """Trains a noise model, evaluating and checkpointing as it goes.

    Args:
      cfg: what to train.
      run: how to run it and where to write (the run folder, ``run.workdir``).
      resume: continue from ``<workdir>/latest``; the stored configuration must match (`run_folder`).
      dataset: the dataset of ``run`` if already loaded.
      log: where messages go.
      allow_config_change: fields that may differ from the stored configuration on resume (a subset of
        `run_folder.SAFE_FIELDS`); each accepted change is recorded in ``config_history.jsonl``.
      stop_requested: returns a signal number that arrived before training started and was not acted
        on (e.g. `starlight_jax.cli.interrupted`), or None; the loop then stops before its first step.
      preset: how the configuration was chosen (e.g. ``{"name": "cpu", "reason": ...}`` from
        ``experiments/train.py``), stored as ``config.json``'s ``"preset"``; not compared on resume.

    Returns:
      The final metrics: losses, the last evaluation (``test_kld_*``, or ``train_kld_*`` with
      ``test_is_train`` when the dataset has no test split), ``noise/*`` values, ``step``,
      ``generator_steps``, ``stopped_by_signal`` (the signal number, or None).

    Raises:
      run_folder.RunFolderBusy: another training holds the run folder.
      FileExistsError: the folder holds checkpoints and ``resume`` is False.
      ValueError: a changed configuration on resume, a bad device count or dataset.
      NonFiniteLoss: a loss became NaN/inf (the last good state is checkpointed first).
    """
    workdir = pathlib.Path(run.workdir).resolve()
    primary = jax.process_index() == 0
    with contextlib.ExitStack() as stack:
        refused = None
        if primary:  # the others wait for its outcome: a refusal must not leave them in a collective
            try:
                stack.enter_context(run_folder.lock(workdir))
                run_folder.remove_partial_checkpoints(workdir, log)
            except run_folder.RunFolderBusy as e:
                refused = e
        if all_processes([refused is not None]).any():
            raise refused or run_folder.RunFolderBusy(f"{workdir}: process 0 could not take the run folder "
                                                      f"(its error says why)")
        return _train_locked(cfg, run, workdir, resume, dataset, log if primary else lambda *_: None,
                             allow_config_change, stop_requested, preset, primary)


def _train_locked(cfg, run, workdir, resume, dataset, log, allow_config_change, stop_requested, preset,
                  primary) -> dict:
    from starlight_jax.data import PipelineConfig, load_dataset, make_loader

    if jax.process_count() == 1 and run.devices is not None and run.devices > jax.local_device_count():
        raise ValueError(f"devices={run.devices} but this process has {jax.local_device_count()} local device(s)")
    dp = DataParallel(run.parallel, data_devices(run.devices))
    global_batch = cfg.batch_size * dp.n  # --batch_size is per device, of all processes' devices
    if dataset is None:
        dataset = load_dataset(run.dataset, run.data_dir, **dict(run.dataset_options))
    if dataset.channels != cfg.channels:
        raise ValueError(f"dataset {run.dataset!r} has {dataset.channels} channels but the model was configured "
                         f"for {cfg.channels}")
    has_test = len(dataset.test) > 0
    kld_prefix = "test" if has_test else "train"

    latest, best = checkpoint_managers(workdir, run.keep, with_best=has_test)
    resume_step = latest.latest_step()
    if resume_step is not None and not resume:
        raise FileExistsError(f"{workdir} already holds checkpoints; pass --resume to continue that run or "
                              f"choose another --save_path/--run_name")
    if resume and resume_step is None:
        log(f"nothing to resume in {workdir / 'latest'} (no checkpoint): starting at step 0")
    if resume_step is not None and (workdir / "config.json").is_file():
        # Before anything is compiled: a changed noiselist would otherwise end in Orbax's tree mismatch.
        old = files.read_json(workdir / "config.json")  # a truncated file: a ValueError naming it
        old["train"].setdefault("precision", "float32")  # folders from before the field trained in float32
        run_folder.check_resume_config(workdir, old, _config_dict(cfg, run), resume_step, allow_config_change, log,
                                       record=primary)
    if not has_test:
        log(f"warning: dataset {run.dataset!r} has no test split ({dataset.info.get('split_rule', 'no rule')}); "
            f"the KLD is measured on training bursts (logged as train_kld_mean with test_is_train: true) and no "
            f"best/ checkpoint is kept")

    # compat='starlight': the original's DistributedSampler without set_epoch, one order for all epochs (§12.15).
    pipe = PipelineConfig(batch_size=global_batch, crop_size=cfg.crop_size, frames=cfg.frames, seed=cfg.seed,
                          reshuffle=cfg.compat != "starlight")
    fixed = dataset.fixed_pattern if cfg.generator.noise.fixed else None
    init_values = None
    if cfg.init_from_data and resume_step is None:  # a resumed state replaces the initial one whole
        init_values = _data_init(cfg, dataset, global_batch)
        shown = {k: v for k, v in init_values.items() if k not in MAP_PARAMS}
        how = ("the camera pipeline's method-of-moments fit" if cfg.generator.noise.isp
               else "a Poisson-Gaussian fit")
        log(f"initial physical values from {how} of the training pairs: {shown}"
            + ("; corr kernel from the residuals' power spectrum" if "corr_kernel" in init_values else "")
            + ("; tone curves from the residuals' level and mean per intensity" if "tone_gain" in init_values
               else ""))
    state = training.create_train_state(jax.random.key(cfg.seed), cfg, fixed_pattern=fixed,
                                        init_values=init_values)
    loader_start = (0, 0)
    if resume_step is not None:
        state, loader_state, step = restore_state(workdir, state)
        loader_start = (loader_state["epoch"], loader_state["index"])
        log(f"resumed from {workdir / 'latest'} at step {step} (epoch {loader_start[0]}, batch {loader_start[1]})")
    else:  # the untrained model, so that what training changed can be measured (`--which init`)
        with ocp.CheckpointManager(workdir / "init", options=ocp.CheckpointManagerOptions(
                enable_async_checkpointing=False), item_names=("state", "loader")) as init_manager:
            _save(init_manager, 0, state, {"epoch": 0, "index": 0})
    if primary:
        _save_config(workdir, cfg, run, preset=preset)
    # The mesh spans every process's devices: the train loader (sharded by JAX process, its default) gives
    # this process its rows of each global batch; every process evaluates the same, whole test bursts.
    loader = make_loader(dataset, "train", pipe, start=loader_start)
    whole = {"process_index": 0, "process_count": 1}
    total = run.steps if run.steps is not None else run.epochs * loader.batches_per_epoch
    test_pipe = dataclasses.replace(pipe, batch_size=1)
    test_loader = make_loader(dataset, "test" if has_test else "train", test_pipe, **whole)
    test_batches = [test_loader.batch_at(0, i) for i in range(min(run.test_bursts, test_loader.batches_per_epoch))]
    test_loader.close()

    # Not donated: after a non-finite loss the state before the step must still exist to be checkpointed.
    d_step = dp.step(functools.partial(training.d_step, cfg), donate=False)
    lpips_params = None
    if cfg.generator_loss != "none":
        from starlight_jax.perceptual import load_perceptual

        lpips_params = load_perceptual(cfg.generator_loss)[1]
    g_compiled = dp.step(functools.partial(training.g_step, cfg), replicated_args=1)
    lpips_params = dp.replicate(lpips_params)
    g_step = lambda state, batch: g_compiled(state, batch, lpips_params)  # noqa: E731
    state = dp.put_state(state)
    eval_key = jax.random.key(cfg.seed + 12345)
    step = int(dp.get_state(state).step)
    logs = _Logs(workdir, step, log) if primary else _Logs(None, step, log)

    from tqdm import tqdm

    stop = {"signal": None}  # agreed by all processes (`should_stop`)
    pending = {"signal": None}  # arrived in this process

    def on_signal(signum, _frame):
        pending["signal"] = signum

    old_handlers = {s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
    if stop_requested is not None and stop_requested() is not None:
        pending["signal"] = stop_requested()
    last = {"step": step, "position": loader.position}  # position: the loader's, matching `state`
    history = {}
    bar = tqdm(total=total, initial=step, disable=not (run.progress and primary), desc="train", unit="step",
               dynamic_ncols=True)

    def checkpoint(state, tag_metrics=None):
        host = dp.get_state(state)
        position = {"epoch": last["position"][0], "index": last["position"][1], "seed": cfg.seed}
        _save(latest, int(host.step), host, position)
        if tag_metrics is not None and best is not None:
            _save(best, int(host.step), host, position, metrics=tag_metrics)

    deadline = time.monotonic() + run.max_seconds if run.max_seconds else math.inf

    def should_stop() -> bool:
        """A signal or the time budget in any process stops all of them, after the same step."""
        signals, out_of_time = all_processes([pending["signal"] or 0, time.monotonic() >= deadline]).max(axis=0)
        stop["signal"] = int(signals) or None
        return bool(signals or out_of_time)

    def evaluate_and_checkpoint(state):
        # On a host copy: every process evaluates the same bursts alone, no collective.
        ev = evaluate(cfg, jax.device_get(dp.get_state(state).g_params), test_batches, eval_key)
        shown = ev if has_test else {k.replace("test_", "train_", 1): v for k, v in ev.items()}
        history.update(shown)
        logs.row({"step": step, **shown, **({} if has_test else {"test_is_train": True})},
                 {f"{kld_prefix}/{k}": v for k, v in shown.items()})
        checkpoint(state, ev)
        last["step"] = step

    try:
        while step < total and not should_stop():
            batch = dp.put_batch(next(loader))
            new_state, d_metrics = d_step(state, batch)
            out = dp.metrics(d_metrics)
            if training.generator_steps_at(cfg, step, loader.batches_per_epoch):
                new_state, g_metrics = g_step(new_state, batch)
                out.update(dp.metrics(g_metrics))
            bad = [k for k, v in out.items() if not math.isfinite(v)]
            if bad:
                raise NonFiniteLoss(f"non-finite {bad} at step {step}: {out}; the last good checkpoint is kept "
                                    f"in {workdir / 'latest'}")
            state, step, last["position"] = new_state, step + 1, loader.position
            history.update(out)
            bar.update(1)
            if step % run.log_every == 0 or step == total:
                record = {"step": step, **out, **_physical_values(cfg, _host_noise(dp, state))}
                scalars = {}
                for k, v in record.items():
                    if isinstance(v, float):
                        scalars[k if "/" in k else f"train/{k}"] = v
                    elif isinstance(v, list):  # per-channel (or periodic) values
                        scalars.update({f"{k}/{i}": x for i, x in enumerate(v)})
                logs.row(record, scalars)
                bar.set_postfix(d=f"{out['d_loss']:.3g}", g=f"{history.get('g_loss', float('nan')):.3g}",
                                kld=f"{history.get(f'{kld_prefix}_kld_mean', float('nan')):.3g}")
            if step % run.eval_every == 0 or step == total:
                evaluate_and_checkpoint(state)
        if step > last["step"] and stop["signal"] is None:  # the time budget ran out between evaluations
            evaluate_and_checkpoint(state)
    except BaseException as error:
        # With several processes only an error they all raised (a non-finite loss: the metrics are the
        # same everywhere) can be saved: a save is collective, and the others are elsewhere.
        if step > last["step"] and (jax.process_count() == 1 or isinstance(error, NonFiniteLoss)):
            try:
                checkpoint(state)  # the last good state, so the crash loses nothing
            except Exception as save_error:  # keep the original error
                log(f"could not save a checkpoint after the error: {save_error}")
        raise
    finally:
        for s, h in old_handlers.items():
            signal.signal(s, h)
        bar.close()
        loader.close()
        logs.close()
    if step > last["step"]:
        checkpoint(state)
    if stop["signal"] is not None and step >= total:
        stop["signal"] = None  # it came during the last step: the run is complete
    if stop["signal"] is not None and latest.latest_step() is None:
        log(f"stopped by {signal.Signals(stop['signal']).name} before the first step; nothing was trained")
    elif stop["signal"] is not None:
        log(f"stopped by {signal.Signals(stop['signal']).name} at step {step} of {total}; checkpoint saved in "
            f"{workdir / 'latest'}, continue with --resume")
    elif step < total:
        log(f"stopped after the time budget of {run.max_seconds:.0f} s at step {step} of {total}; checkpoint "
            f"saved, continue with --resume")
    history["step"] = step
    history["generator_steps"] = generator_steps(cfg, step, loader.batches_per_epoch)
    history["stopped_by_signal"] = stop["signal"]
    if not has_test:
        history["test_is_train"] = True
    history.update(_physical_values(cfg, _host_noise(dp, state)))
    return history


def _host_noise(dp: DataParallel, state) -> dict:
    """The generator's noise parameters on the host (``{"noise": ...}``): reading them is then no collective."""
    return {"noise": jax.device_get(dp.get_state(state).g_params["noise"])}


class _Logs:
    """``metrics.jsonl`` and TensorBoard of process 0 (``workdir`` None: another process, nothing written)."""

    def __init__(self, workdir: Optional[pathlib.Path], step: int, log):
        self.file = self.writer = None
        if workdir is None:
            return
        from tensorboardX import SummaryWriter

        # Rows and events after the restored step were written by a run killed before its next checkpoint.
        run_folder.truncate_metrics(workdir / "metrics.jsonl", step, log)
        self.writer = SummaryWriter(str(workdir / "tb"), purge_step=step + 1)
        self.file = open(workdir / "metrics.jsonl", "a")

    def row(self, row: dict, scalars: dict):
        if self.file is None:
            return
        self.file.write(json.dumps(row) + "\n")
        self.file.flush()
        for k, v in scalars.items():
            self.writer.add_scalar(k, v, row["step"])

    def close(self):
        if self.file is not None:
            self.writer.close()
            self.file.close()
