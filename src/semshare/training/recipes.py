"""Config composition: a run's resolved ExperimentConfig from defaults, a preset, a recipe, files and flags.

Later layers win: the method's config defaults < preset (`configs/preset/P.yaml`) < recipe
(`configs/method/NAME.yaml`: which registered method, and its settings) < `--config FILE.yaml` < `--set
key=value`. Any layer may carry a `models:` block of settings keyed by registered method; a run takes only
its own method's block (so one preset or experiment file sizes every method).
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

import numpy as np

from semshare.config import apply_overrides, config_dir, from_dict, load_yaml, recipe_names, to_dict  # noqa: F401
from semshare.errors import ConfigError
from semshare.methods import DEFAULT_METHOD, DEFAULT_RECIPE  # importing semshare.methods registers every method
from semshare.methods.base import IMAGE_INPUTS, TEXT_INPUTS, InputConfig
from semshare.registry import METHODS
from semshare.training.loop import DECAYS, OPTIMIZERS, PRECISIONS, TrainConfig

CONFIG_KINDS = ("method", "preset", "experiment")
TEXT_SOURCES = {"word2vec-bigru": "words", "sentence-vector": "vector", "minilm": "segments"}


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
    if not isinstance(per_method, dict):
        raise ConfigError(f"models: expected a mapping of method name -> settings, got {per_method!r}")
    for key, value in dotted.items():
        _, name, rest = (key.split(".", 2) + [""])[:3]
        _check_method_key(key, name, rest.split(".")[0])
        if name == method and rest:
            layer[f"model.{rest}"] = value
    for name, settings in per_method.items():
        if not isinstance(settings, dict):
            raise ConfigError(f"models.{name}: expected a mapping of settings, got {settings!r}")
        for key in settings:
            _check_method_key(f"models.{name}.{key}", name, str(key))
    if method in per_method:
        layer = {**layer, "model": {**(layer.get("model") or {}), **per_method[method]}}
    return layer


def _check_method_key(key: str, name: str, field_name: str) -> None:
    """A `models.NAME.FIELD` setting names a registered method and one of its config's fields (a setting for
    another method is kept for that method, but a typo is never silently ignored)."""
    if name not in METHODS:
        raise ConfigError(f"{key}: expected a registered method after 'models.', found {name!r}; "
                          f"known: {', '.join(METHODS.names())}")
    known = [f.name for f in fields(METHODS.get(name).config_class)]
    if field_name not in known:
        raise ConfigError(f"{key}: expected a field of {name}'s config, found {field_name!r}; known: {', '.join(known)}")


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
    # numpy and torch seed from 32-bit words: a negative or larger seed is a traceback deep inside them
    _expect(0 <= t.seed < 2**32, "train.seed", "an integer in 0..4294967295", t.seed)
    _expect(t.lr > 0 and np.isfinite(t.lr), "train.lr", "a positive number", t.lr)
    _expect(0 < t.val_fraction < 1, "train.val_fraction", "a fraction between 0 and 1", t.val_fraction)
    for key in ("grad_clip", "weight_decay"):
        _expect(getattr(t, key) >= 0, f"train.{key}", "a number >= 0", getattr(t, key))
    for key, value, options in (("train.optimizer", t.optimizer, OPTIMIZERS), ("train.decay", t.decay, DECAYS),
                                ("train.precision", t.precision, PRECISIONS),
                                ("inputs.image", cfg.inputs.image, IMAGE_INPUTS), ("inputs.text", cfg.inputs.text, TEXT_INPUTS)):
        _expect(value in options, key, f"one of {', '.join(options)}", value)
    _expect(t.device in ("auto", "cpu", "cuda") or t.device.startswith("cuda:"), "train.device",
            "auto, cpu, cuda or cuda:N", t.device)
    if t.device.startswith("cuda"):
        import torch

        _expect(torch.cuda.is_available(), "train.device", "auto or cpu on this machine (this torch "
                f"{torch.__version__} sees no CUDA device)", t.device)
    _expect(cfg.inputs.max_text_length >= 1, "inputs.max_text_length", "an integer >= 1", cfg.inputs.max_text_length)
    _expect(isinstance(cfg.inputs.file_layout_prob, (int, float)) and 0 <= cfg.inputs.file_layout_prob <= 1,
            "inputs.file_layout_prob", "a fraction in [0, 1]", cfg.inputs.file_layout_prob)
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
