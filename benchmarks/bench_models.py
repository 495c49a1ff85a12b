"""Milliseconds per call of the two networks next to the PyTorch peer, as one JSON object.

    python benchmarks/bench_models.py [--frames 16 --crop 256 --patches 256 --repeats 3]

* ``generator``: the full generator forward (default noiselist + ``'Unet'``, default widths) on a
  ``frames × crop × crop × 4`` burst, jitted, dropout on (``train=True``), ``compat="starlight"`` so the
  U-Net is the one the original effectively builds (SPEC §3.2). Peer: ``NoiseGenerator(unet_mode='Unet')``
  in train mode under ``no_grad``.
* ``discriminator``: forward + backward of the spectral-norm critic, the gradient of the mean score with
  respect to the weights, on ``patches`` 64×64×4 patches. Peer: ``DiscriminatorS2d`` ``D(x).mean()
  .backward()`` in train mode.

``ratio_*`` is peer time / JAX time (above 1: JAX is faster). The peer uses ``torch.set_num_threads(os
.cpu_count())``; times are medians over ``--repeats`` after one warm-up call (which also compiles).
"""
from __future__ import annotations

import argparse
import json
import os
import time

import jax
import jax.numpy as jnp

import starlight_jax as sj
from common import PEER_TIMER, default_peer_python, device_info, run_peer, time_fn
from starlight_jax.models import apply_discriminator, init_discriminator


def bench_generator(frames: int, crop: int, repeats: int) -> dict:
    noise = sj.parse_noiselist(sj.DEFAULT_NOISELIST, compat="starlight")
    config = sj.GeneratorConfig(noise=noise, network="Unet")
    model = sj.init_generator(jax.random.key(0), config)
    clean = 0.2 * jax.random.uniform(jax.random.key(1), (frames, crop, crop, 4))
    fn = jax.jit(lambda p, k, x: sj.generate(p, k, x, config, train=True))
    keys = iter(jax.random.split(jax.random.key(2), repeats + 2))
    t0 = time.perf_counter()
    fn(model.params, next(keys), clean).block_until_ready()
    first = time.perf_counter() - t0
    t, _ = time_fn(lambda: fn(model.params, next(keys), clean).block_until_ready(), repeats=repeats, warmup=0)
    return dict(ms=round(1e3 * t, 1), first_call_ms=round(1e3 * first, 1))


def bench_discriminator(patches: int, repeats: int) -> dict:
    params, sn_state = init_discriminator(jax.random.key(0), 4)
    x = jax.random.uniform(jax.random.key(1), (patches, 64, 64, 4))
    grad = jax.jit(jax.grad(lambda p, s, x: jnp.mean(apply_discriminator(p, s, x, update_stats=False)[0])))
    t0 = time.perf_counter()
    jax.block_until_ready(grad(params, sn_state, x))
    first = time.perf_counter() - t0
    t, _ = time_fn(lambda: jax.block_until_ready(grad(params, sn_state, x)), repeats=repeats, warmup=0)
    return dict(ms=round(1e3 * t, 1), first_call_ms=round(1e3 * first, 1))


def bench_peer(frames: int, crop: int, patches: int, repeats: int, device: str, peer_python) -> dict:
    snippet = PEER_TIMER + f"""
import os
from torch_starlight import DEFAULT_NOISELIST, DiscriminatorS2d, NoiseGenerator
torch.set_num_threads(os.cpu_count())
torch.manual_seed(0)
dev = torch.device({device!r})
sync = torch.cuda.synchronize if dev.type == "cuda" else (lambda: None)
G = NoiseGenerator(DEFAULT_NOISELIST, unet_mode="Unet").to(dev).train()
clean = 0.2 * torch.rand({frames}, 4, {crop}, {crop}, device=dev)
def gen():
    with torch.no_grad():
        G(clean)
t_gen = time_fn(gen, {repeats}, warmup=1, sync=sync)
del G, clean
D = DiscriminatorS2d(4).to(dev).train()
x = torch.rand({patches}, 4, 64, 64, device=dev)
def disc():
    D.zero_grad(set_to_none=True)
    D(x).mean().backward()
t_disc = time_fn(disc, {repeats}, warmup=1, sync=sync)
print(json.dumps(dict(generator_ms=round(1e3 * t_gen, 1), discriminator_ms=round(1e3 * t_disc, 1),
                      threads=torch.get_num_threads(), torch=torch.__version__, device=str(dev))))
"""
    return run_peer(snippet, peer_python)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--frames", type=int, default=16)
    ap.add_argument("--crop", type=int, default=256, help="burst side; a multiple of 16")
    ap.add_argument("--patches", type=int, default=256, help="64x64x4 patches per discriminator call")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--peer-python", default=default_peer_python())
    ap.add_argument("--skip-peer", action="store_true")
    args = ap.parse_args()

    res = dict(bench="models", generator_shape=[args.frames, args.crop, args.crop, 4],
               generator_setup="default noiselist + Unet, starlight U-Net, dropout on, jit",
               discriminator_shape=[args.patches, 64, 64, 4], discriminator_setup="grad of mean score wrt params",
               repeats=args.repeats, **device_info())
    res["jax_generator"] = bench_generator(args.frames, args.crop, args.repeats)
    res["jax_discriminator"] = bench_discriminator(args.patches, args.repeats)
    if args.skip_peer:
        res["peer"] = {"skipped": "--skip-peer"}
    else:
        device = "cuda" if jax.default_backend() == "gpu" else "cpu"
        peer = bench_peer(args.frames, args.crop, args.patches, args.repeats, device, args.peer_python)
        res["peer"] = peer
        for name in ("generator", "discriminator"):
            if f"{name}_ms" in peer:
                res[f"ratio_{name}_peer_over_jax"] = round(peer[f"{name}_ms"] / res[f"jax_{name}"]["ms"], 2)
    print(json.dumps(res))


if __name__ == "__main__":
    main()
