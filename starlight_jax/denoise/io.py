"""Saving and loading trained denoisers; reading and writing the images they work on.

A saved denoiser is a folder with two files:

* ``config.json``: ``{"format": "starlight-jax-denoiser/1", "denoiser": <DenoiserConfig fields>,
  "meta": {...}}`` (``meta`` is free-form: what it was trained on, steps, scores);
* ``params.npz``: one float32 array per parameter, named by its path (``conv0/kernel``, ...).

Plain NumPy + JSON rather than Orbax: a denoiser is a few hundred KB, is read whole, and the folder stays
readable without JAX.

Images: 8/16-bit PNG, TIFF and JPEG (read by `starlight_jax.data.images`, values scaled to [0, 1] by bit
depth), or ``.npy`` float arrays ``[H, W, C]`` in [0, 1] for channel counts an image file cannot hold
(4-channel packed raw). `write_image` writes PNG at 8 or 16 bits (grey or RGB) or ``.npy``.
"""
from __future__ import annotations

import dataclasses
import json
import pathlib
import struct
import zlib

import jax
import numpy as np
from flax import traverse_util

from starlight_jax import files
from starlight_jax.denoise.model import DenoiserConfig, init_denoiser

FORMAT = "starlight-jax-denoiser/1"


def save_denoiser(path, params, config: DenoiserConfig, *, meta: dict | None = None) -> pathlib.Path:
    """Writes ``path/config.json`` and ``path/params.npz`` (the folder is created). Returns ``path``."""
    path = pathlib.Path(path)
    path.mkdir(parents=True, exist_ok=True)
    flat = traverse_util.flatten_dict(jax.device_get(params), sep="/")
    np.savez(path / "params.npz", **{k: np.asarray(v, np.float32) for k, v in flat.items()})
    doc = {"format": FORMAT, "denoiser": dataclasses.asdict(config), "meta": meta or {}}
    (path / "config.json").write_text(json.dumps(doc, indent=1, default=_json_default))
    return path


def _json_default(x):
    if isinstance(x, (np.floating, np.integer)):
        return x.item()
    if isinstance(x, np.ndarray):
        return x.tolist()
    raise TypeError(f"not JSON-serialisable: {type(x).__name__}")


def load_denoiser(path):
    """Reads a folder written by `save_denoiser`.

    Returns:
      ``(params, config, meta)``.

    Raises:
      FileNotFoundError: no such folder or a file missing; ValueError (naming the file): not a denoiser
        folder, invalid or truncated JSON or ``.npz``, unknown config keys, or params that do not match the
        config (names the differing parameters).
    """
    path = pathlib.Path(path)
    cfg_file, npz_file = path / "config.json", path / "params.npz"
    for f in (cfg_file, npz_file):
        if not f.is_file():
            raise FileNotFoundError(f"{f} not found: {path} is not a saved denoiser folder (expected config.json "
                                    f"and params.npz, as written by experiments/denoise_benchmark.py)")
    doc = files.read_json(cfg_file)
    if doc.get("format") != FORMAT:
        raise ValueError(f"{cfg_file} has format {doc.get('format')!r}, expected {FORMAT!r}")
    if "denoiser" not in doc:
        raise ValueError(f"{cfg_file} has no 'denoiser' entry (keys: {sorted(doc)})")
    config = files.dataclass_from_dict(DenoiserConfig, doc["denoiser"], f"{cfg_file} key 'denoiser'")
    flat = files.read_npz(npz_file)
    expected = traverse_util.flatten_dict(jax.eval_shape(lambda: init_denoiser(jax.random.key(0), config)), sep="/")
    missing, unexpected = sorted(set(expected) - set(flat)), sorted(set(flat) - set(expected))
    shapes = sorted(k for k in set(expected) & set(flat) if tuple(expected[k].shape) != flat[k].shape)
    if missing or unexpected or shapes:
        raise ValueError(f"{npz_file} does not match {cfg_file}: missing {missing}, unexpected {unexpected}, "
                         f"shape mismatch {shapes}")
    params = traverse_util.unflatten_dict({k: jax.numpy.asarray(v) for k, v in flat.items()}, sep="/")
    return params, config, doc.get("meta", {})


# ------------------------------------------------------------------------------------------------------
# Images
# ------------------------------------------------------------------------------------------------------
def read_image(path) -> tuple[np.ndarray, int]:
    """``(image float32 [H, W, C] in [0, 1], bits)``; bits is 8/16 for image files, 32 for ``.npy``.

    Raises:
      FileNotFoundError: no such file; ValueError: unreadable, unsupported, non-finite values or values
        outside [0, 1].
    """
    from starlight_jax.data.images import read_image as _read, to_unit_float

    path = pathlib.Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path} is not a file")
    if path.suffix.lower() == ".npy":
        try:
            arr = np.load(path, allow_pickle=False)
        except (ValueError, OSError, EOFError) as e:
            raise ValueError(f"{path} is not a readable .npy array (truncated or corrupt?): {e}") from None
        if arr.ndim == 2:
            arr = arr[..., None]
        if arr.ndim != 3 or arr.dtype.kind != "f":
            raise ValueError(f"{path}: a .npy input must be a float array [H, W, C] in [0, 1]; got "
                             f"{arr.dtype} {arr.shape}")
        bad = int(np.count_nonzero(~np.isfinite(arr)))
        if bad:  # NaN passes the range check below and would come out as an all-NaN "denoised" image
            raise ValueError(f"{path}: {bad} of {arr.size} values are NaN or inf; expected finite values in [0, 1]")
        return to_unit_float(arr.astype(np.float32), 32, path), 32
    arr, bits = _read(path)
    return to_unit_float(arr, bits, path), bits


def write_image(path, image, bits: int = 8) -> None:
    """Writes ``image`` ``[H, W, C]`` in [0, 1]: ``.npy`` as float32, else PNG (C = 1 or 3) at ``bits`` 8/16."""
    path = pathlib.Path(path)
    x = np.clip(np.asarray(image, np.float32), 0.0, 1.0)
    if x.ndim == 2:
        x = x[..., None]
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix.lower() == ".npy":
        np.save(path, x)
        return
    if path.suffix.lower() != ".png":
        raise ValueError(f"output {path} must end in .png or .npy")
    if x.shape[-1] not in (1, 3):
        raise ValueError(f"a PNG holds 1 or 3 channels; this image has {x.shape[-1]}: write a .npy instead")
    if bits not in (8, 16):
        raise ValueError(f"bits must be 8 or 16, got {bits}")
    scale, dtype = (255, ">u1") if bits == 8 else (65535, ">u2")
    _write_png(path, np.round(x * scale).astype(dtype), bits)


def _write_png(path, samples: np.ndarray, bits: int) -> None:
    """Minimal PNG encoder (grey or RGB, 8/16 bit, filter 0): PIL cannot write 16-bit RGB."""
    h, w, c = samples.shape

    def chunk(tag: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data) & 0xFFFFFFFF)

    rows = samples.reshape(h, w * c).view(np.uint8).reshape(h, -1)
    raw = np.concatenate([np.zeros((h, 1), np.uint8), rows], axis=1).tobytes()
    ihdr = struct.pack(">IIBBBBB", w, h, bits, 0 if c == 1 else 2, 0, 0, 0)
    with open(path, "wb") as f:
        f.write(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(raw, 6))
                + chunk(b"IEND", b""))


def pad_to_multiple(image: np.ndarray, multiple: int) -> tuple[np.ndarray, tuple[int, int]]:
    """Reflect-pads ``[..., H, W, C]`` at the bottom/right to multiples of ``multiple``; returns the original
    ``(H, W)`` to crop back to."""
    h, w = image.shape[-3:-1]
    ph, pw = (-h) % multiple, (-w) % multiple
    if ph or pw:
        pad = [(0, 0)] * (image.ndim - 3) + [(0, ph), (0, pw), (0, 0)]
        image = np.pad(image, pad, mode="reflect" if min(h, w) > max(ph, pw) else "edge")
    return image, (h, w)
