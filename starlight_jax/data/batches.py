"""Bursts of a dataset read as the training loop reads them, for fitting and scoring.

`load_batches` gives the bursts of one split with the loader's crops (the test split: sorted order, the
fixed crop, frames ``[0, T)``; the train split: epoch 0's seeded crops and windows), `residual_arrays` their
stacked residual arrays (with the dataset's fixed pattern subtracted when asked), `run_dataset` the dataset
a run folder names, and `largest_crop` / `max_frames` the limits a dataset sets on crops and frames.

These sit with the data sources, below the generator: the data init of training, the baselines of
`starlight_jax.evaluation` and the CLIs all read data the same way through them.
"""
from __future__ import annotations

from typing import Optional

import numpy as np

from starlight_jax.data import load_dataset
from starlight_jax.data.pipeline import PipelineConfig, crop_fixed_pattern, make_loader


def is_srgb(dataset) -> bool:
    """True for sRGB data (``pairs`` folders and SIDD sRGB); False for raw data."""
    return dataset.name == "pairs" or (dataset.name == "sidd" and dataset.info.get("variant") == "srgb")


def _tuples(x):
    return tuple(_tuples(v) for v in x) if isinstance(x, (list, tuple)) else x


def run_dataset(run_config, dataset: Optional[str] = None, data_dir=None, options: Optional[dict] = None):
    """Loads the dataset a run was trained on (its ``config.json`` ``run`` section), or another one.

    Args:
      run_config: the run's `starlight_jax.run_config.RunConfig`.
      dataset: a dataset name overriding the run's; its options then start empty.
      data_dir: overrides the run's data folder.
      options: source options added to (or replacing) the run's, e.g. ``{"frame_size": (128, 128)}``.

    Returns:
      ``(dataset, name, data_dir, options)``.
    """
    name = dataset or run_config.dataset
    opts = {k: _tuples(v) for k, v in run_config.dataset_options} if name == run_config.dataset else {}
    opts.update(options or {})
    if data_dir is None and name == run_config.dataset:
        data_dir = run_config.data_dir
    return load_dataset(name, data_dir, **opts), name, data_dir, opts


def largest_crop(dataset, train_crop: int, cap: int = 512) -> int:
    """The largest multiple of 64 that fits every frame, at most ``cap`` (``train_crop`` if the frame size is
    unknown): the default test crop of `evaluate.py` (whole images where they fit) and of the figures.

    The training crop is usually a small corner of each test image (64² of Nam's 512²); scored there, the
    metrics follow that corner's content more than the noise model."""
    if dataset.frame_shape is None:
        return int(train_crop)
    return int(max(min(min(dataset.frame_shape) // 64 * 64, cap), 64))


def max_frames(dataset) -> int:
    """The most frames every burst of the dataset has (the limit for ``frames``)."""
    sources = [src for src in (dataset.train, dataset.test) if len(src)]
    return min(src.info(i).num_frames for src in sources for i in range(len(src)))


def load_batches(dataset, split: str, *, crop_size: int, frames: int, seed: int = 0,
                 max_bursts: Optional[int] = None) -> list[dict]:
    """The bursts of ``split`` as the training loop reads them, one per batch (B = 1).

    Test split: sorted order, fixed crop, frames ``[0, T)``. Train split: epoch 0 of the training loader
    (seeded crops and windows). ``max_bursts`` keeps the first N.

    Returns:
      A list of ``{"clean", "noisy": float32 [1, T, h, w, C], "offset": int32 [1, 2]}``.

    Raises:
      ValueError: an empty split, a bad ``max_bursts``, or items smaller than the crop / shorter than T.
    """
    if max_bursts is not None and (isinstance(max_bursts, bool) or int(max_bursts) < 1):
        raise ValueError(f"max_bursts must be a positive int or None, got {max_bursts!r}")
    if len(dataset.split(split)) == 0:
        raise ValueError(f"dataset {dataset.name!r} has no {split} bursts")
    pipe = PipelineConfig(batch_size=1, crop_size=crop_size, frames=frames, seed=seed)
    with make_loader(dataset, split, pipe, process_index=0, process_count=1) as loader:  # all, on every process
        n = loader.batches_per_epoch if max_bursts is None else min(int(max_bursts), loader.batches_per_epoch)
        return [loader.batch_at(0, i) for i in range(n)]


def fixed_crop(dataset, batch, use: bool) -> np.ndarray:
    """The dataset's fixed pattern cropped like ``batch`` ``[B, 1, h, w, C]`` (zeros when unused)."""
    shape = batch["clean"].shape
    if not use:
        return np.zeros((shape[0], 1, *shape[2:]), np.float32)
    return crop_fixed_pattern(dataset.fixed_pattern, batch["offset"], shape[2:4])[:, None].astype(np.float32)


def residual_arrays(dataset, batches, subtract_fixed_pattern: bool):
    """``(noisy − fixed pattern, clean, noisy)`` of ``batches`` stacked, clean broadcast to the noisy
    shape; the pattern is subtracted only when asked and the dataset has one."""
    use = bool(subtract_fixed_pattern and dataset.fixed_pattern is not None)
    noisy_raw = np.concatenate([b["noisy"] for b in batches])
    noisy = np.concatenate([b["noisy"] - fixed_crop(dataset, b, use) for b in batches])
    clean = np.broadcast_to(np.concatenate([b["clean"] for b in batches]), noisy.shape)
    return noisy, clean, noisy_raw


__all__ = ["is_srgb", "run_dataset", "largest_crop", "max_frames", "load_batches", "fixed_crop", "residual_arrays"]
