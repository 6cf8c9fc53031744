"""Label-graph classifiers (ML-GCN, Chen et al. CVPR 2019; used by GNN4CMR and ALGCN for cross-modal retrieval).

The labels are the nodes of a graph built from the training labels only:
  P(j | i) = M_ij / N_i                 M_ij: training items carrying both i and j, N_i: carrying i
  A_ij = 1 if P(j | i) >= tau else 0    (binarised: rare co-occurrences are noise; i != j)
  A'_ij = p * A_ij / sum_k A_ik (i != j), A'_ii = 1 - p     (re-weighted: a node keeps 1 - p of itself, so
                                                              stacked layers do not smooth every label alike)
  A label with no neighbour above tau keeps itself alone (A'_ii = 1).
Each node starts from a vector of its name (word vectors of the name's words, a sentence encoder, or a user
file such as GloVe); a 2-layer GCN  H1 = LeakyReLU(Â H0 W0),  W = Â H1 W1  turns them into one classifier
(a D-vector) per label, shared by both modalities: logits = x W^T + b. Â = D^-1/2 A'^T D^-1/2 with D the
row sums of A' (ML-GCN's public propagation); `adaptive` adds a learned correction to A' (ALGCN's adaptive
correlation), kept non-negative before the normalisation.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from semshare.errors import ConfigError, DataFormatError

logger = logging.getLogger(__name__)

NODE_SOURCES = ("auto", "words", "minilm", "file")
LABEL_GRAPH = "label_graph"  # fitted entries (methods.base fit_inputs): (C, C) re-weighted correlation matrix
LABEL_NODES = "label_nodes"  # (C, E) name vectors
LABEL_NODES_KNOWN = "label_nodes_known"  # (C,) 1 where the name had a vector, 0: a learned vector instead


@dataclass(frozen=True)
class LabelGraphConfig:
    threshold: float = 0.4  # tau: P(j | i) below it is no edge (ML-GCN's COCO value)
    reweight: float = 0.2  # p: the weight a node gives its neighbours together (ML-GCN's value)
    node_vectors: str = "auto"  # auto (file if given, else the run's word vectors, else MiniLM) | words | minilm | file
    node_vectors_path: str = ""  # a (C, E) .npy, one row per line of the dataset's label_names.txt
    hidden_dim: int = 512  # the GCN's hidden layer
    adaptive: bool = False  # learn a correction of the correlation matrix (ALGCN)
    negative_slope: float = 0.2  # LeakyReLU between the two GCN layers


def check_label_graph_config(cfg: LabelGraphConfig, prefix: str) -> None:
    if not 0 <= cfg.threshold <= 1 or not 0 <= cfg.reweight <= 1:
        raise ConfigError(f"{prefix}threshold / {prefix}reweight: expected fractions in [0, 1], found "
                          f"{cfg.threshold} / {cfg.reweight}")
    if cfg.node_vectors not in NODE_SOURCES:
        raise ConfigError(f"{prefix}node_vectors: expected one of {', '.join(NODE_SOURCES)}, found {cfg.node_vectors!r}")
    if cfg.node_vectors == "file" and not cfg.node_vectors_path:
        raise ConfigError(f"{prefix}node_vectors_path: expected a .npy file of label vectors for node_vectors=file, "
                          "found none")
    if cfg.hidden_dim < 1:
        raise ConfigError(f"{prefix}hidden_dim: expected an integer >= 1, found {cfg.hidden_dim}")


def label_correlation(labels: np.ndarray, threshold: float, reweight: float) -> np.ndarray:
    """(C, C) float32 binarised, re-weighted conditional co-occurrence A' of multi-hot `labels` (N, C)."""
    labels = np.asarray(labels, dtype=np.float64)
    counts = labels.T @ labels  # M_ij; its diagonal is N_i
    occurrences = np.diag(counts).copy()
    conditional = np.divide(counts, occurrences[:, None], out=np.zeros_like(counts), where=occurrences[:, None] > 0)
    edges = (conditional >= threshold).astype(np.float64)
    np.fill_diagonal(edges, 0.0)
    neighbours = edges.sum(1, keepdims=True)
    graph = np.divide(reweight * edges, neighbours, out=np.zeros_like(edges), where=neighbours > 0)
    np.fill_diagonal(graph, np.where(neighbours[:, 0] > 0, 1.0 - reweight, 1.0))
    return graph.astype(np.float32)


def name_vectors_from_words(names: list[str], vocab, word_vectors: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(C, E) mean of the word vectors of each name's words, (C,) whether any word of it was known."""
    from semshare.data.text import tokenize

    vectors = np.zeros((len(names), word_vectors.shape[1]), dtype=np.float32)
    known = np.zeros(len(names), dtype=bool)
    for i, name in enumerate(names):
        ids = [vocab.encode(word)[0] for word in tokenize(name.replace("_", " ")) if word in vocab]
        if ids:
            vectors[i], known[i] = np.asarray(word_vectors, dtype=np.float32)[ids].mean(0), True
    return vectors, known


def name_vectors_from_sentence_encoder(names: list[str], encoder: str = "minilm") -> tuple[np.ndarray, np.ndarray]:
    """(C, E) the encoder's sentence vector of each name (normalised mean of its token states), all known."""
    from semshare.data.text_segments import SegmentEncoder

    states, real, _ = SegmentEncoder(encoder, max_length=16)([name.replace("_", " ") for name in names])
    vectors = (states * real[..., None]).sum(1) / np.maximum(real.sum(1, keepdims=True), 1)
    vectors /= np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)
    return vectors.astype(np.float32), np.ones(len(names), dtype=bool)


def name_vectors_from_file(path: str | Path, names: list[str], names_file: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """(C, E) rows of a user's .npy (one per label, in label_names.txt order); a row of zeros counts unknown."""
    path = Path(path)
    try:
        vectors = np.load(path, allow_pickle=False)
    except FileNotFoundError:
        raise DataFormatError(path, "file", "a .npy of label vectors (one row per label)", "no such file") from None
    except (ValueError, OSError) as exc:
        raise DataFormatError(path, "array", "a .npy of label vectors", f"an unreadable file ({exc})") from None
    if vectors.ndim != 2 or len(vectors) != len(names):
        raise DataFormatError(path, "shape", f"({len(names)}, E): one row per line of {names_file}",
                              f"{vectors.shape}")
    vectors = vectors.astype(np.float32)
    if not np.isfinite(vectors).all():
        raise DataFormatError(path, "values", "finite numbers", "NaN or inf")
    return vectors, np.abs(vectors).sum(1) > 0


def fit_label_graph(cfg: LabelGraphConfig, context) -> dict[str, np.ndarray]:
    """The fitted entries of a label-graph classifier, from a run's FitContext (training rows only)."""
    dataset = context.dataset
    names = list(dataset.label_names)
    source = cfg.node_vectors
    if source == "auto":
        source = ("file" if cfg.node_vectors_path else "words" if context.word_vectors is not None
                  else "minilm" if context.inputs.text == "segments" else "")
        if not source:
            raise ConfigError("model.graph.node_vectors: this run reads no words or token states to name its labels "
                              "with; set model.graph.node_vectors_path to a (C, E) .npy of label vectors")
    if source == "words":
        if context.word_vectors is None:
            raise ConfigError("model.graph.node_vectors=words needs a words run (inputs.text=words)")
        vectors, known = name_vectors_from_words(names, context.vocab, context.word_vectors)
    elif source == "minilm":
        vectors, known = name_vectors_from_sentence_encoder(names)
    else:
        vectors, known = name_vectors_from_file(cfg.node_vectors_path, names, Path(dataset.root) / "label_names.txt")
    if not known.all():
        logger.warning("label graph: no vector for %d label name(s) (%s); each gets a learned vector instead",
                       int((~known).sum()), ", ".join(n for n, k in zip(names, known) if not k))
    graph = label_correlation(np.asarray(dataset.labels[context.train_rows]), cfg.threshold, cfg.reweight)
    return {LABEL_GRAPH: graph, LABEL_NODES: vectors, LABEL_NODES_KNOWN: known.astype(np.uint8)}


class LabelGraphClassifier(nn.Module):
    """(..., D) features -> (..., C) logits against the GCN-produced classifiers W (C, D); a drop-in for
    nn.Linear(D, C). Built from the fitted entries; zeros of their shapes when an entry is absent."""

    def __init__(self, cfg: LabelGraphConfig, fitted, num_labels: int, dim: int):
        super().__init__()
        graph = fitted.get(LABEL_GRAPH)
        nodes = fitted.get(LABEL_NODES)
        if graph is None or nodes is None:
            raise ConfigError("the label-graph classifier needs the run's fitted label graph and label vectors "
                              f"({LABEL_GRAPH}, {LABEL_NODES} in fitted_inputs.safetensors)")
        known = np.asarray(fitted.get(LABEL_NODES_KNOWN, np.ones(num_labels)), dtype=bool)
        nodes = torch.from_numpy(np.asarray(nodes, dtype=np.float32))
        self.register_buffer("graph", torch.from_numpy(np.asarray(graph, dtype=np.float32)))
        self.register_buffer("nodes", nodes)
        self.register_buffer("known", torch.from_numpy(known))
        scale = float(nodes[self.known].std()) if self.known.sum() > 1 else 1.0
        # a name with no vector learns one (never a silent zero row)
        self.learned_nodes = nn.Parameter(torch.randn(num_labels, nodes.shape[1]) * scale) if not known.all() else None
        self.correction = nn.Parameter(torch.zeros(num_labels, num_labels)) if cfg.adaptive else None
        self.layer1 = nn.Linear(nodes.shape[1], cfg.hidden_dim, bias=False)
        self.layer2 = nn.Linear(cfg.hidden_dim, dim, bias=False)
        self.bias = nn.Parameter(torch.zeros(num_labels))
        self.negative_slope = cfg.negative_slope

    def propagation(self) -> torch.Tensor:
        """Â (C, C) = D^-1/2 A^T D^-1/2 of the (corrected) correlation matrix."""
        graph = self.graph if self.correction is None else F.relu(self.graph + self.correction)
        scale = graph.sum(1).clamp_min(1e-6).rsqrt()
        return scale[:, None] * graph.T * scale[None, :]

    def classifiers(self) -> torch.Tensor:
        """(C, D) one classifier per label."""
        nodes = self.nodes if self.learned_nodes is None else torch.where(self.known[:, None], self.nodes,
                                                                           self.learned_nodes)
        propagate = self.propagation()
        hidden = F.leaky_relu(propagate @ self.layer1(nodes), self.negative_slope)
        return propagate @ self.layer2(hidden)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        weights = self.classifiers().to(features.dtype)
        return features @ weights.T + self.bias.to(features.dtype)
