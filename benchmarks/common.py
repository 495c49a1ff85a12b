"""Shared benchmark helpers: timing, device description, and running the PyTorch peer.

The peer (``../shared/peers/torch_starlight``) is what users would otherwise run. It is timed in the same
run as our code: in this process when torch is importable, otherwise in a subprocess with the Python given
by ``--peer-python`` (default: ``peer-venv/bin/python`` when that exists; see benchmarks/README.md).
"""
from __future__ import annotations

import json
import os
import pathlib
import platform
import statistics
import subprocess
import sys
import time

import jax

REPO = pathlib.Path(__file__).resolve().parents[1]
# The peer lives beside the repository; STARLIGHT_PEERS points elsewhere (e.g. a copy on a GPU machine).
PEERS = pathlib.Path(os.environ.get("STARLIGHT_PEERS", REPO.parent / "shared" / "peers"))


def time_fn(fn, *, repeats: int, warmup: int = 1):
    """Median wall time of ``fn()`` (which must block until its result is ready) over ``repeats``."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times), times


def device_info() -> dict:
    dev = jax.devices()[0]
    return dict(jax=jax.__version__, backend=jax.default_backend(), device=dev.device_kind,
                n_devices=jax.device_count(), cpu_cores=os.cpu_count(), python=platform.python_version())


def default_peer_python() -> str | None:
    candidate = REPO / "peer-venv" / "bin" / "python"
    return str(candidate) if candidate.exists() else None


def run_peer(snippet: str, peer_python: str | None, timeout: int = 1800) -> dict:
    """Runs ``snippet`` (Python that prints one JSON line) with torch and the peer on the path.

    Returns the parsed JSON, or ``{"skipped": reason}`` when no torch is available.
    """
    if not PEERS.is_dir():
        return {"skipped": f"PyTorch peer not found at {PEERS}"}
    prelude = f"import sys; sys.path.insert(0, {str(PEERS)!r})\n"
    try:
        import torch  # noqa: F401

        python = sys.executable
    except ImportError:
        python = peer_python
    if python is None:
        return {"skipped": "torch is not installed (make peer-venv as in benchmarks/README.md, or pass "
                           "--peer-python)"}
    env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
    proc = subprocess.run([python, "-c", prelude + snippet], capture_output=True, text=True, timeout=timeout,
                          env=env)
    if proc.returncode != 0:
        return {"skipped": f"peer failed: {proc.stderr.strip()[-500:]}"}
    return json.loads(proc.stdout.strip().splitlines()[-1])


PEER_TIMER = """
import json, statistics, time, torch
def time_fn(fn, repeats, warmup=1, sync=lambda: None):
    for _ in range(warmup):
        fn(); sync()
    ts = []
    for _ in range(repeats):
        t0 = time.perf_counter(); fn(); sync(); ts.append(time.perf_counter() - t0)
    return statistics.median(ts)
"""


# Vendor peak figures (dense, no sparsity) by device kind, matched in this order on `device_kind`
# (e.g. "NVIDIA H100 80GB HBM3", "NVIDIA H200"): HBM bandwidth in bytes/s and FLOP/s for float32 (CUDA
# cores), tf32 (what XLA's default precision uses for float32 matmuls and convolutions on Ampere and
# later) and bfloat16 (tensor cores). Unknown devices (and CPUs) get None: no honest single number.
DEVICE_PEAKS = (
    ("H200", dict(bandwidth=4.8e12, float32=66.9e12, tf32=494.7e12, bfloat16=989.4e12)),
    ("H100 PCIe", dict(bandwidth=2.0e12, float32=51.2e12, tf32=378.0e12, bfloat16=756.0e12)),
    ("H100", dict(bandwidth=3.35e12, float32=66.9e12, tf32=494.7e12, bfloat16=989.4e12)),  # SXM
    ("A100-SXM4-80GB", dict(bandwidth=2.039e12, float32=19.5e12, tf32=156.0e12, bfloat16=312.0e12)),
    ("A100", dict(bandwidth=1.555e12, float32=19.5e12, tf32=156.0e12, bfloat16=312.0e12)),  # 40 GB
)


def device_peaks(kind: str | None = None) -> dict | None:
    """The `DEVICE_PEAKS` entry of ``kind`` (default: the first device's), or None when unknown."""
    kind = jax.devices()[0].device_kind if kind is None else kind
    for name, peaks in DEVICE_PEAKS:
        if name in kind:
            return peaks
    return None


def cost(compiled) -> dict:
    """FLOPs and bytes accessed of a compiled XLA program (``jit(f).lower(...).compile()``), as XLA's cost
    analysis counts them (None where the backend gives none)."""
    analysis = compiled.cost_analysis()
    if isinstance(analysis, (list, tuple)):  # older JAX: one dict per device program
        analysis = analysis[0] if analysis else {}
    analysis = analysis or {}
    return dict(flops=analysis.get("flops"), bytes_accessed=analysis.get("bytes accessed"))
