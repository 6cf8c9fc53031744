"""Paired comparison of two methods on the same queries: the difference of an Ave metric, its 95% CI, a p-value.

Unit of pairing: one query of one direction of one seed. Seed s of method A is paired with seed s of
method B (a method with one seed, e.g. a deterministic closed form, pairs its one run with every seed of
the other). For metric m, per seed and direction, d = m_A(query) - m_B(query); the statistic is the Ave
difference as the tables report it, mean over seeds of (mean_i2t(d) + mean_t2i(d)) / 2.

- p-value: a two-sided sign-flip permutation test. Under H0 (A and B exchangeable on every query) each
  unit's difference is as likely to be -d as d; `resamples` random sign vectors (seeded) give the null
  distribution of the statistic; p = (1 + #{|null| >= |observed|}) / (1 + resamples).
- 95% CI: a paired bootstrap over queries, `resamples` resamples (seeded): queries are drawn with
  replacement within each (seed, direction), the statistic recomputed; the 2.5 and 97.5 percentiles.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

RESAMPLES = 10_000
CHUNK = 500


@dataclass(frozen=True)
class PairedComparison:
    difference: float  # A - B of the Ave metric (as the tables show it, not x100)
    ci_low: float
    ci_high: float
    p_value: float
    units: int  # paired (seed, direction, query) values
    resamples: int

    @property
    def significant(self) -> bool:
        return self.p_value < 0.05


def _groups(per_seed_a: list[dict], per_seed_b: list[dict], metric: str) -> list[np.ndarray]:
    """The (seed, direction) groups of per-query differences A - B."""
    seeds = max(len(per_seed_a), len(per_seed_b))
    groups = []
    for s in range(seeds):
        a, b = per_seed_a[min(s, len(per_seed_a) - 1)], per_seed_b[min(s, len(per_seed_b) - 1)]
        for direction in ("i2t", "t2i"):
            values_a, values_b = np.asarray(a[direction][metric], float), np.asarray(b[direction][metric], float)
            if values_a.shape != values_b.shape:
                raise ValueError(f"{direction}/{metric}: {len(values_a)} vs {len(values_b)} queries; a paired test "
                                 "needs the same queries (same data, same split)")
            groups.append(values_a - values_b)
    return groups


def _statistic(groups: list[np.ndarray]) -> float:
    # mean over seeds of the Ave (= mean of the two directions' means): groups come in (i2t, t2i) pairs
    return float(np.mean([g.mean() for g in groups]))


def paired_comparison(per_seed_a: list[dict], per_seed_b: list[dict], metric: str = "NDCG@500",
                      resamples: int = RESAMPLES, seed: int = 0) -> PairedComparison:
    """`per_seed_*`: one {"i2t": {metric: (Q,) values}, "t2i": {...}} per seed, queries in the same order."""
    groups = _groups(per_seed_a, per_seed_b, metric)
    observed = _statistic(groups)
    rng = np.random.default_rng([seed, 0x5161])
    null, boot = np.empty(resamples), np.zeros(resamples)
    for start in range(0, resamples, CHUNK):  # vectorised over a chunk of resamples, in bounded memory
        count = min(CHUNK, resamples - start)
        flipped = np.zeros(count)
        for g in groups:
            signs = rng.integers(0, 2, (count, len(g))) * 2 - 1
            flipped += (signs * g).mean(1)
            boot[start : start + count] += g[rng.integers(0, len(g), (count, len(g)))].mean(1)
        null[start : start + count] = flipped / len(groups)
    boot /= len(groups)
    flat_count = sum(len(g) for g in groups)
    p_value = (1 + int(np.count_nonzero(np.abs(null) >= abs(observed) - 1e-15))) / (1 + resamples)
    low, high = np.percentile(boot, [2.5, 97.5])
    return PairedComparison(observed, float(low), float(high), float(p_value), int(flat_count), resamples)
