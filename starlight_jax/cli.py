"""Shared helpers of the thin CLIs in experiments/."""
import sys


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
