"""Throughput of jitted `synthesize` (no U-Net) next to the PyTorch peer, as one JSON object.

    python benchmarks/bench_synthesize.py                          # 16x256² and the realistic 64x512² (x4 channels)
    python benchmarks/bench_synthesize.py --sizes 16x256 --repeats 20

Per size ``TxS`` (a burst of T frames of S x S x 4): jitted `synthesize` under ``compat`` physics and
starlight with the default threefry key, and physics with ``jax.random.key(seed, impl=...)`` for each other
``--key_impls`` (the key picks the generator; `synthesize` takes any). Gpx/s counts T·H·W pixel sites of the
4-channel burst (as the peer's own benchmark does). Bytes moved: ``bytes_in_out`` is the clean input plus
the noisy output (the least any implementation moves), ``xla_bytes_accessed`` what XLA's cost analysis
counts for the compiled program; each over the time, as a fraction of the device's peak memory bandwidth
(`common.DEVICE_PEAKS`; None on a CPU or an unknown device).
"""
from __future__ import annotations

import argparse
import json
import os

import jax

import starlight_jax as sj
from common import PEER_TIMER, cost, default_peer_python, device_info, device_peaks, run_peer, time_fn

NOISELIST = "shot_read_uniform_row1_rowt_periodic"


def bench_jax(compat: str, frames: int, crop: int, repeats: int, impl: str = "threefry2x32") -> dict:
    clean = 0.2 * jax.random.uniform(jax.random.key(0), (frames, crop, crop, 4))
    params = sj.init_params(NOISELIST, compat=compat)
    fn = jax.jit(lambda k, x, p: sj.synthesize(k, x, p, noiselist=NOISELIST, compat=compat))
    keys = iter(jax.random.split(jax.random.key(1, impl=impl), repeats + 2))
    compiled = fn.lower(next(keys), clean, params).compile()
    t, _ = time_fn(lambda: compiled(next(keys), clean, params).block_until_ready(), repeats=repeats)
    return dict(seconds=t, bytes_accessed=cost(compiled)["bytes_accessed"], bytes_in_out=2 * clean.nbytes)


def bench_peer(frames: int, crop: int, repeats: int, device: str, peer_python) -> dict:
    threads = os.cpu_count()
    snippet = PEER_TIMER + f"""
from torch_starlight import NoiseGenerator
torch.set_num_threads({threads})
dev = torch.device({device!r})
sync = torch.cuda.synchronize if dev.type == "cuda" else (lambda: None)
G = NoiseGenerator({NOISELIST!r}, unet_mode="noUnet").to(dev).train()
clean = 0.2 * torch.rand({frames}, 4, {crop}, {crop}, device=dev)
def run():
    with torch.no_grad():
        G(clean)
t = time_fn(run, {repeats}, warmup=2, sync=sync)
print(json.dumps(dict(seconds=t, threads=torch.get_num_threads(), torch=torch.__version__, device=str(dev))))
"""
    return run_peer(snippet, peer_python)


def _entry(t: float, sites: int, bytes_in_out: int, bytes_accessed, bandwidth) -> dict:
    frac = (lambda b: None if bandwidth is None or b is None else round(b / t / bandwidth, 4))
    return dict(ms=round(1e3 * t, 3), gpix_per_s=round(sites / t / 1e9, 6), bytes_in_out=bytes_in_out,
                xla_bytes_accessed=bytes_accessed, bandwidth_fraction_in_out=frac(bytes_in_out),
                bandwidth_fraction_xla=frac(bytes_accessed))


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", default="16x256,64x512", help="comma-separated bursts TxS (T frames of S x S x 4)")
    ap.add_argument("--key_impls", default="rbg,unsafe_rbg",
                    help="PRNG implementations timed besides the default threefry2x32 (physics mode)")
    ap.add_argument("--repeats", type=int, default=10)
    ap.add_argument("--peer-python", default=default_peer_python())
    ap.add_argument("--skip-peer", action="store_true")
    args = ap.parse_args()
    try:
        sizes = [tuple(int(v) for v in s.lower().split("x")) for s in args.sizes.split(",") if s.strip()]
        assert all(len(s) == 2 and min(s) > 0 for s in sizes)
    except (ValueError, AssertionError):
        raise SystemExit(f"error: --sizes must be like 16x256,64x512, got {args.sizes!r}") from None
    impls = [i.strip() for i in args.key_impls.split(",") if i.strip()]

    peaks = device_peaks()
    bandwidth = None if peaks is None else peaks["bandwidth"]
    res = dict(bench="synthesize", noiselist=NOISELIST, peak_bandwidth=bandwidth, repeats=args.repeats,
               **device_info())
    device = "cuda" if jax.default_backend() == "gpu" else "cpu"
    for frames, crop in sizes:
        sites = frames * crop * crop
        out = dict(shape=[frames, crop, crop, 4])
        runs = [("physics", "threefry2x32"), ("starlight", "threefry2x32")] + [("physics", i) for i in impls]
        for compat, impl in runs:
            r = bench_jax(compat, frames, crop, args.repeats, impl)
            out[f"jax_{compat}" + ("" if impl == "threefry2x32" else f"_{impl}")] = _entry(
                r["seconds"], sites, r["bytes_in_out"], r["bytes_accessed"], bandwidth)
        if args.skip_peer:
            out["peer"] = {"skipped": "--skip-peer"}
        else:
            peer = bench_peer(frames, crop, args.repeats, device, args.peer_python)
            if "seconds" in peer:
                peer.update(_entry(peer.pop("seconds"), sites, 2 * 4 * sites * 4, None, bandwidth))
                for name, entry in list(out.items()):
                    if name.startswith("jax_"):
                        entry["ratio_vs_peer"] = round(entry["gpix_per_s"] / peer["gpix_per_s"], 2)
            out["peer"] = peer
        res[f"{frames}x{crop}"] = out
    print(json.dumps(res))


if __name__ == "__main__":
    main()
