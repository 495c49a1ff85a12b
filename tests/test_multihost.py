"""Training over several processes (`jax.distributed`) on one machine, as docs/multihost.md launches it.

The reference is one process with 4 CPU devices (tests/conftest.py), trained in-process. Against it, two
processes with 2 CPU devices each (a coordinator on 127.0.0.1, CPU collectives through gloo, started and
killed here) train the same run in two sessions: the first is stopped by the time budget of process 1
only (a fake clock that ticks once per reading, so it stops after exactly 2 steps; process 0's clock
stands still, so only the agreement between the processes can stop it there), the second resumes it to the
end. Every logged loss and the final state must match the reference within float tolerance (reductions
over 2 x 2 devices sum in another order), and each step must be logged once (by process 0).

That one process with 4 devices trains the losses of one device is
tests/test_training.py::test_multi_device_losses_match_single_device (shard and pmap).
"""
import json
import os
import pathlib
import socket
import subprocess
import sys

import jax
import numpy as np
import orbax.checkpoint as ocp
import pytest

from starlight_jax import parallel
from clis import load_cli

REPO = pathlib.Path(__file__).resolve().parents[1]
STEPS, STOP_AT = 4, 2
TINY = ["--steps", str(STEPS), "--eval_every", str(STEPS), "--log_every", "1", "--crop_size", "64", "--frames", "1",
        "--frame_size", "64", "--critic_width", "4", "--noiselist", "shot_read", "--critic_warmup", "1",
        "--no-init_from_data", "--test_bursts", "1", "--no_progress"]
CHILD_TIMEOUT = 300  # seconds per 2-process session (~30 s of CPU each); the children are killed after it
pytestmark = pytest.mark.usefixtures("fast_compiles")  # the children skip the same optimisations

# What each child runs: experiments/train.py, with gloo bound to the loopback (it otherwise binds the address
# of the host's name) and, for the first session, the fake clocks of the module docstring.
CHILD = r"""
import os, runpy, sys, types
from jax._src import xla_bridge
make = xla_bridge._jax.make_gloo_tcp_collectives
xla_bridge._jax.make_gloo_tcp_collectives = lambda **kw: make(**{**kw, "hostname": "127.0.0.1"})
clock = os.environ.pop("TEST_CLOCK", "")
if clock:
    from starlight_jax import train_loop
    ticks = iter(range(10**6))
    tick = (lambda: float(next(ticks))) if clock == "ticking" else (lambda: 0.0)
    train_loop.time = types.SimpleNamespace(monotonic=tick)
sys.argv = [sys.argv[1], *sys.argv[2:]]
runpy.run_path(sys.argv[0], run_name="__main__")
"""


# ------------------------------------------------------------------------------------------------------
# One process: the pieces (no compilation)
# ------------------------------------------------------------------------------------------------------
def test_data_devices_take_the_first_of_each_process():
    assert parallel.data_devices() == jax.local_devices()  # one process: all of its 4
    assert parallel.data_devices(2) == jax.local_devices()[:2]
    with pytest.raises(ValueError, match="devices=5 in all cannot be 1 process"):
        parallel.data_devices(5)


def test_pmap_is_refused_with_several_processes(cli, monkeypatch, capsys):
    monkeypatch.setattr(cli, "_start_processes", lambda args, jax: None)
    monkeypatch.setattr(jax, "process_count", lambda: 2)
    with pytest.raises(ValueError, match="--parallel pmap runs on one process only"):
        parallel.DataParallel("pmap")
    with pytest.raises(SystemExit) as exit_info:
        cli.main([*TINY, "--parallel", "pmap", "--print_config"])
    assert exit_info.value.code == 2
    assert "error: --parallel pmap runs on one process only, but this is one of 2" in capsys.readouterr().err


@pytest.mark.parametrize("flags,message", [
    (["--num_processes", "2"], "--num_processes starts several processes and needs --coordinator_address, "
                               "--process_id as well"),
    (["--coordinator_address", "h:1", "--num_processes", "2", "--process_id", "2"],
     "--process_id must be in [0, --num_processes), got 2"),
    (["--coordinator_address", "h", "--num_processes", "2", "--process_id", "0"], "must be host:port, got 'h'"),
])
def test_process_flags_are_checked_before_any_work(cli, monkeypatch, capsys, flags, message):
    monkeypatch.delenv("SLURM_NTASKS", raising=False)
    monkeypatch.setattr(cli, "_start_processes", lambda *a: pytest.fail("started processes"))
    with pytest.raises(SystemExit) as exit_info:
        cli.main([*TINY, *flags])
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err


# ------------------------------------------------------------------------------------------------------
# Two processes x 2 devices against one process x 4
# ------------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def cli():
    return load_cli("train", "multihost")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _two_processes(argv, tmp, clocks=("", "")):
    """Runs train.py as processes 0 and 1 of 2 (2 CPU devices each); returns their outputs. Both are
    killed if either outlives `CHILD_TIMEOUT`."""
    port = _free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SLURM_", "JAX_", "XLA_"))}
    env.update(PYTHONPATH=str(REPO), JAX_PLATFORMS="cpu", XLA_FLAGS="--xla_force_host_platform_device_count=2",
               JAX_CPU_COLLECTIVES_IMPLEMENTATION="gloo", JAX_COORDINATOR_BIND_ADDRESS=f"127.0.0.1:{port}",
               JAX_DISABLE_MOST_OPTIMIZATIONS="1", JAX_COMPILATION_CACHE_DIR=str(tmp / "jax_cache"),
               JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0", PYTHONUNBUFFERED="1")
    # The compilation cache is written by process 0 only: its second session compiles little.
    procs = []
    try:
        for i in range(2):
            procs.append(subprocess.Popen(
                [sys.executable, "-c", CHILD, str(REPO / "experiments" / "train.py"), *argv,
                 "--coordinator_address", f"127.0.0.1:{port}", "--num_processes", "2", "--process_id", str(i)],
                env={**env, "TEST_CLOCK": clocks[i]}, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True))
        outs = [p.communicate(timeout=CHILD_TIMEOUT)[0] for p in procs]
    except subprocess.TimeoutExpired:
        for p in procs:
            p.kill()
        outs = [p.communicate()[0] for p in procs]
        pytest.fail(f"the processes ran past {CHILD_TIMEOUT} s and were killed:\n"
                    + "\n".join(f"--- process {i}:\n{out[-3000:]}" for i, out in enumerate(outs)))
    finally:
        for p in procs:  # a child left waiting for its peer would wait for minutes
            if p.poll() is None:
                p.kill()
                p.communicate()
    for i, (p, out) in enumerate(zip(procs, outs)):
        assert p.returncode == 0, f"process {i} exited {p.returncode}:\n{out[-4000:]}"
    return outs


def _rows(workdir):
    return [json.loads(line) for line in (workdir / "metrics.jsonl").read_text().splitlines()]


def _leaves(tree) -> dict:
    return {jax.tree_util.keystr(p): np.asarray(x) for p, x in jax.tree_util.tree_flatten_with_path(tree)[0]}


def _final(workdir):
    manager = ocp.CheckpointManager(workdir / "latest", item_names=("state", "loader"))
    step = manager.latest_step()
    restored = manager.restore(step, args=ocp.args.Composite(state=ocp.args.StandardRestore(),
                                                             loader=ocp.args.JsonRestore()))
    return step, restored.state, restored.loader


@pytest.fixture(scope="module")
def runs(cli, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("multihost")
    cli.main([*TINY, "--save_path", str(tmp), "--run_name", "one_by_four", "--devices", "4"])
    argv = [*TINY, "--save_path", str(tmp), "--run_name", "two_by_two"]
    # 2.5 ticks: process 1's budget is spent after 2 readings past the deadline's, i.e. after step 2.
    first = _two_processes([*argv, "--max_minutes", str((STOP_AT + 0.5) / 60)], tmp, clocks=("frozen", "ticking"))
    half = {"rows": _rows(tmp / "two_by_two"), "final": _final(tmp / "two_by_two"), "out": first}
    second = _two_processes([*argv, "--resume"], tmp)
    return {"reference": tmp / "one_by_four", "run": tmp / "two_by_two", "half": half, "out": second}


def test_two_processes_stop_together_and_resume_to_the_losses_of_one(runs):
    half = runs["half"]
    assert half["final"][0] == STOP_AT, "the first session should stop after step 2 in both processes"
    assert "stopped after the time budget" in half["out"][0] and f"at step {STOP_AT} of {STEPS}" in half["out"][0]
    assert "[starlight-jax] run folder" not in half["out"][1]  # one copy of the messages: process 0's
    reference, rows = _rows(runs["reference"]), _rows(runs["run"])
    train = [r for r in rows if "d_loss" in r]
    assert [r["step"] for r in train] == list(range(1, STEPS + 1)), "each step logged once"
    assert rows[:len(half["rows"])] == half["rows"]  # the second session appended to the first's log
    want = {r["step"]: r for r in reference if "d_loss" in r}
    assert sum("g_loss" in r for r in train) == STEPS - 1  # generator steps after the 1-step warm-up
    for got in train:
        assert got.keys() == want[got["step"]].keys()
        for k, v in want[got["step"]].items():
            np.testing.assert_allclose(got[k], v, rtol=2e-5, atol=1e-6, err_msg=f"step {got['step']} {k}")
    (step, state, loader), (ref_step, ref_state, ref_loader) = _final(runs["run"]), _final(runs["reference"])
    assert step == ref_step == STEPS and loader == ref_loader
    flat, ref_flat = _leaves(state), _leaves(ref_state)
    assert flat.keys() == ref_flat.keys()
    for k in ref_flat:
        np.testing.assert_allclose(flat[k], ref_flat[k], rtol=1e-4, atol=1e-6, err_msg=k)
    # Not vacuous: the first session's state is not the final one.
    read = "['g_params']['noise']['read']"
    assert not np.array_equal(_leaves(half["final"][1])[read], flat[read])
