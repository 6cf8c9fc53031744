"""FAISS backends over normalised vectors with the inner-product metric (= cosine).

faiss-flat   exact, FAISS's blocked BLAS kernels
faiss-hnsw   graph search; `ef_search` trades recall for speed (recall@10 against exact in docs/PERFORMANCE.md)
faiss-ivfpq  inverted lists + product quantisation for galleries too large for memory as float32;
             `nprobe` lists are visited per query. Needs at least max(nlist, 2**nbits) gallery vectors to train.
Search-time parameters are stored in the index folder's manifest and may be overridden when it is opened.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from semshare.errors import SemshareError
from semshare.index.base import BackendParameter, check_queries, pad_results
from semshare.registry import INDEX_BACKENDS

INDEX_FILE = "index.faiss"


# the graph's parameters, float or binary codes alike
HNSW_PARAMETERS = {"m": BackendParameter(2, 256, help="graph degree"),
                   "ef_construction": BackendParameter(1, 100_000, help="beam width while building"),
                   "ef_search": BackendParameter(1, 100_000, search_time=True, help="beam width per query")}


def read_faiss_file(path: Path, binary: bool = False):
    """A FAISS index file (float or binary), or one SemshareError naming it."""
    import faiss

    if not path.exists():
        raise SemshareError(f"{path}: missing; the index folder is incomplete (rebuild it with `semshare index build`)")
    try:
        return faiss.read_index_binary(str(path)) if binary else faiss.read_index(str(path))
    except RuntimeError as exc:  # faiss reports a truncated or foreign file as a RuntimeError
        kind = "a FAISS binary index file" if binary else "a FAISS index file"
        raise SemshareError(f"{path}: index: expected {kind}, found an unreadable one "
                            f"({str(exc).strip().splitlines()[-1][:100]}); rebuild it with `semshare index build`") from None


class _FaissIndex:
    kind = ""

    def __init__(self, index):
        self.index = index

    @property
    def size(self) -> int:
        return int(self.index.ntotal)

    @property
    def dim(self) -> int:
        return int(self.index.d)

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        queries = check_queries(queries, self.dim, k)
        scores, positions = self.index.search(queries, min(k, self.size))
        return pad_results(scores, positions, k)

    def vectors(self) -> np.ndarray:
        """(G, D) the stored vectors (IVF-PQ: its codes decoded, an approximation of the embeddings)."""
        import faiss

        if isinstance(self.index, faiss.IndexIVF):
            self.index.make_direct_map()
        return np.asarray(self.index.reconstruct_n(0, self.size), dtype=np.float32)

    def _copy(self):
        import faiss

        return faiss.deserialize_index(faiss.serialize_index(self.index))

    def _wrapped(self, index):
        """`index` in this backend's class, with its search-time parameters."""
        return type(self)(index)

    def extended(self, vectors: np.ndarray, build_params: dict):
        """The new vectors added as a build adds them (HNSW: linked into the graph; IVF-PQ: encoded with
        the trained quantiser and lists)."""
        index = self._copy()
        index.add(np.ascontiguousarray(vectors, dtype=np.float32))
        return self._wrapped(index)

    def without(self, positions: np.ndarray, build_params: dict):
        """Flat: removed in FAISS (the rest compacted, in order)."""
        import faiss

        index = self._copy()
        index.remove_ids(faiss.IDSelectorBatch(np.asarray(positions, dtype=np.int64)))
        return self._wrapped(index)

    def save(self, folder: Path) -> None:
        import faiss

        faiss.write_index(self.index, str(Path(folder) / INDEX_FILE))

    @staticmethod
    def _read(folder: Path):
        return read_faiss_file(Path(folder) / INDEX_FILE)


@INDEX_BACKENDS.register("faiss-flat")
class FaissFlatIndex(_FaissIndex):
    kind = "faiss-flat"
    summary = "exact inner product (FAISS's blocked BLAS kernels; the default)"
    parameters: dict = {}

    @classmethod
    def build(cls, vectors: np.ndarray) -> "FaissFlatIndex":
        import faiss

        index = faiss.IndexFlatIP(vectors.shape[1])
        index.add(vectors)
        return cls(index)

    @classmethod
    def load(cls, folder: Path) -> "FaissFlatIndex":
        return cls(cls._read(folder))


@INDEX_BACKENDS.register("faiss-hnsw")
class FaissHNSWIndex(_FaissIndex):
    kind = "faiss-hnsw"
    summary = "approximate: HNSW graph search, for large galleries"
    parameters = HNSW_PARAMETERS

    def __init__(self, index, ef_search: int):
        super().__init__(index)
        self.ef_search = ef_search
        index.hnsw.efSearch = ef_search

    @classmethod
    def build(cls, vectors: np.ndarray, m: int = 32, ef_construction: int = 80, ef_search: int = 128) -> "FaissHNSWIndex":
        import faiss

        index = faiss.IndexHNSWFlat(vectors.shape[1], m, faiss.METRIC_INNER_PRODUCT)
        index.hnsw.efConstruction = ef_construction
        index.add(vectors)
        return cls(index, ef_search)

    @classmethod
    def load(cls, folder: Path, ef_search: int = 128) -> "FaissHNSWIndex":
        return cls(cls._read(folder), ef_search)

    def _wrapped(self, index):
        return type(self)(index, self.ef_search)

    def without(self, positions: np.ndarray, build_params: dict) -> "FaissHNSWIndex":
        """FAISS cannot unlink a node from an HNSW graph: the graph is built again over the vectors kept
        (stored exactly), with the index's own build parameters."""
        kept = np.delete(self.vectors(), positions, axis=0)
        params = {k: v for k, v in build_params.items() if k in ("m", "ef_construction")}
        return type(self).build(kept, **params, ef_search=self.ef_search)

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        # HNSW returns at most ef_search neighbours: widen the beam when more are asked for
        self.index.hnsw.efSearch = max(self.ef_search, k)
        return super().search(queries, k)


@INDEX_BACKENDS.register("faiss-ivfpq")
class FaissIVFPQIndex(_FaissIndex):
    kind = "faiss-ivfpq"
    summary = "approximate: inverted lists + product quantisation, for galleries too large as float32"
    parameters = {"nlist": BackendParameter(0, 1 << 20, help="inverted lists (0: 4 sqrt(G), at most 4096)"),
                  "subquantizers": BackendParameter(0, 4096, help="PQ sub-vectors (0: one byte per 8 dimensions)"),
                  "nbits": BackendParameter(1, 16, help="bits per sub-vector code"),
                  "nprobe": BackendParameter(1, 1 << 20, search_time=True, help="lists visited per query"),
                  "seed": BackendParameter(0, 2**32 - 1, help="k-means seed")}

    def __init__(self, index, nprobe: int):
        super().__init__(index)
        index.nprobe = nprobe

    @classmethod
    def build(cls, vectors: np.ndarray, nlist: int = 0, subquantizers: int = 0, nbits: int = 8,
              nprobe: int = 16, seed: int = 0) -> "FaissIVFPQIndex":
        import faiss

        size, dim = vectors.shape
        nlist = nlist or max(1, min(4096, int(4 * np.sqrt(size))))
        # one byte per 8 dimensions by default; the count must divide the dimension
        subquantizers = subquantizers or max(s for s in range(1, max(1, dim // 8) + 1) if dim % s == 0)
        if dim % subquantizers:
            raise SemshareError(f"faiss-ivfpq: subquantizers ({subquantizers}) must divide the dimension ({dim})")
        needed = max(nlist, 2 ** nbits)
        if size < needed:
            raise SemshareError(f"faiss-ivfpq: {size} gallery vectors cannot train nlist={nlist} lists and "
                                f"2**{nbits} codes (needs >= {needed}); use faiss-flat or faiss-hnsw for a "
                                "gallery this small")
        quantizer = faiss.IndexFlatIP(dim)
        index = faiss.IndexIVFPQ(quantizer, dim, nlist, subquantizers, nbits, faiss.METRIC_INNER_PRODUCT)
        index.cp.seed = seed
        index.pq.cp.seed = seed
        index.train(vectors)
        index.add(vectors)
        return cls(index, nprobe)

    @classmethod
    def load(cls, folder: Path, nprobe: int = 16) -> "FaissIVFPQIndex":
        return cls(cls._read(folder), nprobe)

    def _wrapped(self, index):
        return type(self)(index, self.index.nprobe)

    def without(self, positions: np.ndarray, build_params: dict) -> "FaissIVFPQIndex":
        """The entries removed from their lists, and the ids of the rest renumbered to their new positions
        (codes untouched: each kept item is encoded as before)."""
        import faiss

        removed = np.unique(np.asarray(positions, dtype=np.int64))
        index = self._copy()
        index.set_direct_map_type(faiss.DirectMap.NoMap)
        index.remove_ids(faiss.IDSelectorBatch(removed))
        lists = index.invlists
        for number in range(index.nlist):
            size = lists.list_size(number)
            if size:
                ids = faiss.rev_swig_ptr(lists.get_ids(number), size).copy()
                codes = faiss.rev_swig_ptr(lists.get_codes(number), size * lists.code_size).copy()
                renumbered = np.ascontiguousarray(ids - np.searchsorted(removed, ids), dtype=np.int64)
                lists.update_entries(number, 0, size, faiss.swig_ptr(renumbered), faiss.swig_ptr(codes))
        return self._wrapped(index)
