"""What the model read in a query: its label probabilities, its known and unknown words, and whether the
query is too weak to trust (issue 27: "a corgi on a futon" with corgi and futon unknown, or just "the",
must not come back as a confident list).

A text query is weak when none of its known words carries content (only function words such as "the",
"a", "on" are left once unknown words are dropped), or when no label reaches the threshold: the 5th
percentile of the best label probability over the run's validation captions (what 95% of real captions
reach), computed when the index is built and kept in its manifest.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

# English function words: a query of these alone says nothing about what to find
STOPWORDS = frozenset((
    "a an the of on in at to and or with by for from near is are was were be been being its it this that these "
    "those some two three four there their his her him he she they them over under into onto up down while as "
    "very next other another each one").split())
SHOWN_LABELS = 5
SHOWN_FLOOR = 0.1  # labels below this probability are not listed
WEAK_PERCENTILE = 5.0


@dataclass
class QueryReading:
    labels: list[tuple[str, float]]  # the labels read, most probable first (at most 5, each >= 0.1)
    best: float  # the highest label probability
    unknown_words: list[str] = field(default_factory=list)
    weak: bool = False
    why: str = ""  # why the query is weak ('' when it is not)

    def as_dict(self) -> dict:
        return {"labels": [{"label": name, "probability": round(p, 4)} for name, p in self.labels],
                "best_probability": round(self.best, 4), "unknown_words": list(self.unknown_words),
                "weak": self.weak, "why": self.why}

    def line(self) -> str:
        read = ", ".join(f"{name} {p:.2f}" for name, p in self.labels) or f"no label above {SHOWN_FLOOR}"
        return f"read as: {read}" + (f"\nweak query: {self.why}" if self.weak else "")


def read_query(probabilities: np.ndarray, label_names: list[str], known: list[str] | None, unknown: list[str],
               threshold: float) -> QueryReading:
    """The reading of one query from its (C,) label probabilities; `known` its known words (None for an
    image query: no word rule)."""
    probabilities = np.asarray(probabilities, dtype=np.float64)
    order = np.argsort(-probabilities, kind="stable")[:SHOWN_LABELS]
    labels = [(label_names[i], float(probabilities[i])) for i in order if probabilities[i] >= SHOWN_FLOOR]
    best = float(probabilities.max()) if len(probabilities) else 0.0
    why = ""
    if known is not None and not [w for w in known if w.lower() not in STOPWORDS]:
        why = ("none of its known words carries content" + (f" ({', '.join(unknown)} unknown to the run)"
                                                             if unknown else ""))
    elif best < threshold:
        why = f"no label reaches {threshold:.2f} (what 95% of the validation captions reach)"
    return QueryReading(labels, best, list(unknown), bool(why), why)


def validation_threshold(loaded) -> float:
    """The 5th percentile of the best label probability over a loaded run's validation captions (what 95% of
    real captions reach). Raises for a run without a label classifier; nan without validation rows."""
    best = loaded.predict_rows(np.asarray(loaded.val_rows), "text").max(axis=1)
    return float(np.percentile(best.astype(np.float64), WEAK_PERCENTILE)) if len(best) else float("nan")
