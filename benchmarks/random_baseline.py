"""Random rankings on a dataset's test split (queries = gallery), scored by the same code: the floor.

  python benchmarks/random_baseline.py DATA_DIR [--text-source captions|vectors] [--seeds 5]
"""

from __future__ import annotations

import argparse

import numpy as np

from semshare.data.dataset import open_dataset
from semshare.evaluation.protocols import EmbeddingTable, evaluate_rows
from semshare.evaluation.retrieval import MetricSpec


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("data_dir")
    parser.add_argument("--text-source", default="captions")
    parser.add_argument("--seeds", type=int, default=5)
    args = parser.parse_args()
    ds = open_dataset(args.data_dir, check_values=False)
    rows = ds.split("test")
    items = ds.text_items(rows, args.text_source)
    tables = []
    for seed in range(args.seeds):
        rng = np.random.default_rng(seed)
        tables.append(evaluate_rows(ds, EmbeddingTable(rows, rng.standard_normal((len(rows), 32))),
                                    EmbeddingTable(items.item_ids, rng.standard_normal((len(items.rows), 32))),
                                    rows, args.text_source, MetricSpec(ndcg_k=(500,), map_k=(None,))))
    for key in ("ave/NDCG@500", "ave/mAP@all"):
        values = np.array([100 * t[key] for t in tables])
        print(f"{ds.name} random {key}: {values.mean():.1f} ± {values.std(ddof=1):.1f}")


if __name__ == "__main__":
    main()
