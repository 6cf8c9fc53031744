"""How a run trained on annotated boxes ranks images that come in as files (no boxes), against the same
images as dataset rows (issue 32).

    python -m benchmarks.region_layouts prepare ../shared/data/coco_2k THUMBS      # re-extract from thumbnails
    python -m benchmarks.region_layouts prepare ../shared/data/coco_2k GRID --regions grid   # grid end to end
    semshare benchmark --data THUMBS --methods ours --seeds 5 --workers 2 --threads 1 --out RES
    python -m benchmarks.region_layouts measure THUMBS RES [RES ...] --out docs/region_layouts_coco2k.json

`prepare` extracts a dataset's 256-px thumbnails (`image_files.txt`) with its own boxes (region_boxes.npy,
normalised, so they scale to the thumbnail) through `semshare extract`: rows and files then go through the
same pixels and the same backbone. The labels, label names and split are the original dataset's (the boxes
kept are the 16 largest and do not name every object).

`measure` scores each run's test split twice: as rows (their box regions) and as files, each test image read
from its file by the query path (`Run.query_image_files`) in each layout a file can take (`global`: the
global feature as the one region; `grid`: the 6x6 cells; `grid+global`). Per layout: Ave / I2T / T2I mAP@all
(the file images are the I2T queries and the T2I gallery) and, image to image, the share of test files whose
own row is in the top 1 / 5 of the test rows. Layouts are compared on the validation split too (the choice
of a default must not read the test split).
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
from pathlib import Path

import numpy as np


def prepare(source: Path, out: Path, regions: str = "boxes") -> None:
    from semshare.data.dataset import open_dataset
    from semshare.features.annotations.yolo import YoloInputs
    from semshare.features.extract import ExtractConfig, ExtractRequest, extract_dataset

    dataset = open_dataset(source, check_values=False)
    meta = json.loads((source / "meta.json").read_text())
    splits = json.loads((source / "split.json").read_text())
    split_of = {row: name for name, rows in splits.items() for row in rows}
    files = dataset.image_files
    boxes, mask = np.asarray(dataset.region_boxes), np.asarray(dataset.region_mask).astype(bool)
    box_classes = np.load(source / "region_labels.npy")
    class_names = ["person", *dataset.label_names]  # region_labels: COCO order, 0 = person
    with tempfile.TemporaryDirectory() as work:
        work = Path(work)
        (work / "labels").mkdir()
        (work / "classes.txt").write_text("\n".join(class_names) + "\n")
        lines = []
        for row in range(dataset.num_items):
            stem = Path(files[row]).stem
            yolo = [f"{int(box_classes[row, r])} {(x0 + x1) / 2:.6f} {(y0 + y1) / 2:.6f} {x1 - x0:.6f} {y1 - y0:.6f}"
                    for r, (x0, y0, x1, y1) in enumerate(boxes[row]) if mask[row, r]]
            (work / "labels" / f"{stem}.txt").write_text("\n".join(yolo) + "\n")
            lines.append(json.dumps({"file_name": files[row], "captions": list(dataset.captions[row]),
                                     "split": split_of.get(row)}))
        (work / "captions.jsonl").write_text("\n".join(lines) + "\n")
        cfg = ExtractConfig(**{**meta["extract"], "regions": regions})
        extract_dataset(ExtractRequest(source, work / "captions.jsonl", out, YoloInputs(
            yolo_dir=work / "labels", label_names_file=work / "classes.txt"), name=f"{dataset.name}_thumbs"), cfg)
    # the original labels (all objects, person not a label), their names and the split
    for name in ("labels.npy", "label_names.txt", "split.json", "text.npy"):
        if (source / name).exists():
            shutil.copyfile(source / name, out / name)
    out_meta = json.loads((out / "meta.json").read_text())
    out_meta.update(num_labels=dataset.num_labels, labels_from=str(source / "labels.npy"),
                    thumbnails_of=str(source.resolve()))
    (out / "meta.json").write_text(json.dumps(out_meta, indent=1) + "\n")
    print(f"wrote {out}: {dataset.num_items} rows re-extracted from {source}'s thumbnails with its boxes")


LAYOUTS = ("global", "grid", "grid+global")
SPLITS = ("val", "test")


def _memoised_file_features():
    """The backbone's reading of a file depends on the file and the layout, not on the run: computed once
    for all runs (the query path still goes through Run.query_image_files)."""
    import functools

    import semshare.features.extract as extract

    original = extract.features_of_image_file

    @functools.lru_cache(maxsize=None)
    def cached(path: str, layout: str):
        return original(path, META[0], layout)

    extract.features_of_image_file = lambda path, meta, layout="auto": cached(str(path), layout)


META: list[dict] = [{}]


def own_row_ranks(file_emb: np.ndarray, row_emb: np.ndarray) -> np.ndarray:
    """(N,) rank of each file's own row among the rows (1 = first; ties count against it)."""
    scores = file_emb @ row_emb.T
    own = np.diag(scores)
    return (scores >= own[:, None]).sum(1)


def score_split(run, rows: np.ndarray, files: list[str]) -> dict:
    from semshare.evaluation.protocols import EmbeddingTable, evaluate_tables
    from semshare.evaluation.retrieval import MetricSpec

    spec = MetricSpec(ndcg_k=(500,), map_k=(None,))
    img, txt = run.embed(rows)
    out = {"rows": _metrics(evaluate_tables(run.dataset, img, txt, spec=spec, rows=rows)[0])}
    row_emb = img.take(rows, "image")
    for layout in LAYOUTS:
        file_emb, _ = run.query_image_files([files[r] for r in rows], with_labels=False, layout=layout)
        table = _metrics(evaluate_tables(run.dataset, EmbeddingTable(rows, file_emb), txt, spec=spec, rows=rows)[0])
        ranks = own_row_ranks(file_emb, row_emb)
        table.update({"own_row_top1": float((ranks <= 1).mean()), "own_row_top5": float((ranks <= 5).mean())})
        out[layout] = table
    return out


def _metrics(table: dict) -> dict:
    return {key: float(table[key]) for key in ("i2t/mAP@all", "t2i/mAP@all", "ave/mAP@all", "ave/NDCG@500")}


def measure(data: Path, result_folders: list[Path], out: Path | None, ranking: str = "label") -> None:
    import torch

    from semshare.data.dataset import open_dataset
    from semshare.training.experiment import load_run

    torch.set_num_threads(1)
    dataset = open_dataset(data, check_values=False)
    META[0] = dict(dataset.meta)
    source = Path(dataset.meta.get("thumbnails_of", data))  # the very files the rows were extracted from
    files = open_dataset(source, check_values=False).image_files
    _memoised_file_features()
    report = {"data": str(data), "files_from": str(source), "runs": []}
    for folder in result_folders:
        for result in json.loads((folder / "results.json").read_text()):
            if ranking == "combined" and not (Path(result["run_dir"]) / "instance").is_dir():
                continue  # combined: the runs with an instance head (semshare fit-instance)
            run = load_run(result["run_dir"], data=data, ranking=ranking)
            entry = {"results": str(folder), "run_dir": result["run_dir"], "method": result["method"], "ranking": ranking,
                     "seed": result.get("seed"), "file_layout_prob": run.cfg.inputs.file_layout_prob}
            for split in SPLITS:
                entry[split] = score_split(run, np.asarray(dataset.splits[split]), files)
            if ranking == "label":  # the recorded numbers are the label space's
                assert abs(entry["test"]["rows"]["ave/mAP@all"] - result["test"]["ave/mAP@all"]) < 1e-9, result["run_dir"]
            report["runs"].append(entry)
            print(f"{result['run_dir']}: test rows {100 * entry['test']['rows']['ave/mAP@all']:.2f}, " + ", ".join(
                f"{layout} {100 * entry['test'][layout]['ave/mAP@all']:.2f} (own top-5 "
                f"{100 * entry['test'][layout]['own_row_top5']:.0f}%)" for layout in LAYOUTS), flush=True)
    print_table(report)
    if out:
        out.write_text(json.dumps(report, indent=1) + "\n")


def print_table(report: dict) -> None:
    groups: dict[tuple, list[dict]] = {}
    for entry in report["runs"]:
        groups.setdefault((entry["results"], entry["method"], entry["file_layout_prob"], entry.get("ranking", "label")),
                          []).append(entry)
    for split in SPLITS:
        print(f"\n{split} split, mean ± std over seeds (x100)\n")
        print("| runs | file_layout_prob | images as | Ave mAP@all | I2T mAP@all | T2I mAP@all | Ave NDCG@500 | "
              "own row top-1 | own row top-5 |\n|---|---|---|---|---|---|---|---|---|")
        for (folder, method, prob, ranking), entries in groups.items():
            for layout in ("rows", *LAYOUTS):
                cells = []
                for key in ("ave/mAP@all", "i2t/mAP@all", "t2i/mAP@all", "ave/NDCG@500", "own_row_top1", "own_row_top5"):
                    values = [e[split][layout][key] for e in entries if key in e[split][layout]]
                    cells.append(f"{100 * np.mean(values):.1f} ± {100 * np.std(values, ddof=1):.1f}"
                                 if len(values) > 1 else f"{100 * values[0]:.1f}" if values else "")
                name = "rows (as extracted)" if layout == "rows" else f"files: {layout}"
                print(f"| {Path(folder).name} {method} ({len(entries)}, {ranking}) | {prob} | {name} | " + " | ".join(cells) + " |")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    p = commands.add_parser("prepare")
    p.add_argument("source", type=Path)
    p.add_argument("out", type=Path)
    p.add_argument("--regions", choices=("boxes", "grid"), default="boxes",
                   help="grid: the grid cells end to end (rows and files then share one layout)")
    m = commands.add_parser("measure")
    m.add_argument("data", type=Path)
    m.add_argument("results", type=Path, nargs="+")
    m.add_argument("--out", type=Path)
    m.add_argument("--ranking", choices=("label", "combined"), default="label",
                   help="combined: the runs' instance heads too (fit them first with semshare fit-instance)")
    args = parser.parse_args()
    if args.command == "prepare":
        prepare(args.source, args.out, args.regions)
    else:
        measure(args.data, args.results, args.out, args.ranking)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
