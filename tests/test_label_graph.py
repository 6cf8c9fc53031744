"""Label-graph classifiers: the graph worked out by hand, the GCN's gradients, label names without vectors,
a label-vector file of the wrong size, and the label_gcn baseline saved, loaded, resumed and validated."""

import json
import logging

import numpy as np
import pytest
import torch

from semshare.data.dataset import open_dataset
from semshare.errors import DataFormatError
from semshare.models.label_graph import (LABEL_GRAPH, LABEL_NODES, LABEL_NODES_KNOWN, LabelGraphClassifier,
                                         LabelGraphConfig, label_correlation, name_vectors_from_file)
from semshare.training.experiment import load_run, train_experiment
from semshare.training.inputs import FITTED_INPUTS_FILE
from semshare.training.recipes import resolve_config

FAST = {"train.epochs": 2, "train.batch_size": 16, "text.word_dim": 8, "text.word2vec_epochs": 1,
        "train.progress": False, "model.hidden_dim": 16, "model.common_dim": 8, "model.graph.hidden_dim": 8}


def test_the_correlation_matrix_equals_the_one_worked_out_by_hand():
    labels = np.array([[1, 1, 1, 0], [1, 1, 1, 0], [1, 0, 0, 1], [0, 1, 0, 0]])
    # N = (3, 3, 2, 1); P(1|0) = P(2|0) = 2/3, P(3|0) = 1/3; P(0|1) = P(2|1) = 2/3; P(0|2) = P(1|2) = 1;
    # P(0|3) = 1. At tau 0.4 node 0 keeps 1 and 2 (p / 2 each), node 3 keeps 0 (all of p)
    expected = np.array([[0.8, 0.1, 0.1, 0.0], [0.1, 0.8, 0.1, 0.0], [0.1, 0.1, 0.8, 0.0], [0.2, 0.0, 0.0, 0.8]])
    np.testing.assert_allclose(label_correlation(labels, threshold=0.4, reweight=0.2), expected, atol=1e-7)
    # at tau 0.9 only 2 -> 0, 2 -> 1 and 3 -> 0 survive; nodes 0 and 1 have no neighbour and keep themselves
    expected = np.array([[1.0, 0.0, 0.0, 0.0], [0.0, 1.0, 0.0, 0.0], [0.1, 0.1, 0.8, 0.0], [0.2, 0.0, 0.0, 0.8]])
    np.testing.assert_allclose(label_correlation(labels, threshold=0.9, reweight=0.2), expected, atol=1e-7)


def test_a_label_never_seen_in_training_has_no_edge_and_no_nan():
    graph = label_correlation(np.array([[1, 0, 0], [1, 1, 0]]), threshold=0.4, reweight=0.3)
    assert np.isfinite(graph).all() and graph[2, 2] == 1.0 and graph[2, :2].sum() == 0


@pytest.mark.parametrize("adaptive", [False, True])
def test_the_gcn_classifier_has_gradients_everywhere_and_no_nan(adaptive):
    torch.manual_seed(0)
    graph = label_correlation(np.random.default_rng(0).integers(0, 2, (30, 5)), 0.4, 0.2)
    nodes = np.random.default_rng(1).standard_normal((5, 6)).astype(np.float32)
    known = np.array([1, 1, 0, 1, 1], dtype=np.uint8)  # one name without a vector: a learned one
    classifier = LabelGraphClassifier(LabelGraphConfig(hidden_dim=4, adaptive=adaptive),
                                      {LABEL_GRAPH: graph, LABEL_NODES: nodes, LABEL_NODES_KNOWN: known}, 5, 3)
    features = torch.randn(7, 2, 3, requires_grad=True)
    logits = classifier(features)
    assert logits.shape == (7, 2, 5) and torch.isfinite(logits).all()
    logits.sum().backward()
    for name, parameter in classifier.named_parameters():
        assert parameter.grad is not None and torch.isfinite(parameter.grad).all(), name
    assert classifier.learned_nodes.grad[2].abs().sum() > 0 and classifier.learned_nodes.grad[0].abs().sum() == 0


def test_a_label_vector_file_of_the_wrong_size_is_a_clear_error(tmp_path):
    path = tmp_path / "glove.npy"
    np.save(path, np.ones((3, 4), dtype=np.float32))
    with pytest.raises(DataFormatError, match=r"glove.npy: shape: expected \(5, E\): one row per line of .*label_names"):
        name_vectors_from_file(path, ["a", "b", "c", "d", "e"], tmp_path / "label_names.txt")


def test_label_names_without_a_known_word_warn_and_get_a_learned_vector(tiny_data_dir, tmp_path, caplog):
    import shutil

    data = tmp_path / "data"
    shutil.copytree(tiny_data_dir, data)
    names = (data / "label_names.txt").read_text().splitlines()
    names[3] = "qqxunseen"  # a name no training caption uses
    (data / "label_names.txt").write_text("\n".join(names) + "\n")
    dataset = open_dataset(data)
    caplog.set_level(logging.WARNING)
    train_experiment(dataset, resolve_config("label_gcn", overrides={**FAST, "train.epochs": 1}), tmp_path / "run")
    from safetensors.numpy import load_file

    fitted = load_file(str(tmp_path / "run" / FITTED_INPUTS_FILE))
    unknown = [n for n, k in zip(dataset.label_names, fitted[LABEL_NODES_KNOWN]) if not k]
    assert unknown == ["qqxunseen"] and "no vector for 1 label name(s) (qqxunseen)" in caplog.text
    model = load_run(tmp_path / "run", dataset).model
    assert model.classifier.learned_nodes is not None  # never a silent zero row


def test_label_gcn_trains_from_a_label_file_saves_loads_resumes_and_chooses_its_space(tiny_data_dir, tmp_path):
    dataset = open_dataset(tiny_data_dir)
    vectors = tmp_path / "label_vectors.npy"
    np.save(vectors, np.random.default_rng(0).standard_normal((dataset.num_labels, 5)).astype(np.float32))
    overrides = {**FAST, "model.graph.node_vectors_path": str(vectors)}
    run_dir = tmp_path / "run"
    train_experiment(dataset, resolve_config("label_gcn", overrides=overrides), run_dir)
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    validations = [r for r in records if "val/ave/NDCG@500" in r]
    for record in validations:  # both spaces scored on every validation, the better one is the selection metric
        both = (record["val/common/ave/NDCG@500"], record["val/label/ave/NDCG@500"])
        assert record["val/ave/NDCG@500"] == max(both)
    loaded = load_run(run_dir, dataset)
    best = max(validations, key=lambda r: r["val/ave/NDCG@500"])
    chosen = "common" if best["val/common/ave/NDCG@500"] >= best["val/label/ave/NDCG@500"] else "label"
    assert loaded.model.retrieval_space == chosen
    np.testing.assert_array_equal(loaded.model.classifier.nodes.numpy(), np.load(vectors))
    state = train_experiment(dataset, resolve_config("label_gcn", overrides={**overrides, "train.epochs": 3}), run_dir,
                             resume=True, allow_change=("train.epochs",))
    assert state.epoch == 3


def test_semantic_sharing_with_the_label_graph_classifier_learns(tiny_data_dir, tmp_path):
    dataset = open_dataset(tiny_data_dir)
    overrides = {"train.epochs": 3, "train.batch_size": 16, "text.word_dim": 8, "text.word2vec_epochs": 1,
                 "train.progress": False, "model.dim": 16, "model.heads": 2, "model.ffn_dim": 32,
                 "model.graph.hidden_dim": 8, "train.log_every": 1, "train.patience": 0}
    train_experiment(dataset, resolve_config("ours_graph", overrides=overrides), tmp_path / "run")
    run = load_run(tmp_path / "run", dataset)
    assert type(run.model.classifier[0]).__name__ == "LabelGraphClassifier"
    records = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    losses = [r["train/loss"] for r in records if "train/loss" in r]
    assert np.isfinite(losses).all() and np.mean(losses[-4:]) < np.mean(losses[:4])


def test_a_label_gcn_run_indexes_and_answers_queries_like_every_other(tiny_data_dir, tmp_path):
    from semshare.api import load_index
    from semshare.search.gallery import build_gallery

    dataset = open_dataset(tiny_data_dir)
    train_experiment(dataset, resolve_config("label_gcn", overrides={**FAST, "train.epochs": 1}), tmp_path / "run")
    build_gallery(load_run(tmp_path / "run", dataset), "image", tmp_path / "index")
    index = load_index(tmp_path / "index")
    caption = dataset.captions[int(dataset.split("test")[0])][0]
    hits = index.search_text(caption, k=5)
    assert len(hits) == 5 and hits[0].score >= hits[-1].score
    assert len(index.search_image(int(dataset.split("test")[1]), k=3)) == 3
