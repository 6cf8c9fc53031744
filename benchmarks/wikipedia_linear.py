"""The closed-form baselines on the original Wikipedia features, against the published label-wise mAP.

  python benchmarks/wikipedia_linear.py [--data ../shared/data/wikipedia]

Protocol of the JFSSL paper's table: 128-d SIFT BoVW images, 10-d LDA texts, trained on the 2,173 training
pairs with default hyperparameters (no tuning), the 693 test pairs as queries and gallery, cosine,
mAP over the whole ranking.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from semshare.data.dataset import open_dataset
from semshare.evaluation.retrieval import MetricSpec, evaluate_cross_modal, summarise
from semshare.methods.cca import fit_cca
from semshare.methods.jfssl import fit_jfssl
from semshare.methods.lcfs import fit_lcfs

PUBLISHED = {"cca": (0.2549, 0.1846), "lcfs": (0.2798, 0.2141), "jfssl": (0.3063, 0.2275)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=Path(__file__).resolve().parents[2] / "shared/data/wikipedia")
    args = parser.parse_args()
    ds = open_dataset(args.data)
    train, test = ds.split("train"), ds.split("test")
    x, y = np.asarray(ds.image, dtype=np.float64), np.asarray(ds.text_vectors, dtype=np.float64)
    labels = np.asarray(ds.labels)
    fits = {"cca": lambda: fit_cca(x[train], y[train]), "lcfs": lambda: fit_lcfs(x[train], y[train], labels[train]),
            "jfssl": lambda: fit_jfssl(x[train], y[train], labels[train])}
    print("| method | I2T mAP (ours) | I2T published | T2I mAP (ours) | T2I published | Ave NDCG@500 (ours) |")
    print("|---|---|---|---|---|---|")
    for name, fit in fits.items():
        model = fit()
        table = summarise(evaluate_cross_modal(model.transform_image(x[test]), model.transform_text(y[test]),
                                               labels[test], labels[test], MetricSpec(ndcg_k=(500,), map_k=(None,))))
        i2t, t2i = PUBLISHED[name]
        print(f"| {name} | {table['i2t/mAP@all']:.4f} | {i2t:.4f} | {table['t2i/mAP@all']:.4f} | {t2i:.4f} | "
              f"{100 * table['ave/NDCG@500']:.1f} |")


if __name__ == "__main__":
    main()
