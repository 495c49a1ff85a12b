"""Files at the boundary: outputs checked before any work starts, inputs read with errors naming the file.

The CLIs call `check_output_file` / `check_output_dir` on every output path before they load a model or a
dataset, so that a bad ``--out`` fails in a second rather than after an hour of work. The loaders read
their JSON, ``.npz`` and dataclass configs through `read_json`, `read_npz` and `dataclass_from_dict`, so
that a truncated or hand-edited file gives a `ValueError` naming the file and what is wrong with it
instead of a ``zipfile.BadZipFile`` or a ``TypeError`` from a constructor.
"""
from __future__ import annotations

import dataclasses
import json
import os
import pathlib
import zipfile
import zlib

import numpy as np


# ------------------------------------------------------------------------------------------------------
# Outputs
# ------------------------------------------------------------------------------------------------------
def _nearest_existing(path: pathlib.Path) -> pathlib.Path:
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def _check_creatable(path: pathlib.Path, flag: str, what: str):
    """``path`` does not exist: its nearest existing ancestor must be a writable folder."""
    ancestor = _nearest_existing(path.parent)
    if not ancestor.is_dir():
        raise ValueError(f"{flag} {path}: cannot create the {what}, {ancestor} is a file, not a folder")
    if not os.access(ancestor, os.W_OK | os.X_OK):
        raise ValueError(f"{flag} {path}: cannot create the {what}, the folder {ancestor} is not writable")


def check_output_file(path, flag: str) -> pathlib.Path:
    """Checks that a file can be written at ``path`` (created with its missing folders, or replaced).

    Args:
      path: the output file.
      flag: how the user named it (``"--json"``), for the message.

    Returns:
      ``path`` as an absolute `pathlib.Path`.

    Raises:
      ValueError: ``path`` is a folder, an existing file that is not writable, or below a file or a
        folder that is not writable.
    """
    path = pathlib.Path(os.path.abspath(path))
    if path.is_dir():
        raise ValueError(f"{flag} {path} is a folder; expected a file name")
    if path.exists():
        if not os.access(path, os.W_OK):
            raise ValueError(f"{flag} {path} exists and is not writable")
    else:
        _check_creatable(path, flag, "file")
    return path


def check_output_dir(path, flag: str) -> pathlib.Path:
    """Checks that files can be written into the folder ``path`` (existing, or created with its parents).

    Raises:
      ValueError: ``path`` is a file, a folder that is not writable, or below a file or such a folder.
    """
    path = pathlib.Path(os.path.abspath(path))
    if path.exists():
        if not path.is_dir():
            raise ValueError(f"{flag} {path} is a file; expected a folder")
        if not os.access(path, os.W_OK | os.X_OK):
            raise ValueError(f"{flag} {path} is a folder that is not writable")
    else:
        _check_creatable(path, flag, "folder")
    return path


# ------------------------------------------------------------------------------------------------------
# Inputs
# ------------------------------------------------------------------------------------------------------
def read_json(path) -> dict:
    """Reads a JSON object.

    Raises:
      FileNotFoundError: no such file; ValueError (naming ``path``): unreadable, not valid JSON (with the
        line and column, e.g. of a truncated file) or not an object.
    """
    path = pathlib.Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found")
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise ValueError(f"{path} is not valid JSON ({e.msg} at line {e.lineno}, column {e.colno}); "
                         f"truncated or edited by hand?") from None
    except (OSError, UnicodeDecodeError) as e:
        raise ValueError(f"{path} could not be read: {e}") from None
    if not isinstance(data, dict):
        raise ValueError(f"{path} must hold a JSON object, got a {type(data).__name__}")
    return data


def read_npz(path) -> dict[str, np.ndarray]:
    """Reads every array of an ``.npz`` archive.

    Raises:
      FileNotFoundError: no such file; ValueError (naming ``path``): truncated or corrupt archive.
    """
    path = pathlib.Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found")
    try:
        with np.load(path, allow_pickle=False) as data:
            return {k: np.asarray(data[k]) for k in data.files}
    except (zipfile.BadZipFile, zlib.error, EOFError, OSError, ValueError, KeyError) as e:
        raise ValueError(f"{path} is not a readable .npz archive (truncated or corrupt?): "
                         f"{type(e).__name__}: {e}") from None


def check_fields(cls, data, source: str) -> None:
    """Checks that ``data`` is a dict whose keys are all init fields of the dataclass ``cls``.

    Raises:
      ValueError: naming ``source``, listing the unknown keys and the known ones.
    """
    if not isinstance(data, dict):
        raise ValueError(f"{source} must be a JSON object of {cls.__name__} fields, got {type(data).__name__}")
    known = [f.name for f in dataclasses.fields(cls) if f.init]
    unknown = sorted(set(data) - set(known))
    if unknown:
        raise ValueError(f"{source} has unknown keys {unknown} for {cls.__name__}; known keys: {known}")


def dataclass_from_dict(cls, data, source: str):
    """``cls(**data)``, with a `ValueError` naming ``source`` (e.g. ``"config.json key 'train'"``) for a
    non-object, unknown keys (all listed, with the known ones) or values the constructor refuses."""
    check_fields(cls, data, source)
    try:
        return cls(**data)
    except (TypeError, ValueError) as e:
        raise ValueError(f"{source}: {e}") from None


def read_json_dataclass(path, cls, key: str | None = None):
    """``cls`` built from the JSON object in ``path`` (or from its entry ``key``); errors as
    `read_json` and `dataclass_from_dict`."""
    data = read_json(path)
    if key is not None:
        if key not in data:
            raise ValueError(f"{path} has no key {key!r} (keys: {sorted(data)})")
        data = data[key]
    return dataclass_from_dict(cls, data, f"{path}" + (f" key {key!r}" if key else ""))
