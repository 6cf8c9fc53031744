"""Run subcommands: train, evaluate, embed, evaluate-embeddings, fit-instance, export."""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from semshare.cli.common import (add_config_flags, add_protocol_flags, add_run_flags, add_threads, load_run_of,
                                 open_data, parse_overrides, print_table, protocol_from_args, set_threads)
from semshare.names import BEST, CHECKPOINTS, RANKINGS


def add_evaluate_embeddings(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser("evaluate-embeddings", help="score image and text embedding files on a dataset",
                            description="Score embeddings: .npz files with 'emb' (M, D) and 'ids' (M,) (image rows "
                                        "/ global text item ids), or .npy files with one row per dataset item.")
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--img-emb", type=Path, required=True)
    parser.add_argument("--txt-emb", type=Path, required=True)
    add_protocol_flags(parser)
    parser.set_defaults(handler=_run_evaluate_embeddings)


def _run_evaluate_embeddings(args: argparse.Namespace) -> int:
    from semshare.evaluation.protocols import evaluate_tables, load_embedding_table

    dataset = open_data(args.data, check_values=False)
    protocol, spec = protocol_from_args(args)
    num_text = dataset.num_items if protocol.text_source == "vectors" else int(dataset.caption_offsets[-1])
    img = load_embedding_table(args.img_emb, dataset.num_items, "image embeddings")
    txt = load_embedding_table(args.txt_emb, num_text, "text embeddings")
    table, _ = evaluate_tables(dataset, img, txt, protocol, spec)
    print_table(table, args.json)
    return 0


def add_train(sub: argparse._SubParsersAction) -> None:
    from semshare.config import recipe_names
    from semshare.registry import DEFAULT_METHOD, DEFAULT_RECIPE

    parser = sub.add_parser("train", help="train a method (Semantic Sharing, an ablation, a baseline) with the one loop",
                            description="Train on --data, select on its val split (carved from train when absent), "
                                        "write checkpoints, config and metrics to --out. Closed-form methods are "
                                        "fitted in one step into the same run folder. Runs under torchrun too.")
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--method", default=DEFAULT_RECIPE, metavar="NAME",
                        help=f"a recipe in configs/method/ ({', '.join(recipe_names())}) or a registered method "
                             f"with its defaults (e.g. {DEFAULT_METHOD})")
    add_config_flags(parser)
    parser.add_argument("--out", type=Path, required=True, help="run folder")
    parser.add_argument("--resume", action="store_true",
                        help="continue from RUN_DIR/last: config and data must be the run's own (checked first)")
    parser.add_argument("--allow-change", action="append", default=[], metavar="FIELD",
                        help="a config field that may differ on --resume, e.g. train.epochs (repeatable; none by default)")
    add_threads(parser)
    parser.set_defaults(handler=_run_train)


def _distributed_context():
    """torchrun sets RANK / WORLD_SIZE / LOCAL_RANK: read here, at the edge, and handed to the library."""
    import os

    from semshare.training.distributed import start_distributed

    return start_distributed(int(os.environ.get("RANK", "0")), int(os.environ.get("WORLD_SIZE", "1")),
                             int(os.environ.get("LOCAL_RANK", "0")))


def _run_train(args: argparse.Namespace) -> int:
    from semshare.training.distributed import stop_distributed
    from semshare.training.experiment import train_experiment
    from semshare.training.recipes import resolve_config

    cfg = resolve_config(args.method, args.preset, args.config, parse_overrides(args))
    set_threads(args)
    dataset = open_data(args.data)
    context = _distributed_context()
    started = time.time()
    try:
        state = train_experiment(dataset, cfg, args.out, resume=args.resume, context=context,
                                 allow_change=tuple(args.allow_change))
    finally:
        stop_distributed(context)
    if not context.is_main:
        return 0
    if cfg.method_class.closed_form:
        print(f"fitted {args.method} in closed form in {time.time() - started:.1f} s; run in {args.out}")
        return 0
    selection = (f"best val NDCG@500 (Ave) {100 * state.best_metric:.2f} at epoch {state.best_epoch}"
                 if state.best_epoch > 0 else "no epoch finished, so no validation yet (best = last)")
    print(f"trained {args.method} for {state.step} steps in {time.time() - started:.0f} s; {selection}; "
          f"run in {args.out}")
    return 0


def add_evaluate(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser("evaluate", help="score a trained run on a split (metric table, JSON too)",
                            description="Load RUN_DIR/best, embed the split's images and texts, print the table.")
    add_run_flags(parser)
    add_protocol_flags(parser)
    add_threads(parser)
    parser.set_defaults(handler=_run_evaluate)


def _run_evaluate(args: argparse.Namespace) -> int:
    from semshare.evaluation.evaluate import evaluate_run

    set_threads(args)
    run = load_run_of(args)
    protocol, spec = protocol_from_args(args)
    if run.ranking.startswith("hash:"):  # binary codes: Hamming ranking, ties scored exactly
        from semshare.training.hash_stage import evaluate_codes

        table = evaluate_codes(run, run.dataset.split(args.split))
        print(f"{run.ranking}: Hamming ranking on the {args.split} split (its rows are queries and gallery)")
        for key, value in table.items():
            print(f"{key:<14}  {100 * value:6.2f}")
        from semshare.fileio import atomic_write_json

        atomic_write_json(args.json or args.run_dir / f"eval_{args.split}_{run.ranking.replace(':', '')}.json", table)
        return 0
    table, _ = evaluate_run(run, protocol, spec)
    print_table(table, args.json or args.run_dir / f"eval_{args.split}.json")
    return 0


def add_embed(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser("embed", help="write a trained run's image and text embeddings of a split",
                            description="Write img_emb.npz and txt_emb.npz (arrays 'emb' and 'ids') for a split, or "
                                        "img_emb.parquet and txt_emb.parquet (--format parquet: ids, labels, captions, "
                                        "image files and the vectors, for pandas, polars and vector stores).")
    add_run_flags(parser)
    parser.add_argument("--split", default="test", help="a split of the dataset, or all (every row)")
    parser.add_argument("--format", default="npz", choices=("npz", "parquet"), dest="file_format",
                        help="npz (emb, ids) or parquet (docs/SEARCH.md)")
    parser.add_argument("--out", type=Path, default=None, help="folder (default RUN_DIR/embeddings/SPLIT)")
    parser.set_defaults(handler=_run_embed)


def _run_embed(args: argparse.Namespace) -> int:
    import numpy as np

    from semshare.fileio import atomic_file

    from semshare.search.gallery import gallery_rows

    run = load_run_of(args)
    rows = gallery_rows(run.dataset, args.split)
    img, txt = run.embed(rows)
    out = args.out or args.run_dir / "embeddings" / args.split
    out.mkdir(parents=True, exist_ok=True)
    if args.file_format == "parquet":
        from semshare.search.export import embedded_parquet

        embedded_parquet(run, rows, img, txt, out, args.split)
    for name, table in (("img_emb.npz", img), ("txt_emb.npz", txt)) if args.file_format == "npz" else ():
        with atomic_file(out / name, "wb") as handle:
            np.savez(handle, emb=table.emb.astype(np.float32), ids=table.ids)
    print(f"wrote {len(img.ids)} image and {len(txt.ids)} text embeddings ({img.emb.shape[1]}-d) to {out}")
    return 0


def _add_fitted_stage(sub: argparse._SubParsersAction, name: str, help: str, description: str, set_help: str,
                      overwrite_help: str, handler) -> None:
    """A stage fitted beside a finished run (fit-instance, fit-hash): RUN, --set of its config, --overwrite."""
    parser = sub.add_parser(name, help=help, description=description)
    add_run_flags(parser)
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE", help=set_help)
    parser.add_argument("--overwrite", action="store_true", help=overwrite_help)
    add_threads(parser)
    parser.set_defaults(handler=handler)


def add_fit_instance(sub: argparse._SubParsersAction) -> None:
    _add_fitted_stage(sub, "fit-instance", "fit an instance head beside a finished run (the right item first)",
                      "Train a linear head on the run's own inputs to put a query's own items first inside its label "
                      "set; the weight of its score is chosen on the validation split (label metrics within 0.5 "
                      "points). Written to RUN/instance/; evaluate, index build, search and serve then use it "
                      "(--ranking label: not).",
                      "an InstanceConfig field, e.g. --set temperature=0.1 (repeatable)",
                      "replace an instance head the run has", _run_fit_instance)


def _run_fit_instance(args: argparse.Namespace) -> int:
    from semshare.config import merge, parse_assignments
    from semshare.training.instance_head import InstanceConfig, fit_instance_head

    cfg = merge(InstanceConfig(), parse_assignments(args.overrides))
    set_threads(args)
    args.ranking = "label"  # the head is fitted beside the label space, never on top of an earlier head
    record = fit_instance_head(load_run_of(args), args.run_dir, cfg, overwrite=args.overwrite)
    chosen, base = record["validation"][str(record["weight"])], record["validation"]["0.0"]
    print(f"instance head in {args.run_dir / 'instance'}: w = {record['weight']}; validation Ave R@10 "
          f"{100 * base['ave/R@10']:.2f} -> {100 * chosen['ave/R@10']:.2f}, NDCG@500 {100 * base['ave/NDCG@500']:.2f} -> "
          f"{100 * chosen['ave/NDCG@500']:.2f}, mAP@all {100 * base['ave/mAP@all']:.2f} -> {100 * chosen['ave/mAP@all']:.2f}")
    return 0


def add_fit_hash(sub: argparse._SubParsersAction) -> None:
    _add_fitted_stage(sub, "fit-hash", "fit binary codes of a finished run's embeddings (cross-modal hashing)",
                      "Fit B-bit codes of the run's label-space embeddings on its training split, per code length: "
                      "ITQ (unsupervised, closed form) and a supervised hash layer (the DCMH label likelihood, "
                      "quantisation and bit balance), the better one on the validation split by Hamming mAP@all "
                      "(ties scored exactly). Written to RUN/hash/; the run's own numbers never change.",
                      "a HashConfig field, e.g. --set bits=[16,64] or --set kinds=[itq] (repeatable)",
                      "replace the codes the run has", _run_fit_hash)


def _run_fit_hash(args: argparse.Namespace) -> int:
    from semshare.config import merge, parse_assignments
    from semshare.training.hash_stage import HashConfig, fit_hash_stage

    overrides = parse_assignments(args.overrides)
    for key in ("bits", "kinds"):  # YAML lists arrive as lists; the config holds tuples
        if isinstance(overrides.get(key), list):
            overrides[key] = tuple(overrides[key])
    cfg = merge(HashConfig(), overrides)
    set_threads(args)
    args.ranking = "label"
    record = fit_hash_stage(load_run_of(args), args.run_dir, cfg, overwrite=args.overwrite)
    print(f"codes in {args.run_dir / 'hash'} (Ave Hamming mAP@all x100; chosen on validation, test reported):")
    print("| bits | " + " | ".join(f"val {k}" for k in cfg.kinds) + " | chosen | test |")
    print("|---|" + "---|" * (len(cfg.kinds) + 2))
    for bits in map(str, cfg.bits):
        cells = [f"{100 * record['validation'][bits][k]['ave/mAP@all']:.2f}" for k in cfg.kinds]
        test = record["test"].get(bits)
        print(f"| {bits} | " + " | ".join(cells) + f" | {record['chosen'][bits]} | "
              + (f"{100 * test['ave/mAP@all']:.2f}" if test else "-") + " |")
    return 0


def add_export(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser("export", help="package a finished run to share: weights, vocabulary, labels, extractor, "
                                           "instance head, a model card",
                            description="Write a versioned, self-contained package of RUN (a folder, or one .tar.gz "
                                        "with --tar) that semshare.load_run and every command taking RUN load with no "
                                        "dataset and no network; README.md inside is its model card.")
    parser.add_argument("run_dir", type=Path)
    parser.add_argument("out", type=Path, help="the package folder (or, with --tar, OUT.tar.gz)")
    parser.add_argument("--data", type=Path, help="dataset folder (default: the one the run was trained on): its label "
                                                  "names and extractor go into the package")
    parser.add_argument("--checkpoint", default=BEST, choices=CHECKPOINTS)
    parser.add_argument("--ranking", default="combined", choices=RANKINGS,
                        help="combined: with the run's instance head when it has one; label: without it")
    parser.add_argument("--tar", action="store_true", help="one .tar.gz instead of a folder")
    parser.add_argument("--overwrite", action="store_true")
    parser.set_defaults(handler=_run_export)


def _run_export(args: argparse.Namespace) -> int:
    from semshare.training.package import export_run

    written = export_run(load_run_of(args), args.out, tar=args.tar, overwrite=args.overwrite)
    print(f"exported {args.run_dir} -> {written}")
    return 0
