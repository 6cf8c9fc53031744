"""Table 1 layout + paired significance from every finished run under one or more benchmark folders.

`semshare benchmark` writes its tables from the runs of one invocation; this script gathers every
`RUN/result.json` below the folders given (e.g. two invocations with different seed counts into the same
`--out`), orders the rows as the paper does, and writes the same markdown `semshare benchmark` writes, plus
the number of seeds behind each row:

    python benchmarks/paper_table.py RES [RES2 ...] [--reference ours] [--out table.md]
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from semshare.experiments.benchmark import format_paper_table, inputs_line, row_name  # noqa: E402
from semshare.experiments.compare import significance_tables  # noqa: E402
from semshare.experiments.paper import PAPER_TABLE_RECIPES  # noqa: E402


def gather(folders: list[Path]) -> list[dict]:
    results = [json.loads(path.read_text()) for folder in folders for path in sorted(folder.glob("*/*/result.json"))]
    order = {name: index for index, name in enumerate((*PAPER_TABLE_RECIPES, "ridge"))}
    return sorted(results, key=lambda r: (order.get(r["method"], len(order)), r["method"], r["seed"]))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folders", nargs="+", type=Path)
    parser.add_argument("--reference", default="", help="the method every row is compared with (default: ours)")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    results = gather(args.folders)
    if not results:
        raise SystemExit(f"no RUN/result.json under {', '.join(map(str, args.folders))}")
    seeds = Counter(row_name(r) for r in results)
    text = (inputs_line(results) + "\n\n" + format_paper_table(results, "NDCG@500") + "\n\n"
            + format_paper_table(results, "mAP@all") + "\n\nseeds per row: "
            + ", ".join(f"{name} {count}" for name, count in seeds.items()) + "\n"
            + significance_tables(results, args.reference or None) + "\n")
    if args.out:
        args.out.write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
