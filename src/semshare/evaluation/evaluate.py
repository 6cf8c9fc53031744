"""Score a finished run: the one path that `evaluate`, `benchmark`, `sweep`, `demo` and validation share.

A run is anything with `dataset`, `text_source`, `pairwise_scoring` and `embed(rows, sides)`: a trained
run (training/finished_run.py Run: trained or fitted in closed form).
Pair scorers (`pairwise_scoring`) re-rank each query's shortlist (semshare.evaluation.rerank); the
shortlist is the model's to say (`rerank_shortlist`), shorter for per-epoch validation.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from semshare.errors import SemshareError
from semshare.evaluation.protocols import (DirectionResult, ProtocolConfig, build_eval_sets, evaluate_tables,
                                           table_from_folds)
from semshare.evaluation.retrieval import MetricSpec


def evaluate_run(run, protocol: ProtocolConfig = ProtocolConfig(), spec: MetricSpec = MetricSpec(),
                 rows: np.ndarray | None = None, validation: bool = False, device="cpu",
                 batch_size: int = 256) -> tuple[dict[str, float], list[dict[str, DirectionResult]]]:
    """(metric table averaged over folds, per-fold direction results) of `run` under `protocol`.

    `rows` given: those rows are queries and gallery (e.g. a validation set carved from train), and the
    protocol's split names are not used. The run's own text source always decides the text items.
    """
    protocol = replace(protocol, text_source=run.text_source)
    if run.pairwise_scoring:
        return _evaluate_pair_scorer(run, protocol, spec, rows, validation, device)
    if rows is not None:
        img, txt = run.embed(rows, device=device, batch_size=batch_size)
        return evaluate_tables(run.dataset, img, txt, protocol, spec, rows=rows)
    sets = build_eval_sets(run.dataset, protocol)
    needed = [s.query_img_rows for s in sets] + [s.gallery_img_rows for s in sets]
    img, txt = run.embed(np.unique(np.concatenate(needed)), device=device, batch_size=batch_size)
    return evaluate_tables(run.dataset, img, txt, protocol, spec)


def _evaluate_pair_scorer(run, protocol: ProtocolConfig, spec: MetricSpec, rows: np.ndarray | None,
                          validation: bool, device) -> tuple[dict[str, float], list[dict[str, DirectionResult]]]:
    from semshare.evaluation.rerank import evaluate_pairwise_rows

    if rows is not None:
        fold_rows = [np.asarray(rows)]
    else:
        sets = build_eval_sets(run.dataset, protocol)
        if any(not np.array_equal(s.query_img_rows, s.gallery_img_rows) or protocol.dedupe_texts for s in sets):
            raise SemshareError("a pair-scoring method is re-ranked with its queries as the gallery: a separate "
                                "--gallery-split or --dedupe-texts is not supported for it")
        fold_rows = [s.query_img_rows for s in sets]
    shortlist = run.model.rerank_shortlist(validation)
    builder = run.builder(training=False)
    folds = [evaluate_pairwise_rows(run.model, builder, run.dataset, fold, run.text_source, spec, shortlist, device)[1]
             for fold in fold_rows]
    return table_from_folds(folds), folds
