"""The Python API: load a finished run and embed texts and images with it; load an index and search it.

    import semshare

    run = semshare.load_run("runs/demo/ours-seed0")           # the run folder; nothing is unpickled
    texts = run.encode_texts(["two dogs in the snow"])        # (1, D) float32, unit rows
    images = run.encode_images(rows=[0, 1, 2])                # (3, D), rows of the run's dataset
    index = semshare.load_index("runs/demo/index")            # made by `semshare index build`
    for hit in index.search_text("two dogs in the snow", k=5):
        print(hit.rank, hit.score, hit.id, hit.labels)

Every embedding is L2-normalised, so a dot product is the cosine the indexes rank by. The CLI's `search`
and `serve` call these same functions.
"""

from __future__ import annotations

from semshare.search.gallery import Index, SearchHit, load_index
from semshare.search.run import Run, load_run

__all__ = ["Run", "Index", "SearchHit", "load_run", "load_index"]
