"""Batch search throughput: the same queries answered one `semshare search` process each (model load per query)
and by one `semshare search --queries FILE` (one load), same index, same machine, same run.

    python -m benchmarks.batch_search [--queries 1000] [--loop 10] [--repeats 3] [--out docs/batch_search.json]

The index is a small trained run's on synthetic `small` data (made here, seeded). The one-per-process loop is
timed on the first `--loop` queries (its per-query time is flat); queries/s are medians over `--repeats`.
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


def cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "semshare.cli", *args], check=True, capture_output=True, text=True)


def build(folder: Path) -> tuple[Path, list[str]]:
    """A seeded synthetic dataset, a short `ours` run, its image index; the queries: the dataset's captions."""
    from semshare.data.dataset import open_dataset

    cli("make-synthetic", str(folder / "data"), "--preset", "small", "--seed", "0")
    cli("train", "--data", str(folder / "data"), "--method", "ours", "--set", "train.epochs=2", "--set",
        "train.progress=false", "--threads", "1", "--out", str(folder / "run"))
    cli("index", "build", str(folder / "run"), "--side", "image", "--out", str(folder / "index"))
    dataset = open_dataset(folder / "data", check_values=False)
    captions = [" ".join(c) if isinstance(c, list) else c for row in dataset.captions for c in row]
    return folder / "index", captions


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--queries", type=int, default=1000)
    parser.add_argument("--loop", type=int, default=10)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        index, captions = build(tmp)
        queries = (captions * (args.queries // len(captions) + 1))[: args.queries]
        (tmp / "queries.txt").write_text("\n".join(queries) + "\n")
        loop, batch = [], []
        for _ in range(args.repeats):
            started = time.perf_counter()
            for text in queries[: args.loop]:
                cli("search", str(index), "--text", text, "--json")
            loop.append(args.loop / (time.perf_counter() - started))
            started = time.perf_counter()
            cli("search", str(index), "--queries", str(tmp / "queries.txt"), "--threads", "1",
                "--out", str(tmp / "answers.jsonl"))
            batch.append(args.queries / (time.perf_counter() - started))
        answers = (tmp / "answers.jsonl").read_text().splitlines()
        assert len(answers) == args.queries, len(answers)
    report = {"queries": args.queries, "loop_queries": args.loop, "repeats": args.repeats,
              "one_process_per_query_qps": round(statistics.median(loop), 3),
              "batch_qps": round(statistics.median(batch), 1),
              "speedup": round(statistics.median(batch) / statistics.median(loop), 1),
              "runs": {"one_process_per_query_qps": loop, "batch_qps": batch}}
    print(json.dumps(report, indent=2))
    if args.out:
        args.out.write_text(json.dumps(report, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
