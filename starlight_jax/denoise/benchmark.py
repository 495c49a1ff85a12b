"""The downstream test of a noise model (issue #8): train one denoiser per noise source, score on real pairs.

`run_benchmark(train_data, model=..., config=...)` trains the same `DnCNN` (same init, steps, batches and
step keys) on pairs made from the clean crops of the train split by

* ``"model"``: (a) the learned noise model (`starlight_jax.checkpoint.load_noise_model`);
* ``"gaussian"``: (b) `fit_gaussian` on the train split;
* ``"poisson_gaussian"``: (c) `fit_poisson_gaussian` on the train split;
* ``"real"``: (d) the real noisy images of those same crops,

and scores each on held-out real noisy/clean pairs: the test split, or every pair of ``test_data`` when
given (cross-dataset: the test scenes and cameras then differ from the training ones). Test images are
scored whole (full frames, the first ``test_frames`` frames of each burst); PSNR and SSIM
(`starlight_jax.metrics`, peak 1) are averaged over images, and each method's gap to (d) is reported
(negative = worse than training on real pairs), as is the noisy input's PSNR/SSIM.

The fixed pattern of the data (e.g. the synthetic data's black-level error and column pattern) is handled
as in `starlight_jax.evaluation`: baselines fitted to ``noisy - clean - fixed_pattern`` add it back, and so
does a learned model that lacks ``fixed1`` (`starlight_jax.denoise.train` note); ``fixed_pattern=False``
fits and samples without it.

The result is a JSON-able dict (keys in `run_benchmark`), printed by `results_table`, drawn by
`plot_denoised`.
"""
from __future__ import annotations

import dataclasses
import time
from typing import Optional, Sequence

import jax
import numpy as np

from starlight_jax.denoise.model import DenoiserConfig, count_params
from starlight_jax.denoise.train import (DenoiseTrainConfig, NoiseSource, baseline_source, denoise_images,
                                         learned_source, train_denoiser)

METHODS = ("model", "gaussian", "poisson_gaussian", "real")
LABELS = {"model": "(a) learned noise model", "gaussian": "(b) Gaussian", "poisson_gaussian": "(c) Poisson-Gaussian",
          "real": "(d) real pairs"}


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
      seed: loader, init and step-key seed (the same for every method).
      fixed_pattern: add the data's fixed pattern to synthetic pairs (see the module docstring).
      methods: which of `METHODS` to train.
      denoiser: the network (its ``channels`` is set from the data).
      train: the optimiser.
      parallel: ``"shard"`` or ``"pmap"`` (`starlight_jax.parallel.DataParallel`).
      devices: use the first N local devices (None: all); bursts per step must divide over them.
      log_every: print the training loss every N steps (0: never).
      n_figure: test images shown in the figure.
    """

    steps: int = 300
    crop_size: int = 64
    batch_images: int = 8
    frames: Optional[int] = None
    test_frames: int = 2
    max_test: Optional[int] = None
    max_train_bursts: Optional[int] = None
    seed: int = 0
    fixed_pattern: bool = True
    methods: tuple = METHODS
    denoiser: DenoiserConfig = DenoiserConfig()
    train: DenoiseTrainConfig = DenoiseTrainConfig()
    parallel: str = "shard"
    devices: Optional[int] = None
    log_every: int = 50
    n_figure: int = 2

    def __post_init__(self):
        for name in ("steps", "batch_images", "test_frames"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ValueError(f"{name} must be a positive int, got {v!r}")
        for name in ("frames", "max_test", "max_train_bursts", "devices"):
            v = getattr(self, name)
            if v is not None and (isinstance(v, bool) or not isinstance(v, int) or v < 1):
                raise ValueError(f"{name} must be a positive int or None, got {v!r}")
        if self.crop_size < 64 or self.crop_size % 64:
            raise ValueError(f"crop_size must be a positive multiple of 64, got {self.crop_size}")
        bad = [m for m in self.methods if m not in METHODS]
        if bad or not self.methods or len(set(self.methods)) != len(self.methods):
            raise ValueError(f"methods must be distinct names from {METHODS}, got {self.methods}")


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
    if {"gaussian", "poisson_gaussian"} & set(config.methods):
        t0 = time.time()
        base = evaluation.fit_baselines(dataset, crop_size=config.crop_size, frames=frames, seed=config.seed,
                                        max_bursts=config.max_train_bursts,
                                        subtract_fixed_pattern=config.fixed_pattern)
        log(f"[benchmark] baselines fitted on {base.n_bursts} train bursts ({time.time() - t0:.0f} s)")
        fitted = {"gaussian": base.gaussian.to_dict(), "poisson_gaussian": base.poisson_gaussian.to_dict(),
                  "fixed_pattern_subtracted": base.fixed_pattern, "n_bursts": base.n_bursts}
        for m in ("gaussian", "poisson_gaussian"):
            if m in config.methods:
                sources[m] = baseline_source(m, getattr(base, m), fp if base.fixed_pattern else None)
    if "real" in config.methods:
        sources["real"] = None
    return sources, fitted


def run_benchmark(train_data, *, model=None, test_data=None, config: BenchmarkConfig = BenchmarkConfig(),
                  save_dir=None, meta: Optional[dict] = None, log=print) -> tuple[dict, dict]:
    """Trains one denoiser per method and scores them on real held-out pairs.

    Args:
      train_data: a `BurstDataset`; its train split gives the clean crops (and (d)'s noisy ones), and fits
        the baselines.
      model: the learned `NoiseModel` for method ``"model"``.
      test_data: another `BurstDataset` whose every pair is the test set (cross-dataset); None: the test
        split of ``train_data``.
      config: sizes and options.
      save_dir: if given, each denoiser is saved to ``save_dir/<method>`` (`save_denoiser`).
      meta: extra fields for the saved denoisers' ``meta`` (e.g. the noise checkpoint).
      log: where progress goes.

    Returns:
      ``(result, images)``. ``result`` (JSON-able) has ``setup``, ``noisy_input`` (``psnr``, ``ssim``,
      per-image lists), ``results`` (per method: ``label``, ``psnr``, ``ssim``, ``psnr_gap_to_real``,
      ``ssim_gap_to_real`` (None without ``"real"``), ``train_l1_final`` (mean of the last 10 % of steps),
      ``train_seconds``, ``saved_to``, per-image lists), ``baselines`` (fitted parameters) and ``notes``.
      ``images`` holds the test ``clean``/``noisy`` lists, ``names`` and ``denoised[method]``.

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
    pipe = PipelineConfig(batch_size=bursts, crop_size=cfg.crop_size, frames=frames, seed=cfg.seed)
    results, images = {}, {"clean": test["clean"], "noisy": test["noisy"], "names": test["names"], "denoised": {}}
    for method in cfg.methods:
        with make_loader(train_data, "train", pipe) as loader:
            params, hist = train_denoiser(iter(loader), cfg.steps, config=denoiser, train_config=cfg.train,
                                          source=sources[method], seed=cfg.seed, parallel=dp,
                                          log_every=cfg.log_every, log=log, name=method)
        den = denoise_all(params, denoiser, test["noisy"])
        images["denoised"][method] = den
        scores = score_images(den, test["clean"])
        tail = max(1, len(hist["loss"]) // 10)
        results[method] = {"label": LABELS[method], **scores, "train_l1_final": float(np.mean(hist["loss"][-tail:])),
                           "train_input_psnr": float(np.mean(hist["psnr_in"])), "train_seconds": hist["seconds"],
                           "saved_to": None}
        if save_dir is not None:
            path = save_denoiser(f"{save_dir}/{method}", params, denoiser, meta={
                **(meta or {}), "method": method, "label": LABELS[method], "steps": cfg.steps,
                "test_psnr": scores["psnr"], "test_ssim": scores["ssim"]})
            results[method]["saved_to"] = str(path)
        log(f"[benchmark] {LABELS[method]}: test PSNR {scores['psnr']:.2f} dB, SSIM {scores['ssim']:.4f} "
            f"({hist['seconds']:.0f} s training)")
    for r in results.values():
        real = results.get("real")
        r["psnr_gap_to_real"] = None if real is None else r["psnr"] - real["psnr"]
        r["ssim_gap_to_real"] = None if real is None else r["ssim"] - real["ssim"]
    result = {
        "setup": {"dataset": train_data.name, "test_dataset": test_ds.name, "test_splits": list(splits),
                  "n_test_images": len(test["noisy"]), "test_frames": cfg.test_frames, "steps": cfg.steps,
                  "crop_size": cfg.crop_size, "frames": frames, "bursts_per_step": bursts,
                  "batch_images": cfg.batch_images, "seed": cfg.seed, "fixed_pattern": cfg.fixed_pattern,
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


def _init_shapes(config: DenoiserConfig):
    from starlight_jax.denoise.model import init_denoiser

    return jax.eval_shape(lambda: init_denoiser(jax.random.key(0), config))


# ------------------------------------------------------------------------------------------------------
# Output
# ------------------------------------------------------------------------------------------------------
def results_table(result: dict) -> str:
    """One row per method (and the noisy input): PSNR, SSIM, their gaps to (d), train time."""
    from starlight_jax.evaluation import format_table

    header = ["trained on", "PSNR (dB)", "SSIM", "PSNR gap to (d)", "SSIM gap to (d)", "train L1", "train s"]
    rows = [["noisy input (no denoising)", result["noisy_input"]["psnr"], result["noisy_input"]["ssim"],
             None, None, None, None]]
    for r in result["results"].values():
        rows.append([r["label"], r["psnr"], r["ssim"], r["psnr_gap_to_real"], r["ssim_gap_to_real"],
                     r["train_l1_final"], round(r["train_seconds"])])
    return format_table(header, rows)


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
                img = images["denoised"][name][i]
                title = f"{LABELS[name]}\n{result['results'][name]['psnr_per_image'][i]:.2f} dB"
            shown = plots.to_display(img[top:top + ch, left:left + cw], channel_names, raw=raw, white=white)
            ax = axes[r, c]
            ax.imshow(shown, cmap="gray" if shown.ndim == 2 else None, vmin=0, vmax=1, interpolation="nearest")
            ax.set_title(title, fontsize=9)
            ax.set_axis_off()
        axes[r, 0].text(-0.05, 0.5, images["names"][i], rotation=90, ha="right", va="center", fontsize=8,
                        transform=axes[r, 0].transAxes)
    s = result["setup"]
    how = "raw shown as R, G1, B with gamma 1/2.2" if raw else "sRGB as is"
    fig.suptitle(f"denoisers trained {s['steps']} steps on {s['dataset']} crops {s['crop_size']}px; test: "
                 f"{s['test_dataset']} {s['test_splits']}; centre {crop}px crops; {how}", fontsize=9)
    return fig


__all__ = ["BenchmarkConfig", "run_benchmark", "results_table", "plot_denoised", "load_test_images",
           "score_images", "denoise_all", "METHODS", "LABELS", "NoiseSource"]
