"""Throughput of every data source that can run here, through the pipeline, on CPU.

Prints one JSON object: per source, batches/s through :class:`BurstLoader` (background prefetch on) and
the batch shape, next to what training needs. A WGAN-GP step on CPU takes ~1 s or more, so a source that
delivers a few batches/s keeps the step fed (prefetching overlaps loading with the step).

Sources: ``synthetic`` (generated on the fly), ``pairs`` on ../shared/data/srgb_pairs/nam when present,
and the ``starlight`` and ``sidd`` readers on fixtures written to a temporary folder in their real file
formats (Starlight frames at the real 640x1080 size; SIDD raw at 1024x1024 instead of ~3000x5000).

Usage: ``python benchmarks/bench_data.py [--seconds 6] [--sources synthetic,pairs,starlight,sidd]``
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import sys
import tempfile
import time

import numpy as np

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))

from starlight_jax.data import PipelineConfig, load_dataset, make_loader  # noqa: E402

NAM = pathlib.Path(__file__).resolve().parents[2] / "shared" / "data" / "srgb_pairs" / "nam"
STEP_SECONDS_CPU = 1.0  # a WGAN-GP step on CPU: ~1 s or more


def measure(dataset, config: PipelineConfig, seconds: float) -> dict:
    """Batches/s over ``seconds`` after one warm-up batch (scene caches, file system)."""
    with make_loader(dataset, "train", config) as loader:
        t0 = time.perf_counter()
        batch = next(loader)
        first = time.perf_counter() - t0
        n, t0 = 0, time.perf_counter()
        while time.perf_counter() - t0 < seconds:
            batch = next(loader)
            n += 1
        rate = n / (time.perf_counter() - t0)
    return {"batches_per_s": round(rate, 2), "first_batch_s": round(first, 2),
            "batch": {k: "x".join(map(str, v.shape)) for k, v in batch.items()},
            "config": f"B={config.batch_size} crop={config.crop_size[0]}x{config.crop_size[1]} T={config.frames} "
                      f"threads={config.num_threads} prefetch={config.prefetch}",
            "keeps_up_with_1s_step": rate * STEP_SECONDS_CPU >= 1.0}


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
    parser.add_argument("--seconds", type=float, default=6.0, help="timed seconds per source")
    parser.add_argument("--sources", default="synthetic,pairs,starlight,sidd")
    args = parser.parse_args(argv)
    wanted = args.sources.split(",")
    out = {"device": "cpu", "cpu_cores": os.cpu_count(),
           "need": f"a WGAN-GP step on CPU takes ~{STEP_SECONDS_CPU:g} s or more, so >= 1 batch/s keeps it fed and "
                   "a few batches/s leaves headroom; prefetch overlaps loading with the step",
           "sources": {}}
    if "synthetic" in wanted:
        ds = load_dataset("synthetic")  # 256x256 frames, 16-frame bursts
        out["sources"]["synthetic"] = measure(ds, PipelineConfig(batch_size=1, crop_size=256, frames=16), args.seconds)
        out["sources"]["synthetic_crop128_b2"] = measure(
            ds, PipelineConfig(batch_size=2, crop_size=128, frames=16), args.seconds)
        cached = load_dataset("synthetic", cache=True)
        for i in range(len(cached.train)):  # fill the cache (what the first epoch does)
            cached.train[i]
        out["sources"]["synthetic_cached_after_epoch1"] = measure(
            cached, PipelineConfig(batch_size=1, crop_size=256, frames=16), args.seconds)
    if "pairs" in wanted:
        if NAM.is_dir():
            ds = load_dataset("pairs", NAM)
            out["sources"]["pairs_nam"] = measure(ds, PipelineConfig(batch_size=8, crop_size=256, frames=1),
                                                  args.seconds)
        else:
            out["sources"]["pairs_nam"] = f"skipped: {NAM} not present"
    with tempfile.TemporaryDirectory() as tmp:
        tmp = pathlib.Path(tmp)
        if "starlight" in wanted:
            starlight_fixture(tmp / "starlight")
            ds = load_dataset("starlight", tmp / "starlight")
            out["sources"]["starlight_fixture_640x1080_v73"] = measure(
                ds, PipelineConfig(batch_size=1, crop_size=256, frames=16), args.seconds)
        if "sidd" in wanted:
            sidd_fixture(tmp / "sidd")
            ds = load_dataset("sidd", tmp / "sidd", test_mod=1000)
            out["sources"]["sidd_raw_fixture_1024"] = measure(
                ds, PipelineConfig(batch_size=2, crop_size=256, frames=1), args.seconds)
    print(json.dumps(out, indent=1))  # one JSON object
    return out


if __name__ == "__main__":
    main()
