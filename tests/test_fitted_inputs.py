"""One build and load path: what a method fits on the training split (`fit_inputs`) is saved with the run and
handed to its constructor on build and on load; closed forms read the run's own text recipe; old folders load."""

from dataclasses import dataclass

import numpy as np
import pytest
import torch
from safetensors.numpy import load_file, save_file
from torch import nn

from semshare.data.dataset import open_dataset
from semshare.errors import ConfigError
from semshare.methods.base import NOTHING_FITTED, WORD_VECTORS, ClosedFormMethod, FitContext, TrainedMethod
from semshare.methods.losses import label_prediction_loss
from semshare.models.layers import masked_mean
from semshare.registry import METHODS
from semshare.training.experiment import load_run, train_experiment
from semshare.training.inputs import FITTED_INPUTS_FILE, LEGACY_WORD_VECTORS_FILE
from semshare.training.recipes import resolve_config

FAST = {"train.epochs": 1, "train.batch_size": 16, "text.word_dim": 8, "text.word2vec_epochs": 1,
        "train.progress": False}


@dataclass(frozen=True)
class PriorConfig:
    dim: int = 8


@METHODS.register("toy_label_prior")
class LabelPrior(TrainedMethod):
    """A toy that needs a statistic of the training data: its classifier bias starts at the log-odds of each
    label's training frequency (computed once, in fit_inputs; never by the constructor)."""

    config_class = PriorConfig
    display_name = "Toy label prior"
    text_inputs = ("words",)

    @classmethod
    def fit_inputs(cls, cfg: PriorConfig, context: FitContext) -> dict[str, np.ndarray]:
        frequency = np.asarray(context.dataset.labels[context.train_rows], dtype=np.float64).mean(0)
        return {"label_log_odds": np.log((frequency + 1e-3) / (1 - frequency + 1e-3)).astype(np.float32)}

    def __init__(self, cfg: PriorConfig, spec, inputs, fitted=NOTHING_FITTED):
        super().__init__()
        self.img_net = nn.Linear(spec.region_dim, cfg.dim)
        self.words = nn.Embedding(spec.vocab_size, cfg.dim)
        self.classifier = nn.Linear(cfg.dim, spec.num_labels)
        prior = fitted.get("label_log_odds")
        self.register_buffer("prior", torch.from_numpy(prior) if prior is not None else torch.zeros(spec.num_labels))
        with torch.no_grad():
            self.classifier.bias.copy_(self.prior)
        self.seen_word_vectors = fitted.get(WORD_VECTORS) is not None

    def _img(self, batch):
        return self.classifier(self.img_net(masked_mean(batch.img_regions, batch.img_mask)))

    def _txt(self, batch):
        return self.classifier(masked_mean(self.words(batch.txt_tokens), batch.txt_mask))

    def encode_image(self, batch):
        return torch.sigmoid(self._img(batch))

    def encode_text(self, batch):
        return torch.sigmoid(self._txt(batch))

    def training_step(self, batch):
        losses = {"label_image": label_prediction_loss(self._img(batch), batch.labels),
                  "label_text": label_prediction_loss(self._txt(batch), batch.labels)}
        losses["loss"] = losses["label_image"] + losses["label_text"]
        return losses


def test_a_method_with_fitted_inputs_is_built_loaded_and_resumed_with_them(tiny_data_dir, tmp_path):
    dataset = open_dataset(tiny_data_dir)
    cfg = resolve_config("toy_label_prior", overrides=FAST)
    run_dir = tmp_path / "run"
    train_experiment(dataset, cfg, run_dir)
    saved = load_file(str(run_dir / FITTED_INPUTS_FILE))
    assert sorted(saved) == ["label_log_odds", WORD_VECTORS]  # the method's entry beside the shared one
    train_rows = np.array(__import__("json").loads((run_dir / "splits.json").read_text())["train"])
    frequency = dataset.labels[train_rows].mean(0)
    np.testing.assert_allclose(saved["label_log_odds"], np.log((frequency + 1e-3) / (1 - frequency + 1e-3)), rtol=1e-6)
    loaded = load_run(run_dir, dataset)
    assert loaded.model.seen_word_vectors  # the loaded model was built from the same dict
    np.testing.assert_array_equal(loaded.model.prior.numpy(), saved["label_log_odds"])
    longer = resolve_config("toy_label_prior", overrides={**FAST, "train.epochs": 2})
    state = train_experiment(dataset, longer, run_dir, resume=True, allow_change=("train.epochs",))
    assert state.epoch == 2
    assert load_file(str(run_dir / FITTED_INPUTS_FILE))["label_log_odds"].tobytes() == saved["label_log_odds"].tobytes()


def test_a_method_may_not_overwrite_a_shared_fitted_input(tiny_data_dir, tmp_path, monkeypatch):
    monkeypatch.setattr(LabelPrior, "fit_inputs", classmethod(lambda cls, cfg, context: {WORD_VECTORS: np.zeros(1)}))
    with pytest.raises(ConfigError, match="word_vectors, which the run already provides"):
        train_experiment(open_dataset(tiny_data_dir), resolve_config("toy_label_prior", overrides=FAST), tmp_path / "r")


@pytest.mark.parametrize("method", ["cca", "ridge"])
def test_closed_forms_honour_the_text_settings_of_the_run(tiny_data_dir, tmp_path, method):
    """Before the one recipe, closed forms built their own vocabulary and ignored text.min_count."""
    dataset = open_dataset(tiny_data_dir)
    full = load_run_after_fit(dataset, method, {}, tmp_path / "full")
    pruned = load_run_after_fit(dataset, method, {"text.min_count": 1000}, tmp_path / "pruned")
    assert len(full.vocab) > 4 and len(pruned.vocab) == 4  # only the special tokens survive min_count 1000
    assert pruned.encoder.txt_weight.shape[0] == len(pruned.vocab)


def load_run_after_fit(dataset, method, overrides, run_dir):
    train_experiment(dataset, resolve_config(method, overrides={**FAST, **overrides}), run_dir)
    return load_run(run_dir, dataset)


def test_closed_forms_read_a_given_word2vec_file(tiny_data_dir, tmp_path):
    from gensim.models import KeyedVectors

    dataset = open_dataset(tiny_data_dir)
    words = sorted({w for texts in dataset.captions for text in texts for w in str(text).lower().split()})[:20]
    vectors = KeyedVectors(vector_size=5)
    vectors.add_vectors(words, np.random.default_rng(0).standard_normal((len(words), 5)).astype(np.float32))
    path = tmp_path / "vectors.txt"
    vectors.save_word2vec_format(str(path), binary=False)
    run = load_run_after_fit(dataset, "cca", {"text.pooled": "word2vec", "text.word_vectors_path": str(path)},
                             tmp_path / "run")
    assert run.space.word_vectors.shape[1] == 5  # the file's vectors, not Word2Vec trained here (dim 8)


def test_old_run_folders_load_with_their_legacy_word_vector_files(tiny_data_dir, tmp_path):
    """A closed-form run written before fitted_inputs.safetensors kept word_vectors.safetensors (key
    `vectors`); a trained one kept no vectors at all (its checkpoint holds the embedding)."""
    dataset = open_dataset(tiny_data_dir)
    closed = load_run_after_fit(dataset, "cca", {"text.pooled": "word2vec"}, tmp_path / "cca")
    expected = closed.embed(dataset.split("test"))
    vectors = load_file(str(tmp_path / "cca" / FITTED_INPUTS_FILE))[WORD_VECTORS]
    (tmp_path / "cca" / FITTED_INPUTS_FILE).unlink()
    save_file({"vectors": vectors}, str(tmp_path / "cca" / LEGACY_WORD_VECTORS_FILE))
    again = load_run(tmp_path / "cca", dataset).embed(dataset.split("test"))
    for old, new in zip(expected, again):
        np.testing.assert_array_equal(old.emb, new.emb)
    trained = load_run_after_fit(dataset, "ours", {"models.semantic_sharing.dim": 16,
                                                   "models.semantic_sharing.heads": 2}, tmp_path / "ours")
    expected = trained.embed(dataset.split("test"))
    (tmp_path / "ours" / FITTED_INPUTS_FILE).unlink()
    again = load_run(tmp_path / "ours", dataset).embed(dataset.split("test"))
    for old, new in zip(expected, again):
        np.testing.assert_array_equal(old.emb, new.emb)


def test_every_registered_method_is_built_by_the_one_constructor(tiny_data_dir):
    """cls(cfg, spec, inputs, fitted) for trained and closed-form methods alike, `fitted` from its own hook."""
    from semshare.data.text import Vocabulary
    from semshare.methods.base import InputConfig, ModelSpec

    dataset = open_dataset(tiny_data_dir)
    rows = dataset.split("train")
    vocab = Vocabulary.build(dataset.text_items(rows).texts)
    word_vectors = np.random.default_rng(0).standard_normal((len(vocab), 4)).astype(np.float32)
    spec = ModelSpec(num_labels=dataset.num_labels, region_dim=int(dataset.regions.shape[2]), text_dim=5,
                     vocab_size=len(vocab), word_dim=4)
    for name in METHODS.names():
        cls = METHODS.get(name)
        inputs = InputConfig(image=cls.image_inputs[0], text=cls.text_inputs[0])
        shared = {WORD_VECTORS: word_vectors} if inputs.text == "words" else {}
        context = FitContext(dataset, rows, inputs, 0, vocab, word_vectors if shared else None)
        fitted = {**shared, **cls.fit_inputs(cls.config_class(), context)}
        method = cls(cls.config_class(), spec, inputs, fitted)
        assert isinstance(method, (TrainedMethod, ClosedFormMethod)), name
