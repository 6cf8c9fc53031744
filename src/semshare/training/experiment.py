"""An experiment = resolved config + prepared inputs (vocabulary, word vectors, region targets) + a run dir.

Config resolution order: dataclass defaults < size preset (`small` | `paper`) < method preset (ablation)
< YAML file < `--set key=value`. The resolved config is saved as `config.yaml` in the run dir, next to
`model_spec.json` (sizes read from the data), `vocab.json` and `splits.json` (the rows used).
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from semshare.config import from_dict, load_yaml, merge, save_yaml, to_dict
from semshare.data.batches import BatchBuilder, BatchOptions, TrainingBatches, text_source_for
from semshare.data.dataset import Dataset, open_dataset
from semshare.data.text import Vocabulary
from semshare.data.text_segments import (TextSegments, default_segments_dir, open_text_segments, target_lookup,
                                         training_word_pieces)
from semshare.data.word_vectors import Word2VecConfig, load_word2vec_file, train_word2vec
from semshare.errors import ConfigError, SemshareError
from semshare.evaluation.embed import embed_rows
from semshare.evaluation.protocols import evaluate_rows
from semshare.evaluation.retrieval import MetricSpec
from semshare.fileio import atomic_write_json
from semshare.methods.dcca import DCCA, DCCAConfig
from semshare.methods.dscmr import DSCMR, DSCMRConfig
from semshare.methods.scml import SCML, SCMLConfig
from semshare.methods.vilbert import ViLBERT, ViLBERTConfig
from semshare.methods.semantic_sharing import ABLATIONS, LossConfig, ModelConfig, ModelSpec, SemanticSharing
from semshare.training.loop import DistributedContext, TrainConfig, fit

logger = logging.getLogger(__name__)

SIZE_PRESETS: dict[str, dict] = {
    # the paper's supplement: 6 layers, d = 1024, 8 heads, FFN 2048, Adam 1e-4, batch 64, up to 45 epochs
    "paper": {},
    # trains in minutes on 2 CPU cores
    "small": {"model.dim": 128, "model.layers": 2, "model.heads": 4, "model.ffn_dim": 256,
              "dscmr.hidden_dim": 256, "dscmr.common_dim": 128, "dcca.hidden_dim": 256, "dcca.output_dim": 32,
              "scml.hidden_dim": 256, "scml.common_dim": 128, "vilbert.dim": 128, "vilbert.heads": 4,
              "vilbert.ffn_dim": 256, "vilbert.stream_layers": 1, "vilbert.co_layers": 1,
              "text.word_dim": 64, "train.lr": 1e-3, "train.batch_size": 32, "train.epochs": 20,
              "train.patience": 4},
}


TEXT_SOURCES = {"word2vec-bigru": "words", "sentence-vector": "vector", "minilm": "segments"}


@dataclass(frozen=True)
class TextConfig:
    # the text side in one word: word2vec-bigru (model.text_input=words), sentence-vector (vector: text.npy),
    # minilm (segments: MiniLM token states from `semshare extract-text`); empty = model.text_input decides
    source: str = ""
    min_count: int = 1
    word_dim: int = 300  # Word2Vec size when trained here
    word2vec_epochs: int = 10
    word_vectors_path: str = ""  # a word2vec .bin / .txt file to load instead of training
    segments_encoder: str = "minilm"  # text_input=segments: which extracted encoder
    segments_dir: str = ""  # where its folder is; default DATA_DIR/text_segments/<segments_encoder>
    segments_sentence: bool = False  # add the encoder's own sentence vector as a first text segment


@dataclass(frozen=True)
class ExperimentConfig:
    method: str = "ours"
    preset: str = "small"
    model: ModelConfig = field(default_factory=ModelConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    dscmr: DSCMRConfig = field(default_factory=DSCMRConfig)
    dcca: DCCAConfig = field(default_factory=DCCAConfig)
    scml: SCMLConfig = field(default_factory=SCMLConfig)
    vilbert: ViLBERTConfig = field(default_factory=ViLBERTConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    text: TextConfig = field(default_factory=TextConfig)


# method name -> config overrides; the Semantic Sharing ablations, and the baselines trained by the loop
METHOD_PRESETS: dict[str, dict] = {**ABLATIONS, "dscmr": {"loss.context_weight": 0.0},
                                   "dcca": {"loss.context_weight": 0.0}, "scml": {"loss.context_weight": 0.0},
                                   "vilbert": {"loss.context_weight": 0.0}}


def build_model(cfg: ExperimentConfig, spec: ModelSpec, word_vectors: np.ndarray | None = None) -> torch.nn.Module:
    if cfg.method == "dscmr":
        return DSCMR(cfg.dscmr, spec, cfg.model.text_input, word_vectors)
    if cfg.method == "dcca":
        return DCCA(cfg.dcca, spec, cfg.model.text_input, word_vectors)
    if cfg.method == "scml":
        return SCML(cfg.scml, spec, cfg.model.text_input, word_vectors)
    if cfg.method == "vilbert":
        if cfg.model.text_input != "words" or cfg.model.image_input != "regions":
            raise ConfigError("vilbert needs region features and captions (model.image_input=regions, "
                              "model.text_input=words)")
        return ViLBERT(cfg.vilbert, spec, word_vectors)
    return SemanticSharing(cfg.model, cfg.loss, spec, word_vectors)


def resolve_config(method: str = "ours", preset: str = "small", config_file: str | Path | None = None,
                   overrides: dict | None = None) -> ExperimentConfig:
    if method not in METHOD_PRESETS:
        raise ConfigError(f"unknown method {method!r}; known: {', '.join(sorted(METHOD_PRESETS))}")
    if preset not in SIZE_PRESETS:
        raise ConfigError(f"unknown preset {preset!r}; known: {', '.join(sorted(SIZE_PRESETS))}")
    cfg = ExperimentConfig(method=method, preset=preset)
    cfg = merge(cfg, SIZE_PRESETS[preset])
    cfg = merge(cfg, METHOD_PRESETS[method])
    if config_file:
        cfg = merge(cfg, load_yaml(config_file))
    cfg = merge(cfg, overrides or {})
    if cfg.text.source:
        if cfg.text.source not in TEXT_SOURCES:
            raise ConfigError(f"unknown text.source {cfg.text.source!r}; known: {', '.join(TEXT_SOURCES)}")
        cfg = merge(cfg, {"model.text_input": TEXT_SOURCES[cfg.text.source]}
                    | ({"text.segments_encoder": cfg.text.source} if TEXT_SOURCES[cfg.text.source] == "segments" else {}))
    return cfg


def training_rows(dataset: Dataset, cfg: TrainConfig) -> tuple[np.ndarray, np.ndarray]:
    """(train rows, val rows); val is carved from train (seeded) when the data has none."""
    train, val = dataset.split("train"), dataset.split("val")
    if len(val):
        return train, val
    count = max(1, int(round(cfg.val_fraction * len(train))))
    shuffled = np.random.default_rng([cfg.seed, 0xCA5E]).permutation(train)
    logger.info("no val split in %s: carving %d of %d training rows (seed %d)", dataset.root, count, len(train), cfg.seed)
    return np.sort(shuffled[count:]), np.sort(shuffled[:count])


def _region_targets(dataset: Dataset, cfg: ExperimentConfig, train_rows: np.ndarray) -> tuple[np.ndarray | None, int]:
    """(N, R) class per region for masked region prediction, and the number of classes."""
    uses_regions = cfg.model.image_input == "regions" and cfg.model.segments and cfg.loss.context_weight > 0
    if not uses_regions:
        return None, 0
    choice = cfg.loss.region_targets
    if choice == "auto":
        choice = "labels" if dataset.region_labels is not None else "kmeans"
    if choice == "labels":
        if dataset.region_labels is None:
            raise SemshareError(f"{dataset.root}: loss.region_targets=labels needs region_labels.npy")
        targets = np.asarray(dataset.region_labels, dtype=np.int64)
        return targets, int(targets.max()) + 1
    if choice != "kmeans":
        raise ConfigError(f"unknown loss.region_targets {choice!r}; expected auto, labels or kmeans")
    from semshare.data.region_clusters import fit_region_clusters

    return fit_region_clusters(dataset, train_rows, cfg.loss.kmeans_k, seed=cfg.train.seed)


@dataclass
class PreparedRun:
    cfg: ExperimentConfig
    dataset: Dataset
    model: torch.nn.Module
    vocab: Vocabulary | None
    train_rows: np.ndarray
    val_rows: np.ndarray
    region_targets: np.ndarray | None
    text_segments: TextSegments | None = None
    segment_targets: np.ndarray | None = None  # word-piece id -> masked-word class

    def batch_options(self, training: bool) -> BatchOptions:
        return BatchOptions(image_input=self.cfg.model.image_input, text_input=self.cfg.model.text_input,
                            max_text_length=self.cfg.model.max_text_length,
                            mask_prob=self.cfg.loss.mask_prob if training else 0.0,
                            sentence_segment=self.cfg.text.segments_sentence)

    def builder(self, training: bool) -> BatchBuilder:
        return BatchBuilder(self.dataset, self.vocab, self.batch_options(training),
                            self.region_targets if training else None, self.text_segments, self.segment_targets)


SEGMENT_VOCAB_FILE = "segment_vocab.json"


def _open_segments(dataset: Dataset, data_dir: str | Path, cfg: ExperimentConfig) -> TextSegments:
    if not dataset.has_captions:
        raise SemshareError(f"{dataset.root}: model.text_input=segments needs captions.jsonl (the text items)")
    folder = cfg.text.segments_dir or default_segments_dir(data_dir, cfg.text.segments_encoder)
    return open_text_segments(folder, int(dataset.caption_offsets[-1]))


def prepare_run(data_dir: str | Path, cfg: ExperimentConfig, run_dir: str | Path) -> PreparedRun:
    """Build vocabulary, word vectors, region targets and the model from the training split; save them."""
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    dataset = open_dataset(data_dir)
    train_rows, val_rows = training_rows(dataset, cfg.train)
    vocab, word_vectors = None, None
    text_segments, segment_targets = None, None
    if cfg.model.text_input == "words":
        if not dataset.has_captions:
            raise SemshareError(f"{dataset.root}: model.text_input=words needs captions.jsonl "
                                "(or use --set model.text_input=vector with text.npy)")
        texts = dataset.text_items(train_rows).texts
        vocab = Vocabulary.build(texts, min_count=cfg.text.min_count)
        if cfg.text.word_vectors_path:
            word_vectors, _ = load_word2vec_file(cfg.text.word_vectors_path, vocab, seed=cfg.train.seed)
        else:
            word_vectors = train_word2vec(texts, vocab, Word2VecConfig(dim=cfg.text.word_dim,
                                                                       epochs=cfg.text.word2vec_epochs),
                                          seed=cfg.train.seed)
        vocab.save(run_dir / "vocab.json")
    elif cfg.model.text_input == "segments":
        text_segments = _open_segments(dataset, data_dir, cfg)
        word_pieces = training_word_pieces(text_segments, dataset.text_items(train_rows).item_ids)
        segment_targets = target_lookup(word_pieces, int(text_segments.meta["vocab_size"]))
        atomic_write_json(run_dir / SEGMENT_VOCAB_FILE, {"encoder": text_segments.meta["encoder"],
                                                         "vocab_size": int(text_segments.meta["vocab_size"]),
                                                         "word_pieces": word_pieces.tolist()})
    elif dataset.text_vectors is None:
        raise SemshareError(f"{dataset.root}: model.text_input=vector needs text.npy")
    region_targets, num_region_classes = _region_targets(dataset, cfg, train_rows)
    if cfg.model.image_input == "regions":
        if dataset.regions is None:
            raise SemshareError(f"{dataset.root}: model.image_input=regions needs regions.npy "
                                "(or use --set model.image_input=global with image.npy)")
        region_dim = int(dataset.regions.shape[2])
    else:
        if dataset.image is None:
            raise SemshareError(f"{dataset.root}: model.image_input=global needs image.npy")
        region_dim = int(dataset.image.shape[1])
    if text_segments is not None:
        text_dim, vocab_size = text_segments.dim, int(segment_targets.max()) + 1
    else:
        text_dim = int(dataset.text_vectors.shape[1]) if dataset.text_vectors is not None else 0
        vocab_size = len(vocab) if vocab else 0
    spec = ModelSpec(
        num_labels=dataset.num_labels, region_dim=region_dim, text_dim=text_dim, vocab_size=vocab_size,
        word_dim=int(word_vectors.shape[1]) if word_vectors is not None else 0,
        mask_id=vocab.mask_id if vocab else 2, num_region_classes=num_region_classes,
    )
    torch.manual_seed(cfg.train.seed)
    model = build_model(cfg, spec, word_vectors)
    save_yaml(run_dir / "config.yaml", cfg)
    atomic_write_json(run_dir / "model_spec.json", to_dict(spec))
    atomic_write_json(run_dir / "splits.json", {"data_dir": str(Path(data_dir).resolve()),
                                                "train": train_rows.tolist(), "val": val_rows.tolist()})
    return PreparedRun(cfg, dataset, model, vocab, train_rows, val_rows, region_targets, text_segments,
                       segment_targets)


def load_run(run_dir: str | Path, data_dir: str | Path, checkpoint: str = "best") -> PreparedRun:
    """Rebuild a trained run's model from its folder (config.yaml, model_spec.json, vocab.json, weights)."""
    from semshare.training.checkpoint import load_checkpoint

    run_dir = Path(run_dir)
    if not (run_dir / "config.yaml").exists():
        raise SemshareError(f"{run_dir}: not a run folder (config.yaml missing)")
    cfg = from_dict(ExperimentConfig, load_yaml(run_dir / "config.yaml"))
    spec = from_dict(ModelSpec, json.loads((run_dir / "model_spec.json").read_text()))
    vocab = Vocabulary.load(run_dir / "vocab.json") if (run_dir / "vocab.json").exists() else None
    dataset = open_dataset(data_dir, check_values=False)
    if dataset.num_labels != spec.num_labels:
        raise SemshareError(f"{data_dir}: {dataset.num_labels} labels, but the run was trained on {spec.num_labels}")
    text_segments, segment_targets = None, None
    if cfg.model.text_input == "segments":
        text_segments = _open_segments(dataset, data_dir, cfg)
        saved = json.loads((run_dir / SEGMENT_VOCAB_FILE).read_text())
        segment_targets = target_lookup(np.array(saved["word_pieces"], dtype=np.int64), saved["vocab_size"])
    model = build_model(cfg, spec)
    load_checkpoint(run_dir / checkpoint, model)
    model.eval()
    splits = json.loads((run_dir / "splits.json").read_text())
    return PreparedRun(cfg, dataset, model, vocab, np.array(splits["train"]), np.array(splits["val"]), None,
                       text_segments, segment_targets)


def evaluate_model_rows(model, run: PreparedRun, builder: BatchBuilder, rows: np.ndarray, spec: MetricSpec,
                        device="cpu", batch_size: int = 256, shortlist: int | None = None) -> dict[str, float]:
    """The default protocol on `rows` for any trained method (pairwise scorers re-rank the top `shortlist`
    first-stage candidates, the config's `vilbert.shortlist` by default)."""
    text_source = text_source_for(run.cfg.model.text_input)
    if hasattr(model, "fit_retrieval"):  # methods with a fitted retrieval space (DCCA's linear CCA)
        model.fit_retrieval(builder, run.train_rows)
    if getattr(model, "pairwise_scoring", False):
        from semshare.evaluation.rerank import evaluate_pairwise_rows

        return evaluate_pairwise_rows(model, builder, run.dataset, rows, text_source, spec,
                                      shortlist or run.cfg.vilbert.shortlist, device)[0]
    img, txt = embed_rows(model, builder, rows, batch_size, device)
    return evaluate_rows(run.dataset, img, txt, rows, text_source, spec)


def validation_function(run: PreparedRun, batch_size: int = 256):
    builder = run.builder(training=False)
    spec = MetricSpec(ndcg_k=(500,), map_k=(None,))

    def validate(model) -> dict[str, float]:
        device = next(model.parameters()).device
        return evaluate_model_rows(model, run, builder, run.val_rows, spec, device, batch_size,
                                   shortlist=run.cfg.vilbert.validation_shortlist)

    return validate


def train_experiment(data_dir: str | Path, cfg: ExperimentConfig, run_dir: str | Path, resume: bool = False,
                     context: DistributedContext = DistributedContext()) -> dict:
    """Prepare (or re-prepare, deterministically) the run, then fit it with the one loop."""
    run = prepare_run(data_dir, cfg, run_dir)
    if cfg.train.batch_size > len(run.train_rows):
        raise SemshareError(f"batch size {cfg.train.batch_size} exceeds the {len(run.train_rows)} training items; "
                            "lower --set train.batch_size")
    batches = TrainingBatches(run.builder(training=True), run.train_rows, cfg.train.batch_size, cfg.train.seed,
                              context.rank, context.world_size)
    return fit(run.model, batches, validation_function(run), cfg.train, run_dir, resume, context)
