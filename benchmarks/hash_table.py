"""The hashing table of a benchmark folder (issue 35): each method's codes (semshare fit-hash on every run)
at each code length, beside its real-valued self, mean ± std over seeds, test split, Ave mAP@all x100
(Hamming ranking, ties scored exactly). Paired against a reference method seed by seed: the mean
difference and the exact two-sided sign-flip p over seeds (floor 2 / 2^S).

    for run in RES/DATASET/*-seed*; do semshare fit-hash $run --threads 1; done
    python -m benchmarks.hash_table RES [RES_DCMH_16 ...] [--reference dscmr] [--out docs/hash_table_coco2k.json]
"""

from __future__ import annotations

import argparse
import itertools
import json
from pathlib import Path

import numpy as np


def sign_flip_p(differences: list[float]) -> float:
    values = np.asarray(differences, dtype=np.float64)
    observed = abs(values.mean())
    flips = [abs((values * np.array(signs)).mean()) >= observed - 1e-12
             for signs in itertools.product((1, -1), repeat=len(values))]
    return float(np.mean(flips))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("results", type=Path, nargs="+",
                        help="benchmark folders; a hashing method trained per code length (DCMH) has one each")
    parser.add_argument("--reference", default="dscmr")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    results = [r for folder in args.results for r in json.loads((folder / "results.json").read_text())]
    table: dict = {}
    for result in results:
        record_path = Path(result["run_dir"]) / "hash" / "hash.json"
        if not record_path.is_file():
            continue
        record = json.loads(record_path.read_text())
        row = table.setdefault(result.get("display_name") or result["method"], {"method": result["method"], "seeds": {}})
        seed = row["seeds"].setdefault(result["seed"], {"chosen": {}})
        seed["chosen"].update(record["chosen"])
        for bits, scores in record["test"].items():  # the run's real-valued score beside each of its code lengths
            seed[bits], seed[f"real@{bits}"] = scores["ave/mAP@all"], result["test"]["ave/mAP@all"]
    bits = sorted({b for row in table.values() for seed in row["seeds"].values() for b in seed if b.isdigit()}, key=int)
    reference = next((name for name, row in table.items() if row["method"] == args.reference), None)
    print(f"{', '.join(map(str, args.results))}: test Ave mAP@all x100, mean ± std over seeds; Hamming ranking (ties: exact expectation)\n")
    print("| method | seeds | " + " | ".join(f"{b} bits" for b in bits) + " | real-valued | 64 bits - real |")
    print("|---|---|" + "---|" * (len(bits) + 2))
    for name, row in table.items():
        seeds = row["seeds"]
        cells = []
        for b in bits:
            values = [100 * s[b] for s in seeds.values() if b in s]
            cells.append("-" if not values else f"{np.mean(values):.1f} ± {np.std(values, ddof=1):.1f}"
                         if len(values) > 1 else f"{values[0]:.1f}")
        key = "real@64" if all("real@64" in s for s in seeds.values()) else f"real@{bits[0]}"
        real = [100 * s[key] for s in seeds.values() if key in s]
        gap = [100 * (s["64"] - s["real@64"]) for s in seeds.values() if "64" in s]
        print(f"| {name} | {len(seeds)} | " + " | ".join(cells) + f" | {np.mean(real):.1f} ± {np.std(real, ddof=1) if len(real) > 1 else 0:.1f} | "
              + (f"{np.mean(gap):+.1f}" if gap else "-") + " |")
    if reference is not None:
        print(f"\npaired against {reference}, seed by seed (mean difference, sign-flip p over seeds):\n")
        print("| method | " + " | ".join(f"{b} bits" for b in bits) + " |\n|---|" + "---|" * len(bits))
        for name, row in table.items():
            if name == reference:
                continue
            common = sorted(set(row["seeds"]) & set(table[reference]["seeds"]))
            cells = []
            for b in bits:
                differences = [100 * (row["seeds"][s][b] - table[reference]["seeds"][s][b]) for s in common
                               if b in row["seeds"][s] and b in table[reference]["seeds"][s]]
                cells.append(f"{np.mean(differences):+.2f} (p {sign_flip_p(differences):.4f})" if differences else "-")
            row["paired"] = dict(zip(bits, cells))
            print(f"| {name} | " + " | ".join(cells) + " |")
    choices = {name: {b: sorted(s["chosen"][b] for s in row["seeds"].values() if b in s["chosen"]) for b in bits}
               for name, row in table.items()}
    print("\nkind chosen on validation (per seed): " + "; ".join(
        f"{name} " + ", ".join(f"{b}: {'/'.join(c)}" for b, c in per.items()) for name, per in choices.items()))
    if args.out:
        args.out.write_text(json.dumps({"results": [str(f) for f in args.results], "table": table}, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
