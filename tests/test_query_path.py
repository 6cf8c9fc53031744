"""The one query path (issue 31): a text query through the CLI, the Python API and HTTP is tokenised once and
goes through the model's text encoder once; its reading comes from that same forward pass, and all three
give the same answer."""

import json
import sys

import numpy as np
import pytest

from semshare.cli.main import main
from semshare.data.dataset import open_dataset
from semshare.models import text_encoders
from semshare.search.gallery import QueryRequest, build_gallery, load_index
from semshare.training.experiment import load_run, train_experiment
from semshare.training.recipes import resolve_config

TINY = {"models.semantic_sharing.dim": 16, "models.semantic_sharing.layers": 1, "models.semantic_sharing.heads": 2,
        "models.semantic_sharing.ffn_dim": 32, "text.word_dim": 8, "text.word2vec_epochs": 1,
        "train.batch_size": 16, "train.epochs": 2, "train.progress": False}


@pytest.fixture(scope="module")
def text_query_index(tiny_data_dir, tmp_path_factory):
    root = tmp_path_factory.mktemp("query-path")
    train_experiment(open_dataset(tiny_data_dir), resolve_config("ours", "small", overrides=TINY), root / "run")
    build_gallery(load_run(root / "run"), "image", root / "index")
    return root / "index"


class Counter:
    """Counts tokenisations of a query string and forward passes of the model's text encoder modules."""

    def __init__(self, monkeypatch, model):
        import semshare.data.text as text_module

        self.tokenised, self.forwards = [], 0
        original = text_module.tokenize

        def counting(text):
            if isinstance(text, str):  # a sentence; a token list is only lower-cased again
                self.tokenised.append(text)
            return original(text)

        for module in list(sys.modules.values()):  # every module that imported the function by name
            if getattr(module, "tokenize", None) is original and (getattr(module, "__name__", "") or "").startswith("semshare"):
                monkeypatch.setattr(module, "tokenize", counting)
        encoders = [m for m in model.modules() if type(m).__module__ == text_encoders.__name__]
        assert encoders, "the model has no text encoder module to count"
        for encoder in encoders:
            encoder.register_forward_hook(self._count)

    def _count(self, module, inputs, output):
        self.forwards += 1

    def reset(self):
        self.tokenised, self.forwards = [], 0


def test_one_tokenisation_and_one_forward_pass_per_text_query(text_query_index, tiny_data_dir, monkeypatch, capsys):
    from fastapi.testclient import TestClient

    from semshare.search.service import create_app

    index = load_index(text_query_index)
    caption = index.run.dataset.captions[3][0]
    counter = Counter(monkeypatch, index.run.model)
    monkeypatch.setattr("semshare.search.gallery.load_index", lambda *a, **k: index)  # the CLI opens this one

    counter.reset()
    answer = index.query(QueryRequest(text=caption, k=5))
    assert (len(counter.tokenised), counter.forwards) == (1, 1)
    assert answer.reading is not None and answer.hits  # the reading came from the same pass

    counter.reset()
    assert main(["search", str(text_query_index), "--text", caption, "-k", "5", "--json"]) == 0
    cli = json.loads(capsys.readouterr().out)
    assert (len(counter.tokenised), counter.forwards) == (1, 1)

    client = TestClient(create_app(index))
    counter.reset()
    response = client.post("/search", json={"text": caption, "k": 5})
    assert response.status_code == 200
    assert (len(counter.tokenised), counter.forwards) == (1, 1)

    python = answer.as_dict(QueryRequest(text=caption, k=5), index.manifest.side)
    assert cli == python == response.json()


def test_a_batch_of_text_queries_is_one_forward_pass(text_query_index, monkeypatch):
    index = load_index(text_query_index)
    captions = [index.run.dataset.captions[row][0] for row in range(6)]
    counter = Counter(monkeypatch, index.run.model)
    answers = index.query_batch([QueryRequest(text=c, k=3) for c in captions])
    assert (len(counter.tokenised), counter.forwards) == (6, 1)
    one_by_one = [index.query(QueryRequest(text=c, k=3)) for c in captions]
    assert [[h.id for h in a.hits] for a in answers] == [[h.id for h in a.hits] for a in one_by_one]
    for batched, single in zip(answers, one_by_one):  # the reading of a batched pass is the reading of one
        assert [name for name, _ in batched.reading.labels] == [name for name, _ in single.reading.labels]
        assert batched.reading.best == pytest.approx(single.reading.best, abs=1e-6)


def test_the_reading_equals_the_classifier_on_its_own(text_query_index):
    """The one-pass reading is bit-identical to the model's own predict_labels on the same batch."""
    import numpy as np
    import torch

    run = load_index(text_query_index).run
    caption = run.dataset.captions[5][0]
    query = run.query_texts([caption])[0]
    batch = run.builder(training=False).build_query_words([query.known])
    with torch.no_grad():
        np.testing.assert_array_equal(query.probabilities, run.model.predict_labels(batch, "text").numpy()[0])


def test_batch_search_answers_every_query_of_a_file_as_single_searches_do(text_query_index, tmp_path, capsys,
                                                                         monkeypatch):
    index = load_index(text_query_index)
    captions = [index.run.dataset.captions[row][0] for row in range(5)]
    label = index.run.dataset.label_names[0]
    lines = [{"text": captions[0]}, {"item_id": 7, "k": 3}, {"text": "qwertyzz"}, {"text": captions[1], "k": 4},
             {"item_id": 2, "labels": [label], "label_boost": True}, {"text": captions[2], "labels": ["no-such-label"]},
             {"item_id": 10**6}]
    (tmp_path / "q.jsonl").write_text("\n".join(json.dumps(line) for line in lines) + "\n")
    counter = Counter(monkeypatch, index.run.model)
    monkeypatch.setattr("semshare.search.gallery.load_index", lambda *a, **k: index)
    assert main(["search", str(text_query_index), "--queries", str(tmp_path / "q.jsonl")]) == 0
    answers = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert len(answers) == len(lines) and counter.forwards == 1  # the 4 texts in one pass
    singles = [["--text", captions[0]], ["--image-id", "7", "-k", "3"], None, ["--text", captions[1], "-k", "4"],
               ["--image-id", "2", "--labels", label, "--boost"], None, None]
    for argv, answer in zip(singles, answers):
        if argv is None:
            assert "error" in answer and answer["query"]
            continue
        assert main(["search", str(text_query_index), *argv, "--json"]) == 0
        assert_same_answer(json.loads(capsys.readouterr().out), answer)
    assert "vocabulary" in answers[2]["error"] and "no-such-label" in answers[5]["error"]
    (tmp_path / "plain.txt").write_text(f"{captions[3]}\n\n{captions[4]}\n")
    assert main(["search", str(text_query_index), "--queries", str(tmp_path / "plain.txt"), "-k", "2",
                 "--out", str(tmp_path / "answers.jsonl")]) == 0
    written = [json.loads(line) for line in (tmp_path / "answers.jsonl").read_text().splitlines()]
    assert [a["query"]["text"] for a in written] == captions[3:5] and all(len(a["results"]) == 2 for a in written)


def assert_same_answer(single: dict, batched: dict) -> None:
    """A batched query's answer is the single query's: the same hits in the same order; its cosine scores and
    probabilities may differ in the last float32 bit (a padded batch sums in another order)."""
    scores = lambda answer: [hit.pop("score") for hit in answer["results"]]  # noqa: E731
    np.testing.assert_allclose(scores(single), scores(batched), atol=1e-6)
    if single["reading"] is not None:
        best = [r.pop("best_probability") for r in (single["reading"], batched["reading"])]
        assert best[0] == pytest.approx(best[1], abs=2e-4)
        for reading in (single["reading"], batched["reading"]):
            reading["labels"] = [entry["label"] for entry in reading["labels"]]
    assert single == batched


@pytest.mark.parametrize("line, field", [('{"text": "a", "k": 0}', "line 2 k"), ("not json", "line 2"),
                                          ('{"text": "a", "item_id": 3}', "line 2"), ('{"txt": "a"}', "line 2"),
                                          ('{"text": "a", "colour": 1}', "line 2 field 'colour'")])
def test_a_bad_line_of_a_queries_file_is_named_before_anything_is_answered(text_query_index, tmp_path, capsys,
                                                                          line, field):
    (tmp_path / "q.jsonl").write_text('{"text": "a dog"}\n' + line + "\n")
    assert main(["search", str(text_query_index), "--queries", str(tmp_path / "q.jsonl")]) == 2
    captured = capsys.readouterr()
    assert f"q.jsonl: {field}" in captured.err and captured.out == ""
