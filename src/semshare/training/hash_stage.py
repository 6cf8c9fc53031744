"""Binary codes for any finished run (issue 35, the hashing stage): B-bit codes of its retrieval embeddings.

Fitted after the run, on its frozen embeddings of the training split (the run's own numbers never change),
per code length B, two ways:

  itq:        iterative quantisation (Gong & Lazebnik, CVPR 2011), unsupervised and closed form: the
              embeddings centred, reduced to B dimensions by PCA (B above the embedding size: a seeded
              Gaussian lift instead), then the orthogonal rotation R that minimises ||sign(V R) - V R||^2,
              alternating the codes and an SVD for R (50 iterations); one projection for both modalities.
  sign:       the embedding's own signs, for a run whose outputs are a hash layer's (DCMH), bits = its size.
  supervised: one linear hash layer per modality (image, text), trained with the label likelihood of the
              DCMH family (Jiang & Li, CVPR 2017) on the embeddings: theta_ij = 1/2 f_i . g_j, loss
              log(1 + e^theta) - s_ij theta (s_ij = 1 when the two items share a label), plus a quantisation
              term ||sign(F) - F||^2 (and G) and a bit-balance term ||F^T 1||^2 / n^2, Adam, seeded.

Codes are sign(projection) as {0, 1} bits. The kind is chosen per B on the validation split (Ave Hamming
mAP@all, evaluation/hamming.py: ties scored by their exact expectation); RUN/hash/ holds hash.json (the
config, the validation table, the choice, the run's identity) and projections.safetensors.
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from semshare.errors import SemshareError
from semshare.evaluation.hamming import binary_codes, hamming_average_precision, hamming_distances
from semshare.fileio import (atomic_directory, atomic_write_json, read_json_object, read_tensors, safetensors_bytes,
                             verify_files_manifest, write_files_manifest)

logger = logging.getLogger(__name__)
HASH_DIR = "hash"
HASH_KINDS = ("itq", "supervised", "sign")  # sign: the embedding's own signs (a hashing method's outputs)


@dataclass(frozen=True)
class HashConfig:
    bits: tuple = (16, 32, 64, 128)
    kinds: tuple = ("itq", "supervised")  # the candidates, chosen per code length on validation
    itq_iterations: int = 50
    epochs: int = 60
    batch_size: int = 256
    lr: float = 1e-2
    quantisation: float = 0.1  # weight of ||sign(F) - F||^2 against the label likelihood
    balance: float = 0.1  # weight of the bit-balance term
    seed: int = 0


@dataclass
class HashProjection:
    """x -> sign(x W + c): one (W, c) per modality ("image", "text"); ITQ shares one pair (and a mean)."""

    image: tuple[np.ndarray, np.ndarray]
    text: tuple[np.ndarray, np.ndarray]

    def codes(self, embeddings: np.ndarray, side: str) -> np.ndarray:
        weight, bias = self.image if side == "image" else self.text
        return binary_codes(np.asarray(embeddings, dtype=np.float64) @ weight + bias)


def fit_itq(embeddings: np.ndarray, bits: int, iterations: int = 50, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(W (D, B), c (B,)) of ITQ on (N, D) embeddings: codes = sign(x W + c)."""
    x = np.asarray(embeddings, dtype=np.float64)
    mean = x.mean(axis=0)
    centred = x - mean
    rng = np.random.default_rng(seed)
    dim = x.shape[1]
    if bits <= dim:
        _, _, vt = np.linalg.svd(centred, full_matrices=False)
        reduce = vt[:bits].T  # (D, B): the top principal directions
    else:  # more bits than dimensions: a seeded Gaussian lift (the rotation below then balances it)
        reduce = rng.standard_normal((dim, bits)) / np.sqrt(dim)
    v = centred @ reduce
    rotation, _ = np.linalg.qr(rng.standard_normal((bits, bits)))
    for _ in range(iterations):
        codes = np.where(v @ rotation >= 0, 1.0, -1.0)
        u, _, wt = np.linalg.svd(codes.T @ v)  # argmin_R ||B - V R||: R = (U W^T)^T of svd(B^T V)
        rotation = (u @ wt).T
    weight = reduce @ rotation
    return weight, -mean @ weight


def _pair_loss(f: torch.Tensor, g: torch.Tensor, similar: torch.Tensor) -> torch.Tensor:
    theta = 0.5 * f @ g.T
    return (torch.nn.functional.softplus(theta) - similar * theta).mean()


def fit_supervised(img: np.ndarray, txt: np.ndarray, img_labels: np.ndarray, txt_labels: np.ndarray, bits: int,
                   cfg: HashConfig) -> tuple[tuple[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]:
    """((W_img, c_img), (W_txt, c_txt)) trained with the label likelihood, quantisation and bit balance."""
    generator = torch.Generator().manual_seed(cfg.seed)
    x, y = torch.as_tensor(img, dtype=torch.float32), torch.as_tensor(txt, dtype=torch.float32)
    lx, ly = torch.as_tensor(img_labels, dtype=torch.float32), torch.as_tensor(txt_labels, dtype=torch.float32)
    layers = [torch.nn.Linear(x.shape[1], bits), torch.nn.Linear(y.shape[1], bits)]
    for layer in layers:
        torch.nn.init.normal_(layer.weight, std=1.0 / np.sqrt(layer.in_features), generator=generator)
        torch.nn.init.zeros_(layer.bias)
    optimizer = torch.optim.Adam([p for layer in layers for p in layer.parameters()], lr=cfg.lr)
    scale = 4.0  # hash outputs in a tanh's working range: theta = f.g / 2 spans the likelihood's slope
    for _ in range(cfg.epochs):
        order_x = torch.randperm(len(x), generator=generator)
        order_y = torch.randperm(len(y), generator=generator)
        steps = max(1, len(x) // cfg.batch_size)
        for step in range(steps):
            bx = order_x[step * cfg.batch_size : (step + 1) * cfg.batch_size]
            by = order_y[step * cfg.batch_size : (step + 1) * cfg.batch_size]
            f = scale * torch.tanh(layers[0](x[bx]))
            g = scale * torch.tanh(layers[1](y[by]))
            similar = ((lx[bx] @ ly[by].T) > 0).float()
            loss = (_pair_loss(f, g, similar) + 0.5 * (_pair_loss(f, f, (lx[bx] @ lx[bx].T > 0).float())
                                                      + _pair_loss(g, g, (ly[by] @ ly[by].T > 0).float())))
            quantised = ((torch.sign(f) * scale - f) ** 2).mean() + ((torch.sign(g) * scale - g) ** 2).mean()
            balance = (f.mean(0) ** 2).mean() + (g.mean(0) ** 2).mean()
            total = loss + cfg.quantisation * quantised / scale**2 + cfg.balance * balance / scale**2
            optimizer.zero_grad()
            total.backward()
            optimizer.step()
    return tuple((layer.weight.detach().double().numpy().T, layer.bias.detach().double().numpy()) for layer in layers)


def hamming_map(projection: HashProjection, img_emb, txt_emb, img_labels, txt_labels, bits: int) -> dict[str, float]:
    """Ave / I2T / T2I Hamming mAP@all of a set (images query texts and the reverse)."""
    return code_scores(projection.codes(img_emb, "image"), projection.codes(txt_emb, "text"), img_labels, txt_labels,
                       bits)


def code_scores(img_codes, txt_codes, img_labels, txt_labels, bits: int, radius: int | None = None) -> dict[str, float]:
    """I2T / T2I / Ave Hamming mAP@all (ties: their exact expectation) of {0, 1} codes, and precision within
    `radius` when given."""
    from semshare.evaluation.hamming import precision_within_radius

    relevant = (np.asarray(img_labels, dtype=np.float64) @ np.asarray(txt_labels, dtype=np.float64).T) > 0
    metrics = ["mAP@all"] + ([f"P@r{radius}"] if radius is not None else [])
    table = {}
    for direction, distances, truth in (("i2t", hamming_distances(img_codes, txt_codes), relevant),
                                        ("t2i", hamming_distances(txt_codes, img_codes), relevant.T)):
        table[f"{direction}/mAP@all"] = float(hamming_average_precision(distances, truth, bits).mean())
        if radius is not None:
            table[f"{direction}/P@r{radius}"] = float(precision_within_radius(distances, truth, radius).mean())
    for metric in metrics:
        table[f"ave/{metric}"] = (table[f"i2t/{metric}"] + table[f"t2i/{metric}"]) / 2
    return table


def split_embeddings(run, rows: np.ndarray):
    """The run's image and text embeddings of `rows` (its ranking space) and the labels of each item."""
    rows = np.asarray(rows, dtype=np.int64)
    img, txt = run.embed(rows)
    labels = np.asarray(run.dataset.labels)
    items = run.dataset.text_items(rows, run.text_source)
    text_rows = dict(zip(np.asarray(items.item_ids).tolist(), np.asarray(items.rows).tolist()))
    return (img.emb, labels[np.asarray(img.ids)], txt.emb, labels[[text_rows[int(i)] for i in txt.ids]])


def fit_hash_stage(run, run_dir: str | Path, cfg: HashConfig = HashConfig(), overwrite: bool = False) -> dict:
    """Fit every kind at every code length on the training split, choose per length on validation, write
    RUN/hash/; returns hash.json's record (with the test split's scores of the chosen codes)."""
    from semshare.training.run_folder import made_by

    if run.dataset is None:
        raise SemshareError(f"{run_dir}: fitting codes reads the run's dataset; give --data")
    unknown = [k for k in cfg.kinds if k not in HASH_KINDS]
    if unknown or not cfg.kinds:
        raise SemshareError(f"--kinds: expected some of {', '.join(HASH_KINDS)}, found {', '.join(cfg.kinds) or 'none'}")
    if not cfg.bits or any(not isinstance(b, int) or isinstance(b, bool) or not 1 <= b <= 1024 for b in cfg.bits):
        raise SemshareError(f"--bits: expected code lengths in 1..1024, found {cfg.bits}")
    if (Path(run_dir) / HASH_DIR).exists() and not overwrite:  # before any fitting
        from semshare.errors import OutputExistsError

        raise OutputExistsError(f"{Path(run_dir) / HASH_DIR} already exists; pass --overwrite to replace it")
    train = split_embeddings(run, run.train_rows)
    val = split_embeddings(run, run.val_rows)
    test_rows = run.dataset.split("test")
    test = split_embeddings(run, test_rows) if len(test_rows) else None
    record = {"config": asdict(cfg), "made_by": made_by(Path(run_dir), run.checkpoint), "ranking": run.ranking, "validation": {}, "chosen": {}, "test": {}}
    tensors = {}
    for bits in cfg.bits:
        candidates = {}
        for kind in cfg.kinds:
            if kind == "sign":  # the run's outputs are its codes already (DCMH): no projection
                dim = train[0].shape[1]
                if bits != dim:
                    raise SemshareError(f"--set kinds=[sign]: the codes are the embedding's {dim} signs; "
                                        f"found bits {bits} (give bits=[{dim}])")
                identity = (np.eye(dim), np.zeros(dim))
                projection = HashProjection(identity, identity)
            elif kind == "itq":  # one rotation for both sides: the run's embeddings share a space
                weight, bias = fit_itq(np.concatenate([train[0], train[2]]), bits, cfg.itq_iterations, cfg.seed)
                projection = HashProjection((weight, bias), (weight, bias))
            else:
                image, text = fit_supervised(train[0], train[2], train[1], train[3], bits, cfg)
                projection = HashProjection(image, text)
            candidates[kind] = projection
            record["validation"].setdefault(str(bits), {})[kind] = hamming_map(projection, *_order(val), bits)
        chosen = max(cfg.kinds, key=lambda k: (record["validation"][str(bits)][k]["ave/mAP@all"], -cfg.kinds.index(k)))
        record["chosen"][str(bits)] = chosen
        projection = candidates[chosen]
        for side, (weight, bias) in (("image", projection.image), ("text", projection.text)):
            tensors[f"{bits}.{side}.weight"] = torch.from_numpy(np.array(weight, dtype=np.float64, order="C"))
            tensors[f"{bits}.{side}.bias"] = torch.from_numpy(np.array(bias, dtype=np.float64, order="C"))
        if test is not None:  # reported, never used to choose
            record["test"][str(bits)] = hamming_map(projection, *_order(test), bits)
        logger.info("codes: %d bits: %s chosen (validation Ave mAP@all %s)", bits, chosen,
                    ", ".join(f"{k} {100 * v['ave/mAP@all']:.2f}" for k, v in record["validation"][str(bits)].items()))
    with atomic_directory(Path(run_dir) / HASH_DIR, overwrite=overwrite, replaces="hash.json") as tmp:
        (tmp / "projections.safetensors").write_bytes(safetensors_bytes(tensors))
        atomic_write_json(tmp / "hash.json", record)
        write_files_manifest(tmp)
    return record


def _order(split):
    img_emb, img_labels, txt_emb, txt_labels = split
    return img_emb, txt_emb, img_labels, txt_labels


def load_hash_projection(run_dir: str | Path, bits: int) -> HashProjection:
    """The chosen projection of `bits` from RUN/hash/ (checked against its files.json and the run's id)."""
    from semshare.training.run_folder import check_made_by

    folder = Path(run_dir) / HASH_DIR
    if not (folder / "hash.json").is_file():
        raise SemshareError(f"{run_dir}: no codes fitted (semshare fit-hash {run_dir})")
    verify_files_manifest(folder, "hash stage")
    record = read_json_object(folder / "hash.json", "the hash stage's record")
    check_made_by(Path(run_dir), folder / "hash.json", record.get("made_by"), f"semshare fit-hash {run_dir} --overwrite")
    tensors = read_tensors(folder / "projections.safetensors", "the hash projections")
    if f"{bits}.image.weight" not in tensors:
        raise SemshareError(f"{folder}: no {bits}-bit codes; fitted: {', '.join(record.get('chosen', {}))}")
    side = {s: (tensors[f"{bits}.{s}.weight"].numpy(), tensors[f"{bits}.{s}.bias"].numpy()) for s in ("image", "text")}
    return HashProjection(side["image"], side["text"])


HASH_RANKING_PREFIX = "hash:"


def hash_bits_of(ranking: str) -> int | None:
    """'hash:64' -> 64; None for another ranking."""
    if not ranking.startswith(HASH_RANKING_PREFIX):
        return None
    text = ranking[len(HASH_RANKING_PREFIX):]
    if not text.isdigit() or not 1 <= int(text) <= 1024:
        raise SemshareError(f"ranking: expected hash:BITS with BITS in 1..1024, found {ranking!r}")
    return int(text)


class HashRanking:
    """A run ranking by its B-bit codes: each side's label-space embedding through its hash projection
    (x W + c, real; a binary index keeps the signs). Fitted by `semshare fit-hash` (RUN/hash/)."""

    reads_global_feature = False

    def __init__(self, projection: HashProjection, bits: int):
        self.projection, self.bits, self.name = projection, bits, f"{HASH_RANKING_PREFIX}{bits}"

    def _side(self, emb: np.ndarray, side: str) -> np.ndarray:
        weight, bias = self.projection.image if side == "image" else self.projection.text
        return (np.asarray(emb, dtype=np.float64) @ weight + bias).astype(np.float32)

    def rows(self, run, rows, img, txt, sides):
        from semshare.evaluation.protocols import EmbeddingTable

        if "image" in sides:
            img = EmbeddingTable(img.ids, self._side(img.emb, "image"))
        if "text" in sides:
            txt = EmbeddingTable(txt.ids, self._side(txt.emb, "text"))
        return img, txt

    def word_queries(self, run, texts, emb):
        return self._side(emb, "text")

    def segment_queries(self, sentence, emb):
        return self._side(emb, "text")

    def image_queries(self, regions, mask, global_features, emb):
        return self._side(emb, "image")


def evaluate_codes(run, rows: np.ndarray, radius: int = 2) -> dict[str, float]:
    """A run ranking by its codes (`hash:BITS`), scored on `rows` (queries and gallery) under Hamming
    ranking: I2T / T2I / Ave mAP@all (ties: their exact expectation) and precision within `radius`."""
    bits = hash_bits_of(run.ranking)
    if bits is None:
        raise SemshareError(f"codes are scored for a run loaded with ranking hash:BITS, not {run.ranking!r}")
    img_emb, img_labels, txt_emb, txt_labels = split_embeddings(run, rows)
    # the ranking stage has applied the projections already: their signs are the codes
    return code_scores(binary_codes(img_emb), binary_codes(txt_emb), img_labels, txt_labels, bits, radius)
