"""Semantic Sharing (Yang et al., IJCAI 2021) and its ablations, as one model with switches.

Image regions (+ boxes) and text tokens are embedded by modality-specific encoders, then passed — each
modality alone — through ONE shared transformer T and ONE multi-label classifier g. Loss:
  L = L1 (label prediction, both modalities) + lambda * L2 (masked region class / masked word prediction)
and no cross-modal consistency term (the `ours_con` and `imc` recipes add one, as ablations).
Every loss is a mean over items, so a global batch split over processes gives the same gradient.
The ablations are recipes of this one class: configs/method/{ours,st,imc,wo_r,wo_t,wo_c,wo_l,ours_con}.yaml.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Mapping

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from semshare.data.batches import Batch
from semshare.methods.base import (NOTHING_FITTED, WORD_VECTORS, FitContext, InputConfig, ModelSpec,
                                   RegionTargetRequest, TrainedMethod)
from semshare.methods.losses import discrimination_loss, label_prediction_loss
from semshare.models.image_encoders import RegionEncoder
from semshare.models.label_graph import (LabelGraphClassifier, LabelGraphConfig, check_label_graph_config,
                                         fit_label_graph)
from semshare.models.layers import l2_normalize, masked_mean
from semshare.models.shared_encoder import FeedForwardSharedEncoder, TransformerSharedEncoder
from semshare.registry import METHODS
from semshare.models.text_encoders import PretrainedSegmentEncoder, TextVectorEncoder, WordGRUEncoder

SHARED_MODELS = ("transformer", "fc")
POOLINGS = ("mean", "cls", "label-segments", "label")
CLASSIFIERS = ("linear", "label-graph")
CONSISTENCY = ("none", "triplet", "discrimination")


@dataclass(frozen=True)
class LossConfig:
    label_weight: float = 1.0  # L1; 0 for w/o L and IMC
    label_loss: str = "bce"  # bce (per-label binary cross-entropy) | eq4 (the paper's log(1 + exp(-y^T g)))
    # lambda; 0 for w/o C. 0.01, the paper's COCO value: best on validation of coco_2k and pascal_sentences_img
    # (docs/RESULTS.md); at 0.1 the context loss slows label learning past the small preset's 20 epochs
    context_weight: float = 0.01
    mask_prob: float = 0.15
    region_targets: str = "auto"  # auto (detector classes if the data has them, else k-means) | labels | kmeans
    kmeans_k: int = 1000
    consistency: str = "none"  # none | triplet (Ours+Con) | discrimination (Eq. 1, IMC)
    consistency_weight: float = 0.0  # eta
    margin: float = 0.2
    quantisation_weight: float = 0.01  # with hash_bits: ||sign(h) - h||^2 of both modalities' codes
    balance_weight: float = 0.1  # with hash_bits: each bit's batch mean pulled to 0 (without it codes collapse)


@dataclass(frozen=True)
class SemanticSharingConfig:
    dim: int = 1024
    layers: int = 6
    heads: int = 8
    ffn_dim: int = 2048
    dropout: float = 0.1
    shared_model: str = "transformer"  # transformer | fc (w/o T, w/o R)
    share: bool = True  # False: one encoder + classifier per modality (ST)
    segments: bool = True  # False: each item is pooled to one segment before the shared model (w/o R)
    # retrieval embedding: label-segments (the authors': mean over segments of the sigmoid label scores) |
    # label (sigmoid scores of the pooled z) | mean (the pooled z) | cls
    pooling: str = "label-segments"
    # the shared multi-label classifier g: linear (the paper's) | label-graph (one classifier per label made by
    # a GCN over the training labels' co-occurrence graph, models/label_graph.py; settings under graph)
    classifier: str = "linear"
    graph: LabelGraphConfig = field(default_factory=LabelGraphConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    # Semantic Sharing hashing (issue 35): > 0 puts a shared hash layer h = tanh(W z) of this many bits
    # between the pooled z and the shared classifier (which then reads h), h is the retrieval embedding and
    # its signs the codes; the quantisation term pulls h to +-1. No consistency term, as the method itself.
    hash_bits: int = 0


def _shared_encoder(cfg: SemanticSharingConfig) -> nn.Module:
    if cfg.shared_model == "transformer":
        return TransformerSharedEncoder(cfg.dim, cfg.layers, cfg.heads, cfg.ffn_dim, cfg.dropout)
    if cfg.shared_model == "fc":
        return FeedForwardSharedEncoder(cfg.dim, cfg.layers, cfg.ffn_dim, cfg.dropout)
    raise ValueError(f"unknown shared_model {cfg.shared_model!r}; expected one of {SHARED_MODELS}")


def _at_least_one_real(mask: torch.Tensor) -> torch.Tensor:
    """An item with no real segment attends to its first (zero) slot instead of producing NaN."""
    empty = ~mask.any(dim=1)
    if empty.any():
        mask = mask.clone()
        mask[empty, 0] = True
    return mask


def _per_item_masked_ce(head: nn.Module, hidden: torch.Tensor, targets: torch.Tensor,
                        masked: torch.Tensor) -> torch.Tensor:
    """Mean over masked positions of each item, then over items (items without a masked one count 0).

    The head scores the masked positions only: every other one would be multiplied by 0 (a word head over
    coco_2k's 4k words at every token was ~8% of a step)."""
    masked = masked[:, : hidden.shape[1]]
    slots = masked.flatten().nonzero().squeeze(1)  # row-major
    logits = head(hidden.flatten(0, 1).index_select(0, slots))
    chosen = targets[:, : hidden.shape[1]].flatten()[slots].clamp_min(0)
    losses = F.cross_entropy(logits.float(), chosen, reduction="none")
    per_item = losses.new_zeros(len(masked)).index_add(0, slots // masked.shape[1], losses)
    return (per_item / masked.sum(1).clamp_min(1)).mean()


def triplet_consistency_loss(img_emb: torch.Tensor, txt_emb: torch.Tensor, labels: torch.Tensor,
                             margin: float) -> torch.Tensor:
    """Label-wise triplet: each item's pair is its positive, the hardest non-sharing item its negative."""
    img_n, txt_n = l2_normalize(img_emb.float()), l2_normalize(txt_emb.float())
    scores = img_n @ txt_n.T
    different = labels @ labels.T == 0
    positive = scores.diagonal()
    lowest = torch.finfo(scores.dtype).min
    hardest_txt = scores.masked_fill(~different, lowest).max(1).values
    hardest_img = scores.masked_fill(~different, lowest).max(0).values
    labelled = labels.sum(1) > 0
    has_negative_txt, has_negative_img = different.any(1), different.any(0)
    loss_i2t = F.relu(margin - positive + hardest_txt) * (labelled & has_negative_txt)
    loss_t2i = F.relu(margin - positive + hardest_img) * (labelled & has_negative_img)
    return (loss_i2t + loss_t2i).mean()


@METHODS.register("semantic_sharing")
class SemanticSharing(TrainedMethod):
    """The model: `encode_image(batch)` / `encode_text(batch)` -> (B, D); `training_step(batch)` -> losses."""

    config_class = SemanticSharingConfig
    display_name = "Semantic Sharing"
    label_classifier = True

    @classmethod
    def region_targets_wanted(cls, cfg: SemanticSharingConfig, inputs: InputConfig) -> RegionTargetRequest | None:
        if inputs.image == "regions" and cfg.segments and cfg.loss.context_weight > 0:
            return RegionTargetRequest(cfg.loss.region_targets, cfg.loss.kmeans_k)
        return None

    @classmethod
    def check_config(cls, cfg: SemanticSharingConfig) -> None:
        from semshare.errors import ConfigError

        for key in ("dim", "layers", "heads", "ffn_dim"):  # first: -8 is "expected >= 1" as 0 is
            if isinstance(getattr(cfg, key), int) and getattr(cfg, key) < 1:
                raise ConfigError(f"model.{key}: expected an integer >= 1, found {getattr(cfg, key)}")
        super().check_config(cfg)
        for key, value, options in (("pooling", cfg.pooling, POOLINGS), ("shared_model", cfg.shared_model, SHARED_MODELS),
                                    ("loss.consistency", cfg.loss.consistency, CONSISTENCY),
                                    ("loss.label_loss", cfg.loss.label_loss, ("bce", "eq4")),
                                    ("loss.region_targets", cfg.loss.region_targets, ("auto", "labels", "kmeans")),
                                    ("classifier", cfg.classifier, CLASSIFIERS)):
            if value not in options:
                raise ConfigError(f"model.{key}: expected one of {', '.join(options)}, found {value!r}")
        for key in ("dim", "layers", "heads", "ffn_dim"):
            if getattr(cfg, key) < 1:
                raise ConfigError(f"model.{key}: expected an integer >= 1, found {getattr(cfg, key)}")
        if cfg.hash_bits > 1024:
            raise ConfigError(f"model.hash_bits: expected 0 (no hashing) or a code length up to 1024, found {cfg.hash_bits}")
        if cfg.hash_bits and (cfg.classifier != "linear" or cfg.loss.label_weight <= 0):
            raise ConfigError("model.hash_bits: the hash layer feeds the linear shared classifier; expected "
                              "classifier linear and loss.label_weight > 0")
        if cfg.shared_model == "transformer" and cfg.dim % cfg.heads:
            raise ConfigError(f"model.dim: expected a multiple of model.heads ({cfg.heads}), found {cfg.dim}")
        if cfg.pooling in ("label", "label-segments") and cfg.loss.label_weight <= 0:
            raise ConfigError(f"model.pooling: {cfg.pooling} retrieves with the label classifier, which "
                              "model.loss.label_weight=0 leaves untrained; expected pooling mean or cls")
        if cfg.classifier == "label-graph":
            check_label_graph_config(cfg.graph, "model.graph.")
        if not 0 <= cfg.loss.mask_prob < 1 or not 0 <= cfg.dropout < 1:
            raise ConfigError(f"model.loss.mask_prob / model.dropout: expected fractions in [0, 1), found "
                              f"{cfg.loss.mask_prob} / {cfg.dropout}")

    @classmethod
    def training_mask_prob(cls, cfg: SemanticSharingConfig) -> float:
        return cfg.loss.mask_prob

    @classmethod
    def fit_inputs(cls, cfg: SemanticSharingConfig, context: FitContext) -> dict[str, np.ndarray]:
        return fit_label_graph(cfg.graph, context) if cfg.classifier == "label-graph" else {}

    def __init__(self, cfg: SemanticSharingConfig, spec: ModelSpec, inputs: InputConfig,
                 fitted: Mapping[str, np.ndarray] = NOTHING_FITTED):
        super().__init__()
        loss_cfg = cfg.loss  # its values were checked once, where the config was parsed (check_config)
        self.cfg, self.loss_cfg, self.spec, self.input_config = cfg, loss_cfg, spec, inputs
        dim = cfg.dim
        wants_context = loss_cfg.context_weight > 0 and cfg.segments
        region_context = wants_context and inputs.image == "regions" and spec.num_region_classes > 0
        self.img_encoder = RegionEncoder(spec.region_dim, dim, cfg.dropout, maskable=region_context)
        if inputs.text == "words":
            word_vectors = fitted.get(WORD_VECTORS)
            if word_vectors is None:  # an old run folder rebuilt to load weights: the checkpoint fills the embedding
                word_vectors = np.zeros((spec.vocab_size, spec.word_dim), dtype=np.float32)
            self.txt_encoder = WordGRUEncoder(word_vectors, dim, spec.mask_id, cfg.dropout)
        elif inputs.text == "vector":
            self.txt_encoder = TextVectorEncoder(spec.text_dim, dim, cfg.dropout)
        else:  # "segments" (inputs.text is checked where the config is parsed)
            self.txt_encoder = PretrainedSegmentEncoder(spec.text_dim, dim, cfg.dropout, maskable=wants_context)
        copies = 1 if cfg.share else 2  # index 0: image (and text when shared), 1: text
        self.shared = nn.ModuleList(_shared_encoder(cfg) for _ in range(copies))
        self.hash_layer = (nn.ModuleList(nn.Linear(dim, cfg.hash_bits) for _ in range(copies))
                           if cfg.hash_bits > 0 else None)
        uses_classifier = loss_cfg.label_weight > 0 or cfg.pooling in ("label", "label-segments")
        self.classifier = (nn.ModuleList(self._classifier(cfg, fitted, spec.num_labels) for _ in range(copies))
                           if uses_classifier else None)
        self.cls_segment = nn.Parameter(torch.randn(dim) * 0.02) if cfg.pooling == "cls" else None
        self.region_head = nn.Linear(dim, spec.num_region_classes) if region_context else None
        word_context = wants_context and inputs.text in ("words", "segments") and spec.vocab_size > 0
        self.word_head = nn.Linear(dim, spec.vocab_size) if word_context else None

    @staticmethod
    def _classifier(cfg: SemanticSharingConfig, fitted: Mapping[str, np.ndarray], num_labels: int) -> nn.Module:
        if cfg.classifier == "label-graph":
            return LabelGraphClassifier(cfg.graph, fitted, num_labels, cfg.dim)
        return nn.Linear(cfg.hash_bits or cfg.dim, num_labels)  # hashing: g reads the codes' relaxation h

    def _classifier_input(self, z: torch.Tensor, branch: int) -> torch.Tensor:
        """What the shared classifier reads: the pooled z, or with hashing its code relaxation tanh(W z)."""
        return z if self.hash_layer is None else torch.tanh(self.hash_layer[branch](z))

    # ---- segments through the shared model ----
    def _branch(self, modality: str) -> int:
        return 0 if self.cfg.share or modality == "image" else 1

    def _modal_segments(self, batch: Batch, modality: str, with_mask: bool) -> tuple[torch.Tensor, torch.Tensor]:
        """One pass's (segments (B, S, D), mask (B, S)) from the modality-specific encoder."""
        if modality == "image":
            mask = _at_least_one_real(batch.img_mask)
            segments = self.img_encoder(batch.img_regions, batch.img_boxes, batch.img_masked if with_mask else None)
        elif self.input_config.text == "words":
            mask = _at_least_one_real(batch.txt_mask)
            segments = self.txt_encoder(batch.txt_tokens, mask, batch.txt_masked if with_mask else None)
        elif self.input_config.text == "segments":
            mask = _at_least_one_real(batch.txt_mask)
            segments = self.txt_encoder(batch.txt_segments, batch.txt_masked if with_mask else None)
        else:
            segments = self.txt_encoder(batch.txt_vectors)
            mask = torch.ones(segments.shape[:2], dtype=torch.bool, device=segments.device)
        return self._as_segments(segments, mask)

    def _as_segments(self, segments: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if not self.cfg.segments and segments.shape[1] > 1:  # w/o R: one pooled segment per item
            segments = masked_mean(segments, mask).unsqueeze(1)
            mask = torch.ones(segments.shape[:2], dtype=torch.bool, device=segments.device)
        return segments, mask

    def _paired_segments(self, batch: Batch, modality: str) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """A modality's clean and masked pass as one encoder call over 2B rows: psi1 of the regions (of real
        slots only) or of the token states once, since masking replaces a segment after it; the word GRU over
        both token copies in one call (a loop of small steps, about the cost of one); phi once."""
        masked = batch.img_masked if modality == "image" else batch.txt_masked
        mask = _at_least_one_real(batch.img_mask if modality == "image" else batch.txt_mask)
        pass_masked = torch.cat([torch.zeros_like(masked), masked])  # (2B, S): the clean half masks nothing
        if modality == "image":
            slots = mask.flatten().nonzero().squeeze(1)
            real = self.img_encoder.project.psi1(batch.img_regions.flatten(0, 1).index_select(0, slots))
            projected = real.new_zeros(mask.numel(), real.shape[-1]).index_copy(0, slots, real).view(*mask.shape, -1)
            both = self.img_encoder(batch.img_regions, batch.img_boxes.repeat(2, 1, 1), pass_masked,
                                    projected.repeat(2, 1, 1))
        elif self.input_config.text == "words":
            states = torch.cat(self.txt_encoder.paired_states(batch.txt_tokens, mask, masked))
            both = self.txt_encoder(batch.txt_tokens.repeat(2, 1), mask.repeat(2, 1), None, states)
        else:  # pretrained token states
            projected = self.txt_encoder.project.psi1(batch.txt_segments)
            both = self.txt_encoder(batch.txt_segments.repeat(2, 1, 1), pass_masked, projected.repeat(2, 1, 1))
        return [self._as_segments(half, mask) for half in both.split(len(mask))]

    batch_passes = True  # False: each pass computed alone (the reference the tests compare with)

    def _shared_passes(self, batch: Batch, wanted: list[tuple[str, bool]]):
        """[(modality, masked)] -> [(hidden (B, S, D) per modal segment, mask (B, S), pooled z (B, D), branch)].

        Batched (`batch_passes`): a modality's clean and masked pass share one encoder call
        (`_paired_segments`), then ONE shared-model call per branch takes every pass (`forward_many`: each op
        runs once over all their segments). The values of each pass computed alone (tested)."""
        segments: dict[tuple[str, bool], tuple[torch.Tensor, torch.Tensor]] = {}
        for modality in ("image", "text"):
            if self.batch_passes and (modality, False) in wanted and (modality, True) in wanted:
                segments[modality, False], segments[modality, True] = self._paired_segments(batch, modality)
        inputs = []
        for modality, masked in wanted:
            if (modality, masked) not in segments:
                segments[modality, masked] = self._modal_segments(batch, modality, masked)
            modal, mask = segments[modality, masked]
            if self.cls_segment is not None:
                cls = self.cls_segment.to(modal.dtype).expand(len(modal), 1, -1)
                inputs.append((torch.cat([cls, modal], 1), torch.cat([mask[:, :1], mask], 1), mask))
            else:
                inputs.append((modal, mask, mask))
        branches = [self._branch(modality) for modality, _ in wanted]
        hiddens: list[torch.Tensor | None] = [None] * len(wanted)
        for branch in sorted(set(branches)):
            where = [i for i, b in enumerate(branches) if b == branch]
            shared = self.shared[branch]
            if self.batch_passes:
                outputs = shared.forward_many([inputs[i][:2] for i in where])
            else:
                outputs = [shared(*inputs[i][:2]) for i in where]
            for i, hidden in zip(where, outputs):
                hiddens[i] = hidden
        results = []
        for (_, _, mask), hidden, branch in zip(inputs, hiddens, branches):
            if self.cls_segment is not None:
                results.append((hidden[:, 1:], mask, hidden[:, 0], branch))
            else:
                results.append((hidden, mask, masked_mean(hidden, mask), branch))
        return results

    def _shared_forward(self, batch: Batch, modality: str, with_mask: bool = False):
        """-> (hidden (B, S, D) per modal segment, mask (B, S), pooled z (B, D), branch index)."""
        return self._shared_passes(batch, [(modality, with_mask)])[0]

    def _retrieval_embedding(self, hidden, mask, pooled, branch) -> torch.Tensor:
        if self.hash_layer is not None:  # hashing: the codes' relaxation; its signs are the codes
            return self._classifier_input(pooled, branch)
        pooling = self.cfg.pooling
        if pooling in ("mean", "cls"):
            return pooled
        if pooling == "label":
            return torch.sigmoid(self.classifier[branch](pooled))
        return masked_mean(torch.sigmoid(self.classifier[branch](hidden)), mask)  # authors' label space

    def encode_image(self, batch: Batch) -> torch.Tensor:
        return self._retrieval_embedding(*self._shared_forward(batch, "image")).float()

    def predict_labels(self, batch: Batch, side: str) -> torch.Tensor:
        """The shared classifier on the pooled z: the label probabilities label prediction was trained on."""
        _, _, pooled, branch = self._shared_forward(batch, side)
        return torch.sigmoid(self.classifier[branch](self._classifier_input(pooled, branch))).float()

    def encode_with_labels(self, batch: Batch, side: str) -> tuple[torch.Tensor, torch.Tensor]:
        """One shared pass: the retrieval embedding and the classifier's probabilities of the same z."""
        hidden, mask, pooled, branch = self._shared_forward(batch, side)
        emb = self._retrieval_embedding(hidden, mask, pooled, branch).float()
        return emb, torch.sigmoid(self.classifier[branch](self._classifier_input(pooled, branch))).float()

    def encode_features(self, batch: Batch, modality: str) -> torch.Tensor:
        """(B, D) pooled shared-encoder output whatever the retrieval pooling: "deep features" for the
        linear baselines (the paper fed them pre-extracted deep embeddings; ST's are the natural choice)."""
        return self._shared_forward(batch, modality)[2].float()

    def encode_text(self, batch: Batch) -> torch.Tensor:
        return self._retrieval_embedding(*self._shared_forward(batch, "text")).float()

    # ---- training ----
    def training_step(self, batch: Batch) -> dict[str, torch.Tensor]:
        cfg = self.loss_cfg
        losses: dict[str, torch.Tensor] = {}
        pooled = {}
        clean_pass = cfg.label_weight > 0 or cfg.consistency_weight > 0
        masked_regions = self.region_head is not None and bool(batch.img_masked.any())
        masked_words = self.word_head is not None and bool(batch.txt_masked.any())
        # label prediction sees the clean input, context prediction the masked one
        wanted = [(m, False) for m in ("image", "text") if clean_pass] + [("image", True)] * masked_regions
        wanted += [("text", True)] * masked_words
        passes = dict(zip(wanted, self._shared_passes(batch, wanted)))
        if clean_pass:
            for modality in ("image", "text"):
                _, _, z, branch = passes[modality, False]
                pooled[modality] = z
                if cfg.label_weight > 0:
                    logits = self.classifier[branch](self._classifier_input(z, branch))
                    losses[f"label_{modality}"] = label_prediction_loss(logits, batch.labels, cfg.label_loss)
                if self.hash_layer is not None:
                    h = self._classifier_input(z, branch)
                    losses[f"quantisation_{modality}"] = ((torch.sign(h).detach() - h) ** 2).mean()
                    losses[f"balance_{modality}"] = (h.mean(0) ** 2).mean()
        if masked_regions:
            losses["context_image"] = _per_item_masked_ce(self.region_head, passes["image", True][0],
                                                          batch.img_region_targets, batch.img_masked)
        if masked_words:
            losses["context_text"] = _per_item_masked_ce(self.word_head, passes["text", True][0], batch.txt_targets,
                                                         batch.txt_masked)
        if cfg.consistency_weight > 0 and cfg.consistency != "none":
            if cfg.consistency == "triplet":
                losses["consistency"] = triplet_consistency_loss(pooled["image"], pooled["text"], batch.labels, cfg.margin)
            else:
                losses["consistency"] = discrimination_loss(pooled["image"], pooled["text"], batch.labels)
        total = sum(cfg.label_weight * v for k, v in losses.items() if k.startswith("label_"))
        total = total + sum(cfg.context_weight * v for k, v in losses.items() if k.startswith("context_"))
        if "consistency" in losses:
            total = total + cfg.consistency_weight * losses["consistency"]
        total = total + sum(cfg.quantisation_weight * v for k, v in losses.items() if k.startswith("quantisation_"))
        total = total + sum(cfg.balance_weight * v for k, v in losses.items() if k.startswith("balance_"))
        if not isinstance(total, torch.Tensor):  # nothing to learn from in this batch
            total = sum(p.sum() * 0.0 for p in self.parameters())
        losses["loss"] = total
        return losses
