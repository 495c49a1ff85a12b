"""A folder of paired noisy/clean images: ``D/noisy/<name>`` and ``D/clean/<name>``.

Files with the same name are one pair. Supported: PNG and TIFF (8 or 16 bit), JPEG (8 bit). Values are
scaled to [0, 1] by the file's bit depth (``/255`` or ``/65535``; ``max_value`` overrides it, e.g. 4095
for 12-bit data stored in 16-bit PNGs). Colour images stay 3 channels (sRGB, not linearised), grey ones
are 1 channel; every pair of a dataset must have the same channel count.

Bursts: each pair is one burst of T = 1 frame (``clean`` and ``noisy`` ``[1, H, W, C]``). Different
scenes are not stacked into pseudo-bursts because their sizes, cameras and exposures differ; batch them
along B instead (the training code then sees B x 1 frames).

Split rule: pairs are sorted by file name; those at sorted positions ``test_every - 1, 2 * test_every - 1,
...`` (every 5th by default) form the test split, the rest the train split.

Decoded files are kept in memory, as stored (8/16-bit), up to ``cache_mb`` per dataset (default 1024 MB):
decoding a 512² PNG pair takes longer than a GPU training step, so re-reading the folder every step made
training data-bound. Files beyond the budget are decoded at each read.

Everything that can be checked from file headers is checked when the dataset is built: missing partner
files, size, channel and bit-depth mismatches, unreadable headers. Pixel decoding errors surface when a
pair is read, naming the file.
"""

from __future__ import annotations

import pathlib
import threading
from typing import Any

from starlight_jax.data.base import BurstDataset, BurstSource, Item, ItemInfo, common_frame_shape
from starlight_jax.data.images import IMAGE_SUFFIXES, ImageHeader, probe_image, read_image, to_unit_float

__all__ = ["load_pairs", "scan_pairs"]


def scan_pairs(data_dir: str | pathlib.Path) -> list[tuple[str, pathlib.Path, pathlib.Path]]:
    """Lists ``(name, noisy_path, clean_path)`` for every pair under ``data_dir``, sorted by name.

    Raises:
      FileNotFoundError: ``data_dir``, ``noisy/`` or ``clean/`` is missing, a file has no partner, or
        there are no images.
    """
    root = pathlib.Path(data_dir)
    if not root.is_dir():
        raise FileNotFoundError(f"pairs data_dir {root} does not exist (expected {root}/noisy and {root}/clean)")
    found = {}
    for sub in ("noisy", "clean"):
        d = root / sub
        if not d.is_dir():
            raise FileNotFoundError(f"{d} does not exist; a pairs folder needs noisy/ and clean/ with equal file names")
        found[sub] = {p.name: p for p in d.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES}
    only_noisy = sorted(set(found["noisy"]) - set(found["clean"]))
    only_clean = sorted(set(found["clean"]) - set(found["noisy"]))
    if only_noisy:
        raise FileNotFoundError(f"{root / 'noisy' / only_noisy[0]} has no partner {root / 'clean' / only_noisy[0]}"
                                f" ({len(only_noisy)} noisy file(s) without a clean one)")
    if only_clean:
        raise FileNotFoundError(f"{root / 'clean' / only_clean[0]} has no partner {root / 'noisy' / only_clean[0]}"
                                f" ({len(only_clean)} clean file(s) without a noisy one)")
    if not found["noisy"]:
        raise FileNotFoundError(f"{root}/noisy and {root}/clean hold no images (expected {IMAGE_SUFFIXES})")
    return [(n, found["noisy"][n], found["clean"][n]) for n in sorted(found["noisy"])]


class _DecodedCache:
    """Decoded ``(array, bits)`` per file, up to ``max_bytes`` in all; thread-safe (loader workers share it)."""

    def __init__(self, max_bytes: int):
        self.max_bytes, self.used, self._files, self._lock = max_bytes, 0, {}, threading.Lock()

    def read(self, path: pathlib.Path):
        hit = self._files.get(path)
        if hit is not None:
            return hit
        decoded = read_image(path)
        with self._lock:
            if path not in self._files and self.used + decoded[0].nbytes <= self.max_bytes:
                self._files[path] = decoded
                self.used += decoded[0].nbytes
        return decoded

    def __getstate__(self):  # a loader worker process fills its own cache
        return self.max_bytes

    def __setstate__(self, max_bytes):
        self.__init__(max_bytes)


def _pair_item(name: str, noisy_path: pathlib.Path, clean_path: pathlib.Path,
               max_value: float | None, cache: _DecodedCache) -> tuple[Item, ImageHeader]:
    hn, hc = probe_image(noisy_path), probe_image(clean_path)
    if hn.shape != hc.shape:
        raise ValueError(f"size mismatch: {noisy_path} is {hn.shape} (H, W, C) but {clean_path} is {hc.shape}")
    if hn.bits != hc.bits:
        raise ValueError(f"bit-depth mismatch: {noisy_path} is {hn.bits}-bit but {clean_path} is {hc.bits}-bit; "
                         "a pair must share one scale")

    def read(start: int, length: int) -> dict[str, Any]:
        out = {}
        for key, path in (("noisy", noisy_path), ("clean", clean_path)):
            arr, bits = cache.read(path)
            out[key] = to_unit_float(arr, bits, path, max_value)[None]
        return out

    return Item(ItemInfo(name, 1, hn.shape[:2]), read), hn


def load_pairs(data_dir: str | pathlib.Path, *, test_every: int = 5, max_value: float | None = None,
               cache_mb: float = 1024) -> BurstDataset:
    """Builds the pairs dataset of ``data_dir`` (see the module docstring).

    Args:
      data_dir: folder holding ``noisy/`` and ``clean/``.
      test_every: every ``test_every``-th sorted pair goes to the test split (>= 2).
      max_value: sample value that maps to 1.0 (default: 2**bits - 1 of each file).
      cache_mb: memory for decoded files (as stored, 1-2 bytes per sample); 0 decodes at every read.

    Returns:
      A :class:`BurstDataset` with T = 1 bursts, 1 or 3 channels, no fixed pattern.

    Raises:
      FileNotFoundError: missing folder, missing partner file, no images.
      ValueError: unreadable header, size / bit-depth / channel-count mismatch.
    """
    if test_every < 2:
        raise ValueError(f"test_every must be >= 2, got {test_every}")
    items, channels, bits = [], {}, set()
    cache = _DecodedCache(int(cache_mb * 2**20))
    for name, noisy_path, clean_path in scan_pairs(data_dir):
        item, header = _pair_item(name, noisy_path, clean_path, max_value, cache)
        items.append(item)
        channels.setdefault(header.shape[2], noisy_path)
        bits.add(header.bits)
    if len(channels) > 1:
        raise ValueError(f"channel-count mismatch between pairs: {channels[1]} is grey but {channels[3]} is colour")
    c = next(iter(channels))
    test = [it for i, it in enumerate(items) if i % test_every == test_every - 1]
    train = [it for i, it in enumerate(items) if i % test_every != test_every - 1]
    train_src, test_src = BurstSource(train, c), BurstSource(test, c)
    return BurstDataset(
        name="pairs", train=train_src, test=test_src, channels=c,
        channel_names=("R", "G", "B") if c == 3 else ("Y",),
        frame_shape=common_frame_shape([train_src, test_src]),
        info={"split_rule": f"sorted file names; positions i with i % {test_every} == {test_every - 1} are test",
              "value_scale": "sample / (2**bits - 1)" if max_value is None else f"sample / {max_value}",
              "burst": "T = 1 frame per pair", "data_dir": str(data_dir),
              # integer samples: every value is a multiple of one step (None when the files' depths differ)
              "quantization_step": (1.0 / max_value if max_value else
                                    1.0 / (2 ** next(iter(bits)) - 1) if len(bits) == 1 else None)})
