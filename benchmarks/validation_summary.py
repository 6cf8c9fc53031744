"""Best validation Ave NDCG@500 / mAP@all of every trained run in a benchmark folder (from each run's
metrics.jsonl: the selecting epoch), mean ± std over seeds per method: the numbers a default may be chosen on.

  python benchmarks/validation_summary.py RES [RES ...]
"""

from __future__ import annotations

import json
import sys
from collections import defaultdict
from pathlib import Path

import numpy as np


def best_validation(run_dir: Path) -> dict | None:
    path = run_dir / "metrics.jsonl"
    if not path.exists():
        return None
    records = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    validations = [r for r in records if "val/ave/NDCG@500" in r]
    return max(validations, key=lambda r: r["val/ave/NDCG@500"]) if validations else None


def main() -> None:
    for folder in map(Path, sys.argv[1:]):
        rows: dict[tuple[str, str], list[dict]] = defaultdict(list)
        for result_path in sorted(folder.rglob("result.json")):
            result = json.loads(result_path.read_text())
            best = best_validation(result_path.parent)
            if best is not None:
                rows[result["dataset"], result.get("display_name") or result["method"]].append(best)
        print(f"{folder}: best validation (mean ± std over seeds), x100")
        for (dataset, name), bests in rows.items():
            cells = []
            for metric in ("ave/NDCG@500", "ave/mAP@all"):
                values = 100 * np.array([b[f"val/{metric}"] for b in bests])
                cells.append(f"{metric} {values.mean():.1f} ± {values.std(ddof=1) if len(values) > 1 else 0:.1f}")
            print(f"  {dataset:<22} {name:<22} {'  '.join(cells)}  ({len(bests)} seeds)")


if __name__ == "__main__":
    main()
