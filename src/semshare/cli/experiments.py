"""Experiment subcommands: benchmark (Table 1), sweep (Figure 1), compare, plot, demo."""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from semshare.cli.common import add_config_flags, add_threads, parse_overrides, set_threads, thread_count
from semshare.errors import SemshareError
from semshare.names import SELECTION_METRIC


def add_benchmark(sub: argparse._SubParsersAction) -> None:
    from semshare.experiments.paper import PAPER_TABLE_RECIPES

    parser = sub.add_parser("benchmark", help="train and test every method on every dataset over seeds; Table 1",
                            description="Every method x dataset x seed on the same splits and metrics; writes "
                                        "results.json, table.md (the paper's Table 1 layout) and table.csv. "
                                        "Finished runs are skipped, so an interrupted benchmark resumes.")
    parser.add_argument("--data", type=Path, action="append", default=[], help="dataset folder (repeatable)")
    parser.add_argument("--methods", default="all", help=f"comma list or 'all' ({','.join(PAPER_TABLE_RECIPES)})")
    parser.add_argument("--seeds", type=int, default=3)
    add_config_flags(parser, "override for every run, e.g. train.epochs=5 or models.semantic_sharing.dim=64")
    parser.add_argument("--workers", type=int, default=1,
                        help="parallel runs (one thread each when > 1); with --executor ray: a local Ray's CPUs")
    parser.add_argument("--executor", default="local", choices=["local", "ray"],
                        help="local: this process or a process pool; ray: one Ray task per run (pip install "
                             "'semshare[ray]'; docs/SCALE.md)")
    parser.add_argument("--ray-address", default="", help="a running Ray cluster (e.g. auto, or ray://HOST:10001); "
                                                          "default: start a local Ray")
    add_threads(parser)
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
    parser.add_argument("--instance-head", action="store_true",
                        help="also fit each run's instance head (semshare fit-instance) and score its combined ranking "
                             "as a row of its own, METHOD+instance (the label-space row stays)")
    parser.add_argument("--quick", action="store_true",
                        help="CI check: tiny synthetic data, one seed, one short epoch per method")
    parser.add_argument("--reference", default="",
                        help="the method every other is compared with (paired test over queries and seeds; "
                             "default: the default recipe)")
    parser.set_defaults(handler=_run_benchmark)


def _run_benchmark(args: argparse.Namespace) -> int:
    from semshare.experiments.benchmark import QUICK_NOTE, BenchmarkPlan, Execution, quick_setup, run_benchmark
    from semshare.experiments.paper import PAPER_TABLE_RECIPES

    if args.seeds < 1:
        raise SemshareError(f"--seeds: expected an integer >= 1, found {args.seeds}")
    for flag, value, low in (("--workers", args.workers, 1), ("--threads", args.threads, 0)):
        if value < low:  # before any run: a bad value would fail every run into error.json
            raise SemshareError(f"{flag}: expected an integer >= {low}, found {value}")
    methods = list(PAPER_TABLE_RECIPES) if args.methods == "all" else args.methods.split(",")
    if args.reference and args.reference not in methods + [f"{m}+instance" for m in methods]:
        raise SemshareError(f"--reference {args.reference}: expected one of the benchmark's methods "
                            f"({', '.join(methods)})")
    data_dirs, seeds, config_files = [str(d) for d in args.data], args.seeds, [str(f) for f in args.config]
    if args.quick:
        data_dirs, seeds, config_files = quick_setup(args.out, data_dirs, config_files)
    if not data_dirs:
        raise SemshareError("give at least one --data folder (or --quick)")
    started = time.time()
    plan = BenchmarkPlan(tuple(data_dirs), tuple(methods), seeds, args.out, args.preset, parse_overrides(args),
                         args.linear_inputs, args.text_inputs, tuple(args.segments_dir or ()), tuple(config_files),
                         args.instance_head, args.reference, QUICK_NOTE if args.quick else "")
    run_benchmark(plan, Execution(args.workers, args.threads, args.executor, args.ray_address))
    print((args.out / "table.md").read_text())
    print(f"benchmark finished in {time.time() - started:.0f} s; results in {args.out}")
    return 0


def add_sweep(sub: argparse._SubParsersAction) -> None:
    from semshare.experiments.paper import FIGURE1_RECIPE

    parser = sub.add_parser("sweep", help="sweep one parameter (eta, lambda, or any config key): PNG + CSV",
                            description="Reproduce the paper's Figure 1 (NDCG vs consistency weight eta) or sweep "
                                        "lambda or any config key; every value x seed is a resumable run.")
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--method", default=FIGURE1_RECIPE, help="recipe to sweep (default: the paper's Figure 1)")
    parser.add_argument("--param", default="eta", help="eta, lambda, or a config key such as train.lr")
    parser.add_argument("--values", default="0,0.001,0.01,0.1,1,10")
    parser.add_argument("--seeds", type=int, default=3)
    add_config_flags(parser, "override for every run of the sweep (repeatable)")
    add_threads(parser)
    parser.add_argument("--out", type=Path, required=True)
    parser.set_defaults(handler=_run_sweep)


def _run_sweep(args: argparse.Namespace) -> int:
    from semshare.experiments.sweep import SweepPlan, run_sweep

    try:
        values = [float(v) for v in args.values.split(",")]
    except ValueError:
        raise SemshareError(f"--values expects comma-separated numbers, got {args.values!r}") from None
    args.out.mkdir(parents=True, exist_ok=True)
    plan = SweepPlan(str(args.data), args.method, args.param, tuple(values), args.seeds, args.out, args.preset,
                     parse_overrides(args), tuple(map(str, args.config)))
    per_value = run_sweep(plan, threads=thread_count(args))
    for value, tables in zip(values, per_value):
        mean = sum(t[SELECTION_METRIC] for t in tables) / len(tables)
        print(f"{args.param}={value:g}: NDCG@500 Ave {100 * mean:.1f} ({len(tables)} seeds)")
    print(f"wrote {args.out / 'sweep.png'} and {args.out / 'sweep.csv'}")
    return 0


def add_compare(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser("compare", help="paired comparison of two benchmark result folders on the same data",
                            description="For every (dataset, method) both folders hold: the Ave metric of A and of B, "
                                        "their difference (A minus B), a 95% paired-bootstrap CI and a sign-flip "
                                        "permutation p-value over the same test queries and seeds.")
    parser.add_argument("results_a", type=Path, metavar="RES_A")
    parser.add_argument("results_b", type=Path, metavar="RES_B")
    parser.add_argument("--metric", default="NDCG@500", choices=["NDCG@500", "mAP@all", "R@1", "R@5", "R@10"],
                        help="R@k: instance-level recall (a query's own item in the top k)")
    parser.add_argument("--resamples", type=int, default=10_000)
    parser.set_defaults(handler=_run_compare)


def _run_compare(args: argparse.Namespace) -> int:
    from semshare.experiments.compare import compare_result_folders

    if args.resamples < 100:
        raise SemshareError(f"--resamples: expected an integer >= 100, found {args.resamples}")
    print(compare_result_folders(args.results_a, args.results_b, args.metric, args.resamples))
    return 0


def add_plot(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser("plot", help="training curves of one or several runs to a PNG",
                            description="Train loss per step and a validation metric per epoch, from each "
                                        "RUN/metrics.jsonl, one line per run.")
    parser.add_argument("run_dirs", type=Path, nargs="+", metavar="RUN")
    parser.add_argument("--out", type=Path, default=Path("curves.png"), help="PNG to write (default curves.png)")
    parser.add_argument("--metric", default=SELECTION_METRIC, help="validation metric, e.g. ave/mAP@all")
    parser.add_argument("--labels", default=None, metavar="A,B,...",
                        help="legend labels, one per run, comma-separated (default: the shortest path ends that differ)")
    parser.set_defaults(handler=_run_plot)


def _run_plot(args: argparse.Namespace) -> int:
    from semshare.evaluation.plots import plot_runs

    labels = plot_runs(args.run_dirs, args.out, args.metric, args.labels.split(",") if args.labels else None)
    print(f"wrote {args.out} ({len(args.run_dirs)} runs, validation {args.metric}): {', '.join(labels)}")
    return 0


def add_demo(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser("demo", help="make synthetic data, train, print the results table",
                            description="The main job on built-in data: write the synthetic 'small' preset, "
                                        "fit what semshare has, and print the test table.")
    parser.add_argument("--out", type=Path, default=Path("runs/demo"), help="folder for the data and runs")
    parser.add_argument("--preset", default="small", choices=["tiny", "small"])
    parser.add_argument("--seed", type=int, default=0)
    add_threads(parser)
    parser.set_defaults(handler=_run_demo)


def _run_demo(args: argparse.Namespace) -> int:
    from semshare.experiments.demo import run_demo

    set_threads(args)
    print(run_demo(args.out, args.preset, args.seed, progress=lambda line: print(line, flush=True)))
    return 0


def add_figures(sub: argparse._SubParsersAction) -> None:
    from semshare.cli.common import add_run_flags

    parser = sub.add_parser("figures", help="the paper's Figures 3 and 4 (qualitative results) from a run",
                            description="Figure 3: image queries with their top-5 sentences, each marked by shared "
                                        "labels; Figure 4: sentence queries with their top-3 images, the query's own "
                                        "image marked. Test split; PNG + self-contained HTML each, with the query's "
                                        "reading and the hits' labels. Needs a dataset with image files.")
    add_run_flags(parser)
    parser.add_argument("--out", type=Path, required=True, help="folder for figure3/4 .png and .html")
    parser.add_argument("--count", type=int, default=4, help="queries drawn per figure (default 4)")
    parser.add_argument("--seed", type=int, default=0, help="which queries are drawn")
    parser.add_argument("--image-ids", default=None, metavar="ROW,ROW", help="Figure 3's query images instead")
    parser.add_argument("--text", dest="texts", action="append", default=None, metavar="SENTENCE",
                        help="a Figure 4 query sentence instead of drawn captions (repeatable)")
    add_threads(parser)
    parser.set_defaults(handler=_run_figures)


def _run_figures(args: argparse.Namespace) -> int:
    from semshare.experiments.figures import make_figures
    from semshare.training.experiment import load_run

    if not 1 <= args.count <= 20:
        raise SemshareError(f"--count: expected an integer in 1..20, found {args.count}")
    try:
        rows = [int(r) for r in args.image_ids.split(",")] if args.image_ids else None
    except ValueError:
        raise SemshareError(f"--image-ids: expected comma-separated dataset rows, found {args.image_ids!r}") from None
    set_threads(args)
    run = load_run(args.run_dir, args.data, args.checkpoint, args.ranking)
    written = make_figures(run, args.out, args.count, args.seed, rows, args.texts)
    print("wrote " + ", ".join(str(path) for path in written))
    return 0
