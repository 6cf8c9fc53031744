"""The Python API: load a finished run and embed texts and images with it; load an index and search it.

    import semshare

    run = semshare.load_run("runs/demo/ours-seed0")           # the run folder; nothing is unpickled
    texts = run.encode_texts(["two dogs in the snow"])        # (1, D) float32, unit rows
    images = run.encode_images(rows=[0, 1, 2])                # (3, D), rows of the run's dataset
    index = semshare.build_index(run, "image", "runs/demo/index")  # or `semshare index build`
    index = semshare.load_index("runs/demo/index")            # an index folder made before
    for hit in index.search_text("two dogs in the snow", k=5):
        print(hit.rank, hit.score, hit.id, hit.labels)
    answer = index.query(semshare.QueryRequest(text="two dogs", k=5))  # hits, unknown words, reading

Every embedding is L2-normalised, so a dot product is the cosine the indexes rank by. The CLI's `search`
and `serve` call these same functions.
"""

from __future__ import annotations

from pathlib import Path

from semshare.search.gallery import Answer, Index, LabelFacet, QueryRequest, SearchHit, build_gallery, load_index
from semshare.training.experiment import load_run
from semshare.training.finished_run import Run, RunCapabilities

__all__ = ["Run", "RunCapabilities", "Index", "QueryRequest", "Answer", "LabelFacet", "SearchHit", "load_run",
           "load_index", "build_index"]


def build_index(run: Run | str | Path, side: str, out_dir: str | Path, kind: str = "faiss-flat",
                params: dict | None = None, split: str = "all", overwrite: bool = False) -> Index:
    """Embed a run's gallery (`side`: image or text items of `split`) into an index folder, as `semshare index
    build` does, and open it. `run`: a Run, or a run folder."""
    run = run if isinstance(run, Run) else load_run(run)
    build_gallery(run, side, out_dir, kind, params, split, overwrite)
    return load_index(out_dir)
