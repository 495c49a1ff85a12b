"""Faults around training: refused flags, resume with a changed configuration, kills, signals, locks,
datasets without a test split or with one-frame bursts (the issue "Nothing silent, nothing lost").

CLI tests call ``experiments/train.py``'s ``main(argv)`` in-process, most with `train_loop.train_and_evaluate`
replaced by a recorder, so they check what the CLI decides without compiling anything. Loop tests train a
tiny model (critic width 4, one-frame bursts) for a few steps; one subprocess test sends SIGINT at start-up.
"""
import dataclasses
import fcntl
import json
import os
import pathlib
import re
import shutil
import signal
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from starlight_jax import cli as cli_lib
from starlight_jax import run_folder, train_loop, training
from starlight_jax.data import BurstSource, load_dataset
from legacy import train_config
from test_training import shared_step_compiles  # noqa: F401 (autouse: the loop tests share compiled steps)
from clis import load_cli

REPO = pathlib.Path(__file__).resolve().parents[1]
TINY = ["--steps", "4", "--eval_every", "2", "--crop_size", "64", "--frames", "1", "--frame_size", "64",
        "--critic_width", "4", "--noiselist", "shot_read", "--no_progress"]
CFG = train_config(noiselist="shot_read", network="noUnet", frames=1, crop_size=64, n_critic=2,
                           critic_width=4)
K = 3
pytestmark = pytest.mark.usefixtures("fast_compiles")  # a few tiny steps: compiling dominates


@pytest.fixture(scope="module")
def cli():
    return load_cli("train", "faults")


@pytest.fixture
def recorder(monkeypatch):
    """Replaces the training loop: records its arguments and returns ``result`` (set by the test)."""
    calls = {"result": {"step": 40, "generator_steps": 0, "stopped_by_signal": None, "test_kld_mean": 0.5,
                        "noise/shot": 0.01}}

    def fake(cfg, run, **kwargs):
        calls.update(cfg=cfg, run=run, **kwargs)
        if isinstance(calls["result"], BaseException):
            raise calls["result"]
        return calls["result"]

    monkeypatch.setattr(train_loop, "train_and_evaluate", fake)
    return calls


def _main(cli, argv):
    with pytest.raises(SystemExit) as exit_info:
        cli.main(argv)
    return exit_info.value.code


# ------------------------------------------------------------------------------------------------------
# Flags refused before any work (items 1, 4, 6, 7)
# ------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("flags,message", [
    (["--keep", "0"], "--keep must be >= 1"),
    (["--devices", "0"], "--devices must be >= 1"),
    (["--devices", "5"], "--devices 5: this process has 4 local cpu device(s)"),  # conftest: 4 fake devices
    (["--lambda_gp", "-1"], "--lambda_gp must be >= 0"),
    (["--lr", "0"], "--lr must be > 0"),
    (["--physics_lr", "-0.1"], "--physics_lr must be > 0"),
    (["--level_weight", "-1"], "--level_weight must be >= 0"),
    (["--run_name", "/tmp/elsewhere"], "--run_name must be a single folder name"),
    (["--run_name", "../escape"], "--run_name must be a single folder name"),
    (["--run_name", ".."], "--run_name must be a single folder name"),
    (["--notes", "a/../../b"], "--notes must be a single folder name"),
    (["--save_path", "{file}"], "exists and is not a folder"),
    (["--save_path", "{file}/sub"], "is a file, so the folder cannot be created"),
    (["--run_name", "afile"], "exists and is not a folder"),  # the run folder itself is a file
    (["--allow_config_change", "steps"], "only applies with --resume"),
    (["--resume", "--allow_config_change", "steps,lr"], "['lr'] cannot change on resume"),
])
def test_bad_flags_are_refused_before_any_work(cli, monkeypatch, capsys, tmp_path, flags, message):
    import starlight_jax.data

    def must_not_run(*args, **kwargs):
        pytest.fail("bad flags reached data loading or training")

    monkeypatch.setattr(starlight_jax.data, "load_dataset", must_not_run)
    monkeypatch.setattr(train_loop, "train_and_evaluate", must_not_run)
    out = tmp_path / "out"
    out.mkdir()
    (out / "afile").write_text("not a folder")
    (tmp_path / "file").write_text("x")
    flags = [f.format(file=tmp_path / "file") for f in flags]
    argv = ["--save_path", str(out), *flags] if "--save_path" not in flags else flags
    assert _main(cli, [*TINY, *argv]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and message in err, err
    assert sorted(p.name for p in out.iterdir()) == ["afile"]  # nothing was created


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders")
def test_read_only_save_path_is_refused(cli, capsys, tmp_path):
    tmp_path.chmod(0o555)
    try:
        assert _main(cli, [*TINY, "--save_path", str(tmp_path / "runs")]) == 2
    finally:
        tmp_path.chmod(0o755)
    assert "--save_path" in capsys.readouterr().err


def test_writability_helpers_probe_without_creating(tmp_path):
    cli_lib.check_writable_dir("--out", tmp_path / "a" / "b")  # creatable: accepted
    cli_lib.check_writable_file("--out", tmp_path / "a" / "f.json")
    assert list(tmp_path.iterdir()) == []
    (tmp_path / "d").mkdir()
    with pytest.raises(SystemExit):
        cli_lib.check_writable_file("--out", tmp_path / "d")


# ------------------------------------------------------------------------------------------------------
# The warm-up follows the run; untrained values are not called learned (item 3)
# ------------------------------------------------------------------------------------------------------
def test_default_warmup_is_cut_to_a_quarter_of_a_short_run(cli, recorder, capsys, tmp_path):
    assert cli.main([*TINY, "--steps", "40", "--save_path", str(tmp_path)]) is None
    cfg = recorder["cfg"]
    assert cfg.critic_warmup == 10  # 200 > 40 // 4
    assert cfg.decay_steps == 30  # the cosine spans the (40 - 10) / n_critic generator steps
    out = capsys.readouterr().out
    assert "critic warm-up cut from 200 to 10 steps" in out
    # The fake loop reported 0 generator steps: the values are the initial ones.
    assert "initial (untrained) values" in out and "learned" not in out


def test_long_run_keeps_the_default_warmup_and_reports_learned_values(cli, recorder, capsys, tmp_path):
    recorder["result"] = {**recorder["result"], "generator_steps": 600}
    cli.main([*TINY, "--steps", "800", "--save_path", str(tmp_path)])
    assert recorder["cfg"].critic_warmup == 200
    out = capsys.readouterr().out
    assert "cut" not in out and "learned physical parameters (600 generator steps)" in out


def test_explicit_warmup_longer_than_the_run_is_refused(cli, recorder, capsys, tmp_path):
    assert _main(cli, [*TINY, "--steps", "40", "--critic_warmup", "40", "--save_path", str(tmp_path)]) == 2
    assert "--critic_warmup 40 >= the run's 40 critic steps" in capsys.readouterr().err
    assert "cfg" not in recorder


def test_generator_steps_counts_the_steps_after_warmup():
    cfg = dataclasses.replace(CFG, critic_warmup=3, n_critic=2)
    counted = [sum(training.generator_steps_at(cfg, s) for s in range(n)) for n in range(9)]
    assert counted == [0, 0, 0, 0, 1, 1, 2, 2, 3]
    assert [train_loop.generator_steps(cfg, n) for n in range(9)] == counted


# ------------------------------------------------------------------------------------------------------
# Frames follow the dataset (item 14)
# ------------------------------------------------------------------------------------------------------
def _pairs(root, n):
    rng = np.random.default_rng(0)
    for kind in ("noisy", "clean"):
        (root / kind).mkdir(parents=True)
        for i in range(n):
            Image.fromarray(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(root / kind / f"p{i:02d}.png")
    return root


def test_default_frames_follow_a_one_frame_dataset(cli, recorder, capsys, tmp_path):
    data = _pairs(tmp_path / "pairs", 6)
    flags = ["--dataset", "pairs", "--data_dir", str(data), "--steps", "4", "--critic_width", "4", "--no_progress",
             "--save_path", str(tmp_path / "runs")]
    cli.main(flags)
    assert recorder["cfg"].frames == 1
    assert "frames 1: the dataset's bursts hold 1 frame(s) (default 8" in capsys.readouterr().out
    assert _main(cli, [*flags, "--frames", "2"]) == 2
    assert "--frames 2: the shortest burst of --dataset pairs has 1 frame(s)" in capsys.readouterr().err


def test_min_frames_of_datasets(tmp_path):
    assert load_dataset("pairs", _pairs(tmp_path, 3)).min_frames == 1
    assert load_dataset("synthetic", frame_size=(64, 64), frames=5).min_frames == 5


# ------------------------------------------------------------------------------------------------------
# Exit codes: non-finite loss 4, signal during training 3, interrupt at start-up 130 / 3 (items 8, 9, 10)
# ------------------------------------------------------------------------------------------------------
def test_non_finite_loss_exits_4_with_its_message(cli, recorder, capsys, tmp_path):
    recorder["result"] = train_loop.NonFiniteLoss("non-finite ['d_loss'] at step 3: {...}; the last good "
                                                  "checkpoint is kept in x/latest")
    assert _main(cli, [*TINY, "--save_path", str(tmp_path)]) == 4
    err = capsys.readouterr().err
    assert "Traceback" not in err and err.strip().splitlines()[-1] == (
        "error: non-finite ['d_loss'] at step 3: {...}; the last good checkpoint is kept in x/latest")


def test_signal_during_training_exits_3_or_143_if_nothing_was_saved(cli, recorder, tmp_path):
    recorder["result"] = {**recorder["result"], "stopped_by_signal": signal.SIGTERM}
    argv = [*TINY, "--save_path", str(tmp_path), "--run_name", "r"]
    assert _main(cli, argv) == 128 + signal.SIGTERM  # stopped before its first step: no checkpoint
    (tmp_path / "r" / "latest" / "2").mkdir(parents=True)
    assert _main(cli, argv) == 3


def test_a_stop_before_this_sessions_first_evaluation_reports_no_nan_kld(cli, recorder, capsys, tmp_path):
    """Seen: a resumed run stopped by SIGTERM before its first evaluation printed "test KLD (mean) nan"."""
    result = dict(recorder["result"], stopped_by_signal=signal.SIGTERM, generator_steps=3)
    del result["test_kld_mean"]
    recorder["result"] = result
    (tmp_path / "r" / "latest" / "2").mkdir(parents=True)
    assert _main(cli, [*TINY, "--save_path", str(tmp_path), "--run_name", "r"]) == 3
    out = capsys.readouterr().out
    assert "nan" not in out and "test KLD (mean) not measured in this session" in out, out


def test_busy_run_folder_exits_2(cli, recorder, capsys, tmp_path):
    recorder["result"] = run_folder.RunFolderBusy("x is in use by another training")
    assert _main(cli, [*TINY, "--save_path", str(tmp_path)]) == 2
    assert "in use by another training" in capsys.readouterr().err


@pytest.mark.parametrize("checkpoint,code", [(False, 130), (True, 3)])
def test_interrupt_before_training_exits_130_or_3_with_one_line(cli, recorder, capsys, tmp_path, checkpoint, code):
    if checkpoint:
        (tmp_path / "r" / "latest" / "7").mkdir(parents=True)
        (tmp_path / "r" / "config.json").write_text(json.dumps(
            train_loop._config_dict(CFG, train_loop.RunConfig(workdir=str(tmp_path / "r")))))
    recorder["result"] = cli_lib.Interrupted(signal.SIGINT)
    with pytest.raises(cli_lib.HardExit) as exit_info:
        cli.main([*TINY, "--save_path", str(tmp_path), "--run_name", "r", *(["--resume"] if checkpoint else [])])
    assert exit_info.value.code == code
    err = capsys.readouterr().err
    assert "Traceback" not in err and err.strip().splitlines()[-1].startswith("interrupted by SIGINT")
    assert ("continue with --resume" in err) == checkpoint


@pytest.mark.parametrize("text,match", [
    ('{"train": {"lr": 0.0', r"config\.json is not valid JSON \(.* line 1, column \d+\)"),
    ('{"train": {}}', r"config\.json has no 'run' section"),
    ('{"train": {"bogus": 1}, "run": {}}', r"config\.json key 'train' has unknown keys \['bogus'\]"),
])
def test_resume_of_a_damaged_config_json_is_refused_naming_it(cli, recorder, capsys, tmp_path, text, match):
    """Seen: a truncated config.json ended --resume in a JSONDecodeError traceback (exit 1)."""
    (tmp_path / "r" / "latest" / "7").mkdir(parents=True)
    (tmp_path / "r" / "config.json").write_text(text)
    assert _main(cli, [*TINY, "--save_path", str(tmp_path), "--run_name", "r", "--resume"]) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and "cfg" not in recorder
    assert re.search(r"error: --resume: .*/r/" + match, err), err


def test_every_exit_code_of_train_py_is_in_the_documented_table():
    """The exit-code table of docs/errors.md once lacked the 128 + signal codes of a start-up interrupt."""
    table = (REPO / "docs" / "errors.md").read_text().split("## Exit codes", 1)[1].split("\n## ", 1)[0]
    documented = {int(c) for row in re.findall(r"^\| ([\d, ]+) \|", table, re.M) for c in row.split(",")}
    used = {0, 1, 2, 3, 4, 128 + signal.SIGINT, 128 + signal.SIGTERM}  # cli.py's docstring lists them
    assert used <= documented, sorted(used - documented)


def test_devices_are_stored_resolved_but_an_older_run_folder_keeps_all(cli, recorder, tmp_path):
    cli.main([*TINY, "--save_path", str(tmp_path), "--run_name", "new"])
    assert recorder["run"].devices == 4  # a resume on a machine with another count is then refused, by name
    (tmp_path / "old" / "latest" / "7").mkdir(parents=True)  # written by a version that stored None: "all"
    (tmp_path / "old" / "config.json").write_text(json.dumps(
        train_loop._config_dict(CFG, train_loop.RunConfig(workdir=str(tmp_path / "old"), devices=None))))
    cli.main([*TINY, "--save_path", str(tmp_path), "--run_name", "old", "--resume"])
    assert recorder["run"].devices is None


@pytest.fixture
def sigint_enabled():
    """SIGINT with Python's default handler for the test (and the processes it starts). A shell starts
    background jobs with SIGINT ignored (`pytest ... &`), and the CLIs rightly leave an ignored SIGINT
    ignored, so these tests would see no Ctrl-C at all."""
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    signal.signal(signal.SIGINT, previous)


class _RaisesSigintWhenCollected:
    def __del__(self):
        signal.raise_signal(signal.SIGINT)  # runs the Python handler here, inside the finaliser


@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")  # the swallowed Interrupted
def test_an_interrupt_swallowed_by_a_finaliser_is_still_seen(cli, recorder, monkeypatch, capsys, tmp_path,
                                                            sigint_enabled):
    """Python prints and ignores an exception raised in ``__del__``: a start-up Ctrl-C was lost that way."""
    import starlight_jax.data

    real = starlight_jax.data.load_dataset

    def load_and_collect(*args, **kwargs):
        _RaisesSigintWhenCollected()
        return real(*args, **kwargs)

    monkeypatch.setattr(starlight_jax.data, "load_dataset", load_and_collect)
    with pytest.raises(cli_lib.HardExit) as exit_info:
        cli.main([*TINY, "--save_path", str(tmp_path)])
    assert exit_info.value.code == 130 and "cfg" not in recorder  # training never started
    assert "interrupted by SIGINT during start-up" in capsys.readouterr().err


def test_an_interrupt_swallowed_while_importing_stops_main(cli, recorder, monkeypatch, capsys, tmp_path):
    """Seen: a Ctrl-C 3 s after start raised in JAX's GC callback during the import, was ignored, and the
    run trained to the end."""
    monkeypatch.setattr(cli, "_import_interrupts", [signal.SIGINT])
    assert _main(cli, [*TINY, "--save_path", str(tmp_path)]) == 130
    assert "cfg" not in recorder and "interrupted by SIGINT during start-up" in capsys.readouterr().err


def test_an_interrupt_that_jax_rewraps_as_a_value_error_is_still_an_interrupt(cli, monkeypatch, capsys, tmp_path):
    """Seen: a Ctrl-C 9 s into the start-up landed in a pytree equality check, which JAX re-raises as a
    ValueError ("Exception raised while checking equality of metadata fields"): exit 2 with that message."""
    def interrupted_inside_jax(cfg, run, **kwargs):
        cli_lib._received.append(signal.SIGINT)  # what the handler records before it raises
        try:
            raise cli_lib.Interrupted(signal.SIGINT)
        except cli_lib.Interrupted as e:
            raise ValueError("Exception raised while checking equality of metadata fields of pytree.") from e

    monkeypatch.setattr(train_loop, "train_and_evaluate", interrupted_inside_jax)
    with pytest.raises(cli_lib.HardExit) as exit_info:
        cli.main([*TINY, "--save_path", str(tmp_path)])
    err = capsys.readouterr().err
    assert exit_info.value.code == 130 and "metadata fields" not in err
    assert err.strip().splitlines()[-1] == "interrupted by SIGINT during start-up; nothing was trained"


def test_loop_stops_before_its_first_step_on_a_pending_interrupt(tmp_path):
    messages = []
    result = _run(tmp_path, 10, log=messages.append, stop_requested=lambda: signal.SIGINT)
    assert result["stopped_by_signal"] == signal.SIGINT and result["step"] == 0
    assert not run_folder.has_checkpoint(tmp_path)
    assert any("stopped by SIGINT before the first step; nothing was trained" in m for m in messages), messages


def test_ctrl_c_during_startup_exits_130_without_traceback(tmp_path, sigint_enabled):
    """SIGINT while the start-up compiles: before, a KeyboardInterrupt traceback and often a segfault."""
    env = {**os.environ, "PYTHONPATH": str(REPO), "PYTHONUNBUFFERED": "1", "JAX_PLATFORMS": "cpu"}
    proc = subprocess.Popen([sys.executable, str(REPO / "experiments" / "train.py"), *TINY, "--save_path",
                             str(tmp_path)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        for line in proc.stdout:  # the last line before train_and_evaluate's fit and compiles
            if "TensorBoard:" in line:
                break
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=180)  # a hang guard: 60 s ran out once on a loaded 2-core machine
    finally:
        proc.kill()
    assert proc.returncode == 130, err
    assert "Traceback" not in err and err.strip().splitlines()[-1] == (
        "interrupted by SIGINT during start-up; nothing was trained")


# ------------------------------------------------------------------------------------------------------
# The training loop: resume checks, metrics after a kill, partial saves, lock, signals, no test split
# ------------------------------------------------------------------------------------------------------
def _run(workdir, steps, resume=False, cfg=CFG, dataset=None, log=lambda *_: None, **kwargs):
    run = train_loop.RunConfig(workdir=str(workdir), dataset="synthetic", dataset_options=(("frame_size", (64, 64)),),
                               steps=steps, eval_every=K, log_every=1, keep=2, devices=1, test_bursts=1,
                               progress=False)
    return train_loop.train_and_evaluate(cfg, run, resume=resume, log=log, dataset=dataset, **kwargs)


@pytest.fixture(scope="module")
def base_run(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("base") / "run"
    assert _run(workdir, K)["step"] == K
    return workdir


@pytest.fixture
def copy_of_base(base_run, tmp_path):
    shutil.copytree(base_run, tmp_path / "run")
    return tmp_path / "run"


def test_keep_below_one_is_refused_by_the_run_config():
    with pytest.raises(ValueError, match="keep must be >= 1"):
        train_loop.RunConfig(keep=0)


def test_resume_with_changed_hyperparameters_is_refused_naming_them(copy_of_base):
    before = (copy_of_base / "config.json").read_text()
    changed = dataclasses.replace(CFG, lr=1e-3, seed=3)
    with pytest.raises(ValueError, match=r"lr: 0\.0002 → 0\.001; seed: 0 → 3; resume with the original flags"):
        _run(copy_of_base, K, resume=True, cfg=changed)
    # A changed noiselist is named, not an Orbax tree mismatch.
    with pytest.raises(ValueError, match=r"noiselist: 'shot_read' → 'shot_read_uniform'"):
        _run(copy_of_base, K, resume=True, cfg=dataclasses.replace(CFG, noiselist="shot_read_uniform"))
    with pytest.raises(ValueError, match=r"steps: 3 → 6; to continue with the new steps pass "
                                         r"--allow_config_change steps"):
        _run(copy_of_base, 2 * K, resume=True)
    with pytest.raises(ValueError, match=r"cannot allow changes of \['lr'\]"):
        _run(copy_of_base, K, resume=True, cfg=changed, allow_config_change=("lr",))
    assert (copy_of_base / "config.json").read_text() == before
    assert not (copy_of_base / "config_history.jsonl").exists()


def test_longer_run_under_the_cosine_decay_is_told_the_flag_that_allows_it(tmp_path):
    """Seen: --steps 40 on a run of 2 also changed decay_steps, and the message then gave no hint."""
    old = {"train": {"lr": 2e-4, "decay_steps": 2}, "run": {"steps": 2}}
    new = {"train": {"lr": 2e-4, "decay_steps": 40}, "run": {"steps": 40}}
    with pytest.raises(ValueError, match=r"decay_steps: 2 → 40; steps: 2 → 40; to continue with the new steps pass "
                                         r"--allow_config_change steps$"):
        run_folder.check_resume_config(tmp_path, old, new, 2)
    assert set(run_folder.check_resume_config(tmp_path, old, new, 2, allow=("steps",))) == {"decay_steps", "steps"}


def test_every_field_the_resume_check_calls_safe_can_be_allowed_by_the_flag(cli, recorder, tmp_path):
    """Seen: the refusal of a changed --log_every said to pass --allow_config_change log_every, which the
    flag then refused."""
    assert set(cli.ALLOWED_CHANGES.values()) == set(run_folder.SAFE_FIELDS)
    (tmp_path / "r" / "latest" / "7").mkdir(parents=True)
    cli.main([*TINY, "--save_path", str(tmp_path), "--run_name", "r", "--resume", "--log_every", "1",
              "--allow_config_change", "log_every"])
    assert recorder["allow_config_change"] == ["log_every"]


def test_allowed_change_is_recorded_and_metrics_after_the_checkpoint_are_dropped(copy_of_base):
    """A kill after the checkpoint at step K left rows of steps K+1.. and a torn line; resuming drops them."""
    metrics = copy_of_base / "metrics.jsonl"
    kept = metrics.read_text()
    with open(metrics, "a") as f:
        f.write(json.dumps({"step": K + 1, "d_loss": 1.0, "killed": True}) + "\n")
        f.write('{"step": ' + str(K + 2))  # torn by the kill
    (copy_of_base / "latest" / f"{K + 1}.orbax-checkpoint-tmp-1234").mkdir()
    (copy_of_base / "best" / f"{K + 1}.orbax-checkpoint-tmp-5678").mkdir()
    messages = []
    result = _run(copy_of_base, 2 * K, resume=True, allow_config_change=("steps",), log=messages.append)
    assert result["step"] == 2 * K
    rows = [json.loads(line) for line in metrics.read_text().splitlines()]
    assert metrics.read_text().startswith(kept)
    assert not any(r.get("killed") for r in rows)
    assert [r["step"] for r in rows if "d_loss" in r] == list(range(1, 2 * K + 1))  # each step logged once
    assert not [p for p in copy_of_base.glob("*/*") if run_folder.TMP_MARKER in p.name]
    assert any("removed 2 unfinished checkpoint save(s)" in m for m in messages), messages
    assert any("dropped 2 row(s) after step 3" in m for m in messages), messages
    history = [json.loads(line) for line in (copy_of_base / "config_history.jsonl").read_text().splitlines()]
    assert len(history) == 1 and history[0]["step"] == K
    assert history[0]["changed"] == {"steps": {"old": K, "new": 2 * K}}
    assert json.loads((copy_of_base / "config.json").read_text())["run"]["steps"] == 2 * K


def test_second_training_of_a_locked_folder_is_refused(tmp_path):
    workdir = tmp_path / "run"
    workdir.mkdir()
    with open(workdir / ".lock", "w") as held:
        fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)  # another open file: conflicts even in this process
        with pytest.raises(run_folder.RunFolderBusy, match=re.escape(f"{workdir} is in use by another training")):
            _run(workdir, K)
    assert sorted(p.name for p in workdir.iterdir()) == [".lock"]  # nothing was written


def test_sigterm_during_training_stops_with_a_resumable_checkpoint(monkeypatch, tmp_path, initial_tiny):
    original = training.generator_steps_at

    def steps_at(cfg, step, *args):
        if step == 1:
            os.kill(os.getpid(), signal.SIGTERM)  # handled at once, in this thread: step 1 completes
        return original(cfg, step, *args)

    monkeypatch.setattr(training, "generator_steps_at", steps_at)
    messages = []
    result = _run(tmp_path, 10, log=messages.append)
    assert result["stopped_by_signal"] == signal.SIGTERM and result["step"] == 2
    assert train_loop.restore_state(tmp_path, initial_tiny)[2] == 2
    assert any("stopped by SIGTERM at step 2 of 10" in m for m in messages), messages
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL  # the loop's handler was removed


@pytest.fixture(scope="module")
def initial_tiny():
    import jax

    return jax.device_get(training.create_train_state(jax.random.key(CFG.seed), CFG))


def test_without_a_test_split_the_kld_is_labelled_train_and_no_best_is_kept(tmp_path):
    full = load_dataset("synthetic", frame_size=(64, 64))
    dataset = dataclasses.replace(full, test=BurstSource([], full.channels))
    messages = []
    result = _run(tmp_path, K, dataset=dataset, log=messages.append)
    assert result["test_is_train"] is True and "test_kld_mean" not in result
    assert np.isfinite(result["train_kld_mean"])
    evals = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()
             if "kld" in line]
    assert evals and all(r["test_is_train"] is True and "train_kld_mean" in r for r in evals)
    assert not (tmp_path / "best").exists()
    assert any("no test split" in m and "no best/ checkpoint is kept" in m for m in messages), messages


def test_pairs_with_fewer_than_test_every_have_no_test_split(tmp_path):
    """The premise of the test above: 4 pairs, one in 5 is a test pair, so none is."""
    dataset = load_dataset("pairs", _pairs(tmp_path, 4))
    assert len(dataset.test) == 0 and len(dataset.train) == 4


def test_unfinished_saves_are_removed_from_every_checkpoint_folder(tmp_path):
    """A kill mid-save leaves Orbax's temporary folder in latest/, best/ or init/ (the step-0 model)."""
    from starlight_jax import run_folder

    for sub in ("latest", "best", "init"):
        (tmp_path / sub / f"0.{run_folder.TMP_MARKER}-1").mkdir(parents=True)
        (tmp_path / sub / "7").mkdir()  # a finished save stays
    removed = run_folder.remove_partial_checkpoints(tmp_path, log=lambda *_: None)
    assert sorted(p.parent.name for p in removed) == ["best", "init", "latest"]
    assert sorted(p.name for sub in ("latest", "best", "init") for p in (tmp_path / sub).iterdir()) == ["7"] * 3
