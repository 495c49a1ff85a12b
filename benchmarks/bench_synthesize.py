"""Throughput of jitted `synthesize` (no U-Net) next to the PyTorch peer, as one JSON object.

    python benchmarks/bench_synthesize.py [--frames 16 --crop 256 --repeats 10]

Megapixels/s counts T·H·W pixel sites of the 4-channel burst (as the peer's own benchmark does).
"""
from __future__ import annotations

import argparse
import json
import os

import jax
import jax.numpy as jnp

import starlight_jax as sj
from common import PEER_TIMER, default_peer_python, device_info, run_peer, time_fn

NOISELIST = "shot_read_uniform_row1_rowt_periodic"


def bench_jax(compat: str, frames: int, crop: int, repeats: int) -> float:
    clean = 0.2 * jax.random.uniform(jax.random.key(0), (frames, crop, crop, 4))
    params = sj.init_params(NOISELIST, compat=compat)
    fn = jax.jit(lambda k, x, p: sj.synthesize(k, x, p, noiselist=NOISELIST, compat=compat))
    keys = iter(jax.random.split(jax.random.key(1), repeats + 2))
    t, _ = time_fn(lambda: fn(next(keys), clean, params).block_until_ready(), repeats=repeats)
    return t


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


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--frames", type=int, default=16)
    ap.add_argument("--crop", type=int, default=256)
    ap.add_argument("--repeats", type=int, default=10)
    ap.add_argument("--peer-python", default=default_peer_python())
    ap.add_argument("--skip-peer", action="store_true")
    args = ap.parse_args()

    mpix = args.frames * args.crop * args.crop / 1e6
    res = dict(bench="synthesize", noiselist=NOISELIST, shape=[args.frames, args.crop, args.crop, 4],
               **device_info())
    for compat in ("physics", "starlight"):
        t = bench_jax(compat, args.frames, args.crop, args.repeats)
        res[f"jax_{compat}_s"] = round(t, 5)
        res[f"jax_{compat}_mpix_per_s"] = round(mpix / t, 2)
    if args.skip_peer:
        res["peer"] = {"skipped": "--skip-peer"}
    else:
        device = "cuda" if jax.default_backend() == "gpu" else "cpu"
        peer = bench_peer(args.frames, args.crop, args.repeats, device, args.peer_python)
        res["peer"] = peer
        if "seconds" in peer:
            res["peer_mpix_per_s"] = round(mpix / peer["seconds"], 2)
            for compat in ("physics", "starlight"):
                res[f"ratio_{compat}_vs_peer"] = round(res[f"jax_{compat}_mpix_per_s"] / res["peer_mpix_per_s"], 2)
    print(json.dumps(res))


if __name__ == "__main__":
    main()
