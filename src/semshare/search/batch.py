"""Many queries with one model load (`semshare search INDEX --queries FILE`): a file of queries in, one JSON
answer per query out, in order, through the one query path (Index.query_batch).

The file is either plain text, one query text per non-empty line, or JSON lines (`.jsonl`), one object per
line with exactly one of "text", "item_id" (an image row of the index's dataset) and "image_file" (a path,
relative to the queries file's folder), and optionally "k", "labels", "label_match" ("all" | "any") and
"label_boost". A query the run cannot answer (no known word, an image id outside the dataset, an unknown
label) gets an answer line {"query": ..., "error": "..."} and does not stop the others; a line that is not a
query at all stops the batch before any is answered, with its file and line number.
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterator

from semshare.errors import DataFormatError, SemshareError
from semshare.fileio import json_line
from semshare.search.gallery import Index, LabelFacet, QueryRequest

MAX_K = 1000
FIELDS = {"text", "item_id", "image_file", "k", "labels", "label_match", "label_boost"}


def read_queries(path: str | Path, default_k: int = 10) -> list[QueryRequest]:
    """The queries of a file (plain text lines, or JSON lines when it ends in .jsonl); `-`: standard input."""
    import sys

    path = Path(path)
    try:
        text = sys.stdin.read() if str(path) == "-" else path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise DataFormatError(path, "file", "a file of queries", "no such file") from None
    except IsADirectoryError:
        raise DataFormatError(path, "file", "a file of queries", "a folder") from None
    except UnicodeDecodeError:
        raise DataFormatError(path, "text", "UTF-8 text", "other bytes") from None
    lines = [(number, line) for number, line in enumerate(text.splitlines(), start=1) if line.strip()]
    if not lines:
        raise DataFormatError(path, "queries", "at least one query", "an empty file")
    if path.suffix != ".jsonl":
        return [QueryRequest(text=line.strip(), k=default_k) for _, line in lines]
    return [_json_query(path, number, line, default_k) for number, line in lines]


def _json_query(path: Path, number: int, line: str, default_k: int) -> QueryRequest:
    where = f"line {number}"
    record = json_line(path, number, line)
    if not isinstance(record, dict) or not record.keys() & {"text", "item_id", "image_file"}:
        raise DataFormatError(path, where, 'an object with "text", "item_id" or "image_file"', line.strip()[:60])
    unknown = sorted(set(record) - FIELDS)
    if unknown:
        raise DataFormatError(path, f"{where} field {unknown[0]!r}", f"one of {', '.join(sorted(FIELDS))}", "an unknown field")
    k = record.get("k", default_k)
    if type(k) is not int or not 1 <= k <= MAX_K:
        raise DataFormatError(path, f"{where} k", f"an integer in 1..{MAX_K}", repr(k))
    item_id = record.get("item_id")
    if item_id is not None and (type(item_id) is not int or item_id < 0):
        raise DataFormatError(path, f"{where} item_id", "an image row (an integer >= 0)", repr(item_id))
    text = record.get("text")
    if text is not None and not isinstance(text, str):
        raise DataFormatError(path, f"{where} text", "a string", type(text).__name__)
    image_file = record.get("image_file")
    if image_file is not None:
        if not isinstance(image_file, str):
            raise DataFormatError(path, f"{where} image_file", "a path", type(image_file).__name__)
        image_file = path.parent / image_file
    facet = None
    if record.get("labels"):
        labels = record["labels"]
        if not isinstance(labels, list) or not all(isinstance(name, str) for name in labels):
            raise DataFormatError(path, f"{where} labels", "a list of label names", repr(labels)[:60])
        if record.get("label_match", "all") not in ("all", "any") or not isinstance(record.get("label_boost", False), bool):
            raise DataFormatError(path, f"{where} label_match / label_boost", '"all" or "any" / true or false',
                                  f"{record.get('label_match')!r} / {record.get('label_boost')!r}")
        facet = LabelFacet(tuple(labels), record.get("label_match", "all"), record.get("label_boost", False))
    try:
        return QueryRequest(text=text, item_id=item_id, image_file=image_file, k=k, facet=facet)
    except SemshareError as exc:  # two kinds of query on one line
        raise DataFormatError(path, where, "exactly one of text, item_id and image_file", str(exc)) from None


def answer_queries(index: Index, requests: list[QueryRequest], batch_size: int = 256) -> Iterator[dict]:
    """One answer record per request, in order (`Answer.as_dict`, or {"query", "error"}), `batch_size`
    requests through the model at a time."""
    for start in range(0, len(requests), batch_size):
        chunk = requests[start : start + batch_size]
        for request, answer in zip(chunk, index.query_batch(chunk)):
            if isinstance(answer, SemshareError):
                query = {"text": request.text, "item_id": request.item_id, "k": request.k,
                         "image_file": str(request.image_file) if request.image_file is not None else None}
                yield {"query": query, "error": " ".join(str(answer).split())}
            else:
                yield answer.as_dict(request, index.manifest.side)
