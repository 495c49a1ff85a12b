"""First and second start of a CLI with the persistent compilation cache, as one JSON object.

    python benchmarks/bench_start.py                       # train.py, one critic step, this backend's preset
    python benchmarks/bench_start.py --config gpu          # the original's shape (GPU)
    python benchmarks/bench_start.py -- --network Unet     # extra train.py flags after --

Runs ``experiments/train.py --steps 1`` (a fresh run folder each time) three times in new processes: with
``--compilation_cache none`` (no cache), then twice with one empty cache folder (the first fills it, the
second reads it). Each time is the process's wall time, start to exit: import, data, compile, one step,
evaluation and checkpoint. ``import_s`` is ``python -c "import starlight_jax"`` alone, the floor a cache
cannot remove. Counts of compiled programs and of cache hits come from JAX's ``jax_log_compiles`` log.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

from common import REPO, device_info

HIT = "Persistent compilation cache hit"
COMPILED = "Finished XLA compilation"


def _run(cmd, env) -> dict:
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=REPO)
    seconds = time.perf_counter() - t0
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    compile_s = sum(float(line.split(" in ")[-1].split()[0]) for line in proc.stderr.splitlines()
                    if COMPILED in line)
    return dict(seconds=round(seconds, 2), programs=proc.stderr.count(COMPILED), cache_hits=proc.stderr.count(HIT),
                compile_s=round(compile_s, 2))


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", default=None, help="train.py --config (default: the backend's preset)")
    ap.add_argument("extra", nargs="*", help="more train.py flags (after --)")
    args = ap.parse_args()

    env = {**os.environ, "JAX_LOG_COMPILES": "1", "PYTHONPATH": str(REPO)}
    env.pop("STARLIGHT_JAX_CACHE", None)
    res = dict(bench="start", cli="experiments/train.py --steps 1", config=args.config, extra=args.extra,
               **device_info())
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-c", "import starlight_jax"], check=True, env=env, cwd=REPO)
    res["import_s"] = round(time.perf_counter() - t0, 2)
    with tempfile.TemporaryDirectory() as tmp:
        base = [sys.executable, "experiments/train.py", "--steps", "1", "--eval_every", "1", "--test_bursts", "1",
                "--no_progress", "--save_path", tmp, *(["--config", args.config] if args.config else []),
                *args.extra]
        cache = os.path.join(tmp, "cache")
        for name, cache_arg in (("no_cache", "none"), ("first", cache), ("second", cache)):
            res[name] = _run([*base, "--run_name", name, "--compilation_cache", cache_arg], env)
        res["cache_entries"] = len(os.listdir(cache))
        res["cache_mb"] = round(sum(os.path.getsize(os.path.join(cache, f)) for f in os.listdir(cache)) / 1e6, 1)
    res["second_over_first"] = round(res["second"]["seconds"] / res["first"]["seconds"], 2)
    print(json.dumps(res))


if __name__ == "__main__":
    main()
