"""What the model read in a query (issue 27): label probabilities, the reading shown with the results, and
the weak-query flag."""

import json

import numpy as np
import pytest

from semshare.cli.main import main
from semshare.errors import SemshareError

SMALL = ["--set", "train.epochs=3", "--set", "train.batch_size=16", "--set", "text.word_dim=8",
         "--set", "text.word2vec_epochs=1", "--set", "model.dim=16", "--set", "model.heads=2"]


@pytest.fixture(scope="module")
def ours_index(tiny_data_dir, tmp_path_factory):
    folder = tmp_path_factory.mktemp("reading")
    assert main(["train", "--data", str(tiny_data_dir), "--out", str(folder / "run"), *SMALL]) == 0
    assert main(["index", "build", str(folder / "run"), "--side", "image", "--kind", "exact-torch",
                 "--out", str(folder / "index")]) == 0
    return folder / "index"


def test_predict_labels_reads_texts_and_images_as_the_classifier_does(ours_index):
    import semshare

    index = semshare.load_index(ours_index)
    run, dataset = index.run, index.run.dataset
    captions = [dataset.captions[row][0] for row in (0, 1, 2)]
    from_texts = run.predict_labels(texts=captions)
    # the same captions read from the dataset: the first text item of each row
    from_rows = run.predict_rows(np.array([0, 1, 2]), "text")[[0, 2, 4]]
    assert from_texts.shape == (3, dataset.num_labels) and ((from_texts >= 0) & (from_texts <= 1)).all()
    np.testing.assert_allclose(from_texts, from_rows, atol=1e-5)
    images = run.predict_labels(images=[0, 1])
    assert images.shape == (2, dataset.num_labels)
    with pytest.raises(SemshareError, match="texts= .* or images="):
        run.predict_labels()


def test_weak_queries_are_flagged_and_real_captions_are_not(ours_index):
    import semshare

    index = semshare.load_index(ours_index)
    threshold = index.manifest.weak_threshold
    assert 0 < threshold < 1  # chosen on the validation captions at build time
    for text in ("the", "a qwerty on a zxcvb"):
        reading = index.read_text(text)
        assert reading.weak and "content" in reading.why
    dataset = index.run.dataset
    rows = dataset.split("test")
    readings = [index.read_text(dataset.captions[row][0]) for row in rows]
    assert np.mean([r.weak for r in readings]) < 0.25
    truth = [set(np.array(dataset.label_names)[np.flatnonzero(dataset.labels[row])]) for row in rows]
    top = [r.labels[0][0] if r.labels else None for r in readings]
    chance = np.mean([len(labels) / dataset.num_labels for labels in truth])  # a random label being right
    assert np.mean([t in labels for t, labels in zip(top, truth)]) > 1.25 * chance  # a tiny model reads labels


def test_the_reading_is_shown_by_the_cli_http_and_page_data(ours_index, capsys):
    from fastapi.testclient import TestClient

    from semshare.search.gallery import load_index
    from semshare.search.service import create_app

    assert main(["search", str(ours_index), "--text", "the", "-k", "3"]) == 0
    out = capsys.readouterr().out
    assert "read as: " in out and "weak query: none of its known words carries content" in out
    assert main(["search", str(ours_index), "--text", "the", "-k", "3", "--json"]) == 0
    cli = json.loads(capsys.readouterr().out)
    http = TestClient(create_app(load_index(ours_index))).post("/search", json={"text": "the", "k": 3}).json()
    assert cli["reading"] == http["reading"] and http["reading"]["weak"] is True
    assert set(http["reading"]) == {"labels", "best_probability", "unknown_words", "weak", "why"}


def test_a_run_without_a_classifier_says_so_and_its_index_reads_nothing(tiny_data_dir, tmp_path, capsys):
    import semshare

    assert main(["train", "--data", str(tiny_data_dir), "--method", "cca", "--out", str(tmp_path / "run")]) == 0
    run = semshare.load_run(tmp_path / "run")
    with pytest.raises(SemshareError, match="no label classifier"):
        run.predict_labels(texts=[run.dataset.captions[0][0]])
    index = semshare.build_index(run, "image", tmp_path / "index", kind="exact-torch")
    assert index.manifest.weak_threshold == -1.0 and index.read_text(run.dataset.captions[0][0]) is None


def test_the_label_graph_method_reads_queries_too(tiny_data_dir, tmp_path):
    import semshare

    assert main(["train", "--data", str(tiny_data_dir), "--method", "label_gcn", "--out", str(tmp_path / "run"),
                 "--set", "train.epochs=1", "--set", "train.batch_size=16", "--set", "text.word_dim=8",
                 "--set", "text.word2vec_epochs=1"]) == 0
    run = semshare.load_run(tmp_path / "run")
    probabilities = run.predict_labels(texts=[run.dataset.captions[0][0], "the"])
    assert probabilities.shape == (2, run.dataset.num_labels) and ((probabilities > 0) & (probabilities < 1)).all()
    assert run.read_text("the").weak
