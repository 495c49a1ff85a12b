"""Reading 8- and 16-bit PNG, JPEG and TIFF images as ``[H, W, C]`` arrays, with their bit depth.

Pillow silently drops the low byte of 16-bit colour PNGs (it opens them as 8-bit "RGB"), so PNG files
are classified from their own IHDR header and 16-bit colour/grey+alpha PNGs are decoded here (zlib +
the five PNG row filters, vectorised along anti-diagonals). Everything else goes through Pillow
(PNG/JPEG) or tifffile (TIFF).

Values are scaled to [0, 1] by the file's bit depth: ``x / 255`` for 8-bit, ``x / 65535`` for 16-bit.
"""

from __future__ import annotations

import pathlib
import struct
import zlib
from typing import NamedTuple

import numpy as np

__all__ = ["ImageHeader", "probe_image", "read_image", "to_unit_float", "IMAGE_SUFFIXES"]

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff")
_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_PNG_CHANNELS = {0: 1, 2: 3, 3: 1, 4: 2, 6: 4}  # colour type -> samples per pixel (3 = palette index)


class ImageHeader(NamedTuple):
    """Shape and sample type of an image file, read from its header only.

    Attributes:
      shape: ``(H, W, C)`` after dropping an alpha channel (C is 1 or 3).
      bits: 8 or 16 for integer files, 32 for float TIFFs.
    """

    shape: tuple[int, int, int]
    bits: int


def _png_ihdr(data: bytes, path) -> tuple[int, int, int, int, int]:
    if data[:8] != _PNG_SIGNATURE or data[12:16] != b"IHDR":
        raise ValueError(f"{path}: not a PNG file (bad signature or no IHDR chunk)")
    w, h, depth, ctype, _, _, interlace = struct.unpack(">IIBBBBB", data[16:29])
    return h, w, depth, ctype, interlace


def probe_image(path: str | pathlib.Path) -> ImageHeader:
    """Returns the :class:`ImageHeader` of ``path`` without decoding its pixels.

    Raises:
      ValueError: unreadable file, unsupported format, or a sample type other than 8/16-bit integer
        (or float TIFF); the message names the file.
    """
    path = pathlib.Path(path)
    suffix = path.suffix.lower()
    try:
        if suffix == ".png":
            with open(path, "rb") as f:
                head = f.read(33)
            h, w, depth, ctype, _ = _png_ihdr(head, path)
            if depth not in (8, 16) and ctype != 3:
                raise ValueError(f"{path}: {depth}-bit PNG samples are not supported; expected 8 or 16 bit")
            c = {0: 1, 2: 3, 3: 3, 4: 1, 6: 3}[ctype]
            return ImageHeader((h, w, c), 8 if ctype == 3 else depth)
        if suffix in (".jpg", ".jpeg"):
            from PIL import Image

            with Image.open(path) as im:
                if im.mode not in ("L", "RGB"):
                    raise ValueError(f"{path}: JPEG mode {im.mode!r} is not supported; expected 'L' or 'RGB'")
                return ImageHeader((im.height, im.width, 1 if im.mode == "L" else 3), 8)
        if suffix in (".tif", ".tiff"):
            import tifffile

            with tifffile.TiffFile(path) as tf:
                series = tf.series[0]
                shape, dtype, axes = series.shape, np.dtype(series.dtype), series.axes
            hwc = _tiff_hwc(shape, axes, path)
            return ImageHeader(hwc, _bits_of(dtype, path))
    except ValueError:
        raise
    except Exception as e:  # PIL/tifffile raise many types for corrupt files; name the file once here.
        raise ValueError(f"{path}: unreadable image file ({type(e).__name__}: {e})") from e
    raise ValueError(f"{path}: unsupported image type {suffix!r}; expected one of {IMAGE_SUFFIXES}")


def _bits_of(dtype: np.dtype, path) -> int:
    if dtype == np.uint8:
        return 8
    if dtype == np.uint16:
        return 16
    if dtype.kind == "f":
        return 32
    raise ValueError(f"{path}: sample type {dtype} is not supported; expected uint8, uint16 or float")


def _tiff_hwc(shape, axes: str, path) -> tuple[int, int, int]:
    if len(shape) == 2:
        return (shape[0], shape[1], 1)
    if len(shape) == 3 and axes.endswith("S") and shape[2] in (1, 3, 4):
        return (shape[0], shape[1], 1 if shape[2] == 1 else 3)
    if len(shape) == 3 and axes.startswith("S") and shape[0] in (1, 3, 4):
        return (shape[1], shape[2], 1 if shape[0] == 1 else 3)
    raise ValueError(f"{path}: TIFF of shape {tuple(shape)} (axes {axes!r}) is not one grey or RGB image")


def read_image(path: str | pathlib.Path) -> tuple[np.ndarray, int]:
    """Decodes ``path`` to ``[H, W, C]`` (C = 1 or 3) in its stored sample type.

    An alpha channel is dropped when it is fully opaque; a translucent one is an error.

    Returns:
      ``(array, bits)``: uint8 (bits 8), uint16 (bits 16) or float32 (bits 32, float TIFF).

    Raises:
      ValueError: unreadable or unsupported file (named in the message).
    """
    path = pathlib.Path(path)
    header = probe_image(path)
    suffix = path.suffix.lower()
    try:
        if suffix == ".png":
            with open(path, "rb") as f:
                data = f.read()
            _, _, depth, ctype, _ = _png_ihdr(data, path)
            if depth == 16:
                arr = decode_png(data, path)
            else:
                arr = _read_pillow(path)
        elif suffix in (".jpg", ".jpeg"):
            arr = _read_pillow(path)
        else:
            import tifffile

            with tifffile.TiffFile(path) as tf:
                arr = tf.series[0].asarray()
                axes = tf.series[0].axes
            if arr.ndim == 3 and axes.startswith("S"):
                arr = np.moveaxis(arr, 0, -1)
    except ValueError:
        raise
    except Exception as e:
        raise ValueError(f"{path}: unreadable image file ({type(e).__name__}: {e})") from e
    if arr.ndim == 2:
        arr = arr[..., None]
    if arr.shape[-1] in (2, 4):  # grey+alpha or RGBA
        alpha = arr[..., -1]
        opaque = 1.0 if arr.dtype.kind == "f" else np.iinfo(arr.dtype).max
        if not np.all(alpha == opaque):
            raise ValueError(f"{path}: image has a translucent alpha channel; expected grey or RGB")
        arr = arr[..., :-1]
    if arr.shape != header.shape:
        raise ValueError(f"{path}: decoded shape {arr.shape} does not match its header {header.shape}")
    if header.bits == 32:
        arr = arr.astype(np.float32)
    return arr, header.bits


def _read_pillow(path) -> np.ndarray:
    from PIL import Image

    with Image.open(path) as im:
        if im.mode == "P":
            im = im.convert("RGBA" if "transparency" in im.info else "RGB")
        if im.mode == "I;16B":
            im = im.convert("I;16")
        arr = np.asarray(im)
    if arr.dtype not in (np.uint8, np.uint16):
        raise ValueError(f"{path}: decoded sample type {arr.dtype} is not supported; expected 8 or 16 bit")
    return arr


def to_unit_float(arr: np.ndarray, bits: int, path="<array>", max_value: float | None = None) -> np.ndarray:
    """Scales integer samples to float32 [0, 1] by their bit depth (``max_value`` overrides 2**bits - 1).

    Float samples must already be in [0, 1] and are only cast.

    Raises:
      ValueError: values outside [0, 1] after scaling (e.g. a 12-bit ``max_value`` on 16-bit data).
    """
    if bits == 32:
        out = arr.astype(np.float32)
    else:
        scale = float(max_value) if max_value is not None else float(2**bits - 1)
        out = arr.astype(np.float32) / np.float32(scale)
    if out.size and (float(out.min()) < 0.0 or float(out.max()) > 1.0):
        raise ValueError(f"{path}: values span [{out.min():.4g}, {out.max():.4g}] after scaling; expected [0, 1]")
    return out


def decode_png(data: bytes, path="<png>") -> np.ndarray:
    """Decodes a non-interlaced 8- or 16-bit grey/grey+alpha/RGB/RGBA PNG to ``[H, W, S]`` uint8/uint16.

    Args:
      data: the whole file.
      path: used in error messages.

    Raises:
      ValueError: interlaced or palette PNG, bad filter byte, or truncated data.
    """
    h, w, depth, ctype, interlace = _png_ihdr(data, path)
    if interlace:
        raise ValueError(f"{path}: interlaced (Adam7) 16-bit PNGs are not supported; re-save without interlace")
    if ctype == 3 or depth not in (8, 16):
        raise ValueError(f"{path}: only 8/16-bit non-palette PNGs are decoded here (depth {depth}, type {ctype})")
    samples = _PNG_CHANNELS[ctype]
    bpp = samples * depth // 8
    idat, pos = [], 8
    while pos < len(data):
        (length,) = struct.unpack(">I", data[pos:pos + 4])
        kind = data[pos + 4:pos + 8]
        if kind == b"IDAT":
            idat.append(data[pos + 8:pos + 8 + length])
        elif kind == b"IEND":
            break
        pos += 12 + length
    raw = np.frombuffer(zlib.decompress(b"".join(idat)), np.uint8)
    if raw.size != h * (w * bpp + 1):
        raise ValueError(f"{path}: PNG image data has {raw.size} bytes, expected {h * (w * bpp + 1)}")
    rows = raw.reshape(h, w * bpp + 1)
    ftype = rows[:, 0].astype(np.int64)
    if np.any(ftype > 4):
        raise ValueError(f"{path}: invalid PNG row filter type {int(ftype.max())}")
    filt = rows[:, 1:].reshape(h, w, bpp).astype(np.int32)
    recon = _unfilter(filt, ftype)
    if depth == 16:
        recon = (recon[..., 0::2].astype(np.uint16) << 8) | recon[..., 1::2].astype(np.uint16)
    return recon.reshape(h, w, samples)


def _unfilter(filt: np.ndarray, ftype: np.ndarray) -> np.ndarray:
    """Undoes PNG filtering. Pixel (i, j) needs (i, j-1), (i-1, j), (i-1, j-1), so all pixels on one
    anti-diagonal i + j = d are independent: h + w - 1 vectorised steps instead of h * w scalar ones."""
    h, w, bpp = filt.shape
    if np.all(ftype <= 2):  # None/Sub/Up only: row by row, Sub is a running sum mod 256.
        out = np.zeros((h, w, bpp), np.int32)
        prev = np.zeros((w, bpp), np.int32)
        for i in range(h):
            row = filt[i]
            if ftype[i] == 1:
                row = np.cumsum(row, axis=0)
            elif ftype[i] == 2:
                row = row + prev
            prev = out[i] = row & 255
        return out.astype(np.uint8)
    pad = np.zeros((h + 1, w + 1, bpp), np.int32)  # row 0 and column 0 are the zero "outside" pixels
    for d in range(h + w - 1):
        i = np.arange(max(0, d - w + 1), min(h - 1, d) + 1)
        j = d - i
        a = pad[i + 1, j]
        b = pad[i, j + 1]
        c = pad[i, j]
        t = ftype[i][:, None]
        pa, pb, pc = np.abs(b - c), np.abs(a - c), np.abs(a + b - 2 * c)
        paeth = np.where((pa <= pb) & (pa <= pc), a, np.where(pb <= pc, b, c))
        pred = np.select([t == 1, t == 2, t == 3, t == 4], [a, b, (a + b) >> 1, paeth], 0)
        pad[i + 1, j + 1] = (filt[i, j] + pred) & 255
    return pad[1:, 1:].astype(np.uint8)
