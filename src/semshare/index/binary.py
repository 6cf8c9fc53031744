"""Binary-code backends (issue 35): FAISS's Hamming indexes over the signs of the vectors they are given.

A run ranking by its codes (`--ranking hash:BITS`, `semshare fit-hash`) hands its B-dimensional hash
projections to the index; these backends keep one bit per dimension (1 where the value > 0, B / 8 bytes an
item) and rank by Hamming distance d. The contract's score is the cosine of the +-1 codes, 1 - 2 d / B, so
every caller (search, serve, export) works unchanged.

faiss-binary-flat   exact Hamming (IndexBinaryFlat)
faiss-binary-hnsw   approximate: an HNSW graph over the codes (IndexBinaryHNSW); `ef_search` per query
B must be a multiple of 8. Equal distances come back in FAISS's order (exact Hamming metrics score ties by
their expectation instead: evaluation/hamming.py).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from semshare.errors import SemshareError
from semshare.index.base import BackendParameter, check_queries, pad_results
from semshare.index.faiss_backend import HNSW_PARAMETERS, read_faiss_file
from semshare.registry import INDEX_BACKENDS

BINARY_FILE = "index_binary.faiss"


def _codes(vectors: np.ndarray) -> np.ndarray:
    bits = vectors.shape[1]
    if bits % 8:
        raise SemshareError(f"binary index: expected codes of a multiple of 8 bits, found {bits} (fit-hash with "
                            "--set bits=[16,32,64,128])")
    return np.packbits(np.asarray(vectors) > 0, axis=1)


class _BinaryIndex:
    kind = ""

    def __init__(self, index, bits: int):
        self.index, self.bits = index, bits

    @property
    def size(self) -> int:
        return int(self.index.ntotal)

    @property
    def dim(self) -> int:
        return self.bits

    @property
    def bytes_per_item(self) -> int:
        return self.bits // 8

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        queries = check_queries(queries, self.dim, k)
        distances, positions = self.index.search(_codes(queries), min(k, self.size))
        return pad_results(1.0 - 2.0 * distances.astype(np.float32) / self.bits, positions, k)

    def vectors(self) -> np.ndarray:
        """(G, B): each code as its +-1 / sqrt(B) vector (unit rows)."""
        codes = self.index.reconstruct_n(0, self.size) if self.size else np.zeros((0, self.bits // 8), np.uint8)
        bits = np.unpackbits(np.asarray(codes, dtype=np.uint8), axis=1)[:, : self.bits]
        return ((2.0 * bits - 1.0) / np.sqrt(self.bits)).astype(np.float32)

    def save(self, folder: Path) -> None:
        import faiss

        faiss.write_index_binary(self.index, str(Path(folder) / BINARY_FILE))

    @staticmethod
    def _read(folder: Path):
        return read_faiss_file(Path(folder) / BINARY_FILE, binary=True)


@INDEX_BACKENDS.register("faiss-binary-flat")
class FaissBinaryFlatIndex(_BinaryIndex):
    kind = "faiss-binary-flat"
    summary = "exact Hamming over binary codes (--ranking hash:BITS; B / 8 bytes an item)"
    parameters: dict = {}

    @classmethod
    def build(cls, vectors: np.ndarray) -> "FaissBinaryFlatIndex":
        import faiss

        codes = _codes(vectors)  # first: a length FAISS cannot take is one line, not its assertion
        index = faiss.IndexBinaryFlat(vectors.shape[1])
        index.add(codes)
        return cls(index, vectors.shape[1])

    @classmethod
    def load(cls, folder: Path) -> "FaissBinaryFlatIndex":
        index = cls._read(folder)
        return cls(index, int(index.d))


@INDEX_BACKENDS.register("faiss-binary-hnsw")
class FaissBinaryHNSWIndex(_BinaryIndex):
    kind = "faiss-binary-hnsw"
    summary = "approximate: an HNSW graph over binary codes (--ranking hash:BITS)"
    parameters = HNSW_PARAMETERS

    def __init__(self, index, bits: int, ef_search: int = 128):
        super().__init__(index, bits)
        self.ef_search = ef_search
        index.hnsw.efSearch = ef_search

    @classmethod
    def build(cls, vectors: np.ndarray, m: int = 32, ef_construction: int = 80, ef_search: int = 128) -> "FaissBinaryHNSWIndex":
        import faiss

        codes = _codes(vectors)
        index = faiss.IndexBinaryHNSW(vectors.shape[1], m)
        index.hnsw.efConstruction = ef_construction
        index.add(codes)
        return cls(index, vectors.shape[1], ef_search)

    @classmethod
    def load(cls, folder: Path, ef_search: int = 128) -> "FaissBinaryHNSWIndex":
        index = cls._read(folder)
        return cls(index, int(index.d), ef_search)

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        self.index.hnsw.efSearch = max(self.ef_search, k)
        return super().search(queries, k)


@INDEX_BACKENDS.register("faiss-binary-ivf")
class FaissBinaryIVFIndex(_BinaryIndex):
    kind = "faiss-binary-ivf"
    summary = "approximate: inverted lists over binary codes (--ranking hash:BITS), for tens of millions of items"
    parameters = {"nlist": BackendParameter(0, 1 << 20, help="inverted lists (0: 4 sqrt(G), at most 65536)"),
                  "nprobe": BackendParameter(1, 1 << 20, search_time=True, help="lists visited per query"),
                  "seed": BackendParameter(0, 2**32 - 1, help="k-means seed")}

    def __init__(self, index, bits: int, nprobe: int = 32):
        super().__init__(index, bits)
        index.nprobe = nprobe

    @classmethod
    def build(cls, vectors: np.ndarray, nlist: int = 0, nprobe: int = 32, seed: int = 0) -> "FaissBinaryIVFIndex":
        import faiss

        codes = _codes(vectors)
        size, bits = len(codes), vectors.shape[1]
        nlist = nlist or max(1, min(65536, int(4 * np.sqrt(size))))
        if size < nlist:
            raise SemshareError(f"faiss-binary-ivf: {size} codes cannot train nlist={nlist} lists; use "
                                "faiss-binary-flat for a gallery this small")
        index = faiss.IndexBinaryIVF(faiss.IndexBinaryFlat(bits), bits, nlist)
        index.cp.seed = seed
        # k-means on a sample of at most 256 codes a list (FAISS's own ceiling), drawn with the seed
        sample = codes if size <= 256 * nlist else codes[np.random.default_rng(seed).choice(size, 256 * nlist, replace=False)]
        index.train(sample)
        index.add(codes)
        return cls(index, bits, nprobe)

    @classmethod
    def load(cls, folder: Path, nprobe: int = 32) -> "FaissBinaryIVFIndex":
        index = cls._read(folder)
        return cls(index, int(index.d), nprobe)

    def vectors(self) -> np.ndarray:
        self.index.make_direct_map()
        return super().vectors()

    def _wrapped(self, index):
        return type(self)(index, self.bits, self.index.nprobe)
