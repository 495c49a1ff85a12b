"""tensorflow-datasets builder for SIDD (manual download), usable without TensorFlow.

The builder wraps the plain reader of :mod:`starlight_jax.data.sidd` and writes the ``array_record`` file
format, which tensorflow-datasets 4.9 writes and reads without TensorFlow (checked with TF absent);
``tfds.data_source`` / :func:`load_sidd_tfds` read it back as random-access numpy records. TFRecord (the
tfds default) would need TensorFlow, so :func:`prepare_sidd_tfds` always asks for ``array_record``.

Records keep generation order (``disable_shuffling``, zero-padded index keys), and the builder stores every record's name, frame
count and size in the dataset's ``metadata.json``, so the pipeline can plan crops without decoding pixels.

Usage::

    prepare_sidd_tfds("/data/SIDD_Small_Raw_Only", variant="raw", tfds_data_dir="~/tensorflow_datasets")
    ds = load_sidd_tfds(None, variant="raw", tfds_data_dir="~/tensorflow_datasets")  # a BurstDataset
"""

from __future__ import annotations

from typing import Any

import numpy as np
import tensorflow_datasets as tfds
from etils import epath

from starlight_jax.data import sidd
from starlight_jax.data.base import BurstDataset, BurstSource, Item, ItemInfo, common_frame_shape

__all__ = ["StarlightSidd", "prepare_sidd_tfds", "load_sidd_tfds"]

_TEXT_FIELDS = ("scene", "instance", "camera", "brightness", "cfa", "raw_units")
_INT_FIELDS = ("iso", "shutter", "illuminant")


class StarlightSidd(tfds.core.GeneratorBasedBuilder):
    """SIDD Small/Medium noisy/clean bursts; configs ``raw`` (float32, 4 ch) and ``srgb`` (uint8, 3 ch)."""

    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "Raw packed to (R, G1, G2, B) by each file's CFA; sRGB PNGs."}
    BUILDER_CONFIGS = [
        tfds.core.BuilderConfig(name="raw", description="*_NOISY_RAW_010.MAT / *_GT_RAW_010.MAT, 4 channels"),
        tfds.core.BuilderConfig(name="srgb", description="*_NOISY_SRGB_010.PNG / *_GT_SRGB_010.PNG, 3 channels"),
    ]
    MANUAL_DOWNLOAD_INSTRUCTIONS = """
    Download SIDD-Small or SIDD-Medium (raw and/or sRGB) from
    https://abdokamel.github.io/sidd/ and unpack it; pass the folder that holds the scene folders
    (e.g. SIDD_Small_Raw_Only/Data) as manual_dir.
    """

    @tfds.core.utils.classproperty
    @classmethod
    def code_path(cls) -> epath.Path:
        # tfds derives this from package resources and, outside a zip, imports importlib_resources, which
        # tfds does not install on Python >= 3.9. The answer is this file anyway.
        return epath.Path(__file__)

    def _info(self) -> tfds.core.DatasetInfo:
        raw = self.builder_config.name == "raw"
        image = tfds.features.Tensor(shape=(None, None, None, 4 if raw else 3),
                                     dtype=np.float32 if raw else np.uint8, encoding="zlib")
        feats = {"clean": image, "noisy": image, "name": tfds.features.Text()}
        feats.update({k: tfds.features.Text() for k in _TEXT_FIELDS})
        feats.update({k: np.int32 for k in _INT_FIELDS})
        return tfds.core.DatasetInfo(builder=self, features=tfds.features.FeaturesDict(feats),
                                     homepage="https://abdokamel.github.io/sidd/",
                                     metadata=tfds.core.MetadataDict(),
                                     # Records sorted by key = generation order, so metadata.json lines up.
                                     disable_shuffling=True)

    def _split_generators(self, dl_manager):
        ds = sidd.load_sidd_files(dl_manager.manual_dir, variant=self.builder_config.name)
        splits = {}
        for name in ("train", "test"):
            src = ds.split(name)
            self.info.metadata[name] = [[*src.info(i)[:2], *src.info(i).frame_shape] for i in range(len(src))]
            if len(src):  # tfds refuses empty splits
                splits[name] = self._generate_examples(src)
        return splits

    def _generate_examples(self, src: BurstSource):
        raw = self.builder_config.name == "raw"
        for i in range(len(src)):
            rec = src.read(i)
            ex = {"name": rec["name"]}
            for k in ("clean", "noisy"):
                ex[k] = rec[k] if raw else np.round(rec[k] * 255.0).astype(np.uint8)
            ex.update({k: str(rec.get(k, "")) for k in _TEXT_FIELDS})
            ex.update({k: int(rec.get(k, -1)) for k in _INT_FIELDS})
            yield f"{i:08d}", ex


def _builder(variant: str, tfds_data_dir) -> StarlightSidd:
    if variant not in ("raw", "srgb"):
        raise ValueError(f"unknown SIDD variant {variant!r}; expected 'raw' or 'srgb'")
    return StarlightSidd(config=variant, data_dir=tfds_data_dir, file_format="array_record")


def prepare_sidd_tfds(manual_dir, *, variant: str = "raw", tfds_data_dir=None) -> StarlightSidd:
    """Writes the array_record dataset from the SIDD files in ``manual_dir`` (no-op when already written)."""
    builder = _builder(variant, tfds_data_dir)
    builder.download_and_prepare(download_config=tfds.download.DownloadConfig(manual_dir=str(manual_dir)))
    return builder


def load_sidd_tfds(manual_dir=None, *, variant: str = "raw", tfds_data_dir=None) -> BurstDataset:
    """Reads the prepared dataset as a :class:`BurstDataset` (prepares it first when ``manual_dir`` is given).

    Raises:
      FileNotFoundError: not prepared and no ``manual_dir``.
    """
    if manual_dir is not None:
        builder = prepare_sidd_tfds(manual_dir, variant=variant, tfds_data_dir=tfds_data_dir)
    else:
        builder = _builder(variant, tfds_data_dir)
        if not builder.is_prepared():
            raise FileNotFoundError(f"SIDD tfds dataset {variant!r} is not prepared under {builder.data_dir}; "
                                    "pass the SIDD folder as manual_dir")
    sources = builder.as_data_source()
    c = 4 if variant == "raw" else 3
    splits = {}
    for name in ("train", "test"):
        infos = builder.info.metadata.get(name, [])
        src = sources.get(name)
        items = [_record_item(src, i, ItemInfo(n, int(t), (int(h), int(w))), variant == "raw")
                 for i, (n, t, h, w) in enumerate(infos)]
        splits[name] = BurstSource(items, c)
    return BurstDataset(
        name="sidd", train=splits["train"], test=splits["test"], channels=c,
        channel_names=sidd.RAW_CHANNELS if c == 4 else sidd.SRGB_CHANNELS,
        frame_shape=common_frame_shape(list(splits.values())),
        info={"split_rule": "as written by the reader (scene number % 5 == 0 -> test)", "backend": "tfds",
              "tfds_dir": str(builder.data_dir)})


def _record_item(src, index: int, info: ItemInfo, raw: bool) -> Item:
    def read(start: int, length: int) -> dict[str, Any]:
        rec = src[index]
        name = rec["name"].decode() if isinstance(rec["name"], bytes) else str(rec["name"])
        if name != info.name:
            raise ValueError(f"tfds record {index} is {name!r}, metadata.json says {info.name!r}; re-prepare the dataset")
        out = {k: (v.decode() if isinstance(v, bytes) else v) for k, v in rec.items() if k not in ("clean", "noisy")}
        for k in ("clean", "noisy"):
            x = np.asarray(rec[k])[start:start + length]
            out[k] = x.astype(np.float32) if raw else x.astype(np.float32) / np.float32(255.0)
        return out

    return Item(info, read)
