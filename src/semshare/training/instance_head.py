"""The right item first inside a label set (issue 27): an instance-level head beside a finished run.

Label-space retrieval ranks by the label set: items of the query's label set score alike, in an order that
means nothing to a user who wants the image their sentence describes. Sharing the label branch with an
instance objective costs label-wise quality (the issue's probe: -4 to -5 points), so the instance signal is
learned on its own, after the run, from the same inputs:

  image: the mean of an image's region features and its global feature, side by side (either alone where
         the data has only one);
  text:  the run's own reading of a caption without its encoder: a bag of words over the run's vocabulary
         (word runs), the MiniLM sentence vector (token-state runs), the text vector (vector runs);

each standardised on the training split and mapped linearly to a shared space, trained with a symmetric
InfoNCE loss on the training split's (image, own caption) pairs (one caption per image per step: no false
negatives within a batch). The final score of a query and an item is

  s = s_label + w * s_instance      (both cosine similarities)

which is the cosine of the concatenated, weighted, unit-norm embeddings: every index kind, the CLI, the API
and the service use it unchanged. w is chosen on the validation split: the largest Ave R@10 among the
candidates whose validation Ave NDCG@500 and mAP@all stay within `tolerance` of w = 0 (the label-space-only
ranking, which the run keeps: `ranking="label"`).

RUN/instance/ holds head.safetensors (weights and standardisation), instance.json (config, the chosen w,
the validation table per candidate) and files.json.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from semshare.config import from_dict
from semshare.data.dataset import gather_rows
from semshare.data.pooled import pooled_image_features
from semshare.errors import SemshareError
from semshare.evaluation.protocols import EmbeddingTable, evaluate_tables, ProtocolConfig
from semshare.evaluation.retrieval import MetricSpec
from semshare.training.inputs import open_segments
from semshare.fileio import (atomic_directory, atomic_write_json, read_json_object, read_tensors, safetensors_bytes,
                             verify_files_manifest, write_files_manifest)
from semshare.names import SELECTION_METRIC

logger = logging.getLogger(__name__)
INSTANCE_DIR = "instance"
SELECT = MetricSpec(ndcg_k=(500,), map_k=(None,), recall_k=(10,))


@dataclass(frozen=True)
class InstanceConfig:
    dim: int = 256
    epochs: int = 40
    batch_size: int = 256
    lr: float = 2e-3
    weight_decay: float = 1e-4
    temperature: float = 0.1
    weights: tuple = (0.0, 0.05, 0.1, 0.2, 0.3, 0.5, 1.0, 1.5, 2.0, 3.0, 5.0)  # the candidates for w
    tolerance: float = 0.005  # validation Ave NDCG@500 / mAP@all may drop this much (0.5 points) at most
    seed: int = 0


# ---- features: what the head reads --------------------------------------------------------------------

def text_kind(run) -> str:
    kinds = {"words": "bow", "segments": "sentence", "vector": "vector"}
    return kinds[run.cfg.inputs.text]


def image_kind(dataset) -> str:
    """Which image features the head reads on this data."""
    if dataset.regions is not None and dataset.image is not None:
        return "regions+global"
    return "regions" if dataset.regions is not None else "global"


def image_features_of_rows(dataset, rows: np.ndarray, kind: str | None = None) -> np.ndarray:
    """(len(rows), D): the pooled image inputs the linear methods read (data/pooled.py), the regions' mean
    and/or the global feature (`image_kind`)."""
    sources = {"regions": ("regions-mean",), "global": ("global",), "regions+global": ("regions-mean", "global")}
    return np.concatenate([pooled_image_features(dataset, rows, source)
                           for source in sources[kind or image_kind(dataset)]], axis=1)


def image_features_of_queries(kind: str, regions: np.ndarray, mask: np.ndarray,
                              global_features: np.ndarray | None) -> np.ndarray:
    """The same for new images: (N, R, D) regions and (N, R) mask, with their (N, D) global features."""
    mask = np.asarray(mask, dtype=np.float32)
    mean = (np.asarray(regions, dtype=np.float32) * mask[..., None]).sum(1) / np.maximum(mask.sum(1, keepdims=True), 1.0)
    if kind == "regions":
        return mean
    if global_features is None:  # a global-only run gets its global feature as the one region
        if kind == "global":
            return mean
        raise SemshareError("this instance head reads an image's global feature beside its regions; none was given")
    global_features = np.asarray(global_features, dtype=np.float32).reshape(len(mean), -1)
    return global_features if kind == "global" else np.concatenate([mean, global_features], axis=1)


def bag_of_words(vocab, texts: list) -> np.ndarray:
    """(len(texts), |V|): the mean one-hot of each text's known tokens (tokens or a sentence)."""
    out = np.zeros((len(texts), len(vocab)), dtype=np.float32)
    for i, text in enumerate(texts):
        ids = [t for t in vocab.encode(text) if t != vocab.unk_id]
        if ids:
            np.add.at(out[i], ids, 1.0 / len(ids))
    return out


def text_features_of_items(run, items) -> np.ndarray:
    kind = text_kind(run)
    if kind == "bow":
        return bag_of_words(run.vocab, items.texts)
    if kind == "sentence":
        store = run.text_segments if run.capabilities.token_states else None
        if store is None:  # a closed-form run on sentence vectors keeps no store of its own
            store = open_segments(run.dataset, run.cfg.text)
        return np.asarray(store.sentence[np.asarray(items.item_ids)], dtype=np.float32)
    return gather_rows(run.dataset.text_vectors, items.rows).astype(np.float32)


# ---- the head -------------------------------------------------------------------------------------------

class InstanceHead(nn.Module):
    """Two linear maps of standardised features into one space (cosine similarity between them)."""

    def __init__(self, image_dim: int, text_dim: int, dim: int):
        super().__init__()
        self.image = nn.Linear(image_dim, dim)
        self.text = nn.Linear(text_dim, dim)
        for name, size in (("image_mean", image_dim), ("image_std", image_dim), ("text_mean", text_dim),
                           ("text_std", text_dim)):
            self.register_buffer(name, torch.zeros(size) if name.endswith("mean") else torch.ones(size))

    def encode_image(self, features: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            return self._image(torch.as_tensor(features, dtype=torch.float32)).numpy()

    def encode_text(self, features: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            return self._text(torch.as_tensor(features, dtype=torch.float32)).numpy()

    def _image(self, x: torch.Tensor) -> torch.Tensor:
        return nn.functional.normalize(self.image((x - self.image_mean) / self.image_std), dim=1)

    def _text(self, x: torch.Tensor) -> torch.Tensor:
        return nn.functional.normalize(self.text((x - self.text_mean) / self.text_std), dim=1)


def _standardise(head: InstanceHead, image: np.ndarray, text: np.ndarray) -> None:
    for prefix, values in (("image", image), ("text", text)):
        getattr(head, f"{prefix}_mean").copy_(torch.as_tensor(values.mean(0)))
        getattr(head, f"{prefix}_std").copy_(torch.as_tensor(values.std(0) + 1e-6))


def train_head(image: np.ndarray, text: np.ndarray, owner: np.ndarray, cfg: InstanceConfig) -> InstanceHead:
    """Symmetric InfoNCE on (image row, one of its captions) pairs; `image` (N, Di) per row, `text` (T, Dt)
    per caption, `owner` (T,) the row index (0..N-1) of each caption. A fixed number of epochs of two linear
    maps over fixed features, in memory, like a closed-form fit: nothing to validate per epoch, checkpoint
    or resume, so not the methods' loop (training/loop.py); w is chosen on validation afterwards."""
    torch.manual_seed(cfg.seed)
    rng = np.random.default_rng([cfg.seed, 27])
    head = InstanceHead(image.shape[1], text.shape[1], cfg.dim)
    _standardise(head, image, text)
    optimizer = torch.optim.AdamW(head.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    captions_of = [np.flatnonzero(owner == row) for row in range(len(image))]
    images = torch.as_tensor(image, dtype=torch.float32)
    texts = torch.as_tensor(text, dtype=torch.float32)
    started, loss = time.perf_counter(), torch.tensor(float("nan"))
    for epoch in range(cfg.epochs):
        order = rng.permutation(len(image))
        for start in range(0, len(order), cfg.batch_size):
            rows = order[start : start + cfg.batch_size]
            if len(rows) < 2:
                continue
            picks = [captions_of[row][rng.integers(len(captions_of[row]))] for row in rows]
            logits = head._image(images[rows]) @ head._text(texts[picks]).T / cfg.temperature
            target = torch.arange(len(rows))
            loss = (nn.functional.cross_entropy(logits, target) + nn.functional.cross_entropy(logits.T, target)) / 2
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
        if (epoch + 1) % 10 == 0 or epoch + 1 == cfg.epochs:  # a line now and then: a pipe shows no bar
            logger.info("instance head: epoch %d/%d, InfoNCE %.4f (%.0f s)", epoch + 1, cfg.epochs,
                        float(loss.detach()), time.perf_counter() - started)
    head.eval()
    return head


# ---- the combined ranking -------------------------------------------------------------------------------

def _unit(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float32)
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


def combine(label_emb: np.ndarray, instance_emb: np.ndarray, weight: float) -> np.ndarray:
    """Unit rows whose dot products are (s_label + w * s_instance) / (1 + w)."""
    if weight <= 0:
        return _unit(label_emb)
    joined = np.concatenate([_unit(label_emb), np.sqrt(weight) * _unit(instance_emb)], axis=1)
    return joined / np.sqrt(1.0 + weight)


class InstanceRanking:
    """The ranking stage of a run with its instance head: every label-space embedding (rows and queries)
    joined with the head's embedding of the same item (`combine`). The run holds it (`run.ranking_stage`)."""

    name = "combined"
    reads_global_feature = True  # an image file's global feature goes to the head beside its regions

    def __init__(self, head: InstanceHead, weight: float, image_features: str = "regions"):
        self.head, self.weight, self.image_features = head, weight, image_features

    def rows(self, run, rows, img: EmbeddingTable, txt: EmbeddingTable, sides: tuple[str, ...]):
        if "image" in sides:
            inst = self.head.encode_image(image_features_of_rows(run.dataset, img.ids, self.image_features))
            img = EmbeddingTable(img.ids, combine(img.emb, inst, self.weight))
        if "text" in sides:
            items = run.dataset.text_items(np.asarray(rows, dtype=np.int64), run.text_source)
            inst = self.head.encode_text(text_features_of_items(run, items))
            txt = EmbeddingTable(txt.ids, combine(txt.emb, inst, self.weight))
        return img, txt

    def word_queries(self, run, texts: list[list[str]], emb: np.ndarray) -> np.ndarray:
        return combine(emb, self.head.encode_text(bag_of_words(run.vocab, list(texts))), self.weight)

    def segment_queries(self, sentence: np.ndarray, emb: np.ndarray) -> np.ndarray:
        inst = self.head.encode_text(np.asarray(sentence, dtype=np.float32).reshape(len(emb), -1))
        return combine(emb, inst, self.weight)

    def image_queries(self, regions, mask, global_features, emb: np.ndarray) -> np.ndarray:
        inst = self.head.encode_image(image_features_of_queries(self.image_features, regions, mask, global_features))
        return combine(emb, inst, self.weight)


# ---- fit, choose w, save, load ---------------------------------------------------------------------------

def fit_instance_head(run, run_dir: str | Path, cfg: InstanceConfig = InstanceConfig(), overwrite: bool = False) -> dict:
    """Train the head on the run's training rows, choose w on its validation rows, write RUN/instance/;
    returns instance.json's record."""
    if run.pairwise_scoring:
        raise SemshareError(f"{run_dir}: a pair-scoring run ranks by its own scorer; it has no embedding to combine")
    if run.dataset is None:
        raise SemshareError(f"{run_dir}: fitting the instance head reads the run's dataset; give --data")
    if text_kind(run) == "bow" and run.vocab is None:
        raise SemshareError(f"{run_dir}: a words run without its vocabulary")
    dataset = run.dataset
    train_rows = np.asarray(run.train_rows, dtype=np.int64)
    items = dataset.text_items(train_rows, run.text_source)
    owner = np.searchsorted(train_rows, items.rows)
    kind = image_kind(dataset)
    logger.info("instance head: %d training images, %d captions (%s / %s features)", len(train_rows), len(items.rows),
                kind, text_kind(run))
    head = train_head(image_features_of_rows(dataset, train_rows, kind), text_features_of_items(run, items), owner, cfg)
    logger.info("instance head: choosing w on %d validation images", len(run.val_rows))
    val_rows = np.asarray(run.val_rows, dtype=np.int64)
    img, txt = run.embed(val_rows)
    val_items = dataset.text_items(val_rows, run.text_source)
    inst_img = head.encode_image(image_features_of_rows(dataset, img.ids, kind))
    inst_txt = head.encode_text(text_features_of_items(run, val_items))
    tables = {}
    for weight in sorted({0.0, *cfg.weights}):  # w = 0 (the label space alone) is always the reference
        combined = (EmbeddingTable(img.ids, combine(img.emb, inst_img, weight)),
                    EmbeddingTable(txt.ids, combine(txt.emb, inst_txt, weight)))
        tables[weight] = evaluate_tables(dataset, *combined, ProtocolConfig(text_source=run.text_source), SELECT,
                                         rows=val_rows)[0]
    base = tables[0.0]
    allowed = [w for w in cfg.weights if tables[w][SELECTION_METRIC] >= base[SELECTION_METRIC] - cfg.tolerance
               and tables[w]["ave/mAP@all"] >= base["ave/mAP@all"] - cfg.tolerance]
    chosen = max(allowed, key=lambda w: (tables[w]["ave/R@10"], -w)) if allowed else 0.0
    from semshare.training.run_folder import made_by

    record = {"config": asdict(cfg), "weight": float(chosen), "text_features": text_kind(run), "image_features": kind,
              "made_by": made_by(Path(run_dir), run.checkpoint),
              "validation": {str(w): {k: round(v, 6) for k, v in t.items()} for w, t in tables.items()}}
    with atomic_directory(Path(run_dir) / INSTANCE_DIR, overwrite=overwrite) as tmp:
        (tmp / "head.safetensors").write_bytes(safetensors_bytes({k: v.contiguous() for k, v in head.state_dict().items()}))
        atomic_write_json(tmp / "instance.json", record)
        write_files_manifest(tmp)
    logger.info("instance head: w = %s (validation Ave R@10 %.4f -> %.4f, NDCG@500 %.4f -> %.4f)", chosen,
                base["ave/R@10"], tables.get(chosen, base)["ave/R@10"], base[SELECTION_METRIC],
                tables.get(chosen, base)[SELECTION_METRIC])
    return record


def has_instance_head(run_dir: str | Path) -> bool:
    return (Path(run_dir) / INSTANCE_DIR / "instance.json").exists()


def instance_ranking(run_dir: str | Path):
    """The run's instance-head ranking stage (RUN/instance/) when it has one with w > 0, else None."""
    folder = Path(run_dir) / INSTANCE_DIR
    if not has_instance_head(run_dir):
        return None
    verify_files_manifest(folder, "instance head")
    record = read_json_object(folder / "instance.json", "the instance head's record")
    from semshare.training.run_folder import check_made_by

    check_made_by(Path(run_dir), folder / "instance.json", record.get("made_by"),
                  f"semshare fit-instance {run_dir} --overwrite")
    cfg = from_dict(InstanceConfig, {**record.get("config", {}), "weights": tuple(record.get("config", {}).get("weights", ()))})
    weight = record.get("weight")
    if not isinstance(weight, (int, float)) or weight < 0:
        raise SemshareError(f"{folder / 'instance.json'}: weight: expected a number >= 0, found {weight!r}")
    if weight == 0:
        return None
    state = read_tensors(folder / "head.safetensors", "the instance head's weights")
    head = InstanceHead(state["image.weight"].shape[1], state["text.weight"].shape[1], cfg.dim)
    head.load_state_dict(state)
    head.eval()
    kind = record.get("image_features", "regions")
    if kind not in ("regions", "global", "regions+global"):
        raise SemshareError(f"{folder / 'instance.json'}: image_features: expected regions, global or regions+global, "
                            f"found {kind!r}")
    return InstanceRanking(head, float(weight), kind)


def read_instance_record(run_dir: str | Path) -> dict:
    return json.loads((Path(run_dir) / INSTANCE_DIR / "instance.json").read_text())
