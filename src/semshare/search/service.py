"""The HTTP service: `semshare serve INDEX_DIR` (FastAPI + uvicorn, loopback by default).

  GET  /                    the results page (page.html)
  GET  /health              status, gallery side and size
  POST /search              {"text": "...", "k": 10} or {"item_id": 12, "k": 10}, or multipart with an image
                            (field `image`, and k / labels / label_match / label_boost as form fields)
  GET  /items/{id}          one gallery item's metadata
  GET  /items/{id}/image    its image file, when the dataset lists one (image_files.txt)

Requests never name files: image files come from the index's own metadata. Bodies over `max_body_bytes`
(an upload: `max_upload_bytes`, 10 MB) are refused with 413 before they are read whole; k is 1..1000 and text at most 1,000 characters (422 otherwise).
"""

from __future__ import annotations

import logging
from importlib import resources
from pathlib import Path

from typing import Literal

from fastapi import Request  # module level: the route's annotation is resolved in this module's names
from pydantic import BaseModel, Field, model_validator

from semshare.errors import SemshareError
from semshare.features.image_types import image_kind  # a listed file that is no image we serve is never sent
from semshare.search.gallery import MAX_K, LabelFacet, QueryRequest, item_record  # one k cap: CLI, API, HTTP
from semshare.training.finished_run import MAX_QUERY_CHARS

logger = logging.getLogger(__name__)

MAX_BODY_BYTES = 16 * 1024
MAX_UPLOAD_MB = 10
MAX_UPLOAD_BYTES = MAX_UPLOAD_MB * 1024 * 1024  # an uploaded query image (a multipart body)


API_DESCRIPTION = ("Label-wise cross-modal search over one index folder (`semshare serve INDEX`): a sentence finds "
                   "images (or texts) that share its labels, an image finds texts. docs/SEARCH.md has the schema.")


class SearchRequest(BaseModel):
    model_config = {"json_schema_extra": {"examples": [
        {"text": "two dogs playing in the snow", "k": 10},
        {"item_id": 12, "k": 5},
        {"text": "a cat on a sofa", "k": 10, "labels": ["cat"], "label_match": "all", "label_boost": True}]}}

    text: str | None = Field(None, max_length=MAX_QUERY_CHARS)
    item_id: int | None = Field(None, ge=0)
    k: int = Field(10, ge=1, le=MAX_K)
    labels: list[str] | None = Field(None, max_length=50, description="only hits carrying these labels")
    label_match: Literal["all", "any"] = Field("all", description="all of the labels, or any")
    label_boost: bool = Field(False, description="matching hits first, then the others (instead of only them)")

    def facet(self) -> LabelFacet | None:
        return LabelFacet(tuple(self.labels), self.label_match, self.label_boost) if self.labels else None

    def query(self) -> QueryRequest:
        """The request as the one query path takes it (search.gallery.Index.query_batch)."""
        return QueryRequest(text=self.text, item_id=self.item_id, k=self.k, facet=self.facet())

    @model_validator(mode="after")
    def one_query(self):
        if (self.text is None) == (self.item_id is None):
            raise ValueError("give exactly one of 'text' and 'item_id'")
        return self


class ItemOut(BaseModel):
    """A gallery item (search.gallery.item_record)."""

    id: int = Field(description="image row, or global text item id, of the gallery item")
    row: int = Field(description="the dataset row the item belongs to")
    labels: list[str]
    captions: list[str] = Field(description="the image's captions, or the text item itself")
    image_url: str | None = Field(description="where this server serves the item's image; null without one")


class HitOut(ItemOut):
    """One ranked result (search.gallery.SearchHit.as_dict): the item, its rank and cosine score."""

    rank: int = Field(description="1 = best")
    score: float = Field(description="cosine similarity to the query")
    captions_ranked: bool = Field(False, description="the captions come closest to the query first (the run's own "
                                                     "embedding of each caption); false: in the dataset's order")


class SearchUpload(BaseModel):
    """POST /search as multipart/form-data: a new image (the field `image`) and the same options."""

    image: bytes = Field(description=f"the query image: JPEG, PNG, GIF, BMP or WebP, at most {MAX_UPLOAD_MB} MB",
                         json_schema_extra={"format": "binary"})
    k: int = Field(10, ge=1, le=MAX_K)
    labels: str | None = Field(None, description="only hits carrying these labels, comma-separated")
    label_match: Literal["all", "any"] = "all"
    label_boost: bool = False


SEARCH_BODY = {"requestBody": {"required": True, "content": {
    "application/json": {"schema": {"$ref": "#/components/schemas/SearchRequest"}},
    "multipart/form-data": {"schema": {"$ref": "#/components/schemas/SearchUpload"}}}}}


async def search_query_of(http) -> QueryRequest:
    """The QueryRequest of a POST /search body: JSON (text or item_id), or multipart with an uploaded image.
    A field that does not validate is a 422 naming it, as FastAPI's own."""
    from fastapi.exceptions import RequestValidationError
    from pydantic import ValidationError

    try:
        if http.headers.get("content-type", "").startswith("multipart/form-data"):
            form = await http.form()
            upload = form.get("image")
            if upload is None or isinstance(upload, str):
                raise RequestValidationError([{"loc": ("body", "image"), "msg": "an image file is required",
                                               "type": "missing"}])
            fields = SearchUpload.model_validate({**{k: v for k, v in form.items() if k != "image"},
                                                  "image": b""})
            labels = tuple(name.strip() for name in (fields.labels or "").split(",") if name.strip())
            facet = LabelFacet(labels, fields.label_match, fields.label_boost) if labels else None
            return QueryRequest(image_file=await upload.read(), k=fields.k, facet=facet)
        return SearchRequest.model_validate(await http.json()).query()
    except ValidationError as exc:
        raise RequestValidationError(exc.errors()) from None
    except ValueError:  # a body that is not JSON at all
        raise RequestValidationError([{"loc": ("body",), "msg": "expected a JSON object or a multipart upload",
                                       "type": "json_invalid"}]) from None


def _document_search_bodies(app) -> None:
    """/openapi.json: POST /search takes a SearchRequest (JSON) or a SearchUpload (multipart); the handler
    reads its body itself, so the two schemas are added here."""
    generate = app.openapi

    def openapi():
        if app.openapi_schema:
            return app.openapi_schema
        schema = generate()
        components = schema.setdefault("components", {}).setdefault("schemas", {})
        for model in (SearchRequest, SearchUpload):
            components[model.__name__] = model.model_json_schema(ref_template="#/components/schemas/{model}")
        app.openapi_schema = schema
        return schema

    app.openapi = openapi


class QueryOut(BaseModel):
    text: str | None
    item_id: int | None
    k: int
    labels: list[str] | None = None
    label_match: str = "all"
    label_boost: bool = False


class LabelOut(BaseModel):
    label: str
    probability: float


class ReadingOut(BaseModel):
    """What the model read in the query (evaluation.reading.QueryReading)."""

    labels: list[LabelOut] = Field(description="the labels read, most probable first (at most 5, each >= 0.1)")
    best_probability: float
    unknown_words: list[str]
    weak: bool = Field(description="too little to go on: no content word known, or no label above the threshold")
    why: str


class SearchResponse(BaseModel):
    """The answer to POST /search, and what `semshare search --json` prints."""

    query: QueryOut
    gallery_side: str = Field(description="image or text: what the index holds")
    unknown_words: list[str] = Field(description="words of a text query outside the run's vocabulary (ignored)")
    reading: ReadingOut | None = Field(description="what the model read; null for a run without a label classifier")
    notes: list[str] = Field(default_factory=list, description="one line each about how the query was read (e.g. "
                             "an image file in a region layout the run never trained on)")
    results: list[HitOut]


class QueueFull(Exception):
    pass


class QueryBatcher:
    """Queries reach the model in small batches on one worker thread, off the event loop: the loop keeps
    accepting requests while a batch is encoded, and a full queue answers 503 at once instead of queueing
    without bound. One thread owns the model, so no lock is needed (torch modules are not re-entrant here)."""

    def __init__(self, live: "LiveIndex", max_batch: int = 64, max_pending: int = 1024):
        from concurrent.futures import ThreadPoolExecutor

        self.live, self.max_batch, self.max_pending = live, max_batch, max_pending
        self.executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="semshare-queries")
        self.loop = None

    async def submit(self, request: QueryRequest):
        import asyncio

        loop = asyncio.get_running_loop()
        if self.loop is not loop:  # first request, or a new event loop (test clients make one per call)
            self.loop, self.queue = loop, asyncio.Queue(maxsize=self.max_pending)
            self.worker = loop.create_task(self._work())
        future = loop.create_future()
        try:
            self.queue.put_nowait((request, future))
        except asyncio.QueueFull:
            raise QueueFull from None
        return await future

    async def _work(self) -> None:
        while True:
            batch = [await self.queue.get()]
            while len(batch) < self.max_batch and not self.queue.empty():
                batch.append(self.queue.get_nowait())
            try:
                answers = await self.loop.run_in_executor(self.executor, self.answer, [r for r, _ in batch])
            except Exception as exc:  # a bug must fail these requests (500), not stop the worker for all later ones
                for _, future in batch:
                    if not future.done():
                        future.set_exception(exc)
                continue
            for (_, future), answer in zip(batch, answers):
                if not future.done():
                    future.set_result(answer)

    def answer(self, requests: list[QueryRequest]) -> list:
        """Each request's Answer (or the SemshareError that refuses it), the whole batch at once, from the
        index's newest complete version (a live index checks before each batch)."""
        self.live.refresh()
        return self.live.current.query_batch(requests)


class LiveIndex:
    """The served index, following its folder: `index add` / `remove` write a new version beside it and put
    it in place by renames; `refresh` (before each batch of queries, on the one worker thread) opens it once
    it is whole, and `current` is the version every route answers from."""

    def __init__(self, index, on_change=None):
        self.current, self.on_change = index, on_change

    def refresh(self) -> bool:
        from semshare.search.gallery import reopened

        if not hasattr(self.current, "folder"):  # a searcher without a folder (tests' stand-ins) stays as it is
            return False
        fresh = reopened(self.current)
        if fresh is None:
            return False
        self.current = fresh
        logger.info("serving %s version %d: %d items", fresh.folder, fresh.manifest.generation, fresh.manifest.size)
        if self.on_change is not None:
            self.on_change(fresh)
        return True


class BodySizeLimit:
    """ASGI middleware: 413 for a body longer than the limit (`max_upload_bytes` for an uploaded image, a
    multipart body; `max_body_bytes` otherwise), by its Content-Length or as it streams in (chunked): the body
    is read here, up to the limit, and handed to the app whole."""

    def __init__(self, app, max_body_bytes: int, max_upload_bytes: int = 0):
        self.app = app
        self.body_bytes, self.upload_bytes = max_body_bytes, max_upload_bytes or max_body_bytes

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or scope.get("method") in ("GET", "HEAD"):
            return await self.app(scope, receive, send)
        headers = dict(scope.get("headers") or [])
        upload = headers.get(b"content-type", b"").startswith(b"multipart/form-data")
        self.max_body_bytes = self.upload_bytes if upload else self.body_bytes
        declared = headers.get(b"content-length")
        if declared is not None and (not declared.isdigit() or int(declared) > self.max_body_bytes):
            return await _send_413(send, self.max_body_bytes)
        parts, received = [], 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            parts.append(message.get("body", b""))
            received += len(parts[-1])
            if received > self.max_body_bytes:
                return await _send_413(send, self.max_body_bytes)
            if not message.get("more_body"):
                break
        whole = {"type": "http.request", "body": b"".join(parts), "more_body": False}
        delivered = False

        async def replay():
            nonlocal delivered
            if delivered:
                return await receive()  # after the body: the app waits for the disconnect
            delivered = True
            return whole

        await self.app(scope, replay, send)


async def _send_413(send, limit: int) -> None:
    body = f'{{"detail": "request body larger than {limit} bytes"}}'.encode()
    await send({"type": "http.response.start", "status": 413,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})


def without_paths(message: str) -> str:
    """A user error as the client may see it: absolute paths of this machine shown as their last part."""
    import re

    return re.sub(r"(?<![\w.])/(?:[^\s/:'\"]+/)*([^\s/:'\"]+)", r"\1", message)


async def _invalid_request(request, exc):
    """422 naming each invalid field; the default handler echoes the input back and fails (500) on bytes that
    are not UTF-8."""
    from fastapi.responses import JSONResponse

    errors = [{"loc": [str(part) for part in error.get("loc", ())], "msg": str(error.get("msg", "")),
               "type": str(error.get("type", ""))} for error in exc.errors()]
    return JSONResponse(status_code=422, content={"detail": errors})




def serving_root(dataset, image_root: str | Path | None) -> Path | None:
    """The folder images are served from: the person serving chooses it (`--image-root`, else the dataset
    folder); the dataset's own `image_root` (meta.json) may only narrow it, never widen it. None: no images
    (no dataset at hand and no --image-root)."""
    if dataset is None:
        return Path(image_root).resolve() if image_root else None
    chosen = Path(image_root).resolve() if image_root else Path(dataset.root).resolve()
    narrowed = dataset.image_root
    if narrowed.is_relative_to(chosen):
        return narrowed
    logger.warning("the dataset's image_root %s is outside %s: its images are not served (serve --image-root %s "
                   "to serve them)", narrowed, chosen, narrowed)
    return chosen


def gallery_root(searcher, image_root: str | Path | None) -> Path | None:
    """The folder an index's images are served from: a photo gallery's photos folder (or the one given), a
    dataset gallery's serving root (serving_root)."""
    if searcher.manifest.source == "images":
        return Path(image_root or searcher.data_dir).resolve()
    return serving_root(searcher.run.dataset, image_root)


def _find_named_images(searcher, root: Path) -> int:
    """Items the index holds no image file for get the one their captions.jsonl record names (`file_name`),
    looked up under the serving root, when it is there; -> how many items have an image file this server
    serves (inside the root: /health counts no thumbnail the page would draw broken)."""
    dataset = searcher.run.dataset
    if dataset is not None and root is not None and searcher.manifest.source == "dataset":
        names = dataset.caption_file_names if searcher.manifest.side == "image" else []
        for item in searcher.items if any(names) else ():
            name = names[item["row"]] if not item.get("image_file") else None
            path = (root / name).resolve() if name else None
            if path is not None and path.is_relative_to(root) and path.is_file():
                item["image_file"] = str(path)
    listed = [Path(item["image_file"]).resolve() for item in searcher.items if item.get("image_file")]
    served = sum(1 for path in listed if root is not None and path.is_relative_to(root))
    if listed and not served:  # one clear line at start, instead of a page of broken thumbnails
        logger.warning("none of the %d image files this index lists is inside the serving root %s: no thumbnail "
                       "will be served (serve --image-root FOLDER holding them)", len(listed), root)
    return served


def _add_item_routes(app, live: LiveIndex, root: Path) -> None:
    """GET /items/{id} and /items/{id}/image: image files only from inside `root`."""
    from fastapi import HTTPException
    from fastapi.responses import FileResponse

    @app.get("/items/{item_id}", response_model=ItemOut, summary="One gallery item",
             description="The item's record (the hit schema without rank and score); 404 for an id the gallery "
                         "does not hold.", responses={404: {"description": "no such gallery item"}})
    def item(item_id: int) -> dict:
        try:
            return item_record(live.current.item(item_id))
        except KeyError:
            raise HTTPException(status_code=404, detail=f"no gallery item {item_id}") from None

    @app.get("/items/{item_id}/image", summary="A gallery item's image file",
             description="The image file listed for the item (image_files.txt or captions.jsonl's file_name), "
                         "only from inside the serving root and only when its first bytes are an image.",
             responses={200: {"content": {"image/jpeg": {}, "image/png": {}}}, 404: {"description": "no image file"}})
    def item_image(item_id: int):
        try:
            listed = live.current.item(item_id).get("image_file")
        except KeyError:
            raise HTTPException(status_code=404, detail=f"no gallery item {item_id}") from None
        path = Path(listed).resolve() if listed else None
        # never a file outside the image root, whatever items.jsonl or image_files.txt say, and images only
        if path is None or root is None or not path.is_relative_to(root) or not path.is_file() or not image_kind(path):
            raise HTTPException(status_code=404, detail=f"gallery item {item_id} has no image file")
        return FileResponse(path, media_type=image_kind(path))


def create_app(searcher, max_body_bytes: int = MAX_BODY_BYTES, image_root: str | Path | None = None,
               max_pending: int = 1024, max_batch: int = 64, max_upload_bytes: int = MAX_UPLOAD_BYTES):
    """`searcher`: a search.gallery.Index. Image files are served only when listed for an item, inside the
    serving root (`image_root`, default the dataset folder; the dataset's own image root may narrow it) and
    recognised as images by their first bytes."""
    from fastapi import HTTPException
    from fastapi_offline import FastAPIOffline
    from fastapi.exceptions import RequestValidationError
    from fastapi.responses import HTMLResponse, JSONResponse

    # Swagger UI and ReDoc from the fastapi-offline package's own copies (a CDN is not reachable offline)
    app = FastAPIOffline(title="semshare search", version="1", description=API_DESCRIPTION)
    root = gallery_root(searcher, image_root)
    served = {"images": _find_named_images(searcher, root)}
    # an index folder: the routes answer from its newest complete version (`index add` / `remove`)
    live = LiveIndex(searcher, on_change=lambda fresh: served.update(images=_find_named_images(fresh, root)))
    page = resources.files("semshare.search").joinpath("page.html").read_text(encoding="utf-8")
    batcher = QueryBatcher(live, max_batch, max_pending)

    app.add_exception_handler(RequestValidationError, _invalid_request)

    @app.get("/", response_class=HTMLResponse, summary="The results page",
             description="A search page over this index; its URL holds the search (/?q=two+dogs&k=20, "
                         "/?item=12&view=grid).")
    def index_page() -> str:
        return page

    @app.get("/health", summary="Status and the gallery",
             description="The gallery's side, backend kind, size and dimension, whether free text is accepted "
                         "and how many items have an image file.")
    def health() -> dict:
        m = live.current.manifest
        return {"status": "ok", "side": m.side, "kind": m.kind, "size": m.size, "dim": m.dim,
                "accepts_text": live.current.accepts_text, "images": served["images"], "version": m.generation}

    @app.post("/search", response_model=SearchResponse, summary="Rank the gallery for one query",
              description="Exactly one of `text` (a sentence or tag words, tokenised with the run's vocabulary; "
                          "unknown words are dropped and listed) and `item_id` (an image row of the index's "
                          "dataset). `labels` keeps (or, with `label_boost`, puts first) the hits carrying all "
                          "(`label_match: any`: any) of them. Queries are batched through the model.",
              responses={413: {"description": "request body too large"}, 422: {"description": "a query the "
                         "run cannot read, or an invalid field"}, 503: {"description": "the queue is full"}},
              openapi_extra=SEARCH_BODY)
    async def search(http: Request):
        query = await search_query_of(http)
        try:
            answer = await batcher.submit(query)
        except QueueFull:
            raise HTTPException(status_code=503, detail=f"{max_pending} queries are waiting; try again shortly",
                                headers={"Retry-After": "1"}) from None
        if isinstance(answer, SemshareError):
            raise HTTPException(status_code=422, detail=without_paths(str(answer)))
        # plain JSON types already: a JSONResponse skips FastAPI's slower generic encoder (the response
        # model still documents the schema at /docs)
        return JSONResponse(answer.as_dict(query, live.current.manifest.side))

    _add_item_routes(app, live, root)
    app.add_middleware(BodySizeLimit, max_body_bytes=max_body_bytes, max_upload_bytes=max_upload_bytes)
    _document_search_bodies(app)
    return app


def request_deadline_protocol(seconds: float):
    """uvicorn's h11 protocol with a deadline per request: a connection that has not sent a whole request
    (head and body) within `seconds` of opening, or of its last response, is closed. uvicorn alone waits for
    partial headers forever, so a few hundred slow clients could hold every connection."""
    import h11
    from uvicorn.protocols.http.h11_impl import H11Protocol

    class RequestDeadlineProtocol(H11Protocol):
        _deadline = None

        def connection_made(self, transport) -> None:
            super().connection_made(transport)
            self._arm()

        def data_received(self, data: bytes) -> None:
            super().data_received(data)
            if self.conn.their_state is not h11.IDLE and self.conn.their_state is not h11.SEND_BODY:
                self._disarm()  # the whole request is in: answering it may take as long as it takes

        def on_response_complete(self) -> None:
            super().on_response_complete()
            self._arm()  # the next request on this connection gets its own deadline

        def connection_lost(self, exc) -> None:
            self._disarm()
            super().connection_lost(exc)

        def _arm(self) -> None:
            self._disarm()
            self._deadline = self.loop.call_later(seconds, self._too_slow)

        def _disarm(self) -> None:
            if self._deadline is not None:
                self._deadline.cancel()
                self._deadline = None

        def _too_slow(self) -> None:
            if not self.transport.is_closing():
                self.transport.close()

    return RequestDeadlineProtocol


def serve(searcher, host: str = "127.0.0.1", port: int = 8000, image_root: str | Path | None = None,
          max_pending: int = 1024, max_batch: int = 64, request_timeout: float = 10.0) -> None:
    """Run the service over `searcher` (a search.gallery.Index, opened by the caller) until interrupted."""
    import uvicorn

    app = create_app(searcher, image_root=image_root, max_pending=max_pending, max_batch=max_batch)
    # a backlog as deep as the queue: a burst of connections is accepted, then answered or refused with 503
    uvicorn.run(app, host=host, port=port, log_level="warning", backlog=max(2048, max_pending),
                http=request_deadline_protocol(request_timeout))
