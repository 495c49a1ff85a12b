"""Batches for training and evaluation: crops, burst windows, per-epoch shuffling, resuming, prefetch.

A batch is a dict of numpy arrays

* ``"clean"``, ``"noisy"``: float32 ``[B, T, h, w, C]``;
* ``"offset"``: int32 ``[B, 2]``, the (row, column) of each crop's top-left pixel in its full frame, so the
  model's full-frame fixed pattern can be cropped at the same place (``fixed[r:r+h, c:c+w]``).

Train split: each epoch visits the items in a permutation drawn from ``(seed, epoch)``, so the order is
deterministic and changes every epoch (the original never called ``set_epoch``, SPEC §12.15: with
``reshuffle=False``, as under ``compat="starlight"``, every epoch takes epoch 0's permutation). Batch k of
epoch e holds positions ``k*B .. k*B + B - 1`` of that permutation; a leftover partial batch is dropped.
The crop offsets, uniform in ``[0, H - h]`` x ``[0, W - w]`` (inclusive, so a crop may equal the frame),
and the window start, uniform in ``[0, N - T]``, of the item at position p come from a generator seeded
by ``(seed, epoch, p)``. Hence ``batch_at(epoch, index)`` is a pure function and training resumes exactly
from a saved ``(epoch, index)``.

Test split: sorted order, no shuffling, frames ``[0, T)`` and the fixed crop at ``test_offset`` (10, 10)
as in the original, moved in per axis when the frame is too small for it (``min(10, H - h)``).

:class:`BurstLoader` produces batches in a background thread (``prefetch`` batches ahead, items of one
batch read by ``num_threads`` threads) while the device trains; :func:`shard_batch` places a host batch on
a ``('data',)`` device mesh.
"""

from __future__ import annotations

import dataclasses
import queue
import threading
import weakref
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Iterator

import numpy as np

from starlight_jax.data.base import BurstDataset, BurstSource

__all__ = ["PipelineConfig", "BurstLoader", "make_loader", "shard_batch", "crop_fixed_pattern"]


@dataclasses.dataclass(frozen=True)
class PipelineConfig:
    """Options of :class:`BurstLoader`."""

    # Bursts per batch B.
    batch_size: int = 1
    # Crop (h, w); both divisible by 64 (the discriminator's patch size). An int means square.
    crop_size: tuple[int, int] | int = (256, 256)
    # Frames per burst T; None takes each item's full length (all items of a batch must then agree).
    frames: int | None = 16
    # Seed of the epoch permutations, crops and windows.
    seed: int = 0
    # A new permutation every epoch; False: epoch 0's order every epoch (the original's sampler without
    # set_epoch, SPEC §12.15; crops and windows still change per epoch).
    reshuffle: bool = True
    # Fixed crop of the test split, (row, column), as in the original (SPEC §1).
    test_offset: tuple[int, int] = (10, 10)
    # Batches produced ahead of the consumer, and threads reading the items of one batch.
    prefetch: int = 2
    num_threads: int = 2

    def __post_init__(self):
        crop = (self.crop_size, self.crop_size) if isinstance(self.crop_size, int) else tuple(self.crop_size)
        object.__setattr__(self, "crop_size", crop)
        if len(crop) != 2 or any(c < 64 or c % 64 for c in crop):
            raise ValueError(f"crop_size must be (h, w) with positive multiples of 64, got {self.crop_size}")
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {self.batch_size}")
        if self.frames is not None and self.frames < 1:
            raise ValueError(f"frames must be >= 1 or None, got {self.frames}")
        if self.seed < 0:
            raise ValueError(f"seed must be >= 0, got {self.seed}")
        if self.prefetch < 1 or self.num_threads < 1:
            raise ValueError(f"prefetch and num_threads must be >= 1, got {self.prefetch}, {self.num_threads}")


class BurstLoader:
    """Deterministic, resumable, prefetching batch iterator over one split.

    Iterating yields batches from :attr:`position` on (``num_epochs`` epochs, None = forever) and keeps
    :attr:`position` at the next batch to be *returned*, so ``loader.state()`` saved after a training
    step resumes exactly at the following batch.

    Args:
      source: the split to read.
      config: the options.
      train: True for training behaviour (shuffle, random crops and windows), False for the fixed test
        behaviour (module docstring).
      start: ``(epoch, index)`` of the first batch.
      num_epochs: stop after this epoch count (counted from epoch 0, so resuming at epoch e yields
        ``num_epochs - e`` more); None never stops.

    Raises:
      ValueError: the split has fewer items than one batch, an item is smaller than the crop or has
        fewer frames than T (the item is named).
    """

    def __init__(self, source: BurstSource, config: PipelineConfig = PipelineConfig(), *, train: bool = True,
                 start: tuple[int, int] = (0, 0), num_epochs: int | None = None):
        self.source, self.config, self.train, self.num_epochs = source, config, train, num_epochs
        n, b = len(source), config.batch_size
        if n < b:
            raise ValueError(f"the split has {n} item(s), fewer than batch_size={b}: no full batch")
        h, w = config.crop_size
        for i in range(n):
            info = source.info(i)
            if info.frame_shape[0] < h or info.frame_shape[1] < w:
                raise ValueError(f"item {info.name!r} has frames of {info.frame_shape[0]}x{info.frame_shape[1]}, "
                                 f"smaller than the crop {h}x{w}")
            if config.frames is not None and info.num_frames < config.frames:
                raise ValueError(f"item {info.name!r} has {info.num_frames} frame(s), fewer than the needed "
                                 f"frames={config.frames}")
        self.batches_per_epoch = n // b
        self._position = self._check_position(start)
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self._queue: queue.Queue | None = None

    # -- deterministic core ---------------------------------------------------------------------------
    def order(self, epoch: int) -> np.ndarray:
        """Item indices of ``epoch`` in visiting order."""
        n = len(self.source)
        if not self.train:
            return np.arange(n)
        return np.random.default_rng([self.config.seed, 1, epoch if self.config.reshuffle else 0]).permutation(n)

    def batch_at(self, epoch: int, index: int, executor: ThreadPoolExecutor | None = None) -> dict[str, np.ndarray]:
        """The batch ``index`` of ``epoch`` (pure: the same arguments always give the same batch)."""
        self._check_position((epoch, index))
        b = self.config.batch_size
        order = self.order(epoch)
        jobs = [(int(order[p]), epoch, p) for p in range(index * b, (index + 1) * b)]
        items = list(executor.map(self._item, jobs)) if executor else [self._item(j) for j in jobs]
        t_set = {it["noisy"].shape[0] for it in items}
        if len(t_set) > 1:
            raise ValueError(f"frames=None but items {[it['name'] for it in items]} have different lengths {t_set}; "
                             "set PipelineConfig.frames")
        return {"clean": np.stack([it["clean"] for it in items]), "noisy": np.stack([it["noisy"] for it in items]),
                "offset": np.array([it["offset"] for it in items], np.int32)}

    def _item(self, job: tuple[int, int, int]) -> dict[str, Any]:
        i, epoch, pos = job
        info = self.source.info(i)
        (h, w), (fh, fw) = self.config.crop_size, info.frame_shape
        t = info.num_frames if self.config.frames is None else self.config.frames
        if self.train:
            rng = np.random.default_rng([self.config.seed, 2, epoch, pos])
            top, left = int(rng.integers(0, fh - h + 1)), int(rng.integers(0, fw - w + 1))
            start = int(rng.integers(0, info.num_frames - t + 1))
        else:
            top, left = min(self.config.test_offset[0], fh - h), min(self.config.test_offset[1], fw - w)
            start = 0
        rec = self.source.read(i, start, t)
        return {"name": info.name, "offset": (top, left),
                "clean": np.ascontiguousarray(rec["clean"][:, top:top + h, left:left + w]),
                "noisy": np.ascontiguousarray(rec["noisy"][:, top:top + h, left:left + w])}

    def _check_position(self, pos) -> tuple[int, int]:
        epoch, index = int(pos[0]), int(pos[1])
        if epoch < 0 or not 0 <= index < self.batches_per_epoch:
            raise ValueError(f"position (epoch={epoch}, index={index}) is invalid; index must be in "
                             f"[0, {self.batches_per_epoch}) batches per epoch")
        return epoch, index

    # -- position / resume ----------------------------------------------------------------------------
    @property
    def position(self) -> tuple[int, int]:
        """``(epoch, index)`` of the next batch that iteration returns."""
        return self._position

    def state(self) -> dict[str, int]:
        """JSON-able resume state ``{"epoch", "index", "seed"}``."""
        return {"epoch": self._position[0], "index": self._position[1], "seed": self.config.seed}

    def restore(self, state: dict[str, int]) -> None:
        """Continues from a :meth:`state`; the seed must match the one the state was saved with."""
        if int(state.get("seed", self.config.seed)) != self.config.seed:
            raise ValueError(f"state was saved with seed={state['seed']} but this loader has seed={self.config.seed}")
        self.close()
        self._position = self._check_position((state["epoch"], state["index"]))

    def _advance(self, pos: tuple[int, int]) -> tuple[int, int]:
        epoch, index = pos
        return (epoch, index + 1) if index + 1 < self.batches_per_epoch else (epoch + 1, 0)

    # -- iteration with a background producer ---------------------------------------------------------
    def __iter__(self) -> Iterator[dict[str, np.ndarray]]:
        return self

    def __next__(self) -> dict[str, np.ndarray]:
        if self.num_epochs is not None and self._position[0] >= self.num_epochs:
            self.close()
            raise StopIteration
        if self._thread is None:
            self._start()
        pos, batch = self._queue.get()
        if isinstance(batch, BaseException):
            self.close()
            raise batch
        if pos != self._position:  # cannot happen unless the producer is broken; never hand out a wrong batch
            raise RuntimeError(f"prefetch produced batch {pos}, expected {self._position}")
        self._position = self._advance(pos)
        return batch

    def _start(self) -> None:
        self._stop.clear()
        self._queue = queue.Queue(maxsize=self.config.prefetch)
        # The thread holds only a weak reference, so a loader dropped without close() is collected and its
        # __del__ stops the thread.
        self._thread = threading.Thread(target=_produce, args=(weakref.ref(self), self._position, self._queue,
                                                               self._stop), name="BurstLoader", daemon=True)
        self._thread.start()

    def close(self) -> None:
        """Stops the background producer (iteration restarts it from :attr:`position`)."""
        if self._thread is not None:
            self._stop.set()
            self._thread.join()
            self._thread, self._queue = None, None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def __del__(self):
        try:
            self.close()
        except Exception:
            pass


def _produce(ref, pos, out: queue.Queue, stop: threading.Event) -> None:
    """Background producer of :class:`BurstLoader`: puts ``(position, batch or exception)`` into ``out``."""
    loader = ref()
    if loader is None:
        return
    num_threads, num_epochs = loader.config.num_threads, loader.num_epochs
    del loader
    with ThreadPoolExecutor(num_threads, thread_name_prefix="BurstLoader-read") as ex:
        while not stop.is_set():
            if num_epochs is not None and pos[0] >= num_epochs:
                return
            loader = ref()
            if loader is None:
                return
            try:
                item = (pos, loader.batch_at(*pos, executor=ex))
            except BaseException as e:  # hand the error to the consumer, which re-raises it
                item = (pos, e)
            nxt = loader._advance(pos)
            del loader
            while not stop.is_set() and ref() is not None:
                try:
                    out.put(item, timeout=0.1)
                    break
                except queue.Full:
                    continue
            if isinstance(item[1], BaseException):
                return
            pos = nxt


def make_loader(dataset: BurstDataset, split: str = "train", config: PipelineConfig | None = None,
                **kwargs) -> BurstLoader:
    """A :class:`BurstLoader` over ``dataset.split(split)``; train behaviour for ``"train"`` only.

    ``kwargs`` go to :class:`BurstLoader` (``start``, ``num_epochs``; the test split defaults to one epoch).
    """
    src = dataset.split(split)
    if split == "test":
        kwargs.setdefault("num_epochs", 1)
    return BurstLoader(src, config or PipelineConfig(), train=split == "train", **kwargs)


def crop_fixed_pattern(fixed_pattern: np.ndarray, offset: np.ndarray, crop_size: tuple[int, int]) -> np.ndarray:
    """Cuts ``[B, h, w, C]`` from a full-frame ``[Hf, Wf, C]`` map at a batch's ``"offset"`` ``[B, 2]``."""
    h, w = crop_size
    return np.stack([fixed_pattern[r:r + h, c:c + w] for r, c in np.asarray(offset)])


def shard_batch(batch: dict[str, np.ndarray], mesh=None, axis: str = "data") -> dict[str, Any]:
    """Places a host batch on devices, split along B over the mesh axis ``axis``.

    Args:
      batch: this process's batch (leading axis B_local).
      mesh: a ``jax.sharding.Mesh`` with axis ``axis``; None builds one over all devices.

    Returns:
      The same keys as global ``jax.Array``s sharded ``P(axis)`` along B.

    Raises:
      ValueError: B_local is not divisible by this process's devices on the mesh (names both numbers).
    """
    import jax
    from jax.sharding import NamedSharding, PartitionSpec

    if mesh is None:
        mesh = jax.make_mesh((jax.device_count(),), (axis,))
    sharding = NamedSharding(mesh, PartitionSpec(axis))
    local = sum(1 for d in mesh.devices.flat if d.process_index == jax.process_index())
    out = {}
    for k, v in batch.items():
        if v.shape[0] % local:
            raise ValueError(f"batch[{k!r}] has B={v.shape[0]} rows, not divisible by the {local} local device(s) "
                             f"of mesh axis {axis!r}")
        out[k] = jax.make_array_from_process_local_data(sharding, v)
    return out
