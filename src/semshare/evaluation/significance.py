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

That query-level test treats the trained models as fixed: it says how sure we are of the difference *of
these training runs* on other test queries, not of the methods over another training draw. With 3 seeds or
more the default is the hierarchical test (`hierarchical_comparison`), which includes training randomness:

- 95% CI: a hierarchical paired bootstrap: seeds drawn with replacement, then, within each drawn seed,
  queries drawn with replacement per direction; the statistic recomputed.
- p-value: the matching permutation test at the level where the runs are exchangeable under H0: a seed's
  two runs (A and B) swapped flips the sign of that seed's whole difference D_s; the null distribution is
  every sign vector over the S seeds (exact: all 2^S of them; seeded Monte Carlo above 2^16), p = #{|null| >=
  |observed|} / 2^S. The smallest p it can give is 2 / 2^S: 0.25 with 3 seeds, 0.0625 with 5, 0.031 with 6:
  below 6 seeds no difference reaches p < 0.05 on this test, which is what 5 training draws can say.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

RESAMPLES = 10_000
CHUNK = 500


HIERARCHICAL_MIN_SEEDS = 3
EXACT_MAX_SEEDS = 16  # 2^16 sign vectors enumerated; more seeds: seeded Monte Carlo


@dataclass(frozen=True)
class PairedComparison:
    difference: float  # A - B of the Ave metric (as the tables show it, not x100)
    ci_low: float
    ci_high: float
    p_value: float
    units: int  # paired (seed, direction, query) values
    resamples: int
    level: str = "queries"  # "queries": resamples test queries only; "seeds": seeds, then queries (hierarchical)
    seeds: int = 1
    queries: int = 0  # test queries per direction

    @property
    def smallest_p(self) -> float:
        """The smallest p-value the test can give (the seed-level permutation has 2^S sign vectors)."""
        if self.level == "seeds" and self.seeds <= EXACT_MAX_SEEDS:
            return 2.0 / 2 ** self.seeds
        return 1.0 / (1 + self.resamples)

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
    return PairedComparison(observed, float(low), float(high), float(p_value), int(flat_count), resamples,
                            seeds=len(groups) // 2, queries=len(groups[0]))


def _seed_differences(groups: list[np.ndarray]) -> np.ndarray:
    """(S,) each seed's Ave difference: the mean of its two directions' mean differences."""
    return np.array([(groups[i].mean() + groups[i + 1].mean()) / 2 for i in range(0, len(groups), 2)])


def _seed_sign_flip_p(seed_differences: np.ndarray, resamples: int, rng: np.random.Generator) -> float:
    """Two-sided p of the mean over seeds under sign flips of whole seeds: exact over all 2^S vectors."""
    seeds = len(seed_differences)
    observed = abs(seed_differences.mean())
    if seeds <= EXACT_MAX_SEEDS:
        signs = ((np.arange(2 ** seeds)[:, None] >> np.arange(seeds)) & 1) * 2 - 1
    else:
        signs = rng.integers(0, 2, (resamples, seeds)) * 2 - 1
    null = np.abs((signs * seed_differences).mean(1))
    return float(np.count_nonzero(null >= observed - 1e-15) / len(signs))


def hierarchical_comparison(per_seed_a: list[dict], per_seed_b: list[dict], metric: str = "NDCG@500",
                            resamples: int = RESAMPLES, seed: int = 0) -> PairedComparison:
    """The paired comparison with training randomness in it (module docstring): a bootstrap over seeds, then
    queries, for the CI, and an exact seed-level sign-flip permutation for p."""
    groups = _groups(per_seed_a, per_seed_b, metric)
    seeds = len(groups) // 2
    if seeds < HIERARCHICAL_MIN_SEEDS:
        raise ValueError(f"a hierarchical test needs >= {HIERARCHICAL_MIN_SEEDS} seeds, found {seeds}")
    rng = np.random.default_rng([seed, 0x5EED])
    observed = _statistic(groups)
    boot = np.zeros(resamples)
    for start in range(0, resamples, CHUNK):
        count = min(CHUNK, resamples - start)
        drawn = rng.integers(0, seeds, (count, seeds))  # seeds with replacement
        per_seed = np.empty((count, seeds))
        for s in range(seeds):  # each seed's resampled Ave difference, then picked by the seed draws
            i2t, t2i = groups[2 * s], groups[2 * s + 1]
            per_seed[:, s] = (i2t[rng.integers(0, len(i2t), (count, len(i2t)))].mean(1)
                              + t2i[rng.integers(0, len(t2i), (count, len(t2i)))].mean(1)) / 2
        boot[start : start + count] = np.take_along_axis(per_seed, drawn, axis=1).mean(1)
    low, high = np.percentile(boot, [2.5, 97.5])
    p_value = _seed_sign_flip_p(_seed_differences(groups), resamples, rng)
    return PairedComparison(observed, float(low), float(high), p_value, int(sum(len(g) for g in groups)), resamples,
                            level="seeds", seeds=seeds, queries=len(groups[0]))


def compare_runs(per_seed_a: list[dict], per_seed_b: list[dict], metric: str = "NDCG@500",
                 resamples: int = RESAMPLES, seed: int = 0) -> PairedComparison:
    """The default: hierarchical with >= 3 seeds (training randomness included), else the query-level test."""
    if max(len(per_seed_a), len(per_seed_b)) >= HIERARCHICAL_MIN_SEEDS:
        return hierarchical_comparison(per_seed_a, per_seed_b, metric, resamples, seed)
    return paired_comparison(per_seed_a, per_seed_b, metric, resamples, seed)
