"""A seeded synthetic benchmark in the real format, built so that it does not flatter any method.

What it imitates (docs/DATA.md has the measured difficulty):
- C labels with Zipf-skewed frequencies and co-occurrence (each item comes from a "scene" that favours a
  subset of labels); one to several labels per item, and a few unlabeled items.
- Images as sets of region vectors with boxes and region classes: an object region per shown *direct*
  label, background regions, noise; global feature = mean of the regions plus noise.
- Texts as sentences: label words and their synonyms, function words, noise words, varying length.
- A strength per modality: the probability that a label is shown at all, and the noise around it.
- **Relational labels**: a fraction of the labels has no segment of its own. Label c is shown by one of
  two part pairs, (A, B) or (C, D); items without c often show a crossed pair (A, D) or (C, B). Every
  part is then as common without the label as with it, and no linear function of the summed (pooled)
  segments separates {AB, CD} from {AD, CB} (it is an XOR): a model must relate segments to find c.
Items are generated in fixed-size chunks, each from its own seeded generator, so the output is
deterministic and a 123,287-item set streams to disk without being held in memory.
"""

from __future__ import annotations

import json
import logging
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np

from semshare.data.dataset import write_meta
from semshare.errors import SemshareError
from semshare.fileio import atomic_directory
from semshare.progress import progress_bar

logger = logging.getLogger(__name__)

CHUNK_ITEMS = 2048  # part of the determinism contract: changing it changes the data
FUNCTION_WORDS = ("a", "the", "two", "some", "is", "are", "with", "and", "of", "on", "in", "near", "by", "its")


@dataclass(frozen=True)
class SyntheticConfig:
    num_items: int = 3000
    num_labels: int = 16
    num_regions: int = 12  # R: padded region slots per image
    region_dim: int = 64
    dtype: str = "float32"
    captions_per_item: int = 2
    val_items: int = 500
    test_items: int = 500
    relational_fraction: float = 0.25  # share of labels shown only by a pair of segments
    num_scenes: int = 6
    zipf_exponent: float = 1.0
    mean_extra_labels: float = 0.9  # labels per item = 1 + Poisson(this), capped
    max_labels: int = 5
    unlabeled_fraction: float = 0.02
    image_strength: float = 0.65  # the weaker modality by default, as the paper's premise
    text_strength: float = 0.9
    confuser_ratio: float = 1.0  # crossed part pairs per true pair
    background_classes: int = 8
    noise_words: int = 200
    seed: int = 0


PRESETS: dict[str, SyntheticConfig] = {
    "tiny": SyntheticConfig(num_items=120, num_labels=8, num_regions=8, region_dim=32, val_items=20, test_items=20,
                            noise_words=40),
    "small": SyntheticConfig(),
    "coco": SyntheticConfig(num_items=123_287, num_labels=80, num_regions=36, region_dim=2048, dtype="float16",
                            captions_per_item=5, val_items=5000, test_items=5000, num_scenes=12, max_labels=8,
                            mean_extra_labels=1.9, noise_words=2000),
}


def preset(name: str, **overrides) -> SyntheticConfig:
    if name not in PRESETS:
        raise KeyError(f"unknown synthetic preset {name!r}; choose from {sorted(PRESETS)}")
    return replace(PRESETS[name], **overrides)


def _pseudo_words(count: int, rng: np.random.Generator, taken: set[str]) -> list[str]:
    consonants, vowels = "bdfgklmnprstvz", "aeiou"
    words: list[str] = []
    while len(words) < count:
        syllables = rng.integers(2, 4)
        word = "".join(consonants[rng.integers(len(consonants))] + vowels[rng.integers(len(vowels))]
                       for _ in range(syllables))
        if word not in taken and word not in FUNCTION_WORDS:
            taken.add(word)
            words.append(word)
    return words


@dataclass
class _World:
    """Everything shared by all items: labels, prototypes, words."""

    label_names: list[str]
    relational: np.ndarray  # (C,) bool
    label_weights: np.ndarray  # (C,) Zipf base frequencies
    scene_affinity: np.ndarray  # (S, C) multiplicative boosts
    object_prototypes: np.ndarray  # (C, D); rows of relational labels unused
    part_prototypes: np.ndarray  # (C, 4, D); rows of direct labels unused
    background_prototypes: np.ndarray  # (B, D)
    label_words: list[list[str]]  # per label: name + 2 synonyms (direct) or 4 part words (relational)
    noise_words: list[str]
    num_region_classes: int

    def object_class(self, label: int) -> int:
        return label

    def part_class(self, label: int, part: int) -> int:
        return self.label_weights.shape[0] + 4 * label + part

    def background_class(self, index: int) -> int:
        return self.label_weights.shape[0] * 5 + index


def build_world(cfg: SyntheticConfig) -> _World:
    """The generator's hidden structure (labels, prototypes, words): for oracle baselines and tests."""
    return _build_world(cfg)


def _build_world(cfg: SyntheticConfig) -> _World:
    rng = np.random.default_rng([cfg.seed, 0xC0FFEE])
    C, D = cfg.num_labels, cfg.region_dim
    num_relational = int(round(cfg.relational_fraction * C))
    relational = np.zeros(C, dtype=bool)
    relational[rng.permutation(C)[:num_relational]] = True
    label_weights = 1.0 / np.arange(1, C + 1) ** cfg.zipf_exponent
    label_weights = label_weights[rng.permutation(C)]
    scene_affinity = np.ones((cfg.num_scenes, C))
    for scene in range(cfg.num_scenes):
        favoured = rng.permutation(C)[: max(2, C // 4)]
        scene_affinity[scene, favoured] = 8.0
    taken: set[str] = set()
    label_words = [_pseudo_words(4 if relational[c] else 3, rng, taken) for c in range(C)]
    label_names = [("+".join(words[:2]) if relational[c] else words[0]) for c, words in enumerate(label_words)]
    return _World(
        label_names=label_names,
        relational=relational,
        label_weights=label_weights,
        scene_affinity=scene_affinity,
        object_prototypes=rng.standard_normal((C, D)),
        part_prototypes=rng.standard_normal((C, 4, D)),
        background_prototypes=rng.standard_normal((cfg.background_classes, D)),
        label_words=label_words,
        noise_words=_pseudo_words(cfg.noise_words, rng, taken),
        num_region_classes=5 * C + cfg.background_classes,
    )


def _sample_labels(cfg: SyntheticConfig, world: _World, rng: np.random.Generator) -> np.ndarray:
    if rng.random() < cfg.unlabeled_fraction:
        return np.zeros(0, dtype=np.int64)
    weights = world.label_weights * world.scene_affinity[rng.integers(cfg.num_scenes)]
    count = min(cfg.max_labels, 1 + rng.poisson(cfg.mean_extra_labels), cfg.num_labels)
    return np.sort(rng.choice(cfg.num_labels, size=count, replace=False, p=weights / weights.sum()))


def _confuser_probability(cfg: SyntheticConfig, world: _World) -> np.ndarray:
    """Per label: chance that an item without it shows a crossed pair, so crossed pairs ~ true pairs."""
    scene_mean = world.scene_affinity.mean(axis=0) * world.label_weights
    frequency = scene_mean / scene_mean.sum() * (1 + cfg.mean_extra_labels)
    return np.clip(cfg.confuser_ratio * frequency / np.maximum(1 - frequency, 1e-3), 0, 0.5)


def _box(rng: np.random.Generator, low: float, high: float) -> np.ndarray:
    width, height = rng.uniform(low, high, size=2)
    x0, y0 = rng.uniform(0, 1 - width), rng.uniform(0, 1 - height)
    return np.array([x0, y0, x0 + width, y0 + height])


def _make_item(cfg: SyntheticConfig, world: _World, confuser_p: np.ndarray, rng: np.random.Generator):
    """One item: labels, regions (vectors, boxes, classes) and captions."""
    labels = _sample_labels(cfg, world, rng)
    label_set = set(labels.tolist())
    crossed = [c for c in np.flatnonzero(world.relational) if c not in label_set and rng.random() < confuser_p[c]]

    # image: (class id, prototype, box size range) per region
    segments: list[tuple[int, np.ndarray, tuple[float, float]]] = []
    for c in labels:
        if rng.random() >= cfg.image_strength:
            continue  # the weaker modality often misses a label
        if world.relational[c]:
            first = 2 * rng.integers(2)  # parts (0, 1) or (2, 3)
            for part in (first, first + 1):
                segments.append((world.part_class(c, part), world.part_prototypes[c, part], (0.15, 0.4)))
        else:
            segments.append((world.object_class(c), world.object_prototypes[c], (0.3, 0.8)))
    for c in crossed:
        first = rng.integers(2)  # crossed: (0, 3) or (2, 1)
        for part in ((0, 3), (2, 1))[first]:
            segments.append((world.part_class(c, part), world.part_prototypes[c, part], (0.15, 0.4)))
    free = cfg.num_regions - len(segments)
    for _ in range(max(0, min(free, rng.integers(1, 4)))):
        b = rng.integers(cfg.background_classes)
        segments.append((world.background_class(b), world.background_prototypes[b], (0.5, 1.0)))
    if len(segments) > cfg.num_regions:
        keep = np.sort(rng.permutation(len(segments))[: cfg.num_regions])
        segments = [segments[i] for i in keep]
    order = rng.permutation(len(segments))
    image_noise = 0.4 + 1.2 * (1.0 - cfg.image_strength)
    R, D = cfg.num_regions, cfg.region_dim
    regions = np.zeros((R, D), dtype=np.float32)
    boxes = np.zeros((R, 4), dtype=np.float32)
    region_classes = np.full(R, -1, dtype=np.int16)
    for slot, index in enumerate(order):
        region_class, prototype, (low, high) = segments[index]
        regions[slot] = prototype + image_noise * rng.standard_normal(D)
        boxes[slot] = _box(rng, low, high)
        region_classes[slot] = region_class
    count = len(segments)
    pooled = regions[:count].mean(axis=0) if count else np.zeros(D, dtype=np.float32)
    global_feature = pooled + 0.1 * rng.standard_normal(D)

    captions = [_make_caption(cfg, world, labels, crossed, rng) for _ in range(cfg.captions_per_item)]
    return labels, regions, boxes, region_classes, count, global_feature, captions


def _make_caption(cfg: SyntheticConfig, world: _World, labels: np.ndarray, crossed: list, rng: np.random.Generator) -> str:
    phrases: list[list[str]] = []
    for c in labels:
        if rng.random() >= cfg.text_strength:
            continue
        words = world.label_words[c]
        if world.relational[c]:
            first = 2 * rng.integers(2)
            phrases.append([words[first], str(rng.choice(FUNCTION_WORDS)), words[first + 1]])
        else:
            phrases.append([str(rng.choice(FUNCTION_WORDS)), words[rng.integers(3)]])
    for c in crossed:
        words = world.label_words[c]
        first, second = ((0, 3), (2, 1))[rng.integers(2)]
        phrases.append([words[first], str(rng.choice(FUNCTION_WORDS)), words[second]])
    noise_count = rng.poisson(1.0 + 4.0 * (1.0 - cfg.text_strength))
    for _ in range(noise_count):
        phrases.append([str(rng.choice(FUNCTION_WORDS)), str(rng.choice(world.noise_words))])
    if not phrases:
        phrases.append([str(rng.choice(FUNCTION_WORDS)), str(rng.choice(world.noise_words))])
    tokens: list[str] = []
    for index in rng.permutation(len(phrases)):
        if tokens:
            tokens.append(str(rng.choice(FUNCTION_WORDS)))
        tokens.extend(phrases[index])
    sentence = " ".join(tokens)
    return sentence[0].upper() + sentence[1:] + "."


def check_synthetic_config(cfg: SyntheticConfig) -> None:
    """Every generator field in range (one line naming the field), before anything is written."""
    def expect(ok: bool, key: str, expected: str) -> None:
        if not ok:
            raise SemshareError(f"{key}: expected {expected}, found {getattr(cfg, key)!r}")

    for key, low in (("num_items", 2), ("num_labels", 1), ("num_regions", 1), ("region_dim", 1), ("captions_per_item", 1),
                     ("val_items", 0), ("test_items", 0), ("num_scenes", 1), ("max_labels", 1), ("background_classes", 1),
                     ("noise_words", 1)):
        expect(isinstance(getattr(cfg, key), int) and getattr(cfg, key) >= low, key, f"an integer >= {low}")
    for key in ("relational_fraction", "unlabeled_fraction", "image_strength", "text_strength"):
        expect(0 <= getattr(cfg, key) <= 1, key, "a number in 0..1")
    for key in ("zipf_exponent", "mean_extra_labels", "confuser_ratio"):
        expect(0 <= getattr(cfg, key) < float("inf"), key, "a number >= 0")
    expect(cfg.dtype in ("float16", "float32"), "dtype", "float16 or float32")
    expect(0 <= cfg.seed < 2**32, "seed", "an integer in 0..4294967295")
    expect(cfg.val_items + cfg.test_items < cfg.num_items, "num_items", f"more than val_items + test_items "
           f"({cfg.val_items} + {cfg.test_items}), to leave training items")


def make_synthetic(out_dir: str | Path, cfg: SyntheticConfig, name: str = "synthetic", overwrite: bool = False,
                   progress: bool = True) -> Path:
    """Write a synthetic dataset folder in the semshare format (atomically: all of it or nothing)."""
    check_synthetic_config(cfg)
    out_dir = Path(out_dir)
    world = _build_world(cfg)
    confuser_p = _confuser_probability(cfg, world)
    N, R, D = cfg.num_items, cfg.num_regions, cfg.region_dim
    shapes = {
        "regions": ((N, R, D), cfg.dtype), "region_mask": ((N, R), np.uint8), "region_boxes": ((N, R, 4), np.float32),
        "region_labels": ((N, R), np.int16), "image": ((N, D), cfg.dtype), "labels": ((N, cfg.num_labels), np.uint8),
    }
    with atomic_directory(out_dir, overwrite=overwrite, replaces="meta.json") as tmp:
        for array_name, (shape, dtype) in shapes.items():
            np.lib.format.open_memmap(tmp / f"{array_name}.npy", mode="w+", dtype=dtype, shape=shape).flush()
        with open(tmp / "captions.jsonl", "w", encoding="utf-8") as captions_file, \
                progress_bar(progress, total=N, desc="synthetic items", unit="item") as bar:
            for chunk_index, start in enumerate(range(0, N, CHUNK_ITEMS)):
                rng = np.random.default_rng([cfg.seed, 1, chunk_index])
                stop = min(N, start + CHUNK_ITEMS)
                # reopened per chunk and closed after it: written pages leave this process, so resident
                # memory stays flat however large N is
                arrays = {array_name: np.load(tmp / f"{array_name}.npy", mmap_mode="r+") for array_name in shapes}
                for row in range(start, stop):
                    item_labels, item_regions, boxes, classes, count, global_feature, captions = _make_item(
                        cfg, world, confuser_p, rng)
                    arrays["regions"][row] = item_regions
                    arrays["region_boxes"][row] = boxes
                    arrays["region_labels"][row] = classes
                    arrays["region_mask"][row, :count] = 1
                    arrays["image"][row] = global_feature
                    arrays["labels"][row, item_labels] = 1
                    captions_file.write(json.dumps({"id": row, "captions": captions}) + "\n")
                for array in arrays.values():
                    array.flush()
                del arrays
                bar.update(stop - start)
        permutation = np.random.default_rng([cfg.seed, 2]).permutation(N)
        test, val = permutation[: cfg.test_items], permutation[cfg.test_items : cfg.test_items + cfg.val_items]
        train = permutation[cfg.test_items + cfg.val_items :]
        split = {name: sorted(int(i) for i in rows) for name, rows in (("train", train), ("val", val), ("test", test))}
        (tmp / "split.json").write_text(json.dumps(split) + "\n", encoding="utf-8")
        (tmp / "label_names.txt").write_text("\n".join(world.label_names) + "\n", encoding="utf-8")
        write_meta(tmp, name=name, extra={
            "generator": "semshare.synthetic",
            "synthetic": asdict(cfg),
            "relational_labels": [int(c) for c in np.flatnonzero(world.relational)],
            "num_region_classes": world.num_region_classes,
        })
    logger.info("wrote synthetic dataset %s (%d items) to %s", name, N, out_dir)
    return out_dir
