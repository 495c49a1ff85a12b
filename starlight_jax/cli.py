"""Shared helpers of the thin CLIs in experiments/."""
import sys


def fail(msg: str):
    """Exits with status 2 and ``error: msg`` on stderr: bad flags and inputs, before any work is done."""
    print(f"error: {msg}", file=sys.stderr)
    raise SystemExit(2)
