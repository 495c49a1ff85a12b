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

import inspect

from starlight_jax.data.base import BurstDataset, BurstSource, Item, ItemInfo
from starlight_jax.data.pairs import load_pairs
from starlight_jax.data.pipeline import BurstLoader, PipelineConfig, crop_fixed_pattern, make_loader, shard_batch
from starlight_jax.data.sidd import load_sidd_files, pack_bayer, parse_metadata, parse_scene_name
from starlight_jax.data.starlight_mat import load_fixed_pattern, load_starlight
from starlight_jax.data.synthetic import SensorModel, SyntheticConfig, load_synthetic

__all__ = ["load_dataset", "DATASETS", "BurstDataset", "BurstSource", "Item", "ItemInfo", "BurstLoader",
           "PipelineConfig", "make_loader", "shard_batch", "crop_fixed_pattern", "load_synthetic",
           "SyntheticConfig", "SensorModel", "load_pairs", "load_sidd", "load_sidd_files", "parse_metadata",
           "parse_scene_name", "pack_bayer", "load_starlight", "load_fixed_pattern"]

DATASETS = ("synthetic", "pairs", "sidd", "starlight")

# Where an optional backend's package comes from, by top-level module name.
_TFDS_MODULES = ("tensorflow_datasets", "etils", "array_record")


def load_sidd(data_dir, *, backend: str = "files", tfds_data_dir=None, **opts) -> BurstDataset:
    """SIDD from the files (``backend="files"``, :func:`load_sidd_files`) or from a tensorflow-datasets
    array_record build (``backend="tfds"``, :mod:`.sidd_tfds`: prepared once from ``data_dir``, the
    builder's manual_dir, under ``tfds_data_dir``).

    Args:
      data_dir: the SIDD folder.
      backend: ``"files"`` or ``"tfds"``.
      tfds_data_dir: where the tfds build lives (``backend="tfds"`` only).
      **opts: options of :func:`load_sidd_files`; with ``backend="tfds"`` only ``variant`` may differ from
        its default (the builder uses the reader's defaults).

    Raises:
      ValueError: an unknown backend, or reader options the tfds backend cannot honour.
      ModuleNotFoundError: ``backend="tfds"`` without tensorflow-datasets installed, saying how to install it.
    """
    if backend == "files":
        return load_sidd_files(data_dir, **opts)
    if backend != "tfds":
        raise ValueError(f"unknown SIDD backend {backend!r}; expected 'files' or 'tfds'")
    defaults = {k: p.default for k, p in inspect.signature(load_sidd_files).parameters.items()
                if p.default is not inspect.Parameter.empty}
    unknown = sorted(set(opts) - set(defaults))
    if unknown:
        raise TypeError(f"load_sidd got unknown options {unknown}; expected some of {sorted(defaults)}")
    changed = [k for k, v in opts.items() if k != "variant"
               and (tuple(v) if isinstance(v, list) else v) != defaults[k]]
    if changed:
        raise ValueError(f"options {changed} cannot be changed with backend='tfds' (the builder uses the reader's "
                         "defaults); use backend='files'")
    try:
        from starlight_jax.data import sidd_tfds
    except ModuleNotFoundError as e:
        if (e.name or "").split(".")[0] not in _TFDS_MODULES:
            raise
        raise ModuleNotFoundError(
            f"the SIDD backend 'tfds' needs tensorflow-datasets ({e.name} is missing): pip install "
            f"tensorflow-datasets array-record (or pip install 'starlight-jax[tfds]'); or use backend='files'",
            name=e.name) from e
    return sidd_tfds.load_sidd_tfds(data_dir, variant=opts.get("variant", "raw"), tfds_data_dir=tfds_data_dir)


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
