"""How hard is the synthetic benchmark? A mean-pooled linear classifier vs an oracle set model vs the labels.

Each model maps an item (image or text) to C label scores by ridge regression fitted on the train split
(ridge strength chosen on the val split by NDCG@500 Ave); label scores are the retrieval embeddings, scored
on the test split (queries = gallery = test items; every caption is its own text item).

  python benchmarks/synthetic_difficulty.py --preset small --seeds 0 1 2 [--out docs/synthetic_difficulty.json]

Models
- mean-pooled linear: image = mean of its region vectors; text = bag of words (mean of one-hot words).
- oracle set model: segment identities (true region classes / word ids) plus, for each relational label,
  the presence of each of its four part pairs: what a model that relates segments could find.
- labels (ceiling): the true label vectors as embeddings.
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

import numpy as np

from semshare.data.dataset import open_dataset
from semshare.data.pooled import pooled_image_features, pooled_text_features
from semshare.data.synthetic import SyntheticConfig, build_world, make_synthetic, preset
from semshare.data.text import Vocabulary
from semshare.evaluation.retrieval import MetricSpec, evaluate_cross_modal, summarise
from semshare.methods.ridge import solve_ridge as fit_ridge

RIDGE_STRENGTHS = (0.01, 0.1, 1.0, 10.0, 100.0)
SPEC = MetricSpec(ndcg_k=(500,), map_k=(None,))
PAIRS = ((0, 1), (2, 3), (0, 3), (2, 1))  # true pairs, then crossed pairs


def with_bias(x: np.ndarray) -> np.ndarray:
    return np.hstack([x, np.ones((len(x), 1))])


def mean_regions(ds, rows):
    return pooled_image_features(ds, rows, "regions-mean").astype(np.float64)


def bag_of_words(vocab, texts):
    from semshare.data.dataset import TextItems

    items = TextItems(rows=np.zeros(len(texts), dtype=np.int64), item_ids=np.arange(len(texts)), texts=list(texts))
    return pooled_text_features(None, items, "bow", vocab).astype(np.float64)


def oracle_image(ds, rows, world, relational):
    present = np.zeros((len(rows), world.num_region_classes))
    for i, classes in enumerate(ds.region_labels[rows]):
        present[i, classes[classes >= 0]] = 1
    pairs = [present[:, world.part_class(c, a)] * present[:, world.part_class(c, b)] for c in relational for a, b in PAIRS]
    return np.hstack([present] + [p[:, None] for p in pairs])


def oracle_text(vocab, texts, world, relational):
    present = (bag_of_words(vocab, texts) > 0).astype(np.float64)
    columns = []
    for c in relational:
        ids = [vocab.encode(w)[0] for w in world.label_words[c]]
        columns += [present[:, ids[a]] * present[:, ids[b]] for a, b in PAIRS]
    return np.hstack([present] + [col[:, None] for col in columns])


def score(img, txt, img_labels, txt_labels):
    return summarise(evaluate_cross_modal(img, txt, img_labels, txt_labels, SPEC))


def fit_and_score(features, labels):
    """features[split] = (img_x, txt_x); labels[split] = (img_y, txt_y). Select strength on val."""
    best = None
    for strength in RIDGE_STRENGTHS:
        w_img = fit_ridge(features["train"][0], labels["train"][0], strength)
        w_txt = fit_ridge(features["train"][1], labels["train"][1], strength)
        val = score(with_bias(features["val"][0]) @ w_img, with_bias(features["val"][1]) @ w_txt, *labels["val"])
        if best is None or val["ave/NDCG@500"] > best[0]:
            best = (val["ave/NDCG@500"], w_img, w_txt, strength)
    _, w_img, w_txt, strength = best
    test = score(with_bias(features["test"][0]) @ w_img, with_bias(features["test"][1]) @ w_txt, *labels["test"])
    test["ridge_strength"] = strength
    return test


def run(data_dir: Path) -> dict:
    ds = open_dataset(data_dir)
    world = build_world(SyntheticConfig(**ds.meta["synthetic"]))
    relational = ds.meta["relational_labels"]
    rows = {name: ds.split(name) for name in ("train", "val", "test")}
    texts = {name: ds.text_items(r) for name, r in rows.items()}
    vocab = Vocabulary.build(texts["train"].texts)
    labels_all = np.asarray(ds.labels, dtype=np.float64)
    labels = {n: (labels_all[rows[n]], labels_all[texts[n].rows]) for n in rows}
    results = {}
    results["mean-pooled linear"] = fit_and_score(
        {n: (mean_regions(ds, rows[n]), bag_of_words(vocab, texts[n].texts)) for n in rows}, labels)
    results["oracle set model"] = fit_and_score(
        {n: (oracle_image(ds, rows[n], world, relational), oracle_text(vocab, texts[n].texts, world, relational))
         for n in rows}, labels)
    results["labels (ceiling)"] = score(labels["test"][0], labels["test"][1], *labels["test"])
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="small")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--out", type=Path, default=None, help="write the per-seed results as JSON")
    args = parser.parse_args()
    per_seed = {}
    with tempfile.TemporaryDirectory() as tmp:
        for seed in args.seeds:
            data_dir = make_synthetic(Path(tmp) / f"seed{seed}", preset(args.preset, seed=seed), progress=False)
            per_seed[seed] = run(data_dir)
    models = list(next(iter(per_seed.values())))
    print(f"| model ({args.preset}, seeds {args.seeds}) | I2T NDCG@500 | T2I NDCG@500 | Ave NDCG@500 | Ave mAP@all |")
    print("|---|---|---|---|---|")
    for model in models:
        cells = []
        for key in ("i2t/NDCG@500", "t2i/NDCG@500", "ave/NDCG@500", "ave/mAP@all"):
            values = np.array([100 * per_seed[s][model][key] for s in args.seeds])
            cells.append(f"{values.mean():.1f} ± {values.std():.1f}")
        print(f"| {model} | " + " | ".join(cells) + " |")
    if args.out:
        args.out.write_text(json.dumps(per_seed, indent=2) + "\n")


if __name__ == "__main__":
    main()
