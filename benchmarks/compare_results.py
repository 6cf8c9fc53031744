"""Two benchmark folders on the same data: the largest metric difference over every run, and which lines of
table.md differ.  python benchmarks/compare_results.py RES_A RES_B"""
import json
import sys
from pathlib import Path
a, b = Path(sys.argv[1]), Path(sys.argv[2])
ra = {(r["dataset"], r["method"], r["seed"]): r["test"] for r in json.loads((a / "results.json").read_text())}
rb = {(r["dataset"], r["method"], r["seed"]): r["test"] for r in json.loads((b / "results.json").read_text())}
assert ra.keys() == rb.keys(), (sorted(ra.keys() ^ rb.keys()))
worst = 0.0
for k in ra:
    for m in ra[k]:
        worst = max(worst, abs(ra[k][m] - rb[k][m]))
print(f"{a.name}: {len(ra)} runs x {len(next(iter(ra.values())))} metrics, largest difference {worst!r}")
ta = (a / "table.md").read_text().splitlines(); tb = (b / "table.md").read_text().splitlines()
diff = [i for i, (x, y) in enumerate(zip(ta, tb)) if x != y]
print(f"table.md lines {len(ta)} vs {len(tb)}; differing lines: {diff}")
