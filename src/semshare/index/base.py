"""The search contract every backend keeps.

    backend = build_backend(kind, vectors, params)      # vectors (G, D) float32, L2-normalised rows
    scores, positions = backend.search(queries, k)      # (Q, k) float32, (Q, k) int64

Scores are inner products of normalised vectors (cosine). Row q lists gallery positions 0..G-1 by score,
highest first; when k > G (or an approximate backend finds fewer than k) the tail is padded with
position -1 and score -inf. Equal scores keep the lower position first in the exact backends.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np

from semshare.errors import SemshareError
from semshare.registry import INDEX_BACKENDS


class SearchIndex(Protocol):
    """A registered backend class (`@INDEX_BACKENDS.register(kind)`): `build(vectors, **params)` and
    `load(folder, **search_time_params)` make one; `parameters` declares what `--param` accepts."""

    kind: str
    summary: str  # one line for `semshare index kinds` and `index build --help`
    parameters: dict[str, BackendParameter]
    size: int
    dim: int

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]: ...

    def vectors(self) -> np.ndarray: ...  # (G, D) float32: the gallery as stored (decoded codes where lossy)

    # a gallery that grows (`semshare index add` / `remove`): a new backend, the one searched left untouched;
    # new vectors take positions size.., the others keep their order; `build_params` are the manifest's
    def extended(self, vectors: np.ndarray, build_params: dict) -> "SearchIndex": ...

    def without(self, positions: np.ndarray, build_params: dict) -> "SearchIndex": ...

    def save(self, folder: Path) -> None: ...


def normalize_rows(vectors: np.ndarray, eps: float = 1e-12) -> np.ndarray:
    vectors = np.asarray(vectors, dtype=np.float32)
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    return np.ascontiguousarray(vectors / np.maximum(norms, eps), dtype=np.float32)


def check_queries(queries: np.ndarray, dim: int, k: int) -> np.ndarray:
    queries = np.asarray(queries, dtype=np.float32)
    if queries.ndim == 1:
        queries = queries[None, :]
    if queries.ndim != 2 or queries.shape[1] != dim:
        raise SemshareError(f"query embeddings must be (Q, {dim}); got shape {tuple(queries.shape)}")
    if k < 1:
        raise SemshareError(f"k must be at least 1; got {k}")
    return np.ascontiguousarray(queries)


def pad_results(scores: np.ndarray, positions: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Widen (Q, k') results to (Q, k) with score -inf / position -1; FAISS's own padding is mapped too."""
    scores = np.asarray(scores, dtype=np.float32)
    positions = np.asarray(positions, dtype=np.int64)
    missing = positions < 0
    if missing.any():
        scores = np.where(missing, -np.inf, scores).astype(np.float32)
    if positions.shape[1] < k:
        extra = k - positions.shape[1]
        scores = np.concatenate([scores, np.full((len(scores), extra), -np.inf, dtype=np.float32)], axis=1)
        positions = np.concatenate([positions, np.full((len(positions), extra), -1, dtype=np.int64)], axis=1)
    return scores, positions


@dataclass(frozen=True)
class BackendParameter:
    """An integer parameter a backend declares (its `parameters` table): the range it must lie in, checked
    before FAISS sees it (a negative HNSW m grows memory without bound, a string is a FAISS traceback; 0 is
    "choose for me" where a default is 0), and whether it is a search-time knob (`search_time`: stored in
    the manifest and may be set again when the index is opened)."""

    low: int
    high: int
    search_time: bool = False
    help: str = ""


def search_time_parameters(kind: str) -> tuple[str, ...]:
    """The parameters of backend `kind` that may be set when an index is opened."""
    return tuple(name for name, p in INDEX_BACKENDS.get(kind).parameters.items() if p.search_time)


def describe_backends() -> list[str]:
    """One line per registered backend: its name, summary and parameters (`semshare index kinds`)."""
    lines = []
    for name in INDEX_BACKENDS.names():
        backend = INDEX_BACKENDS.get(name)
        params = ", ".join(f"{key} {p.low}..{p.high}{' (search time)' if p.search_time else ''}"
                           for key, p in backend.parameters.items())
        lines.append(f"{name}: {backend.summary}" + (f" [{params}]" if params else ""))
    return lines


def _check_params(kind: str, params: dict, search_time_only: bool) -> None:
    declared = INDEX_BACKENDS.get(kind).parameters
    accepted = [name for name, p in declared.items() if p.search_time or not search_time_only]
    unknown = sorted(set(params) - set(accepted))
    if unknown:
        raise SemshareError(f"index backend {kind!r}: unknown parameter(s) {', '.join(unknown)}; "
                            f"accepted: {', '.join(accepted) or 'none'}")
    for name, value in params.items():
        low, high = declared[name].low, declared[name].high
        if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
            raise SemshareError(f"index backend {kind!r}: --param {name}: expected an integer in {low}..{high}, "
                                f"found {value!r}")


def build_backend(kind: str, vectors: np.ndarray, params: dict | None = None) -> SearchIndex:
    """A backend of the registered `kind` over normalised `vectors`, with its own parameters."""
    backend = INDEX_BACKENDS.get(kind)
    _check_params(kind, params or {}, search_time_only=False)
    return backend.build(normalize_rows(vectors), **(params or {}))


def load_backend(kind: str, folder: Path, params: dict | None = None) -> SearchIndex:
    backend = INDEX_BACKENDS.get(kind)
    _check_params(kind, params or {}, search_time_only=True)
    return backend.load(Path(folder), **(params or {}))
