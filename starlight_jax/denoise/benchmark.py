"""The downstream test of a noise model (issue #8): train one denoiser per noise source, score on real pairs.

`run_benchmark(train_data, model=..., config=...)` trains the same `DnCNN` (same init, steps, batches and
step keys for a given seed) on pairs made from the clean crops of the train split by

* ``"model"``: (a) the learned noise model (`starlight_jax.checkpoint.load_noise_model`);
* ``"gaussian"``: (b) `fit_gaussian` on the train split;
* ``"poisson_gaussian"``: (c) `fit_poisson_gaussian` on the train split;
* ``"binned_gaussian"``: (e) `fit_binned_gaussian` (per channel, per clean-intensity bin mean and std);
* ``"real"``: (d) the real noisy images of those same crops,

and scores each on held-out real noisy/clean pairs: the test split, or every pair of ``test_data`` when
given (cross-dataset: the test scenes and cameras then differ from the training ones). Test images are
scored whole (full frames, the first ``test_frames`` frames of each burst); PSNR and SSIM
(`starlight_jax.metrics`, peak 1) are averaged over images.

**Seeds and ties.** Each method's denoiser is trained ``seeds`` times, with seeds ``seed, seed + 1, ...``:
seed s fixes the init, the crops and their order (the loader's seed) and the step keys, and is the same
for every method, so methods differ only by their noisy images. A method's score is the mean over seeds
of its test PSNR (SSIM), its *spread* the max - min over seeds (`spread`). Two methods A, B **tie** when

.. math::

   |\bar p_A - \bar p_B| \le \max(\mathrm{spread}_A, \mathrm{spread}_B)

(`is_tie`): the gap is no larger than how much either moves with the seed alone. The noisy input has no
seeds (spread 0), so a method ties with it when the gap is within the method's own spread. With one seed
nothing can be called (ties are None). Gaps are reported to (d) real pairs (negative = worse than
training on real pairs) and to the noisy input.

The fixed pattern of the data (e.g. the synthetic data's black-level error and column pattern) is handled
as in `starlight_jax.evaluation`: baselines fitted to ``noisy - clean - fixed_pattern`` add it back, and so
does a learned model that lacks ``fixed1`` (`starlight_jax.denoise.train` note); ``fixed_pattern=False``
fits and samples without it.

Sizes: `PRESETS` names whole sets of sizes (``"standard"``, the default, chosen by measurement in
docs/denoise_benchmark.md; ``"tiny"`` for smoke tests); `preset_config` builds a `BenchmarkConfig` from
one with overrides.

The result is a JSON-able dict (keys in `run_benchmark`), printed by `results_table`, drawn by
`plot_denoised`.
"""
from __future__ import annotations

import dataclasses
import pathlib
import time
from typing import Optional, Sequence

import jax
import numpy as np

from starlight_jax.denoise.model import DenoiserConfig, count_params
from starlight_jax.denoise.train import (DenoiseTrainConfig, NoiseSource, baseline_source, denoise_images,
                                         learned_source, train_denoiser)

METHODS = ("model", "gaussian", "poisson_gaussian", "binned_gaussian", "real")
LABELS = {"model": "(a) learned noise model", "gaussian": "(b) Gaussian", "poisson_gaussian": "(c) Poisson-Gaussian",
          "binned_gaussian": "(e) binned Gaussian", "real": "(d) real pairs"}
SHORT = {m: LABELS[m].split()[0] for m in METHODS}  # "(a)", ...
BASELINES = ("gaussian", "poisson_gaussian", "binned_gaussian")
# A denoiser whose final train L1 is within 2 % of its input's has (nearly) become the identity: with the
# residual output and ReLUs, too large a step can kill every hidden unit, after which only the output
# bias (the mean residual, ~0) is learned.
COLLAPSE = 0.98


# Flat sizes of the named presets. "standard" is BenchmarkConfig's default, chosen by measurement on a 2-core
# CPU (docs/denoise_benchmark.md): 4 methods x 2 seeds in ~10 minutes of two cores. A peak lr of 2e-3 killed
# whole denoisers (see COLLAPSE); 1e-3 with a warm-up and a cosine decay to 0 did not. "tiny" checks plumbing.
PRESETS = {
    "tiny": {"steps": 3, "crop_size": 64, "batch_images": 4, "depth": 2, "width": 4, "lr": 1e-3,
             "schedule": "constant", "warmup_steps": 0},
    "standard": {"steps": 300, "crop_size": 64, "batch_images": 8, "depth": 8, "width": 32, "lr": 1e-3,
                 "schedule": "cosine", "warmup_steps": 30},
}
_STD = PRESETS["standard"]


@dataclasses.dataclass(frozen=True)
class BenchmarkConfig:
    """Sizes and options of one benchmark run.

    Attributes:
      steps: training steps per denoiser.
      crop_size: training crop side (a multiple of 64, as the data pipeline requires).
      batch_images: images per step = bursts per step x ``frames``.
      frames: frames per training burst (None: min(4, the fewest frames of any train burst)).
      test_frames: frames scored per test burst (raw bursts; sRGB pairs have 1).
      max_test: score only the first N test bursts (None: all).
      max_train_bursts: fit the baselines on the first N train bursts of epoch 0 (None: all).
      seed: the first seed (loader, init and step keys; the same for every method).
      seeds: denoisers per method, with seeds ``seed, ..., seed + seeds - 1`` (the module docstring's
        spread and ties need >= 2).
      fit_seed: the loader seed of the crops the baselines are fitted on; apart from the denoisers' seeds,
        so that the noise sources under test stay the same whatever ``seed`` (like a learned model).
      fixed_pattern: add the data's fixed pattern to synthetic pairs (see the module docstring).
      methods: which of `METHODS` to train.
      denoiser: the network (its ``channels`` is set from the data).
      train: the optimiser.
      parallel: ``"shard"`` or ``"pmap"`` (`starlight_jax.parallel.DataParallel`).
      devices: use the first N local devices (None: all); bursts per step must divide over them.
      log_every: print the training loss every N steps (0: never).
      n_figure: test images shown in the figure.
    """

    steps: int = _STD["steps"]
    crop_size: int = _STD["crop_size"]
    batch_images: int = _STD["batch_images"]
    frames: Optional[int] = None
    test_frames: int = 2
    max_test: Optional[int] = None
    max_train_bursts: Optional[int] = None
    seed: int = 0
    seeds: int = 2
    fit_seed: int = 0
    fixed_pattern: bool = True
    methods: tuple = METHODS
    denoiser: DenoiserConfig = DenoiserConfig(depth=_STD["depth"], width=_STD["width"])
    train: DenoiseTrainConfig = DenoiseTrainConfig(lr=_STD["lr"], schedule=_STD["schedule"],
                                                   warmup_steps=_STD["warmup_steps"])
    parallel: str = "shard"
    devices: Optional[int] = None
    log_every: int = 50
    n_figure: int = 2

    def __post_init__(self):
        for name in ("steps", "batch_images", "test_frames", "seeds"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ValueError(f"{name} must be a positive int, got {v!r}")
        for name in ("frames", "max_test", "max_train_bursts", "devices"):
            v = getattr(self, name)
            if v is not None and (isinstance(v, bool) or not isinstance(v, int) or v < 1):
                raise ValueError(f"{name} must be a positive int or None, got {v!r}")
        if self.crop_size < 64 or self.crop_size % 64:
            raise ValueError(f"crop_size must be a positive multiple of 64, got {self.crop_size}")
        for name in ("seed", "fit_seed"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 0:
                raise ValueError(f"{name} must be an int >= 0, got {v!r}")
        bad = [m for m in self.methods if m not in METHODS]
        if bad or not self.methods or len(set(self.methods)) != len(self.methods):
            raise ValueError(f"methods must be distinct names from {METHODS}, got {self.methods}")


_DENOISER_KEYS = ("depth", "width", "residual")
_TRAIN_KEYS = ("lr", "schedule", "warmup_steps")


def preset_config(preset: str = "standard", **overrides) -> BenchmarkConfig:
    """A `BenchmarkConfig` from the sizes of ``PRESETS[preset]`` with ``overrides`` on top.

    Args:
      preset: a key of `PRESETS`.
      **overrides: `BenchmarkConfig` fields, or the preset's flat keys ``depth``, ``width``, ``residual``
        (the `DenoiserConfig`) and ``lr``, ``schedule``, ``warmup_steps`` (the `DenoiseTrainConfig`). A value
        of None keeps the preset's (so CLI flags left unset can be passed as they are).

    Raises:
      ValueError: an unknown preset or key, or a bad value (from the configs' checks).
    """
    if preset not in PRESETS:
        raise ValueError(f"preset must be one of {sorted(PRESETS)}, got {preset!r}")
    fields = {f.name for f in dataclasses.fields(BenchmarkConfig)}
    bad = sorted(set(overrides) - fields - set(_DENOISER_KEYS) - set(_TRAIN_KEYS))
    if bad:
        raise ValueError(f"unknown benchmark option(s) {bad}")
    flat = {**PRESETS[preset], **{k: v for k, v in overrides.items() if v is not None}}
    den = {k: flat.pop(k) for k in _DENOISER_KEYS if k in flat}
    tr = {k: flat.pop(k) for k in _TRAIN_KEYS if k in flat}
    flat["denoiser"] = dataclasses.replace(flat.get("denoiser", DenoiserConfig()), **den)
    flat["train"] = dataclasses.replace(flat.get("train", DenoiseTrainConfig()), **tr)
    return BenchmarkConfig(**flat)


# ------------------------------------------------------------------------------------------------------
# Data
# ------------------------------------------------------------------------------------------------------
def load_test_images(dataset, *, frames: int, max_bursts: Optional[int] = None,
                     splits: Sequence[str] = ("test",)) -> dict:
    """Full-frame test images: the first ``frames`` frames of every burst of ``splits``.

    Returns:
      ``{"clean": [N] list of [H, W, C], "noisy": same, "names": [N] "<burst>#<frame>"}`` (sizes may differ).
    """
    clean, noisy, names = [], [], []
    n_bursts = 0
    for split in splits:
        src = dataset.split(split)
        for i in range(len(src)):
            if max_bursts is not None and n_bursts >= max_bursts:
                break
            t = min(frames, src.info(i).num_frames)
            rec = src.read(i, 0, t)
            for f in range(t):
                clean.append(rec["clean"][f])
                noisy.append(rec["noisy"][f])
                names.append(f"{src.info(i).name}#{f}")
            n_bursts += 1
    if not clean:
        raise ValueError(f"dataset {dataset.name!r} has no bursts in split(s) {list(splits)} to test on")
    return {"clean": clean, "noisy": noisy, "names": names}


def _by_shape(images: list) -> dict:
    groups = {}
    for i, x in enumerate(images):
        groups.setdefault(x.shape, []).append(i)
    return groups


@jax.jit
def _scores(a, b):
    from starlight_jax.metrics import psnr, ssim

    return psnr(a, b), ssim(a, b)


def score_images(images: list, clean: list) -> dict:
    """Per-image PSNR/SSIM (peak 1) of ``images`` against ``clean`` and their means."""
    psnr = np.zeros(len(images))
    ssim = np.zeros(len(images))
    for _, idx in _by_shape(images).items():
        a = np.stack([images[i] for i in idx])
        b = np.stack([clean[i] for i in idx])
        p, s = _scores(a, b)
        psnr[idx], ssim[idx] = np.asarray(p), np.asarray(s)
    return {"psnr": float(psnr.mean()), "ssim": float(ssim.mean()), "psnr_per_image": psnr.tolist(),
            "ssim_per_image": ssim.tolist()}


def denoise_all(params, config: DenoiserConfig, images: list) -> list:
    """`denoise_images` over a list of ``[H, W, C]`` images of possibly different sizes."""
    out = [None] * len(images)
    for _, idx in _by_shape(images).items():
        den = denoise_images(params, np.stack([images[i] for i in idx]), config)
        for j, i in enumerate(idx):
            out[i] = den[j]
    return out


# ------------------------------------------------------------------------------------------------------
# Benchmark
# ------------------------------------------------------------------------------------------------------
def _sources(config: BenchmarkConfig, dataset, model, frames: int, notes: list, log) -> tuple[dict, dict]:
    from starlight_jax import evaluation

    fp = dataset.fixed_pattern if config.fixed_pattern else None
    sources, fitted = {}, {}
    if "model" in config.methods:
        if model is None:
            raise ValueError("method 'model' needs a noise model (pass model=, or leave 'model' out of methods)")
        evaluation.check_channels(model, dataset)
        noise = model.config.noise
        if noise.fixed or noise.learned_fixed:
            fmap = model.params["noise"]["fixed_pattern" if noise.fixed else "learned_fixed"]
            if dataset.frame_shape is None or any(m < f for m, f in zip(fmap.shape[:2], dataset.frame_shape)):
                raise ValueError(f"the noise model's fixed-pattern map is {tuple(fmap.shape[:2])} but the data's "
                                 f"frames are {dataset.frame_shape}: train and test on frames like the model's")
        elif fp is not None:
            notes.append(f"the learned model's noiselist ({noise.noiselist}) has no fixed pattern; the data's "
                         f"fixed pattern (mean {float(np.mean(fp)):.4g}) is added to its samples, as to the "
                         f"baselines'")
        sources["model"] = learned_source(model, fp)
    if set(BASELINES) & set(config.methods):
        t0 = time.time()
        base = evaluation.fit_baselines(dataset, crop_size=config.crop_size, frames=frames, seed=config.fit_seed,
                                        max_bursts=config.max_train_bursts,
                                        subtract_fixed_pattern=config.fixed_pattern)
        log(f"[benchmark] baselines fitted on {base.n_bursts} train bursts ({time.time() - t0:.0f} s)")
        fitted = {**{m: getattr(base, m).to_dict() for m in BASELINES},
                  "fixed_pattern_subtracted": base.fixed_pattern, "n_bursts": base.n_bursts}
        for m in BASELINES:
            if m in config.methods:
                sources[m] = baseline_source(m, getattr(base, m), fp if base.fixed_pattern else None)
    if "real" in config.methods:
        sources["real"] = None
    return sources, fitted


def run_benchmark(train_data, *, model=None, test_data=None, config: BenchmarkConfig = BenchmarkConfig(),
                  save_dir=None, meta: Optional[dict] = None, log=print) -> tuple[dict, dict]:
    """Trains ``config.seeds`` denoisers per method and scores them on real held-out pairs.

    Args:
      train_data: a `BurstDataset`; its train split gives the clean crops (and (d)'s noisy ones), and fits
        the baselines.
      model: the learned `NoiseModel` for method ``"model"``.
      test_data: another `BurstDataset` whose every pair is the test set (cross-dataset); None: the test
        split of ``train_data``.
      config: sizes and options.
      save_dir: if given, the first seed's denoiser of each method is saved to ``save_dir/<method>``
        (`save_denoiser`), the others to ``save_dir/<method>_seed<seed>``.
      meta: extra fields for the saved denoisers' ``meta`` (e.g. the noise checkpoint).
      log: where progress goes.

    Returns:
      ``(result, images)``. ``result`` (JSON-able) has ``setup`` (with ``seeds``, the list), ``noisy_input``
      (``psnr``, ``ssim``, per-image lists), ``results`` (per method: ``label``; ``psnr``, ``ssim``: means
      over seeds; ``psnr_spread``, ``ssim_spread`` (max - min over seeds), ``psnr_std``; ``psnr_gap_to_real``,
      ``ssim_gap_to_real``, ``tie_with_real`` (None without ``"real"`` or with one seed); ``psnr_gap_to_noisy``,
      ``tie_with_noisy``; ``ties``: the other methods it ties with (the module docstring's rule; None with one
      seed); ``train_l1_final``, ``train_seconds`` (summed over seeds), ``saved_to`` (first seed's); and
      ``per_seed``: one dict per seed with ``seed``, ``psnr``, ``ssim``, per-image lists, ``train_l1_final``
      (mean of the last 10 % of steps), ``train_l1_input`` (the noisy inputs' L1, same steps), ``collapsed``
      (``train_l1_final >= COLLAPSE * train_l1_input``; also a note), ``train_input_psnr``, ``train_seconds``, ``saved_to``), ``baselines``
      (fitted parameters) and ``notes``. ``images`` holds the test ``clean``/``noisy`` lists, ``names`` and
      ``denoised[method]`` (the first seed's denoiser).

    Raises:
      ValueError: bad sizes for the data (crop, frames, batch vs devices), channel mismatches, no test data.
    """
    from starlight_jax import evaluation
    from starlight_jax.data import PipelineConfig, make_loader
    from starlight_jax.denoise.io import save_denoiser
    from starlight_jax.parallel import DataParallel

    cfg = config
    if test_data is not None and test_data.channels != train_data.channels:
        raise ValueError(f"test data have {test_data.channels} channels but train data {train_data.channels}")
    denoiser = dataclasses.replace(cfg.denoiser, channels=train_data.channels)
    frames = cfg.frames or min(4, evaluation.max_frames(train_data))
    if cfg.batch_images % frames:
        raise ValueError(f"batch_images={cfg.batch_images} is not a multiple of frames={frames} per burst")
    bursts = cfg.batch_images // frames
    devices = jax.local_devices()[: cfg.devices] if cfg.devices else jax.local_devices()
    dp = DataParallel(cfg.parallel, devices)
    if bursts % dp.n:
        raise ValueError(f"{bursts} bursts per step ({cfg.batch_images} images / {frames} frames) do not divide "
                         f"over {dp.n} devices; change batch_images or devices")
    notes = []
    sources, fitted = _sources(cfg, train_data, model, frames, notes, log)

    test_ds = test_data if test_data is not None else train_data
    splits = ("train", "test") if test_data is not None else ("test",)
    test = load_test_images(test_ds, frames=cfg.test_frames, max_bursts=cfg.max_test, splits=splits)
    noisy_scores = score_images(test["noisy"], test["clean"])
    log(f"[benchmark] {len(test['noisy'])} test images from {test_ds.name} {list(splits)}; noisy input PSNR "
        f"{noisy_scores['psnr']:.2f} dB")
    seeds = [cfg.seed + i for i in range(cfg.seeds)]
    results, images = {}, {"clean": test["clean"], "noisy": test["noisy"], "names": test["names"], "denoised": {}}
    for method in cfg.methods:
        runs = []
        for seed in seeds:
            # The loader's seed picks the crops and their order: seed-dependent, the same for every method.
            pipe = PipelineConfig(batch_size=bursts, crop_size=cfg.crop_size, frames=frames, seed=seed)
            # Whole batches: `dp` spans this process's devices only.
            with make_loader(train_data, "train", pipe, process_index=0, process_count=1) as loader:
                params, hist = train_denoiser(iter(loader), cfg.steps, config=denoiser, train_config=cfg.train,
                                              source=sources[method], seed=seed, parallel=dp,
                                              log_every=cfg.log_every, log=log, name=f"{method} seed {seed}")
            den = denoise_all(params, denoiser, test["noisy"])
            if seed == seeds[0]:
                images["denoised"][method] = den
            scores = score_images(den, test["clean"])
            tail = max(1, len(hist["loss"]) // 10)
            l1, l1_in = float(np.mean(hist["loss"][-tail:])), float(np.mean(hist["l1_in"][-tail:]))
            run = {"seed": seed, **scores, "train_l1_final": l1, "train_l1_input": l1_in,
                   "collapsed": l1 >= COLLAPSE * l1_in, "train_input_psnr": float(np.mean(hist["psnr_in"])),
                   "train_seconds": hist["seconds"], "saved_to": None}
            if run["collapsed"]:
                notes.append(f"{LABELS[method]} seed {seed} ended no better than its input on the train crops "
                             f"(L1 {l1:.5f} vs the input's {l1_in:.5f}): it collapsed to (nearly) the identity, "
                             f"so its test score says nothing about the noise source; try a lower --lr or more "
                             f"--warmup_steps")
                log(f"[benchmark] warning: {notes[-1]}")
            if save_dir is not None:
                name = method if seed == seeds[0] else f"{method}_seed{seed}"
                path = save_denoiser(f"{save_dir}/{name}", params, denoiser, meta={
                    **(meta or {}), "method": method, "label": LABELS[method], "steps": cfg.steps, "seed": seed,
                    "test_psnr": scores["psnr"], "test_ssim": scores["ssim"]})
                run["saved_to"] = str(path)
            log(f"[benchmark] {LABELS[method]} seed {seed}: test PSNR {scores['psnr']:.3f} dB, SSIM "
                f"{scores['ssim']:.4f} ({hist['seconds']:.0f} s training)")
            runs.append(run)
        results[method] = _summarise(method, runs)
    _compare(results, noisy_scores, len(seeds))
    result = {
        "setup": {"dataset": train_data.name, "test_dataset": test_ds.name, "test_splits": list(splits),
                  "n_test_images": len(test["noisy"]), "test_frames": cfg.test_frames, "steps": cfg.steps,
                  "crop_size": cfg.crop_size, "frames": frames, "bursts_per_step": bursts,
                  "batch_images": cfg.batch_images, "seed": cfg.seed, "seeds": seeds, "fit_seed": cfg.fit_seed,
                  "spread": "max - min over seeds",
                  "tie_rule": "|mean_A - mean_B| <= max(spread_A, spread_B) (noisy input: spread 0)",
                  "fixed_pattern": cfg.fixed_pattern,
                  "methods": list(cfg.methods), "denoiser": dataclasses.asdict(denoiser),
                  "denoiser_params": count_params(_init_shapes(denoiser)), "optimizer": dataclasses.asdict(cfg.train),
                  "loss": "L1", "parallel": cfg.parallel, "devices": dp.n,
                  "test_names": test["names"]},
        "noisy_input": noisy_scores,
        "results": results,
        "baselines": fitted,
        "notes": notes,
    }
    return result, images


def spread(values: Sequence[float]) -> float:
    """max - min of ``values`` (0 for one value): how far the seeds alone move a score."""
    v = np.asarray(values, np.float64)
    return float(v.max() - v.min())


def is_tie(a: Sequence[float], b: Sequence[float]) -> bool:
    """Whether two methods' per-seed scores ``a`` and ``b`` tie: :math:`|\bar a - \bar b| \le
    \max(\mathrm{spread}(a), \mathrm{spread}(b))` (`spread` is max - min). A reference without seeds
    (the noisy input) is passed as one value, spread 0. Equal means always tie."""
    gap = abs(float(np.mean(a)) - float(np.mean(b)))
    return bool(gap <= max(spread(a), spread(b)))


def _summarise(method: str, runs: list) -> dict:
    psnr = [r["psnr"] for r in runs]
    ssim = [r["ssim"] for r in runs]
    return {"label": LABELS[method], "psnr": float(np.mean(psnr)), "ssim": float(np.mean(ssim)),
            "psnr_spread": spread(psnr), "ssim_spread": spread(ssim), "psnr_std": float(np.std(psnr)),
            "psnr_min": float(np.min(psnr)), "psnr_max": float(np.max(psnr)),
            "psnr_per_image": np.mean([r["psnr_per_image"] for r in runs], axis=0).tolist(),
            "ssim_per_image": np.mean([r["ssim_per_image"] for r in runs], axis=0).tolist(),
            "train_l1_final": float(np.mean([r["train_l1_final"] for r in runs])),
            "train_input_psnr": float(np.mean([r["train_input_psnr"] for r in runs])),
            "train_seconds": float(sum(r["train_seconds"] for r in runs)), "saved_to": runs[0]["saved_to"],
            "collapsed_seeds": [r["seed"] for r in runs if r.get("collapsed")],
            "per_seed": runs}


def _compare(results: dict, noisy: dict, n_seeds: int) -> None:
    """Adds the gaps and ties of the module docstring to every method's entry of ``results``."""
    per_seed = {m: [r["psnr"] for r in res["per_seed"]] for m, res in results.items()}
    real = results.get("real")
    for m, r in results.items():
        r["psnr_gap_to_real"] = None if real is None else r["psnr"] - real["psnr"]
        r["ssim_gap_to_real"] = None if real is None else r["ssim"] - real["ssim"]
        r["psnr_gap_to_noisy"] = r["psnr"] - noisy["psnr"]
        r["ssim_gap_to_noisy"] = r["ssim"] - noisy["ssim"]
        if n_seeds < 2:
            r["tie_with_real"] = r["tie_with_noisy"] = r["ties"] = None
            continue
        r["tie_with_real"] = None if real is None else is_tie(per_seed[m], per_seed["real"])
        r["tie_with_noisy"] = is_tie(per_seed[m], [noisy["psnr"]])
        r["ties"] = [o for o in results if o != m and is_tie(per_seed[m], per_seed[o])]


def _init_shapes(config: DenoiserConfig):
    from starlight_jax.denoise.model import init_denoiser

    return jax.eval_shape(lambda: init_denoiser(jax.random.key(0), config))


# ------------------------------------------------------------------------------------------------------
# Output
# ------------------------------------------------------------------------------------------------------
def results_table(result: dict) -> str:
    """The test set on the first line, then one row per method (and the noisy input).

    Columns: PSNR mean over seeds and its spread (max - min), SSIM likewise, the PSNR gap to (d) real
    pairs and to the noisy input (``tie`` when inside the spread, see `is_tie`), the methods it ties with,
    the final train L1 and the training seconds (all seeds).
    """
    from starlight_jax.evaluation import format_table

    s = result["setup"]
    seeds = s.get("seeds", [s.get("seed")])
    where = "test split" if s["test_splits"] == ["test"] else f"all pairs ({'+'.join(s['test_splits'])} splits)"
    train_dir, test_dir = s.get("data_dir"), s.get("test_data_dir") or s.get("data_dir")  # set by the CLI
    test_name = s["test_dataset"] + (f" {pathlib.Path(test_dir).name}" if test_dir else "")
    train_name = s["dataset"] + (f" {pathlib.Path(train_dir).name}" if train_dir else "")
    first = (f"test set: {test_name} {where}, {s['n_test_images']} images; denoisers trained on "
             f"{train_name} train split, {s['steps']} steps, {len(seeds)} seed(s) {seeds}; spread = max - min "
             f"over seeds; tie = |gap| <= the larger spread")

    def gap(v, tie):
        if v is None:
            return None
        return f"{v:+.3f}" + (" tie" if tie else "")

    header = ["trained on", "PSNR (dB)", "spread", "SSIM", "SSIM spread", "PSNR - (d)", "PSNR - noisy",
              "ties with", "train L1", "train s"]
    rows = [["noisy input (no denoising)", f"{result['noisy_input']['psnr']:.3f}", None,
             f"{result['noisy_input']['ssim']:.4f}", None, None, None, None, None, None]]
    for m, r in result["results"].items():
        ties = r.get("ties")
        dead = r.get("collapsed_seeds")
        label = r["label"] + (f" [collapsed: seed {', '.join(map(str, dead))}]" if dead else "")
        rows.append([label, f"{r['psnr']:.3f}", f"{r['psnr_spread']:.3f}", f"{r['ssim']:.4f}",
                     f"{r['ssim_spread']:.4f}", gap(r["psnr_gap_to_real"], r.get("tie_with_real")),
                     gap(r["psnr_gap_to_noisy"], r.get("tie_with_noisy")),
                     None if ties is None else (", ".join(SHORT[o] for o in ties) or "none"),
                     r["train_l1_final"], round(r["train_seconds"])])
    return first + "\n" + format_table(header, rows)


def plot_denoised(images: dict, result: dict, *, channel_names: Sequence[str], raw: bool, n: int = 2,
                  crop: int = 128):
    """Noisy, each method's output and clean side by side for ``n`` test images (rows).

    Each row shows a centred ``crop`` x ``crop`` window (the whole image if smaller), titled with that
    image's PSNR. Raw data use `starlight_jax.plots.to_display` with the clean image's white level.
    """
    from matplotlib.figure import Figure

    from starlight_jax import plots

    total = len(images["noisy"])
    picks = sorted({int(round(i)) for i in np.linspace(0, total - 1, min(n, total))})
    methods = list(images["denoised"])
    cols = ["noisy"] + methods + ["clean"]
    fig = Figure(figsize=(2.6 * len(cols), 2.8 * len(picks) + 0.6), layout="constrained")
    axes = np.atleast_2d(fig.subplots(len(picks), len(cols)))
    for r, i in enumerate(picks):
        clean = images["clean"][i]
        h, w = clean.shape[:2]
        ch, cw = min(crop, h), min(crop, w)
        top, left = (h - ch) // 2, (w - cw) // 2
        white = plots.white_level(clean, channel_names) if raw else 1.0
        for c, name in enumerate(cols):
            if name == "noisy":
                img, title = images["noisy"][i], f"noisy\n{result['noisy_input']['psnr_per_image'][i]:.2f} dB"
            elif name == "clean":
                img, title = clean, "clean"
            else:
                img = images["denoised"][name][i]  # the first seed's denoiser, and its scores
                title = f"{LABELS[name]}\n{result['results'][name]['per_seed'][0]['psnr_per_image'][i]:.2f} dB"
            shown = plots.to_display(img[top:top + ch, left:left + cw], channel_names, raw=raw, white=white)
            ax = axes[r, c]
            ax.imshow(shown, cmap="gray" if shown.ndim == 2 else None, vmin=0, vmax=1, interpolation="nearest")
            ax.set_title(title, fontsize=9)
            ax.set_axis_off()
        axes[r, 0].text(-0.05, 0.5, images["names"][i], rotation=90, ha="right", va="center", fontsize=8,
                        transform=axes[r, 0].transAxes)
    s = result["setup"]
    how = "raw shown as R, G1, B with gamma 1/2.2" if raw else "sRGB as is"
    fig.suptitle(f"denoisers (seed {s['seeds'][0]}) trained {s['steps']} steps on {s['dataset']} crops {s['crop_size']}px; test: "
                 f"{s['test_dataset']} {s['test_splits']}; centre {crop}px crops; {how}", fontsize=9)
    return fig


__all__ = ["BenchmarkConfig", "PRESETS", "preset_config", "run_benchmark", "spread", "is_tie", "results_table",
           "plot_denoised", "load_test_images", "score_images", "denoise_all", "METHODS", "LABELS", "NoiseSource"]
