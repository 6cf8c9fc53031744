"""The instance head (issue 27): the right item first inside a label set, beside a run's label space."""

import json

import numpy as np
import pytest

from semshare.cli.main import main

SMALL = ["--set", "train.epochs=2", "--set", "train.batch_size=16", "--set", "text.word_dim=8",
         "--set", "text.word2vec_epochs=1", "--set", "model.dim=16", "--set", "model.heads=2"]


def test_combined_embeddings_score_the_weighted_sum_of_the_two_cosines():
    from semshare.training.instance_head import combine

    rng = np.random.default_rng(0)
    label_a, label_b = rng.standard_normal((5, 8)), rng.standard_normal((7, 8))
    inst_a, inst_b = rng.standard_normal((5, 4)), rng.standard_normal((7, 4))
    unit = lambda x: x / np.linalg.norm(x, axis=1, keepdims=True)  # noqa: E731
    for weight in (0.0, 0.3, 2.0):
        scores = combine(label_a, inst_a, weight) @ combine(label_b, inst_b, weight).T
        expected = (unit(label_a) @ unit(label_b).T + weight * unit(inst_a) @ unit(inst_b).T) / (1 + weight)
        np.testing.assert_allclose(scores, expected, atol=1e-5)
        np.testing.assert_allclose(np.linalg.norm(combine(label_a, inst_a, weight), axis=1), 1.0, atol=1e-5)


@pytest.fixture(scope="module")
def fitted_run(tiny_data_dir, tmp_path_factory):
    run = tmp_path_factory.mktemp("instance") / "run"
    assert main(["train", "--data", str(tiny_data_dir), "--out", str(run), *SMALL]) == 0
    assert main(["evaluate", str(run), "--json", str(run.parent / "label.json")]) == 0
    assert main(["fit-instance", str(run), "--set", "epochs=30"]) == 0
    return run


def test_fit_instance_chooses_w_on_validation_and_the_label_ranking_stays(fitted_run, tmp_path, capsys):
    from semshare.training.instance_head import read_instance_record

    record = read_instance_record(fitted_run)
    validation = record["validation"]
    chosen, base = validation[str(record["weight"])], validation["0.0"]
    assert record["weight"] in record["config"]["weights"]
    # the rule: the best validation R@10 among the weights whose label metrics stay within the tolerance
    allowed = [w for w, t in validation.items() if t["ave/NDCG@500"] >= base["ave/NDCG@500"] - 0.005
               and t["ave/mAP@all"] >= base["ave/mAP@all"] - 0.005]
    assert chosen["ave/R@10"] == max(validation[w]["ave/R@10"] for w in allowed)
    # --ranking label is the run as it was before the head
    capsys.readouterr()
    assert main(["evaluate", str(fitted_run), "--ranking", "label", "--json", str(tmp_path / "again.json")]) == 0
    assert json.loads((tmp_path / "again.json").read_text()) == json.loads((fitted_run.parent / "label.json").read_text())


def test_the_head_learns_the_pairs(fitted_run):
    """Alone (a large w), the head retrieves a caption's own image on the training rows far above chance."""
    from semshare.evaluation.instance import instance_recall
    from semshare.training.experiment import load_run
    from semshare.training.instance_head import image_features_of_rows, text_features_of_items

    base = load_run(fitted_run, ranking="label")
    ranked = load_run(fitted_run).ranking_stage
    rows = np.asarray(base.train_rows[:60])
    items = base.dataset.text_items(rows, base.text_source)
    img = ranked.head.encode_image(image_features_of_rows(base.dataset, rows))
    txt = ranked.head.encode_text(text_features_of_items(base, items))
    recall = instance_recall(txt, img, items.rows, rows, ks=(10,))["R@10"].mean()
    assert recall > 3 * 10 / len(rows)  # chance is 10 / 60


def test_the_index_search_and_api_use_the_combined_ranking(fitted_run, tmp_path, capsys):
    import semshare

    run = semshare.load_run(fitted_run)
    label_only = semshare.load_run(fitted_run, ranking="label")
    assert run.ranking == "combined" and label_only.ranking == "label"
    caption = run.dataset.captions[3][0]
    combined_dim, label_dim = run.encode_texts([caption]).shape[1], label_only.encode_texts([caption]).shape[1]
    assert combined_dim > label_dim
    assert main(["index", "build", str(fitted_run), "--side", "image", "--kind", "exact-torch",
                 "--out", str(tmp_path / "index")]) == 0
    assert main(["index", "build", str(fitted_run), "--ranking", "label", "--side", "image", "--kind", "exact-torch",
                 "--out", str(tmp_path / "label-index")]) == 0
    index, label_index = semshare.load_index(tmp_path / "index"), semshare.load_index(tmp_path / "label-index")
    assert index.manifest.ranking == "combined" and index.manifest.dim == combined_dim
    assert label_index.manifest.ranking == "label" and label_index.manifest.dim == label_dim
    # the index ranks as the run's own combined embeddings do
    images = run.encode_images()
    expected = np.argsort(-(images @ run.encode_texts([caption])[0]), kind="stable")[:5]
    assert [h.id for h in index.search_text(caption, k=5)] == [int(i) for i in expected]
    capsys.readouterr()
    assert main(["search", str(tmp_path / "index"), "--text", caption, "-k", "5", "--json"]) == 0
    assert [r["id"] for r in json.loads(capsys.readouterr().out)["results"]] == [int(i) for i in expected]
