"""Read one variable of a MATLAB .mat file: v7.3 (HDF5, via h5py) or v4-v7 (scipy.io.loadmat)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from semshare.errors import DataFormatError


def _is_hdf5(path: Path) -> bool:
    with open(path, "rb") as handle:
        head = handle.read(1024)
    # v7.3 files are HDF5 with a 512-byte MATLAB text header before the HDF5 signature
    return b"\x89HDF\r\n\x1a\n" in head[:1024]


def _unreadable(path: Path, exc: Exception) -> DataFormatError:
    return DataFormatError(path, "file", "a MATLAB .mat file (v4-v7, or v7.3 HDF5)",
                           f"an unreadable one ({type(exc).__name__}: {str(exc)[:80]})")


def mat_keys(path: str | Path) -> list[str]:
    path = Path(path)
    if not path.exists():
        raise DataFormatError(path, "file", "a .mat file", "no such file")
    try:
        return _mat_keys(path)
    except (ValueError, OSError, TypeError, KeyError, IndexError, EOFError) as exc:  # scipy / h5py on foreign bytes
        raise _unreadable(path, exc) from None


def _mat_keys(path: Path) -> list[str]:
    if _is_hdf5(path):
        import h5py

        with h5py.File(path, "r") as handle:
            return sorted(k for k in handle.keys() if not k.startswith("#"))
    from scipy.io import whosmat

    return sorted(name for name, _, _ in whosmat(str(path)))


def read_mat_variable(path: str | Path, key: str | None = None) -> np.ndarray:
    """The array named `key` (or the file's only variable when key is None), in MATLAB's row/column order."""
    path = Path(path)
    keys = mat_keys(path)
    if key is None:
        if len(keys) != 1:
            raise DataFormatError(path, "variables", "exactly one variable (or name it)", f"{keys}")
        key = keys[0]
    if key not in keys:
        raise DataFormatError(path, f"variable {key!r}", f"a variable named {key}", f"variables {keys}")
    if _is_hdf5(path):
        import h5py

        with h5py.File(path, "r") as handle:
            # HDF5 stores MATLAB's column-major arrays with the axes reversed
            return np.asarray(handle[key][()]).T
    from scipy.io import loadmat

    try:
        return np.asarray(loadmat(str(path), variable_names=[key])[key])
    except (ValueError, OSError, TypeError, KeyError, IndexError, EOFError) as exc:
        raise _unreadable(path, exc) from None
