"""`RunConfig`: how a training runs (data, length, cadence, devices, run folder), beside `TrainConfig`.

`starlight_jax.training.TrainConfig` says what is trained; this says how and where. Both are written to
and read from a run folder's ``config.json`` by `starlight_jax.checkpoint`; `starlight_jax.train_loop`
runs them (and re-exports `RunConfig`). Here rather than in the loop so that reading a run folder does
not need the loop.
"""
from __future__ import annotations

import dataclasses
from typing import Optional


@dataclasses.dataclass(frozen=True)
class RunConfig:
    """How to run: data, length, cadence, devices and where to write.

    The defaults are the ``cpu`` preset of `starlight_jax.configs` on one device, as `TrainConfig`'s are:
    ``RunConfig()`` is the run ``experiments/train.py`` makes with no flags on a one-device CPU (40 epochs
    of the embedded synthetic data at 128-px frames, evaluated every 200 steps), but for ``workdir``, which
    the CLI names after the run. Like `TrainConfig`'s, the field defaults are literals, the preset's values
    as the CLI resolves them (``frame_size`` becomes ``dataset_options``, the device count a number), and
    tests/test_configs.py checks them against the CLI's.
    """

    workdir: str = "checkpoints/run"
    dataset: str = "synthetic"
    data_dir: Optional[str] = None
    dataset_options: tuple = (("frame_size", (128, 128)),)  # (name, value) pairs passed to load_dataset
    steps: Optional[int] = None  # critic steps; None: epochs × batches per epoch
    epochs: int = 40
    eval_every: int = 200
    log_every: int = 10
    keep: int = 3
    parallel: str = "shard"
    devices: Optional[int] = 1  # data-parallel devices of all processes; None: all local devices
    test_bursts: int = 4  # test bursts per evaluation
    progress: bool = True
    max_seconds: Optional[float] = None  # wall-clock budget: stop cleanly (checkpoint saved) once spent

    def __post_init__(self):
        for name in ("epochs", "eval_every", "log_every", "keep", "test_bursts"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        for name in ("steps", "devices"):
            if getattr(self, name) is not None and getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1 or None, got {getattr(self, name)}")
        if self.max_seconds is not None and not self.max_seconds > 0:
            raise ValueError(f"max_seconds must be > 0 or None, got {self.max_seconds}")
