"""The record format shared by every data source, and the dataset object that carries it.

Every source (``synthetic``, ``pairs``, ``sidd``, ``starlight``) yields the same record: one item is a
burst dict

* ``"clean"``: float32 ``[T, H, W, C]`` in [0, 1], the noise-free frames (often one image repeated T times);
* ``"noisy"``: float32 ``[T, H, W, C]`` in [0, 1], the matching noisy frames;
* optional metadata under other keys (``"name"`` always; camera, ISO, ... where the source knows them).

Frames are returned at their full size; the pipeline (:mod:`starlight_jax.data.pipeline`) crops them and
picks a T-frame window out of longer sequences. Items are read lazily: a source knows every item's name,
frame count and frame size without decoding pixels, so the pipeline can validate a crop or a window
before the first batch.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping, Sequence
from typing import Any, NamedTuple

import numpy as np

__all__ = ["ItemInfo", "Item", "BurstSource", "BurstDataset", "check_burst"]


class ItemInfo(NamedTuple):
    """What is known about one item without reading its pixels.

    Attributes:
      name: unique, human-readable name (usually the file or folder it comes from).
      num_frames: how many frames the item holds (T of a full read).
      frame_shape: ``(H, W)`` of one frame (per channel plane for packed raw data).
    """

    name: str
    num_frames: int
    frame_shape: tuple[int, int]


# read(start, length) -> burst dict with frames [start, start + length).
Reader = Callable[[int, int], dict[str, Any]]


@dataclasses.dataclass(frozen=True, eq=False)
class Item:
    """One lazily-read item: its :class:`ItemInfo` and a ``read(start, length)`` function."""

    info: ItemInfo
    read: Reader


class BurstSource(Sequence):
    """One split of a dataset: an indexable sequence of bursts.

    ``source[i]`` reads item ``i`` whole; ``source.read(i, start, length)`` reads only the frames
    ``[start, start + length)`` (sources that store one frame per file, or HDF5 ``.mat`` files, then
    touch only those frames).

    Args:
      items: the items, in a deterministic order (the split rule of the dataset decides which).
      channels: number of channels C of every frame.
    """

    def __init__(self, items: Sequence[Item], channels: int):
        self._items = tuple(items)
        self.channels = int(channels)
        names = [it.info.name for it in self._items]
        if len(set(names)) != len(names):
            dup = sorted({n for n in names if names.count(n) > 1})
            raise ValueError(f"item names must be unique within a split; duplicated: {dup[:5]}")

    def __len__(self) -> int:
        return len(self._items)

    def __getitem__(self, index):  # noqa: D105 (Sequence protocol)
        if isinstance(index, slice):
            return BurstSource(self._items[index], self.channels)
        return self.read(index)

    @property
    def names(self) -> tuple[str, ...]:
        """The item names, in order."""
        return tuple(it.info.name for it in self._items)

    def info(self, index: int) -> ItemInfo:
        """Returns the :class:`ItemInfo` of item ``index`` (no pixels are read)."""
        return self._items[self._check_index(index)].info

    def read(self, index: int, start: int = 0, length: int | None = None) -> dict[str, Any]:
        """Reads frames ``[start, start + length)`` of item ``index`` (all frames when ``length`` is None).

        Returns:
          The burst dict: ``"clean"``/``"noisy"`` float32 ``[length, H, W, C]`` plus metadata.

        Raises:
          ValueError: the window does not fit in the item, or the item's file is bad (the message names it).
        """
        item = self._items[self._check_index(index)]
        n = item.info.num_frames
        length = n - start if length is None else int(length)
        if start < 0 or length < 1 or start + length > n:
            raise ValueError(
                f"item {item.info.name!r} has {n} frame(s); cannot read frames [{start}, {start + length}) "
                "(fewer than the needed frames)"
            )
        rec = item.read(int(start), length)
        check_burst(rec, item.info.name, expect_frames=length, expect_shape=item.info.frame_shape,
                    expect_channels=self.channels)
        rec.setdefault("name", item.info.name)
        return rec

    def _check_index(self, index: int) -> int:
        i = int(index)
        if i < 0:
            i += len(self._items)
        if not 0 <= i < len(self._items):
            raise IndexError(f"index {index} out of range for a split of {len(self._items)} item(s)")
        return i


def check_burst(rec: Mapping[str, Any], name: str, *, expect_frames: int | None = None,
                expect_shape: tuple[int, int] | None = None, expect_channels: int | None = None) -> None:
    """Checks one burst dict against the record format; raises ValueError naming ``name`` if it is off."""
    for key in ("clean", "noisy"):
        if key not in rec:
            raise ValueError(f"{name}: record has no {key!r} array (keys: {sorted(rec)})")
        a = rec[key]
        if not isinstance(a, np.ndarray) or a.dtype != np.float32 or a.ndim != 4:
            raise ValueError(f"{name}: {key!r} must be a float32 array [T, H, W, C], got "
                             f"{type(a).__name__} {getattr(a, 'dtype', '')} {getattr(a, 'shape', '')}")
    if rec["clean"].shape != rec["noisy"].shape:
        raise ValueError(f"{name}: clean shape {rec['clean'].shape} != noisy shape {rec['noisy'].shape}")
    t, h, w, c = rec["noisy"].shape
    if expect_frames is not None and t != expect_frames:
        raise ValueError(f"{name}: expected {expect_frames} frame(s), got {t}")
    if expect_shape is not None and (h, w) != tuple(expect_shape):
        raise ValueError(f"{name}: expected frames of size {tuple(expect_shape)}, got {(h, w)}")
    if expect_channels is not None and c != expect_channels:
        raise ValueError(f"{name}: expected {expect_channels} channel(s), got {c}")


@dataclasses.dataclass(frozen=True, eq=False)
class BurstDataset:
    """A dataset: a train and a test split of bursts, plus what is known about the sensor.

    Attributes:
      name: source name (``"synthetic"``, ``"pairs"``, ``"sidd"``, ``"starlight"``).
      train: the training split.
      test: the test split (may be empty; the split rule is in ``info["split_rule"]``).
      channels: C.
      channel_names: name of each channel, e.g. ``("R", "G1", "G2", "B")``.
      frame_shape: ``(H, W)`` shared by every item, or None when item sizes differ.
      fixed_pattern: optional full-frame ``[Hf, Wf, C]`` float32 additive map (the mean dark-frame offset),
        aligned with frame pixel (0, 0); the pipeline's ``"offset"`` says where a crop sits in it.
      truth: for the synthetic source, the ground-truth sensor parameters (see ``synthetic``); else None.
      info: free-form description: ``split_rule``, value scale, options used.
    """

    name: str
    train: BurstSource
    test: BurstSource
    channels: int
    channel_names: tuple[str, ...]
    frame_shape: tuple[int, int] | None
    fixed_pattern: np.ndarray | None = None
    truth: dict[str, Any] | None = None
    info: dict[str, Any] = dataclasses.field(default_factory=dict)

    def __post_init__(self):
        if len(self.channel_names) != self.channels:
            raise ValueError(f"channel_names {self.channel_names} do not match channels={self.channels}")
        fp = self.fixed_pattern
        if fp is not None:
            if fp.ndim != 3 or fp.shape[-1] != self.channels or fp.dtype != np.float32:
                raise ValueError(f"fixed_pattern must be float32 [Hf, Wf, {self.channels}], got "
                                 f"{fp.dtype} {fp.shape}")
            if self.frame_shape is not None and fp.shape[:2] != tuple(self.frame_shape):
                raise ValueError(f"fixed_pattern covers {fp.shape[:2]} but frames are {self.frame_shape}")

    @property
    def min_frames(self) -> int | None:
        """The fewest frames any item of either split holds: the longest window every burst can give
        (1 for image pairs); None when the dataset has no items."""
        counts = [s.info(i).num_frames for s in (self.train, self.test) for i in range(len(s))]
        return min(counts) if counts else None

    def split(self, name: str) -> BurstSource:
        """Returns the split called ``name`` (``"train"`` or ``"test"``)."""
        if name not in ("train", "test"):
            raise ValueError(f"unknown split {name!r}; expected 'train' or 'test'")
        return getattr(self, name)


def common_frame_shape(sources: Sequence[BurstSource]) -> tuple[int, int] | None:
    """The ``(H, W)`` shared by every item of ``sources``, or None when they differ (or there are none)."""
    shapes = {s.info(i).frame_shape for s in sources for i in range(len(s))}
    return next(iter(shapes)) if len(shapes) == 1 else None
