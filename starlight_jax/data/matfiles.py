"""MATLAB ``.mat`` access for v5 files (scipy) and v7.3 files (HDF5, h5py), with errors naming the file.

Arrays are returned in MATLAB's axis order for both versions: HDF5 stores MATLAB's column-major arrays
with the axes reversed, so v7.3 arrays are transposed back. Shapes are read from headers only, and a v7.3
array can be sliced along its first (MATLAB) axis without reading the rest.
"""

from __future__ import annotations

import pathlib

import numpy as np

__all__ = ["mat_shapes", "read_mat", "read_mat_frames", "is_v73"]


def is_v73(path) -> bool:
    """True for a MATLAB v7.3 (HDF5) file."""
    import h5py

    return h5py.is_hdf5(str(path))


def _unreadable(path, e: Exception) -> ValueError:
    return ValueError(f"{path}: unreadable .mat file ({type(e).__name__}: {e})")


def mat_shapes(path: str | pathlib.Path) -> dict[str, tuple[int, ...]]:
    """``{key: shape}`` of the arrays in ``path`` (MATLAB order), from the header only.

    Raises:
      FileNotFoundError: no such file. ValueError: not a readable ``.mat`` file.
    """
    path = pathlib.Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist")
    try:
        if is_v73(path):
            import h5py

            with h5py.File(path, "r") as f:
                return {k: tuple(reversed(v.shape)) for k, v in f.items() if hasattr(v, "shape")}
        import scipy.io

        return {n: tuple(s) for n, s, _ in scipy.io.whosmat(path)}
    except Exception as e:
        raise _unreadable(path, e) from e


def _check_keys(path, have, keys) -> None:
    missing = [k for k in keys if k not in have]
    if missing:
        raise ValueError(f"{path}: missing key(s) {missing}; expected {list(keys)}, found {sorted(have)}")


def read_mat(path: str | pathlib.Path, keys) -> dict[str, np.ndarray]:
    """Reads ``keys`` from ``path``.

    Raises:
      FileNotFoundError: no such file. ValueError: unreadable file or a missing key (both named).
    """
    path = pathlib.Path(path)
    keys = list(keys)
    _check_keys(path, mat_shapes(path), keys)
    try:
        if is_v73(path):
            import h5py

            with h5py.File(path, "r") as f:
                return {k: np.asarray(f[k][()]).T for k in keys}
        import scipy.io

        mat = scipy.io.loadmat(path, variable_names=keys)
        return {k: np.asarray(mat[k]) for k in keys}
    except Exception as e:
        raise _unreadable(path, e) from e


def read_mat_frames(path: str | pathlib.Path, key: str, start: int, stop: int) -> np.ndarray:
    """Reads ``key[start:stop]`` (first MATLAB axis); only those frames are read from a v7.3 file."""
    path = pathlib.Path(path)
    if not is_v73(path):
        return read_mat(path, [key])[key][start:stop]
    _check_keys(path, mat_shapes(path), [key])
    try:
        import h5py

        with h5py.File(path, "r") as f:
            return np.asarray(f[key][..., start:stop]).T
    except Exception as e:
        raise _unreadable(path, e) from e
