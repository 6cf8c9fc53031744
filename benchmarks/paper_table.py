"""Table 1 layout + paired significance from every finished run under one or more benchmark folders.

`semshare benchmark` writes its tables from the runs of one invocation; this gathers every `RUN/result.json`
below the folders given (e.g. two invocations with different seed counts into the same `--out`), orders the
rows as the paper does, and writes the table.md `semshare benchmark` writes (the library's own assembly),
plus the number of seeds behind each row:

    python -m benchmarks.paper_table RES [RES2 ...] [--reference ours] [--out table.md]
"""

from __future__ import annotations

import argparse
from pathlib import Path

from semshare.experiments.benchmark import gather_results, table_markdown

gather = gather_results  # benchmarks.ablation_order reads the runs the same way


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folders", nargs="+", type=Path)
    parser.add_argument("--reference", default="", help="the method every row is compared with (default: ours)")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    results = gather_results(args.folders)
    if not results:
        raise SystemExit(f"no RUN/result.json under {', '.join(map(str, args.folders))}")
    text = table_markdown(results, args.reference, seeds_line=True)
    if args.out:
        args.out.write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
