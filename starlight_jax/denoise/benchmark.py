r"""The downstream test of a noise model (issue #8): train one denoiser per noise source, score on real pairs.

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
(`starlight_jax.metrics.image_quality`, peak 1) are averaged over images.

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

The methods, presets and `BenchmarkConfig` are in `starlight_jax.denoise.benchmark_config`. The result is a
JSON-able dict (keys in `run_benchmark`), printed by `~starlight_jax.denoise.benchmark_report.results_table`,
drawn by `~starlight_jax.denoise.benchmark_report.plot_denoised`.
"""

import dataclasses
import time
from typing import Optional, Sequence

import jax
import numpy as np

from starlight_jax.denoise.benchmark_config import BASELINES, COLLAPSE, LABELS, BenchmarkConfig
from starlight_jax.denoise.model import DenoiserConfig, count_params
from starlight_jax.denoise.train import baseline_source, denoise_images, learned_source, train_denoiser


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
    from starlight_jax.metrics.image_quality import psnr, ssim

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
    from starlight_jax.evaluation.samples import check_channels, fit_baselines

    fp = dataset.fixed_pattern if config.fixed_pattern else None
    sources, fitted = {}, {}
    if "model" in config.methods:
        if model is None:
            raise ValueError("method 'model' needs a noise model (pass model=, or leave 'model' out of methods)")
        check_channels(model, dataset)
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
        base = fit_baselines(dataset, crop_size=config.crop_size, frames=frames, seed=config.fit_seed,
                             max_bursts=config.max_train_bursts, subtract_fixed_pattern=config.fixed_pattern)
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
    from starlight_jax.data import PipelineConfig, make_loader
    from starlight_jax.data.batches import max_frames
    from starlight_jax.denoise.io import save_denoiser
    from starlight_jax.parallel import DataParallel

    cfg = config
    if test_data is not None and test_data.channels != train_data.channels:
        raise ValueError(f"test data have {test_data.channels} channels but train data {train_data.channels}")
    denoiser = dataclasses.replace(cfg.denoiser, channels=train_data.channels)
    frames = cfg.frames or min(4, max_frames(train_data))
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
    r"""Whether two methods' per-seed scores ``a`` and ``b`` tie: :math:`|\bar a - \bar b| \le
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


__all__ = ["run_benchmark", "spread", "is_tie", "load_test_images", "score_images", "denoise_all"]
