"""A new index backend, in one file: NumPy brute force over the normalised vectors, saved as .npy.

Registering it is all it takes: `index build --kind numpy-flat`, `--param block=...`, `index kinds`, `search`,
`serve` and the Python API take it (tests/test_extension_points.py)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from semshare.index.base import BackendParameter, check_queries, pad_results
from semshare.registry import INDEX_BACKENDS

VECTORS_FILE = "vectors.npy"


@INDEX_BACKENDS.register("numpy-flat")
class NumpyFlatIndex:
    kind = "numpy-flat"
    summary = "exact: NumPy brute force (a worked example of a backend)"
    parameters = {"block": BackendParameter(1, 1 << 16, search_time=True, help="queries scored at a time")}

    def __init__(self, vectors: np.ndarray, block: int = 256):
        self.gallery, self.block = np.ascontiguousarray(vectors, dtype=np.float32), block

    @classmethod
    def build(cls, vectors: np.ndarray, block: int = 256) -> "NumpyFlatIndex":
        return cls(vectors, block)

    @classmethod
    def load(cls, folder: Path, block: int = 256) -> "NumpyFlatIndex":
        return cls(np.load(Path(folder) / VECTORS_FILE, allow_pickle=False), block)

    @property
    def size(self) -> int:
        return len(self.gallery)

    @property
    def dim(self) -> int:
        return self.gallery.shape[1]

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        queries = check_queries(queries, self.dim, k)
        found = min(k, self.size)
        scores_out, positions_out = [], []
        for start in range(0, len(queries), self.block):
            scores = queries[start : start + self.block] @ self.gallery.T
            positions = np.argsort(-scores, axis=1, kind="stable")[:, :found]  # equal scores: lower position first
            positions_out.append(positions)
            scores_out.append(np.take_along_axis(scores, positions, axis=1))
        return pad_results(np.concatenate(scores_out), np.concatenate(positions_out), k)

    def vectors(self) -> np.ndarray:
        return self.gallery

    def save(self, folder: Path) -> None:
        np.save(Path(folder) / VECTORS_FILE, self.gallery, allow_pickle=False)
