"""Milliseconds per WGAN-GP training iteration (one critic step + one generator step) next to the peer.

    python benchmarks/bench_train.py                      # crops 256 and 128 (slow on CPU: minutes)
    python benchmarks/bench_train.py --crops 128          # only the small shape (a few minutes on 2 cores)

One JSON object. Per crop ``c``: a burst of ``--frames`` × c × c × 4 (batch 1) gives
``frames·(c/64)²`` discriminator patches (256 at the original's 16 × 256²). JAX: ``d_step`` and ``g_step``
of `starlight_jax.training` (default noiselist, ``network='Unet'``, ``--compat`` default ``starlight`` so
the U-Net, the Fourier input transform and the critic are those of the original), each bound with
``functools.partial(step, cfg)`` and jitted; the first call (compile + run) is reported separately. Peer:
``WGANGP(G, D).step(clean, noisy, i=0)`` with its defaults (Fourier input, ``detach_fake=False`` as the
original: the D step also backprops into G, SPEC §12.16; our ``d_step`` stops that gradient).

``ratio`` is peer time / JAX time (above 1: JAX is faster). Medians over ``--repeats`` after one warm-up.

FLOPs: XLA's cost analysis of the compiled ``d_step`` and ``g_step`` (``jit(...).lower(...).compile()``),
their sum per iteration over its time as TFLOP/s, and that as a fraction of the device's peak
(`common.DEVICE_PEAKS`: for ``--precision float32`` against both the float32 and the tf32 peak, XLA's
default for float32 convolutions on a GPU; for bfloat16 against the bfloat16 peak; None on a CPU, which
has no single honest peak). ``--precision bfloat16`` is `TrainConfig.precision` (mixed precision).
"""
from __future__ import annotations

import argparse
import functools
import json
import time

import jax
import jax.numpy as jnp

from common import PEER_TIMER, cost, default_peer_python, device_info, device_peaks, run_peer, time_fn
from starlight_jax import training


def bench_jax(crop: int, frames: int, compat: str, repeats: int, precision: str = "float32") -> dict:
    # The original's critic and schedule (what the peer runs), whichever mode the generator is in.
    cfg = training.TrainConfig(network="Unet", crop_size=crop, frames=frames, compat=compat, critic_width=64,
                               n_critic=5, discriminator_loss="fourier", critic_condition="none", level_weight=0.0,
                               physics_lr=None, physics_optimizer="adam", decay_steps=None, init_from_data=False,
                               critic_warmup=0, quantize=None, precision=precision)
    state = training.create_train_state(jax.random.key(0), cfg)
    k1, k2 = jax.random.split(jax.random.key(1))
    clean = 0.2 * jax.random.uniform(k1, (1, frames, crop, crop, 4))
    batch = dict(clean=clean, noisy=jnp.clip(clean + 0.02 * jax.random.normal(k2, clean.shape), 0.0, 1.0))
    t0 = time.perf_counter()
    d_step = jax.jit(functools.partial(training.d_step, cfg)).lower(state, batch).compile()
    g_step = jax.jit(functools.partial(training.g_step, cfg)).lower(state, batch).compile()  # same avals
    compile_s = time.perf_counter() - t0
    flops = [cost(step)["flops"] for step in (d_step, g_step)]
    holder = [state]

    def iteration():
        s, d_metrics = d_step(holder[0], batch)
        s, g_metrics = g_step(s, batch)
        jax.block_until_ready((s, d_metrics, g_metrics))
        holder[0] = s

    t0 = time.perf_counter()
    iteration()
    first = time.perf_counter() - t0
    t, _ = time_fn(iteration, repeats=repeats, warmup=0)
    out = dict(ms=round(1e3 * t, 1), compile_s=round(compile_s, 1), first_run_ms=round(1e3 * first, 1))
    if None not in flops:
        total = sum(flops)
        out.update(d_step_gflop=round(flops[0] / 1e9, 2), g_step_gflop=round(flops[1] / 1e9, 2),
                   tflop_per_s=round(total / t / 1e12, 4))
        peaks = device_peaks()
        names = ("float32", "tf32") if precision == "float32" else ("bfloat16",)
        out["peak_fraction"] = {n: (None if peaks is None else round(total / t / peaks[n], 4)) for n in names}
    return out


def bench_peer(crops, frames: int, repeats: int, device: str, peer_python) -> dict:
    snippet = PEER_TIMER + f"""
import os
from torch_starlight import DEFAULT_NOISELIST, WGANGP, DiscriminatorS2d, NoiseGenerator, disc_channels
torch.set_num_threads(os.cpu_count())
torch.manual_seed(0)
dev = torch.device({device!r})
sync = torch.cuda.synchronize if dev.type == "cuda" else (lambda: None)
out = dict(threads=torch.get_num_threads(), torch=torch.__version__, device=str(dev), detach_fake=False)
for crop in {list(crops)!r}:
    G = NoiseGenerator(DEFAULT_NOISELIST, unet_mode="Unet").to(dev).train()
    D = DiscriminatorS2d(disc_channels("fourier")).to(dev).train()
    gan = WGANGP(G, D)
    clean = 0.2 * torch.rand({frames}, 4, crop, crop, device=dev)
    noisy = (clean + 0.02 * torch.randn_like(clean)).clamp(0, 1)
    out[f"crop{{crop}}_ms"] = round(1e3 * time_fn(lambda: gan.step(clean, noisy, i=0), {repeats}, warmup=1,
                                                 sync=sync), 1)
    del G, D, gan
print(json.dumps(out))
"""
    return run_peer(snippet, peer_python, timeout=7200)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--crops", default="256,128", help="comma-separated crop sides (multiples of 64)")
    ap.add_argument("--frames", type=int, default=16)
    ap.add_argument("--repeats", type=int, default=1, help="timed iterations per crop, after one warm-up")
    ap.add_argument("--compat", default="starlight", choices=["starlight", "physics"])
    ap.add_argument("--precision", default="float32", choices=["float32", "bfloat16"],
                    help="TrainConfig.precision of the JAX side (the peer is always float32)")
    ap.add_argument("--skip-jax", action="store_true", help="time the peer only")
    ap.add_argument("--peer-python", default=default_peer_python())
    ap.add_argument("--skip-peer", action="store_true")
    args = ap.parse_args()
    crops = [int(c) for c in args.crops.split(",") if c.strip()]
    for crop in crops:
        if crop < 64 or crop % 64:
            raise ValueError(f"--crops must be multiples of 64 (the critic's patch), got {crop}")

    res = dict(bench="train", frames=args.frames, compat=args.compat, network="Unet", precision=args.precision,
               discriminator_loss="fourier", repeats=args.repeats, **device_info())
    for crop in crops:
        res[f"crop{crop}"] = dict(shape=f"{args.frames}x{crop}x{crop}x4 -> {args.frames * (crop // 64) ** 2} "
                                        "patches 64x64")
        if not args.skip_jax:
            res[f"crop{crop}"]["jax"] = bench_jax(crop, args.frames, args.compat, args.repeats, args.precision)
    if args.skip_peer:
        res["peer"] = {"skipped": "--skip-peer"}
    else:
        device = "cuda" if jax.default_backend() == "gpu" else "cpu"
        peer = bench_peer(crops, args.frames, args.repeats, device, args.peer_python)
        res["peer"] = peer
        for crop in crops:
            if f"crop{crop}_ms" in peer and "jax" in res[f"crop{crop}"]:
                res[f"crop{crop}"]["peer_ms"] = peer[f"crop{crop}_ms"]
                res[f"crop{crop}"]["ratio_peer_over_jax"] = round(peer[f"crop{crop}_ms"] /
                                                                  res[f"crop{crop}"]["jax"]["ms"], 2)
    print(json.dumps(res))


if __name__ == "__main__":
    main()
