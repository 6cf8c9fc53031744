"""The method protocol: what a retrieval method is, and all that shared code may ask of it.

Every method is built one way, from scratch and on load: `cls(cfg, spec, inputs, fitted)`, where `fitted`
is the dict of arrays computed once from the training split when the run was prepared (the Word2Vec
vectors of a words run under "word_vectors", plus whatever the method's own `fit_inputs` returns: a label
graph, label-name vectors, ...), saved in the run folder and handed back when the run is loaded.

A trained method (`TrainedMethod`) is an nn.Module with `encode_image(batch)` / `encode_text(batch)` -> (B, D)
and `training_step(batch)` -> dict of named losses with the total under "loss"; the one loop trains it.
A closed-form method (`ClosedFormMethod`) has `fit(PairedFeatures, seed) -> LinearEncoder`, solved in one step.
Capabilities are class attributes (and, where they depend on the config, class methods): shared code
reads them and never a method's name. Each method file registers its class with `@METHODS.register(name)`
and keeps its config dataclass beside it (`config_class`).
"""

from __future__ import annotations

from dataclasses import dataclass
from types import MappingProxyType
from typing import TYPE_CHECKING, ClassVar, Mapping

import numpy as np
import torch
from torch import nn

if TYPE_CHECKING:  # annotations only: the data layer sits below methods, nothing is imported at run time
    from semshare.data.dataset import Dataset
    from semshare.data.text import Vocabulary

IMAGE_INPUTS = ("regions", "global")
TEXT_INPUTS = ("words", "vector", "segments")


@dataclass(frozen=True)
class ModelSpec:
    """Sizes read from the data at setup; stored in the run so the model can be rebuilt to load weights."""

    num_labels: int
    region_dim: int
    text_dim: int = 0
    vocab_size: int = 0
    word_dim: int = 0
    mask_id: int = 2
    num_region_classes: int = 0


@dataclass(frozen=True)
class InputConfig:
    """What every method of a run reads from the data (shared code builds the batches from it)."""

    image: str = "regions"  # regions (features + boxes per region) | global (image.npy, one vector)
    # words (captions, Word2Vec + the method's text encoder) | vector (text.npy, one per row) |
    # segments (pretrained token states, e.g. MiniLM from `semshare extract-text`)
    text: str = "words"
    max_text_length: int = 64
    # share of training images shown as a new image file is read (data extracted with annotated boxes: the
    # global feature as the one region); 0 keeps the run from ever seeing that layout (docs/OWN_PHOTOS.md)
    file_layout_prob: float = 0.0


# what a method is built with when nothing was fitted (and what an old run folder without the file loads)
NOTHING_FITTED: Mapping[str, np.ndarray] = MappingProxyType({})
WORD_VECTORS = "word_vectors"  # the fitted entry of a words run: (vocab size, word dim) Word2Vec vectors


@dataclass(frozen=True)
class FitContext:
    """What a method's `fit_inputs` may read: the run's data, its training rows and the shared text inputs."""

    dataset: "Dataset"
    train_rows: np.ndarray  # (N,) dataset rows of the training split (validation rows excluded)
    inputs: InputConfig
    seed: int
    vocab: "Vocabulary | None" = None  # the run's vocabulary (words runs)
    word_vectors: np.ndarray | None = None  # (vocab size, word dim) vectors learned on the training texts


@dataclass(frozen=True)
class RegionTargetRequest:
    """A method's request for one class per region (masked region prediction)."""

    source: str = "auto"  # auto (detector classes if the data has them, else k-means) | labels | kmeans
    kmeans_k: int = 1000


class MethodBase:
    """Capabilities every method declares; the defaults fit a plain two-tower method."""

    config_class: ClassVar[type]  # the method's config dataclass (the run's `model:` section)
    display_name: ClassVar[str] = ""  # row name in tables (a recipe's `display_name` overrides it)
    image_inputs: ClassVar[tuple[str, ...]] = IMAGE_INPUTS  # inputs it can read
    text_inputs: ClassVar[tuple[str, ...]] = TEXT_INPUTS
    closed_form: ClassVar[bool] = False  # True: `fit` once on pooled features, no training loop
    deterministic: ClassVar[bool] = False  # the same result for every seed: one seed is enough
    label_classifier: ClassVar[bool] = False  # it predicts label probabilities (predict_labels): a query's reading
    pairwise_scoring: ClassVar[bool] = False  # scores (image, text) pairs jointly: evaluation re-ranks

    @classmethod
    def check_config(cls, cfg) -> None:
        """Raise ConfigError for a value out of range. Default: no negative or non-finite number anywhere in
        the config (sizes, counts, weights); methods add their own rules."""
        import dataclasses
        import math

        from semshare.errors import ConfigError

        def walk(config, prefix: str) -> None:
            for f in dataclasses.fields(config):
                value = getattr(config, f.name)
                if dataclasses.is_dataclass(value):
                    walk(value, f"{prefix}{f.name}.")
                elif isinstance(value, (int, float)) and not isinstance(value, bool):
                    if not math.isfinite(value) or value < 0:
                        raise ConfigError(f"{prefix}{f.name}: expected a number >= 0, found {value!r}")

        walk(cfg, "model.")

    @classmethod
    def fit_inputs(cls, cfg, context: FitContext) -> dict[str, np.ndarray]:
        """Arrays the method computes from the training split before it is built (default: none). They are
        saved with the run (safetensors) and passed to `__init__` as `fitted` when the run is built and when
        it is loaded, so the constructor must not compute them again."""
        return {}

    @classmethod
    def region_targets_wanted(cls, cfg, inputs: InputConfig) -> RegionTargetRequest | None:
        """Region classes to predict in training, or None (nothing is fitted for methods that ask none)."""
        return None

    @classmethod
    def training_mask_prob(cls, cfg) -> float:
        """Share of segments replaced by MASK in training batches (0: the batches carry no masks)."""
        return 0.0


class TrainedMethod(MethodBase, nn.Module):
    """A method the one loop trains. Subclasses build their modules in __init__(cfg, spec, inputs, fitted)."""

    def encode_image(self, batch) -> torch.Tensor:
        """(B, D) retrieval embedding of the batch's images."""
        raise NotImplementedError

    def encode_text(self, batch) -> torch.Tensor:
        """(B, D) retrieval embedding of the batch's texts."""
        raise NotImplementedError

    def training_step(self, batch) -> dict[str, torch.Tensor]:
        raise NotImplementedError

    def forward(self, batch) -> dict[str, torch.Tensor]:
        """forward = training_step, so DistributedDataParallel's hooks see the training computation."""
        return self.training_step(batch)

    def predict_labels(self, batch, side: str) -> torch.Tensor:
        """(B, C) label probabilities of the batch's images or texts: what the model read (a method with a
        label classifier answers; others have nothing to say)."""
        from semshare.errors import SemshareError

        raise SemshareError(f"{self.display_name or type(self).__name__} has no label classifier to read a query with")

    def encode_with_labels(self, batch, side: str) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, D) retrieval embedding and (B, C) label probabilities of the batch's images or texts. A method
        whose embedding and classifier share a forward pass overrides this to run it once."""
        emb = self.encode_image(batch) if side == "image" else self.encode_text(batch)
        return emb, self.predict_labels(batch, side)

    def encode_features(self, batch, side: str) -> torch.Tensor:
        """(B, D) "deep features" a linear method may be fitted on (default: the retrieval embedding)."""
        return self.encode_image(batch) if side == "image" else self.encode_text(batch)

    def on_epoch_start(self, epoch: int) -> None:
        """Declared training phases (SCML: text first, then image); the loop calls it every epoch."""

    def fit_retrieval(self, builder, train_rows: np.ndarray) -> None:
        """Fit a retrieval space on the trained outputs before evaluation (DCCA's linear CCA); default none."""

    def retrieval_spaces(self) -> tuple[str, ...]:
        """Retrieval spaces validation should choose between (each scored on every validation, the best kept
        with the checkpoint, all logged); default none: the method retrieves one way."""
        return ()

    def use_retrieval_space(self, name: str) -> None:
        """Retrieve in `name` (one of `retrieval_spaces()`) from now on; kept in the model's state."""
        raise NotImplementedError

    def rerank_shortlist(self, validation: bool) -> int:
        """Pair scorers: first-stage candidates per query that `score_pairs` re-orders."""
        return 0

    def score_pairs(self, img_batch, txt_batch) -> torch.Tensor:
        """(B,) joint scores of item i of img_batch with item i of txt_batch (pair scorers only)."""
        raise NotImplementedError


@dataclass
class PairedFeatures:
    """Pooled training features for a closed-form fit.

    img (N, Dx) one row per image; txt (M, Dy) every text item of those images; img_labels (N, C),
    txt_labels (M, C); first_text (N,) the index in `txt` of each image's first text (one-to-one pairs for
    two-view methods); val: the same for the validation rows, for methods that select on it.
    """

    img: np.ndarray
    txt: np.ndarray
    img_labels: np.ndarray
    txt_labels: np.ndarray
    first_text: np.ndarray
    val: "PairedFeatures | None" = None

    @property
    def paired_text(self) -> np.ndarray:
        return self.txt[self.first_text]


@dataclass
class LinearEncoder:
    """emb = (x - mean) @ weight + bias for each modality: what every closed-form method fits."""

    img_mean: np.ndarray
    img_weight: np.ndarray
    txt_mean: np.ndarray
    txt_weight: np.ndarray
    img_bias: np.ndarray | None = None
    txt_bias: np.ndarray | None = None

    def transform_image(self, x: np.ndarray) -> np.ndarray:
        return self._apply(x, self.img_mean, self.img_weight, self.img_bias)

    def transform_text(self, y: np.ndarray) -> np.ndarray:
        return self._apply(y, self.txt_mean, self.txt_weight, self.txt_bias)

    @staticmethod
    def _apply(x: np.ndarray, mean: np.ndarray, weight: np.ndarray, bias: np.ndarray | None) -> np.ndarray:
        out = (np.asarray(x, dtype=np.float64) - mean) @ weight
        return out if bias is None else out + bias

    def to_tensors(self) -> dict[str, torch.Tensor]:
        return {name: torch.from_numpy(np.ascontiguousarray(value, dtype=np.float64))
                for name, value in vars(self).items() if value is not None}

    @classmethod
    def from_tensors(cls, tensors: dict[str, torch.Tensor]) -> "LinearEncoder":
        return cls(**{name: tensor.numpy() for name, tensor in tensors.items()})


class ClosedFormMethod(MethodBase):
    """A method solved in one step on pooled features; the run folder keeps its LinearEncoder."""

    closed_form = True

    def __init__(self, cfg, spec: ModelSpec | None = None, inputs: InputConfig = InputConfig(),
                 fitted: Mapping[str, np.ndarray] = NOTHING_FITTED):
        self.cfg, self.spec, self.input_config, self.fitted = cfg, spec, inputs, fitted

    def fit(self, features: PairedFeatures, seed: int = 0) -> LinearEncoder:
        """The encoder solved on the training features (`seed`: for methods that subsample)."""
        raise NotImplementedError
