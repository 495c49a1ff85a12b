"""Data parallelism: the same pure steps on one device, sharded by jit over a mesh, or under pmap.

* ``"shard"`` (default): a ``('data',)`` mesh over the devices, which may belong to several processes
  (`jax.distributed`; `data_devices`); the train state is replicated (``P()``), batches are split along
  their leading (burst) axis (``P('data')``); plain `jax.jit` lets XLA insert the gradient all-reduce.
  Each process hands `DataParallel.put_batch` only its own rows of the global batch (the train loader,
  `starlight_jax.data.pipeline`, reads just those).
* ``"pmap"``: the step runs per device with ``axis_name='data'`` and averages gradients with ``pmean``;
  one process only (refused with several: use ``"shard"``).

Both give the losses of a single device within float tolerance, on one process or several: random draws
are keyed per burst of the global batch (`burst_keys`).
"""
from __future__ import annotations

import functools
from typing import Callable, Optional

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

PARALLEL_MODES = ("shard", "pmap")


def data_devices(count: Optional[int] = None) -> list:
    """The devices of a data-parallel run: the first ``count / process_count`` local devices of every
    process (all of them when ``count`` is None), ordered by process, so that process p's devices hold
    rows ``[p*B/P, (p+1)*B/P)`` of a global batch of B bursts (what the train loader gives process p).

    Args:
      count: data-parallel devices in all processes together (``RunConfig.devices``).

    Raises:
      ValueError: ``count`` does not divide over the processes, or asks for more devices per process than
        each has (names both numbers).
    """
    processes, local = jax.process_count(), jax.local_device_count()
    if count is None:
        per_process = local
    elif count % processes or count // processes > local:
        raise ValueError(f"devices={count} in all cannot be {processes} process(es) x at most {local} local "
                         f"device(s) each; use a multiple of {processes} up to {processes * local}")
    else:
        per_process = count // processes
    by_process = {}
    for d in sorted(jax.devices(), key=lambda d: (d.process_index, d.id)):
        by_process.setdefault(d.process_index, []).append(d)
    return [d for p in sorted(by_process) for d in by_process[p][:per_process]]


def all_processes(flags) -> np.ndarray:
    """``flags`` (ints, the same count on every process) of every process, ``[process_count, n]``; a
    collective: every process must call it at the same point."""
    flags = np.asarray(flags, np.int32).reshape(-1)
    if jax.process_count() == 1:
        return flags[None]
    from jax.experimental import multihost_utils

    return np.asarray(multihost_utils.process_allgather(flags)).reshape(jax.process_count(), -1)


def burst_keys(key, global_batch: int, axis_name: Optional[str] = None):
    """One key per burst of the global batch, ``split(key, global_batch)``; under pmap (``axis_name``),
    this device's slice of them.

    Burst b draws from the same key however the batch is split across devices, so the draws, and the
    losses, of one device, ``shard`` and ``pmap`` agree (the GAN's steps, `starlight_jax.training`, and the
    denoiser's synthetic pairs, `starlight_jax.denoise.train`, both key their bursts with it).
    """
    keys = jax.random.split(key, global_batch)
    if axis_name is None:
        return keys
    local = global_batch // jax.lax.psum(1, axis_name)
    return jax.lax.dynamic_slice_in_dim(keys, jax.lax.axis_index(axis_name) * local, local)


def check_batch(global_batch: int, n_devices: int):
    if global_batch % n_devices:
        raise ValueError(f"the global batch of {global_batch} bursts does not divide over {n_devices} devices; "
                         f"use a batch size that is a multiple of the device count")


class DataParallel:
    """Places state and batches, and wraps a step ``fn(state, batch, axis_name=None) -> (state, out)``."""

    def __init__(self, mode: str = "shard", devices=None):
        if mode not in PARALLEL_MODES:
            raise ValueError(f"--parallel must be one of {PARALLEL_MODES}, got {mode!r}")
        if mode == "pmap" and jax.process_count() > 1:
            raise ValueError(f"--parallel pmap runs on one process only, but this is one of {jax.process_count()} "
                             f"(jax.distributed); use --parallel shard, which spans the devices of all processes")
        self.mode = mode
        self.devices = list(devices) if devices is not None else jax.local_devices()
        self.n = len(self.devices)  # in all processes
        self.n_local = sum(d.process_index == jax.process_index() for d in self.devices)
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

    def replicate(self, tree):
        """Arguments that are the same on every device (``replicated_args`` of `step`), placed so."""
        return tree if self.mode == "pmap" or tree is None else jax.device_put(tree, self.replicated)

    def put_batch(self, batch: dict):
        """This process's rows of the global batch (all of it on one process), placed on the mesh."""
        leading = next(iter(batch.values())).shape[0]
        check_batch(leading * jax.process_count(), self.n)
        if leading % self.n_local:  # only with a device list that is uneven over the processes
            raise ValueError(f"this process's {leading} bursts do not divide over its {self.n_local} device(s)")
        if self.mode == "pmap":
            return {k: np.reshape(v, (self.n, v.shape[0] // self.n, *v.shape[1:])) for k, v in batch.items()}
        return {k: jax.make_array_from_process_local_data(self.data_sharding, np.asarray(v))
                for k, v in batch.items()}

    def step(self, fn: Callable, replicated_args: int = 0, donate: bool = True) -> Callable:
        """Compiles ``fn(state, batch, *extra, axis_name=None)``; the state argument is donated (``donate``).

        ``replicated_args`` trailing arguments (e.g. frozen LPIPS weights) are the same on every device.
        """
        donate_argnums = (0,) if donate else ()
        if self.mode == "pmap":
            in_axes = (0, 0) + (None,) * replicated_args
            return jax.pmap(functools.partial(fn, axis_name="data"), axis_name="data", donate_argnums=donate_argnums,
                            in_axes=in_axes, devices=self.devices)
        # Replicated outputs: the state stays as `put_state` placed it, and every process can read the
        # metrics (and checkpoint the state) from its own devices.
        return jax.jit(fn, donate_argnums=donate_argnums, out_shardings=self.replicated)

    def metrics(self, metrics):
        """Host floats from the step's metrics (identical on every device, and so on every process)."""
        if self.mode == "pmap":
            metrics = jax.tree_util.tree_map(lambda x: x[0], metrics)
        return {k: float(v) for k, v in jax.device_get(metrics).items()}
