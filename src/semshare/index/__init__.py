"""Nearest-neighbour search over a gallery of embeddings (docs/SEARCH.md).

`base` holds the contract (and what a backend declares: its parameters, which are search-time), `exact`
the torch reference every other backend is tested against, `faiss_backend` the FAISS options (flat, HNSW,
IVF-PQ). The index folder `index build` writes is search/gallery.py's. A new backend is one file that
registers itself (docs/MODEL.md); import it here.
"""

from semshare.index import binary, exact, faiss_backend  # noqa: F401  (registers the backends)
from semshare.index.base import SearchIndex, build_backend, normalize_rows

__all__ = ["SearchIndex", "build_backend", "normalize_rows"]
