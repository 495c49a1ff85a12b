"""Data for starlight-jax: four sources with one record format, and the batch pipeline.

Every source yields bursts ``{"clean": float32 [T, H, W, C], "noisy": float32 [T, H, W, C], ...}`` in
[0, 1] at full frame size, grouped in a :class:`BurstDataset` with ``train``/``test`` splits,
``channels``, ``frame_shape`` and, where known, a full-frame ``fixed_pattern``:

* ``"synthetic"`` (default, embedded): scikit-image photographs through a calibrated sensor model;
  carries its ground-truth noise parameters in ``dataset.truth`` (:mod:`.synthetic`).
* ``"pairs"``: a folder ``D/noisy/<name>``, ``D/clean/<name>`` of PNG/JPEG/TIFF images (:mod:`.pairs`).
* ``"sidd"``: SIDD raw (.MAT) or sRGB (.PNG), files or a tfds array_record build (:mod:`.sidd`).
* ``"starlight"``: the Canon RGB+NIR ``.mat`` layouts of the original code (:mod:`.starlight_mat`).

:mod:`.pipeline` crops, windows, shuffles (per epoch), resumes and prefetches batches
``{"clean", "noisy": [B, T, h, w, C], "offset": [B, 2]}``.

Example::

    ds = load_dataset("synthetic", frame_size=(256, 256), seed=0)
    loader = make_loader(ds, "train", PipelineConfig(batch_size=1, crop_size=128, frames=16))
    batch = next(loader)
"""

from __future__ import annotations

from starlight_jax.data.base import BurstDataset, BurstSource, Item, ItemInfo
from starlight_jax.data.pairs import load_pairs
from starlight_jax.data.pipeline import BurstLoader, PipelineConfig, crop_fixed_pattern, make_loader, shard_batch
from starlight_jax.data.sidd import load_sidd, pack_bayer, parse_metadata, parse_scene_name
from starlight_jax.data.starlight_mat import load_fixed_pattern, load_starlight
from starlight_jax.data.synthetic import SensorModel, SyntheticConfig, load_synthetic

__all__ = ["load_dataset", "DATASETS", "BurstDataset", "BurstSource", "Item", "ItemInfo", "BurstLoader",
           "PipelineConfig", "make_loader", "shard_batch", "crop_fixed_pattern", "load_synthetic",
           "SyntheticConfig", "SensorModel", "load_pairs", "load_sidd", "parse_metadata", "parse_scene_name",
           "pack_bayer", "load_starlight", "load_fixed_pattern"]

DATASETS = ("synthetic", "pairs", "sidd", "starlight")


def load_dataset(name: str = "synthetic", data_dir=None, **opts) -> BurstDataset:
    """Builds dataset ``name`` from ``data_dir`` with source options ``opts``.

    Args:
      name: one of :data:`DATASETS`.
      data_dir: the source's folder (not used by ``"synthetic"``; required by the others).
      **opts: passed to :func:`load_synthetic`, :func:`load_pairs`, :func:`load_sidd` or :func:`load_starlight`.

    Raises:
      ValueError: unknown name, or a data_dir missing / given where none is used.
      FileNotFoundError: ``data_dir`` does not exist (from the source).
    """
    if name not in DATASETS:
        raise ValueError(f"unknown dataset {name!r}; expected one of {DATASETS}")
    if name == "synthetic":
        if data_dir is not None:
            raise ValueError(f"the synthetic dataset is embedded and takes no data_dir (got {data_dir!r})")
        return load_synthetic(**opts)
    if data_dir is None:
        raise ValueError(f"dataset {name!r} needs data_dir")
    loader = {"pairs": load_pairs, "sidd": load_sidd, "starlight": load_starlight}[name]
    return loader(data_dir, **opts)
