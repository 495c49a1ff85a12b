"""Input-pipeline throughput of every data source that can run here, with 0 and 2 grain worker processes,
beside the training step rate of the ``cpu`` preset: is the pipeline the bottleneck?

    python benchmarks/bench_data.py                          # ~5 min on 2 busy cores
    python benchmarks/bench_data.py --seconds 3 --sources synthetic,pairs

Prints one JSON object:

* ``cpu_preset``: steps/s of the ``cpu`` preset (crop 64, 8 frames, B 1, critic width 16, no U-Net): the
  jitted ``d_step`` alone (the critic warm-up: the fastest step, the most batches/s asked for) and a
  step after the warm-up (``d_step`` + ``g_step / n_critic``), medians after one warm-up; ``gpu_preset``
  the same for the ``gpu`` preset (crop 256, 16 frames, U-Net, critic width 64), measured only when JAX
  runs on a GPU;
* ``sources``: per source and batch shape, batches/s through :class:`BurstLoader` (``workers`` 0: the
  main process's 2 threads; 2: two worker processes with 2 threads each), the first batch's latency (it
  includes starting the workers), and whether the workers' batches equal the in-process ones;
* ``verdict``: per source, the better of the two rates against its preset's fastest step rate (the
  ``*_gpu_preset_*`` shapes against the gpu preset).

Sources: ``synthetic`` (generated on the fly, at the cpu preset's 128-px frames and at the gpu preset's
256-px frames and 256² x 16 crops), ``pairs`` on ../shared/data/srgb_pairs/nam when present (the srgb
preset's B 8, crop 64, T 1), and the ``starlight`` and ``sidd`` readers on fixtures written to a temporary
folder in their real file formats (Starlight frames at the real 640x1080 size; SIDD raw at 1024x1024
instead of ~3000x5000).
"""

from __future__ import annotations

import argparse
import datetime
import functools
import json
import os
import pathlib
import sys
import tempfile
import time

import grain
import numpy as np

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))

from common import device_info, time_fn  # noqa: E402
from starlight_jax.data import PipelineConfig, load_dataset, make_loader  # noqa: E402

NAM = pathlib.Path(__file__).resolve().parents[2] / "shared" / "data" / "srgb_pairs" / "nam"
WORKERS = (0, 2)
COMPARED = 4  # batches compared between worker counts


def rate(dataset, config: PipelineConfig, seconds: float) -> tuple[dict, list]:
    """Batches/s over ``seconds`` after the first batch (worker start, scene caches, file system)."""
    with make_loader(dataset, "train", config) as loader:
        t0 = time.perf_counter()
        batches = [next(loader)]
        first = time.perf_counter() - t0
        n, t0 = 0, time.perf_counter()
        while time.perf_counter() - t0 < seconds or len(batches) < COMPARED:
            batch = next(loader)
            if len(batches) < COMPARED:
                batches.append(batch)
            n += 1
        per_s = n / (time.perf_counter() - t0)
    return {"batches_per_s": round(per_s, 2), "first_batch_s": round(first, 2)}, batches


def measure(dataset, seconds: float, **options) -> dict:
    """Both worker counts on one source and shape; the batches must not depend on the worker count."""
    out, reference = {}, None
    for workers in WORKERS:
        config = PipelineConfig(**options, workers=workers)
        out[f"workers_{workers}"], batches = rate(dataset, config, seconds)
        if reference is None:
            reference = batches
            shape = {k: "x".join(map(str, v.shape)) for k, v in batches[0].items()}
        else:
            out[f"workers_{workers}"]["same_batches_as_workers_0"] = all(
                np.array_equal(a[k], b[k]) for a, b in zip(batches, reference) for k in a)
    return {"batch": shape, "config": f"B={config.batch_size} crop={config.crop_size[0]}x{config.crop_size[1]} "
                                      f"T={config.frames} threads={config.num_threads} prefetch={config.prefetch}",
            **out}


def preset_rate(name: str, repeats: int) -> dict:
    """Steps/s of preset ``name`` on a batch of its shape from the synthetic data it trains on (resolved as
    ``experiments/train.py --config NAME`` on one device)."""
    import jax

    from starlight_jax import configs, training

    values = configs.get_config(name)
    ds = load_dataset("synthetic", frame_size=(values["frame_size"],) * 2)
    cfg = training.TrainConfig(**configs.resolve(values, ds, devices=1, log=lambda *_: None))
    pipe = PipelineConfig(batch_size=cfg.batch_size, crop_size=cfg.crop_size, frames=cfg.frames)
    with make_loader(ds, "train", pipe) as loader:
        batch = jax.device_put(next(loader))
    state = training.create_train_state(jax.random.key(0), cfg, fixed_pattern=ds.fixed_pattern
                                        if cfg.generator.noise.fixed else None)
    d_step = jax.jit(functools.partial(training.d_step, cfg))
    g_step = jax.jit(functools.partial(training.g_step, cfg))
    t, _ = time_fn(lambda: jax.block_until_ready(d_step(state, batch)), repeats=repeats)
    after, _ = d_step(state, batch)
    t_g, _ = time_fn(lambda: jax.block_until_ready(g_step(after, batch, None)), repeats=repeats)
    # A step reads one batch: the critic's, plus the generator's every n_critic-th step (none in warm-up).
    return {"config": f"B={cfg.batch_size} crop={cfg.crop_size} T={cfg.frames} critic_width={cfg.critic_width} "
                      f"network={cfg.network} n_critic={cfg.n_critic}",
            "d_step_per_s": round(1 / t, 2), "steps_per_s_after_warmup": round(1 / (t + t_g / cfg.n_critic), 2)}


def starlight_fixture(root: pathlib.Path) -> None:
    """Two stillpairs files in MATLAB v7.3 (HDF5) at the real 640x1080x4, 20 float32 frames each."""
    import h5py

    d = root / "stillpairs_mat"
    d.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for name in ("a", "b"):
        with h5py.File(d / f"{name}.mat", "w") as f:
            f["noisy_list"] = (rng.random((20, 640, 1080, 4), np.float32) * 0.1).T
            f["gt_list"] = (rng.random((2, 640, 1080, 4), np.float32) * 0.1).T
            f["alpha"] = np.array([[1.0]])


def sidd_fixture(root: pathlib.Path) -> None:
    """Three raw scene instances (v7.3 ``x``, 1024x1024 mosaic) with SIDD-style metadata."""
    import h5py
    import scipy.io

    rng = np.random.default_rng(0)
    for folder in ("0001_001_S6_00100_00060_3200_L", "0002_001_N6_00400_00200_3200_N", "0003_001_GP_00800_00350_5500_H"):
        d = root / folder
        d.mkdir(parents=True)
        for kind in ("NOISY", "GT"):
            with h5py.File(d / f"{folder[:4]}_{kind}_RAW_010.MAT", "w") as f:
                f["x"] = rng.random((1024, 1024))
        ut = np.empty((2, 1), dtype=[("ID", "O"), ("Offset", "O"), ("Value", "O")])
        ut[0, 0] = (np.array([[33421]]), np.array([[0]]), np.array([[2, 2]]))
        ut[1, 0] = (np.array([[33422]]), np.array([[0]]), np.array([[0, 1, 1, 2]]))
        scipy.io.savemat(d / f"{folder[:4]}_METADATA_RAW_010.MAT",
                         {"metadata": {"UnknownTags": ut, "BlackLevel": np.zeros((1, 4)), "WhiteLevel": 1023.0}})


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=5.0, help="timed seconds per source and worker count")
    parser.add_argument("--repeats", type=int, default=10, help="timed steps per preset")
    parser.add_argument("--sources", default="synthetic,pairs,starlight,sidd")
    args = parser.parse_args(argv)
    wanted = args.sources.split(",")
    out = {**device_info(), "grain": grain.__version__, "numpy": np.__version__,
           "date": datetime.date.today().isoformat(), "load_1min": round(os.getloadavg()[0], 1)}
    out["cpu_preset"] = preset_rate("cpu", args.repeats)
    out["gpu_preset"] = (preset_rate("gpu", args.repeats) if out["backend"] != "cpu"
                         else "not measured: the JAX backend is cpu")
    out["sources"] = {}
    src, s = out["sources"], args.seconds
    if "synthetic" in wanted:
        src["synthetic_cpu_preset_128px"] = measure(load_dataset("synthetic", frame_size=(128, 128)), s,
                                                    batch_size=1, crop_size=64, frames=8)
        src["synthetic_gpu_preset_256px"] = measure(load_dataset("synthetic"), s, batch_size=1, crop_size=256,
                                                    frames=16)
    if "pairs" in wanted:
        if NAM.is_dir():
            src["pairs_nam_srgb_preset"] = measure(load_dataset("pairs", NAM), s, batch_size=8, crop_size=64,
                                                   frames=1)
        else:
            src["pairs_nam_srgb_preset"] = f"skipped: {NAM} not present"
    with tempfile.TemporaryDirectory() as tmp:
        tmp = pathlib.Path(tmp)
        if "starlight" in wanted:
            starlight_fixture(tmp / "starlight")
            src["starlight_fixture_640x1080_v73"] = measure(load_dataset("starlight", tmp / "starlight"), s,
                                                            batch_size=1, crop_size=64, frames=8)
        if "sidd" in wanted:
            sidd_fixture(tmp / "sidd")
            src["sidd_raw_fixture_1024"] = measure(load_dataset("sidd", tmp / "sidd", test_mod=1000), s,
                                                   batch_size=1, crop_size=64, frames=1)
    out["verdict"] = {}
    for name, m in src.items():
        if not isinstance(m, dict):
            continue
        preset = "gpu" if "gpu_preset" in name else "cpu"
        if not isinstance(out[f"{preset}_preset"], dict):
            out["verdict"][name] = f"{preset} preset not measured here"
            continue
        need = out[f"{preset}_preset"]["d_step_per_s"]  # the fastest step: the most batches/s asked for
        best = max(m[f"workers_{w}"]["batches_per_s"] for w in WORKERS)
        out["verdict"][name] = (f"{best:.1f} batches/s against the {preset} preset's {need:.1f} steps/s: "
                                + ("the pipeline keeps up" if best >= need else "the pipeline is the bottleneck"))
    print(json.dumps(out, indent=1))  # one JSON object
    return out


if __name__ == "__main__":
    main()
