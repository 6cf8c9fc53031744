"""Search subcommands: index build, search, serve."""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from semshare.cli.common import INDEX_KINDS, add_run_flags, add_threads, load_run_of, parse_params, set_threads
from semshare.errors import SemshareError
from semshare.names import SIDES


def add_index(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser("index", help="build a search index of a gallery with a trained run",
                            description="Search indexes over a trained run's embeddings (docs/SEARCH.md).")
    index_sub = parser.add_subparsers(dest="index_command", metavar="ACTION", required=True)
    build = index_sub.add_parser("build", help="embed a gallery and write an index folder",
                                 description="Embed the gallery items (images or texts) of DATA with the run's "
                                             "model and write an index folder: FAISS index (or torch vectors), "
                                             "item ids, metadata, manifest. Written atomically.")
    add_run_flags(build, "dataset folder the gallery comes from")
    build.add_argument("--side", choices=SIDES, help="which modality the gallery holds (required with a dataset)")
    build.add_argument("--images", type=Path, metavar="DIR",
                       help="a folder of new photos instead of the dataset: embedded through the run's extractor, "
                            "labelled by the run's reading of each (docs/SEARCH.md)")
    build.add_argument("--captions", type=Path, metavar="FILE",
                       help="with --images: JSON lines of {file_name, captions?, labels?} (given labels are kept)")
    build.add_argument("--out", type=Path, required=True, help="index folder to write")
    build.add_argument("--kind", default="faiss-flat", choices=INDEX_KINDS, metavar="KIND",
                       help="a registered index backend: %(choices)s (default faiss-flat; `semshare index kinds` "
                            "says what each is and takes)")
    build.add_argument("--param", dest="params", action="append", default=[], metavar="KEY=VALUE",
                       help="a parameter the backend declares, e.g. m=32, ef_search=64 (hnsw), nlist=1024, nprobe=16 "
                            "(ivfpq): `semshare index kinds` lists them")
    build.add_argument("--split", default="all", help="gallery rows: all (default) or a split name")
    build.add_argument("--overwrite", action="store_true")
    add_threads(build)
    build.set_defaults(handler=_run_index_build)
    kinds = index_sub.add_parser("kinds", help="list the registered index backends and their parameters",
                                 description="Every registered index backend (semshare.registry.INDEX_BACKENDS): "
                                             "what it is and the parameters --param takes (search-time ones may "
                                             "be given again to `search` and are stored in the manifest).")
    kinds.set_defaults(handler=_run_index_kinds)
    export = index_sub.add_parser("export", help="write an index's items and vectors as a Parquet table",
                                  description="One row per gallery item: id, row, side, labels, captions, image_file "
                                              "and its stored vector (docs/SEARCH.md), for pandas, polars and "
                                              "vector stores. Written atomically.")
    export.add_argument("index_dir", type=Path)
    export.add_argument("--out", type=Path, required=True, help="the .parquet file to write")
    export.add_argument("--data", type=Path, help="dataset folder, when it moved since the index was built")
    export.set_defaults(handler=_run_index_export)
    add = index_sub.add_parser("add", help="add photos or dataset rows to an index folder, in place",
                               description="Add items to an index: the photos of --images DIR not yet in it (a "
                                           "gallery built from photos; DIR inside its photo folder) or --rows of its "
                                           "dataset (a gallery built from a dataset). The new version replaces the "
                                           "old one atomically; a running `serve` answers from it from its next "
                                           "batch of queries (docs/SEARCH.md).")
    add.add_argument("index_dir", type=Path)
    what = add.add_mutually_exclusive_group(required=True)
    what.add_argument("--images", type=Path, metavar="DIR", help="photos to add (those already in the gallery are skipped)")
    what.add_argument("--rows", metavar="R1,R2|A-B", help="dataset rows to add (image side: those images; text side: their texts)")
    add.add_argument("--captions", type=Path, metavar="FILE", help="with --images: JSON lines of {file_name, captions?, labels?}")
    add.add_argument("--data", type=Path, help="dataset folder, when it moved since the index was built")
    add_threads(add)
    add.set_defaults(handler=_run_index_add)
    remove = index_sub.add_parser("remove", help="remove items from an index folder, in place",
                                  description="Remove the items --ids from an index (atomically, as `index add`).")
    remove.add_argument("index_dir", type=Path)
    remove.add_argument("--ids", required=True, metavar="I1,I2|A-B", help="item ids to remove (search prints them)")
    remove.add_argument("--data", type=Path, help="dataset folder, when it moved since the index was built")
    add_threads(remove)
    remove.set_defaults(handler=_run_index_remove)


def parse_id_list(text: str, flag: str) -> list[int]:
    """'3,5,9' or '10-19' (inclusive) or a mix -> ids; one line naming the flag otherwise."""
    import re

    ids: list[int] = []
    for part in (p.strip() for p in text.split(",")):
        span = re.fullmatch(r"(\d{1,12})-(\d{1,12})", part)
        if span and int(span[1]) <= int(span[2]) and int(span[2]) - int(span[1]) < 10_000_000:
            ids.extend(range(int(span[1]), int(span[2]) + 1))
        elif re.fullmatch(r"-?\d{1,18}", part):
            ids.append(int(part))
        else:
            raise SemshareError(f"{flag}: expected integers separated by commas, or ranges A-B, found {part!r}"[:200])
    return ids


def _run_index_add(args: argparse.Namespace) -> int:
    from semshare.search.grow import add_to_index

    if args.captions is not None and args.images is None:
        raise SemshareError("--captions goes with --images")
    set_threads(args)
    started = time.time()
    rows = parse_id_list(args.rows, "--rows") if args.rows is not None else None
    manifest, added = add_to_index(args.index_dir, images_dir=args.images, captions_file=args.captions, rows=rows,
                                   data_dir=args.data)
    if not added:
        print(f"nothing to add: every photo of {args.images} is in {args.index_dir} already")
        return 0
    print(f"added {added} items in {time.time() - started:.1f} s: {args.index_dir} holds {manifest.size} "
          f"(version {manifest.generation})")
    return 0


def _run_index_remove(args: argparse.Namespace) -> int:
    from semshare.search.grow import remove_from_index

    set_threads(args)
    ids = parse_id_list(args.ids, "--ids")
    manifest = remove_from_index(args.index_dir, ids, args.data)
    print(f"removed {len(set(ids))} items: {args.index_dir} holds {manifest.size} (version {manifest.generation})")
    return 0


def _run_index_export(args: argparse.Namespace) -> int:
    from semshare.search.export import export_index_parquet
    from semshare.search.gallery import load_index

    if args.out.is_dir() or not args.out.parent.is_dir():
        raise SemshareError(f"--out {args.out}: expected a file path in an existing folder")
    count = export_index_parquet(load_index(args.index_dir, args.data), args.out)
    print(f"exported {count} items -> {args.out}")
    return 0


def _run_index_kinds(args: argparse.Namespace) -> int:
    from semshare.index.base import describe_backends

    INDEX_KINDS.names()  # imports the backends' modules
    print("\n".join(describe_backends()))
    return 0


def _run_index_build(args: argparse.Namespace) -> int:
    from semshare.errors import OutputExistsError
    from semshare.search.gallery import build_gallery

    if args.out.exists() and not args.overwrite:  # before the run is loaded and the gallery embedded
        raise OutputExistsError(f"{args.out} already exists; pass --overwrite to replace it")
    set_threads(args)
    started = time.time()
    if args.images is not None:
        return _run_photo_index_build(args, started)
    if args.side is None or args.captions is not None:
        raise SemshareError("--side image|text is required for a dataset's gallery; --captions goes with --images")
    manifest = build_gallery(load_run_of(args), args.side, args.out, args.kind, parse_params(args.params), args.split,
                             args.overwrite)
    print(f"indexed {manifest.size} {args.side} items ({manifest.dim}-d, {manifest.kind}) in "
          f"{time.time() - started:.1f} s -> {args.out}")
    return 0


def _run_photo_index_build(args: argparse.Namespace, started: float) -> int:
    from semshare.search.photos import build_photo_gallery
    from semshare.training.experiment import load_run

    if args.side == "text":
        raise SemshareError("--images makes an image gallery; --side text goes with a dataset")
    run = load_run(args.run_dir, args.data, args.checkpoint, args.ranking)
    manifest = build_photo_gallery(run, args.images, args.out, args.captions, args.kind, parse_params(args.params),
                                   args.overwrite)
    note = (f"labels: the run's reading at >= {manifest.label_threshold} (chosen on its validation images)"
            if manifest.label_threshold >= 0 else "labels: only those given (the run reads none)")
    print(f"indexed {manifest.size} photos of {args.images} ({manifest.dim}-d, {manifest.kind}; {note}) in "
          f"{time.time() - started:.1f} s -> {args.out}")
    return 0


def add_search(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser("search", help="query an index folder with a sentence or a dataset image",
                            description="Rank the index's gallery for one query: --text (tokenised with the "
                                        "run's vocabulary), --image-id (a row of the dataset) or --image-file; "
                                        "or for every query of a file (--queries), one model load, JSON lines "
                                        "out.")
    parser.add_argument("index_dir", type=Path)
    query = parser.add_mutually_exclusive_group(required=True)
    query.add_argument("--text", help="a sentence or tag words")
    query.add_argument("--image-id", type=int, help="row of the index's dataset whose image is the query")
    query.add_argument("--image-file", type=Path, help="a new image, encoded as `semshare extract` made the data")
    query.add_argument("--queries", type=Path, metavar="FILE",
                       help="many queries: one text per line, or .jsonl lines of {text | item_id | image_file, k?, "
                            "labels?, label_match?, label_boost?} (- : standard input); one JSON answer per line")
    parser.add_argument("-k", type=int, default=10, help="results to show (default 10)")
    parser.add_argument("--param", dest="params", action="append", default=[], metavar="KEY=VALUE",
                        help="a search-time parameter the index's backend declares, e.g. ef_search (hnsw), nprobe "
                             "(ivfpq): `semshare index kinds` lists them")
    parser.add_argument("--data", type=Path, help="dataset folder, when it moved since the index was built")
    parser.add_argument("--labels", default=None, metavar="A,B",
                        help="only hits carrying all of these labels (comma-separated; --any: any of them)")
    parser.add_argument("--any", action="store_true", help="with --labels: hits carrying any of them")
    parser.add_argument("--boost", action="store_true", help="with --labels: matching hits first, then the others")
    parser.add_argument("--json", action="store_true", help="print the results as JSON")
    parser.add_argument("--out", type=Path, help="with --queries: write the JSON lines here (default: print them)")
    parser.add_argument("--batch-size", type=int, default=256, help="with --queries: queries per model batch")
    add_threads(parser)
    parser.set_defaults(handler=_run_search)


def _run_batch_search(args: argparse.Namespace) -> int:
    from semshare.fileio import atomic_file
    from semshare.search.batch import answer_queries, read_queries
    from semshare.search.gallery import load_index

    if args.batch_size < 1:
        raise SemshareError(f"--batch-size: expected an integer >= 1, found {args.batch_size}")
    if args.labels or args.any or args.boost:
        raise SemshareError("--labels / --any / --boost: with --queries, give labels per query in the .jsonl lines")
    requests = read_queries(args.queries, args.k)  # every line checked before the model is loaded
    set_threads(args)
    index = load_index(args.index_dir, args.data, parse_params(args.params))
    answers = answer_queries(index, requests, args.batch_size)
    if args.out is None:
        for record in answers:
            print(json.dumps(record), flush=False)
        return 0
    with atomic_file(args.out) as handle:
        for record in answers:
            handle.write(json.dumps(record) + "\n")
    print(f"answered {len(requests)} queries -> {args.out}")
    return 0


def _run_search(args: argparse.Namespace) -> int:
    from semshare.search.gallery import MAX_K, LabelFacet, QueryRequest, load_index

    if not 1 <= args.k <= MAX_K:
        raise SemshareError(f"-k must be between 1 and {MAX_K}; got {args.k}")
    if args.queries is not None:
        return _run_batch_search(args)
    if args.out is not None:
        raise SemshareError("--out: goes with --queries (a single query prints its answer)")
    if (args.any or args.boost) and not args.labels:
        raise SemshareError(f"{'--boost' if args.boost else '--any'}: goes with --labels A,B (the labels to match); "
                            "without them it would change nothing")
    searcher = load_index(args.index_dir, args.data, parse_params(args.params))
    facet = None
    if args.labels:
        facet = LabelFacet(tuple(name.strip() for name in args.labels.split(",") if name.strip()),
                           "any" if args.any else "all", args.boost)
    request = QueryRequest(text=args.text, item_id=args.image_id, image_file=args.image_file, k=args.k, facet=facet)
    answer = searcher.query(request)
    if args.json:  # the schema HTTP /search answers with (docs/SEARCH.md)
        print(json.dumps(answer.as_dict(request, searcher.manifest.side), indent=2))
        return 0
    if answer.unknown_words:
        print(f"unknown words (ignored): {', '.join(answer.unknown_words)}")
    if answer.reading is not None:
        print(answer.reading.line())
    for note in answer.notes:
        print(note)
    ranked = any(hit.caption_order is not None for hit in answer.hits)
    ranking = searcher.manifest.ranking
    meaning = ("label space + instance head" if ranking == "combined" else "label space alone" if ranking == "label"
               else f"{ranking[5:]}-bit codes of the label space")
    print(f"ranking: {ranking} ({meaning})"
          + ("; each hit's caption closest to the query" if ranked else ""))
    print(f"{'rank':>4}  {'score':>7}  {'id':>6}  labels | caption")
    for hit in answer.hits:
        caption = (hit.captions or [""])[0]
        print(f"{hit.rank:>4}  {hit.score:7.4f}  {hit.id:>6}  {', '.join(hit.item['labels'])} | {caption}")
    return 0


def add_serve(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser("serve", help="HTTP search service and results page over an index folder",
                            description="Serve POST /search, GET /items/{id}, GET /health and a results page at / "
                                        "(FastAPI + uvicorn). Loopback only unless --host says otherwise.")
    parser.add_argument("index_dir", type=Path)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--data", type=Path, help="dataset folder, when it moved since the index was built")
    parser.add_argument("--image-root", type=Path,
                        help="serve image files only from inside this folder (default: the dataset's image root)")
    parser.add_argument("--max-batch", type=int, default=64, help="queries encoded together (default 64)")
    parser.add_argument("--max-pending", type=int, default=1024,
                        help="queries that may wait; more get 503 at once (default 1024)")
    add_threads(parser)
    parser.set_defaults(handler=_run_serve)


def _check_port(host: str, port: int) -> None:
    import socket

    if not 1 <= port <= 65535:
        raise SemshareError(f"--port: expected an integer in 1..65535, found {port}")
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn binds: TIME_WAIT is no conflict
        try:
            probe.bind((host, port))
        except OSError as exc:
            raise SemshareError(f"--port {port}: expected a free port on {host}, found it unavailable "
                                f"({exc.strerror})") from None


def _run_serve(args: argparse.Namespace) -> int:
    from semshare.search.gallery import load_index
    from semshare.search.service import serve

    if not (args.max_batch >= 1 and args.max_pending >= 1):
        raise SemshareError(f"--max-batch and --max-pending: expected integers >= 1, found {args.max_batch} and "
                            f"{args.max_pending}")
    _check_port(args.host, args.port)  # before the index is loaded: a busy port fails in a second, in one line
    set_threads(args)
    index = load_index(args.index_dir, data_dir=args.data)
    shown_host = f"[{args.host}]" if ":" in args.host else args.host
    print(f"serving http://{shown_host}:{args.port}/ (API: http://{shown_host}:{args.port}/docs); Ctrl-C stops",
          flush=True)
    serve(index, args.host, args.port, args.image_root, args.max_pending, args.max_batch)
    return 0
