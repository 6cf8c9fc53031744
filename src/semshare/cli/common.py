"""Flags and helpers several subcommands share, declared once."""

from __future__ import annotations

import argparse
from pathlib import Path

from semshare.errors import SemshareError
from semshare.names import BEST, CHECKPOINTS, RANKINGS


class RegistryChoices:
    """The names a registry holds (semshare.registry), as argparse `choices`: read when a value is checked or
    a help text is drawn, so a command that never uses the registry never imports the modules that fill it
    (they import NumPy). A new entry registered in its own file is a valid choice with no edit here."""

    def __init__(self, registry: str, package: str):
        self.registry, self.package = registry, package

    def names(self) -> list[str]:
        import importlib

        import semshare.registry

        importlib.import_module(self.package)  # each module of the package registers its entries
        return getattr(semshare.registry, self.registry).names()

    def __contains__(self, name: object) -> bool:
        return name in self.names()

    def __iter__(self):
        return iter(self.names())

    def __len__(self) -> int:
        return len(self.names())


INDEX_KINDS = RegistryChoices("INDEX_BACKENDS", "semshare.index")
BACKBONE_NAMES = RegistryChoices("BACKBONES", "semshare.features.backbones")
TEXT_ENCODER_NAMES = RegistryChoices("SEGMENT_ENCODERS", "semshare.data.text_segments")


def add_config_flags(parser: argparse.ArgumentParser, set_help: str = "") -> None:
    """--preset, --config (repeatable) and --set KEY=VALUE (repeatable): the config layers of a run."""
    parser.add_argument("--preset", default="small", help="size preset in configs/preset/ (small, paper)")
    parser.add_argument("--config", type=Path, action="append", default=[],
                        help="YAML file of config overrides (repeatable, applied in order; per-method settings "
                             "under models: NAME:)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help=set_help or "override a config field, e.g. --set train.lr=3e-4 (repeatable)")


def parse_overrides(args: argparse.Namespace) -> dict:
    from semshare.config import parse_assignments

    return parse_assignments(args.overrides)


def parse_params(assignments: list[str]) -> dict:
    from semshare.config import parse_assignments

    return parse_assignments(assignments)


def add_threads(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--threads", type=int, default=0,
                        help="torch threads (default 0: the cores this process may use, one per run when runs go "
                             "in parallel; 1 beside other jobs)")


def thread_count(args: argparse.Namespace) -> int:
    """--threads, with 0 read as the cores this process may use."""
    from semshare.training.loop import usable_cores

    if args.threads < 0:
        raise SemshareError(f"--threads: expected an integer >= 0, found {args.threads}")
    return args.threads or usable_cores()


def set_threads(args: argparse.Namespace) -> None:
    import torch

    torch.set_num_threads(thread_count(args))


def add_protocol_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--split", default="test", help="query split (also the gallery unless --gallery-split)")
    parser.add_argument("--gallery-split", default=None)
    parser.add_argument("--text-source", default="captions", choices=["captions", "vectors"])
    parser.add_argument("--folds", type=int, default=1, help="5 gives COCO 1K from a 5K test split")
    parser.add_argument("--dedupe-texts", action="store_true")
    parser.add_argument("--k", type=int, nargs="+", default=[500], help="NDCG cutoffs")
    parser.add_argument("--gain", default="linear", choices=["linear", "exponential"])
    parser.add_argument("--json", type=Path, default=None, help="also write the metric table as JSON here")


def protocol_from_args(args: argparse.Namespace):
    from semshare.evaluation.protocols import ProtocolConfig
    from semshare.evaluation.retrieval import MetricSpec

    if args.folds < 1 or min(args.k) < 1:
        raise SemshareError(f"--folds / --k: expected integers >= 1, found {args.folds} / {' '.join(map(str, args.k))}")
    json_path = getattr(args, "json", None)
    if json_path is not None and (json_path.is_dir() or not json_path.parent.is_dir()):
        raise SemshareError(f"--json {json_path}: expected a file path in an existing folder, found "
                            f"{'a folder' if json_path.is_dir() else 'no folder ' + str(json_path.parent)}")

    protocol = ProtocolConfig(query_split=args.split, gallery_split=args.gallery_split,
                              text_source=args.text_source, folds=args.folds, dedupe_texts=args.dedupe_texts)
    return protocol, MetricSpec(ndcg_k=tuple(args.k), map_k=(None,), precision_k=(10,), gain=args.gain,
                                recall_k=(1, 5, 10))


def print_table(table: dict, json_path: Path | None) -> None:
    from semshare.fileio import atomic_write_json

    width = max(len(k) for k in table)
    for key, value in table.items():
        print(f"{key:<{width}}  {100 * value:6.2f}")
    if not any("R@" in key for key in table):
        print("R@k (instance-level recall): left out: the gallery holds none of the queries' own items "
              "(another split, or shared texts deduplicated)")
    if json_path:
        atomic_write_json(json_path, table)


def open_data(data_dir: Path, check_values: bool = True):
    from semshare.data.dataset import open_dataset

    return open_dataset(data_dir, check_values=check_values)


def add_run_flags(parser: argparse.ArgumentParser, data_help: str = "dataset folder") -> None:
    """RUN (a finished run folder), --data (default: the dataset the run recorded) and --checkpoint."""
    parser.add_argument("run_dir", type=Path)
    parser.add_argument("--data", type=Path, help=f"{data_help} (default: the one the run was trained on)")
    parser.add_argument("--checkpoint", default=BEST, choices=CHECKPOINTS)
    parser.add_argument("--ranking", default="combined", type=ranking_value, metavar="{combined,label,hash:BITS}",
                        help="combined: the label space with the run's instance head when it has one (semshare "
                             "fit-instance); label: the label space alone; hash:BITS: its BITS-bit codes "
                             "(semshare fit-hash), for the binary index kinds")


def load_run_of(args: argparse.Namespace):
    """The run of `add_run_flags` (semshare.load_run), on --data or the dataset folder the run recorded."""
    from semshare.training.experiment import load_run
    from semshare.training.run_folder import require_dataset

    run = load_run(args.run_dir, args.data, args.checkpoint, getattr(args, "ranking", "combined"))
    require_dataset(run)  # evaluate, embed and index build read the dataset's rows
    return run


def ranking_value(text: str) -> str:
    """--ranking: combined, label or hash:BITS (checked here, a usage error otherwise)."""
    if text in RANKINGS or (text.startswith("hash:") and text[5:].isdigit() and 1 <= int(text[5:]) <= 1024):
        return text
    raise argparse.ArgumentTypeError(f"expected combined, label or hash:BITS (1..1024), found {text!r}")
