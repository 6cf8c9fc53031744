"""semshare: label-wise cross-modal retrieval with Semantic Sharing (Yang et al., IJCAI 2021).

The Python API (semshare.api): `load_run(RUN)` -> Run (`encode_texts`, `encode_images`,
`encode_image_files`), `build_index(run, side, OUT)` / `load_index(INDEX)` -> Index (`search_text`,
`search_image`, `search_image_file`, returning SearchHit; `query(QueryRequest)` -> Answer, the one query path). They are imported on first use, so `import semshare` stays light.
"""

__version__ = "0.1.0"

API = ("Answer", "Index", "LabelFacet", "QueryRequest", "Run", "RunCapabilities", "SearchHit", "build_index", "load_index",
       "load_run")
__all__ = [*API, "__version__"]


def __getattr__(name: str):
    if name in API:
        from semshare import api

        return getattr(api, name)
    raise AttributeError(f"module 'semshare' has no attribute {name!r}")


def __dir__() -> list[str]:  # the lazily imported API is listed too
    return sorted({*globals(), *API})
