"""Wall time of `semshare benchmark` per executor (local 1 process, local 2 processes, Ray with 2 CPUs), same run.

  python benchmarks/executors.py [--repeats 3] [--out docs/figures/executors.json]             # --quick
  python benchmarks/executors.py --data DIR --methods ridge,dscmr,wo_c,st --seeds 2 --set train.epochs=3

Each configuration runs `--repeats` times into a fresh folder; the median wall time is reported with its
ratio to the one-process local executor measured in the same run, and the tables are checked identical.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

CONFIGS = {
    "local, 1 process": ["--threads", "1"],
    "local, 2 processes": ["--threads", "1", "--workers", "2"],
    "ray, local 2 CPUs": ["--threads", "1", "--workers", "2", "--executor", "ray"],
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--data", default="", help="a dataset folder (default: --quick's tiny synthetic set)")
    parser.add_argument("--methods", default="all")
    parser.add_argument("--seeds", type=int, default=1)
    parser.add_argument("--set", dest="overrides", action="append", default=[])
    args = parser.parse_args()
    workload = (["--data", args.data, "--methods", args.methods, "--seeds", str(args.seeds)]
                + [f"--set={o}" for o in args.overrides]) if args.data else ["--quick", "--methods", args.methods]
    seconds: dict[str, list[float]] = {name: [] for name in CONFIGS}
    tables: dict[str, str] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for repeat in range(args.repeats):
            for name, flags in CONFIGS.items():
                out = Path(tmp) / f"{len(seconds[name])}-{name.replace(' ', '_').replace(',', '')}"
                started = time.perf_counter()
                subprocess.run([sys.executable, "-m", "semshare.cli", "benchmark", *workload, "--out", str(out), *flags],
                               check=True, capture_output=True)
                seconds[name].append(time.perf_counter() - started)
                tables[name] = (out / "table.md").read_text()
    reference = statistics.median(seconds["local, 1 process"])
    report = {name: {"median_s": round(statistics.median(v), 2), "runs_s": [round(x, 2) for x in v],
                     "ratio_to_local_1_process": round(statistics.median(v) / reference, 3)}
              for name, v in seconds.items()}
    report["tables_identical"] = len(set(tables.values())) == 1
    report["workload"] = workload
    print(json.dumps(report, indent=2))
    if args.out:
        args.out.write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
