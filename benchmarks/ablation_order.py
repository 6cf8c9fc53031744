"""Does the paper's ablation order hold? Each claimed "A > B" tested on the same test queries and seeds.

The paper (Table 1) orders its rows Ours > w/o C > w/o T, w/o R > ST > IMC, w/o L, and claims Ours beats
the consistency-trained baselines (DSCMR). Each pair is a paired comparison of the Ave metric over queries
and seeds (semshare.evaluation.significance: paired bootstrap CI, sign-flip permutation p), read from the
per-query values a `semshare benchmark` folder keeps:

    python -m benchmarks.ablation_order RES [RES2 ...] [--dataset coco_2k]

A claim "holds" when A - B > 0 at p < 0.05, is "reversed" when A - B < 0 at p < 0.05, else a "tie".
"""

from __future__ import annotations

import argparse
from pathlib import Path

from semshare.experiments.benchmark import gather_results as gather
from semshare.experiments.compare import METRICS, compare_methods

# (better, worse) as the paper's Table 1 orders them, then the headline claims against the baselines
CLAIMS = (("ours", "wo_c"), ("wo_c", "wo_t"), ("wo_c", "wo_r"), ("wo_t", "st"), ("wo_r", "st"), ("st", "imc"),
          ("st", "wo_l"), ("ours", "st"), ("ours", "dscmr"), ("ours", "ours_con"), ("ours", "ours_pooled"))


def verdict(difference: float, p_value: float) -> str:
    if p_value >= 0.05:
        return "tie"
    return "holds" if difference > 0 else "reversed"


def claim_rows(results: list[dict], dataset: str) -> list[dict]:
    names = {r["method"]: r.get("display_name") or r["method"] for r in results}
    rows = []
    for better, worse in CLAIMS:
        if better not in names or worse not in names:
            continue
        row = {"claim": f"{names[better]} > {names[worse]}"}
        for metric in METRICS:
            comparison = compare_methods(results, results, dataset, better, worse, metric)
            if comparison is None:
                break
            row[metric] = (100 * comparison.difference, comparison.p_value,
                           verdict(comparison.difference, comparison.p_value))
        else:
            rows.append(row)
    return rows


def markdown(rows: list[dict], dataset: str) -> str:
    lines = [f"Claims on {dataset} (A minus B, Ave x100; paired over test queries and seeds)", "",
             "| claim | NDCG@500 diff | p | verdict | mAP@all diff | p | verdict |", "|---|---|---|---|---|---|---|"]
    for row in rows:
        cells = [f"{row[m][0]:+.2f} | {row[m][1]:.4f} | {row[m][2]}" for m in METRICS]
        lines.append(f"| {row['claim']} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folders", nargs="+", type=Path, help="`semshare benchmark` output folders")
    parser.add_argument("--dataset", help="default: every dataset in the folder")
    args = parser.parse_args()
    results = gather(args.folders)
    for dataset in dict.fromkeys(r["dataset"] for r in results):
        if args.dataset in (None, dataset):
            print(markdown(claim_rows(results, dataset), dataset) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
