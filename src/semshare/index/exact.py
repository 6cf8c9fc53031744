"""Exact search in torch: one matrix product and a stable top-k. The reference for every other backend."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from semshare.errors import SemshareError
from semshare.evaluation.metrics import top_k_indices
from semshare.fileio import read_tensors, safetensors_bytes
from semshare.index.base import BackendParameter, check_queries, pad_results
from semshare.registry import INDEX_BACKENDS

VECTORS_FILE = "vectors.safetensors"


@INDEX_BACKENDS.register("exact-torch")
class ExactTorchIndex:
    kind = "exact-torch"
    summary = "exact: one torch matrix product and a stable top-k (the reference every backend is tested against)"
    parameters = {"query_chunk": BackendParameter(1, 1 << 20, search_time=True, help="queries scored at a time")}

    def __init__(self, vectors: np.ndarray, query_chunk: int = 1024):
        import torch  # here, not at the top: the command line lists the backends without importing torch

        self.gallery = torch.from_numpy(np.ascontiguousarray(vectors, dtype=np.float32))
        self.query_chunk = query_chunk

    @classmethod
    def build(cls, vectors: np.ndarray, query_chunk: int = 1024) -> "ExactTorchIndex":
        return cls(vectors, query_chunk)

    @property
    def size(self) -> int:
        return int(self.gallery.shape[0])

    @property
    def dim(self) -> int:
        return int(self.gallery.shape[1])

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        import torch

        queries = check_queries(queries, self.dim, k)
        found = min(k, self.size)
        scores_out = np.empty((len(queries), found), dtype=np.float32)
        positions_out = np.empty((len(queries), found), dtype=np.int64)
        for start in range(0, len(queries), self.query_chunk):
            stop = start + self.query_chunk
            scores = (torch.from_numpy(queries[start:stop]) @ self.gallery.T).numpy()
            # torch.topk leaves the order of equal scores unspecified; the metrics' tie rule is stable
            positions = top_k_indices(scores, found)
            positions_out[start:stop] = positions
            scores_out[start:stop] = np.take_along_axis(scores, positions, axis=1)
        return pad_results(scores_out, positions_out, k)

    def vectors(self) -> np.ndarray:
        return self.gallery.numpy()

    def extended(self, vectors: np.ndarray, build_params: dict) -> "ExactTorchIndex":
        return type(self)(np.concatenate([self.vectors(), vectors]), self.query_chunk)

    def without(self, positions: np.ndarray, build_params: dict) -> "ExactTorchIndex":
        return type(self)(np.delete(self.vectors(), positions, axis=0), self.query_chunk)

    def save(self, folder: Path) -> None:
        (Path(folder) / VECTORS_FILE).write_bytes(safetensors_bytes({"vectors": self.gallery.contiguous()}))

    @classmethod
    def load(cls, folder: Path, query_chunk: int = 1024) -> "ExactTorchIndex":
        tensors = read_tensors(Path(folder) / VECTORS_FILE, "the gallery vectors")
        if "vectors" not in tensors:
            raise SemshareError(f"{Path(folder) / VECTORS_FILE}: tensors: expected 'vectors', found {sorted(tensors)}")
        return cls(tensors["vectors"].numpy(), query_chunk)
