"""The method protocol: a method added in one file runs everywhere; shared code names no method."""

import ast
import json
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from semshare.cli.main import main
from semshare.methods.base import NOTHING_FITTED, InputConfig, ModelSpec, TrainedMethod
from semshare.methods.losses import label_prediction_loss
from semshare.models.layers import masked_mean
from semshare.registry import METHODS

SRC = Path(__file__).resolve().parents[1] / "src" / "semshare"
QUICK = ["--set", "train.epochs=2", "--set", "train.batch_size=16", "--set", "text.word_dim=8",
         "--set", "text.word2vec_epochs=1", "--set", "train.progress=false"]


@dataclass(frozen=True)
class ToyConfig:
    dim: int = 8


@METHODS.register("toy_bag")
class ToyBag(TrainedMethod):
    """Mean of regions and a bag of word embeddings, each projected into label space: the smallest method."""

    config_class = ToyConfig
    display_name = "Toy bag"
    text_inputs = ("words",)

    def __init__(self, cfg: ToyConfig, spec: ModelSpec, inputs: InputConfig, fitted=NOTHING_FITTED):
        super().__init__()
        self.spec = spec
        self.img_net = nn.Linear(spec.region_dim, cfg.dim)
        self.words = nn.Embedding(spec.vocab_size, cfg.dim)
        self.classifier = nn.Linear(cfg.dim, spec.num_labels)

    def _img(self, batch):
        return self.img_net(masked_mean(batch.img_regions, batch.img_mask))

    def _txt(self, batch):
        return masked_mean(self.words(batch.txt_tokens), batch.txt_mask)

    def encode_image(self, batch):
        return torch.sigmoid(self.classifier(self._img(batch)))

    def encode_text(self, batch):
        return torch.sigmoid(self.classifier(self._txt(batch)))

    def training_step(self, batch):
        losses = {"label_image": label_prediction_loss(self.classifier(self._img(batch)), batch.labels),
                  "label_text": label_prediction_loss(self.classifier(self._txt(batch)), batch.labels)}
        losses["loss"] = losses["label_image"] + losses["label_text"]
        return losses


def test_a_method_registered_here_trains_evaluates_and_benchmarks_through_the_cli(tiny_data_dir, tmp_path, capsys):
    run = tmp_path / "toy"
    assert main(["train", "--data", str(tiny_data_dir), "--method", "toy_bag", "--set", "model.dim=6",
                 "--out", str(run), *QUICK]) == 0
    assert "trained toy_bag" in capsys.readouterr().out
    assert main(["evaluate", str(run), "--data", str(tiny_data_dir)]) == 0
    table = json.loads((run / "eval_test.json").read_text())
    assert 0.0 < table["ave/mAP@all"] <= 1.0
    bench = tmp_path / "bench"
    assert main(["benchmark", "--quick", "--data", str(tiny_data_dir), "--methods", "toy_bag,ridge",
                 "--out", str(bench)]) == 0
    assert "| Toy bag |" in (bench / "table.md").read_text()
    (result,) = [r for r in json.loads((bench / "results.json").read_text()) if r["method"] == "toy_bag"]
    assert 0.0 < result["test"]["ave/NDCG@500"] <= 1.0


def test_shared_code_names_no_method():
    names = "ours|st|imc|wo_[rtcl]|ours_con|ours_pooled|cca|lcfs|jfssl|dcca|dscmr|scml|vilbert|ridge"
    pattern = re.compile(rf'"({names})"')
    offenders = []
    # experiments/paper.py is the one file that names recipes: which ones the paper's experiments run
    allowed = {SRC / "experiments" / "paper.py"}
    for folder in ("training", "experiments", "evaluation", "cli"):
        for path in sorted(set((SRC / folder).rglob("*.py")) - allowed):
            for number, line in enumerate(path.read_text().splitlines(), start=1):
                if pattern.search(line):
                    offenders.append(f"{path.relative_to(SRC)}:{number}: {line.strip()}")
    assert not offenders, "\n".join(offenders)


def test_no_long_functions_in_the_loop_the_runner_and_the_protocol():
    files = [*(SRC / "training").rglob("*.py"), *(SRC / "experiments").rglob("*.py"), SRC / "methods" / "base.py"]
    long = []
    for path in files:
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.end_lineno - node.lineno + 1 > 60:
                long.append(f"{path.name}:{node.name} ({node.end_lineno - node.lineno + 1} lines)")
    assert not long, long


def test_every_registered_method_declares_its_config_and_display_name():
    for name in METHODS.names():
        cls = METHODS.get(name)
        assert cls.display_name, name
        assert hasattr(cls, "config_class") and cls.config_class(), name


def test_the_semantic_sharing_family_retrieves_in_label_space_unless_it_has_no_classifier():
    from semshare.errors import ConfigError
    from semshare.training.recipes import resolve_config

    poolings = {name: resolve_config(name).model.pooling for name in ("ours", "wo_c", "wo_t", "wo_r", "ours_con",
                                                                       "ours_pooled", "st", "imc", "wo_l")}
    assert poolings == {"ours": "label-segments", "wo_c": "label-segments", "wo_t": "label-segments",
                        "wo_r": "label-segments", "ours_con": "label-segments", "ours_pooled": "mean",
                        "st": "label", "imc": "mean", "wo_l": "mean"}
    with pytest.raises(ConfigError, match="model.pooling: label-segments retrieves with the label classifier"):
        resolve_config("wo_l", overrides={"model.pooling": "label-segments"})


def test_unknown_method_lists_the_known_ones(tiny_data_dir, tmp_path, capsys):
    assert main(["train", "--data", str(tiny_data_dir), "--method", "dscrm", "--out", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err
    assert "unknown method 'dscrm'" in err and "dscmr" in err and "ours" in err


def test_closed_form_methods_train_into_a_run_folder(tiny_data_dir, tmp_path, capsys):
    from semshare.training.checkpoint import read_checkpoint_metadata

    run = tmp_path / "cca"
    assert main(["train", "--data", str(tiny_data_dir), "--method", "cca", "--out", str(run)]) == 0
    assert "fitted cca in closed form" in capsys.readouterr().out
    assert (run / "best" / "model.safetensors").exists() and (run / "config.yaml").exists()
    assert read_checkpoint_metadata(run / "best")["config"]["method"] == "cca"
    assert main(["evaluate", str(run), "--data", str(tiny_data_dir)]) == 0
    table = json.loads((run / "eval_test.json").read_text())
    # the same run scored by the benchmark path gives the same numbers
    from semshare.evaluation.evaluate import evaluate_run
    from semshare.evaluation.retrieval import MetricSpec
    from semshare.training.experiment import load_run

    again, _ = evaluate_run(load_run(run, tiny_data_dir),
                            spec=MetricSpec(ndcg_k=(500,), map_k=(None,), precision_k=(10,), recall_k=(1, 5, 10)))
    assert again == pytest.approx(table)
    # a second train into the same folder is refused; an index of its gallery answers a text query
    assert main(["train", "--data", str(tiny_data_dir), "--method", "cca", "--out", str(run)]) == 2
    index = tmp_path / "index"
    assert main(["index", "build", str(run), "--data", str(tiny_data_dir), "--side", "image", "--kind", "exact-torch",
                 "--out", str(index)]) == 0
    capsys.readouterr()
    word = json.loads((run / "vocab.json").read_text())["tokens"][-1]
    assert main(["search", str(index), "--text", word, "-k", "3", "--json"]) == 0
    assert len(json.loads(capsys.readouterr().out)["results"]) == 3


def test_evaluate_on_a_pair_scorer_reranks_as_the_benchmark_does(tiny_data_dir, tmp_path):
    bench = tmp_path / "bench"
    assert main(["benchmark", "--quick", "--data", str(tiny_data_dir), "--methods", "vilbert", "--out", str(bench)]) == 0
    (result,) = json.loads((bench / "results.json").read_text())
    run = bench / "tiny" / "vilbert-seed0"
    assert main(["evaluate", str(run), "--data", str(tiny_data_dir), "--json", str(tmp_path / "eval.json")]) == 0
    table = json.loads((tmp_path / "eval.json").read_text())
    for key in ("ave/NDCG@500", "i2t/mAP@all", "t2i/mAP@all"):
        assert table[key] == pytest.approx(result["test"][key])


def test_checkpoints_carry_the_resolved_config_and_model_spec(tiny_data_dir, tmp_path):
    from semshare.training.checkpoint import read_checkpoint_metadata

    run = tmp_path / "run"
    assert main(["train", "--data", str(tiny_data_dir), "--method", "wo_c", "--out", str(run), *QUICK,
                 "--set", "models.semantic_sharing.dim=16", "--set", "models.semantic_sharing.heads=2"]) == 0
    for name in ("best", "last"):
        meta = read_checkpoint_metadata(run / name)
        assert meta["config"]["name"] == "wo_c" and meta["config"]["model"]["loss"]["context_weight"] == 0.0
        assert meta["model_spec"] == json.loads((run / "model_spec.json").read_text())


def test_one_sided_batches_carry_one_side(tiny_data_dir, tmp_path):
    from semshare.data.dataset import open_dataset
    from semshare.training.recipes import resolve_config
    from semshare.training.experiment import prepare_run

    run = prepare_run(open_dataset(tiny_data_dir), resolve_config("ours", overrides={"text.word2vec_epochs": 1,
                                                                       "text.word_dim": 8}), tmp_path)
    builder = run.builder(training=False)
    rows = run.dataset.split("test")[:4]
    images = builder.build_images(rows)
    assert images.txt_tokens is None and images.img_regions.shape[0] == 4
    ids = run.dataset.text_items(rows).item_ids
    texts = builder.build_texts(ids)
    assert texts.img_regions is None and len(texts) == len(ids)
    np.testing.assert_array_equal(texts.labels.numpy(), np.asarray(run.dataset.labels)[builder.text_rows(ids)])
    # a pair batch's text side is the same as the text batch's
    pairs = builder.build(builder.text_rows(ids), ids)
    assert torch.equal(pairs.txt_tokens, texts.txt_tokens)


def test_the_readme_method_list_is_the_registry(capsys):
    from semshare.training.recipes import recipe_names

    readme = (SRC.parents[1] / "README.md").read_text()
    shipped = [n for n in METHODS.names() if METHODS.get(n).__module__.startswith("semshare.")]
    for name in recipe_names() + shipped:
        assert f"`{name}`" in readme or f" {name} " in readme or f"{name}," in readme, name


def test_the_gpu_check_imports_nothing_the_gpu_machine_lacks(tmp_path):
    """The GPU machine has torch, numpy, scipy, safetensors, pyyaml and tqdm only: the check's code paths must
    import without the rest (a dry run of benchmarks/gpu_check.py with them blocked)."""
    import subprocess
    import sys

    blocked = ("gensim", "faiss", "fastapi", "uvicorn", "matplotlib", "sklearn", "ray", "tensorboard", "hypothesis",
               "pydantic", "PIL", "h5py", "sentence_transformers", "transformers")
    code = ("import sys\n" + "".join(f"sys.modules[{name!r}] = None\n" for name in blocked)
            + "sys.path.insert(0, 'benchmarks')\nimport gpu_check\n"
            "from semshare.training.experiment import prepare_run, train_experiment\n"
            "from semshare.training.recipes import resolve_config\n"
            "from semshare.data.synthetic import make_synthetic, preset\n"
            "from semshare.evaluation.evaluate import evaluate_run\n"
            "from torch.utils.flop_counter import FlopCounterMode\n"
            "print('ok')\n")
    root = SRC.parents[1]
    done = subprocess.run([sys.executable, "-c", code], cwd=root, capture_output=True, text=True,
                          env={**__import__("os").environ, "PYTHONPATH": str(root / "src")})
    assert done.returncode == 0 and done.stdout.strip() == "ok", done.stderr[-2000:]
