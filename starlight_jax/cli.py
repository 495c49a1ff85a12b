"""Shared helpers of the thin CLIs in experiments/: refusals, output checks, signal handling and the
persistent compilation cache.

Exit codes shared by the CLIs (docs/errors.md): 0 success; 1 unexpected internal error; 2 bad flags, inputs
or files refused (`fail`); 3 training stopped by SIGINT/SIGTERM with a checkpoint saved; 4 training stopped
by a non-finite loss; 128 + signal number for a start-up interrupted before anything was saved.
"""
import contextlib
import os
import pathlib
import signal
import sys
import tempfile
from typing import Optional


def fail(msg: str):
    """Exits with status 2 and ``error: msg`` on stderr: bad flags and inputs, before any work is done."""
    print(f"error: {msg}", file=sys.stderr)
    raise SystemExit(2)


def add_checkpoint_flags(parser, default_root) -> None:
    """``--checkpoint``, ``--root`` and ``--which``: how the CLIs pick a trained run."""
    parser.add_argument("--checkpoint", default=None, help="run folder (default: the newest under --root)")
    parser.add_argument("--root", default=str(default_root), help="where to look for runs")
    parser.add_argument("--which", default="latest", help="latest, best, init (the untrained step-0 model) or a "
                        "step number")


def _nearest_existing(path: pathlib.Path) -> pathlib.Path:
    path = path.absolute()
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def _probe_writable(flag: str, folder: pathlib.Path, target: pathlib.Path) -> None:
    # A real write, not os.access: root passes os.access on read-only mounts, and ACLs can deny what the
    # mode bits allow.
    try:
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as e:
        fail(f"{flag} {target}: cannot write in {folder} ({e.strerror or e})")


def check_writable_dir(flag: str, path) -> None:
    """Refuses (`fail`) an output folder that cannot be created or written, before any work starts.

    Creates nothing: a folder that does not exist yet is checked through its nearest existing parent.
    """
    path = pathlib.Path(path)
    if path.exists() and not path.is_dir():
        fail(f"{flag} {path} exists and is not a folder")
    base = _nearest_existing(path)
    if not base.is_dir():
        fail(f"{flag} {path}: {base} is a file, so the folder cannot be created")
    _probe_writable(flag, base, path)


def check_writable_file(flag: str, path) -> None:
    """Refuses (`fail`) an output file that cannot be created or overwritten, before any work starts."""
    path = pathlib.Path(path)
    if path.is_dir():
        fail(f"{flag} {path} is a folder, expected a file name")
    if path.exists():
        try:
            with open(path, "ab"):  # opens for writing without changing the file
                pass
        except OSError as e:
            fail(f"{flag} {path}: cannot be overwritten ({e.strerror or e})")
        return
    check_writable_dir(flag, path.parent)


def check_name_component(flag: str, name: str) -> None:
    """Refuses (`fail`) a name that is not one plain path component (no separator, not ``.``/``..``)."""
    seps = {os.sep, "/"} | ({os.altsep} if os.altsep else set())
    if not name or name in (".", "..") or any(s in name for s in seps) or "\0" in name:
        fail(f"{flag} must be a single folder name (no '/', not '.' or '..'), got {name!r}")


# The persistent compilation cache: where a CLI keeps its compiled XLA programs, so that a second run of the
# same configuration skips the compile (28-37 s for a GPU training step). Precedence: --compilation_cache,
# then $STARLIGHT_JAX_CACHE, then JAX's own $JAX_COMPILATION_CACHE_DIR, then `default_cache_dir`.
CACHE_ENV = "STARLIGHT_JAX_CACHE"
CACHE_OFF = "none"


def default_cache_dir() -> pathlib.Path:
    """``$XDG_CACHE_HOME/starlight_jax/jax``, or ``~/.cache/starlight_jax/jax`` (the XDG default)."""
    base = os.environ.get("XDG_CACHE_HOME") or pathlib.Path.home() / ".cache"
    return pathlib.Path(base) / "starlight_jax" / "jax"


def add_compilation_cache_flag(parser) -> None:
    """``--compilation_cache DIR|none``; pass its value to `setup_compilation_cache` before any JAX work."""
    parser.add_argument("--compilation_cache", default=None, metavar="DIR|none",
                        help=f"folder of JAX's persistent compilation cache, so that a second run of the same "
                             f"configuration skips the compile; 'none' turns it off (default: ${CACHE_ENV}, else "
                             f"$JAX_COMPILATION_CACHE_DIR, else {default_cache_dir()})")


def setup_compilation_cache(value: Optional[str]) -> Optional[pathlib.Path]:
    """Turns on JAX's persistent compilation cache in the chosen folder; returns it (None: off).

    Must run before the process's first compile: JAX decides once per process whether the cache is used.
    An explicit folder (flag or environment) that cannot be written is refused (`fail`); the default folder
    that cannot be created only prints a note, since the cache is an optimisation.

    Args:
      value: the ``--compilation_cache`` flag (None: not given).
    """
    import jax

    source = "--compilation_cache"
    if value is None and os.environ.get(CACHE_ENV):
        value, source = os.environ[CACHE_ENV], CACHE_ENV
    if value is None and jax.config.jax_compilation_cache_dir:
        value, source = jax.config.jax_compilation_cache_dir, "JAX_COMPILATION_CACHE_DIR"
    if value is not None and value.strip().lower() == CACHE_OFF:
        return None
    if value is not None:
        folder = pathlib.Path(value).expanduser()
        check_writable_dir(source, folder)
    else:
        folder = default_cache_dir()
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        if value is not None:
            fail(f"{source} {folder}: cannot be created ({e.strerror or e})")
        print(f"[starlight-jax] note: no compilation cache, {folder} cannot be created ({e.strerror or e}); "
              f"--compilation_cache DIR picks another folder", file=sys.stderr)
        return None
    jax.config.update("jax_compilation_cache_dir", str(folder))
    # JAX caches only programs that took >= 1 s to compile: on a CPU most of a CLI's start-up is many
    # shorter compiles, and reading a cached entry is faster than any of them.
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
    return folder


class Interrupted(KeyboardInterrupt):
    """SIGINT or SIGTERM arrived; ``signum`` says which."""

    def __init__(self, signum: int):
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


class HardExit(SystemExit):
    """A `SystemExit` that `run_main` turns into ``os._exit``: the interpreter's normal shutdown is unsafe."""


_received: list[int] = []  # signals seen by `signals_raise`'s handler, in order


def interrupted():
    """The last signal `signals_raise` received, or None.

    Python prints and ignores an exception raised in a finaliser (``__del__``, a weakref or GC callback), so
    an `Interrupted` raised while one runs is lost; this record is not, and the CLIs check it between phases.
    """
    return _received[-1] if _received else None


@contextlib.contextmanager
def signals_raise():
    """While active, SIGINT and SIGTERM raise `Interrupted` (SIGTERM would otherwise kill without a word).

    Signals that were ignored when the process started (e.g. SIGINT of a ``nohup`` job) stay ignored.
    """
    _received.clear()
    old = {}
    for s in (signal.SIGINT, signal.SIGTERM):
        if signal.getsignal(s) is not signal.SIG_IGN:
            old[s] = signal.signal(s, _raise_interrupted)
    try:
        yield
    finally:
        for s, handler in old.items():
            signal.signal(s, handler)


def _raise_interrupted(signum, _frame):
    _received.append(signum)
    raise Interrupted(signum)


def run_main(main) -> None:
    """Runs ``main()``; a `HardExit` leaves through ``os._exit`` after flushing stdout and stderr, and so
    does a Ctrl-C that ``main`` did not handle (one line and exit 130, 128 + SIGINT, not a traceback).

    XLA polls for signals while it compiles and abandons the compilation on an interrupt; the interpreter's
    shutdown then tears down XLA's state under the abandoned compile and segfaults (seen as rc -11 after a
    start-up Ctrl-C). Nothing of ours is pending at that point (no checkpoint write, no open log), so
    skipping the shutdown loses nothing.
    """
    try:
        main()
    except HardExit as e:
        code = e.code if isinstance(e.code, int) else 1
    except KeyboardInterrupt:
        print(f"interrupted by SIGINT; {pathlib.Path(sys.argv[0]).name} stopped (its outputs may be incomplete)",
              file=sys.stderr)
        code = 128 + signal.SIGINT
    else:
        return
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)
