"""The experiment runner: every method runs end to end; finished runs are not redone."""

import json

from semshare.cli.main import main
from semshare.experiments.paper import PAPER_TABLE_RECIPES
from semshare.training.recipes import resolve_config


def test_benchmark_quick_runs_every_method_and_resumes(tmp_path, capsys):
    out = tmp_path / "bench"
    assert main(["benchmark", "--quick", "--out", str(out)]) == 0
    results = json.loads((out / "results.json").read_text())
    assert sorted({r["method"] for r in results}) == sorted(PAPER_TABLE_RECIPES)
    table = (out / "table.md").read_text()
    assert table.startswith("**Smoke test, not results**")  # one short epoch on tiny data ranks nothing
    for method in PAPER_TABLE_RECIPES:
        assert f"| {resolve_config(method).row_name} |" in table
    assert "synthetic-tiny I2T" in table and (out / "table.csv").exists()
    assert (out / "pr_curves_synthetic-tiny.png").exists()
    capsys.readouterr()
    # a second run does nothing new; removing one result reruns exactly that one
    assert main(["benchmark", "--quick", "--out", str(out)]) == 0
    assert f"{len(results)} already finished, 0 to do" in capsys.readouterr().out
    (out / "synthetic-tiny" / "ours-seed0" / "result.json").unlink()
    assert main(["benchmark", "--quick", "--out", str(out)]) == 0
    assert "1 to do" in capsys.readouterr().out
    # settings that cannot change what a run learns (prefetching, logging) do not make a finished run stale
    assert main(["benchmark", "--quick", "--out", str(out), "--set", "train.prefetch_batches=0",
                 "--set", "train.log_every=3"]) == 0
    assert "0 to do" in capsys.readouterr().out
    # a finished run is not reused once this benchmark would train it differently
    assert main(["benchmark", "--quick", "--out", str(out), "--set", "models.semantic_sharing.pooling=mean"]) == 2
    error = capsys.readouterr().err
    assert "config.yaml: model.pooling: the finished run has" in error and "this benchmark gives 'mean'" in error


def test_sweep_writes_csv_and_png(tiny_data_dir, tmp_path, capsys):
    out = tmp_path / "sweep"
    assert main(["sweep", "--data", str(tiny_data_dir), "--values", "0,1", "--seeds", "1", "--out", str(out),
                 "--set", "train.epochs=1", "--set", "train.batch_size=16", "--set", "model.dim=16",
                 "--set", "model.heads=2", "--set", "text.word_dim=8"]) == 0
    rows = (out / "sweep.csv").read_text().splitlines()
    assert rows[0].startswith("eta,seed,") and len(rows) == 3
    assert (out / "sweep.png").read_bytes()[:4] == b"\x89PNG"
    result = json.loads((out / "eta=1" / "seed0" / "result.json").read_text())
    assert result["overrides"]["model.loss.consistency_weight"] == 1.0
    assert (out / "eta=1" / "seed0" / "training_curves.png").exists()


def test_linear_methods_on_deep_features(tmp_path):
    out = tmp_path / "bench"
    assert main(["benchmark", "--quick", "--methods", "cca,jfssl", "--linear-inputs", "deep", "--out", str(out)]) == 0
    results = json.loads((out / "results.json").read_text())
    assert {r["inputs"] for r in results} == {"deep"}
    assert (out / "synthetic-tiny" / "st-seed0" / "best" / "model.safetensors").exists()  # trained on demand


def test_a_failing_run_is_recorded_and_the_rest_go_on(tmp_path, monkeypatch, capsys):
    import semshare.experiments.benchmark as benchmark

    real_run_one = benchmark.run_one

    def flaky(spec, dataset=None):
        if spec.method == "lcfs":
            raise FloatingPointError("diverged")
        return real_run_one(spec, dataset)

    monkeypatch.setattr(benchmark, "run_one", flaky)
    out = tmp_path / "bench"
    assert main(["benchmark", "--quick", "--methods", "cca,lcfs", "--out", str(out)]) == 0
    assert "1 runs failed" in capsys.readouterr().out
    assert (out / "synthetic-tiny" / "lcfs-seed0" / "error.json").exists()
    assert [r["method"] for r in json.loads((out / "results.json").read_text())] == ["cca"]


def test_linear_methods_on_mean_word_vectors(tmp_path):
    out = tmp_path / "bench"
    assert main(["benchmark", "--quick", "--methods", "lcfs", "--linear-inputs", "pooled-word2vec",
                 "--out", str(out)]) == 0
    (result,) = json.loads((out / "results.json").read_text())
    assert result["inputs"] == "pooled-word2vec"
    assert 0.0 < result["test"]["ave/mAP@all"] <= 1.0


def test_mean_word_vectors_skip_unknown_words():
    import numpy as np

    from semshare.data.dataset import TextItems
    from semshare.data.pooled import pooled_text_features
    from semshare.data.text import Vocabulary

    vocab = Vocabulary.build(["a dog runs", "a cat"])
    vectors = np.arange(len(vocab) * 2, dtype=np.float32).reshape(len(vocab), 2)
    items = TextItems(rows=np.array([0, 1]), item_ids=np.array([0, 1]), texts=["dog zebra", "zebra"])
    features = pooled_text_features(None, items, "word-vectors", vocab, vectors)
    np.testing.assert_array_equal(features[0], vectors[vocab.encode("dog")[0]])  # "zebra" is unknown
    np.testing.assert_array_equal(features[1], [0.0, 0.0])


def test_a_benchmark_opens_and_scans_each_dataset_once(tiny_data_dir, tmp_path, monkeypatch):
    import semshare.data.dataset as dataset_module

    opens = []
    real = dataset_module._open_labels
    monkeypatch.setattr(dataset_module, "_open_labels", lambda root, check: opens.append(check) or real(root, check))
    assert main(["benchmark", "--quick", "--data", str(tiny_data_dir), "--methods", "ridge,cca,wo_c,dscmr",
                 "--out", str(tmp_path / "bench")]) == 0
    assert opens == [True]  # four runs (and their trained, loaded and scored models), one open, one value scan


def test_ray_executor_gives_the_local_tables(tmp_path, capsys):
    import pytest

    pytest.importorskip("ray", reason="Ray not installed (pip install -e '.[test]' brings it)")
    methods = "ridge,cca,dscmr,wo_c,vilbert"
    local, on_ray = tmp_path / "local", tmp_path / "ray"
    assert main(["benchmark", "--quick", "--methods", methods, "--threads", "1", "--out", str(local)]) == 0
    assert main(["benchmark", "--quick", "--methods", methods, "--threads", "1", "--executor", "ray",
                 "--workers", "2", "--out", str(on_ray)]) == 0
    assert (on_ray / "table.md").read_text() == (local / "table.md").read_text()
    by_run = lambda folder: {(r["method"], r["seed"]): r["test"] for r in json.loads((folder / "results.json").read_text())}
    assert by_run(on_ray) == by_run(local)
    capsys.readouterr()
    # resumable the same way: nothing left to do, and a removed result is redone on Ray
    (on_ray / "synthetic-tiny" / "cca-seed0" / "result.json").unlink()
    assert main(["benchmark", "--quick", "--methods", methods, "--threads", "1", "--executor", "ray",
                 "--workers", "2", "--out", str(on_ray)]) == 0
    assert "1 to do" in capsys.readouterr().out
    assert by_run(on_ray) == by_run(local)
    # a failing task is recorded as with the local executor, and the others go on
    failing = tmp_path / "failing"
    (tmp_path / "wv.txt").write_text("3 4\nthe nan 0 0 0\na 1 1 1 1\nred 1 0 1 0\n")  # read by the trained run only
    assert main(["benchmark", "--quick", "--methods", "ridge,wo_c", "--executor", "ray", "--workers", "2",
                 "--set", f"text.word_vectors_path={tmp_path / 'wv.txt'}", "--set", "text.word_dim=4",
                 "--out", str(failing)]) == 0
    assert "1 runs failed" in capsys.readouterr().out
    assert "vector of 'the': expected finite numbers" in json.loads((failing / "synthetic-tiny" / "wo_c-seed0" / "error.json").read_text())["error"]
    assert [r["method"] for r in json.loads((failing / "results.json").read_text())] == ["ridge"]


def test_benchmark_scores_the_instance_head_as_a_row_of_its_own(tmp_path, capsys):
    out = tmp_path / "bench"
    assert main(["benchmark", "--quick", "--methods", "ours,cca", "--instance-head", "--out", str(out)]) == 0
    results = json.loads((out / "results.json").read_text())
    assert sorted(r["method"] for r in results) == ["cca", "cca+instance", "ours", "ours+instance"]
    label = next(r for r in results if r["method"] == "ours")
    combined = next(r for r in results if r["method"] == "ours+instance")
    assert combined["run_dir"] == label["run_dir"] and combined["per_query_file"] == "per_query_instance.npz"
    table = (out / "table.md").read_text()
    assert "| Ours + instance head |" in table and "| Ours |" in table
    # the label row is the run's label space alone, whatever head the folder now holds
    from semshare.evaluation.evaluate import evaluate_run
    from semshare.evaluation.protocols import ProtocolConfig
    from semshare.evaluation.retrieval import MetricSpec
    from semshare.experiments.benchmark import METRIC_SPEC
    from semshare.training.experiment import load_run

    again = evaluate_run(load_run(label["run_dir"], ranking="label"), ProtocolConfig(), MetricSpec(**METRIC_SPEC))[0]
    assert again == label["test"]
    capsys.readouterr()
    assert main(["benchmark", "--quick", "--methods", "ours,cca", "--instance-head", "--out", str(out)]) == 0
    assert "0 to do" in capsys.readouterr().out  # finished, both rows
