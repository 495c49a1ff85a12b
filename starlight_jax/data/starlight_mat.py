"""Starlight / "Dancing under the stars" Canon RGB+NIR data in the ``.mat`` layouts of SPEC §7.

Frames are ``[640, 1080, 4]`` with channels **[R, G, B, NIR]** (the 2x2 mosaic split without demosaicing,
SPEC §1). Layouts under ``data_dir`` (or ``data_dir/paired_data``), each optional:

* ``stillpairs_mat/*.mat``: keys ``noisy_list`` ``[N, H, W, 4]``, ``gt_list`` ``[M, H, W, 4]`` (or
  ``[H, W, 4]``), scalar ``alpha``. One item per file: noisy = the N frames, clean = mean(gt_list) / alpha
  for every frame. Values are stored normalised (SPEC §1), so noisy frames outside [0, 1] are an error.
* ``graybackground_mat/``: ``noisy<s>*_<k>.mat`` (key ``noisy``, one frame) and ``gt<s>*.mat`` (keys ``gt``,
  ``alpha``) for capture sets ``s`` (0 and 2 in the original). One item per set: its frames sorted by
  the trailing integer k; clean = gt / alpha.
* ``colorbackground_mat/<folder>/``: ``clean*.mat`` (keys ``gt_label``, ``alpha``) and ``sequence*_<k>.mat``
  (key ``gt_label``: a noisy frame in 16-bit DN). One item per folder: noisy = frames / 2**16 sorted by k;
  clean = gt_label * alpha / 2**16. The original *multiplies* by alpha here while the other layouts divide
  (SPEC §12.19); ``colorbackground_alpha="divide"`` switches to dividing. Noisy frames must be in DN
  (max > 1), so already-normalised data cannot be divided by 2**16 twice unnoticed.
* ``fixed_pattern_noise.mat`` (in ``data_dir`` or ``data_dir/data``, or ``fixed_pattern_path``): key
  ``mean_pattern`` ``[H, W, 4]`` in 16-bit units -> ``dataset.fixed_pattern = mean_pattern / 2**16`` (§7.3).

Items keep all their frames; the pipeline picks T-frame windows (it needs at least T frames per item,
where the original silently wrapped around, SPEC §7.1). ``.mat`` v7.3 (HDF5) files are sliced so a
window reads only its frames.

Split rule (deterministic, fixing the unsorted globs of SPEC §12.18): stillpairs files sorted by name,
the first ``n_train_stills`` (40, as in the original) train, the rest test; colorbackground folders sorted,
the first and the last test (when there are >= 3), the rest train (the original also dropped the
second-to-last one); graybackground sets train only.
"""

from __future__ import annotations

import pathlib
import re
from typing import Any

import numpy as np

from starlight_jax.data.base import BurstDataset, BurstSource, Item, ItemInfo
from starlight_jax.data.matfiles import mat_shapes, read_mat, read_mat_frames

__all__ = ["CHANNEL_NAMES", "FRAME_SHAPE", "LAYOUTS", "load_starlight", "load_fixed_pattern"]

CHANNEL_NAMES = ("R", "G", "B", "NIR")
FRAME_SHAPE = (640, 1080)
LAYOUTS = ("stillpairs", "graybackground", "colorbackground")
_DN = 2.0**16  # 16-bit raw -> [0, 1], as the original divides (SPEC §1)


def _trailing_int(path: pathlib.Path) -> int:
    m = re.search(r"_(\d+)$", path.stem)
    if not m:
        raise ValueError(f"{path}: expected a file name ending in _<frame number>.mat")
    return int(m.group(1))


def _scalar(x: np.ndarray, path, key) -> float:
    if x.size != 1:
        raise ValueError(f"{path}: key {key!r} must be a scalar, got shape {x.shape}")
    return float(x.reshape(-1)[0])


def _check_frame_shape(shape, path, key, frame_shape, ndim) -> tuple[int, int]:
    if len(shape) != ndim or shape[-1] != 4:
        want = "[N, H, W, 4]" if ndim == 4 else "[H, W, 4]"
        raise ValueError(f"{path}: key {key!r} has shape {tuple(shape)}; expected {want}")
    hw = tuple(shape[-3:-1])
    if frame_shape is not None and hw != tuple(frame_shape):
        raise ValueError(f"{path}: key {key!r} holds {hw[0]}x{hw[1]} frames; expected {frame_shape[0]}x{frame_shape[1]}")
    return hw


def _check_unit(x: np.ndarray, path, key) -> np.ndarray:
    if x.size and (float(np.min(x)) < 0.0 or float(np.max(x)) > 1.0):
        raise ValueError(f"{path}: key {key!r} spans [{np.min(x):.4g}, {np.max(x):.4g}]; expected normalised "
                         "values in [0, 1] (this layout is stored normalised, SPEC §1)")
    return x.astype(np.float32)


def _burst(clean: np.ndarray, noisy: np.ndarray) -> dict[str, Any]:
    noisy = noisy.astype(np.float32)
    return {"noisy": noisy, "clean": np.broadcast_to(clean.astype(np.float32), noisy.shape).copy()}


def _still_item(path: pathlib.Path, frame_shape) -> Item:
    shapes = mat_shapes(path)
    keys = ("noisy_list", "gt_list", "alpha")
    if any(k not in shapes for k in keys):
        raise ValueError(f"{path}: missing key(s) {[k for k in keys if k not in shapes]}; expected {list(keys)} "
                         f"(stillpairs layout), found {sorted(shapes)}")
    hw = _check_frame_shape(shapes["noisy_list"], path, "noisy_list", frame_shape, 4)
    gt_shape = shapes["gt_list"]
    _check_frame_shape(gt_shape, path, "gt_list", hw, len(gt_shape) if len(gt_shape) in (3, 4) else 4)

    def read(start: int, length: int) -> dict[str, Any]:
        m = read_mat(path, ["gt_list", "alpha"])
        gt = m["gt_list"] if m["gt_list"].ndim == 3 else m["gt_list"].mean(axis=0)
        noisy = _check_unit(read_mat_frames(path, "noisy_list", start, start + length), path, "noisy_list")
        return {**_burst(gt / _scalar(m["alpha"], path, "alpha"), noisy), "layout": "stillpairs"}

    return Item(ItemInfo(f"stillpairs/{path.stem}", shapes["noisy_list"][0], hw), read)


def _gray_items(folder: pathlib.Path, frame_shape) -> list[Item]:
    sets: dict[str, list[pathlib.Path]] = {}
    for p in folder.glob("noisy*.mat"):
        m = re.match(r"^noisy(\d)", p.name)
        if m:
            sets.setdefault(m.group(1), []).append(p)
    if not sets:
        raise FileNotFoundError(f"{folder} holds no noisy<set>*_<k>.mat files (graybackground layout)")
    items = []
    for s in sorted(sets):
        frames = sorted(sets[s], key=lambda p: (_trailing_int(p), p.name))
        gts = sorted(folder.glob(f"gt{s}*.mat"))
        if len(gts) != 1:
            raise FileNotFoundError(f"{folder}: capture set {s} needs exactly one gt{s}*.mat file, found "
                                    f"{[g.name for g in gts]}")
        gt_path = gts[0]
        shapes = mat_shapes(gt_path)
        if "gt" not in shapes or "alpha" not in shapes:
            raise ValueError(f"{gt_path}: missing key(s); expected ['gt', 'alpha'] (graybackground layout), found {sorted(shapes)}")
        hw = _check_frame_shape(shapes["gt"], gt_path, "gt", frame_shape, 3)
        first = mat_shapes(frames[0])
        if "noisy" not in first:
            raise ValueError(f"{frames[0]}: missing key 'noisy' (graybackground layout), found {sorted(first)}")
        _check_frame_shape(first["noisy"], frames[0], "noisy", hw, 3)

        def read(start: int, length: int, frames=frames, gt_path=gt_path, hw=hw) -> dict[str, Any]:
            m = read_mat(gt_path, ["gt", "alpha"])
            noisy = []
            for p in frames[start:start + length]:
                x = read_mat(p, ["noisy"])["noisy"]
                _check_frame_shape(x.shape, p, "noisy", hw, 3)
                noisy.append(_check_unit(x, p, "noisy"))
            return {**_burst(m["gt"] / _scalar(m["alpha"], gt_path, "alpha"), np.stack(noisy)),
                    "layout": "graybackground"}

        items.append(Item(ItemInfo(f"graybackground/set{s}", len(frames), hw), read))
    return items


def _color_item(folder: pathlib.Path, frame_shape, alpha_mode: str) -> Item:
    cleans = sorted(folder.glob("clean*.mat"))
    if len(cleans) != 1:
        raise FileNotFoundError(f"{folder}: needs exactly one clean*.mat file (colorbackground layout), "
                                f"found {[c.name for c in cleans]}")
    frames = sorted(folder.glob("sequence*.mat"), key=lambda p: (_trailing_int(p), p.name))
    if not frames:
        raise FileNotFoundError(f"{folder}: no sequence*_<k>.mat frames (colorbackground layout)")
    clean_path = cleans[0]
    shapes = mat_shapes(clean_path)
    if "gt_label" not in shapes or "alpha" not in shapes:
        raise ValueError(f"{clean_path}: missing key(s); expected ['gt_label', 'alpha'] (colorbackground layout), "
                         f"found {sorted(shapes)}")
    hw = _check_frame_shape(shapes["gt_label"], clean_path, "gt_label", frame_shape, 3)

    def read(start: int, length: int) -> dict[str, Any]:
        m = read_mat(clean_path, ["gt_label", "alpha"])
        alpha = _scalar(m["alpha"], clean_path, "alpha")
        clean = m["gt_label"] * alpha / _DN if alpha_mode == "multiply" else m["gt_label"] / alpha / _DN
        noisy = []
        for p in frames[start:start + length]:
            x = read_mat(p, ["gt_label"])["gt_label"]
            _check_frame_shape(x.shape, p, "gt_label", hw, 3)
            if x.size and float(np.max(x)) <= 1.0:
                raise ValueError(f"{p}: key 'gt_label' has max {np.max(x):.4g}; expected 16-bit DN (it is divided "
                                 "by 2**16), the values look already normalised")
            noisy.append(x / _DN)
        return {**_burst(clean, np.stack(noisy)), "layout": "colorbackground"}

    return Item(ItemInfo(f"colorbackground/{folder.name}", len(frames), hw), read)


def load_fixed_pattern(path: str | pathlib.Path, frame_shape=FRAME_SHAPE) -> np.ndarray:
    """Reads ``mean_pattern`` ``[H, W, 4]`` from ``path`` and returns it / 2**16 as float32 (SPEC §7.3)."""
    path = pathlib.Path(path)
    m = read_mat(path, ["mean_pattern"])
    _check_frame_shape(m["mean_pattern"].shape, path, "mean_pattern", frame_shape, 3)
    fixed = (m["mean_pattern"] / _DN).astype(np.float32)
    fixed.setflags(write=False)
    return fixed


def _layout_dir(root: pathlib.Path, name: str) -> pathlib.Path | None:
    for cand in (root / f"{name}_mat", root / "paired_data" / f"{name}_mat"):
        if cand.is_dir():
            return cand
    return None


def load_starlight(data_dir: str | pathlib.Path, *, layouts=None, n_train_stills: int = 40,
                   frame_shape: tuple[int, int] | None = FRAME_SHAPE, fixed_pattern_path=None,
                   colorbackground_alpha: str = "multiply") -> BurstDataset:
    """Builds the Starlight dataset from ``data_dir`` (see the module docstring).

    Args:
      data_dir: folder holding ``stillpairs_mat/`` etc. (or ``paired_data/`` with them).
      layouts: which of :data:`LAYOUTS` to use; None = every one present (at least one must be).
      n_train_stills: the first n sorted stillpairs files are train, the rest test.
      frame_shape: required ``(H, W)`` of every frame; None accepts any size shared by all files.
      fixed_pattern_path: the ``mean_pattern`` file; None looks for ``fixed_pattern_noise.mat`` in
        ``data_dir`` and ``data_dir/data`` and leaves ``fixed_pattern`` None when absent.
      colorbackground_alpha: ``"multiply"`` (original) or ``"divide"``.

    Raises:
      FileNotFoundError: missing ``data_dir``, a requested layout, or partner files.
      ValueError: wrong keys, shapes, value ranges or options (the file is named).
    """
    root = pathlib.Path(data_dir)
    if not root.is_dir():
        raise FileNotFoundError(f"Starlight data_dir {root} does not exist")
    if colorbackground_alpha not in ("multiply", "divide"):
        raise ValueError(f"colorbackground_alpha must be 'multiply' or 'divide', got {colorbackground_alpha!r}")
    unknown = set(layouts or ()) - set(LAYOUTS)
    if unknown:
        raise ValueError(f"unknown layout(s) {sorted(unknown)}; expected some of {LAYOUTS}")
    dirs = {name: _layout_dir(root, name) for name in LAYOUTS}
    if layouts is None:
        layouts = [n for n in LAYOUTS if dirs[n] is not None]
        if not layouts:
            raise FileNotFoundError(f"{root} holds none of {[n + '_mat' for n in LAYOUTS]} (nor paired_data/ with them)")
    for n in layouts:
        if dirs[n] is None:
            raise FileNotFoundError(f"layout {n!r} requested but {root / (n + '_mat')} does not exist")
    train, test = [], []
    if "stillpairs" in layouts:
        files = sorted(dirs["stillpairs"].glob("*.mat"))
        if not files:
            raise FileNotFoundError(f"{dirs['stillpairs']} holds no .mat files")
        items = [_still_item(p, frame_shape) for p in files]
        train += items[:n_train_stills]
        test += items[n_train_stills:]
    if "graybackground" in layouts:
        train += _gray_items(dirs["graybackground"], frame_shape)
    if "colorbackground" in layouts:
        folders = sorted(p for p in dirs["colorbackground"].iterdir() if p.is_dir())
        if not folders:
            raise FileNotFoundError(f"{dirs['colorbackground']} holds no capture folders")
        items = [_color_item(f, frame_shape, colorbackground_alpha) for f in folders]
        if len(items) >= 3:
            test += [items[0], items[-1]]
            items = items[1:-1]
        train += items
    shapes = {it.info.frame_shape for it in train + test}
    if len(shapes) > 1:
        raise ValueError(f"Starlight files under {root} hold frames of different sizes {sorted(shapes)}; "
                         "expected one size")
    hw = next(iter(shapes))
    if fixed_pattern_path is None:
        fixed_pattern_path = next((p for p in (root / "fixed_pattern_noise.mat", root / "data" / "fixed_pattern_noise.mat")
                                   if p.is_file()), None)
    fixed = None if fixed_pattern_path is None else load_fixed_pattern(fixed_pattern_path, hw)
    return BurstDataset(
        name="starlight", train=BurstSource(train, 4), test=BurstSource(test, 4), channels=4,
        channel_names=CHANNEL_NAMES, frame_shape=hw, fixed_pattern=fixed,
        info={"split_rule": f"stillpairs sorted: first {n_train_stills} train, rest test; colorbackground sorted: "
                            "first and last test (if >= 3), rest train; graybackground: train",
              "layouts": list(layouts), "fixed_pattern_path": None if fixed_pattern_path is None else str(fixed_pattern_path),
              "colorbackground_alpha": colorbackground_alpha, "data_dir": str(root)})
