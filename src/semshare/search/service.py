"""The HTTP service: `semshare serve INDEX_DIR` (FastAPI + uvicorn, loopback by default).

  GET  /                    the results page (page.html)
  GET  /health              status, gallery side and size
  POST /search              {"text": "...", "k": 10} or {"item_id": 12, "k": 10}
  GET  /items/{id}          one gallery item's metadata
  GET  /items/{id}/image    its image file, when the dataset lists one (image_files.txt)

Requests never name files: image files come from the index's own metadata. Bodies over `max_body_bytes` are
refused with 413 before they are read whole; k is 1..1000 and text at most 1,000 characters (422 otherwise).
"""

from __future__ import annotations

import threading
from importlib import resources
from pathlib import Path

from pydantic import BaseModel, Field, model_validator

from semshare.errors import SemshareError
from semshare.search.gallery import MAX_QUERY_CHARS

MAX_K = 1000
MAX_BODY_BYTES = 16 * 1024


class SearchRequest(BaseModel):
    text: str | None = Field(None, max_length=MAX_QUERY_CHARS)
    item_id: int | None = Field(None, ge=0)
    k: int = Field(10, ge=1, le=MAX_K)

    @model_validator(mode="after")
    def one_query(self):
        if (self.text is None) == (self.item_id is None):
            raise ValueError("give exactly one of 'text' and 'item_id'")
        return self


class BodySizeLimit:
    """ASGI middleware: 413 for a body longer than the limit, by its Content-Length or as it streams in."""

    def __init__(self, app, max_body_bytes: int):
        self.app = app
        self.max_body_bytes = max_body_bytes

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        declared = dict(scope.get("headers") or []).get(b"content-length")
        if declared is not None and (not declared.isdigit() or int(declared) > self.max_body_bytes):
            return await _send_413(send, self.max_body_bytes)
        received = 0

        async def limited_receive():
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_body_bytes:
                    raise _BodyTooLarge
            return message

        try:
            await self.app(scope, limited_receive, send)
        except _BodyTooLarge:
            await _send_413(send, self.max_body_bytes)


class _BodyTooLarge(Exception):
    pass


async def _send_413(send, limit: int) -> None:
    body = f'{{"detail": "request body larger than {limit} bytes"}}'.encode()
    await send({"type": "http.response.start", "status": 413,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})


def without_paths(message: str) -> str:
    """A user error as the client may see it: absolute paths of this machine shown as their last part."""
    import re

    return re.sub(r"(?<![\w.])/(?:[^\s/:'\"]+/)*([^\s/:'\"]+)", r"\1", message)


def create_app(searcher, max_body_bytes: int = MAX_BODY_BYTES, image_root: str | Path | None = None):
    """`searcher`: a semshare.api.Index. Image files are served only when listed for an item and inside
    `image_root` (default: the dataset's image root, docs/DATA.md)."""
    from fastapi import FastAPI, HTTPException
    from fastapi.responses import FileResponse, HTMLResponse

    app = FastAPI(title="semshare search", version="1")
    page = resources.files("semshare.search").joinpath("page.html").read_text(encoding="utf-8")
    lock = threading.Lock()  # one query at a time through the model: torch modules are not re-entrant here

    def present(item: dict) -> dict:
        shown = {key: value for key, value in item.items() if key != "image_file"}
        shown["image_url"] = f"/items/{item['id']}/image" if item.get("image_file") else None
        return shown

    @app.get("/", response_class=HTMLResponse)
    def index_page() -> str:
        return page

    @app.get("/health")
    def health() -> dict:
        m = searcher.manifest
        return {"status": "ok", "side": m.side, "kind": m.kind, "size": m.size, "dim": m.dim,
                "accepts_text": searcher.accepts_text}

    @app.post("/search")
    def search(request: SearchRequest) -> dict:
        try:
            with lock:
                if request.text is not None:
                    query, unknown = searcher.encode_text(request.text)
                else:
                    query, unknown = searcher.encode_image_row(request.item_id), []
                hits = searcher.search(query, request.k)
        except SemshareError as exc:
            raise HTTPException(status_code=422, detail=without_paths(str(exc))) from None
        return {"query": {"text": request.text, "item_id": request.item_id, "k": request.k},
                "gallery_side": searcher.manifest.side, "unknown_words": unknown,
                "results": [{"rank": h.rank, "score": h.score, **present(h.item)} for h in hits]}

    @app.get("/items/{item_id}")
    def item(item_id: int) -> dict:
        try:
            return present(searcher.item(item_id))
        except KeyError:
            raise HTTPException(status_code=404, detail=f"no gallery item {item_id}") from None

    root = Path(image_root).resolve() if image_root else searcher.run.dataset.image_root

    @app.get("/items/{item_id}/image")
    def item_image(item_id: int):
        try:
            listed = searcher.item(item_id).get("image_file")
        except KeyError:
            raise HTTPException(status_code=404, detail=f"no gallery item {item_id}") from None
        path = Path(listed).resolve() if listed else None
        # never a file outside the image root, whatever items.jsonl or image_files.txt say
        if path is None or not path.is_relative_to(root) or not path.is_file():
            raise HTTPException(status_code=404, detail=f"gallery item {item_id} has no image file")
        return FileResponse(path)

    app.add_middleware(BodySizeLimit, max_body_bytes=max_body_bytes)
    return app


def serve(folder: str | Path, host: str = "127.0.0.1", port: int = 8000, data_dir: str | Path | None = None,
          image_root: str | Path | None = None) -> None:
    import uvicorn

    from semshare.api import load_index

    uvicorn.run(create_app(load_index(folder, data_dir=data_dir), image_root=image_root), host=host, port=port,
                log_level="info")
