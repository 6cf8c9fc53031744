"""An experiment = a resolved config + prepared inputs (vocabulary, word vectors, region targets) + a run dir.

Config composition, later layers win: the method's config defaults < preset (`configs/preset/P.yaml`)
< recipe (`configs/method/NAME.yaml`: which registered method, and its settings) < `--config FILE.yaml`
< `--set key=value`. Any layer may carry a `models:` block of settings keyed by registered method; a run
takes only its own method's block (so one preset or experiment file sizes every method). The resolved
config is saved as `config.yaml` in the run dir, next to `model_spec.json` (sizes read from the data),
`vocab.json` and `splits.json` (the rows used), and inside every checkpoint.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field, replace
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
import torch

from semshare.methods import DEFAULT_METHOD, DEFAULT_RECIPE  # importing semshare.methods registers every method
from semshare.config import apply_overrides, from_dict, load_yaml, save_yaml, to_dict
from semshare.data.batches import BatchBuilder, BatchOptions, TrainingBatches, text_source_for
from semshare.data.dataset import Dataset, open_dataset
from semshare.data.text import Vocabulary
from semshare.data.text_segments import (TextSegments, default_segments_dir, open_text_segments, target_lookup,
                                         training_word_pieces)
from semshare.data.word_vectors import Word2VecConfig, load_word2vec_file, train_word2vec
from semshare.errors import ConfigError, SemshareError
from semshare.fileio import atomic_write_json
from semshare.methods.base import IMAGE_INPUTS, TEXT_INPUTS, InputConfig, ModelSpec, RegionTargetRequest
from semshare.registry import METHODS
from semshare.training.loop import DistributedContext, TrainConfig, fit

logger = logging.getLogger(__name__)

CONFIG_KINDS = ("method", "preset", "experiment")
TEXT_SOURCES = {"word2vec-bigru": "words", "sentence-vector": "vector", "minilm": "segments"}


def config_dir(kind: str) -> Path:
    """The shipped YAML folder of one kind (configs/method, configs/preset, configs/experiment)."""
    return Path(str(resources.files("semshare") / "configs" / kind))


def recipe_names() -> list[str]:
    return sorted(p.stem for p in config_dir("method").glob("*.yaml"))


def known_methods() -> list[str]:
    """What `--method` accepts: every recipe, and every registered method (run with its defaults)."""
    return sorted(set(recipe_names()) | set(METHODS.names()))


@dataclass(frozen=True)
class TextConfig:
    # the text side in one word: word2vec-bigru (inputs.text=words), sentence-vector (vector: text.npy),
    # minilm (segments: MiniLM token states from `semshare extract-text`); empty = inputs.text decides
    source: str = ""
    min_count: int = 1
    word_dim: int = 300  # Word2Vec size when trained here
    word2vec_epochs: int = 10
    word_vectors_path: str = ""  # a word2vec .bin / .txt file to load instead of training
    segments_encoder: str = "minilm"  # inputs.text=segments: which extracted encoder
    segments_dir: str = ""  # where its folder is; default DATA_DIR/text_segments/<segments_encoder>
    segments_sentence: bool = False  # add the encoder's own sentence vector as a first text segment
    # closed-form methods on captions: bow (mean one-hot of the words) | word2vec (mean of Word2Vec vectors
    # learned on the training captions, seeded)
    pooled: str = "bow"
    deep_features_run: str = ""  # closed-form methods fitted on this trained run's pooled features instead


@dataclass(frozen=True)
class ExperimentConfig:
    name: str = DEFAULT_RECIPE  # the recipe (configs/method/NAME.yaml) or registered method asked for
    method: str = DEFAULT_METHOD  # the registered method class (semshare.registry.METHODS)
    display_name: str = ""  # row name in tables; empty: the method class's own
    needs_segments: bool = False  # the recipe's point is a set of segments: left out on one-vector data
    preset: str = "small"
    inputs: InputConfig = field(default_factory=InputConfig)
    model: Any = None  # the method's own config dataclass (METHODS.get(method).config_class)
    train: TrainConfig = field(default_factory=TrainConfig)
    text: TextConfig = field(default_factory=TextConfig)

    @property
    def method_class(self) -> type:
        return METHODS.get(self.method)

    @property
    def row_name(self) -> str:
        return self.display_name or self.method_class.display_name or self.name


def _split_per_method(layer: dict, method: str) -> dict:
    """A config layer without its `models:` block, plus that block's entry for `method` under `model`."""
    layer = dict(layer)
    per_method = layer.pop("models", None) or {}
    dotted = {k: layer.pop(k) for k in [k for k in layer if k.startswith("models.")]}
    for key, value in dotted.items():
        _, name, rest = (key.split(".", 2) + [""])[:3]
        if name == method and rest:
            layer[f"model.{rest}"] = value
    if not isinstance(per_method, dict):
        raise ConfigError(f"models: expected a mapping of method name -> settings, got {per_method!r}")
    if method in per_method:
        layer = {**layer, "model": {**(layer.get("model") or {}), **per_method[method]}}
    return layer


def experiment_config_from_dict(values: dict, where: str = "config") -> ExperimentConfig:
    """Typed ExperimentConfig from a plain dict (a saved config.yaml): `model` typed by its method's class."""
    values = dict(values)
    method = values.get("method", ExperimentConfig.method)
    config_class = METHODS.get(method).config_class
    model = from_dict(config_class, values.pop("model", None) or {}, prefix="model.")
    try:
        return replace(from_dict(ExperimentConfig, values), model=model)
    except ConfigError as exc:
        raise ConfigError(f"{where}: {exc}") from None


def resolve_config(name: str = DEFAULT_RECIPE, preset: str = "small",
                   config_file: str | Path | list[str | Path] | None = None,
                   overrides: dict | None = None) -> ExperimentConfig:
    """Compose defaults < preset < recipe < config file(s), in order < overrides for the recipe or method `name`."""
    recipe_path = config_dir("method") / f"{name}.yaml"
    if recipe_path.exists():
        recipe = load_yaml(recipe_path)
    elif name in METHODS:
        recipe = {"method": name}
    else:
        raise ConfigError(f"unknown method {name!r}; known: {', '.join(known_methods())}")
    preset_path = config_dir("preset") / f"{preset}.yaml"
    if not preset_path.exists():
        known = sorted(p.stem for p in config_dir("preset").glob("*.yaml"))
        raise ConfigError(f"unknown preset {preset!r}; known: {', '.join(known)}")
    method = recipe.get("method", name)
    values = to_dict(ExperimentConfig(name=name, method=method, preset=preset,
                                      model=METHODS.get(method).config_class()))
    layers = [(preset_path, load_yaml(preset_path)), (recipe_path, recipe)]
    files = config_file if isinstance(config_file, (list, tuple)) else [config_file] if config_file else []
    layers += [(Path(f), load_yaml(f)) for f in files]
    layers.append(("--set", overrides or {}))
    for source, layer in layers:
        layer = _split_per_method(layer, method)
        if layer.get("method", method) != method:
            raise ConfigError(f"{source}: method is {method!r} (from the recipe {name!r}); a later layer may "
                              f"not change it to {layer['method']!r}")
        apply_overrides(values, layer)
    cfg = experiment_config_from_dict(values)
    if cfg.text.source:
        if cfg.text.source not in TEXT_SOURCES:
            raise ConfigError(f"unknown text.source {cfg.text.source!r}; known: {', '.join(TEXT_SOURCES)}")
        text_input = TEXT_SOURCES[cfg.text.source]
        cfg = replace(cfg, inputs=replace(cfg.inputs, text=text_input))
        if text_input == "segments":
            cfg = replace(cfg, text=replace(cfg.text, segments_encoder=cfg.text.source))
    check_values(cfg)
    return cfg


def _expect(ok: bool, key: str, expected: str, found) -> None:
    if not ok:
        raise ConfigError(f"{key}: expected {expected}, found {found!r}")


def check_values(cfg: ExperimentConfig) -> None:
    """Values every run needs in range; one ConfigError naming the key (the types were checked on parse)."""
    t = cfg.train
    for key, value, low in (("batch_size", t.batch_size, 1), ("epochs", t.epochs, 0), ("max_steps", t.max_steps, 0),
                            ("log_every", t.log_every, 1), ("patience", t.patience, 0),
                            ("warmup_steps", t.warmup_steps, 0)):
        _expect(value >= low, f"train.{key}", f"an integer >= {low}", value)
    _expect(t.lr > 0 and np.isfinite(t.lr), "train.lr", "a positive number", t.lr)
    _expect(0 < t.val_fraction < 1, "train.val_fraction", "a fraction between 0 and 1", t.val_fraction)
    for key in ("grad_clip", "weight_decay"):
        _expect(getattr(t, key) >= 0, f"train.{key}", "a number >= 0", getattr(t, key))
    for key, value, options in (("train.optimizer", t.optimizer, ("adam", "adamw", "sgd")),
                                ("train.decay", t.decay, ("none", "linear", "cosine")),
                                ("train.precision", t.precision, ("auto", "fp32", "bf16")),
                                ("inputs.image", cfg.inputs.image, IMAGE_INPUTS), ("inputs.text", cfg.inputs.text, TEXT_INPUTS)):
        _expect(value in options, key, f"one of {', '.join(options)}", value)
    _expect(t.device in ("auto", "cpu", "cuda") or t.device.startswith("cuda:"), "train.device",
            "auto, cpu, cuda or cuda:N", t.device)
    _expect(cfg.inputs.max_text_length >= 1, "inputs.max_text_length", "an integer >= 1", cfg.inputs.max_text_length)
    for key in ("min_count", "word_dim", "word2vec_epochs"):
        _expect(getattr(cfg.text, key) >= 1, f"text.{key}", "an integer >= 1", getattr(cfg.text, key))
    cfg.method_class.check_config(cfg.model)


def unsupported_inputs(cfg: ExperimentConfig) -> str:
    """Why the method cannot read the run's inputs ('' when it can)."""
    cls = cfg.method_class
    if cfg.inputs.image not in cls.image_inputs:
        return f"reads images as {'/'.join(cls.image_inputs)}, not {cfg.inputs.image}"
    if cfg.inputs.text not in cls.text_inputs:
        return f"reads texts as {'/'.join(cls.text_inputs)}, not {cfg.inputs.text}"
    return ""


def training_rows(dataset: Dataset, cfg: TrainConfig) -> tuple[np.ndarray, np.ndarray]:
    """(train rows, val rows); val is carved from train (seeded) when the data has none."""
    train, val = dataset.split("train"), dataset.split("val")
    if len(val):
        return train, val
    count = max(1, int(round(cfg.val_fraction * len(train))))
    shuffled = np.random.default_rng([cfg.seed, 0xCA5E]).permutation(train)
    logger.info("no val split in %s: carving %d of %d training rows (seed %d)", dataset.root, count, len(train), cfg.seed)
    return np.sort(shuffled[count:]), np.sort(shuffled[:count])


def _region_targets(dataset: Dataset, request: RegionTargetRequest | None, train_rows: np.ndarray,
                    seed: int) -> tuple[np.ndarray | None, int]:
    """(N, R) class per region for masked region prediction, and the number of classes."""
    if request is None:
        return None, 0
    choice = request.source
    if choice == "auto":
        choice = "labels" if dataset.region_labels is not None else "kmeans"
    if choice == "labels":
        if dataset.region_labels is None:
            raise SemshareError(f"{dataset.root}: region targets 'labels' need region_labels.npy")
        targets = np.asarray(dataset.region_labels, dtype=np.int64)
        return targets, int(targets.max()) + 1
    if choice != "kmeans":
        raise ConfigError(f"unknown region targets {choice!r}; expected auto, labels or kmeans")
    from semshare.data.region_clusters import fit_region_clusters

    return fit_region_clusters(dataset, train_rows, request.kmeans_k, seed=seed)


@dataclass
class PreparedRun:
    """A trained method's run: config, data, model and the inputs its batches are built from."""

    cfg: ExperimentConfig
    dataset: Dataset
    model: torch.nn.Module
    vocab: Vocabulary | None
    train_rows: np.ndarray
    val_rows: np.ndarray
    region_targets: np.ndarray | None
    text_segments: TextSegments | None = None
    segment_targets: np.ndarray | None = None  # word-piece id -> masked-word class

    @property
    def pairwise_scoring(self) -> bool:
        return self.cfg.method_class.pairwise_scoring

    @property
    def text_source(self) -> str:
        return text_source_for(self.cfg.inputs.text)

    def batch_options(self, training: bool) -> BatchOptions:
        mask_prob = self.cfg.method_class.training_mask_prob(self.cfg.model) if training else 0.0
        return BatchOptions(image_input=self.cfg.inputs.image, text_input=self.cfg.inputs.text,
                            max_text_length=self.cfg.inputs.max_text_length, mask_prob=mask_prob,
                            sentence_segment=self.cfg.text.segments_sentence)

    def builder(self, training: bool) -> BatchBuilder:
        return BatchBuilder(self.dataset, self.vocab, self.batch_options(training),
                            self.region_targets if training else None, self.text_segments, self.segment_targets)

    def embed(self, rows: np.ndarray, sides: tuple[str, ...] = ("image", "text"), device="cpu", batch_size: int = 256):
        """(image table, text table) of `rows` and all their text items."""
        from semshare.evaluation.embed import embed_rows

        return embed_rows(self.model, self.builder(training=False), rows, batch_size, device, sides)


SEGMENT_VOCAB_FILE = "segment_vocab.json"


def _open_segments(dataset: Dataset, cfg: ExperimentConfig) -> TextSegments:
    if not dataset.has_captions:
        raise SemshareError(f"{dataset.root}: inputs.text=segments needs captions.jsonl (the text items)")
    folder = cfg.text.segments_dir or default_segments_dir(dataset.root, cfg.text.segments_encoder)
    return open_text_segments(folder, int(dataset.caption_offsets[-1]))


def _prepare_words(dataset: Dataset, cfg: ExperimentConfig, train_rows: np.ndarray) -> tuple[Vocabulary, np.ndarray]:
    if not dataset.has_captions:
        raise SemshareError(f"{dataset.root}: inputs.text=words needs captions.jsonl "
                            "(or use --set inputs.text=vector with text.npy)")
    texts = dataset.text_items(train_rows).texts
    vocab = Vocabulary.build(texts, min_count=cfg.text.min_count)
    if cfg.text.word_vectors_path:
        word_vectors, _ = load_word2vec_file(cfg.text.word_vectors_path, vocab, seed=cfg.train.seed)
    else:
        word_vectors = train_word2vec(texts, vocab, Word2VecConfig(dim=cfg.text.word_dim, epochs=cfg.text.word2vec_epochs),
                                      seed=cfg.train.seed)
    return vocab, word_vectors


def _image_dim(dataset: Dataset, image_input: str) -> int:
    if image_input == "regions":
        if dataset.regions is None:
            raise SemshareError(f"{dataset.root}: inputs.image=regions needs regions.npy "
                                "(or use --set inputs.image=global with image.npy)")
        return int(dataset.regions.shape[2])
    if dataset.image is None:
        raise SemshareError(f"{dataset.root}: inputs.image=global needs image.npy")
    return int(dataset.image.shape[1])


FINGERPRINT_FILE = "data_fingerprint.json"


def data_fingerprint(dataset: Dataset) -> dict:
    """What a run was trained on: the folder, its sizes, and hashes of its labels and splits."""
    import hashlib

    labels = hashlib.sha256()
    for start in range(0, dataset.num_items, 65536):
        labels.update(np.ascontiguousarray(dataset.labels[start : start + 65536]).tobytes())
    splits = hashlib.sha256(json.dumps({k: np.asarray(v).tolist() for k, v in sorted(dataset.splits.items())}).encode())
    return {"path": str(Path(dataset.root).resolve()), "num_items": dataset.num_items,
            "num_labels": dataset.num_labels, "labels_sha256": labels.hexdigest(), "splits_sha256": splits.hexdigest()}


def save_run_description(run_dir: Path, cfg: ExperimentConfig, spec: ModelSpec, dataset: Dataset,
                         train_rows: np.ndarray, val_rows: np.ndarray) -> None:
    save_yaml(run_dir / "config.yaml", cfg)
    atomic_write_json(run_dir / "model_spec.json", to_dict(spec))
    atomic_write_json(run_dir / "splits.json", {"data_dir": str(Path(dataset.root).resolve()),
                                                "train": train_rows.tolist(), "val": val_rows.tolist()})
    atomic_write_json(run_dir / FINGERPRINT_FILE, data_fingerprint(dataset))


def config_differences(old, new, prefix: str = "") -> list[tuple[str, object, object]]:
    """(dotted key, old value, new value) for every leaf where two config dicts differ."""
    if isinstance(old, dict) and isinstance(new, dict):
        keys = list(dict.fromkeys([*old, *new]))
        return [d for k in keys for d in config_differences(old.get(k), new.get(k), f"{prefix}{k}.")]
    return [] if old == new else [(prefix.rstrip("."), old, new)]


# settings that change how fast a run goes or what it prints, never what it learns: a finished or resumed run
# is the same run whatever they are (and a run saved before one of them existed still matches)
RESULT_NEUTRAL_KEYS = ("train.progress", "train.log_every", "train.tensorboard", "train.prefetch_batches")


def result_differences(old: dict, new: dict) -> list[tuple[str, object, object]]:
    """config_differences without the result-neutral settings."""
    return [d for d in config_differences(old, new) if d[0] not in RESULT_NEUTRAL_KEYS]


def check_resume(run_dir: Path, cfg: ExperimentConfig, dataset: Dataset, allow_change: tuple[str, ...] = ()) -> None:
    """A resumed run must be the run it continues: same resolved config (but for `allow_change` fields)
    and same data. Checked before anything is written; the error names the field and both values."""
    saved = load_yaml(run_dir / "config.yaml")
    for key, old, new in result_differences(saved, to_dict(cfg)):
        if not any(key == field or key.startswith(field + ".") for field in allow_change):
            raise ConfigError(f"{run_dir / 'config.yaml'}: {key}: the run has {old!r}, this command gives {new!r}; "
                              f"--resume continues the run as it was (use another --out, or --allow-change {key})")
    fingerprint_path = run_dir / FINGERPRINT_FILE
    if fingerprint_path.exists():
        saved_data = json.loads(fingerprint_path.read_text())
        for key, old, new in config_differences(saved_data, data_fingerprint(dataset)):
            raise SemshareError(f"{fingerprint_path}: {key}: the run was trained on {old!r}, --data gives {new!r}; "
                                "resume with the run's own data")


def _check_prepared_matches(run_dir: Path, spec: ModelSpec, vocab: Vocabulary | None) -> None:
    saved_spec = json.loads((run_dir / "model_spec.json").read_text())
    for key, old, new in config_differences(saved_spec, to_dict(spec)):
        raise SemshareError(f"{run_dir / 'model_spec.json'}: {key}: the run has {old!r}, the data now gives {new!r}")
    if vocab is not None and (run_dir / "vocab.json").exists():
        if Vocabulary.load(run_dir / "vocab.json").tokens != vocab.tokens:
            raise SemshareError(f"{run_dir / 'vocab.json'}: tokens: the training captions now give another vocabulary")


def prepare_run(data_dir: str | Path, cfg: ExperimentConfig, run_dir: str | Path,
                dataset: Dataset | None = None, write: bool = True) -> PreparedRun:
    """Build vocabulary, word vectors, region targets and the model from the training split; save them
    (`write=False`, for a resume: check they equal the run's saved ones instead)."""
    run_dir = Path(run_dir)
    cls = cfg.method_class
    if cls.closed_form:
        raise SemshareError(f"{cfg.name} is fitted in closed form; it has no model to prepare for the loop")
    problem = unsupported_inputs(cfg)
    if problem:
        raise ConfigError(f"{cfg.name} {problem} (inputs.image / inputs.text)")
    dataset = dataset or open_dataset(data_dir)
    train_rows, val_rows = training_rows(dataset, cfg.train)
    vocab, word_vectors, text_segments, segment_targets, word_pieces = None, None, None, None, None
    if cfg.inputs.text == "words":
        vocab, word_vectors = _prepare_words(dataset, cfg, train_rows)
    elif cfg.inputs.text == "segments":
        text_segments = _open_segments(dataset, cfg)
        word_pieces = training_word_pieces(text_segments, dataset.text_items(train_rows).item_ids)
        segment_targets = target_lookup(word_pieces, int(text_segments.meta["vocab_size"]))
    elif dataset.text_vectors is None:
        raise SemshareError(f"{dataset.root}: inputs.text=vector needs text.npy")
    region_targets, num_region_classes = _region_targets(dataset, cls.region_targets_wanted(cfg.model, cfg.inputs),
                                                         train_rows, cfg.train.seed)
    region_dim = _image_dim(dataset, cfg.inputs.image)
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
    model = METHODS.build(cfg.method, cfg.model, spec, cfg.inputs, word_vectors)
    prepared = PreparedRun(cfg, dataset, model, vocab, train_rows, val_rows, region_targets, text_segments,
                           segment_targets)
    if not write:
        _check_prepared_matches(run_dir, spec, vocab)
        return prepared
    run_dir.mkdir(parents=True, exist_ok=True)
    if vocab is not None:
        vocab.save(run_dir / "vocab.json")
    if text_segments is not None:
        atomic_write_json(run_dir / SEGMENT_VOCAB_FILE, {"encoder": text_segments.meta["encoder"],
                                                         "vocab_size": int(text_segments.meta["vocab_size"]),
                                                         "word_pieces": word_pieces.tolist()})
    save_run_description(run_dir, cfg, spec, dataset, train_rows, val_rows)
    return prepared


def read_run_config(run_dir: Path) -> tuple[ExperimentConfig, ModelSpec]:
    if not (run_dir / "config.yaml").exists():
        raise SemshareError(f"{run_dir}: not a run folder (config.yaml missing)")
    from semshare.training.checkpoint import _read_json

    cfg = experiment_config_from_dict(load_yaml(run_dir / "config.yaml"), str(run_dir / "config.yaml"))
    try:
        spec = from_dict(ModelSpec, _read_json(run_dir / "model_spec.json", "the model's sizes (ModelSpec)"))
    except ConfigError as exc:
        raise ConfigError(f"{run_dir / 'model_spec.json'}: {exc}") from None
    return cfg, spec


def load_run(run_dir: str | Path, data_dir: str | Path, checkpoint: str = "best", dataset: Dataset | None = None):
    """Rebuild a finished run from its folder: a PreparedRun (trained methods) or a ClosedFormRun."""
    from semshare.training.checkpoint import load_checkpoint

    run_dir = Path(run_dir)
    cfg, spec = read_run_config(run_dir)
    dataset = dataset or open_dataset(data_dir, check_values=False)
    if dataset.num_labels != spec.num_labels:
        raise SemshareError(f"{data_dir}: {dataset.num_labels} labels, but the run was trained on {spec.num_labels}")
    if cfg.method_class.closed_form:
        from semshare.training.closed_form import load_closed_form_run

        return load_closed_form_run(run_dir, cfg, dataset)
    vocab = Vocabulary.load(run_dir / "vocab.json") if (run_dir / "vocab.json").exists() else None
    text_segments, segment_targets = None, None
    if cfg.inputs.text == "segments":
        text_segments = _open_segments(dataset, cfg)
        saved = json.loads((run_dir / SEGMENT_VOCAB_FILE).read_text())
        segment_targets = target_lookup(np.array(saved["word_pieces"], dtype=np.int64), saved["vocab_size"])
    model = METHODS.build(cfg.method, cfg.model, spec, cfg.inputs)
    load_checkpoint(run_dir / checkpoint, model)
    model.eval()
    splits = json.loads((run_dir / "splits.json").read_text())
    return PreparedRun(cfg, dataset, model, vocab, np.array(splits["train"]), np.array(splits["val"]), None,
                       text_segments, segment_targets)


def validation_function(run: PreparedRun, batch_size: int = 256):
    """Model selection on the validation rows: Ave NDCG@500 and mAP@all, pair scorers re-ranking."""
    from semshare.evaluation.evaluate import evaluate_run
    from semshare.evaluation.retrieval import MetricSpec

    builder = run.builder(training=False)
    spec = MetricSpec(ndcg_k=(500,), map_k=(None,))

    def validate(model) -> dict[str, float]:
        device = next(model.parameters()).device
        model.fit_retrieval(builder, run.train_rows)
        return evaluate_run(run, spec=spec, rows=run.val_rows, validation=True, device=device,
                            batch_size=batch_size)[0]

    return validate


def train_experiment(data_dir: str | Path, cfg: ExperimentConfig, run_dir: str | Path, resume: bool = False,
                     context: DistributedContext = DistributedContext(), dataset: Dataset | None = None,
                     allow_change: tuple[str, ...] = ()) -> dict:
    """Prepare the run, then fit it: the one loop, or one closed-form fit.

    `resume` with a checkpoint in RUN/last: the config (but for `allow_change` fields), the data and the
    prepared inputs must equal the run's; nothing in the folder is rewritten."""
    from semshare.training.checkpoint import checkpoint_exists

    if cfg.method_class.closed_form:
        from semshare.training.closed_form import fit_closed_form_run

        return fit_closed_form_run(data_dir, cfg, run_dir, dataset)
    run_dir = Path(run_dir)
    dataset = dataset or open_dataset(data_dir)
    resuming = resume and checkpoint_exists(run_dir / "last") and (run_dir / "config.yaml").exists()
    if resuming:
        check_resume(run_dir, cfg, dataset, allow_change)
    run = prepare_run(data_dir, cfg, run_dir, dataset, write=not resuming)
    if cfg.train.batch_size > len(run.train_rows):
        raise SemshareError(f"batch size {cfg.train.batch_size} exceeds the {len(run.train_rows)} training items; "
                            "lower --set train.batch_size")
    batches = TrainingBatches(run.builder(training=True), run.train_rows, cfg.train.batch_size, cfg.train.seed,
                              context.rank, context.world_size)
    return fit(run.model, batches, validation_function(run), cfg.train, run_dir, resuming, context,
               metadata={"config": to_dict(cfg), "model_spec": json.loads((Path(run_dir) / "model_spec.json").read_text())})
