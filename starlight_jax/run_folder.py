"""Keeping a run folder consistent across crashes, kills, resumes and concurrent trainings.

What `starlight_jax.train_loop` does to a run folder before it trains:

* takes ``<workdir>/.lock`` (`lock`), so a second training of the same folder is refused, not interleaved;
* removes checkpoints that a killed save left half-written (``*.orbax-checkpoint-tmp*``);
* on resume, refuses a configuration that differs from the stored one (`check_resume_config`) unless the
  changed fields are safe and were allowed; an allowed change appends a line to ``config_history.jsonl``;
* cuts ``metrics.jsonl`` back to the restored step (`truncate_metrics`): rows written after the last
  checkpoint by a run that was killed would otherwise appear twice.
"""
from __future__ import annotations

import contextlib
import json
import os
import pathlib
import shutil
import time
from collections.abc import Iterable

# RunConfig fields that change how this session runs, not what is trained: free on every resume.
SESSION_FIELDS = frozenset({"max_seconds", "progress", "workdir"})
# Fields that may change on resume when named in `allow`: the run's length and its bookkeeping.
SAFE_FIELDS = frozenset({"steps", "epochs", "eval_every", "log_every", "keep"})
# Follow the run's length: the cosine schedule spans the run's generator steps.
DERIVED_FROM_LENGTH = frozenset({"decay_steps"})

TMP_MARKER = ".orbax-checkpoint-tmp"


class RunFolderBusy(RuntimeError):
    """Another process holds the run folder's lock."""


@contextlib.contextmanager
def lock(workdir: pathlib.Path):
    """Holds an exclusive, non-blocking lock on ``<workdir>/.lock`` (created with the folder).

    Raises:
      RunFolderBusy: another training holds it (the message names the folder and, if known, its pid).
    """
    import fcntl

    workdir.mkdir(parents=True, exist_ok=True)
    path = workdir / ".lock"
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 64, 0).decode(errors="replace").strip()
            raise RunFolderBusy(f"{workdir} is in use by another training (process {holder or '?'} holds {path}); "
                                f"wait for it to end or choose another --run_name/--save_path") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, str(os.getpid()).encode(), 0)
        yield
    finally:
        os.close(fd)  # releases the lock


def has_checkpoint(workdir) -> bool:
    """Whether ``<workdir>/latest`` holds a finished checkpoint (a step-numbered folder)."""
    latest = pathlib.Path(workdir) / "latest"
    return latest.is_dir() and any(d.name.isdigit() and d.is_dir() for d in latest.iterdir())


def remove_partial_checkpoints(workdir: pathlib.Path, log=print) -> list[pathlib.Path]:
    """Deletes the temporary folders of checkpoint saves that never finished (a kill mid-save)."""
    removed = []
    for sub in ("latest", "best", "init"):  # init/: a kill while the step-0 model was being saved
        folder = workdir / sub
        if folder.is_dir():
            for p in sorted(folder.iterdir()):
                if TMP_MARKER in p.name:
                    shutil.rmtree(p) if p.is_dir() else p.unlink()
                    removed.append(p)
    if removed:
        log(f"removed {len(removed)} unfinished checkpoint save(s) left by an interrupted run: "
            f"{', '.join(str(p.relative_to(workdir)) for p in removed)}")
    return removed


def _flat(config: dict) -> dict:
    # The stored config went through JSON (tuples became lists): compare both sides in that form.
    data = json.loads(json.dumps(config, default=list))
    return {k: v for part in ("train", "run") for k, v in data[part].items()}  # the two share no field name


def config_changes(old: dict, new: dict) -> dict[str, tuple]:
    """``{field: (old, new)}`` for every field of ``{"train": ..., "run": ...}`` that differs."""
    a, b = _flat(old), _flat(new)
    return {k: (a.get(k), b.get(k)) for k in sorted(set(a) | set(b)) if a.get(k) != b.get(k)}


def check_resume_config(workdir: pathlib.Path, old: dict, new: dict, step: int, allow: Iterable[str] = (),
                        log=print, record: bool = True) -> dict[str, tuple]:
    """Refuses to resume with a changed configuration, unless every change is safe and allowed.

    Args:
      workdir: the run folder (``config_history.jsonl`` is appended there for an allowed change).
      old: the stored ``{"train": ..., "run": ...}`` of ``config.json``.
      new: the configuration of this session, in the same form.
      step: the step being resumed from (recorded with the change).
      allow: fields that may change (a subset of `SAFE_FIELDS`); allowing ``steps`` or ``epochs`` also lets
        the fields derived from the run's length change (`DERIVED_FROM_LENGTH`).
      log: where the accepted changes are reported.
      record: append accepted changes to ``config_history.jsonl`` (False: another process writes it).

    Returns:
      The accepted changes ``{field: (old, new)}`` (session fields excluded).

    Raises:
      ValueError: a change that was not allowed, naming each field with its old and new value.
    """
    allow = set(allow)
    unsafe = allow - SAFE_FIELDS - SESSION_FIELDS
    if unsafe:
        raise ValueError(f"cannot allow changes of {sorted(unsafe)}: only {sorted(SAFE_FIELDS)} may change on resume")
    if allow & {"steps", "epochs"}:
        allow |= DERIVED_FROM_LENGTH
    changes = {k: v for k, v in config_changes(old, new).items() if k not in SESSION_FIELDS}
    refused = {k: v for k, v in changes.items() if k not in allow}
    if refused:
        listed = "; ".join(f"{k}: {o!r} → {n!r}" for k, (o, n) in refused.items())
        safe = sorted(set(refused) & SAFE_FIELDS)
        # Allowing steps/epochs allows what follows the run's length (the decay of the default cosine schedule).
        covered = set(safe) | (DERIVED_FROM_LENGTH if set(safe) & {"steps", "epochs"} else set())
        hint = (f"; to continue with the new {', '.join(safe)} pass --allow_config_change {','.join(safe)}"
                if safe and set(refused) <= covered else
                f"; resume with the original flags (see {workdir / 'config.json'}) or train a new run "
                f"(another --run_name)")
        raise ValueError(f"--resume of {workdir} with a different configuration: {listed}{hint}")
    if changes and record:
        entry = {"step": step, "time": time.strftime("%Y-%m-%dT%H:%M:%S"),
                 "changed": {k: {"old": o, "new": n} for k, (o, n) in changes.items()}}
        with open(workdir / "config_history.jsonl", "a") as f:
            f.write(json.dumps(entry) + "\n")
        log(f"configuration changed at step {step}: "
            + "; ".join(f"{k}: {o!r} → {n!r}" for k, (o, n) in changes.items())
            + f" (recorded in {workdir / 'config_history.jsonl'})")
    return changes


def truncate_metrics(path: pathlib.Path, step: int, log=print) -> int:
    """Keeps the rows of a ``metrics.jsonl`` with ``step <= step`` (and drops a torn last line).

    Returns:
      How many rows were dropped.
    """
    if not path.is_file():
        return 0
    kept, dropped = [], 0
    for line in path.read_text().splitlines():
        try:
            row = json.loads(line)
            ok = int(row["step"]) <= step
        except (ValueError, KeyError, TypeError):
            ok = False
        if ok:
            kept.append(line)
        else:
            dropped += 1
    if dropped:
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text("".join(f"{line}\n" for line in kept))
        os.replace(tmp, path)
        log(f"{path.name}: dropped {dropped} row(s) after step {step} (written after the last checkpoint)")
    return dropped
