"""Data parallelism: the same pure steps on one device, sharded by jit over a mesh, or under pmap.

* ``"shard"`` (default): a ``('data',)`` mesh over the devices; the train state is replicated
  (``P()``), batches are split along their leading (burst) axis (``P('data')``); plain `jax.jit` lets XLA
  insert the gradient all-reduce.
* ``"pmap"``: the step runs per device with ``axis_name='data'`` and averages gradients with ``pmean``.

Both give the losses of a single device within float tolerance: random draws are keyed per burst of the
global batch (`starlight_jax.training.burst_keys`).
"""
from __future__ import annotations

import functools
from typing import Callable

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

PARALLEL_MODES = ("shard", "pmap")


def check_batch(global_batch: int, n_devices: int):
    if global_batch % n_devices:
        raise ValueError(f"the global batch of {global_batch} bursts does not divide over {n_devices} devices; "
                         f"use a batch size that is a multiple of the device count")


class DataParallel:
    """Places state and batches, and wraps a step ``fn(state, batch, axis_name=None) -> (state, out)``."""

    def __init__(self, mode: str = "shard", devices=None):
        if mode not in PARALLEL_MODES:
            raise ValueError(f"--parallel must be one of {PARALLEL_MODES}, got {mode!r}")
        self.mode = mode
        self.devices = list(devices) if devices is not None else jax.local_devices()
        self.n = len(self.devices)
        self.mesh = Mesh(np.array(self.devices), ("data",))
        self.replicated = NamedSharding(self.mesh, P())
        self.data_sharding = NamedSharding(self.mesh, P("data"))

    def put_state(self, state):
        if self.mode == "pmap":
            # On the devices, as the step returns it: a host (numpy) state recompiles the step at its 2nd call.
            stacked = jax.tree_util.tree_map(lambda x: np.broadcast_to(np.asarray(x), (self.n, *np.shape(x))),
                                             jax.device_get(state))
            return jax.device_put(stacked, self.data_sharding)
        return jax.device_put(state, self.replicated)

    def get_state(self, state):
        """The state as one (unreplicated) copy, e.g. for checkpoints and evaluation."""
        if self.mode == "pmap":
            return jax.tree_util.tree_map(lambda x: x[0], state)
        return state

    def put_batch(self, batch: dict):
        leading = next(iter(batch.values())).shape[0]
        check_batch(leading, self.n)
        if self.mode == "pmap":
            return {k: np.reshape(v, (self.n, v.shape[0] // self.n, *v.shape[1:])) for k, v in batch.items()}
        return jax.device_put(batch, self.data_sharding)

    def step(self, fn: Callable, replicated_args: int = 0, donate: bool = True) -> Callable:
        """Compiles ``fn(state, batch, *extra, axis_name=None)``; the state argument is donated (``donate``).

        ``replicated_args`` trailing arguments (e.g. frozen LPIPS weights) are the same on every device.
        """
        donate_argnums = (0,) if donate else ()
        if self.mode == "pmap":
            in_axes = (0, 0) + (None,) * replicated_args
            return jax.pmap(functools.partial(fn, axis_name="data"), axis_name="data", donate_argnums=donate_argnums,
                            in_axes=in_axes, devices=self.devices)
        return jax.jit(fn, donate_argnums=donate_argnums)

    def metrics(self, metrics):
        """Host floats from the step's metrics (identical on every device under pmap)."""
        if self.mode == "pmap":
            metrics = jax.tree_util.tree_map(lambda x: x[0], metrics)
        return {k: float(v) for k, v in jax.device_get(metrics).items()}
