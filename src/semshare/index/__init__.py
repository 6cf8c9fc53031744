"""Nearest-neighbour search over a gallery of embeddings (docs/SEARCH.md).

`base` holds the contract, `exact` the torch reference every other backend is tested against,
`faiss_backend` the FAISS options (flat, HNSW, IVF-PQ), `store` the index folder written by `index build`.
"""

from semshare.index import exact, faiss_backend  # noqa: F401  (registers the backends)
from semshare.index.base import SearchIndex, build_backend, normalize_rows

__all__ = ["SearchIndex", "build_backend", "normalize_rows"]
