"""Labels derived from the captions (`extract --labels-from-captions NAMES.txt [--synonyms FILE]`), for photos
that have no labels: a label is on when a caption names it, as a whole word or phrase (case-insensitive,
word boundaries), its plural (+s, +es, y -> ies) or one of its synonyms. No boxes: regions come from the grid.

These labels are derived, not annotated: meta.json says so (`labels_derived_from_captions`) with the count of
images per label, and docs/RESULTS.md measures what the shortcut is worth against true labels.

NAMES.txt: one label name per line. FILE: lines `label: synonym, synonym, ...`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from semshare.errors import DataFormatError
from semshare.features.annotations.base import AnnotationFormat, CaptionedImages
from semshare.options import option
from semshare.registry import ANNOTATIONS


@dataclass(kw_only=True)
class CaptionLabelsInputs:
    names_file: Path | None = option("--labels-from-captions", type=Path, metavar="NAMES",
                                     help="derive labels from the captions: one label name per line")
    synonyms_file: Path | None = option("--synonyms", type=Path, metavar="FILE",
                                        help="with --labels-from-captions: lines 'label: synonym, synonym'")


def _plurals(word: str) -> list[str]:
    forms = [word, word + "s", word + "es"]
    if word.endswith("y") and len(word) > 1:
        forms.append(word[:-1] + "ies")
    return forms


def label_patterns(names: list[str], synonyms: dict[str, list[str]] | None = None) -> dict[str, re.Pattern]:
    """Per label, one pattern matching its name, its plurals (on the last word of a phrase) and synonyms."""
    patterns = {}
    for name in names:
        phrases = [name, *(synonyms or {}).get(name, [])]
        alternatives = []
        for phrase in phrases:
            words = phrase.lower().split()
            alternatives += [r"\s+".join(map(re.escape, words[:-1] + [form])) for form in _plurals(words[-1])]
        patterns[name] = re.compile(r"\b(?:" + "|".join(sorted(set(alternatives), key=len, reverse=True)) + r")\b")
    return patterns


def labels_from_captions(captions: list[list[str]], names: list[str], synonyms: dict[str, list[str]] | None = None
                         ) -> list[set[str]]:
    """Per item (its captions), the labels some caption names."""
    patterns = label_patterns(names, synonyms)
    found = []
    for item in captions:
        text = " \n ".join(c if isinstance(c, str) else " ".join(c) for c in item).lower()
        found.append({name for name, pattern in patterns.items() if pattern.search(text)})
    return found


def read_names(path: Path) -> list[str]:
    if not Path(path).is_file():
        raise DataFormatError(path, "--labels-from-captions", "a file of label names, one per line", "no such file")
    names = [line.strip() for line in Path(path).read_text(encoding="utf-8").splitlines() if line.strip()]
    if not names or len(set(names)) != len(names):
        raise DataFormatError(path, "names", "label names, each once", f"{len(names)} lines, {len(set(names))} distinct")
    return names


def read_synonyms(path: Path | None, names: list[str]) -> dict[str, list[str]]:
    if path is None:
        return {}
    synonyms: dict[str, list[str]] = {}
    for number, line in enumerate(Path(path).read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        label, sep, rest = line.partition(":")
        if not sep or label.strip() not in names:
            raise DataFormatError(path, f"line {number}", "'label: synonym, synonym' with a label of NAMES", line[:60])
        synonyms.setdefault(label.strip(), []).extend(s.strip() for s in rest.split(",") if s.strip())
    return synonyms


def attach_caption_labels(inputs: CaptionLabelsInputs, captioned: CaptionedImages) -> list[str]:
    if inputs.names_file is None:
        raise DataFormatError(inputs.synonyms_file, "--synonyms", "with --labels-from-captions NAMES", "alone")
    names = read_names(inputs.names_file)
    derived = labels_from_captions([item.captions for item in captioned.items], names,
                                   read_synonyms(inputs.synonyms_file, names))
    for item, labels in zip(captioned.items, derived):
        item.labels = labels
    counts = {name: sum(name in labels for labels in derived) for name in names}
    captioned.notes["labels_derived_from_captions"] = True
    captioned.notes["derived_label_counts"] = counts
    captioned.notes["images_without_a_derived_label"] = sum(not labels for labels in derived)
    return names


ANNOTATIONS.register("caption-labels")(AnnotationFormat(
    "labels derived from the captions (a label named in a caption is on; derived, not annotated)",
    CaptionLabelsInputs, attach_caption_labels))
