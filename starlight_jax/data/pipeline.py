"""Batches for training and evaluation, on grain: crops, burst windows, per-epoch shuffling, sharding by
process, resuming, prefetch in threads or worker processes.

A batch is a dict of numpy arrays

* ``"clean"``, ``"noisy"``: float32 ``[B, T, h, w, C]``;
* ``"offset"``: int32 ``[B, 2]``, the (row, column) of each crop's top-left pixel in its full frame, so the
  model's full-frame fixed pattern can be cropped at the same place (``fixed[r:r+h, c:c+w]``).

The pipeline is a ``grain.MapDataset`` (random access, so every batch is a pure function of its number):

1. index sampling: ``MapDataset.range(n)``, on the train split ``.shuffle`` (grain's index shuffle, which
   folds the epoch into the seed: a new order every epoch, from the config's seed), ``[:bpe * B]`` (a
   leftover partial batch is dropped each epoch) and ``.repeat()``; with ``reshuffle=False``, as under
   ``compat="starlight"``, ``repeat(reseed_each_epoch=False)`` gives every epoch epoch 0's order (the
   original never called ``set_epoch``, SPEC §12.15);
2. ``.map_with_index``: the item at position p of epoch e is read and cropped. Its crop offsets, uniform in
   ``[0, H - h]`` x ``[0, W - w]`` (inclusive, so a crop may equal the frame), and its window start,
   uniform in ``[0, N - T]``, come from a generator seeded by ``(seed, epoch, p)``, so they change every
   epoch (with ``reshuffle=False`` too);
3. ``.batch(B / P)`` into row blocks, ``[p::P]``: process p of P reads rows ``[p B/P, (p+1) B/P)`` of every
   global batch and nothing else, so global batch k holds the same bursts whatever P is.

Test split: sorted order, no shuffling, frames ``[0, T)`` and the fixed crop at ``test_offset`` (10, 10)
as in the original, moved in per axis when the frame is too small for it (``min(10, H - h)``).

:class:`BurstLoader` iterates from a position ``(epoch, index)``: a grain ``IterDataset`` over batch numbers
(``to_iter_dataset`` with ``num_threads`` threads and ``prefetch`` batches ahead, and ``mp_prefetch`` with
``workers`` processes). Its resume state is grain's iterator state of this pipeline, ``next_index =
epoch * batches_per_epoch + index``, written as ``{"epoch", "index", "seed"}``: it is the same on every
process and for any worker count, so the training loop saves it once with Orbax beside the train state.
:func:`shard_batch` places a host batch on a ``('data',)`` device mesh.
"""

from __future__ import annotations

import dataclasses
import sys
from typing import Any

import grain
import numpy as np

from starlight_jax.data.base import BurstDataset, BurstSource

__all__ = ["PipelineConfig", "BurstLoader", "make_loader", "shard_batch", "crop_fixed_pattern"]


@dataclasses.dataclass(frozen=True)
class PipelineConfig:
    """Options of :class:`BurstLoader`."""

    # Bursts per (global) batch B.
    batch_size: int = 1
    # Crop (h, w); both divisible by 64 (the discriminator's patch size). An int means square.
    crop_size: tuple[int, int] | int = (256, 256)
    # Frames per burst T; None takes each item's full length (all items must then agree when B/P > 1).
    frames: int | None = 16
    # Seed of the epoch orders, crops and windows.
    seed: int = 0
    # A new order every epoch; False: epoch 0's order every epoch (the original's sampler without
    # set_epoch, SPEC §12.15; crops and windows still change per epoch).
    reshuffle: bool = True
    # Fixed crop of the test split, (row, column), as in the original (SPEC §1).
    test_offset: tuple[int, int] = (10, 10)
    # Batches produced ahead of the consumer, and threads producing them (in each worker, if any).
    prefetch: int = 2
    num_threads: int = 2
    # Worker processes decoding batches (grain's mp_prefetch); 0 reads in this process's threads. Each
    # worker is a fresh interpreter (spawn) that imports the package: worth it for sources whose decoding
    # holds the GIL, not for short runs.
    workers: int = 0

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
        if self.workers < 0:
            raise ValueError(f"workers must be >= 0, got {self.workers}")


class _Crop:
    """``map_with_index`` of the pipeline: global position -> the cropped, windowed item (picklable, so
    worker processes get it)."""

    def __init__(self, source: BurstSource, config: PipelineConfig, train: bool, per_epoch: int):
        self.source, self.config, self.train, self.per_epoch = source, config, train, per_epoch

    def __call__(self, position: int, i: int) -> dict[str, Any]:
        epoch, pos = divmod(position, self.per_epoch)
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
        return {"offset": np.array((top, left), np.int32),
                "clean": np.ascontiguousarray(rec["clean"][:, top:top + h, left:left + w]),
                "noisy": np.ascontiguousarray(rec["noisy"][:, top:top + h, left:left + w])}


def _shuffle_seed(seed: int) -> int:
    # grain folds the epoch into the seed (seed + epoch); hashing the config's seed first keeps seed s at
    # epoch 1 from being seed s + 1 at epoch 0.
    return int(np.random.SeedSequence([seed, 1]).generate_state(1)[0])


class BurstLoader:
    """Deterministic, resumable, prefetching batch iterator over one split (this process's rows).

    Iterating yields batches from :attr:`position` on (``num_epochs`` epochs, None = forever) and keeps
    :attr:`position` at the next batch to be *returned*, so ``loader.state()`` saved after a training
    step resumes exactly at the following batch. A batch that fails to load is not consumed: the error
    is raised and the next iteration retries it.

    Args:
      source: the split to read.
      config: the options.
      train: True for training behaviour (shuffle, random crops and windows), False for the fixed test
        behaviour (module docstring).
      start: ``(epoch, index)`` of the first batch.
      num_epochs: stop after this epoch count (counted from epoch 0, so resuming at epoch e yields
        ``num_epochs - e`` more); None never stops.
      process_index, process_count: this process's shard p of P: it reads rows ``[p B/P, (p+1) B/P)`` of
        every global batch. Default: ``jax.process_index()``, ``jax.process_count()``.

    Attributes:
      dataset: the ``grain.MapDataset`` of this process's batches (``dataset[k]`` is global batch k's rows).
      batches_per_epoch: global batches per epoch, ``len(source) // B``.

    Raises:
      ValueError: the split has fewer items than one batch, an item is smaller than the crop or has
        fewer frames than T (the item is named), B is not divisible by P.
    """

    def __init__(self, source: BurstSource, config: PipelineConfig = PipelineConfig(), *, train: bool = True,
                 start: tuple[int, int] = (0, 0), num_epochs: int | None = None,
                 process_index: int | None = None, process_count: int | None = None):
        self.source, self.config, self.train, self.num_epochs = source, config, train, num_epochs
        n, b = len(source), config.batch_size
        if process_index is None or process_count is None:
            import jax

            process_index = jax.process_index() if process_index is None else process_index
            process_count = jax.process_count() if process_count is None else process_count
        if not 0 <= process_index < process_count:
            raise ValueError(f"process_index={process_index} must be in [0, process_count={process_count})")
        if b % process_count:
            raise ValueError(f"batch_size={b} is not divisible by process_count={process_count}: every process "
                             f"reads an equal share of each batch")
        self.process_index, self.process_count = int(process_index), int(process_count)
        if n < b:
            raise ValueError(f"the split has {n} item(s), fewer than batch_size={b}: no full batch")
        self._check_items()
        self.batches_per_epoch = n // b

        order = grain.MapDataset.range(n)
        if train:
            order = order.shuffle(seed=_shuffle_seed(config.seed))
        self._order = order.repeat(reseed_each_epoch=config.reshuffle)
        per_epoch = self.batches_per_epoch * b
        rows = order[:per_epoch].repeat(reseed_each_epoch=config.reshuffle).map_with_index(
            _Crop(source, config, train, per_epoch))
        # Block q of global batch k is element k * P + q.
        self._blocks = rows.batch(b // self.process_count, drop_remainder=True)
        self.dataset = self._blocks[self.process_index::self.process_count]
        self._position = self._check_position(start)
        self._iter = None

    def _check_items(self) -> None:
        h, w = self.config.crop_size
        lengths = {}
        for i in range(len(self.source)):
            info = self.source.info(i)
            if info.frame_shape[0] < h or info.frame_shape[1] < w:
                raise ValueError(f"item {info.name!r} has frames of {info.frame_shape[0]}x{info.frame_shape[1]}, "
                                 f"smaller than the crop {h}x{w}")
            if self.config.frames is not None and info.num_frames < self.config.frames:
                raise ValueError(f"item {info.name!r} has {info.num_frames} frame(s), fewer than the needed "
                                 f"frames={self.config.frames}")
            lengths.setdefault(info.num_frames, info.name)
        if self.config.frames is None and len(lengths) > 1 and self.config.batch_size // self.process_count > 1:
            shown = ", ".join(f"{name!r} has {t}" for t, name in lengths.items())
            raise ValueError(f"frames=None but items have different lengths ({shown} frames), so their bursts "
                             "cannot be stacked in one batch; set PipelineConfig.frames")

    # -- deterministic core ---------------------------------------------------------------------------
    def order(self, epoch: int) -> np.ndarray:
        """Item indices of ``epoch`` in visiting order (all of them, the dropped leftover last)."""
        n = len(self.source)
        return np.array([self._order[epoch * n + j] for j in range(n)])

    def batch_at(self, epoch: int, index: int, process: int | None = None) -> dict[str, np.ndarray]:
        """The rows of batch ``index`` of ``epoch`` that process ``process`` (default: this loader's) reads;
        pure: the same arguments always give the same batch."""
        self._check_position((epoch, index))
        k = epoch * self.batches_per_epoch + index
        if process is None:
            return self.dataset[k]
        if not 0 <= process < self.process_count:
            raise ValueError(f"process={process} must be in [0, process_count={self.process_count})")
        return self._blocks[k * self.process_count + process]

    def _batch_number(self, k: int) -> dict[str, np.ndarray]:
        return self.batch_at(*divmod(k, self.batches_per_epoch))

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
        """JSON-able resume state ``{"epoch", "index", "seed"}`` (grain's ``next_index``, split by epoch)."""
        return {"epoch": self._position[0], "index": self._position[1], "seed": self.config.seed}

    def restore(self, state: dict[str, int]) -> None:
        """Continues from a :meth:`state`; the seed must match the one the state was saved with."""
        if int(state.get("seed", self.config.seed)) != self.config.seed:
            raise ValueError(f"state was saved with seed={state['seed']} but this loader has seed={self.config.seed}")
        self.close()
        self._position = self._check_position((state["epoch"], state["index"]))

    # -- iteration ------------------------------------------------------------------------------------
    def __iter__(self):
        return self

    def __next__(self) -> dict[str, np.ndarray]:
        epoch, index = self._position
        if self.num_epochs is not None and epoch >= self.num_epochs:
            self.close()
            raise StopIteration
        if self._iter is None:
            self._iter = self._start()
        try:
            batch = next(self._iter)
        except BaseException:
            self.close()  # the failed batch is not consumed: the next call restarts at it
            raise
        self._position = (epoch, index + 1) if index + 1 < self.batches_per_epoch else (epoch + 1, 0)
        return batch

    def _start(self):
        bpe, cfg = self.batches_per_epoch, self.config
        first = self._position[0] * bpe + self._position[1]
        stop = sys.maxsize if self.num_epochs is None else self.num_epochs * bpe
        # Batch numbers through batch_at: iteration and random access cannot disagree.
        ds = grain.MapDataset.range(first, stop).map(self._batch_number).to_iter_dataset(
            grain.ReadOptions(num_threads=cfg.num_threads, prefetch_buffer_size=max(cfg.prefetch, cfg.num_threads)))
        if cfg.workers:
            from absl import flags

            # grain 0.2.18 reads an absl flag when it starts workers, which fails unless absl parsed the
            # command line (google/grain#1355, fixed after 0.2.18); the CLIs use argparse: take the defaults.
            if not flags.FLAGS.is_parsed():
                flags.FLAGS.mark_as_parsed()
            ds = ds.mp_prefetch(grain.MultiprocessingOptions(num_workers=cfg.workers,
                                                             per_worker_buffer_size=cfg.prefetch))
        return iter(ds)

    def close(self) -> None:
        """Stops the prefetch threads and workers (iteration restarts them from :attr:`position`)."""
        if self._iter is not None:
            self._iter.close()
            self._iter = None

    def __getstate__(self):  # what a worker process receives: the pipeline, not the live iterator
        return {**self.__dict__, "_iter": None}

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def __del__(self):
        try:
            self.close()
        except Exception:
            pass


def make_loader(dataset: BurstDataset, split: str = "train", config: PipelineConfig | None = None,
                **kwargs) -> BurstLoader:
    """A :class:`BurstLoader` over ``dataset.split(split)``; train behaviour for ``"train"`` only.

    ``kwargs`` go to :class:`BurstLoader` (``start``, ``num_epochs``, ``process_index``, ``process_count``;
    the test split defaults to one epoch).
    """
    src = dataset.split(split)
    if split == "test":
        kwargs.setdefault("num_epochs", 1)
    return BurstLoader(src, config or PipelineConfig(), train=split == "train", **kwargs)


def crop_fixed_pattern(fixed_pattern: np.ndarray, offset: np.ndarray, crop_size: tuple[int, int]) -> np.ndarray:
    """Cuts ``[B, h, w, C]`` from a full-frame ``[Hf, Wf, C]`` map at a batch's ``"offset"`` ``[B, 2]``.

    The host-side (numpy) twin of `starlight_jax.noise.crop_map`, the same window ``[r, r + h) × [c, c + w)``:
    the data layer's batches are numpy arrays with concrete offsets (the loader's workers and evaluation's
    numpy fits do not import JAX), while the jitted steps need `jax.lax.dynamic_slice` for their traced
    offsets, so the one window is written once for each side.
    """
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
