"""SIDD (Smartphone Image Denoising Dataset) Small/Medium, raw and sRGB, read from the files as distributed.

Layout (anything below ``data_dir`` is searched): one folder per scene instance named
``<scene>_<instance>_<camera>_<ISO>_<shutter>_<illuminant>_<brightness>``, e.g.
``0001_001_S6_00100_00060_3200_L``, holding ``<id>_NOISY_RAW_010.MAT``, ``<id>_GT_RAW_010.MAT`` and
``<id>_METADATA_RAW_010.MAT`` (raw) or ``<id>_NOISY_SRGB_010.PNG`` / ``<id>_GT_SRGB_010.PNG`` (sRGB).
Files flattened to ``<folder>__<file>`` (as in the shared metadata samples) are accepted too. Camera, ISO
and the other name fields are parsed from the folder name and kept as metadata.

Raw: the image is key ``x`` of a MATLAB v7.3 (HDF5) file, read with h5py and transposed back from
HDF5's reversed axis order (v5 ``.mat`` files are read with scipy). It is packed to 4 channels in the
fixed order **[R, G1, G2, B]** using the file's own CFA pattern (DNG tag 33422 in the metadata's
``UnknownTags``): G1 is the green that shares a sensor row with red, G2 the one that shares a row with
blue. So the same channel holds the same colour for RGGB, BGGR, GRBG and GBRG sensors. Values:

* ``raw_units="auto"`` (default): SIDD distributes raw images already normalised to [0, 1] (black level
  subtracted, divided by the range); float data whose maximum is <= 1 are taken as such. Larger values are
  DN and become ``(x - black) / (white - black)`` with the per-CFA-position ``BlackLevel`` and the
  ``WhiteLevel`` of the metadata. ``"normalized"`` / ``"dn"`` force one reading.
* then clipped to [0, 1] (``clip=True``), like the generator's output. The unit used is recorded per item.

Metadata fields missing from a file (SIDD's iPhone files carry only a thumbnail IFD: no CFA, black or white
level) must be given as ``cfa=`` / ``black_level=`` / ``white_level=``; otherwise reading raises
ValueError naming the file and the missing field.

sRGB: 8-bit PNGs -> 3 channels in [0, 1] (``x / 255``).

Bursts: one scene instance with the listed ``captures`` (default ``("010",)``) is one burst of
T = ``len(captures)`` frames; ``("010", "011")`` stacks SIDD's two captures of a scene (each with its own
ground truth).

Split rule: scene number (first name field) ``% test_mod == 0`` (default 5) is test, else train; all
instances of one scene land in the same split.

The tensorflow-datasets builder in :mod:`starlight_jax.data.sidd_tfds` wraps this reader;
`starlight_jax.data.load_sidd` picks one of the two (``backend="files"`` / ``"tfds"``).
"""

from __future__ import annotations

import pathlib
import re
from typing import Any

import numpy as np

from starlight_jax.data.base import BurstDataset, BurstSource, Item, ItemInfo, common_frame_shape
from starlight_jax.data.images import read_image, to_unit_float
from starlight_jax.data.matfiles import mat_shapes, read_mat

__all__ = ["parse_scene_name", "parse_metadata", "pack_bayer", "read_mat_array", "mat_array_shape",
           "scan_sidd", "load_sidd_files", "RAW_CHANNELS", "SRGB_CHANNELS"]

RAW_CHANNELS = ("R", "G1", "G2", "B")
SRGB_CHANNELS = ("R", "G", "B")
_SCENE_RE = re.compile(r"^(\d{4})_(\d{3})_([A-Za-z0-9]+)_(\d{5})_(\d{5})_(\d{4})_([A-Za-z])$")
_CFA_CODES = {0: "R", 1: "G", 2: "B"}
_CFA_TAG, _CFA_REPEAT_TAG = 33422, 33421


def parse_scene_name(name: str) -> dict[str, Any]:
    """Parses a SIDD scene-instance folder name.

    Args:
      name: ``<scene>_<instance>_<camera>_<ISO>_<shutter>_<illuminant>_<brightness>``, or a flattened
        file name ``<folder>__<file>`` (only the part before ``__`` is used).

    Returns:
      ``{"folder", "scene", "instance", "camera", "iso", "shutter", "illuminant", "brightness"}``; ``iso``,
      ``shutter`` (the name's shutter field, as written) and ``illuminant`` (colour temperature, K) are ints.

    Raises:
      ValueError: the name does not follow the pattern.
    """
    folder = name.split("__", 1)[0]
    m = _SCENE_RE.match(folder)
    if not m:
        raise ValueError(f"SIDD scene folder name {folder!r} does not match "
                         "<scene:4 digits>_<instance:3>_<camera>_<ISO:5>_<shutter:5>_<illuminant:4>_<brightness:L|N|H>"
                         " (e.g. 0001_001_S6_00100_00060_3200_L)")
    scene, inst, cam, iso, shutter, illum, bright = m.groups()
    return {"folder": folder, "scene": scene, "instance": inst, "camera": cam, "iso": int(iso),
            "shutter": int(shutter), "illuminant": int(illum), "brightness": bright}


def _field(md, name):
    if md.dtype.names is None or name not in md.dtype.names:
        return None
    v = np.asarray(md[name])
    return None if v.size == 0 else v


def parse_metadata(path: str | pathlib.Path) -> dict[str, Any]:
    """Reads a SIDD ``*_METADATA_RAW_*.MAT`` file (``scipy.io.loadmat(path)["metadata"][0][0]``).

    Returns:
      ``cfa`` (e.g. ``"RGGB"``: colours at mosaic positions (0,0), (0,1), (1,0), (1,1)), ``black_level``
      (float ``[2, 2]`` per mosaic position), ``white_level`` (float), ``iso``, ``make``, ``model``,
      ``exposure_time``, ``noise_profile`` (DNG NoiseProfile, float array) and ``width``/``height`` of the
      DNG; each is None when the file does not carry it.

    Raises:
      FileNotFoundError: no such file. ValueError: unreadable, or no ``metadata`` struct.
    """
    import scipy.io

    path = pathlib.Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"SIDD metadata file {path} does not exist")
    try:
        mat = scipy.io.loadmat(path)
    except Exception as e:
        raise ValueError(f"{path}: unreadable .mat file ({type(e).__name__}: {e})") from e
    if "metadata" not in mat:
        raise ValueError(f"{path}: no 'metadata' struct (keys: {sorted(k for k in mat if not k.startswith('__'))})")
    md = mat["metadata"][0][0]
    tags = {}
    ut = _field(md, "UnknownTags")
    if ut is not None:
        for row in ut.reshape(-1):
            tags[int(np.asarray(row["ID"]).reshape(-1)[0])] = np.asarray(row["Value"]).reshape(-1)
    cfa = None
    if _CFA_TAG in tags:
        codes = tags[_CFA_TAG]
        repeat = tags.get(_CFA_REPEAT_TAG)
        if len(codes) != 4 or (repeat is not None and list(repeat) != [2, 2]):
            raise ValueError(f"{path}: CFA pattern {codes.tolist()} (repeat {repeat}) is not a 2x2 Bayer pattern")
        plane = _field(md, "CFAPlaneColor")
        colours = [0, 1, 2] if plane is None else plane.reshape(-1).tolist()  # code -> colour index
        cfa = "".join(_CFA_CODES[int(colours[int(c)])] for c in codes)
        if sorted(cfa) != ["B", "G", "G", "R"]:
            raise ValueError(f"{path}: CFA pattern {cfa!r} is not a Bayer pattern (one R, two G, one B)")
    black = _field(md, "BlackLevel")
    if black is not None:
        black = black.astype(np.float64).reshape(-1)
        black = np.full((2, 2), black[0]) if black.size == 1 else black.reshape(2, 2)
    white = _field(md, "WhiteLevel")

    def scalar(name, cast):
        v = _field(md, name)
        return None if v is None else cast(v.reshape(-1)[0])

    return {"cfa": cfa, "black_level": black, "white_level": None if white is None else float(white.reshape(-1)[0]),
            "iso": scalar("ISOSpeedRatings", int), "make": scalar("Make", str), "model": scalar("Model", str),
            "exposure_time": scalar("ExposureTime", float), "noise_profile": tags.get(51041),
            "width": scalar("Width", int), "height": scalar("Height", int)}


def pack_bayer(raw: np.ndarray, cfa: str) -> np.ndarray:
    """Packs a Bayer mosaic ``[..., 2H, 2W]`` to ``[..., H, W, 4]`` in the order (R, G1, G2, B).

    Args:
      raw: the mosaic. cfa: colours at mosaic positions (0,0), (0,1), (1,0), (1,1): ``"RGGB"``,
        ``"BGGR"``, ``"GRBG"`` or ``"GBRG"``.

    Raises:
      ValueError: unknown pattern or odd mosaic size.
    """
    if cfa not in ("RGGB", "BGGR", "GRBG", "GBRG"):
        raise ValueError(f"unknown CFA pattern {cfa!r}; expected RGGB, BGGR, GRBG or GBRG")
    if raw.shape[-2] % 2 or raw.shape[-1] % 2:
        raise ValueError(f"Bayer mosaic of size {raw.shape[-2:]} must have even height and width")
    pos = {(0, 0): cfa[0], (0, 1): cfa[1], (1, 0): cfa[2], (1, 1): cfa[3]}
    red_row = next(p for p, c in pos.items() if c == "R")[0]
    where = {}
    for (r, c), colour in pos.items():
        key = colour if colour != "G" else ("G1" if r == red_row else "G2")
        where[key] = (r, c)
    return np.stack([raw[..., where[k][0]::2, where[k][1]::2] for k in RAW_CHANNELS], axis=-1)


def mat_array_shape(path: str | pathlib.Path, key: str = "x") -> tuple[int, ...]:
    """Shape of ``key`` in a ``.mat`` file (MATLAB order), read from the header only."""
    shapes = mat_shapes(path)
    if key not in shapes:
        raise ValueError(f"{path}: no key {key!r} in this .mat file (keys: {sorted(shapes)})")
    return shapes[key]


def read_mat_array(path: str | pathlib.Path, key: str = "x") -> np.ndarray:
    """Reads ``key`` from a MATLAB v7.3 (HDF5, transposed back to MATLAB order) or v5 ``.mat`` file."""
    return read_mat(path, [key])[key]


def _find(folder_files: dict[str, pathlib.Path], prefix: str, kind: str, cap: str, ext: str, like: pathlib.Path):
    name = f"{prefix}_{kind}_{cap}.{ext}"
    p = folder_files.get(name.upper())
    if p is None:
        raise FileNotFoundError(f"{like} has no partner {like.parent / name}")
    return p


def scan_sidd(data_dir: str | pathlib.Path, variant: str = "raw", captures=("010",)) -> list[dict[str, Any]]:
    """Finds the scene instances under ``data_dir``, sorted by folder name.

    Returns:
      One dict per instance: the :func:`parse_scene_name` fields plus ``noisy``, ``gt`` (lists of paths,
      one per capture) and ``metadata`` (list of paths, raw only).

    Raises:
      FileNotFoundError: missing ``data_dir``, no noisy files, or a noisy file without its GT / metadata.
      ValueError: unknown variant, bad folder name.
    """
    if variant not in ("raw", "srgb"):
        raise ValueError(f"unknown SIDD variant {variant!r}; expected 'raw' or 'srgb'")
    root = pathlib.Path(data_dir)
    if not root.is_dir():
        raise FileNotFoundError(f"SIDD data_dir {root} does not exist")
    ext = "MAT" if variant == "raw" else "PNG"
    tag = "RAW" if variant == "raw" else "SRGB"
    pattern = re.compile(rf"^(.*)_NOISY_{tag}_(\d{{3}})\.{ext}$", re.IGNORECASE)
    by_dir: dict[pathlib.Path, dict[str, pathlib.Path]] = {}
    instances: dict[str, dict[str, Any]] = {}
    for p in sorted(root.rglob("*")):
        m = pattern.match(p.name)
        if not (m and p.is_file()):
            continue
        files = by_dir.setdefault(p.parent, {q.name.upper(): q for q in p.parent.iterdir()})
        prefix, cap = m.group(1), m.group(2)
        folder_name = prefix.split("__", 1)[0] if "__" in prefix else p.parent.name
        key = str(p.parent / folder_name)
        inst = instances.setdefault(key, {**parse_scene_name(folder_name), "caps": {}})
        inst["caps"][cap] = (p, prefix, files)
    if not instances:
        raise FileNotFoundError(f"no SIDD *_NOISY_{tag}_*.{ext} files under {root}")
    out = []
    for key in sorted(instances, key=lambda k: (pathlib.Path(k).name, k)):
        inst = instances[key]
        caps = inst.pop("caps")
        entry = {**inst, "noisy": [], "gt": [], "metadata": []}
        for cap in captures:
            if cap not in caps:
                some = next(iter(caps.values()))[0]
                raise FileNotFoundError(f"{some}: scene instance lacks capture {cap} (*_NOISY_{tag}_{cap}.{ext}); "
                                        f"found captures {sorted(caps)}")
            p, prefix, files = caps[cap]
            entry["noisy"].append(p)
            entry["gt"].append(_find(files, prefix, f"GT_{tag}", cap, ext, p))
            if variant == "raw":
                entry["metadata"].append(_find(files, prefix, "METADATA_RAW", cap, "MAT", p))
        out.append(entry)
    return out


def _normalise_raw(x: np.ndarray, path, meta: dict[str, Any], raw_units: str, clip: bool) -> tuple[np.ndarray, str]:
    is_float = np.asarray(x).dtype.kind == "f"
    x = np.nan_to_num(np.asarray(x, np.float64))
    units = raw_units
    if units == "auto":
        units = "normalized" if is_float and float(x.max(initial=0.0)) <= 1.0 else "dn"
    if units == "dn":
        for f in ("black_level", "white_level"):
            if meta[f] is None:
                raise ValueError(f"{path}: raw values are in DN but the metadata has no {f}; pass {f}=")
        black = np.tile(meta["black_level"], (x.shape[0] // 2, x.shape[1] // 2))  # per mosaic position
        x = (x - black) / (meta["white_level"] - black)
    elif units != "normalized":
        raise ValueError(f"raw_units must be 'auto', 'normalized' or 'dn', got {raw_units!r}")
    if clip:
        x = np.clip(x, 0.0, 1.0)
    return x.astype(np.float32), units


def load_sidd_files(data_dir: str | pathlib.Path, *, variant: str = "raw", captures=("010",), test_mod: int = 5,
                    raw_units: str = "auto", clip: bool = True, cfa: str | None = None,
                    black_level: float | None = None, white_level: float | None = None,
                    mat_key: str = "x") -> BurstDataset:
    """Builds the SIDD dataset from the files (see the module docstring): the ``"files"`` backend of
    `starlight_jax.data.load_sidd`.

    Args:
      data_dir: SIDD folder (``SIDD_Small_Raw_Only``, ``SIDD_Medium_Srgb``, ... or any parent of the scene
        folders).
      variant: ``"raw"`` (4 channels R, G1, G2, B) or ``"srgb"`` (3 channels).
      captures: which of SIDD's captures form the T frames of a burst.
      test_mod: scene numbers divisible by it are the test split.
      raw_units, clip: value handling (module docstring).
      cfa, black_level, white_level: overrides for metadata fields (all files).
      mat_key: the array's key in the raw ``.mat`` files.
    """
    if test_mod < 2:
        raise ValueError(f"test_mod must be >= 2, got {test_mod}")
    overrides = {"cfa": cfa, "black_level": None if black_level is None else np.full((2, 2), float(black_level)),
                 "white_level": white_level}
    items = {"train": [], "test": []}
    for entry in scan_sidd(data_dir, variant, captures):
        item = _sidd_item(entry, variant, raw_units, clip, overrides, mat_key)
        items["test" if int(entry["scene"]) % test_mod == 0 else "train"].append(item)
    c = 4 if variant == "raw" else 3
    train, test = BurstSource(items["train"], c), BurstSource(items["test"], c)
    return BurstDataset(
        name="sidd", train=train, test=test, channels=c, channel_names=RAW_CHANNELS if c == 4 else SRGB_CHANNELS,
        frame_shape=common_frame_shape([train, test]),
        info={"split_rule": f"scene number % {test_mod} == 0 -> test, else train (sorted by folder name)",
              "variant": variant, "captures": tuple(captures), "raw_units": raw_units, "clip": clip,
              "data_dir": str(data_dir)})


def _sidd_item(entry, variant, raw_units, clip, overrides, mat_key) -> Item:
    fields = {k: entry[k] for k in ("folder", "scene", "instance", "camera", "iso", "shutter", "illuminant",
                                    "brightness")}
    if variant == "raw":
        shapes = {mat_array_shape(p, mat_key) for p in entry["noisy"] + entry["gt"]}
        if len(shapes) != 1 or len(next(iter(shapes))) != 2:
            raise ValueError(f"{entry['noisy'][0]}: noisy/GT raw arrays must be one 2-D mosaic of equal size, got {shapes}")
        h, w = next(iter(shapes))
        if h % 2 or w % 2:
            raise ValueError(f"{entry['noisy'][0]}: Bayer mosaic {h}x{w} must have even height and width")
        frame = (h // 2, w // 2)
    else:
        from starlight_jax.data.images import probe_image

        hdrs = {probe_image(p) for p in entry["noisy"] + entry["gt"]}
        if len({hd.shape for hd in hdrs}) != 1:
            raise ValueError(f"size mismatch among {entry['noisy'] + entry['gt']}: {sorted(h.shape for h in hdrs)}")
        frame = next(iter(hdrs)).shape[:2]

    def read(start: int, length: int) -> dict[str, Any]:
        noisy, clean, extra = [], [], dict(fields)
        for k in range(start, start + length):
            if variant == "raw":
                meta = parse_metadata(entry["metadata"][k])
                meta.update({f: v for f, v in overrides.items() if v is not None})
                if meta["cfa"] is None:
                    raise ValueError(f"{entry['metadata'][k]}: metadata has no CFA pattern (DNG tag 33422); pass cfa=")
                for key, out in (("noisy", noisy), ("gt", clean)):
                    x, units = _normalise_raw(read_mat_array(entry[key][k], mat_key), entry[key][k], meta, raw_units, clip)
                    out.append(pack_bayer(x, meta["cfa"]))
                extra.update(cfa=meta["cfa"], raw_units=units, metadata_iso=meta["iso"],
                             black_level=meta["black_level"], white_level=meta["white_level"])
            else:
                for key, out in (("noisy", noisy), ("gt", clean)):
                    arr, bits = read_image(entry[key][k])
                    if arr.shape[-1] != 3 or bits != 8:
                        raise ValueError(f"{entry[key][k]}: expected an 8-bit RGB PNG, got {bits}-bit {arr.shape}")
                    out.append(to_unit_float(arr, bits, entry[key][k]))
        return {"noisy": np.stack(noisy), "clean": np.stack(clean), **extra}

    return Item(ItemInfo(entry["folder"], len(entry["noisy"]), tuple(frame)), read)
