"""Command-line start-up: `semshare --help`, `semshare train --help` and one `semshare search` call, timed as
a user runs them (a fresh Python process each), for two source trees in the same run.

  python benchmarks/cli_startup.py --before /tmp/old/src --after src [--repeats 9] [--out docs/cli_startup.json]

The two trees' commands alternate (before, after, before, ...) so machine noise falls on both alike; the
medians and the after/before ratio are reported. The search runs against a closed-form run and an exact
index on the tiny synthetic preset (built once with the `--after` tree), so it measures start-up, loading
and one query, not a model's size.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def run(src: Path, *args: str) -> float:
    env = {**os.environ, "PYTHONPATH": str(src.resolve()), "OMP_NUM_THREADS": "1"}
    started = time.perf_counter()
    subprocess.run([sys.executable, "-m", "semshare.cli", *args], env=env, check=True, capture_output=True)
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--before", type=Path, required=True, help="src/ folder of the tree to compare against")
    parser.add_argument("--after", type=Path, default=Path("src"))
    parser.add_argument("--repeats", type=int, default=9)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        commands: dict[str, dict[str, list[str]]] = {}
        for tree in ("before", "after"):  # each tree searches an index of its own making (formats may differ)
            src, folder = getattr(args, tree), tmp / tree
            run(src, "make-synthetic", str(folder / "data"), "--preset", "tiny")
            run(src, "train", "--data", str(folder / "data"), "--method", "cca", "--out", str(folder / "run"))
            run(src, "index", "build", str(folder / "run"), "--side", "image", "--kind", "exact-torch",
                "--out", str(folder / "index"))
            commands[tree] = {"semshare --help": ["--help"], "semshare train --help": ["train", "--help"],
                              "semshare search INDEX --text ...": ["search", str(folder / "index"), "--text",
                                                                   "two romi near the bole", "-k", "5"]}
        times = {name: {"before": [], "after": []} for name in commands["after"]}
        for _ in range(args.repeats):
            for name in times:
                for tree in ("before", "after"):
                    times[name][tree].append(run(getattr(args, tree), *commands[tree][name]))
    report = {"python": sys.version.split()[0], "cores": os.cpu_count(), "repeats": args.repeats, "commands": {}}
    for name, measured in times.items():
        before, after = statistics.median(measured["before"]), statistics.median(measured["after"])
        report["commands"][name] = {"before_median_s": round(before, 3), "after_median_s": round(after, 3),
                                    "after_over_before": round(after / before, 3)}
        print(f"{name:36s} before {before:6.3f} s   after {after:6.3f} s   ratio {after / before:5.2f}")
    if args.out:
        args.out.write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
